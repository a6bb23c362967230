"""Issue 29 on the unpacked submission and the exports: weight files read only through a restricted unpickler,
an unpacked package that refuses unlisted files and a cut-off unpack, a zip without bytecode, a smoke run that
cannot hang, an extractor that streams and size-checks every entry, judge exports that are complete at every
instant (and temp folders of live writers left alone), and a ModelArts service with a capped upload."""

import importlib.util
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from timebox import package
from timebox.errors import UsageError
from timebox.export import serving
from timebox.export.serving import replace_dir
from timebox.manifest import check_unpacked
from timebox.models.torch_weights import read_legacy_state_dict
from timebox.package import (MANIFEST, SmokeTestFailed, build_zip, safe_extract,
                             verify_manifest)

REPO = Path(__file__).resolve().parents[1]
EXPORT = REPO / "submission" / "timebox" / "export"
FAKE_FILES = {
    "run.sh": "#!/bin/sh\necho run\n",
    "requirements.txt": "numpy==2.4.6\n",
    "Dockerfile": "FROM python:3.11-slim\n",
    "README.md": "# fake\n",
    "submission/timebox/__init__.py": "",
    "submission/timebox/cli.py": "print('cli')\n",
    "submission/weights/backbone.weights.h5": "w" * 5000,
}


def _fake_root(root: Path) -> Path:
    for name, text in FAKE_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "run.sh").chmod(0o755)
    return root


@pytest.fixture()
def unpacked(tmp_path):
    safe_extract(build_zip(tmp_path / "s.zip", root=_fake_root(tmp_path / "root")), tmp_path / "unpacked")
    return tmp_path / "unpacked"


def _names(zip_path):
    with zipfile.ZipFile(zip_path) as zf:
        return [i.filename for i in zf.infolist()]


# --- 1. every pickle of a weights file goes through the restricted unpickler -----------------------------------


class _Exploit:
    """Unpickles as ``open(marker, "w")``: a file appears if the reader runs it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("position", [0, 1, 2, 4])  # magic, protocol version, system info, storage keys
def test_a_weights_file_whose_pickle_runs_code_is_refused_without_running_it(tmp_path, position):
    marker = tmp_path / "executed"
    parts = [0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, {}, []]
    parts[position] = _Exploit(marker)
    path = tmp_path / "evil.pth"
    path.write_bytes(b"".join(pickle.dumps(p, protocol=2) for p in parts))
    with pytest.raises(UsageError, match="evil.pth"):
        read_legacy_state_dict(path)
    assert not marker.exists()


# --- 2. the manifest covers the whole unpacked package ---------------------------------------------------------


@pytest.mark.parametrize("name", [
    "submission/config.json",                                 # a stale config the online run would read
    "submission/weights/efficientnet-lite0-0000.pth",         # an extra .pth that wins the weights lookup
    "submission/json.py",                                     # shadows the standard module (on PYTHONPATH)
    "json.py",                                                # ...and at the top (the entry's working folder)
    "submission/timebox/__pycache__/cli.cpython-311.pyc",     # bytecode Python would load instead of cli.py
])
def test_an_unlisted_file_in_an_unpacked_package_is_refused_naming_it(unpacked, name):
    (unpacked / name).parent.mkdir(parents=True, exist_ok=True)
    (unpacked / name).write_text("{}")
    with pytest.raises(UsageError, match="not in the manifest") as exc:
        check_unpacked(unpacked)
    assert name in str(exc.value)


def test_an_altered_module_of_an_unpacked_package_never_runs(tmp_path):
    """`python -m timebox` checks the manifest before importing anything of timebox but its stdlib-only check: a
    module the command line imports (settings.py), altered after packaging, is refused unrun, even for --help."""
    root = _fake_root(tmp_path / "root")
    shutil.rmtree(root / "submission" / "timebox")
    shutil.copytree(REPO / "submission" / "timebox", root / "submission" / "timebox",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "modelarts_stub"))
    safe_extract(build_zip(tmp_path / "s.zip", root=root), tmp_path / "unpacked")
    marker = tmp_path / "executed"
    altered = tmp_path / "unpacked" / "submission" / "timebox" / "settings.py"
    altered.write_text(f"open({str(marker)!r}, 'w')\n" + altered.read_text())
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "unpacked" / "submission"), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-m", "timebox", "--help"], cwd=tmp_path / "unpacked", env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "settings.py" in done.stderr and "altered" in done.stderr, done.stderr
    assert not marker.exists()


def test_outputs_beside_an_unpacked_package_are_allowed(unpacked):
    for name in (".venv/bin/python", "OUT/predictions.csv", "OUT/model/model.keras", "notes.txt"):
        (unpacked / name).parent.mkdir(parents=True, exist_ok=True)
        (unpacked / name).write_text("x")
    check_unpacked(unpacked)


def test_a_cut_off_unpack_without_its_manifest_is_refused(tmp_path):
    zip_path = build_zip(tmp_path / "s.zip", root=_fake_root(tmp_path / "root"))
    names = _names(zip_path)
    assert names[0] == package.MARKER and names[-1] == MANIFEST  # marked by its first entry, checked by its last
    safe_extract(zip_path, tmp_path / "unpacked")
    (tmp_path / "unpacked" / MANIFEST).unlink()
    with pytest.raises(UsageError, match="cut off") as exc:
        check_unpacked(tmp_path / "unpacked")
    assert MANIFEST in str(exc.value)


def test_the_zip_holds_no_bytecode(tmp_path):
    root = _fake_root(tmp_path / "root")
    model = tmp_path / "run" / "model"
    for name in ("submission/weights/helper.pyc", "submission/weights/__pycache__/x.cpython-311.pyc",
                 "submission/timebox/__pycache__/cli.cpython-311.pyc"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"bytecode")
    model.mkdir(parents=True)
    for name in ("model.keras", "labels.json", "stale.pyc"):
        (model / name).write_text("x")
    names = _names(build_zip(tmp_path / "s.zip", root=root, models=[model]))
    assert "submission/models/model/model.keras" in names
    assert not [n for n in names if n.endswith((".pyc", ".pyo")) or "__pycache__" in n]


def test_an_unpacked_run_through_run_sh_writes_no_bytecode_and_starts_again(tmp_path):
    """The real entry in the unpacked tree (its venv stands in for the built one): no __pycache__ appears, so
    the second start's check passes."""
    unpacked = tmp_path / "unpacked"
    safe_extract(build_zip(tmp_path / "s.zip"), unpacked)
    venv = unpacked / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    stamp = subprocess.run(["sha256sum", str(unpacked / "requirements.txt")], capture_output=True, text=True)
    (venv / ".requirements.sha256").write_text(stamp.stdout.split()[0] + "\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE", "TIMEBOX_START")}
    env["HOME"] = str(tmp_path / "home")
    (tmp_path / "p.csv").write_text("filename,label\na.jpg,1\n")
    for _ in range(2):  # `score` imports a few modules and runs the start-up check
        proc = subprocess.run([str(unpacked / "run.sh"), "score", "--pred", str(tmp_path / "p.csv"), "--labels",
                               str(tmp_path / "p.csv")], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    assert not list(unpacked.glob("submission/**/__pycache__"))


def test_the_extractor_refuses_an_entry_the_manifest_does_not_list(tmp_path):
    zip_path = build_zip(tmp_path / "s.zip", root=_fake_root(tmp_path / "root"))
    with zipfile.ZipFile(zip_path, "a") as zf:
        zf.writestr("submission/json.py", "x = 1\n")
    with pytest.raises(UsageError, match="submission/json.py"):
        safe_extract(zip_path, tmp_path / "unpacked")
    assert not (tmp_path / "unpacked").exists() or not list((tmp_path / "unpacked").rglob("*"))


# --- 3. a smoke run cannot hang; entries are streamed and size-checked ----------------------------------------


def test_a_hanging_smoke_run_is_stopped_with_a_clear_error(tmp_path, monkeypatch):
    unpacked = tmp_path / "unpacked"
    (unpacked / "submission" / "timebox").mkdir(parents=True)
    (unpacked / "submission" / "timebox" / "__init__.py").write_text("")
    (unpacked / "submission" / "timebox" / "__main__.py").write_text("import time\ntime.sleep(30)\n")
    monkeypatch.setattr(package, "SMOKE_TIMEOUT_S", 2)
    start = time.monotonic()
    with pytest.raises(SmokeTestFailed, match="ran over 2 s"):
        package._run_unpacked(unpacked, tmp_path, ["--help"])
    assert time.monotonic() - start < 20


def _zip_listing(path, name, data, listed_size):
    """A zip whose manifest lists ``name`` at ``listed_size`` bytes but which stores ``data``."""
    files = [{"path": name, "size": listed_size, "sha256": "0" * 64}]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(MANIFEST, json.dumps({"format": 1, "files": files}))
    return path


def test_an_entry_larger_than_the_manifest_lists_is_refused(tmp_path):
    zip_path = _zip_listing(tmp_path / "s.zip", "submission/weights/big.bin", b"\0" * 100_000, 10)
    with pytest.raises(UsageError, match="submission/weights/big.bin") as exc:
        safe_extract(zip_path, tmp_path / "unpacked")
    assert "larger than" in str(exc.value)
    assert not (tmp_path / "unpacked" / "submission" / "weights" / "big.bin").exists()


def test_the_extractor_streams_entries_instead_of_reading_them_whole(tmp_path, monkeypatch):
    zip_path = build_zip(tmp_path / "s.zip", root=_fake_root(tmp_path / "root"))

    def whole(*args, **kwargs):
        raise AssertionError("ZipFile.read holds a whole entry in memory")

    monkeypatch.setattr(zipfile.ZipFile, "read", whole)
    safe_extract(zip_path, tmp_path / "unpacked")
    assert verify_manifest(tmp_path / "unpacked") == len(FAKE_FILES) + 1  # and the marker


# --- 4. judge exports complete at every instant; only dead writers' leftovers are cleaned -----------------------


def _complete(dest):
    files = sorted(p.name for p in dest.iterdir()) if dest.is_dir() else []
    return files == ["a", "b"] and (dest / "a").read_text() == (dest / "b").read_text()


def _build(version):
    def build(tmp):
        (tmp / "a").write_text(version)
        (tmp / "b").write_text(version)
    return build


def test_the_export_path_holds_a_complete_export_at_every_step_of_a_replace(tmp_path, monkeypatch):
    dest = tmp_path / "SavedModel"
    replace_dir(dest, _build("1"))
    steps = []

    def checked(name, func):
        def call(*args, **kwargs):
            assert _complete(dest), f"before {name}"
            result = func(*args, **kwargs)
            assert _complete(dest), f"after {name}{args}"
            steps.append(name)
            return result
        return call

    for module, name in ((os, "replace"), (os, "rename"), (shutil, "rmtree"), (serving, "_exchange")):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, checked(name, getattr(module, name)))
    replace_dir(dest, _build("2"))
    assert steps and (dest / "a").read_text() == "2"


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temp_folders_of_live_writers_are_kept_and_dead_ones_cleaned(tmp_path):
    dest = tmp_path / "model"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        kept = [tmp_path / f".model.tmp-{os.getpid()}-x1", tmp_path / f".model.tmp-{live.pid}-x2",
                tmp_path / f".model.old-{live.pid}-x3"]
        gone = [tmp_path / f".model.tmp-{dead}-x4", tmp_path / f".model.old-{dead}-x5"]
        for folder in kept + gone:
            folder.mkdir()
            (folder / "a").write_text("half")
        replace_dir(dest, _build("1"))
        assert _complete(dest)
        assert [f.exists() for f in kept] == [True] * 3 and [f.exists() for f in gone] == [False] * 2
    finally:
        live.kill()
        live.wait()


def test_without_rename_exchange_the_two_rename_swap_still_restores_a_dead_writers_old_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(serving, "_exchange", lambda a, b: False)  # a filesystem without RENAME_EXCHANGE
    dest = tmp_path / "model"
    replace_dir(dest, _build("1"))
    replace_dir(dest, _build("2"))
    assert (dest / "a").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    os.replace(dest, tmp_path / f".model.old-{_dead_pid()}-x1")  # its writer killed between the two renames
    with pytest.raises(RuntimeError):
        replace_dir(dest, lambda tmp: (_ for _ in ()).throw(RuntimeError("build failed")))
    assert (dest / "a").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# --- 5. the ModelArts service caps its input -------------------------------------------------------------------


@pytest.fixture()
def service_module(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPORT / "modelarts_stub"))
    spec = importlib.util.spec_from_file_location("customize_service_under_test", EXPORT / "customize_service.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Upload(io.BytesIO):
    """An upload that records how much each read asked for."""

    def __init__(self, data):
        super().__init__(data)
        self.asked = []

    def read(self, size=-1):
        self.asked.append(size)
        return super().read(size)


def test_an_upload_over_the_cap_is_refused_without_reading_it_whole(service_module, monkeypatch):
    import numpy as np

    monkeypatch.setattr(service_module, "MAX_UPLOAD_BYTES", 10_000)
    service = object.__new__(service_module.ImageClassifyService)
    service.input_size = 8
    decoded = lambda path, size: SimpleNamespace(image=np.zeros((size, size, 3), np.uint8), error=None)  # noqa: E731
    service.decoder = SimpleNamespace(decode_image=decoded, decode_truncated=decoded, TRUNCATED="truncated")
    upload = _Upload(b"\xff" * 50_000)
    with pytest.raises(ValueError, match="huge.jpg") as exc:
        service._preprocess({"input_img": {"huge.jpg": upload}})
    assert "cap" in str(exc.value)
    assert all(0 < size <= 10_001 for size in upload.asked), upload.asked
    with pytest.raises(ValueError, match="raw.jpg"):
        service._preprocess({"input_img": {"raw.jpg": b"\xff" * 50_000}})
    assert service._preprocess({"input_img": {"ok.jpg": b"\xff" * 9_000}})["images"].shape == (1, 8, 8, 3)


def test_two_runs_making_the_same_first_export_at_once_both_finish_and_one_complete_export_stays(tmp_path,
                                                                                                  monkeypatch):
    dest = tmp_path / "model"
    real_lexists, raced = os.path.lexists, []

    def other_run_first(path):  # another run sharing the folder renames its export in just after this one looked
        if Path(path) == dest and not raced:
            raced.append(True)
            os.mkdir(dest)
            _build("other")(dest)
            return False
        return real_lexists(path)

    monkeypatch.setattr(serving.os.path, "lexists", other_run_first)
    replace_dir(dest, _build("mine"))  # failed with "Directory not empty" before
    monkeypatch.undo()
    assert _complete(dest) and (dest / "a").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

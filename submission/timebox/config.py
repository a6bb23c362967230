"""The settings of an online run (no TensorFlow here: the command line reads them before it loads).

A tuned configuration is a JSON object of :data:`TUNABLE` settings, e.g. ``{"backbone":
"efficientnet-lite0", "size": 224, "val_fraction": 0.1}``. ``online --config FILE`` reads one;
without ``--config`` an online run reads ``submission/config.json`` when it exists (``package
--config`` ships a file there), so a judge running the submission's entry gets the tuned
settings. Flags given on the command line win over the file.

Example::

    settings = {**read_settings(Path("tuned.json")), "seed": 1}
    cfg = OnlineConfig(train_dir, test_dir, out, budget_s=600, **settings)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import field, make_dataclass
from pathlib import Path

from .data.files import walk_files
from .errors import UsageError
from .settings import SETTING, SETTINGS

FINETUNE_LR = SETTING["finetune_lr"].default
SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "config.json"  # submission/config.json
TUNABLE: dict[str, tuple[type, ...]] = {s.name: s.json_types for s in SETTINGS}  # setting -> accepted JSON types
IDENTITY = ("budget_s", "backbone", "weights", "init", "seed", "layout", "size", "val_fraction", "batch_size",
            "finetune", "judge", "finetune_cut", "finetune_lr", "refit")  # what a resumed run must share with the run it continues


def _identity(self) -> dict:
    """The arguments a resumed run must share with the run it continues, and the files of its folders: a resumed
    run's predictions are zipped with the test files of the run it continues."""
    return {"train_dir": str(Path(self.train_dir).resolve()),
            "test_dir": str(Path(self.test_dir).resolve()) if self.test_dir else None,
            "train_files": files_fingerprint(self.train_dir),
            "test_files": files_fingerprint(self.test_dir) if self.test_dir else None,
            **{k: getattr(self, k) for k in IDENTITY}}


def files_fingerprint(root: Path) -> str | None:
    """The files a run reads below ``root`` (a CSV file's folder for a CSV), their paths and sizes, as
    ``"N files, sha256 <16 hex digits>"``; None if there is no such folder (reading it says why)."""
    folder = Path(root).resolve()
    folder = folder.parent if folder.is_file() else folder
    if not folder.is_dir():
        return None
    digest, files = hashlib.sha256(), sorted(os.fsencode(f.relative_to(folder)) for f in walk_files(folder))
    for name in files:
        digest.update(b"%s\0%d\0" % (name, (folder / os.fsdecode(name)).stat().st_size))
    return f"{len(files)} files, sha256 {digest.hexdigest()[:16]}"


OnlineConfig = make_dataclass(
    "OnlineConfig",
    [("train_dir", Path), ("test_dir", Path | None), ("out", Path), ("budget_s", float),
     *[(s.name, s.kind | None if s.nullable else s.kind, field(default=s.default)) for s in SETTINGS],
     ("cache_dir", Path | None, field(default=None)),  # decoded-image cache (None: timebox.data.cache default)
     ("feature_dir", Path | None, field(default=None)),  # activations shared with other runs (None: not kept)
     ("transfer_dir", Path | None, field(default=None)),  # pretrain: the output's backbone and head weights go here
     ("workers", int | None, field(default=None)),  # decode processes (None: the CPUs this process may use)
     ("resume", bool, field(default=False)),
     ("judge", str, field(default="generic")),  # also export for this judge: generic (none), flink, modelarts
     ("judge_dir", Path | None, field(default=None)),  # where the judge export goes (see timebox.export.judge_dir)
     ("config_file", Path | None, field(default=None))],  # the tuned settings file read (for the report)
    namespace={"identity": _identity, "__doc__": "An online run: its folders, budget and every setting of "
               ":data:`timebox.settings.SETTINGS` as a field."},
)
OnlineConfig.__module__ = __name__


def read_settings(path: Path) -> dict:
    """The tuned settings in the JSON file ``path``; UsageError naming the file and the fix for anything else."""
    path = Path(path)
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a readable JSON file ({exc}); write it as a JSON object of settings") from None
    if not isinstance(settings, dict):
        raise UsageError(f"{path}: holds a JSON {type(settings).__name__}; write a JSON object of settings, "
                         f'e.g. {{"size": 224}}')
    unknown = sorted(set(settings) - set(TUNABLE))
    if unknown:
        raise UsageError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(TUNABLE)}")
    for key, value in settings.items():
        SETTING[key].check(value, str(path))
    return settings


def check_setting(key: str, value: float | int) -> float | int:
    """``value`` if it is in the range of setting ``key``, else a UsageError saying the range."""
    return SETTING[key].check(value)

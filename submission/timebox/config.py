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

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

FINETUNE_LR = 3e-4  # fine-tuning's peak learning rate: at 1e-3 the first epochs undid the head (bench/RESULTS.md)
MIN_INPUT_SIZE = 32  # the backbones' stride: smaller images leave no spatial position at their last block
SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "config.json"  # submission/config.json
TUNABLE: dict[str, tuple[type, ...]] = {  # setting -> accepted JSON types (None: the default)
    "backbone": (str,), "weights": (str,), "size": (int, type(None)), "seed": (int,), "layout": (str,),
    "val_fraction": (float, int), "batch_size": (int,), "keep": (int,), "finetune": (bool,),
    "margin_s": (float, int, type(None)), "ensemble": (bool,), "latency_ms": (float, int, type(None)),
    "zoom_share": (float, int), "finetune_cut": (int, type(None)), "second_backbone": (str,),
    "min_size": (int,), "finetune_lr": (float, int), "refit": (bool,),
}
LIMITS: dict[str, tuple[float, float, str]] = {  # number setting -> (low, high, what it must be)
    "latency_ms": (1e-9, float("inf"), "above 0"), "zoom_share": (0.0, 1.0, "between 0 and 1"),
    "min_size": (MIN_INPUT_SIZE, float("inf"), f"at least {MIN_INPUT_SIZE} (pixels)"),
    "finetune_lr": (1e-9, 1.0, "above 0 and at most 1"),
}


@dataclass
class OnlineConfig:
    train_dir: Path
    test_dir: Path | None  # None: no predictions.csv rows (a judge that predicts with the exported model)
    out: Path
    budget_s: float
    backbone: str = "efficientnet-lite0"
    weights: str = "imagenet"
    seed: int = 0
    layout: str = "auto"
    size: int | None = None
    min_size: int = 128  # the size may shrink down to this when the budget cannot extract every image at ``size``
    val_fraction: float = 0.15
    cache_dir: Path | None = None
    workers: int | None = None
    batch_size: int = 32
    keep: int = 3
    finetune: bool = True
    margin_s: float | None = None  # safety margin left unused at the end; default max(5 s, 2% of the budget)
    resume: bool = False
    judge: str = "generic"  # also export for this judge: generic (none), flink, modelarts
    judge_dir: Path | None = None  # where the judge export goes (default: see timebox.export.judge_dir)
    ensemble: bool = True  # vote over kept checkpoints and views if that beats the best single one on held-out val
    latency_ms: float | None = None  # p95 per-image latency the exported model must stay under (members dropped)
    zoom_share: float = 0.1  # most of the budget the zoomed test-time views may cost as ensemble candidates (0: none)
    finetune_lr: float = FINETUNE_LR  # peak learning rate of fine-tuning's warm-up + cosine schedule
    refit: bool = True  # the last fine-tune round trains on the val images too (then no vote: one is chosen on val)
    finetune_cut: int | None = None  # the backbone block fine-tuning starts from (None: the deepest the budget fits)
    second_backbone: str = "auto"  # a head on this backbone's features joins the ensemble candidates (auto, none, a name)
    config_file: Path | None = None  # the tuned settings file read (for the report)

    def identity(self) -> dict:
        """The arguments a resumed run must share with the run it continues."""
        keys = ("budget_s", "backbone", "weights", "seed", "layout", "size", "val_fraction", "batch_size", "finetune",
                "judge", "finetune_cut", "finetune_lr", "refit")
        return {"train_dir": str(Path(self.train_dir).resolve()),
                "test_dir": str(Path(self.test_dir).resolve()) if self.test_dir else None,
                **{k: getattr(self, k) for k in keys}}


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
        types = TUNABLE[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise UsageError(f"{path}: setting {key} is {json.dumps(value)}; it must be {wanted}")
        if value is not None and key in LIMITS:
            try:
                check_setting(key, value)
            except UsageError as exc:
                raise UsageError(f"{path}: {exc}") from None
    return settings


def check_setting(key: str, value: float | int) -> float | int:
    """``value`` if it is in the range of setting ``key`` (see LIMITS), else a UsageError saying the range."""
    low, high, what = LIMITS[key]
    if not low <= value <= high:
        raise UsageError(f"{key} is {value:g}; it must be {what}")
    return value

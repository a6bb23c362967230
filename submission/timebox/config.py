"""The settings of an online run (no TensorFlow here: the command line reads them before it loads)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    val_fraction: float = 0.15
    cache_dir: Path | None = None
    workers: int | None = None
    batch_size: int = 32
    keep: int = 3
    finetune: bool = True
    margin_s: float | None = None  # safety margin left unused at the end; default max(10 s, 2% of the budget)
    resume: bool = False
    judge: str = "generic"  # also export for this judge: generic (none), flink, modelarts
    judge_dir: Path | None = None  # where the judge export goes (default: see timebox.export.judge_dir)

    def identity(self) -> dict:
        """The arguments a resumed run must share with the run it continues."""
        keys = ("budget_s", "backbone", "weights", "seed", "layout", "size", "val_fraction", "batch_size", "finetune",
                "judge")
        return {"train_dir": str(Path(self.train_dir).resolve()),
                "test_dir": str(Path(self.test_dir).resolve()) if self.test_dir else None,
                **{k: getattr(self, k) for k in keys}}

"""The run's files and its first output: the training set and the test files, listed before TensorFlow loads,
and a prior-class ``predictions.csv`` written at once, so that a run killed during its imports still leaves a
complete file of its own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .config import OnlineConfig
from .data.layouts import Dataset, list_images, read_dataset
from .outputs import Outputs
from .predict import LabelMap
from .recovery import RunState


@dataclass(frozen=True, eq=False)
class Listing:
    """The training set, the test files, and each test file's name in ``predictions.csv``."""

    ds: Dataset
    test_files: list[Path]
    names: list[str]

    @property
    def prior(self) -> int:
        """Internal index of the most frequent training class."""
        return int(np.bincount(self.ds.labels, minlength=len(self.ds.class_ids)).argmax())


def list_run(cfg: OnlineConfig) -> Listing:
    """The training set and test files of ``cfg`` (test names relative to the test folder)."""
    ds = read_dataset(cfg.train_dir, cfg.layout)
    test_files = list_images(cfg.test_dir) if cfg.test_dir else []
    test_root = Path(cfg.test_dir).resolve() if cfg.test_dir else None
    return Listing(ds, test_files, [f.relative_to(test_root).as_posix() for f in test_files])


def write_prior(cfg: OnlineConfig, state: RunState, log: Callable[[str], None]) -> Listing:
    """Lists the run's files and, unless this run's state records an output already, writes the prior class for
    every test file. Its label map carries no input size or backbone: the run's own ``Outputs`` export those."""
    listing = list_run(cfg)
    labels = LabelMap(listing.ds.class_ids, listing.ds.class_names, listing.prior, 0, "")
    Outputs(Path(cfg.out), listing.names, labels, state, cfg.judge, cfg.judge_dir, log, cfg.judge_input).ensure_exists()
    return listing

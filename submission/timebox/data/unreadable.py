"""What a file's decode error means: any error quarantines a training image; a test image still gets a model's
prediction when none, or only the end of the file, is missing (a truncated file's part that decodes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from timebox.data.decode import PARTIAL

PREDICTED_PARTLY = f"{PARTIAL}: predicted from the part that decodes"


def predictable(error: str | None) -> bool:
    """A test image with this decode error still has its pixels to predict from."""
    return error is None or error == PARTIAL


def usable_test_files(errors: Sequence[str | None]) -> np.ndarray:
    """Per test file: whether its decoded image gets a model's prediction (else the prior class)."""
    return np.array([predictable(e) for e in errors], bool)


def quarantined(files: Sequence[Path], errors: Sequence[str | None]) -> list[dict]:
    """The training files left out, with their reasons (the report's quarantine.json)."""
    return [{"file": str(f), "reason": e} for f, e in zip(files, errors) if e]


def unreadable_test(files: Sequence[Path], errors: Sequence[str | None]) -> list[dict]:
    """The test files with a decode error, with their reasons (the report's unreadable_test_files.json): the
    truncated ones say they were predicted from the part that decodes, the others get the prior class."""
    return [{"file": str(f), "reason": PREDICTED_PARTLY if e == PARTIAL else e} for f, e in zip(files, errors) if e]

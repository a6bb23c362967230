"""Exports in the judges' own formats: ``flink`` (Tianchi/Flink 2019 SavedModel) and ``modelarts``
(Huawei ModelArts 2019 model/ folder), each rewritten atomically from a timebox model folder.

Example::

    export_for_judge("flink", Path("OUT/model"), judge_dir("flink", Path("OUT")), val_accuracy=0.91)
"""

from __future__ import annotations

import os
from pathlib import Path

from .judge_input import FLINK_TEMPLATE, JudgeInput

JUDGES = ("generic", "flink", "modelarts")


def judge_dir(judge: str, out: Path) -> Path:
    """Default export folder: ``$MODEL_INFERENCE_PATH`` (or ``OUT/flink``) for flink, ``OUT/modelarts`` for modelarts."""
    if judge == "flink" and os.environ.get("MODEL_INFERENCE_PATH"):
        return Path(os.environ["MODEL_INFERENCE_PATH"])
    return Path(out) / judge


def export_for_judge(judge: str, model_dir: Path, dest: Path, val_accuracy: float,
                     judge_input: str = FLINK_TEMPLATE) -> Path | None:
    """Write ``judge``'s export of the timebox model in ``model_dir`` under ``dest``; None for ``generic``.
    ``judge_input`` (the flink judge's tensor, see :mod:`timebox.export.judge_input`)."""
    if judge == "flink":
        from .flink import export_flink

        return export_flink(model_dir, dest, JudgeInput.parse(judge_input))
    if judge == "modelarts":
        from .modelarts import export_modelarts

        return export_modelarts(model_dir, dest, val_accuracy)
    return None

"""The second transfer's head: a pretrained model's head rows for this run's classes, matched by name, which the
early head and the head start from (``online --init``; see :mod:`timebox.pretrained`)."""

from __future__ import annotations

import functools
from pathlib import Path

from ..models.heads import HeadRows, transfer_rows
from ..pretrained import HEAD_WEIGHTS, read_meta
from .context import Context


def head_init(ctx: Context, num_features: int) -> HeadRows | None:
    """The rows for ``ctx``'s classes from the pretrained folder ``cfg.init`` (None when the run starts from
    ImageNet); the first call notes how many classes matched."""
    if ctx.cfg.init in (None, "imagenet"):
        return None
    rows, note = _rows(Path(ctx.cfg.init), tuple(ctx.outputs.labels.class_names), num_features)
    if note not in ctx.session.notes:
        ctx.session.note(note)
        ctx.log(note)
    return rows


@functools.lru_cache(maxsize=4)
def _rows(folder: Path, classes: tuple[str, ...], num_features: int) -> tuple[HeadRows, str]:
    pretrained = read_meta(folder).class_names
    rows = transfer_rows(folder / HEAD_WEIGHTS, pretrained, list(classes), num_features)
    matched = int(rows.matched.sum())
    return rows, (f"head rows from the pretrained model for {matched} of {len(classes)} classes (matched by name); "
                  f"{len(classes) - matched} new")

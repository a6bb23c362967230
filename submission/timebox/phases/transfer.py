"""The second transfer's head: a pretrained model's head rows for this run's classes, matched by name, which the
early head and the head start from (``online --init``; see :mod:`timebox.pretrained`)."""

from __future__ import annotations

import functools
from pathlib import Path

from ..models.heads import HeadRows, transfer_rows
from ..pretrained import HEAD_WEIGHTS, read_meta
from .context import Context


def head_init(ctx: Context, num_features: int, kind: str = "softmax") -> HeadRows | None:
    """The rows for ``ctx``'s classes from the pretrained folder ``cfg.init`` for a head of ``kind`` (None when the
    run starts from ImageNet, or the pretrained head is of another kind); the first call notes how many classes
    matched."""
    if ctx.cfg.init in (None, "imagenet"):
        return None
    rows, note = _rows(Path(ctx.cfg.init), tuple(ctx.outputs.labels.class_names), num_features)
    if rows.kind != kind:
        note = f"the pretrained head is a {rows.kind} head: its rows do not start this run's {kind} head"
    if note not in ctx.session.notes:
        ctx.session.note(note)
        ctx.log(note)
    return rows if rows.kind == kind else None


@functools.lru_cache(maxsize=4)
def _rows(folder: Path, classes: tuple[str, ...], num_features: int) -> tuple[HeadRows, str]:
    meta = read_meta(folder)
    rows = transfer_rows(folder / HEAD_WEIGHTS, meta.class_names, list(classes), num_features,
                         meta.settings.get("head", "softmax"))
    matched = int(rows.matched.sum())
    return rows, (f"head rows from the pretrained model for {matched} of {len(classes)} classes (matched by name); "
                  f"{len(classes) - matched} new")

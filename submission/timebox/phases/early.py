"""The early output: the first predictions, from a head fitted in numpy on the training images' pooled features
(a cosine head, :func:`timebox.train.cosine_head.fit_cosine_head`, when the head is one without a hidden layer; else
softmax regression, :func:`timebox.train.linear_head.fit_linear_head`), written as soon as every image's original view
is extracted; written again with the mirrored views averaged in when val says so. Provisional: the head replaces
it, and reuses the pooled features (bench/RESULTS.md, 2026-12-02 evening)."""

from __future__ import annotations

import time

import numpy as np

from ..outputs import EARLY_SOURCE
from ..train.cosine_head import fit_cosine_head
from ..train.head import HeadResult
from ..train.linear_head import fit_linear_head
from .activations import Pooler
from .context import Context
from .transfer import head_init
from .tta import flip_tta_on_val


def early_output(ctx: Context, pool: Pooler, val: np.ndarray, test: np.ndarray, train: np.ndarray, y_val: np.ndarray,
                 y_train: np.ndarray, usable: np.ndarray, keep_s: float) -> HeadResult | None:
    """The early head on the original view, its test predictions written; None if there is no top or it would
    leave less than ``keep_s``. A SIGTERM does not skip or shorten it: no model's output exists yet, and this is the
    quickest good one. The plan's ``early_output_s`` leaves the pooling out (the cut's plan counts it)."""
    if pool.top is None or not ctx.planner.early_output_fits(keep_s):
        return None
    t = time.time()
    pooled_val, pooled_train, pooled_test = pool([val, train, test])  # kept: the head reuses them
    head = fit_early_head(ctx, pooled_train, y_train, pooled_val, y_val, keep_s)
    ctx.outputs.write(ctx.predict(head.model, [pooled_test]), usable, EARLY_SOURCE)
    ctx.session.phase("early output", t, ctx.cfg.early_output_s, val_accuracy=round(head.val_accuracy, 4))
    ctx.log(f"wrote {ctx.outputs.path} (from the early head, val accuracy {head.val_accuracy:.4f}, original view)")
    return head


def fit_early_head(ctx: Context, train: np.ndarray, y_train: np.ndarray, val: np.ndarray, y_val: np.ndarray,
                   keep_s: float) -> HeadResult:
    """The early head on pooled features: a cosine head if the run's head is one without a hidden layer, else
    softmax regression; with the recipe's label smoothing and class weights, from the pretrained rows if any."""
    spec, recipe = ctx.recipe.head, ctx.recipe
    cosine = spec.kind == "cosine" and not spec.hidden
    common = {"expired": lambda: ctx.budget.remaining() <= keep_s, "seed": ctx.cfg.seed,
              "init": head_init(ctx, train.shape[1], "cosine" if cosine else "softmax"),
              "label_smoothing": recipe.label_smoothing, "class_weights": recipe.weights(y_train, ctx.num_classes)}
    if cosine:
        return fit_cosine_head(train, y_train, val, y_val, ctx.num_classes, spec=spec, **common)
    return fit_linear_head(train, y_train, val, y_val, ctx.num_classes, **common)


def early_flip(ctx: Context, pool: Pooler, head: HeadResult | None, val: list[np.ndarray], test: list[np.ndarray],
               y_val: np.ndarray, usable: np.ndarray) -> None:
    """The early head's predictions again, the test images' views averaged, if val's views say that is not
    clearly worse (:func:`timebox.phases.tta.use_flip_tta`). Nothing is written if the early output was not, or
    if it was replaced."""
    if head is None or ctx.outputs.written_by != EARLY_SOURCE:
        return
    t = time.time()
    tta, val_accuracy = flip_tta_on_val([ctx.predict(head.model, [p]) for p in pool(val)], y_val)
    if tta:
        ctx.outputs.write(ctx.predict(head.model, pool(test)), usable, EARLY_SOURCE)  # kept: the head predicts them too
        ctx.log(f"wrote {ctx.outputs.path} (from the early head, val accuracy {val_accuracy:.4f}, flip TTA on)")
    ctx.session.phase("early flip TTA", t, None, val_accuracy=round(val_accuracy, 4), tta=bool(tta))

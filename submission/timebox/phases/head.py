"""The head: the run's head fitted on the pooled features of every training view (or the early head, when no
training view came after it), its share of the budget planned by :meth:`timebox.plan.Planner.head_plan`, and kept
only if val does not score it below the numpy head of the early output; or, in a resumed session, the head an
earlier one fitted."""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np

from ..train.callbacks import EpochEvents
from ..train.head import HeadResult, fit_head
from .activations import Activations
from .context import Context
from .early import fit_early_head
from .extract import Extraction
from .latency import measure_latency
from .transfer import head_init
from .tta import flip_tta_on_val

RECORD = "head"


@dataclass
class HeadOutcome:
    """The head and its record; ``val_probs`` (per view) and ``test_probs`` (on the views it uses, when their
    pooled features were kept) when this session fitted it: scoring it then needs no pass through the top."""

    model: keras.Model
    tta: bool
    n_views: int
    val_accuracy: float
    chosen_epoch: int
    epochs_run: int
    history: dict
    early: bool
    val_probs: list[np.ndarray] | None = None
    test_probs: np.ndarray | None = None

    def info(self) -> dict:
        return {"architecture": self.model.to_json(), "tta": self.tta, "n_views": self.n_views,
                "chosen_epoch": self.chosen_epoch, "epochs_run": self.epochs_run, "history": self.history,
                "early_head": self.early, "val_accuracy": self.val_accuracy}


def _restored(ctx: Context) -> HeadOutcome | None:
    record = ctx.state.read(RECORD, load_arrays=False)
    if record is None:
        return None
    info = record["info"]
    model = keras.models.model_from_json(info["architecture"])
    model.load_weights(record["weights"])
    return HeadOutcome(model, info["tta"], info["n_views"], info["val_accuracy"], info["chosen_epoch"],
                       info["epochs_run"], info["history"], info["early_head"])


def run_head(ctx: Context, ext: Extraction) -> HeadOutcome:
    """The head (fitted, the early head's, or a prior session's); the top's speed and the one-view latency are
    measured on the way (``Measured.top_rate``, ``single_latency_ms``)."""
    planner, acts, pool = ctx.planner, ext.acts, ext.pool
    restored = _restored(ctx)
    if restored is not None:
        if planner.measured.top_rate is None:
            planner.measured.top_rate = ctx.state.read(RECORD, load_arrays=False)["info"].get("top_rate")
        return restored
    t = time.time()
    # the early head is the head when interrupted, or when no training view came after it (fine-tuning gets its time)
    # unless the head is one it is not (a cosine head, a hidden layer)
    early = ext.early_head is not None and (ctx.budget.interrupted or (len(acts.train) == 1 and not planner.keras_head))
    pooled_val = pool(acts.val)  # the early head's views are pooled already (the top can be the backbone)
    planner.measured.top_rate = pool.rate  # of the last views pooled by now (the training views' may be faster)
    pooled_train = pool(acts.train[:1] if early else acts.train)
    if (planner.voting or ctx.cfg.latency_ms is not None) and planner.measured.top_rate and not ctx.budget.interrupted:
        planner.measured.single_latency_ms = measure_latency(ext.extractor.full, ext.size, 1, ctx.cfg.latency_images,
                                                             planner.measured)
    plan = planner.head_plan(early, ctx.budget.interrupted)
    planner.ensemble_time = plan.ensemble_time
    if plan.note:
        ctx.session.note(plan.note)
    candidates = [ext.early_head] if plan.early else [_fit(ctx, plan.time_s, pooled_train, pooled_val[0], acts)]
    if not plan.early and not planner.keras_head and not ctx.budget.interrupted:  # a numpy head is its rival
        candidates.append(ext.early_head or fit_early_head(ctx, pooled_train[0], acts.y_train, pooled_val[0],
                                                           acts.y_val, planner.reserve_s()))
    (tta, val_accuracy, val_probs), head = _best_on_val(ctx, candidates, pooled_val, acts.y_val)
    early = plan.early or head is not candidates[0]
    if early and not plan.early:
        ctx.session.note(f"the head is the early head (val accuracy {val_accuracy:.4f}): the head fitted in Keras "
                         f"({candidates[0].epochs_run} epochs) scored lower on val")
    n_views = len(pooled_val) if tta else 1
    pooled_test = pool.known(acts.test[:n_views])  # from the early output, if any
    test_probs = ctx.predict(head.model, pooled_test) if pooled_test is not None else None
    pool.clear()
    outcome = HeadOutcome(head.model, bool(tta), n_views, float(val_accuracy), head.chosen_epoch, head.epochs_run,
                          head.history, early, val_probs, test_probs)
    ctx.session.phase("head", t, planner.head_s, epochs=head.epochs_run, chosen_epoch=head.chosen_epoch,
                      early_head=early)
    ctx.log(f"head{' (the early head)' if early else ''}: val accuracy {val_accuracy:.4f} "
            f"(epoch {head.chosen_epoch}/{head.epochs_run}), flip TTA {'on' if tta else 'off'}")
    ctx.state.write(RECORD, {**outcome.info(), "top_rate": planner.measured.top_rate}, weights=head.model)
    return outcome


def _fit(ctx: Context, time_s: float, pooled_train: list[np.ndarray], pooled_val: np.ndarray,
         acts: Activations) -> HeadResult:
    """The run's head fitted in Keras for ``time_s`` on every training view's pooled features."""
    planner = ctx.planner
    head_end = time.time() + time_s
    return fit_head(np.concatenate(pooled_train), np.tile(acts.y_train, len(pooled_train)), pooled_val, acts.y_val,
                    ctx.num_classes, time_s=time_s, expired=lambda: planner.expired() or time.time() > head_end,
                    seed=ctx.cfg.seed, init=head_init(ctx, pooled_val.shape[1], ctx.recipe.head.kind),
                    callbacks=[EpochEvents(ctx.session.events, "head", ctx.budget.remaining)], recipe=ctx.recipe)


def _best_on_val(ctx: Context, heads: list[HeadResult], pooled_val: list[np.ndarray],
                 y_val: np.ndarray) -> tuple[tuple, HeadResult]:
    """((flip TTA on, val accuracy, val probabilities per view), head) of the head scoring best on val; on a tie
    the first. The fitted head replaces the early one only if val does not say it is worse (a head fitted in a few
    seconds can score far below it: 0.16 against 0.81, bench/RESULTS.md, 2026-12-07 (18:16Z-), faults)."""
    scored = []
    for head in heads:
        val_probs = [ctx.predict(head.model, [p]) for p in pooled_val]
        scored.append((*flip_tta_on_val(val_probs, y_val), val_probs))
    best = max(range(len(heads)), key=lambda i: (scored[i][1], -i))
    return scored[best], heads[best]

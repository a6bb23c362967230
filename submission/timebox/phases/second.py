"""A second backbone: a head on its frozen pooled features (original view) of the val, test and training images,
an ensemble candidate less correlated with the fine-tune's checkpoints (bench/RESULTS.md, 2026-11-24 midday). The
val images go first: they measure its speed, and the rest runs only if it fits ``second_share`` of the budget and
fine-tuning still fits after it. It lives in one session: a resumed run does without it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np

from ..metrics import accuracy
from ..models.ensemble_model import member_copy
from ..models.registry import BackboneSpec, build_feature_extractor
from ..train.head import fit_head
from .context import Context
from .extract import Extraction, features


@dataclass
class SecondMember:
    """The second backbone's head as an ensemble candidate: the backbone (uint8 image -> pooled features), the head,
    its val and test probabilities, and the backbone's seconds per image."""

    source: str
    bottom: keras.Model
    member: keras.Model
    val: np.ndarray
    test: np.ndarray
    image_s: float


def _why_not(ctx: Context, spec: BackboneSpec, ext: Extraction, n_images: int) -> str | None:
    """Why the second backbone is not planned, or None."""
    planner = ctx.planner
    if ext.sources is None or ctx.budget.interrupted:
        return f"{spec.name} head skipped: interrupted, or a resumed session (it lives in one session)"
    plan_s = planner.second_plan_s(n_images)
    why = ("no ensemble phase" if not planner.votes() else
           f"its estimate is over its {planner.second_share_s():.0f}s ({ctx.cfg.second_share:.0%} of the budget)"
           if plan_s == 0.0 else
           f"fine-tuning would not fit after its {plan_s:.0f}s" if not planner.fine_tune_fits_after(plan_s) else None)
    return f"{spec.name} head skipped: {why}" if why else None


def run_second(ctx: Context, spec: BackboneSpec | None, reason: str, ext: Extraction) -> SecondMember | None:
    """The second backbone's head, or None (the notes say why)."""
    acts, planner = ext.acts, ctx.planner
    if spec is None:
        ctx.session.note(reason)
        return None
    n = {"val": len(acts.y_val), "test": acts.n_test, "train": len(acts.y_train)}
    if why := _why_not(ctx, spec, ext, sum(n.values())):
        ctx.session.note(why)
        return None
    t, share_s = time.time(), planner.second_share_s()
    full = build_feature_extractor(spec, ext.size, ctx.cfg.weights)
    marks: list[tuple[float, int]] = []  # (time, images done) after each batch of the val images

    def extract(part: str) -> np.ndarray | None:
        cache, idx = getattr(ext.sources, part)
        f = features(ctx, full, cache, idx, lambda: planner.expired() or time.time() - t > share_s, spec.name,
                     marks=marks if part == "val" else None)
        return f.values if f.done == len(idx) else None

    v0 = time.time()
    feats = {"val": extract("val")}
    image_s = ((marks[-1][0] - marks[0][0]) / (marks[-1][1] - marks[0][1]) if len(marks) > 2  # the first traces
               else (time.time() - v0) / max(n["val"], 1))
    planned_s = time.time() - t + (n["test"] + n["train"]) * image_s + planner.head_s
    if feats["val"] is None or planned_s > share_s or not planner.fine_tune_fits_after(planned_s - (time.time() - t)):
        ctx.session.note(f"{spec.name} head skipped: measured at {1 / image_s:.0f} img/s it would take "
                         f"{planned_s:.0f}s, over its {share_s:.0f}s or fine-tuning's time")
        ctx.session.phase("second backbone", t, share_s, backbone=spec.name, used=False)
        return None
    for part in ("test", "train"):
        feats[part] = extract(part)
        if feats[part] is None:
            ctx.session.note(f"{spec.name} head skipped: its share or the budget ran out while extracting its features")
            ctx.session.phase("second backbone", t, share_s, backbone=spec.name, used=False)
            return None
    return _fit(ctx, spec, acts, feats, full, image_s, t, planned_s)


def _fit(ctx: Context, spec: BackboneSpec, acts, feats: dict, full: keras.Model, image_s: float, t: float,
         planned_s: float) -> SecondMember:
    head_s = ctx.planner.head_s
    head_end = time.time() + head_s
    head = fit_head(feats["train"], acts.y_train, feats["val"], acts.y_val, ctx.num_classes, time_s=head_s,
                    expired=lambda: ctx.planner.expired() or time.time() > head_end, seed=ctx.cfg.seed,
                    recipe=ctx.recipe)
    test = (ctx.predict(head.model, [feats["test"]]) if len(feats["test"])
            else np.zeros((0, ctx.num_classes), np.float32))
    second = SecondMember(f"{spec.name} head", full, member_copy(head.model, "second_member"),
                          ctx.predict(head.model, [feats["val"]]), test, image_s)
    ctx.planner.measured.second_image_s = image_s
    val_acc = accuracy(second.val, acts.y_val)
    ctx.session.phase("second backbone", t, planned_s, backbone=spec.name, used=True,
                      images_per_s=round(1 / image_s, 2), val_accuracy=round(val_acc, 4))
    ctx.log(f"{second.source}: val accuracy {val_acc:.4f} ({1 / image_s:.0f} img/s), an ensemble candidate")
    return second

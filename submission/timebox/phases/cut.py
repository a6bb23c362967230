"""The cut fine-tuning starts from: the deepest among the backbone's automatic cuts whose epochs fit the time
fine-tuning will get (:meth:`timebox.plan.Planner.cut_plan`; :mod:`timebox.train.depth`), with the tops timed
only when an optimistic estimate says a deeper cut may fit (bench/RESULTS.md, 2026-12-02)."""

from __future__ import annotations

import time

import numpy as np
import psutil

from ..models.registry import Extractor, split_extractor
from ..plan import Counts
from ..train.depth import CutPlan
from .context import Context


def top_inference_s(ctx: Context, extractor: Extractor, size: int, cut: int) -> float:
    """Measured seconds per image of the backbone's part from block ``cut`` on (inference; the faster of two
    batches after its trace, whose seconds go to ``Measured.top_trace_s``)."""
    top = split_extractor(extractor, ctx.spec, cut).top
    batch = np.zeros((ctx.cfg.activation_batch, *ctx.spec.cuts.shape(size, cut)), np.float32)
    t = time.perf_counter()
    top.predict_on_batch(batch)
    ctx.planner.measured.top_trace_s[cut] = time.perf_counter() - t
    times = []
    for _ in range(2):
        t = time.perf_counter()
        top.predict_on_batch(batch)
        times.append(time.perf_counter() - t)
    return min(times) / len(batch)


def _deepest(ctx: Context, extractor: Extractor, size: int, n: Counts, mirror: bool, free: float,
             measured: dict[int, float]) -> CutPlan:
    """The deepest cut that fits: by the optimistic estimate first; then the default's and deeper tops are timed,
    shallow to deep, up to that estimate's, until one does not fit."""
    cuts, planner = ctx.spec.cuts, ctx.planner
    auto = cuts.automatic()
    chosen = planner.cut_plan({c: planner.optimistic_top_s(c) for c in auto}, size, n, mirror, free)
    if chosen.cut == cuts.default:
        return chosen
    measured.setdefault(cuts.default, top_inference_s(ctx, extractor, size, cuts.default))
    for cut in auto[1 : auto.index(chosen.cut) + 1]:
        measured.setdefault(cut, top_inference_s(ctx, extractor, size, cut))
        if planner.cut_plan(measured, size, n, mirror, free).cut != cut:
            break
    return planner.cut_plan(measured, size, n, mirror, free)


def choose_run_cut(ctx: Context, extractor: Extractor, size: int, n: Counts, notes: list[str]) -> tuple[CutPlan, bool]:
    """The cut, and whether the training images' mirrored view is extracted: not when the chosen cut would get
    fewer than ``train_mirror_min_epochs`` epochs with it; the cut is then chosen again without it, and the early
    output's head is the head (their time goes to fine-tuning; bench/RESULTS.md, 2026-11-25 afternoon)."""
    free = min(psutil.virtual_memory().available, psutil.disk_usage(ctx.session.out).free)  # OUT/state keeps a copy
    measured: dict[int, float] = {}
    chosen = _deepest(ctx, extractor, size, n, True, free, measured)
    least = ctx.cfg.train_mirror_min_epochs
    mirror = chosen.epochs[chosen.cut] >= least
    if not mirror:
        freed = "its time goes" if ctx.planner.keras_head else "its time and the head's go"
        notes.append(f"the training images' mirrored view skipped: with it fine-tuning would get ~"
                     f"{chosen.epochs[chosen.cut]:.1f} epochs from block {chosen.cut}, fewer than {least:g}; {freed} "
                     "to fine-tuning")
        ctx.log(notes[-1])
        chosen = _deepest(ctx, extractor, size, n, False, free, measured)
    estimates = ", ".join(f"{c}: {e:.1f}" for c, e in chosen.epochs.items())
    notes.append(f"{chosen.reason} (estimated epochs by cut: {estimates})")
    ctx.log(notes[-1])
    return chosen, mirror

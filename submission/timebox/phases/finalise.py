"""Finalise: the output's weights into the exported model (unless the ensemble's export is the output), and the
report: ``OUT/report/summary.json`` (the complete machine-readable result), config, history, timeline."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from ..metrics import accuracy, confusion_matrix, per_class_accuracy
from ..report import environment, write_report
from .context import Context
from .ensemble import EnsembleOutcome
from .extract import Extraction
from .finetune import FineTuneOutcome
from .head import HeadOutcome
from .model import single_model
from .scoring import Scorer


@dataclass
class OnlineResult:
    predictions: Path
    model_dir: Path
    val_accuracy: float
    tta: bool
    test_rows: int
    wall_s: float
    notes: list[str] = field(default_factory=list)


def result(ctx: Context, val_accuracy: float, tta: bool) -> OnlineResult:
    return OnlineResult(ctx.outputs.path, ctx.session.out / "model", val_accuracy, tta, len(ctx.outputs.names),
                        ctx.session.wall_s(), ctx.session.notes)


def _output_val_probs(ctx: Context, scorer: Scorer, ensemble: EnsembleOutcome) -> np.ndarray | None:
    """The output's val probabilities (a refit output's: those of the output before it, when this session scored
    it); its checkpoint's weights are loaded into the scored model unless the output is final (then the weights in
    memory are the output's). None when they are not known and predicting them would cut into the end reserve (a
    refit output, late): the report then has no confusion matrix."""
    if ctx.outputs.record.refit and scorer.output_val is not None:
        return scorer.output_val
    source, own = scorer.last.source, scorer.output_weights()
    if own is not None:
        scorer.scored.load_weights(own[0])
        source = own[1]
    if ensemble.model is not None:
        return ensemble.val_probs
    planner = ctx.planner
    if (source not in scorer.candidates and planner.measured.top_rate
            and planner.expired(planner.n_views * planner.check_s())):
        ctx.session.note("no val confusion matrix: predicting the val images would cut into the end reserve")
        return None
    return scorer.val_probs(source)


def _reported_accuracy(ctx: Context, val_probs: np.ndarray | None, y_val: np.ndarray,
                       ensemble: EnsembleOutcome, unseen: bool) -> float:
    """The val accuracy reported (``unseen``: ``val_probs`` are those of a refit output's predecessor)."""
    record = ctx.outputs.record
    if val_probs is None:
        return record.val_accuracy
    if record.exported and ensemble.model is None:  # resumed after an earlier session's ensemble
        ctx.session.note("the ensemble of an earlier session is the output; the val confusion matrix is of the single "
                         "model in memory")
        return record.val_accuracy
    if record.refit:  # its val accuracy is of images it trained on
        ctx.session.note("the output was refit on the training and val images: the val accuracy and the val report "
                         "(confusion matrix, per class) are those of the output before the refit, on val images it had "
                         "not trained on" if unseen else
                         "the val accuracy reported is that of the output before the refit; the val confusion matrix "
                         "is of the refit output, on val images it trained on")
        return record.val_accuracy
    return accuracy(val_probs, y_val)


def save_transfer(folder: Path, ext: Extraction, head_model: keras.Model) -> None:
    """The output's backbone weights (all its blocks, fine-tuned or not, as ``--weights PATH`` loads them) and its
    head's, into ``folder`` (see :mod:`timebox.pretrained`)."""
    from ..pretrained import BACKBONE_WEIGHTS, HEAD_WEIGHTS

    folder.mkdir(parents=True, exist_ok=True)
    ext.extractor.full.layers[-1].save_weights(str(folder / BACKBONE_WEIGHTS))
    head_model.save_weights(str(folder / HEAD_WEIGHTS))


def finalise(ctx: Context, ext: Extraction, scorer: Scorer, head: HeadOutcome, ft: FineTuneOutcome,
             ensemble: EnsembleOutcome, class_names: list[str], head_model: keras.Model) -> OnlineResult:
    t = time.time()
    val_probs = _output_val_probs(ctx, scorer, ensemble)
    ctx.outputs.ensure_exists()
    if ctx.cfg.transfer_dir is not None:  # the weights in memory are the output's now
        save_transfer(Path(ctx.cfg.transfer_dir), ext, head_model)
    if not ctx.outputs.record.exported:  # else OUT/model already holds the ensemble of predictions.csv
        ctx.outputs.export(ensemble.model or single_model(ext.extractor, head_model, scorer.scored, scorer.n_views))
    ctx.session.phase("finalise", t, ctx.planner.reserve_s())
    unseen = ctx.outputs.record.refit and scorer.output_val is not None
    val_acc = _reported_accuracy(ctx, val_probs, ext.acts.y_val, ensemble, unseen)
    history = {"head": head.history, "head_chosen_epoch": head.chosen_epoch, "finetune": ft.info(),
               "ensemble": ensemble.info, "checkpoints": scorer.checkpoints.entries}
    summary = {**_summary(ctx, ext, val_acc, head.tta), "val_unseen": not ctx.outputs.record.refit or unseen}
    cm = None if val_probs is None else confusion_matrix(val_probs.argmax(1), ext.acts.y_val, ctx.num_classes)
    if cm is not None:  # the output's on val (a refit output's predecessor's, or trained on: the notes say which)
        per_class = per_class_accuracy(cm)
        summary["val_per_class"] = {n: None if np.isnan(a) else round(float(a), 4)
                                    for n, a in zip(class_names, per_class)}
        summary["val_macro_accuracy"] = round(float(np.nanmean(per_class)), 4)
    write_report(ctx.session.out / "report", {
        "config": _config(ctx, ext.size), "environment": environment(), "history": history,
        "quarantine": ext.acts.quarantine, "unreadable_test_files": ext.acts.unreadable_test, "summary": summary,
        "timeline": {"phases": ctx.session.phases, "events": ctx.log.events},
    }, cm, class_names)
    pictures(ctx, scorer, summary, cm, class_names)
    ctx.log(f"done: val accuracy {val_acc:.4f} (predictions from {ctx.outputs.written_by}); outputs in "
            f"{ctx.session.out} (the report: {ctx.session.out / 'report' / 'index.html'})")
    return result(ctx, val_acc, head.tta)


def pictures(ctx: Context, scorer: Scorer, summary: dict, cm: np.ndarray | None, class_names: list[str]) -> None:
    """The report's pictures (matplotlib), its TensorBoard text and confusion image, and ``index.html``; skipped
    with a note when less than ``pictures_s`` is left (the outputs are complete already)."""
    s, report = ctx.session, ctx.session.out / "report"
    if ctx.budget.remaining() < ctx.cfg.pictures_s:
        s.note(f"no pictures: {ctx.budget.remaining():.1f}s left, {ctx.cfg.pictures_s:g}s needed")
        return
    from .. import plots
    from ..report_page import write_index

    plots.timeline_png(report / "timeline.png", ctx.cfg.budget_s, s.phases, s.scores, scorer.checkpoints.entries,
                       s.budget.start - s.spent, ctx.planner.reserve_s())
    drawn = ["timeline.png"]
    s.events.text("summary", f"val accuracy {summary['val_accuracy']:.4f}, cut {summary['cut']}, size "
                  f"{summary['settings']['input_size']}, predictions from {summary['predictions_from']}")
    if cm is not None:
        s.events.image("val confusion matrix", plots.confusion_png(report / "confusion.png", cm, class_names))
        plots.per_class_png(report / "per_class.png", cm, class_names)
        drawn += ["confusion.png", "per_class.png"]
    write_index(report, summary, class_names, cm, drawn)


def _config(ctx: Context, size: int) -> dict:
    return {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(ctx.cfg).items()},
            "input_size": size, "cache_dir": str(ctx.cache_dir)}


def _summary(ctx: Context, ext: Extraction, val_acc: float, tta: bool) -> dict:
    """The run's complete machine-readable result: what ``tune``, the benchmarks and the tests read."""
    s, planner = ctx.session, ctx.planner
    return {"budget_s": ctx.cfg.budget_s, "wall_s": round(s.wall_s(), 2), "margin_s": round(s.budget.remaining(), 2),
            "reserve_s": round(planner.reserve_s(), 2), "export_s": round(planner.measured.export_s, 2),
            "spent_by_earlier_sessions_s": round(s.spent, 2), "val_accuracy": val_acc, "tta": tta,
            "p95_latency_ms_one_view": round(planner.measured.single_latency_ms, 1) or None,
            "predictions_from": ctx.outputs.written_by, "refit": ctx.outputs.record.refit,
            "interrupted": s.budget.interrupted,
            "train_images": len(ext.acts.y_train), "val_images": len(ext.acts.y_val), "cut": ext.acts.cut,
            "finetune_devices": list(ctx.devices) or None,
            "notes": s.notes, "settings": _config(ctx, ext.size),
            "phases": [{k: p[k] for k in ("phase", "start_s", "planned_s", "actual_s")} for p in s.phases]}

"""The online run, top to bottom: files -> decoded cache -> cached activations -> head -> fine-tuned top ->
checkpoints -> ensemble -> predictions and exports, every step sized to the wall-clock budget counted from the
command's start (:mod:`timebox.plan`).

The phases, one module each under :mod:`timebox.phases`: extract (with the early output), head, second
backbone, fine-tune (with the output rules at its end), ensemble, finalise. From the listing of the test files
on, ``OUT/predictions.csv`` always exists (the prior class first) and each scored model replaces it only if it is
better (:mod:`timebox.outputs`);
SIGTERM/SIGINT end training early and keep it; a watchdog exits cleanly just before the deadline if
anything stalls. ``OUT/state/`` keeps what ``resume=True`` needs to continue a killed run.

Example::

    result = run_online(OnlineConfig(train_dir, test_dir, out, budget_s=300))
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path


from .checkpoints import CheckpointManager
from .config import OnlineConfig
from .console import half_precision_quietly
from .data.layouts import Dataset
from .listing import Listing, list_run
from .models.feature_store import FeatureStore
from .models.registry import BackboneSpec, build_extractor, get_backbone, second_backbone, split_extractor
from .outputs import EARLY_SOURCE, RECORD, OutputRecord, Outputs
from .phases.activations import Activations, Pooler
from .phases.context import Context
from .phases.ensemble import EnsembleOutcome, EnsemblePhase
from .phases.extract import Extraction, ExtractPhase, set_size
from .phases.finalise import OnlineResult, finalise, result
from .phases.finetune import FineTuneOutcome, FineTunePhase
from .phases.head import HeadOutcome, run_head
from .phases.model import scored_model, single_model
from .phases.scoring import Scorer
from .phases.second import run_second
from .phases.tta import use_flip_tta  # noqa: F401 (part of this module's interface)
from .plan import Counts, Planner
from .predict import MODEL_FILE, LabelMap
from .pretrained import resolve_config
from .recovery import RunState
from .session import Session
from .train.recipe import Recipe
from .train.replicas import setup_devices

__all__ = ["OnlineConfig", "OnlineResult", "run_online", "default_cache_dir", "use_flip_tta"]


def default_cache_dir(out: Path | None = None, log: Callable[[str], None] | None = None) -> Path:
    """``$TIMEBOX_CACHE_DIR`` or ``~/.cache/timebox``; where that cannot be written (HOME unset or read-only, as
    in some judge containers), the temp folder's ``timebox-cache-UID``, else ``OUT/cache``, told to ``log``."""
    env, home = os.environ.get("TIMEBOX_CACHE_DIR"), os.path.expanduser("~")
    first = Path(env) if env else Path(home) / ".cache" / "timebox" if os.path.isabs(home) else None
    why = "no home folder (HOME is unset)" if first is None else _cannot_write(first)
    if why is None:
        return first
    places = [Path(tempfile.gettempdir()) / f"timebox-cache-{os.getuid()}"]
    if out is not None:
        places.append(Path(out).resolve() / "cache")
    chosen = next((p for p in places if _cannot_write(p) is None), None)
    if chosen is None:
        return first or places[0]  # nothing writable: building the cache says so, naming the folder
    if log is not None:
        log(f"image cache in {chosen}: {first or '~/.cache/timebox'} cannot be used ({why})")
    return chosen


def _cannot_write(folder: Path) -> str | None:
    """Why a file cannot be created in ``folder`` (made if missing), or None when it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def run_online(cfg: OnlineConfig, state: RunState | None = None, listing: Listing | None = None) -> OnlineResult:
    """Train on ``cfg.train_dir`` and predict every file in ``cfg.test_dir`` within ``cfg.budget_s``.

    With ``cfg.resume``, continue the run interrupted in ``cfg.out`` with the budget it had left. ``state`` is this
    session's, begun by the caller (the command line begins it before TensorFlow loads, so the import time counts
    even if the run is killed during it), and so is ``listing`` with its prior-class output
    (:func:`timebox.listing.write_prior`).
    """
    cfg = resolve_config(cfg)  # an OnlineConfig built in code keeps init "auto" until here
    devices = setup_devices(cfg.replicas) if cfg.finetune else []  # before TensorFlow starts
    half_precision_quietly()
    with Session(cfg, state) as session:
        listing = listing or list_run(cfg)
        ds, test_files = listing.ds, listing.test_files
        spec = get_backbone(cfg.backbone)
        size = cfg.size or spec.default_size
        session.log(f"{len(ds.files)} training images in {len(ds.class_ids)} classes ({ds.layout} layout), "
                    f"{len(test_files)} test files; backbone {spec.name} at {size}px")
        ctx = _context(cfg, session, listing, spec, size)
        ctx.devices = tuple(devices)
        ctx.outputs.ensure_exists()  # from here on, whatever ends the run, a complete predictions.csv of its own
        with session.watch(ctx.outputs.ensure_exists):
            return _run(ctx, ds, test_files, size)


def _context(cfg: OnlineConfig, session: Session, listing: Listing, spec: BackboneSpec, size: int) -> Context:
    ds = listing.ds
    labels = LabelMap(ds.class_ids, ds.class_names, listing.prior, size, spec.name)
    outputs = Outputs(session.out, listing.names, labels, session.state, cfg.judge, cfg.judge_dir, session.log,
                      cfg.judge_input)
    planner = Planner(cfg, session.budget, spec.cuts)
    planner.voting = cfg.ensemble and not _refits(cfg, spec)  # a vote is chosen on val, which a refit trained on
    return Context(cfg, session, planner, outputs, spec, len(ds.class_ids),
                   Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(cfg.out, session.log),
                   FeatureStore(cfg.feature_dir) if cfg.feature_dir else None, Recipe.of(cfg, ds.class_names))


def _refits(cfg: OnlineConfig, spec: BackboneSpec) -> bool:
    return cfg.refit and cfg.finetune and spec.split is not None


def _run(ctx: Context, ds: Dataset, test_files: list[Path], size: int) -> OnlineResult:
    cfg, planner, log = ctx.cfg, ctx.planner, ctx.log
    if ctx.session.resumed and planner.left_s() <= 0:
        log(f"no time left to train: {ctx.outputs.path} is kept from {ctx.outputs.written_by}")
        return result(ctx, 0.0, False)
    second, reason = (second_backbone(ctx.spec, cfg.second_backbone, cfg.weights) if planner.voting and cfg.finetune
                      else (None, "no second backbone: no ensemble phase" +
                            (" (a refit run has no vote)" if _refits(cfg, ctx.spec) else "")))
    planner.second_planned = second is not None
    ext = _extraction(ctx, ds, test_files, size)
    if ext is None:  # interrupted before any model could exist
        log(f"interrupted before any model existed: {ctx.outputs.path} keeps the most frequent class")
        ctx.session.note("interrupted before any model existed")
        return result(ctx, 0.0, False)
    head = run_head(ctx, ext)
    planner.n_views = head.n_views
    scorer = Scorer(ctx, ext.acts, scored_model(ext.extractor, head.model, ext.acts.val[0].shape[1:]), head.n_views,
                    CheckpointManager(ctx.session.out / "checkpoints", k=cfg.keep))
    _score_head(ctx, scorer, head)
    scorer.sync_with_checkpoints()
    _first_export(ctx, ext, scorer, head)
    member = run_second(ctx, second, reason, ext)
    ft = _fine_tune(ctx, ext, scorer) if cfg.finetune else FineTuneOutcome()
    ensemble = EnsemblePhase(ctx, ext, scorer, member, head.model).run() if planner.voting else EnsembleOutcome()
    return finalise(ctx, ext, scorer, head, ft, ensemble, ds.class_names, head.model)


def _extraction(ctx: Context, ds: Dataset, test_files: list[Path], size: int) -> Extraction | None:
    """The activations: extracted, or loaded from an earlier session's state (at the size and cut it chose)."""
    cfg, planner, t = ctx.cfg, ctx.planner, time.time()
    acts = Activations.load(ctx.state)
    if acts is not None and acts.size is not None:
        size = acts.size
        set_size(ctx, size)
    extractor = build_extractor(ctx.spec, size, cfg.weights, cfg.finetune_cut if cfg.finetune else None)
    if acts is None:
        ext = ExtractPhase(ctx, ds, test_files, extractor, size).run(t)
        if ext is None:
            return None
        ext.acts.save(ctx.state)
    else:
        if acts.cut != extractor.cut:  # the cut an earlier session chose
            extractor = split_extractor(extractor, ctx.spec, acts.cut)
        ctx.session.phase("setup", t, None)
        ctx.log(f"activations loaded from {ctx.state.folder}")
        ext = Extraction(acts, extractor, None, Pooler(extractor.top, ctx.predict), None, size)
    acts = ext.acts
    planner.measured.rate, planner.measured.ft_image_s = acts.rate, acts.ft_image_s
    planner.cut = ext.extractor.cut if ext.extractor.top is not None else None
    planner.counts = _counts(acts)
    planner.zoom_sources = ext.sources is not None
    ctx.session.notes += acts.notes
    return ext


def _counts(acts: Activations) -> Counts:
    return Counts(len(acts.y_val), acts.n_test, len(acts.y_train), len(acts.test))


def _score_head(ctx: Context, scorer: Scorer, head: HeadOutcome) -> None:
    """The head scored (its checkpoint; the output if it is the best yet), unless an earlier session did; when it
    is the early head, the early output stands as its output."""
    if ctx.state.read(RECORD, load_arrays=False) is not None:
        return
    standing = head.early and ctx.outputs.written_by == EARLY_SOURCE
    if standing:  # its output is the head's: scored for its checkpoint, not predicted again
        scorer.stands(OutputRecord(head.val_accuracy, EARLY_SOURCE), head.val_probs)
    known = (head.val_probs, head.test_probs) if head.val_probs is not None else None
    path = scorer.score("head", head.chosen_epoch, head.epochs_run, known)
    if standing and path is not None:  # the early head's weights are the head's checkpoint
        scorer.stands(replace(ctx.outputs.record, checkpoint=path.name))
    ctx.log(f"{ctx.outputs.path} stands: the head is the early head" if standing else
            f"wrote {ctx.outputs.path} (from the head, val accuracy {ctx.outputs.record.val_accuracy:.4f})")


def _first_export(ctx: Context, ext: Extraction, scorer: Scorer, head: HeadOutcome) -> None:
    """OUT/model after the head: the output exists as a model too, and the export's cost is measured."""
    exported = ctx.session.resumed and (ctx.session.out / "model" / MODEL_FILE).exists()
    if exported or ctx.budget.expired(ctx.planner.reserve_s() + ctx.cfg.export_guess_s):
        return
    t = time.time()
    ctx.outputs.export(single_model(ext.extractor, head.model, scorer.scored, scorer.n_views))
    ctx.planner.measured.export_s = time.time() - t
    ctx.session.phase("export", t, None)
    ctx.log(f"exported {ctx.session.out / 'model'} in {ctx.planner.measured.export_s:.1f}s; end reserve "
            f"{ctx.planner.reserve_s():.1f}s")


def _fine_tune(ctx: Context, ext: Extraction, scorer: Scorer) -> FineTuneOutcome:
    if ext.extractor.top is None:
        ctx.session.note(f"fine-tuning skipped: {ctx.spec.name} has no split point (only EfficientNet-Lite has one)")
        return FineTuneOutcome()
    image_cut = ext.extractor.cut == ctx.spec.cuts.image
    return FineTunePhase(ctx, scorer, image_cut).run(_refits(ctx.cfg, ctx.spec))

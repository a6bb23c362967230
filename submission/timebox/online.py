"""The online run, top to bottom: files -> decoded cache -> cached activations -> head ->
fine-tuned top -> checkpoints -> predictions.

Everything is sized to the wall-clock budget, counted from the command's start:

1. ``extract``: the frozen bottom of the backbone runs once per image, in priority order
   (val, test, train), then mirrored views (test-time and training augmentation) when the
   measured speed leaves time for fine-tuning after them (the training images' only when it gets
   ``TRAIN_MIRROR_MIN_EPOCHS`` epochs with it); at a smaller input size (down to
   ``min_size``) if every image's original view and the head would not fit at the configured one.
2. ``head``: a softmax head on pooled features, epochs and learning rate sized to its share (the
   early output's head when the training images have no mirrored view: it was fitted on the same);
   the model is exported once, which measures what the final export will cost.
3. ``finetune``: the backbone's blocks after the cut plus the head, on the cached activations,
   epochs and learning rate sized to the time that is left (the cut: the deepest whose epochs
   fit, chosen after the first val images measured the bottom's speed; see ``timebox.train.depth``;
   at the deepest, the image, the whole backbone trains on random crops of the cached images).
   When two rounds of ``ROUND_MIN_EPOCHS`` epochs each fit, it runs twice from the head on the
   pretrained top, each round with its own shuffling and half the time, and the two annealed
   ends' weights are averaged.

From the first scored model on, ``OUT/predictions.csv`` always exists and is replaced whenever
a better model (by timebox's own val accuracy) exists; SIGTERM/SIGINT end training early and
keep it; a watchdog exits cleanly just before the deadline if anything stalls. ``OUT/state/``
keeps what ``resume=True`` needs to continue a killed run with the budget it had left.

Example::

    result = run_online(OnlineConfig(train_dir, test_dir, out, budget_s=300))
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
import psutil

from .budget import Budget, command_start
from .checkpoints import CheckpointManager
from .config import OnlineConfig
from .data.cache import build_cache
from .data.layouts import Dataset, list_images, read_dataset
from .data.rows import ConcatRows
from .data.splits import stratified_split
from .export import export_for_judge, judge_dir
from .errors import UsageError
from .ensemble import choose, drop_order, vote
from .metrics import accuracy, confusion_matrix, log_loss, noise_margin
from .models.features import Features, extract_features, image_batch_size
from .models.ensemble_model import VIEWS, compose_ensemble, member_copy, view_model
from .models.heads import compose_classifier
from .models.registry import build_extractor, build_feature_extractor, get_backbone, second_backbone, split_extractor
from .predict import LABELS_FILE, MODEL_FILE, LabelMap, predict_batches, prediction_rows, write_predictions
from .progress import Progress
from .recovery import RunState
from .report import environment, timeline_png, write_report
from .train.augment import random_resized_crop
from .train.depth import TRAIN_PER_INFER, CutCost, CutPlan, choose_cut
from .train.finetune import FineTuneState, fine_tune, freeze_batch_norm
from .train.head import HeadResult, fit_head
from .train.linear_head import fit_linear_head
from .train.image_size import affordable_size
from .watchdog import Watchdog

EXPORT_GUESS_S = 5.0  # the final export's cost until the export after the head measures it (~3 s for Lite0)
REPORT_S = 2.0  # writing the report and timeline.png
FT_COST_RATIO = 0.6  # first guess of a fine-tune step's cost per image relative to the bottom's (default cut)
DEEP_MIN_EPOCHS = 4.5  # fine-tuning starts from a deeper cut only if this many of its epochs fit, as estimated:
# in 62 s on trashnet, 5 epochs from block 8 beat 9-10 from blocks 11-12, 3.7 from block 3 did not (bench/RESULTS.md)
IMAGE_MIN_EPOCHS = 20  # ... the whole backbone on random crops: they paid off at 20 epochs, not at 8 (bench/RESULTS.md)
MIN_FT_EPOCHS = 4  # mirrored views are extracted only if this many fine-tune epochs still fit
TRAIN_MIRROR_MIN_EPOCHS = 10  # ... the training images' only if fine-tuning gets this many (estimated) with it:
# below, its time is worth more as epochs (trashnet refits from block 12, test means of 3 seeds: 4 epochs on two
# views 91.22%, 5-6 on one view in 15 s more, the mirrored view's time, 91.62%, 6 with the head's 9 s too 92.15%;
# 8 epochs on two views 91.49%, 10 on one 92.34%; bench/RESULTS.md)
FT_SETUP_S = 5.0  # compiling and tracing the fine-tune step, before its first useful step: the least planned
TRAIN_TRACE_RATIO = 12  # ... or this times the cut's top's measured inference trace: Lite0's first fine-tune step
# took 10.9 times that trace from block 11 at 224 px (2.5 s) and 11.0 times at the image cut at 64 px (7.0 s)
LATENCY_IMAGES = 20  # single-image predictions timed for the p95 latency (after 3 warm-up calls)
MEMBER_LATENCY_IMAGES = 10  # the same for each member of the output alone, for the report
TRACE_S = 2.0  # least planned time to compose a one-view model and trace its first prediction
STATE_EVERY_S = 10.0  # least seconds between two fine-tune recovery states: a kill loses at most this much training
STATE_SHARE = 0.05  # ... or more, so that writing them takes at most this share of the fine-tune's time
ENSEMBLE_MAX_SHARE = 0.25  # the ensemble phase is planned only if it takes at most this share of fine-tuning's time
GC_EVERY_S = 10.0  # Python's cyclic garbage collection is off during a run; it runs between saves at most this often
ROUND_MIN_EPOCHS = 8  # two fine-tune rounds, their ends averaged, when each gets this many epochs: on trashnet (block
# 3) two 8-epoch rounds' weights averaged beat one 16-epoch run by 1.6 test points, their predictions by 1.4 and 2.0
FT_SLACK_S = 0.5  # fine-tuning ran up to 0.11 s past its plan (a 2-minute trashnet run): kept free after it
MEMBER_LOAD_S = 0.5  # building a candidate's model and loading its checkpoint (~0.3 s for Lite0's top here)
RATE_PROBE_IMAGES = 64  # val images timed through the default cut's bottom before the cut is chosen
ACTIVATION_BATCH = 32  # cached activations through a top: ~2x the images per second of 256 (bench/infer_batch.py)
EARLY_SOURCE = "the early head"  # the early output's source, as the outputs, the log and the best record name it
EARLY_OUTPUT_S = 2.0  # the early output but its pooling: its head (fit_linear_head: 0.3-0.8 s on trashnet), the CSV
CACHED_VIEWS = 2  # VIEWS[:2] (original, mirrored) are extracted with the training views; the zoomed ones later
SECOND_SHARE = 0.10  # most of the budget the second backbone's head may cost (extraction and fitting): on trashnet
# it took 28 s, 12% of 4 minutes, and cost fine-tuning its depth (block 11 instead of 8); at 8 minutes (6%) it
# added 0.6 test points to the vote in one of three runs (bench/RESULTS.md)
SECOND_COST_RATIO = 1.2  # its planned time per image over the main backbone's (Lite1 over Lite0 at 224 px: 1.23;
# at 1.5 its phase took 58-83% of its plan in 5 runs, bench/RESULTS.md; the val images then measure it anyway)
SECOND_SETUP_S = 3.0  # building the second backbone, loading its weights, tracing it
RESIZE_SETUP_S = 3.0  # rebuilding the backbone at a smaller input size, loading its weights, tracing it


@dataclass
class OnlineResult:
    predictions: Path
    model_dir: Path
    val_accuracy: float
    tta: bool
    test_rows: int
    wall_s: float
    notes: list[str] = field(default_factory=list)


class _Outputs:
    """Writes OUT/predictions.csv: the prior class for every file until a model's probabilities exist."""

    def __init__(self, path: Path, names: list[str], labels: LabelMap):
        self.path, self.names, self.labels = path, names, labels
        self.written_by: str | None = None

    def write(self, probs: np.ndarray, usable: np.ndarray, source: str) -> None:
        write_predictions(self.path, prediction_rows(self.names, probs, usable, self.labels))
        self.written_by = source

    def ensure_exists(self) -> None:
        if self.written_by is None:
            n = len(self.names)
            self.write(np.zeros((n, len(self.labels.class_ids))), np.zeros(n, bool), "prior")


@dataclass
class _Reserve:
    """Seconds kept for the end: the final export (measured once it has run), the report and a margin."""

    margin_s: float
    export_s: float = EXPORT_GUESS_S

    @property
    def s(self) -> float:
        return 1.5 * self.export_s + REPORT_S + self.margin_s


@dataclass
class _Activations:
    """Cached activations of every view (original, mirrored) and what extraction learned."""

    val: list[np.ndarray]
    test: list[np.ndarray]
    train: list[np.ndarray]
    y_val: np.ndarray
    y_train: np.ndarray
    usable: np.ndarray  # test files that get a model's prediction (readable and extracted)
    rate: float  # images per second through the bottom
    ft_image_s: float  # estimated seconds of a fine-tune step per image (until fine-tuning measures it)
    cut: int | None  # the block the cached activations enter (None: the backbone is not split)
    size: int | None  # the input size they were extracted at (None: a state written before sizes could shrink)
    quarantine: list[dict]
    unreadable_test: list[dict]
    notes: list[str]

    def save(self, state: RunState) -> None:
        arrays = {f"{part}{i}": v for part in ("val", "test", "train") for i, v in enumerate(getattr(self, part))}
        arrays.update(y_val=self.y_val, y_train=self.y_train, usable=self.usable)
        state.write("activations", {"views": [len(self.val), len(self.test), len(self.train)], "rate": self.rate,
                                    "ft_image_s": self.ft_image_s, "cut": self.cut, "size": self.size,
                                    "quarantine": self.quarantine,
                                    "unreadable_test": self.unreadable_test, "notes": self.notes}, arrays=arrays)

    @classmethod
    def load(cls, state: RunState) -> "_Activations | None":
        record = state.read("activations")
        if record is None:
            return None
        info, a = record["info"], record["arrays"]
        views = {part: [a[f"{part}{i}"] for i in range(n)] for part, n in zip(("val", "test", "train"), info["views"])}
        return cls(**views, y_val=a["y_val"], y_train=a["y_train"], usable=a["usable"], rate=info["rate"],
                   ft_image_s=info["ft_image_s"], cut=info["cut"], size=info.get("size"), quarantine=info["quarantine"],
                   unreadable_test=info["unreadable_test"], notes=info["notes"])


def _predict(model: keras.Model, views: list[np.ndarray], batch: int = ACTIVATION_BATCH) -> np.ndarray:
    """The model's outputs averaged over views (e.g. original and mirrored), in fixed-size batches."""
    return sum(predict_batches(model, view, batch) for view in views) / len(views)


def use_flip_tta(single_accuracy: float, tta_accuracy: float, n_val: int) -> bool:
    """Whether predictions average the original and the mirrored view: unless that is clearly worse on val,
    more than 2 standard errors below the original view alone. The models train on both views, and a
    few hundred val images cannot tell a point apart: on trashnet at 224 px the head was 1 val image
    better without it, and so flip TTA was off in every run, while in twelve trashnet cases (fine-tuned
    outputs of online runs, offline runs) it gained a median of 0.4 test points, 11 of the 12 at least 0
    (flowers5, one offline run: equal; three 256 px runs: 0.2-0.6 worse; bench/RESULTS.md).

    >>> use_flip_tta(0.9010, 0.8977, 303), use_flip_tta(0.90, 0.80, 303)
    (True, False)
    """
    return tta_accuracy >= single_accuracy - noise_margin(single_accuracy, n_val)


def _flip_tta_on_val(per_view: list[np.ndarray], y_val: np.ndarray) -> tuple[bool, float]:
    """Whether a model's predictions average its val views' probabilities ``per_view`` (original first;
    :func:`use_flip_tta`), and its val accuracy on the views it will use."""
    single = accuracy(per_view[0], y_val)
    if len(per_view) < 2:
        return False, single
    both = accuracy(sum(per_view) / len(per_view), y_val)
    tta = use_flip_tta(single, both, len(y_val))
    return tta, both if tta else single


def _candidate_name(key: tuple[str, int]) -> str:
    """An ensemble candidate (source, view index) as the report names it, e.g. "finetune epoch 4 (mirrored)"."""
    return f"{key[0]} ({VIEWS[key[1]].name})"


def run_online(cfg: OnlineConfig, state: RunState | None = None) -> OnlineResult:
    """Train on ``cfg.train_dir`` and predict every file in ``cfg.test_dir`` within ``cfg.budget_s``.

    With ``cfg.resume``, continue the run interrupted in ``cfg.out`` with the budget it had left.
    ``state`` is this session's, begun by the caller (the command line begins it before
    TensorFlow loads, so the import time is counted even if the run is killed during it).
    """
    if state is None:
        state = RunState(Path(cfg.out) / "state")
        state.begin(cfg.identity(), cfg.resume, command_start())
    budget = Budget(cfg.budget_s - state.spent_s, state.start)
    handlers = {s: signal.signal(s, lambda *_: budget.interrupt()) for s in (signal.SIGTERM, signal.SIGINT)}
    # Garbage collections that never ended stalled 7 runs for 12-36 s, until the watchdog; 3 of the 5 stacks
    # caught were inside Keras' h5py weight saving, where a collection can deadlock on h5py's global lock
    # (h5py#2019). So collections run only at chosen points, between saves (_Run.collect_garbage).
    # bench/RESULTS.md has the runs.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run(cfg, budget, state, state.spent_s)
    finally:
        if gc_was_enabled:
            gc.enable()
        state.close()
        for s, h in handlers.items():
            signal.signal(s, h)


def _run(cfg: OnlineConfig, budget: Budget, state: RunState, spent: float) -> OnlineResult:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Progress(budget, log_file=out / "report" / "log.txt", resumed=spent > 0)
    if spent > 0:
        log(f"resuming: earlier sessions spent {spent:.1f}s of the {cfg.budget_s:.0f}s budget; {budget.remaining():.1f}s left")
    else:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # a new run: an earlier run's checkpoints don't count
    ds = read_dataset(cfg.train_dir, cfg.layout)
    test_files = list_images(cfg.test_dir) if cfg.test_dir else []
    spec = get_backbone(cfg.backbone)
    size = cfg.size or spec.default_size
    log(f"{len(ds.files)} training images in {len(ds.class_ids)} classes ({ds.layout} layout), "
        f"{len(test_files)} test files; backbone {spec.name} at {size}px")
    prior = int(np.bincount(ds.labels, minlength=len(ds.class_ids)).argmax())
    labels = LabelMap(ds.class_ids, ds.class_names, prior, size, spec.name)
    test_root = Path(cfg.test_dir).resolve() if cfg.test_dir else None
    outputs = _Outputs(out / "predictions.csv", [f.relative_to(test_root).as_posix() for f in test_files], labels)
    if spent > 0 and outputs.path.exists():
        outputs.written_by = "an earlier session"
    with Watchdog(budget.deadline - 1.0, outputs.ensure_exists, stacks=out / "report" / "watchdog_stacks.txt"):
        return _Run(cfg, budget, state, spent, log, ds, test_files, size, labels, outputs).run()


class _Run:
    """One session of an online run: its phases share the budget, the outputs and the report."""

    def __init__(self, cfg, budget, state, spent, log, ds: Dataset, test_files, size, labels, outputs):
        self.cfg, self.budget, self.state, self.spent, self.log = cfg, budget, state, spent, log
        self.ds, self.test_files, self.size, self.labels, self.outputs = ds, test_files, size, labels, outputs
        self.out = Path(cfg.out)
        self.spec = get_backbone(cfg.backbone)
        self.refit = cfg.refit and cfg.finetune and self.spec.split is not None  # see _fine_tune
        self.voting = cfg.ensemble and not self.refit  # a vote is chosen on val images, which a refit trained on
        self.second_spec, self.second_reason = (
            second_backbone(self.spec, cfg.second_backbone, cfg.weights) if self.voting and cfg.finetune else
            (None, "no second backbone: no ensemble phase" + (" (a refit run has no vote)" if self.refit else "")))
        self.second: dict | None = None  # the second backbone's head as an ensemble candidate (see _second_member)
        self.full_image_s: float | None = None  # seconds of one image through the whole main backbone (measured)
        self.num_classes = len(ds.class_ids)
        self.cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
        self.reserve = _Reserve(cfg.margin_s if cfg.margin_s is not None else max(5.0, 0.02 * cfg.budget_s))
        self.head_s = float(np.clip(0.05 * cfg.budget_s, 5.0, 30.0))
        self.notes: list[str] = []
        self.phases: list[dict] = []
        self.candidates: dict[str, dict] = {}  # source -> per-view val probabilities and checkpoint of kept models
        self.scores: list[dict] = []  # every model scored in this session: time, phase, epoch, val accuracy
        self.ensemble_model: keras.Model | None = None
        self.ensemble_time = True  # False when the head gave the ensemble phase's time to fine-tuning
        self.single_latency_ms = 0.0  # p95 of the one-view backbone (0: not measured, e.g. resumed)
        self.trace_s = TRACE_S  # tracing one view of a model: the largest of TRACE_S and every measured trace
        self.top_trace_s: dict[int, float] = {}  # a cut's top's inference trace, measured (see _ft_setup_s)
        self.ft_setup_seen = 0.0  # the longest fine-tune round's setup measured
        self.view_sources: dict | None = None  # decoded val and test images, for views extracted later (zoomed)
        self.collected_at = time.time()
        self.pooled: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(activations) -> (them, pooled features)
        self.pool_rate: float | None = None  # the top's measured images per second when pooling
        self.early_head: HeadResult | None = None  # the early output's head: the head, if no other views come after it
        self.save_s = 0.0  # the longest measured save of the scored model's weights: a round's end writes them

    def phase(self, name: str, started: float, planned_s: float | None, **info) -> None:
        self.phases.append({"phase": name, "start_s": round(started - self.budget.start + self.spent, 2),
                            "planned_s": planned_s,
                            "actual_s": round(time.time() - started, 2), **info})

    def expired(self, extra_s: float = 0.0) -> bool:
        return self.budget.expired(self.reserve.s + extra_s)

    def collect_garbage(self, every_s: float = GC_EVERY_S) -> None:
        """Python's cyclic garbage collection (off during the run), at most every ``every_s``; called only
        where no h5py call is under way."""
        if time.time() - self.collected_at >= every_s:
            gc.collect()
            self.collected_at = time.time()

    def run(self) -> OnlineResult:
        cfg, log = self.cfg, self.log
        if self.spent > 0 and self.budget.remaining() <= self.reserve.s:
            self.outputs.ensure_exists()
            log(f"no time left to train: {self.outputs.path} is kept from {self.outputs.written_by or 'the prior class'}")
            return self._result(0.0, False)
        t = time.time()
        cut = cfg.finetune_cut if cfg.finetune else None  # without fine-tuning, deeper activations are no use
        acts = _Activations.load(self.state)
        if acts is not None and acts.size is not None:
            self._set_size(acts.size)  # the size an earlier session extracted at (maybe shrunk)
        self.extractor = build_extractor(self.spec, self.size, cfg.weights, cut)
        if acts is not None and acts.cut != self.extractor.cut:  # the cut an earlier session chose
            self.extractor = split_extractor(self.extractor, self.spec, acts.cut)
        if acts is None:
            acts = self._extract(t)
            if acts is None:  # interrupted before any model could exist
                self.outputs.ensure_exists()
                log(f"interrupted before any model existed: wrote {self.outputs.path} with the most frequent class")
                self.notes.append("interrupted before any model existed")
                return self._result(0.0, False)
            acts.save(self.state)
        else:
            self.phase("setup", t, None)
            log(f"activations loaded from {self.state.folder}")
        self.acts = acts
        self.notes += acts.notes

        head, head_info, head_probs = self._head()
        self.n_views = head_info["n_views"]
        if self.extractor.top is not None:
            a = keras.Input(acts.val[0].shape[1:])
            self.scored = keras.Model(a, head(self.extractor.top(a)), name="top_and_head")
        else:
            self.scored = head
        self.head = head
        self.checkpoints = CheckpointManager(self.out / "checkpoints", k=cfg.keep)
        best = self.state.read("best", load_arrays=False)
        self.best = best["info"] if best else {"val_accuracy": -1.0, "source": None}  # the early output is provisional
        self.last = dict(self.best)  # the last model scored
        if best is None:
            standing = head_info.get("early_head") and self.outputs.written_by == EARLY_SOURCE
            if standing:  # its output is the head's: scored for its checkpoint, not predicted again
                self.best = {"val_accuracy": head_info["val_accuracy"], "source": EARLY_SOURCE}
                self.state.write("best", self.best)
            self.score("head", head_info["chosen_epoch"], head_info["epochs_run"], head_probs)
            log(f"{self.outputs.path} stands: the head is the early head" if standing else
                f"wrote {self.outputs.path} (from the head, val accuracy {self.best['val_accuracy']:.4f})")
        self._sync_with_checkpoints()
        exported = self.spent > 0 and (self.out / "model" / MODEL_FILE).exists()
        if not exported and not self.budget.expired(self.reserve.s + EXPORT_GUESS_S):
            t = time.time()
            self._export()
            self.reserve.export_s = time.time() - t
            self.phase("export", t, None)
            log(f"exported {self.out / 'model'} in {self.reserve.export_s:.1f}s; end reserve {self.reserve.s:.1f}s")

        self.top_rate = head_info["top_rate"]
        self._second_member()
        ft_info = self._fine_tune(head_info) if cfg.finetune else {}
        ensemble_info = self._ensemble() if self.voting else {}
        return self._finalise(head_info, ft_info, ensemble_info)

    # 1. extract: the frozen bottom, once per image and view, in priority order
    def _extract(self, t: float) -> _Activations | None:
        cfg, budget, log, ds = self.cfg, self.budget, self.log, self.ds

        def decode():  # the training and the test images at the size of the moment
            return (build_cache(ds.files, self.size, self.cache_dir, cfg.workers),
                    build_cache(self.test_files, self.size, self.cache_dir, cfg.workers))

        d0 = time.time()
        train_cache, test_cache = decode()
        decode_s = time.time() - d0
        self.phase("setup", t, None)
        log(f"images decoded (cache: {self.cache_dir})")
        quarantine = [{"file": str(f), "reason": e} for f, e in zip(ds.files, train_cache.errors) if e]
        good = np.array([i for i, e in enumerate(train_cache.errors) if e is None], dtype=np.int64)
        if quarantine:
            log(f"quarantined {len(quarantine)} unreadable training files (see report/quarantine.json)")
        missing = sorted(set(range(self.num_classes)) - set(ds.labels[good].tolist()))
        if missing:
            names = ", ".join(ds.class_names[k] for k in missing)
            raise UsageError(f"{cfg.train_dir}: no readable training image left for class(es) {names}; "
                             "see the quarantined files listed above and replace them")
        tr_pos, va_pos = stratified_split(ds.labels[good], cfg.val_fraction, cfg.seed)
        train_idx = np.random.default_rng(cfg.seed).permutation(good[tr_pos])
        val_idx = good[va_pos]
        test_idx = np.arange(len(self.test_files))
        test_ok = np.array([e is None for e in test_cache.errors], bool)
        notes: list[str] = []
        t = time.time()
        if self._shrink_size(train_cache, val_idx, len(good) + len(test_idx), decode_s, notes):
            train_cache, test_cache = decode()
        extractor, final_s, head_s = self.extractor, self.reserve.s, self.head_s

        def acts(cache, idx, reserve, flip=False):
            f = self._features(extractor.bottom, cache, idx, lambda: budget.expired(reserve), "extract", flip=flip,
                               dtype=np.float16 if extractor.top is not None else np.float32)
            return f.values, f.done

        v0 = time.time()  # the bottom's speed, timed on the first val images (the rest follow at the chosen cut)
        val, n_val = acts(train_cache, val_idx[:RATE_PROBE_IMAGES], final_s)
        rate = n_val / max(time.time() - v0, 1e-3)
        bottom_share = 1 - self.spec.cuts.share(extractor.cut) if extractor.top is not None else 1.0
        self.full_image_s = 1 / (rate * bottom_share) if bottom_share > 0 and rate > 0 else None  # image cut: none
        ft_image_s = 0.0  # estimated seconds of a fine-tune step per image (no fine-tuning: unused)
        train_mirror = True  # the training images' mirrored view is extracted (see _choose_cut)
        if extractor.top is not None and cfg.finetune and n_val == min(len(val_idx), RATE_PROBE_IMAGES):
            if cfg.finetune_cut is None:
                # seconds of one image through the whole backbone, and of a fine-tune step per image at the default cut
                cuts = self.spec.cuts
                ft_image_s = FT_COST_RATIO * (1 - cuts.share(cuts.default)) * self.full_image_s
                plan, train_mirror = self._choose_cut(self.full_image_s, len(val_idx), len(test_idx), len(train_idx),
                                                      notes)
                if plan.cut != extractor.cut:
                    self.extractor = extractor = split_extractor(extractor, self.spec, plan.cut)
                    n_val = 0  # the probe's activations are the old cut's
                    ft_image_s *= plan.cost_ratio
            else:  # a cut given: its top timed (the bottom's speed says little when it is a few layers)
                ft_image_s = TRAIN_PER_INFER * self._top_inference_s(extractor.cut)
        v0 = time.time()
        rest, n_rest = acts(train_cache, val_idx[n_val:], final_s)
        val, n_val = (np.concatenate([val[:n_val], rest]) if n_val else rest), n_val + n_rest
        test, n_test = acts(test_cache, test_idx, final_s)
        train, n_train = acts(train_cache, train_idx, head_s + final_s)
        if n_done := n_rest + n_test + n_train:  # the bottom's speed at the cut chosen, on every image it took
            rate = n_done / max(time.time() - v0, 1e-3)
        log(f"activations: {n_val}/{len(val_idx)} val, {n_test}/{len(test_idx)} test, {n_train}/{len(train_idx)} train "
            f"({rate:.1f} img/s)")
        if budget.interrupted and (n_val < len(val_idx) or n_train == 0):
            return None
        if n_val < len(val_idx) or n_train == 0:
            raise UsageError(f"the budget of {cfg.budget_s:.0f}s is too short to extract features for "
                             f"{self.spec.name} at {self.size}px; give a larger --budget, or a smaller --size or "
                             f"--min-size (now {self.cfg.min_size})")
        if n_train < len(train_idx):
            notes.append(f"the budget allowed features of {n_train} of {len(train_idx)} training images")
        flip_cost = (len(test_idx) + len(val_idx) + n_train * train_mirror) / rate
        ft_epoch = n_train * ft_image_s
        left_after_flips = budget.remaining() - final_s - head_s * train_mirror - flip_cost - EARLY_OUTPUT_S
        want_flips = extractor.top is None or not cfg.finetune or left_after_flips > MIN_FT_EPOCHS * ft_epoch
        train = train[:n_train]
        views_val, views_test, views_train = [val], [test], [train]
        if want_flips and n_test == len(test_idx):
            self._early_output(val, test, train, ds.labels[val_idx], ds.labels[train_idx[:n_train]], test_ok,
                               head_s + final_s)
            test_f, n_tf = acts(test_cache, test_idx, head_s + final_s, flip=True)
            val_f, n_vf = acts(train_cache, val_idx, head_s + final_s, flip=True)
            if n_tf == len(test_idx) and n_vf == len(val_idx):
                views_val, views_test = [val, val_f], [test, test_f]
                self._early_flip(views_val, views_test, ds.labels[val_idx], test_ok)
            trained = "train skipped"
            if train_mirror:
                train_f, n_trf = acts(train_cache, train_idx[:n_train], head_s + final_s, flip=True)
                if n_trf == n_train:
                    views_train = [train, train_f]
                trained = f"{n_trf}/{n_train} train"
            log(f"mirrored views: {n_tf}/{len(test_idx)} test, {n_vf}/{len(val_idx)} val, {trained}")
        else:
            notes.append("mirrored views skipped: the time is worth more to fine-tuning")
        self.phase("extract", t, None, images_per_s=round(rate, 2), views=len(views_train), cut=extractor.cut,
                   size=self.size)
        if n_test < len(test_idx):
            notes.append(f"{len(test_idx) - n_test} test files got the prior class: no time left to extract them")
        unreadable = [{"file": str(f), "reason": e} for f, e in zip(self.test_files, test_cache.errors) if e]
        self.view_sources = {"val": (train_cache, val_idx), "test": (test_cache, test_idx[:n_test]),
                             "train": (train_cache, train_idx[:n_train])}
        return _Activations(views_val, views_test, views_train, ds.labels[val_idx], ds.labels[train_idx[:n_train]],
                            test_ok & (test_idx < n_test), rate, ft_image_s, extractor.cut, self.size, quarantine,
                            unreadable, notes)

    def _shrink_size(self, cache, val_idx: np.ndarray, n_images: int, decode_s: float, notes: list[str]) -> bool:
        """Shrink the input size (down to ``cfg.min_size``) if extracting every image's original view at this
        one, then the head, would not fit the budget, by the bottom's speed timed on a val batch (see
        :mod:`timebox.train.image_size`; decoding again is taken to cost what ``decode_s`` did); the
        extractor is rebuilt at the new size. True if it shrank."""
        image_s = self._bottom_image_s(cache, val_idx)
        need_s = n_images * image_s
        time_s = self.budget.remaining() - self.reserve.s - self.head_s
        size = affordable_size(self.size, need_s, time_s, self.cfg.min_size, setup_s=decode_s + RESIZE_SETUP_S)
        if size == self.size:
            return False
        notes.append(f"input size {self.size}px -> {size}px: the {n_images} images' features at {self.size}px "
                     f"would take {need_s:.1f}s of the {max(time_s, 0):.1f}s left for them (--min-size "
                     f"{self.cfg.min_size})")
        self.log(notes[-1])
        self._set_size(size)
        self.extractor = build_extractor(self.spec, size, self.cfg.weights, self.extractor.cut)
        return True

    def _bottom_image_s(self, cache, idx: np.ndarray) -> float:
        """Seconds per image through the bottom, timed on a batch of real images after its trace (which the
        extraction then reuses: same model, same batch shape)."""
        n = image_batch_size()
        batch = np.zeros((n, self.size, self.size, 3), np.uint8)
        some = np.sort(idx[:n])
        batch[: len(some)] = cache.images[some]
        self.extractor.bottom.predict_on_batch(batch)
        t = time.perf_counter()
        self.extractor.bottom.predict_on_batch(batch)
        return (time.perf_counter() - t) / n

    def _set_size(self, size: int) -> None:
        self.size = size
        self.labels = self.outputs.labels = replace(self.labels, input_size=size)

    def _features(self, model: keras.Model, cache, idx: np.ndarray, should_stop, label: str, flip: bool = False,
                  dtype=np.float32, marks: list[tuple[float, int]] | None = None) -> Features:
        """``model`` on ``cache.images[idx]`` (see :func:`extract_features`), with a status line (``label``) and
        garbage collection between batches; ``marks`` gets (time, images done) after each batch."""
        def on_batch(done: int) -> None:
            self.log.status(label, done, len(idx))
            if marks is not None:
                marks.append((time.time(), done))
            self.collect_garbage()

        return extract_features(model, cache.images, idx, should_stop=should_stop, on_batch=on_batch, flip=flip,
                                dtype=dtype)

    def _early_output(self, val: np.ndarray, test: np.ndarray, train: np.ndarray, y_val: np.ndarray,
                      y_train: np.ndarray, usable: np.ndarray, keep_s: float) -> None:
        """The first predictions, from a head fitted by :func:`fit_linear_head` on the original view's pooled features
        of the training images, on the test images' original view: written as soon as every image's original
        view is extracted, before any mirrored view (:meth:`_early_flip` then averages the val and test images'
        mirrored views in). Provisional: the real head's predictions replace them, and it reuses the pooled
        features (without the training images' mirrored view, this head is the real one: see :meth:`_head`).
        Skipped if it would leave less than ``keep_s``; a SIGTERM does not skip or shorten it: no output exists
        yet, and this is the quickest good one. ``EARLY_OUTPUT_S`` leaves the pooling out (at deep cuts it takes
        longest; the cut's plan counts it: see :meth:`_choose_cut`)."""
        if self.extractor.top is None or self.budget.remaining() <= keep_s + EARLY_OUTPUT_S:
            return
        t = time.time()
        (pooled_val, pooled_train, pooled_test), _ = self._pool([val, train, test])  # kept: the real head reuses them
        head = fit_linear_head(pooled_train, y_train, pooled_val, y_val, self.num_classes,
                               expired=lambda: self.budget.remaining() <= keep_s, seed=self.cfg.seed)
        val_accuracy = accuracy(_predict(head.model, [pooled_val]), y_val)
        self.outputs.write(_predict(head.model, [pooled_test]), usable, EARLY_SOURCE)
        self.early_head = head
        self.phase("early output", t, EARLY_OUTPUT_S, val_accuracy=round(val_accuracy, 4))
        self.log(f"wrote {self.outputs.path} (from the early head, val accuracy {val_accuracy:.4f}, original view)")

    def _early_flip(self, val: list[np.ndarray], test: list[np.ndarray], y_val: np.ndarray,
                    usable: np.ndarray) -> None:
        """The early head's predictions again, the test images' two views (``test``: original and mirrored)
        averaged, if val's two views (``val``) say that is not clearly worse (:func:`use_flip_tta`). On trashnet
        that lifted the early head from 88.1 to 89.1% on test (median of 5 seeds; bench/RESULTS.md). Nothing
        is written if the early output was not, or if it was replaced."""
        if self.early_head is None or self.outputs.written_by != EARLY_SOURCE:
            return
        t = time.time()
        model = self.early_head.model
        pooled_val, _ = self._pool(val)
        tta, val_accuracy = _flip_tta_on_val([_predict(model, [p]) for p in pooled_val], y_val)
        if tta:
            pooled_test, _ = self._pool(test)  # kept: the real head predicts them too
            self.outputs.write(_predict(model, pooled_test), usable, EARLY_SOURCE)
            self.log(f"wrote {self.outputs.path} (from the early head, val accuracy {val_accuracy:.4f}, flip TTA on)")
        self.phase("early flip TTA", t, None, val_accuracy=round(val_accuracy, 4), tta=bool(tta))

    def _pool(self, views: list[np.ndarray]) -> tuple[list[np.ndarray], float | None]:
        """Each view's activations through the top (pooled features; those pooled before are reused), and the
        top's measured images per second (of the views pooled now, else of the last pooling)."""
        todo = [v for v in views if id(v) not in self.pooled]
        t = time.time()
        for v in todo:
            self.pooled[id(v)] = (v, _predict(self.extractor.top, [v]))  # the array kept: its id stays unique
        if n := sum(len(v) for v in todo):  # no test files: an empty view says nothing of the speed
            self.pool_rate = n / max(time.time() - t, 1e-3)
        return [self.pooled[id(v)][1] for v in views], self.pool_rate

    def _choose_cut(self, full_image_s: float, n_val: int, n_test: int, n_train: int, notes: list[str]
                    ) -> tuple[CutPlan, bool]:
        """The cut fine-tuning starts from, among ``Cuts.automatic()`` (see :mod:`timebox.train.depth`). The time
        it will get is what is left after extracting and pooling every image's two views (at the whole backbone's
        speed, and once more through the cut's measured top: with it the estimate ran from 18% above to 26% below
        the epochs that ran in eleven trashnet runs of 2 to 8 minutes), the head, the first export, the
        fine-tune's setup, the output's test predictions and the end reserve (as the head's plan counts them),
        less the ensemble phase's largest share (if there is one). Only if a deeper cut fits by an
        optimistic estimate (a quarter of its share of the backbone's multiply-adds times ``full_image_s``; on
        trashnet at 224 px the default top's inference took about 0.4 of that share) are the tops timed (a trace
        and two batches each): the default's, then deeper and deeper ones up to that estimate's, until one does
        not fit. If the chosen cut gets fewer than ``TRAIN_MIRROR_MIN_EPOCHS`` epochs, the cut is chosen again
        without the training images' mirrored view, and with the early output's head as the head (fitted on
        the same view; see :meth:`_head`): their time goes to fine-tuning. Returns the plan and whether the
        training images' mirrored view is extracted."""
        cuts = self.spec.cuts
        free = min(psutil.virtual_memory().available, psutil.disk_usage(self.out).free)  # OUT/state keeps a copy

        def plan(top_s: dict[int, float], mirror: bool) -> CutPlan:  # the time left is read anew: timing takes some
            images = 2 * (n_val + n_test) + (1 + mirror) * n_train
            before_s = (images * full_image_s + EARLY_OUTPUT_S + self.head_s * mirror + self.reserve.s
                        + self._second_plan_s(n_val + n_test + n_train) + EXPORT_GUESS_S + FT_SETUP_S)
            time_s = (self.budget.remaining() - before_s) * (1 - ENSEMBLE_MAX_SHARE * self.voting)
            costs = [CutCost(c, s, 2 * int(np.prod(cuts.shape(self.size, c)))) for c, s in top_s.items()]
            return choose_cut(costs, time_s, n_train, 2 * n_val + n_test, images, free, DEEP_MIN_EPOCHS,
                              image_cut=cuts.image, image_min_epochs=IMAGE_MIN_EPOCHS, n_once=images + 2 * n_test)

        auto = cuts.automatic()
        measured: dict[int, float] = {}

        def deepest(mirror: bool) -> CutPlan:
            chosen = plan({c: 0.25 * full_image_s * cuts.share(c) for c in auto}, mirror)
            if chosen.cut != cuts.default:
                measured.setdefault(cuts.default, self._top_inference_s(cuts.default))
                for cut in auto[1 : auto.index(chosen.cut) + 1]:
                    measured.setdefault(cut, self._top_inference_s(cut))
                    if plan(measured, mirror).cut != cut:
                        break
                chosen = plan(measured, mirror)
            return chosen

        chosen = deepest(mirror=True)
        mirror = chosen.epochs[chosen.cut] >= TRAIN_MIRROR_MIN_EPOCHS
        if not mirror:
            without = deepest(mirror=False)
            notes.append(f"the training images' mirrored view skipped: with it fine-tuning would get ~"
                         f"{chosen.epochs[chosen.cut]:.1f} epochs from block {chosen.cut}, fewer than "
                         f"{TRAIN_MIRROR_MIN_EPOCHS}; its time and the head's go to fine-tuning")
            self.log(notes[-1])
            chosen = without
        estimates = ", ".join(f"{c}: {e:.1f}" for c, e in chosen.epochs.items())
        notes.append(f"{chosen.reason} (estimated epochs by cut: {estimates})")
        self.log(notes[-1])
        return chosen, mirror

    def _top_inference_s(self, cut: int) -> float:
        """Measured seconds per image of the backbone's part from block ``cut`` on (inference; the faster of two
        batches, after its trace; the trace's seconds are kept in ``top_trace_s``)."""
        top = split_extractor(self.extractor, self.spec, cut).top
        batch = np.zeros((ACTIVATION_BATCH, *self.spec.cuts.shape(self.size, cut)), np.float32)
        t = time.perf_counter()
        top.predict_on_batch(batch)
        self.top_trace_s[cut] = time.perf_counter() - t
        times = []
        for _ in range(2):
            t = time.perf_counter()
            top.predict_on_batch(batch)
            times.append(time.perf_counter() - t)
        return min(times) / len(batch)

    # 2. head on pooled features (or restored from the state of an earlier session)
    def _head(self) -> tuple[keras.Model, dict, tuple[list[np.ndarray], np.ndarray | None] | None]:
        """The head on pooled features (fitted, the early head's, or a prior session's), its record, and its
        probabilities (val per view, and test on the views it uses if their pooled features were kept; none
        for a prior session's head): scoring it needs no pass through the top."""
        acts, top = self.acts, self.extractor.top
        record = self.state.read("head", load_arrays=False)
        if record is not None:
            info = record["info"]
            head = keras.models.model_from_json(info["architecture"])
            head.load_weights(record["weights"])
            return head, info, None
        t = time.time()
        # the early head is the head when interrupted (no time to fit a better one), or when no training view came
        # after it (see _choose_cut: fine-tuning gets the head's time)
        early = self.early_head is not None and (self.budget.interrupted or len(acts.train) == 1)
        if top is not None:  # the early head's views are pooled already (the top can be the backbone)
            pooled_val, top_rate = self._pool(acts.val)
            pooled_train, _ = self._pool(acts.train[:1] if early else acts.train)
        else:
            pooled_val, pooled_train, top_rate = acts.val, acts.train, None
        if (self.voting or self.cfg.latency_ms is not None) and top_rate and not self.budget.interrupted:
            self.single_latency_ms = self._latency(self.extractor.full, 1)  # the ensemble's plan; the report
        head_time = 0.0 if early else min(self.head_s, self.budget.remaining() - self.reserve.s)  # early: fitted already
        outputs_s = EXPORT_GUESS_S + (sum(len(v) for v in acts.test) / top_rate if top_rate else 0.0)
        self.top_rate = top_rate
        second_s = self._second_plan_s(len(acts.y_val) + len(acts.test[0]) + len(acts.y_train))
        after_head_s = self.budget.remaining() - self.reserve.s - head_time - outputs_s - second_s
        ensemble_s = self._ensemble_s()
        if ensemble_s > ENSEMBLE_MAX_SHARE * after_head_s and self._fine_tune_fits(after_head_s - ensemble_s):
            self.ensemble_time = False  # a vote over few, close checkpoints: worth less than more fine-tuning
            self.notes.append(f"the ensemble phase ({ensemble_s:.0f}s) would take over {ENSEMBLE_MAX_SHARE:.0%} of the "
                              f"{after_head_s:.0f}s after the head: fine-tuning gets it")
        elif not self._fine_tune_fits(after_head_s - ensemble_s):
            if self._fine_tune_fits(after_head_s):  # the ensemble needs fine-tuned checkpoints: they come first
                self.ensemble_time = False
                self.notes.append("no time for both fine-tuning and the ensemble phase: fine-tuning gets it")
            else:
                head_time = max(head_time, self.budget.remaining() - self.reserve.s - outputs_s)
                early = early and self.budget.interrupted  # the time is the head's: it is fitted again
                self.notes.append(f"fine-tuning cannot fit a useful epoch after the head: the head gets "
                                  f"{head_time:.0f}s")
        head_end = time.time() + head_time
        if early:
            head = self.early_head
        else:
            head = fit_head(np.concatenate(pooled_train), np.tile(acts.y_train, len(pooled_train)), pooled_val[0],
                            acts.y_val, self.num_classes, time_s=head_time,
                            expired=lambda: self.expired() or time.time() > head_end, seed=self.cfg.seed)
        val_probs = [_predict(head.model, [p]) for p in pooled_val]
        tta, val_accuracy = _flip_tta_on_val(val_probs, acts.y_val)
        n_views = len(pooled_val) if tta else 1
        pooled_test = [self.pooled.get(id(v)) for v in acts.test[:n_views]]  # from the early output, if any
        test_probs = _predict(head.model, [p for _, p in pooled_test]) if None not in pooled_test else None
        self.pooled.clear()
        info = {"architecture": head.model.to_json(), "tta": bool(tta), "n_views": n_views,
                "top_rate": top_rate, "chosen_epoch": head.chosen_epoch, "epochs_run": head.epochs_run,
                "history": head.history, "early_head": bool(early), "val_accuracy": float(val_accuracy)}
        self.phase("head", t, self.head_s, epochs=head.epochs_run, chosen_epoch=head.chosen_epoch, early_head=early)
        self.log(f"head{' (the early head)' if early else ''}: val accuracy {val_accuracy:.4f} "
                 f"(epoch {head.chosen_epoch}/{head.epochs_run}), flip TTA {'on' if tta else 'off'}")
        self.state.write("head", info, weights=head.model)
        return head.model, info, (val_probs, test_probs)

    # 2b. a second backbone: a head on its frozen features, an ensemble candidate unlike the fine-tune's checkpoints
    def _second_plan_s(self, n_images: int) -> float:
        """Seconds planned for the second backbone's head on ``n_images``: its setup, the images at
        ``SECOND_COST_RATIO`` times the main backbone's measured time per image, and a head; 0 if that is over
        ``SECOND_SHARE`` of the budget, or there is no second backbone or no ensemble phase to use it."""
        if self.second_spec is None or not (self.voting and self.cfg.finetune) or self.full_image_s is None:
            return 0.0
        plan_s = SECOND_SETUP_S + SECOND_COST_RATIO * n_images * self.full_image_s + self.head_s
        return plan_s if plan_s <= SECOND_SHARE * self.cfg.budget_s else 0.0

    def _second_member(self) -> None:
        """A head on the second backbone's pooled features (original view) of the val, test and training images:
        an ensemble candidate from another backbone, used only if the guard of the ensemble phase picks it. On
        trashnet, a 52-second Lite1 head averaged with a 4-minute Lite0 fine-tune beat an 8-minute Lite0 fine-tune
        on test by 1.4 points (one pair of runs; in two 8-minute runs with it the guard did not pick it:
        bench/RESULTS.md). The val images go first: they measure the speed, and the rest runs only if it fits
        ``SECOND_SHARE`` of the budget and fine-tuning still fits after it. The candidate lives in this session
        only (a resumed run does without it)."""
        acts, spec = self.acts, self.second_spec
        n = {"val": len(acts.y_val), "test": len(acts.test[0]), "train": len(acts.y_train)}
        share_s = SECOND_SHARE * self.cfg.budget_s
        if spec is None:
            self.notes.append(self.second_reason)
            return
        if self.view_sources is None or self.budget.interrupted:
            self.notes.append(f"{spec.name} head skipped: interrupted, or a resumed session (it lives in one session)")
            return
        plan_s, ensemble_s = self._second_plan_s(sum(n.values())), self._ensemble_s()
        left_s = self.budget.remaining() - self.reserve.s - ensemble_s - plan_s
        why = ("no ensemble phase" if not self._votes() else
               f"its estimate is over its {share_s:.0f}s ({SECOND_SHARE:.0%} of the budget)" if plan_s == 0.0 else
               f"fine-tuning would not fit after its {plan_s:.0f}s" if not self._fine_tune_fits(left_s) else None)
        if why:
            self.notes.append(f"{spec.name} head skipped: {why}")
            return
        t = time.time()
        full = build_feature_extractor(spec, self.size, self.cfg.weights)

        marks: list[tuple[float, int]] = []  # (time, images done) after each batch of the val images

        def features(part: str) -> np.ndarray | None:
            cache, idx = self.view_sources[part]
            f = self._features(full, cache, idx, lambda: self.expired() or time.time() - t > share_s,  # its share
                               spec.name, marks=marks if part == "val" else None)
            return f.values if f.done == len(idx) else None

        v0 = time.time()
        feats = {"val": features("val")}
        if len(marks) > 2:  # the first batch traces the model: timed without it
            image_s = (marks[-1][0] - marks[0][0]) / (marks[-1][1] - marks[0][1])
        else:
            image_s = (time.time() - v0) / max(n["val"], 1)
        planned_s = time.time() - t + (n["test"] + n["train"]) * image_s + self.head_s
        after_s = self.budget.remaining() - self.reserve.s - ensemble_s - (planned_s - (time.time() - t))
        if feats["val"] is None or planned_s > share_s or not self._fine_tune_fits(after_s):
            self.notes.append(f"{spec.name} head skipped: measured at {1 / image_s:.0f} img/s it would take "
                              f"{planned_s:.0f}s, over its {share_s:.0f}s or fine-tuning's time")
            self.phase("second backbone", t, share_s, backbone=spec.name, used=False)
            return
        for part in ("test", "train"):
            feats[part] = features(part)
            if feats[part] is None:
                self.notes.append(f"{spec.name} head skipped: its share or the budget ran out while extracting "
                                  "its features")
                self.phase("second backbone", t, share_s, backbone=spec.name, used=False)
                return
        head_end = time.time() + self.head_s
        head = fit_head(feats["train"], acts.y_train, feats["val"], acts.y_val, self.num_classes, time_s=self.head_s,
                        expired=lambda: self.expired() or time.time() > head_end, seed=self.cfg.seed)
        source = f"{spec.name} head"
        self.second = {"source": source, "bottom": full, "member": member_copy(head.model, "second_member"),
                       "val": _predict(head.model, [feats["val"]]),
                       "test": (_predict(head.model, [feats["test"]]) if n["test"]
                                else np.zeros((0, self.num_classes), np.float32)),
                       "image_s": image_s}
        val_acc = accuracy(self.second["val"], acts.y_val)
        self.phase("second backbone", t, planned_s, backbone=spec.name, used=True, images_per_s=round(1 / image_s, 2),
                   val_accuracy=round(val_acc, 4))
        self.log(f"{source}: val accuracy {val_acc:.4f} ({1 / image_s:.0f} img/s), an ensemble candidate")

    def _fine_tune_fits(self, time_s: float) -> bool:
        """Whether ``time_s`` seconds hold the fine-tune's setup and a quarter of an epoch (the shortest it runs)."""
        if self.extractor.top is None or not self.cfg.finetune:
            return False
        epoch_s = len(self.acts.y_train) * self.acts.ft_image_s
        return time_s >= self._ft_setup_s() + 0.25 * epoch_s

    def _ft_setup_s(self) -> float:
        """Planned seconds of a fine-tune round's setup (to the end of its first step): the longest of
        ``FT_SETUP_S``, ``TRAIN_TRACE_RATIO`` times the cut's top's measured inference trace, and the rounds'
        measured setups. At the image cut the whole backbone's step is traced: 7-8 s at 64 px here, and over
        three times that late in a full test suite, when two rounds planned with 5 s each overran."""
        return max(FT_SETUP_S, TRAIN_TRACE_RATIO * self.top_trace_s.get(self.extractor.cut, 0.0), self.ft_setup_seen)

    def score(self, phase: str, epoch: int, step: int,
              known: tuple[list[np.ndarray], np.ndarray | None] | None = None) -> None:
        """Checkpoint the scored model if it is in the top k; new predictions if it is the best yet. ``known``:
        its val probabilities per view and its test ones (or None), when known (see :meth:`_head`)."""
        self.collect_garbage()
        acts = self.acts
        per_view = known[0] if known else [_predict(self.scored, [view]) for view in acts.val]  # every view: candidates
        probs = sum(per_view[: self.n_views]) / self.n_views
        acc, loss = accuracy(probs, acts.y_val), log_loss(probs, acts.y_val)
        t = time.time()
        path = self.checkpoints.consider(lambda p: self.scored.save_weights(str(p)), model=self.spec.name,
                                         phase=phase, epoch=epoch, step=step, val_accuracy=acc, val_loss=loss)
        if path is not None:
            self.save_s = max(self.save_s, time.time() - t)
        self.last = {"val_accuracy": float(acc), "source": f"{phase} epoch {epoch}"}
        self.scores.append({"time": time.time(), "phase": phase, "epoch": epoch, "val_accuracy": float(acc)})
        self.candidates[self.last["source"]] = {"val": per_view, "path": path, "val_accuracy": float(acc),
                                                "weights": None if path else self.scored.get_weights()}
        kept = {e["file"] for e in self.checkpoints.entries}
        self.candidates = {k: c for k, c in self.candidates.items()
                           if k == self.last["source"] or (c["path"] is not None and c["path"].name in kept)}
        if acc > self.best["val_accuracy"] and (self.best["source"] is None or not self.expired()):
            self._write_predictions(acc, self.last["source"], test_probs=known[1] if known else None)

    def _prefer_annealed_end(self) -> None:
        """Make the last epoch of a finished fine-tune schedule the output unless it is clearly worse
        on val (more than 2 standard errors below the output's val accuracy).

        Val accuracy on a few hundred images is noisy, and the output so far is the maximum of
        many noisy scores (the head's best of a hundred epochs, an early fine-tune epoch): it is
        biased upwards. The annealed end of the schedule is the model the plan aimed at, and on
        trashnet and flowers5 it scores better on test than the val-selected ones
        (bench/RESULTS.md, "Choosing the output").
        """
        best, last = self.best["val_accuracy"], self.last["val_accuracy"]
        if self.best.get("final") or self.best["source"] == self.last["source"] or self.budget.interrupted:
            return
        tolerance = noise_margin(best, len(self.acts.y_val))
        if last < best - tolerance:
            return
        if not self._end_test_fits(f"the fine-tune's last epoch (val accuracy {last:.4f})"):
            return
        self._write_predictions(last, f"{self.last['source']} (end of the schedule)", final=True)
        self.notes.append(f"the output is the fine-tune's last epoch (val accuracy {last:.4f}): within 2 standard "
                          f"errors ({tolerance:.4f}) of the best earlier val accuracy {best:.4f}")
        self.log(f"wrote {self.outputs.path} from the end of the fine-tune schedule (val accuracy {last:.4f}; "
                 f"best earlier {best:.4f}, within 2 standard errors)")

    def _end_test_s(self) -> float:
        """Seconds to predict the test views with the scored model: making the annealed end the output."""
        return self.n_views * len(self.acts.test[0]) / self.top_rate

    def _end_test_fits(self, candidate: str) -> bool:
        """Whether the scored model's test predictions fit before the end reserve; if not, the notes say that
        ``candidate`` (the scored model) is not the output."""
        test_s = self._end_test_s()
        if self.expired(test_s):
            self.notes.append(f"{candidate} is not the output: its test predictions ({test_s:.0f}s) would not fit "
                              "before the end reserve")
            return False
        return True

    def _fine_tune_time(self) -> float:
        """Seconds fine-tuning may take: all but the end reserve, the ensemble phase, the annealed end's test
        predictions and a slack (without the last two, an early val-best epoch stayed the output of 2-minute
        runs: the last epoch's predictions did not fit)."""
        return self.budget.remaining() - self.reserve.s - self._ensemble_s() - self._end_test_s() - FT_SLACK_S

    def _write_predictions(self, val_accuracy: float, source: str, final: bool = False, refit: bool = False,
                           test_probs: np.ndarray | None = None) -> None:
        """The scored model's test predictions (``test_probs`` if known) become the output; ``refit``: it trained
        on the val images, and ``val_accuracy`` is that of the output it replaces."""
        probs = np.zeros((len(self.test_files), self.num_classes), np.float32)
        n_test = len(self.acts.test[0])
        if n_test:
            probs[:n_test] = (test_probs if test_probs is not None else
                              _predict(self.scored, [v[:n_test] for v in self.acts.test[: self.n_views]]))
        self.outputs.write(probs, self.acts.usable, source)
        self.best = {"val_accuracy": float(val_accuracy), "source": source, "final": final}
        if refit:
            self.best["refit"] = True
        self.state.write("best", self.best)

    def _sync_with_checkpoints(self) -> None:
        """After a kill between a checkpoint and its predictions: predict with the best checkpoint."""
        top = self.checkpoints.best()
        if top is not None and top["val_accuracy"] > self.best["val_accuracy"] and not self.best.get("final"):
            current = self.scored.get_weights()
            self.scored.load_weights(top["path"])
            self._write_predictions(top["val_accuracy"], f"{top['phase']} epoch {top['epoch']}")
            self.scored.set_weights(current)

    def _output_model(self) -> keras.Model:
        """What OUT/model holds: the ensemble if it is the output, else the scored model on its test-time views."""
        if self.ensemble_model is not None:
            return self.ensemble_model
        if self.n_views == 1:
            return compose_classifier(self.extractor.full, self.head)
        return compose_ensemble(self.extractor.bottom, [member_copy(self.scored, "member_0")] * 2, VIEWS[:2],
                                [0.5, 0.5])

    def _export(self) -> None:
        """OUT/model/ (the uint8-image classifier and its labels, each file replaced atomically), and
        the judge's own export of it (replaced atomically as a whole)."""
        model_dir = self.out / "model"
        model_dir.mkdir(exist_ok=True)
        tmp = model_dir / f".tmp-{os.getpid()}-{MODEL_FILE}"
        self._output_model().save(tmp)
        os.replace(tmp, model_dir / MODEL_FILE)
        self.labels.save(model_dir / LABELS_FILE)
        dest = self.cfg.judge_dir or judge_dir(self.cfg.judge, self.out)
        written = export_for_judge(self.cfg.judge, model_dir, dest, self.best["val_accuracy"])
        if written is not None:
            self.log(f"{self.cfg.judge} export: {written}")

    # 3. fine-tune the top blocks and the head on the cached activations, in one or two rounds
    def _fine_tune(self, head_info: dict) -> dict:
        """Fine-tuning in ``rounds`` (see :meth:`_rounds`): each from the head on the pretrained top, with its own
        shuffling and a schedule sized to its share of the time. With two, their annealed ends' weights are
        averaged, and that is the end of fine-tuning the output rule weighs (``_prefer_annealed_end``).

        With ``refit`` (the default) the last round trains on the training and val images together, with the
        schedule the earlier phases were scored with, and its end (or the average) becomes the output unless
        :meth:`_refit_output`'s check fails. On trashnet, at equal steps from block 8, that scored 0.8-1.8 test
        points above training on the training images alone in each of three seeds (bench/RESULTS.md)."""
        if self.extractor.top is None:
            self.notes.append(f"fine-tuning skipped: {self.spec.name} has no split point (only EfficientNet-Lite has one)")
            return {}
        acts, top_rate = self.acts, head_info["top_rate"]
        refit = self.refit and len(acts.y_val) > 0
        scored_images = sum(len(v) for v in acts.val) + 0.5 * sum(len(v) for v in acts.test[: self.n_views])
        eval_s = scored_images / top_rate  # every val view is scored (ensemble candidates); test when it is the best
        first = self.state.read("finetune", load_arrays=False)
        rounds = first["info"].get("rounds", 1) if first else self._rounds(self._fine_tune_time() - eval_s, eval_s)
        start = self.scored.get_weights()  # where every round starts
        results, ends = [], []
        for r in range(rounds):
            if r:
                self.scored.set_weights(start)
            # the end is scored (the average; a refit's check on the val images) after the last round; each round
            # ends by saving its weights (the recovery state), and so does the average
            saves = rounds - r + (rounds > 1)
            share = (self._fine_tune_time() - (eval_s if rounds > 1 or refit else 0.0) - saves * self.save_s
                     ) / (rounds - r)
            outcome = self._fine_tune_round(r, rounds, share, eval_s, refit=refit and r == rounds - 1)
            if outcome is None:
                break
            result, end = outcome
            results.append(result)
            if end is None:  # stopped by the deadline: the best checkpoint stands
                break
            ends.append(end)
        if not results:
            return {}
        refitted = refit and len(ends) == rounds  # the refit round finished
        if len(ends) == 2:
            self._average_rounds(ends, results, scored=not refit)
        if refitted:
            self._refit_output()
        elif ends and len(ends) == len(results):  # the last round run ended annealed, scored on val
            self._prefer_annealed_end()
        info = {**results[-1], "rounds": rounds, "refit": refitted}
        return {**info, "round_results": results} if len(ends) == 2 else info

    def _average_rounds(self, ends: list[list[np.ndarray]], results: list[dict], scored: bool) -> None:
        """The rounds' ends' weights averaged into the scored model, scored on val if ``scored`` (not after a
        refit: its round trained on the val images), and recorded for a resumed session."""
        record = self.state.read("finetune_average")
        if record is not None:
            self.scored.load_weights(record["weights"])
            self.last = record["info"]["last"]
            return
        self.scored.set_weights([np.mean(w, axis=0) for w in zip(*ends)])  # all float32 (frozen BN's too)
        epochs, steps = sum(r["epochs_run"] for r in results), sum(r["steps_planned"] for r in results)
        if scored:
            self.score("finetune average", epochs, steps)
        else:
            self.last = {"val_accuracy": None, "source": f"finetune average epoch {epochs}"}
        self.state.write("finetune_average", {"last": self.last}, weights=self.scored)

    def _refit_output(self) -> None:
        """Make the refit model in the scored model (its last round trained on the val images too) the output,
        unless it fits those val images (original view) worse than the output so far, which never saw them: a
        broken round, not noise. When the time left holds its test predictions but not that check too (a slowed
        machine), it is the output unchecked. Its val accuracy measures nothing: the output keeps the last unseen
        estimate."""
        if self.best.get("final") or self.budget.interrupted:  # written by an earlier session; or no time
            return
        unseen, source = self.best["val_accuracy"], f"{self.last['source']} (refit on the training and val images)"
        if not self._end_test_fits("the refit model"):
            return
        check_s = len(self.acts.y_val) / self.top_rate
        if self.expired(self._end_test_s() + check_s):  # a slowed machine: the output it was trained to be, unchecked
            checked = f"not checked on the val images: its {check_s:.0f}s would not fit"
        else:
            seen = accuracy(_predict(self.scored, self.acts.val[:1]), self.acts.y_val)  # the original view
            if seen < unseen:
                self.notes.append(f"the refit model is not the output: on the val images it trained on it scored "
                                  f"{seen:.4f}, below the output's {unseen:.4f} on them unseen")
                return
            checked = f"it scored {seen:.4f} on the val images it trained on"
        before = self.best["source"]
        self._write_predictions(unseen, source, final=True, refit=True)
        self.notes.append(f"the output is {source}: {checked}; the val accuracy reported, {unseen:.4f}, is that of "
                          f"the output before it ({before})")
        self.log(f"wrote {self.outputs.path} from {source}")

    def _rounds(self, time_s: float, eval_s: float) -> int:
        """How many rounds fine-tuning runs in ``time_s``: two when each gets ``ROUND_MIN_EPOCHS`` epochs
        (``IMAGE_MIN_EPOCHS`` at the image cut) by the estimated epoch time, else one."""
        least = IMAGE_MIN_EPOCHS if self.extractor.cut == self.spec.cuts.image else ROUND_MIN_EPOCHS
        epoch_s = len(self.acts.y_train) * self.acts.ft_image_s + eval_s
        return 2 if time_s >= 2 * (self._ft_setup_s() + least * epoch_s) else 1

    def _fine_tune_round(self, r: int, rounds: int, time_s: float, eval_s: float, refit: bool = False
                         ) -> tuple[dict, list[np.ndarray] | None] | None:
        """Round ``r`` (from 0) of fine-tuning, for ``time_s`` from the weights in ``self.scored`` (or from where a
        killed session left it): its result and its end's weights (None if the deadline stopped it), or None if
        it was skipped. Its recovery state is the record ``finetune`` (round 0) or ``finetuneR``. A ``refit`` round
        trains on the val images too, so its epochs are not scored: no checkpoint, no output until its end."""
        acts, log, state = self.acts, self.log, self.state
        name, phase = ("finetune", "finetune") if r == 0 else (f"finetune{r + 1}", f"finetune {r + 1}")
        record = state.read(name)
        if record is not None and record["info"].get("finished"):
            if not record["weights"]:  # no epoch fitted: as the session that ran it returned
                return record["info"]["result"], None
            self.scored.load_weights(record["weights"])
            self.last = record["info"]["last"]
            return record["info"]["result"], self.scored.get_weights()
        if self.expired():
            return None
        if record is None and not self._fine_tune_fits(time_s):
            self.notes.append(f"fine-tuning skipped: {max(time_s, 0):.0f}s left cannot fit its setup and a "
                              "useful epoch")
            return None
        t = time.time()
        freeze_batch_norm(self.scored)
        resume = None
        if record is not None:
            self.scored.load_weights(record["weights"])
            resume = FineTuneState(**record["info"]["state"], optimizer_variables=list(record["arrays"].values()))
            log(f"fine-tuning resumed after epoch {resume.epoch} of {resume.epochs_planned}")
        on_images = self.extractor.cut == self.spec.cuts.image
        log(f"fine-tuning {self.spec.name} " + ("whole, on random crops of the images" if on_images else
                                                f"from block {self.extractor.cut}") + f" for up to {time_s:.0f}s"
            + (" on the training and val images (refit)" if refit else "")
            + (f" (round {r + 1} of {rounds})" if rounds > 1 else ""))
        views, labels = acts.train, acts.y_train
        if refit:
            views = [ConcatRows([t, v]) for t, v in zip(acts.train, acts.val)]
            labels = np.concatenate([acts.y_train, acts.y_val])

        def on_epoch(epoch: int, step: int) -> None:
            if refit:  # the val images are training images now: nothing to score
                self.last = {"val_accuracy": None, "source": f"{phase} epoch {epoch}"}
                log(f"{phase.replace('finetune', 'fine-tune')} epoch {epoch} (refit)")
                return
            self.score(phase, epoch, step)
            log(f"{phase.replace('finetune', 'fine-tune')} epoch {epoch}: best val accuracy "
                f"{self.best['val_accuracy']:.4f}")

        saved = {"at": -np.inf, "cost": 0.0}  # the last recovery state: when, and its seconds to write

        def on_state(s: FineTuneState) -> None:
            log.status(phase, s.epoch, s.epochs_planned, best=self.best["val_accuracy"])
            if time.time() - saved["at"] < max(STATE_EVERY_S, saved["cost"] / STATE_SHARE):
                return
            started = time.time()
            info = {k: v for k, v in asdict(s).items() if k != "optimizer_variables"}
            state.write(name, {"state": info, "rounds": rounds}, weights=self.scored,
                        arrays={f"v{i:04d}": v for i, v in enumerate(s.optimizer_variables)})
            saved.update(at=time.time(), cost=time.time() - started)

        ft = fine_tune(self.scored, views, labels, self.num_classes, time_s, 0.0 if refit else eval_s,
                       expired=self.expired, on_epoch=on_epoch, seed=self.cfg.seed + r,
                       batch_size=self.cfg.batch_size, lr=self.cfg.finetune_lr, resume=resume, on_state=on_state,
                       augment=random_resized_crop if on_images else None)
        result = asdict(ft)
        self.ft_setup_seen = max(self.ft_setup_seen, ft.setup_s)
        self.phase(phase, t, time_s, **result, refit=refit, save_s=round(self.save_s, 2))
        if ft.epochs_planned == 0:
            self.notes.append("fine-tuning skipped: not one epoch fits in the time left")
        if ft.stopped_by_deadline:
            return result, None
        if ft.epochs_run == 0:
            state.write(name, {"finished": True, "result": result, "rounds": rounds})
            return result, None
        state.write(name, {"finished": True, "result": result, "last": self.last, "rounds": rounds},
                    weights=self.scored)
        return result, self.scored.get_weights()

    # 4. ensemble: a vote over the kept checkpoints and test-time views, if it beats the best single one
    def _zoom_view_s(self, part: str | None = None) -> float:
        """Planned seconds of one zoomed view of the val or test images (``part``; None: both): the bottom on
        them (traced for each part), and the candidates' tops (the top ``keep`` checkpoints and the last
        epoch) on them."""
        n = {"val": len(self.acts.y_val), "test": len(self.acts.test[0])}
        n = n[part] if part else sum(n.values())
        return (1 if part else 2) * self.trace_s + n / self.acts.rate + (self.cfg.keep + 1) * n / self.top_rate

    def _zoom_views(self) -> list[int]:
        """The zoomed views (indices into VIEWS) this run affords as ensemble candidates: as many as cost at
        most ``zoom_share`` of the budget together (needs the decoded images of this session)."""
        if self.view_sources is None or not self._votes() or self.cfg.zoom_share <= 0:
            return []
        fits = int(self.cfg.zoom_share * self.cfg.budget_s // self._zoom_view_s())
        return list(range(CACHED_VIEWS, len(VIEWS)))[: max(fits, 0)]

    def _votes(self) -> bool:
        """Whether this run can have an ensemble phase: fine-tuned checkpoints to vote over, their speed known."""
        return bool(self.voting and self.cfg.finetune and self.extractor.top is not None and self.top_rate
                    and self.ensemble_time)

    def _ensemble_plan(self) -> dict[str, float]:
        """Planned seconds of the ensemble phase's parts: loading the candidates, the zoomed views it affords (of the
        val images: a chosen vote's zoomed views of the test images run if time is left, else it is chosen again
        without them), test predictions of the candidates (usually the top ``keep`` checkpoints, the last epoch among them) on
        the cached views, the latency measurements (one round per possible drop when the latency estimate
        is near ``--latency-ms``). Each view's member latency, for the report, is measured only in time left
        over (not planned: it would take the time of fine-tuning at small budgets). The ensemble's export is
        covered by the end reserve (on trashnet and flowers5 it took no longer than the single model's:
        bench/RESULTS.md). ``round`` is one of the latency measurements."""
        if not self._votes():
            return {}
        cached, n_test = len(self.acts.test), len(self.acts.test[0])
        zoomed = len(self._zoom_views())
        views = cached + zoomed
        top_share = self.acts.rate / self.top_rate  # a member's top, relative to the bottom it reads
        ensemble_s = views * self._one_image_s() * (1 + self.cfg.keep * top_share) / (1 + top_share)  # the largest vote
        ensemble_s += self.second["image_s"] if self.second else 0.0  # the second backbone, on the original view
        latency_s = views * self.trace_s + (LATENCY_IMAGES + 3) * ensemble_s
        return {"members": (self.cfg.keep + 1) * MEMBER_LOAD_S,
                "zoomed": zoomed * self._zoom_view_s("val"),  # their test part: only if the vote uses them
                "test": (self.cfg.keep + 1) * cached * n_test / self.top_rate,
                "latency": self._latency_rounds(views, 1000 * ensemble_s) * latency_s,
                "round": latency_s}  # one latency measurement, included in "latency"

    def _member_latency_s(self) -> float:
        """Planned seconds of one view's member latency measurement (compose, trace, time)."""
        return self.trace_s + (MEMBER_LATENCY_IMAGES + 3) * self._one_image_s()

    def _one_image_s(self) -> float:
        """Seconds of one image alone through the bottom and top: measured, else from their measured rates."""
        if self.single_latency_ms:
            return self.single_latency_ms / 1000
        return 1 / self.acts.rate + (1 / self.top_rate if self.top_rate else 0.0)

    def _ensemble_s(self) -> float:
        """Time the ensemble phase is planned to need (see :meth:`_ensemble_plan`)."""
        plan = self._ensemble_plan()
        return sum(plan[part] for part in ("members", "zoomed", "test", "latency")) if plan else 0.0

    def _latency_rounds(self, views: int, estimate_ms: float) -> int:
        """Latency measurements the ensemble phase plans: one, or one per possible drop when the estimated
        p95 latency of the largest ensemble could come near ``--latency-ms``."""
        if self.cfg.latency_ms is None or (self.single_latency_ms and 1.5 * estimate_ms <= self.cfg.latency_ms):
            return 1
        return self.cfg.keep + views + 1

    def _ensemble(self) -> dict:
        acts, log = self.acts, self.log
        t = time.time()
        if len(self.candidates) + (self.second is not None) < 2:
            self.notes.append("no ensemble: fewer than two scored models to vote over in this session")
            return {}
        if not self.ensemble_time:  # the head gave its time to fine-tuning, and said so
            return {"used": False}
        self.collect_garbage(0.0)
        plan, planned_s = self._ensemble_plan(), self._ensemble_s()
        left_s = self.budget.remaining() - self.reserve.s
        if self.budget.interrupted or not plan or left_s < 0.8 * (plan["test"] + plan["round"]):
            self.notes.append("ensemble phase skipped: interrupted, or no time left to predict the test set with "
                              "the candidates")
            return {"used": False}
        planned_views = self._zoom_views()  # as many as still fit before the test predictions and latency rounds
        spare_s = left_s - plan["test"] - plan["latency"]
        zoom_views = planned_views[: max(int(spare_s // (0.8 * self._zoom_view_s("val"))), 0)]  # 0.8: plans run over
        if len(zoom_views) < len(planned_views):
            self.notes.append(f"{len(planned_views) - len(zoom_views)} zoomed view(s) skipped: the phases before "
                              "ran past their plan")
        sources = list(self.candidates)
        members = self._member_models(sources)
        zoomed_val = self._zoomed(members, "val", zoom_views, keep_s=plan["test"] + plan["latency"])
        keys = [(source, v) for v in [*range(len(acts.val)), *zoomed_val] for source in sources]
        val = [zoomed_val[v][source] if v in zoomed_val else self.candidates[source]["val"][v] for source, v in keys]
        if self.second is not None:  # a head on the second backbone's features, original view
            keys.append((self.second["source"], 0))
            val.append(self.second["val"])
            members[self.second["source"]] = self.second["member"]
        val = np.stack(val)
        choice = choose(val, acts.y_val, self._models(keys), seed=self.cfg.seed)
        used_zoomed = [] if choice.rule == "single" else sorted({keys[i][1] for i in np.flatnonzero(choice.weights)
                                                                  if keys[i][1] in zoomed_val})
        if used_zoomed and self.expired(plan["test"] + plan["round"] + len(used_zoomed) * self._zoom_view_s("test")):
            self.notes.append(f"the vote ({choice.rule}) used zoomed views whose test images no longer fit: chosen "
                              "again without the zoomed candidates")
            cached = [i for i, (_, v) in enumerate(keys) if v not in zoomed_val]
            keys, val, used_zoomed = [keys[i] for i in cached], val[cached], []
            choice = choose(val, acts.y_val, self._models(keys), seed=self.cfg.seed)
        info = {"rule": choice.rule, "reason": choice.reason, "heldout": choice.heldout,
                "single_heldout": choice.single_heldout, "candidates": [
                    {"source": source, "view": VIEWS[v].name,
                     "val_accuracy": accuracy(val[i], acts.y_val), "weight": float(choice.weights[i])}
                    for i, (source, v) in enumerate(keys)]}
        log(f"ensemble: {choice.reason}")
        self.notes.append(f"ensemble: {choice.reason}")
        test = self._test_probs(keys, members, used_zoomed, 0.8 * plan["round"])  # the candidates' test predictions
        if test is None:
            self.notes.append("ensemble phase stopped: the deadline came while predicting the test set")
            return {**info, "used": False}
        np.savez_compressed(self.out / "report" / "ensemble_test_probs.npz",
                            **{_candidate_name(key): p for key, p in test.items()})
        np.savez_compressed(self.out / "report" / "ensemble_val_probs.npz", labels=acts.y_val,
                            **{_candidate_name(key): p for key, p in zip(keys, val)})  # to study other rules offline
        if choice.rule == "single":
            latency = self._latency(self._output_model(), self.n_views)
            self.phase("ensemble", t, planned_s, rule=choice.rule, p95_latency_ms=latency)
            return {**info, "used": False, "p95_latency_ms": latency, "latency_budget_ms": self.cfg.latency_ms}
        used = [int(i) for i in np.flatnonzero(choice.weights > 0)]
        if self.expired(0.8 * self._ensemble_plan()["round"]):  # re-planned: traces measured so far
            self.notes.append("ensemble not used: no time left to build it and measure its latency")
            return {**info, "used": False}
        weights = choice.weights[used] / choice.weights[used].sum()
        n_chosen = len(used)
        used, weights, model, latency = self._within_latency(keys, used, weights, members, choice.confidence)
        val_probs = vote(val[used], weights, choice.confidence).astype(np.float32)
        test_probs = vote(np.stack([test[keys[i]] for i in used]), weights, choice.confidence)
        acc = accuracy(val_probs, acts.y_val)
        if len(used) < n_chosen and acc < self.best["val_accuracy"]:  # pruned below the guard's choice
            self.notes.append(f"ensemble not used: pruned to {len(used)} candidates for the latency budget, its val "
                              f"accuracy {acc:.4f} is below the output's {self.best['val_accuracy']:.4f}")
            return {**info, "used": False, "p95_latency_ms": latency, "latency_budget_ms": self.cfg.latency_ms}
        if self.budget.interrupted:
            return {**info, "used": False}
        self.ensemble_model, self.ensemble_val_probs = model, val_probs
        self._export()  # OUT/model must hold what predictions.csv says, also after a kill from here on
        probs = np.zeros((len(self.test_files), self.num_classes), np.float32)
        probs[: len(test_probs)] = test_probs
        self.outputs.write(probs, acts.usable, f"ensemble ({choice.rule}, {len(used)} members)")
        self.best = {"val_accuracy": float(acc), "source": self.outputs.written_by, "final": True, "exported": True}
        self.state.write("best", self.best)
        info.update(used=True, members=self._member_report(keys, used, weights, val, members),
                    val_accuracy=acc, p95_latency_ms=latency, latency_budget_ms=self.cfg.latency_ms)
        if self.cfg.latency_ms is not None and latency > self.cfg.latency_ms:
            self.notes.append(f"p95 latency {latency:.0f}ms of the output stays over --latency-ms "
                              f"{self.cfg.latency_ms:.0f}")
        self.phase("ensemble", t, planned_s, rule=choice.rule, members=len(used), p95_latency_ms=latency)
        log(f"wrote {self.outputs.path} from {self.outputs.written_by} (val accuracy {acc:.4f}, "
            f"p95 latency {latency:.0f}ms a image)")
        return info

    def _within_latency(self, keys: list[tuple[str, int]], used: list[int], weights: np.ndarray,
                        members: dict[str, keras.Model], confidence: bool) -> tuple[list[int], np.ndarray, keras.Model, float]:
        """The ensemble model of candidates ``used`` and its p95 latency; with ``--latency-ms``, whole members or
        views are dropped, least weight first, until it is under the budget (or one candidate is left); when
        the deadline leaves one more round only, straight to the heaviest candidate alone."""
        def n_views(used: list[int]) -> int:  # views traced: each backbone's bottom traces its own
            return len({(self._second_source(keys[i][0]), keys[i][1]) for i in used})

        def compose(used: list[int], weights: np.ndarray) -> keras.Model:
            return compose_ensemble(self.extractor.bottom, [members[keys[i][0]] for i in used],
                                    [VIEWS[keys[i][1]] for i in used], weights, confidence,
                                    [self._bottom_of(keys[i][0]) for i in used])

        start = time.time()
        model = compose(used, weights)
        latency, budget = self._latency(model, n_views(used)), self.cfg.latency_ms
        step_s = time.time() - start  # one more round must fit before the end reserve, with the ensemble's export
        while budget is not None and latency > budget and len(used) > 1 and not self.expired(step_s):
            if self.expired(2 * step_s):  # no time for round after round: straight to the heaviest candidate
                drop = set(range(len(used))) - {int(np.argmax(weights))}
            else:
                groups = [[j for j, i in enumerate(used) if keys[i][part] == value]
                          for part in (0, 1) for value in dict.fromkeys(keys[i][part] for i in used)]
                drop = set(groups[drop_order(weights, groups)[0]])
            if len(drop) == len(used):
                break
            self.log(f"ensemble: p95 latency {latency:.0f}ms over {budget:.0f}ms: dropping "
                     + ", ".join(_candidate_name(keys[used[j]]) for j in sorted(drop)))
            keep = [j for j in range(len(used)) if j not in drop]
            used, weights = [used[j] for j in keep], weights[keep] / weights[keep].sum()
            model = compose(used, weights)
            latency = self._latency(model, n_views(used))
        return used, weights, model, latency

    def _second_source(self, source: str) -> bool:
        """Whether candidate ``source`` is the second backbone's head."""
        return self.second is not None and source == self.second["source"]

    def _models(self, keys: list[tuple[str, int]]) -> np.ndarray:
        """Which model each candidate (source, view) comes from, for the vote's "models" rule: True for the
        second backbone's head, False for the fine-tune's checkpoints."""
        return np.array([self._second_source(source) for source, _ in keys])

    def _bottom_of(self, source: str) -> keras.Model | None:
        """The model candidate ``source`` reads: the second backbone (uint8 image -> its pooled features) for its
        head, None (the main bottom) for the fine-tune's checkpoints."""
        return self.second["bottom"] if self._second_source(source) else None

    def _member_models(self, sources: list[str]) -> dict[str, keras.Model]:
        """A copy of the scored model with each candidate's weights, by source."""
        members = {}
        for j, source in enumerate(sources):
            candidate = self.candidates[source]
            if candidate["path"] is None:  # the last epoch, not among the top checkpoints: its weights when scored
                members[source] = member_copy(self.scored, f"member_{j}")
                members[source].set_weights(candidate["weights"])
            else:
                members[source] = member_copy(self.scored, f"member_{j}", str(candidate["path"]))
        return members

    def _zoomed(self, members: dict[str, keras.Model], part: str, views: list[int],
                keep_s: float = 0.0) -> dict[int, dict[str, np.ndarray]]:
        """Probabilities of every member on the zoomed ``views`` of the val or test images (``part``), by view
        and source: the bottom runs on each view of the decoded images. A view starts only if its cost (the
        plan's, then the last view's as measured) leaves ``keep_s`` before the end reserve; one the deadline
        cuts all the same is left out."""
        cache, idx = self.view_sources[part] if views else (None, None)
        probs: dict[int, dict[str, np.ndarray]] = {}
        stop = lambda: self.expired(keep_s)  # noqa: E731
        view_s = self._zoom_view_s(part)
        for v in views:
            t = time.time()
            if self.expired(keep_s + 0.8 * view_s):
                self.notes.append(f"{VIEWS[v].name} view of the {part} images skipped: its cost, {view_s:.0f}s, "
                                  "does not fit")
                break
            acts = self._features(view_model(self.extractor.bottom, VIEWS[v]), cache, idx, stop, VIEWS[v].name,
                                  dtype=np.float16)
            by_source = {}
            for source, member in members.items():
                if acts.done < len(idx) or stop():
                    break
                by_source[source] = _predict(member, [acts.values])
            if len(by_source) < len(members):
                self.notes.append(f"{VIEWS[v].name} view of the {part} images cut by the deadline: not a candidate")
                break
            probs[v], view_s = by_source, time.time() - t
        return probs

    def _test_probs(self, keys: list[tuple[str, int]], members: dict[str, keras.Model], zoomed: list[int],
                    keep_s: float) -> dict[tuple[str, int], np.ndarray] | None:
        """Test probabilities of every candidate on a cached view, and of those on the ``zoomed`` views
        (None if they would leave less than ``keep_s`` before the end reserve); the second backbone's head's are
        those it predicted when fitted."""
        test: dict[tuple[str, int], np.ndarray] = {}
        n_test = len(self.acts.test[0])
        for source, v in keys:
            if self._second_source(source):  # predicted when it was fitted
                test[(source, v)] = self.second["test"]
            elif v < len(self.acts.test):
                if n_test and self.expired(keep_s):
                    return None
                test[(source, v)] = (_predict(members[source], [self.acts.test[v][:n_test]]) if n_test
                                     else np.zeros((0, self.num_classes), np.float32))
        members = {source: m for source, m in members.items() if not self._second_source(source)}
        if zoomed and n_test:
            probs = self._zoomed(members, "test", zoomed, keep_s)
            if len(probs) < len(zoomed):
                return None
            test.update({(source, v): p for v, by_source in probs.items() for source, p in by_source.items()})
        elif zoomed:
            test.update({(source, v): np.zeros((0, self.num_classes), np.float32) for source in members for v in zoomed})
        return test

    def _member_report(self, keys: list[tuple[str, int]], used: list[int], weights: np.ndarray, val: np.ndarray,
                       members: dict[str, keras.Model]) -> list[dict]:
        """Per member of the output: source, view, weight, val accuracy and its p95 latency alone (its view, the
        bottom and its top). The fine-tune's members share one architecture, so that is measured once per view
        (and once for the second backbone's head), after the ensemble's export, in time left over before the end
        reserve (else None)."""
        report, latency = [], {}
        for i, w in zip(used, weights):
            source, v = keys[i]
            kind = (self._second_source(source), v)
            if kind not in latency:
                late = self.budget.expired(self.reserve.s - 1.5 * self.reserve.export_s + self._member_latency_s())
                latency[kind] = None if late else self._latency(
                    compose_ensemble(self.extractor.bottom, [members[source]], [VIEWS[v]], [1.0], False,
                                     [self._bottom_of(source)]), 1, MEMBER_LATENCY_IMAGES)
            report.append({"source": source, "view": VIEWS[v].name, "weight": float(w),
                           "val_accuracy": accuracy(val[i], self.acts.y_val), "p95_latency_ms": latency[kind]})
        return report

    def _latency(self, model: keras.Model, views: int, images: int = LATENCY_IMAGES) -> float:
        """p95 milliseconds of ``model`` on one image at a time (this machine, after 3 warm-up calls). Its first
        call traces it: that time per view of the image the model runs its bottom on (``views``) raises
        ``self.trace_s`` for the plans that follow when it is longer."""
        batch = np.zeros((1, self.size, self.size, 3), np.uint8)
        times = []
        for _ in range(images + 3):
            t = time.perf_counter()
            model.predict_on_batch(batch)
            times.append(time.perf_counter() - t)
        self.trace_s = max(self.trace_s, (times[0] - float(np.median(times[3:]))) / views)
        return float(np.percentile(times[3:], 95) * 1000)

    # finalise: the best checkpoint's weights into the exported model, and the report
    def _finalise(self, head_info: dict, ft_info: dict, ensemble_info: dict) -> OnlineResult:
        t = time.time()
        acts, out = self.acts, self.out
        top = self.checkpoints.best()
        source = self.last["source"]
        if top is not None and not self.best.get("final"):  # else the weights in memory are the output's
            self.scored.load_weights(top["path"])
            source = f"{top['phase']} epoch {top['epoch']}"
        if self.ensemble_model is not None:
            val_probs = self.ensemble_val_probs
        elif source in self.candidates:  # scored in this session: its val probabilities per view are kept
            val_probs = sum(self.candidates[source]["val"][: self.n_views]) / self.n_views
        else:
            val_probs = _predict(self.scored, acts.val[: self.n_views])
        self.outputs.ensure_exists()
        if not self.best.get("exported"):  # else OUT/model already holds the ensemble of predictions.csv
            self._export()
        self.phase("finalise", t, self.reserve.s)
        val_acc = accuracy(val_probs, acts.y_val)
        if self.best.get("exported") and self.ensemble_model is None:  # resumed after an earlier session's ensemble
            val_acc = self.best["val_accuracy"]
            self.notes.append("the ensemble of an earlier session is the output; the val confusion matrix is of "
                              "the single model in memory")
        if self.best.get("refit"):  # its val accuracy is of images it trained on
            val_acc = self.best["val_accuracy"]
            self.notes.append("the val accuracy reported is that of the output before the refit; the val confusion "
                              "matrix is of the refit output, on val images it trained on")
        cfg = self.cfg
        write_report(
            out / "report",
            {
                "config": {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
                           "input_size": self.size, "cache_dir": str(self.cache_dir)},
                "environment": environment(),
                "history": {"head": head_info["history"], "head_chosen_epoch": head_info["chosen_epoch"],
                            "finetune": ft_info, "ensemble": ensemble_info, "checkpoints": self.checkpoints.entries},
                "quarantine": acts.quarantine,
                "unreadable_test_files": acts.unreadable_test,
                "summary": {"budget_s": cfg.budget_s, "wall_s": round(self.spent + self.budget.elapsed(), 2),
                            "margin_s": round(self.budget.remaining(), 2), "reserve_s": round(self.reserve.s, 2),
                            "export_s": round(self.reserve.export_s, 2), "spent_by_earlier_sessions_s": round(self.spent, 2),
                            "val_accuracy": val_acc, "tta": head_info["tta"],
                            "p95_latency_ms_one_view": round(self.single_latency_ms, 1) or None,
                            "predictions_from": self.outputs.written_by, "interrupted": self.budget.interrupted,
                            "train_images": len(acts.y_train), "val_images": len(acts.y_val), "notes": self.notes},
                "timeline": {"phases": self.phases, "events": self.log.events},
            },
            confusion_matrix(val_probs.argmax(1), acts.y_val, self.num_classes),
            self.ds.class_names,
        )
        timeline_png(out / "report" / "timeline.png", cfg.budget_s, self.phases, self.scores,
                     self.checkpoints.entries, self.budget.start - self.spent)
        self.log(f"done: val accuracy {val_acc:.4f} (predictions from {self.outputs.written_by}); outputs in {out}")
        return self._result(val_acc, head_info["tta"])

    def _result(self, val_accuracy: float, tta: bool) -> OnlineResult:
        return OnlineResult(self.outputs.path, self.out / "model", val_accuracy, tta, len(self.test_files),
                            self.spent + self.budget.elapsed(), self.notes)


def default_cache_dir() -> Path:
    """``$TIMEBOX_CACHE_DIR`` or ``~/.cache/timebox``."""
    env = os.environ.get("TIMEBOX_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "timebox"

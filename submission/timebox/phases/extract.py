"""Extract: every image decoded once into the cache, then the frozen bottom of the backbone once per image and
view, in priority order (val, test, train; then the mirrored views of test, val and train when the time they cost
still leaves fine-tuning its epochs). The first val images time the bottom: the input size shrinks if every
image's original view would not fit, and the cut fine-tuning starts from is chosen (:mod:`.cut`). The early
output (:mod:`.early`) comes as soon as every original view is extracted."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..data.cache import ImageCache, build_cache
from ..data.decode import PARTIAL
from ..data.layouts import Dataset
from ..data.splits import stratified_split
from ..data.unreadable import quarantined, unreadable_test, usable_test_files
from ..data.workers import Stopped
from ..errors import UsageError
from ..models.features import Features, extract_features, image_batch_size
from ..models.registry import Extractor, build_extractor, split_extractor
from ..plan import Counts
from ..train.depth import TRAIN_PER_INFER
from ..train.head import HeadResult
from ..train.image_size import affordable_size
from .activations import Activations, Pooler
from .context import Context
from .cut import choose_run_cut, top_inference_s
from .early import early_flip, early_output


@dataclass
class ViewSources:
    """The decoded images of each part and their indices, for views extracted later (zoomed, second backbone)."""

    val: tuple[ImageCache, np.ndarray]
    test: tuple[ImageCache, np.ndarray]
    train: tuple[ImageCache, np.ndarray]


@dataclass
class Extraction:
    """The extract phase's result: the activations, the extractor at the chosen cut and size, the decoded images
    (None when a resumed session loaded the activations), the pooled features so far and the early head."""

    acts: Activations
    extractor: Extractor
    sources: ViewSources | None
    pool: Pooler
    early_head: HeadResult | None
    size: int


def set_size(ctx: Context, size: int) -> None:
    """The input size from now on: the labels the outputs save say it."""
    ctx.outputs.labels = replace(ctx.outputs.labels, input_size=size)


def features(ctx: Context, model, cache: ImageCache, idx: np.ndarray, should_stop, label: str, flip: bool = False,
             dtype=np.float32, marks: list[tuple[float, int]] | None = None) -> Features:
    """``model`` on ``cache.images[idx]`` (see :func:`extract_features`), with a status line (``label``) and garbage
    collection between batches; ``marks`` gets (time, images done) after each batch."""
    def on_batch(done: int) -> None:
        ctx.log.status(label, done, len(idx))
        if marks is not None:
            marks.append((time.time(), done))
        ctx.session.collect_garbage()

    return extract_features(model, cache.images, idx, should_stop=should_stop, on_batch=on_batch, flip=flip,
                            dtype=dtype)


class ExtractPhase:
    """One extraction of the training and test images (see the module's docstring)."""

    def __init__(self, ctx: Context, ds: Dataset, test_files: list[Path], extractor: Extractor, size: int):
        self.ctx, self.ds, self.test_files = ctx, ds, test_files
        self.extractor, self.size = extractor, size
        self.notes: list[str] = []
        self.early_head: HeadResult | None = None
        self.pool: Pooler | None = None

    def decode(self) -> tuple[ImageCache, ImageCache] | None:
        """The training and the test images at the size of the moment; None if the run was interrupted, or
        reached its final reserve, while decoding (checked after each chunk of images)."""
        cfg, cache_dir, log = self.ctx.cfg, self.ctx.cache_dir, self.ctx.log
        budget, planner = self.ctx.budget, self.ctx.planner

        def build(files: list[Path]) -> ImageCache:
            return build_cache(files, self.size, cache_dir, cfg.workers, max_gb=cfg.cache_max_gb, log=log,
                               should_stop=lambda: budget.expired(planner.reserve_s()))
        try:
            return build(self.ds.files), build(self.test_files)
        except Stopped:
            return None

    def acts(self, cache: ImageCache, idx: np.ndarray, reserve_s: float, flip: bool = False) -> Features:
        """The bottom's activations of ``cache.images[idx]``, stopped at ``reserve_s`` before the end; from the
        run's feature store (``--feature-cache``) when it holds them, into it when they are complete."""
        ext, budget, store = self.extractor, self.ctx.budget, self.ctx.feature_store
        dtype = self.dtype
        key = self.store_key(cache, idx, flip) if len(idx) else None
        if key is not None and (hit := store.load(key)) is not None:
            return Features(hit[0], len(idx), hit[1])
        f = features(self.ctx, ext.bottom, cache, idx, lambda: budget.expired(reserve_s), "extract", flip=flip,
                     dtype=dtype)
        if key is not None and f.done == len(idx):
            store.save(key, f.values, f.seconds)
        return f

    def run(self, t: float) -> Extraction | None:
        ctx, ds = self.ctx, self.ds
        d0 = time.time()
        caches = self.decode()
        if caches is None:
            return None
        train_cache, test_cache = caches
        decode_s = time.time() - d0
        ctx.session.phase("setup", t, None)
        ctx.log(f"images decoded (cache: {ctx.cache_dir})")
        quarantine, train_idx, val_idx = self.split(train_cache)
        test_idx = np.arange(len(self.test_files))
        t = time.time()
        if self.shrink_size(train_cache, val_idx, len(train_idx) + len(val_idx) + len(test_idx), decode_s):
            caches = self.decode()
            if caches is None:
                return None
            train_cache, test_cache = caches
        originals = self.original_views(train_cache, test_cache, val_idx, test_idx, train_idx)
        if originals is None:
            return None
        val, test, train, rate, ft_image_s, train_mirror = originals
        n_train, n_test = len(train), len(test)
        test_ok = usable_test_files(test_cache.errors)
        y_val, y_train = ds.labels[val_idx], ds.labels[train_idx[:n_train]]
        views = self.mirrored_views(train_cache, test_cache, (val, test, train), (val_idx, test_idx, train_idx[:n_train]),
                                    (y_val, y_train, test_ok), train_mirror)
        ctx.session.phase("extract", t, None, images_per_s=round(rate, 2), views=len(views[2]),
                          cut=self.extractor.cut, size=self.size)
        if n_test < len(test_idx):
            self.notes.append(f"{len(test_idx) - n_test} test files got the prior class: no time left to extract them")
        if partly := sum(e == PARTIAL for e in test_cache.errors):
            self.notes.append(f"{partly} truncated test files predicted from the part that decodes "
                              "(report/unreadable_test_files.json)")
        unreadable = unreadable_test(self.test_files, test_cache.errors)
        sources = ViewSources((train_cache, val_idx), (test_cache, test_idx[:n_test]), (train_cache, train_idx[:n_train]))
        acts = Activations(*views, y_val, y_train, test_ok & (test_idx < n_test), rate, ft_image_s, self.extractor.cut,
                           self.size, quarantine, unreadable, self.notes)
        return Extraction(acts, self.extractor, sources, self.pool, self.early_head, self.size)

    def split(self, train_cache: ImageCache) -> tuple[list[dict], np.ndarray, np.ndarray]:
        """The quarantined training files, and the readable ones split into training (shuffled) and val indices."""
        ctx, ds = self.ctx, self.ds
        quarantine = quarantined(ds.files, train_cache.errors)
        good = np.array([i for i, e in enumerate(train_cache.errors) if e is None], dtype=np.int64)
        if quarantine:
            ctx.log(f"quarantined {len(quarantine)} unreadable training files (see report/quarantine.json)")
        missing = sorted(set(range(ctx.num_classes)) - set(ds.labels[good].tolist()))
        if missing:
            names = ", ".join(ds.class_names[k] for k in missing)
            raise UsageError(f"{ctx.cfg.train_dir}: no readable training image left for class(es) {names}; "
                             "see the quarantined files listed above and replace them")
        tr_pos, va_pos = stratified_split(ds.labels[good], ctx.cfg.val_fraction, ctx.cfg.seed)
        return quarantine, np.random.default_rng(ctx.cfg.seed).permutation(good[tr_pos]), good[va_pos]

    def shrink_size(self, cache: ImageCache, val_idx: np.ndarray, n_images: int, decode_s: float) -> bool:
        """Shrink the input size (down to ``min_size``) if every image's original view, then the head, would not fit
        the budget, by the bottom's speed timed on a val batch (see :mod:`timebox.train.image_size`; decoding
        again costs what ``decode_s`` did); the extractor is rebuilt at the new size. True if it shrank."""
        cfg = self.ctx.cfg
        if self.stored(cache, val_idx[:cfg.rate_probe_images]):
            return False  # an earlier run with the feature store extracted at this size: not this run's cost
        need_s = n_images * self.bottom_image_s(cache, val_idx)
        time_s = self.ctx.planner.size_time_s()
        size = affordable_size(self.size, need_s, time_s, cfg.min_size, setup_s=decode_s + cfg.resize_setup_s)
        if size == self.size:
            return False
        self.notes.append(f"input size {self.size}px -> {size}px: the {n_images} images' features at {self.size}px "
                          f"would take {need_s:.1f}s of the {max(time_s, 0):.1f}s left for them (--min-size "
                          f"{cfg.min_size})")
        self.ctx.log(self.notes[-1])
        self.size = size
        set_size(self.ctx, size)
        self.extractor = build_extractor(self.ctx.spec, size, cfg.weights, self.extractor.cut)
        return True

    def stored_s(self, train_cache: ImageCache, test_cache: ImageCache, val_rest: np.ndarray, test_idx: np.ndarray,
                 train_idx: np.ndarray) -> float:
        """The extraction seconds the feature store spares at this cut: every view it holds, original and mirrored,
        of the val images after the probe, the test and the training images."""
        store = self.ctx.feature_store
        if store is None:
            return 0.0
        parts = ((train_cache, val_rest), (test_cache, test_idx), (train_cache, train_idx))
        return sum(store.seconds(self.store_key(cache, idx, flip))
                   for cache, idx in parts if len(idx) for flip in (False, True))

    def stored(self, cache: ImageCache, idx: np.ndarray) -> bool:
        """Whether the feature store holds the bottom's activations of ``cache.images[idx]`` at this size."""
        key = self.store_key(cache, idx, False)
        return key is not None and self.ctx.feature_store.has(key)

    @property
    def dtype(self) -> type:
        """How cached activations are stored: float16 when a top follows, float32 for pooled features."""
        return np.float16 if self.extractor.top is not None else np.float32

    def store_key(self, cache: ImageCache, idx: np.ndarray, flip: bool) -> str | None:
        """The feature store's key of the bottom on ``cache.images[idx]`` (None without a store)."""
        store = self.ctx.feature_store
        return None if store is None else store.key(self.extractor.bottom, cache.path.name, idx, flip, self.dtype)

    def bottom_image_s(self, cache: ImageCache, idx: np.ndarray) -> float:
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

    def probe(self, train_cache: ImageCache, test_cache: ImageCache, val_idx: np.ndarray, test_idx: np.ndarray,
              train_idx: np.ndarray) -> tuple[np.ndarray, int, float, float, bool]:
        """The first val images through the bottom: its speed, then the cut (unless given). Returns the probe's
        activations, how many of them hold at the chosen cut, the speed, the fine-tune step's estimated seconds
        per image and whether the training images' mirrored view is planned."""
        ctx, cfg, planner = self.ctx, self.ctx.cfg, self.ctx.planner
        probe = val_idx[:cfg.rate_probe_images]
        f = self.acts(train_cache, probe, planner.reserve_s())
        val, n_val, rate = f.values, f.done, f.done / max(f.seconds, 1e-3)
        cuts, ext = ctx.spec.cuts, self.extractor
        bottom_share = 1 - cuts.share(ext.cut) if ext.top is not None else 1.0
        full_s = 1 / (rate * bottom_share) if bottom_share > 0 and rate > 0 else None  # the image cut: none
        planner.measured.full_image_s = full_s
        planner.measured.stored_s = self.stored_s(train_cache, test_cache, val_idx[len(probe):], test_idx, train_idx)
        n_test, n_train = len(test_idx), len(train_idx)
        ft_image_s, train_mirror = 0.0, True  # no fine-tuning: unused
        if ext.top is None or not cfg.finetune or n_val != len(probe):
            return val, n_val, rate, ft_image_s, train_mirror
        if cfg.finetune_cut is not None:  # a cut given: its top timed (the bottom's speed says little of a few layers)
            return val, n_val, rate, TRAIN_PER_INFER * top_inference_s(ctx, ext, self.size, ext.cut), train_mirror
        ft_image_s = cfg.ft_cost_ratio * (1 - cuts.share(cuts.default)) * full_s
        plan, train_mirror = choose_run_cut(ctx, ext, self.size, Counts(len(val_idx), n_test, n_train), self.notes)
        if plan.cut != ext.cut:
            self.extractor = split_extractor(ext, ctx.spec, plan.cut)
            n_val = 0  # the probe's activations are the old cut's
            ft_image_s *= plan.cost_ratio
        return val, n_val, rate, ft_image_s, train_mirror

    def original_views(self, train_cache: ImageCache, test_cache: ImageCache, val_idx: np.ndarray,
                       test_idx: np.ndarray, train_idx: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, bool] | None:
        """Every image's original view, val first: (val, test, train, speed, fine-tune seconds per image, whether
        the training images' mirrored view is planned); None if interrupted before any model could exist."""
        ctx, planner = self.ctx, self.ctx.planner
        val, n_val, rate, ft_image_s, train_mirror = self.probe(train_cache, test_cache, val_idx, test_idx, train_idx)
        final_s = planner.reserve_s()
        rest = self.acts(train_cache, val_idx[n_val:], final_s)
        val, n_val = (np.concatenate([val[:n_val], rest.values]) if n_val else rest.values), n_val + rest.done
        test_f = self.acts(test_cache, test_idx, final_s)
        train_f = self.acts(train_cache, train_idx, planner.head_s + final_s)
        (test, n_test), (train, n_train) = (test_f.values, test_f.done), (train_f.values, train_f.done)
        if n_done := rest.done + n_test + n_train:  # the bottom's speed at the cut chosen, on every image it took
            rate = n_done / max(rest.seconds + test_f.seconds + train_f.seconds, 1e-3)
        ctx.log(f"activations: {n_val}/{len(val_idx)} val, {n_test}/{len(test_idx)} test, {n_train}/{len(train_idx)} "
                f"train ({rate:.1f} img/s)")
        if n_val < len(val_idx) or n_train == 0:
            if ctx.budget.interrupted:
                return None
            raise UsageError(f"the budget of {ctx.cfg.budget_s:.0f}s is too short to extract features for "
                             f"{ctx.spec.name} at {self.size}px; give a larger --budget, or a smaller --size or "
                             f"--min-size (now {ctx.cfg.min_size})")
        if n_train < len(train_idx):
            self.notes.append(f"the budget allowed features of {n_train} of {len(train_idx)} training images")
        planner.cut = self.extractor.cut if self.extractor.top is not None else None
        planner.counts = Counts(len(val_idx), n_test, n_train)
        planner.measured.rate, planner.measured.ft_image_s = rate, ft_image_s
        return val, test[:n_test], train[:n_train], rate, ft_image_s, train_mirror

    def mirrored_views(self, train_cache: ImageCache, test_cache: ImageCache, originals: tuple, idx: tuple,
                       labels: tuple, train_mirror: bool) -> tuple[list, list, list]:
        """The views of val, test and train: the early output from the original ones (every test image's extracted),
        then the mirrored views of test, val (with the early output again, flip-averaged) and train, when they fit
        (see :meth:`Planner.mirrors_fit`)."""
        ctx, planner = self.ctx, self.ctx.planner
        (val, test, train), (val_idx, test_idx, train_idx), (y_val, y_train, usable) = originals, idx, labels
        self.pool = Pooler(self.extractor.top, ctx.predict)
        keep_s = planner.head_s + planner.reserve_s()
        complete = len(test) == len(test_cache.errors)
        if complete:  # with no mirrored view to come, the early head is the head (unless it is not its kind)
            self.early_head = early_output(ctx, self.pool, val, test, train, y_val, y_train, usable, keep_s)
        if not (complete and planner.mirrors_fit(train_mirror, ctx.cfg.finetune)):
            self.notes.append("mirrored views skipped: the time is worth more to fine-tuning")
            return [val], [test], [train]
        test_m = self.acts(test_cache, test_idx, keep_s, flip=True)
        val_m = self.acts(train_cache, val_idx, keep_s, flip=True)
        (test_f, n_tf), (val_f, n_vf) = (test_m.values, test_m.done), (val_m.values, val_m.done)
        views = [val], [test], [train]
        if n_tf == len(test_idx) and n_vf == len(val_idx):
            views = [val, val_f], [test, test_f], [train]
            early_flip(ctx, self.pool, self.early_head, views[0], views[1], y_val, usable)
        trained = "train skipped"
        if train_mirror:
            train_m = self.acts(train_cache, train_idx, keep_s, flip=True)
            train_f, n_trf = train_m.values, train_m.done
            if n_trf == len(train_idx):
                views[2].append(train_f)
            trained = f"{n_trf}/{len(train_idx)} train"
        ctx.log(f"mirrored views: {n_tf}/{len(test_idx)} test, {n_vf}/{len(val_idx)} val, {trained}")
        return views

"""The online run, top to bottom: files -> decoded cache -> cached activations -> head ->
fine-tuned top -> checkpoints -> predictions.

Everything is sized to the wall-clock budget, counted from the command's start:

1. ``extract``: the frozen bottom of the backbone runs once per image, in priority order
   (val, test, train), then mirrored views (test-time and training augmentation) when the
   measured speed leaves time for fine-tuning after them.
2. ``head``: a softmax head on pooled features, epochs and learning rate sized to its share.
3. ``finetune``: the last blocks of the backbone plus the head, on the cached activations,
   epochs and learning rate sized to the time that is left.

From the first scored model on, ``OUT/predictions.csv`` always exists and is replaced whenever
a better model (by timebox's own val accuracy) exists; SIGTERM/SIGINT end training early and
keep it; a watchdog exits cleanly just before the deadline if anything stalls.

Example::

    result = run_online(OnlineConfig(train_dir, test_dir, out, budget_s=300))
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from .budget import Budget
from .checkpoints import CheckpointManager
from .data.cache import build_cache
from .data.layouts import list_images, read_dataset
from .data.splits import stratified_split
from .errors import UsageError
from .metrics import accuracy, confusion_matrix, log_loss
from .models.features import extract_features
from .models.heads import compose_classifier
from .models.registry import build_extractor, get_backbone
from .predict import LABELS_FILE, MODEL_FILE, LabelMap, prediction_rows, write_predictions
from .progress import Progress
from .report import environment, timeline_png, write_report
from .train.finetune import fine_tune, freeze_batch_norm
from .train.head import fit_head
from .watchdog import Watchdog

FINALISE_S = 8.0  # saving the model and the report (measured ~3 s for EfficientNet-Lite0)
FT_COST_RATIO = 0.6  # first guess of a fine-tune step's cost per image relative to the bottom's
MIN_FT_EPOCHS = 4  # mirrored views are extracted only if this many fine-tune epochs still fit


@dataclass
class OnlineConfig:
    train_dir: Path
    test_dir: Path
    out: Path
    budget_s: float
    backbone: str = "efficientnet-lite0"
    weights: str = "imagenet"
    seed: int = 0
    layout: str = "auto"
    size: int | None = None
    val_fraction: float = 0.15
    cache_dir: Path | None = None
    workers: int | None = None
    batch_size: int = 32
    keep: int = 3
    finetune: bool = True


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

    def __init__(self, path: Path, names: list[str], usable: np.ndarray, labels: LabelMap):
        self.path, self.names, self.usable, self.labels = path, names, usable, labels
        self.written_by: str | None = None

    def write(self, probs: np.ndarray, usable: np.ndarray, source: str) -> None:
        write_predictions(self.path, prediction_rows(self.names, probs, usable, self.labels))
        self.written_by = source

    def ensure_exists(self) -> None:
        if self.written_by is None:
            self.write(np.zeros((len(self.names), len(self.labels.class_ids))), np.zeros(len(self.names), bool), "prior")


def _predict(model: keras.Model, views: list[np.ndarray], batch: int = 256) -> np.ndarray:
    """The model's outputs averaged over views (e.g. original and mirrored), in batches."""
    out = 0
    for view in views:
        out = out + np.concatenate([np.asarray(model.predict_on_batch(view[i : i + batch].astype(np.float32)))
                                    for i in range(0, len(view), batch)])
    return out / len(views)


def run_online(cfg: OnlineConfig) -> OnlineResult:
    """Train on ``cfg.train_dir`` and predict every file in ``cfg.test_dir`` within ``cfg.budget_s``."""
    budget = Budget(cfg.budget_s)
    handlers = {s: signal.signal(s, lambda *_: budget.interrupt()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run(cfg, budget)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def _run(cfg: OnlineConfig, budget: Budget) -> OnlineResult:
    log = Progress(budget)
    margin = max(10.0, 0.03 * cfg.budget_s)
    final_s = FINALISE_S + margin
    head_s = float(np.clip(0.05 * cfg.budget_s, 5.0, 30.0))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    notes: list[str] = []
    phases: list[dict] = []

    def phase(name: str, started: float, planned_s: float | None, **info) -> None:
        phases.append({"phase": name, "start_s": round(started - budget.start, 2), "planned_s": planned_s,
                       "actual_s": round(time.time() - started, 2), **info})

    ds = read_dataset(cfg.train_dir, cfg.layout)
    test_files = list_images(cfg.test_dir)
    spec = get_backbone(cfg.backbone)
    size = cfg.size or spec.default_size
    num_classes = len(ds.class_ids)
    log(f"{len(ds.files)} training images in {num_classes} classes ({ds.layout} layout), "
        f"{len(test_files)} test files; backbone {spec.name} at {size}px")

    prior = int(np.bincount(ds.labels, minlength=num_classes).argmax())
    labels = LabelMap(ds.class_ids, ds.class_names, prior, size, spec.name)
    test_root = Path(cfg.test_dir).resolve()
    outputs = _Outputs(out / "predictions.csv", [f.relative_to(test_root).as_posix() for f in test_files],
                       np.zeros(len(test_files), bool), labels)
    with Watchdog(budget.deadline - 1.0, outputs.ensure_exists):
        return _train_and_predict(cfg, budget, log, ds, test_files, spec, size, labels, outputs, cache_dir,
                                  final_s, head_s, notes, phases, phase)


def _train_and_predict(cfg, budget, log, ds, test_files, spec, size, labels, outputs, cache_dir,
                       final_s, head_s, notes, phases, phase) -> OnlineResult:
    out = Path(cfg.out)
    num_classes = len(ds.class_ids)
    t = time.time()
    extractor = build_extractor(spec, size, cfg.weights)
    train_cache = build_cache(ds.files, size, cache_dir, cfg.workers)
    test_cache = build_cache(test_files, size, cache_dir, cfg.workers)
    phase("setup", t, None)
    log(f"images decoded (cache: {cache_dir})")

    quarantine = [{"file": str(f), "reason": e} for f, e in zip(ds.files, train_cache.errors) if e]
    good = np.array([i for i, e in enumerate(train_cache.errors) if e is None], dtype=np.int64)
    if quarantine:
        log(f"quarantined {len(quarantine)} unreadable training files (see report/quarantine.json)")
    missing = sorted(set(range(num_classes)) - set(ds.labels[good].tolist()))
    if missing:
        names = ", ".join(ds.class_names[k] for k in missing)
        raise UsageError(f"{cfg.train_dir}: no readable training image left for class(es) {names}; "
                         "see the quarantined files listed above and replace them")
    tr_pos, va_pos = stratified_split(ds.labels[good], cfg.val_fraction, cfg.seed)
    train_idx = np.random.default_rng(cfg.seed).permutation(good[tr_pos])
    val_idx = good[va_pos]
    test_idx = np.arange(len(test_files))
    test_ok = np.array([e is None for e in test_cache.errors])
    y_val = ds.labels[val_idx]

    # 1. extract: the frozen bottom, once per image and view, in priority order
    t = time.time()

    def acts(cache, idx, reserve, flip=False):
        f = extract_features(extractor.bottom, cache.images, idx, cfg.batch_size, lambda: budget.expired(reserve),
                             flip=flip, dtype=np.float16 if extractor.top is not None else np.float32)
        return f.values, f.done

    v0 = time.time()
    val, n_val = acts(train_cache, val_idx, final_s)
    rate = n_val / max(time.time() - v0, 1e-3)  # images per second through the bottom
    test, n_test = acts(test_cache, test_idx, final_s)
    train, n_train = acts(train_cache, train_idx, head_s + final_s)
    log(f"activations: {n_val}/{len(val_idx)} val, {n_test}/{len(test_idx)} test, {n_train}/{len(train_idx)} train "
        f"({rate:.1f} img/s)")
    if budget.interrupted and (n_val < len(val_idx) or n_train == 0):
        outputs.ensure_exists()
        log(f"interrupted before any model existed: wrote {outputs.path} with the most frequent class")
        return OnlineResult(outputs.path, out / "model", 0.0, False, len(test_files), budget.elapsed(),
                            ["interrupted before any model existed"])
    if n_val < len(val_idx) or n_train == 0:
        raise UsageError(f"the budget of {cfg.budget_s:.0f}s is too short to extract features for {spec.name} "
                         f"at {size}px; give a larger --budget or a smaller --size")
    if n_train < len(train_idx):
        notes.append(f"the budget allowed features of {n_train} of {len(train_idx)} training images")
    flip_cost = (len(test_idx) + len(val_idx) + n_train) / rate
    ft_epoch = n_train / (rate / FT_COST_RATIO)
    left_after_flips = budget.remaining() - final_s - head_s - flip_cost
    want_flips = extractor.top is None or not cfg.finetune or left_after_flips > MIN_FT_EPOCHS * ft_epoch
    views_val, views_test, views_train = [val], [test], [train[:n_train]]
    if want_flips and n_test == len(test_idx):
        test_f, n_tf = acts(test_cache, test_idx, head_s + final_s, flip=True)
        val_f, n_vf = acts(train_cache, val_idx, head_s + final_s, flip=True)
        train_f, n_trf = acts(train_cache, train_idx[:n_train], head_s + final_s, flip=True)
        if n_tf == len(test_idx) and n_vf == len(val_idx):
            views_val, views_test = [val, val_f], [test, test_f]
        if n_trf == n_train:
            views_train = [train[:n_train], train_f]
        log(f"mirrored views: {n_tf}/{len(test_idx)} test, {n_vf}/{len(val_idx)} val, {n_trf}/{n_train} train")
    else:
        notes.append("mirrored views skipped: the time is worth more to fine-tuning")
    phase("extract", t, None, images_per_s=round(rate, 2), views=len(views_train))
    y_train = ds.labels[train_idx[:n_train]]
    usable = test_ok & (test_idx < n_test)
    if n_test < len(test_idx):
        notes.append(f"{len(test_idx) - n_test} test files got the prior class: no time left to extract them")

    # 2. head on pooled features
    t = time.time()
    if extractor.top is not None:
        pool = lambda views: [_predict(extractor.top, [v]) for v in views]  # noqa: E731  (pooled features)
        p0 = time.time()
        pooled_val = pool(views_val)
        top_rate = sum(len(v) for v in views_val) / max(time.time() - p0, 1e-3)
        pooled_train, pooled_test = pool(views_train), pool(views_test)
    else:
        pooled_val, pooled_train, pooled_test, top_rate = views_val, views_train, views_test, None
    head_time = min(head_s, budget.remaining() - final_s)
    head_end = time.time() + head_time
    head = fit_head(np.concatenate(pooled_train), np.tile(y_train, len(pooled_train)), pooled_val[0], y_val,
                    num_classes, time_s=head_time, expired=lambda: budget.expired(final_s) or time.time() > head_end,
                    seed=cfg.seed)
    val_single = _predict(head.model, pooled_val[:1])
    val_tta = _predict(head.model, pooled_val)
    tta = len(pooled_val) > 1 and accuracy(val_tta, y_val) >= accuracy(val_single, y_val)
    n_views = len(pooled_val) if tta else 1
    val_probs = val_tta if tta else val_single
    phase("head", t, head_s, epochs=head.epochs_run, chosen_epoch=head.chosen_epoch)
    log(f"head: val accuracy {accuracy(val_probs, y_val):.4f} (epoch {head.chosen_epoch}/{head.epochs_run}), "
        f"flip TTA {'on' if tta else 'off'}")

    # the model that is checkpointed, fine-tuned and scored from here on: activations -> probabilities
    if extractor.top is not None:
        a = keras.Input(val.shape[1:])
        scored = keras.Model(a, head.model(extractor.top(a)), name="top_and_head")
    else:
        scored = head.model
    checkpoints = CheckpointManager(out / "checkpoints", k=cfg.keep)
    best = {"val_accuracy": -1.0, "source": None}

    def score(phase_name: str, epoch: int, step: int, probs: np.ndarray | None = None) -> None:
        probs = _predict(scored, views_val[:n_views]) if probs is None else probs
        acc, loss = accuracy(probs, y_val), log_loss(probs, y_val)
        checkpoints.consider(lambda p: scored.save_weights(str(p)), model=spec.name, phase=phase_name,
                             epoch=epoch, step=step, val_accuracy=acc, val_loss=loss)
        if acc > best["val_accuracy"] and (best["source"] is None or not budget.expired(final_s)):
            best.update(val_accuracy=acc, source=f"{phase_name} epoch {epoch}")
            outputs.write(_test_probs(), usable, best["source"])

    def _test_probs() -> np.ndarray:
        probs = np.zeros((len(test_idx), len(labels.class_ids)), np.float32)
        if n_test:
            probs[:n_test] = _predict(scored, views_test[:n_views])
        return probs

    score("head", head.chosen_epoch, head.epochs_run, val_probs)
    log(f"wrote {outputs.path} (from the head, val accuracy {best['val_accuracy']:.4f})")

    # 3. fine-tune the top blocks and the head on the cached activations
    ft_info = {}
    if extractor.top is not None and cfg.finetune and not budget.expired(final_s):
        t = time.time()
        freeze_batch_norm(scored)
        eval_s = sum(len(v) for v in views_val[:n_views]) / top_rate + 0.5 * sum(len(v) for v in views_test[:n_views]) / top_rate
        ft_time = budget.remaining() - final_s
        log(f"fine-tuning the last blocks of {spec.name} for up to {ft_time:.0f}s")
        ft = fine_tune(scored, views_train, y_train, num_classes, ft_time, eval_s,
                       expired=lambda: budget.expired(final_s),
                       on_epoch=lambda e, s: (score("finetune", e, s), log(f"fine-tune epoch {e}: best val accuracy {best['val_accuracy']:.4f}")),
                       seed=cfg.seed, batch_size=cfg.batch_size)
        ft_info = asdict(ft)
        phase("finetune", t, ft_time, **ft_info)
        if ft.epochs_planned == 0:
            notes.append("fine-tuning skipped: not one epoch fits in the time left")
    elif extractor.top is None:
        notes.append(f"fine-tuning skipped: {spec.name} has no split point (only EfficientNet-Lite has one)")

    # finalise: the best checkpoint's weights into the model that is saved
    t = time.time()
    top_entry = checkpoints.best()
    if top_entry is not None:
        scored.load_weights(top_entry["path"])
    val_probs = _predict(scored, views_val[:n_views])
    outputs.ensure_exists()
    model_dir = out / "model"
    model_dir.mkdir(exist_ok=True)
    compose_classifier(extractor.full, head.model).save(model_dir / MODEL_FILE)
    labels.save(model_dir / LABELS_FILE)
    phase("finalise", t, final_s)

    val_acc = accuracy(val_probs, y_val)
    write_report(
        out / "report",
        {
            "config": {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
                       "input_size": size, "cache_dir": str(cache_dir)},
            "environment": environment(),
            "history": {"head": head.history, "head_chosen_epoch": head.chosen_epoch, "finetune": ft_info,
                        "checkpoints": checkpoints.entries},
            "quarantine": quarantine,
            "unreadable_test_files": [{"file": str(f), "reason": e} for f, e in zip(test_files, test_cache.errors) if e],
            "summary": {"budget_s": cfg.budget_s, "wall_s": round(budget.elapsed(), 2),
                        "margin_s": round(budget.remaining(), 2), "val_accuracy": val_acc, "tta": tta,
                        "predictions_from": outputs.written_by, "interrupted": budget.interrupted,
                        "train_images": int(n_train), "val_images": int(len(val_idx)), "notes": notes},
            "timeline": {"phases": phases, "events": log.events},
        },
        confusion_matrix(val_probs.argmax(1), y_val, num_classes),
        ds.class_names,
    )
    timeline_png(out / "report" / "timeline.png", cfg.budget_s, phases, checkpoints.entries, budget.start)
    log(f"done: val accuracy {val_acc:.4f} (predictions from {outputs.written_by}); outputs in {out}")
    return OnlineResult(outputs.path, model_dir, val_acc, tta, len(test_files), budget.elapsed(), notes)


def default_cache_dir() -> Path:
    """``$TIMEBOX_CACHE_DIR`` or ``~/.cache/timebox``."""
    env = os.environ.get("TIMEBOX_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "timebox"

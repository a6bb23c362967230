"""The online run, top to bottom: files -> decoded cache -> frozen features -> head -> predictions.

Everything is sized to the wall-clock budget, counted from the command's start: feature
extraction runs in priority order (val, test, train, then mirrored views for test-time and
training augmentation) and stops where the time reserved for training the head, writing the
outputs and a safety margin begins. Test files that cannot be read still get a row.

Example::

    result = run_online(OnlineConfig(train_dir, test_dir, out, budget_s=300))
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .budget import Budget
from .data.cache import build_cache
from .data.layouts import list_images, read_dataset
from .data.splits import stratified_split
from .errors import UsageError
from .metrics import accuracy, confusion_matrix
from .models.features import extract_features
from .models.heads import compose_classifier
from .models.registry import build_feature_extractor, get_backbone
from .predict import LABELS_FILE, MODEL_FILE, LabelMap, prediction_rows, write_predictions
from .progress import Progress
from .report import environment, write_report
from .train.head import fit_head

FINALISE_S = 8.0  # saving the model, predictions and report (measured ~3 s for EfficientNet-Lite0)


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


@dataclass
class OnlineResult:
    predictions: Path
    model_dir: Path
    val_accuracy: float
    tta: bool
    test_rows: int
    wall_s: float
    notes: list[str] = field(default_factory=list)


def _reserves(budget_s: float) -> tuple[float, float]:
    """(seconds kept for the head, seconds kept for finalising + safety margin)."""
    margin = max(10.0, 0.03 * budget_s)
    head = float(np.clip(0.08 * budget_s, 5.0, 60.0))
    return head, FINALISE_S + margin


def run_online(cfg: OnlineConfig) -> OnlineResult:
    """Train on ``cfg.train_dir`` and predict every file in ``cfg.test_dir`` within ``cfg.budget_s``."""
    budget = Budget(cfg.budget_s)
    log = Progress(budget)
    head_s, final_s = _reserves(cfg.budget_s)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else _default_cache_dir()
    notes: list[str] = []

    ds = read_dataset(cfg.train_dir, cfg.layout)
    test_files = list_images(cfg.test_dir)
    if not test_files:
        raise UsageError(f"{cfg.test_dir}: no files to predict; pass the folder of test images with --test-dir")
    spec = get_backbone(cfg.backbone)
    size = cfg.size or spec.default_size
    log(f"{len(ds.files)} training images in {len(ds.class_ids)} classes ({ds.layout} layout), "
        f"{len(test_files)} test files; backbone {spec.name} at {size}px")

    extractor = build_feature_extractor(spec, size, cfg.weights)
    train_cache = build_cache(ds.files, size, cache_dir, cfg.workers)
    test_cache = build_cache(test_files, size, cache_dir, cfg.workers)
    log("images decoded (cache: %s)" % cache_dir)

    quarantine = [{"file": str(f), "reason": e} for f, e in zip(ds.files, train_cache.errors) if e]
    good = np.array([i for i, e in enumerate(train_cache.errors) if e is None], dtype=np.int64)
    if quarantine:
        log(f"quarantined {len(quarantine)} unreadable training files (see report/quarantine.json)")
    missing = sorted(set(range(len(ds.class_ids))) - set(ds.labels[good].tolist()))
    if missing:
        names = ", ".join(ds.class_names[k] for k in missing)
        raise UsageError(f"{cfg.train_dir}: no readable training image left for class(es) {names}; "
                         "see the quarantined files in the report and replace them")
    tr_pos, va_pos = stratified_split(ds.labels[good], cfg.val_fraction, cfg.seed)
    train_idx = np.random.default_rng(cfg.seed).permutation(good[tr_pos])
    val_idx = good[va_pos]
    test_ok = np.array([e is None for e in test_cache.errors])
    test_idx = np.arange(len(test_files))

    def stop_at(reserve: float):
        return lambda: budget.expired(reserve)

    def features(cache, idx, reserve, flip=False):
        return extract_features(extractor, cache.images, idx, cfg.batch_size, stop_at(reserve), flip=flip)

    val = features(train_cache, val_idx, head_s + final_s)
    test = features(test_cache, test_idx, final_s)
    log(f"features: {val.done}/{len(val_idx)} val, {test.done}/{len(test_idx)} test")
    train = features(train_cache, train_idx, head_s + final_s)
    log(f"features: {train.done}/{len(train_idx)} train")
    if train.done < len(train_idx):
        notes.append(f"the budget allowed features of {train.done} of {len(train_idx)} training images")
    test_flip = features(test_cache, test_idx, head_s + final_s, flip=True)
    val_flip = features(train_cache, val_idx, head_s + final_s, flip=True) if test_flip.done == len(test_idx) else None
    train_flip = features(train_cache, train_idx[: train.done], head_s + final_s, flip=True)
    log(f"mirrored views: {test_flip.done}/{len(test_idx)} test, {train_flip.done}/{train.done} train")

    y_train = ds.labels[train_idx]
    x_fit = np.concatenate([train.values, train_flip.values])
    y_fit = np.concatenate([y_train[: train.done], y_train[: train_flip.done]])
    y_val = ds.labels[val_idx]
    if len(x_fit) == 0 or val.done < len(val_idx):
        raise UsageError(f"the budget of {cfg.budget_s:.0f}s is too short to extract features for {spec.name} "
                         f"at {size}px; give a larger --budget or a smaller --size")
    head = fit_head(x_fit, y_fit, val.values, y_val, len(ds.class_ids), time_s=budget.remaining() - final_s,
                    expired=stop_at(final_s), seed=cfg.seed)
    log(f"head: best val accuracy {head.val_accuracy:.4f} at epoch {head.best_epoch}/{head.epochs_run} "
        f"(planned {head.epochs_planned})")

    val_probs = np.asarray(head.model.predict_on_batch(val.values))
    test_probs = np.zeros((len(test_idx), len(ds.class_ids)), np.float32)
    test_probs[: test.done] = np.asarray(head.model.predict_on_batch(test.values))
    tta = False
    if val_flip is not None and val_flip.done == len(val_idx):
        val_tta = (val_probs + np.asarray(head.model.predict_on_batch(val_flip.values))) / 2
        if accuracy(val_tta, y_val) >= accuracy(val_probs, y_val):
            tta = True
            val_probs = val_tta
            test_probs = (test_probs + np.asarray(head.model.predict_on_batch(test_flip.values))) / 2
    usable = test_ok & (test_idx < test.done)
    if test.done < len(test_idx):
        notes.append(f"{len(test_idx) - test.done} test files got the prior class: no time left to extract them")
    prior = int(np.bincount(y_train, minlength=len(ds.class_ids)).argmax())
    labels = LabelMap(ds.class_ids, ds.class_names, prior, size, spec.name)
    test_root = Path(cfg.test_dir).resolve()
    names = [f.relative_to(test_root).as_posix() for f in test_files]
    pred_path = out / "predictions.csv"
    write_predictions(pred_path, prediction_rows(names, test_probs, usable, labels))
    log(f"wrote {pred_path} ({len(names)} rows, flip TTA {'on' if tta else 'off'})")

    model_dir = out / "model"
    model_dir.mkdir(exist_ok=True)
    compose_classifier(extractor, head.model).save(model_dir / MODEL_FILE)
    labels.save(model_dir / LABELS_FILE)

    val_acc = accuracy(val_probs, y_val)
    unreadable_test = [{"file": str(f), "reason": e} for f, e in zip(test_files, test_cache.errors) if e]
    write_report(
        out / "report",
        {
            "config": {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
                       "input_size": size, "cache_dir": str(cache_dir)},
            "environment": environment(),
            "history": {"head": head.history, "best_epoch": head.best_epoch, "epochs_planned": head.epochs_planned,
                        "step_time_s": head.step_time_s, "stopped_by_deadline": head.stopped_by_deadline},
            "quarantine": quarantine,
            "unreadable_test_files": unreadable_test,
            "summary": {"budget_s": cfg.budget_s, "wall_s": round(budget.elapsed(), 2),
                        "margin_s": round(budget.remaining(), 2), "val_accuracy": val_acc, "tta": tta,
                        "train_images": int(train.done), "val_images": int(len(val_idx)), "notes": notes},
            "timeline": log.events,
        },
        confusion_matrix(val_probs.argmax(1), y_val, len(ds.class_ids)),
        ds.class_names,
    )
    log(f"done: val accuracy {val_acc:.4f}; outputs in {out}")
    return OnlineResult(pred_path, model_dir, val_acc, tta, len(names), budget.elapsed(), notes)


def _default_cache_dir() -> Path:
    env = os.environ.get("TIMEBOX_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "timebox"

"""Fine-tuning from a deeper cut at equal epochs: EfficientNet-Lite0 on trashnet (or flowers5), the
activations of the original and mirrored views cached at block ``cut``, a head fitted on their pooled
features, then ``epochs`` epochs of `timebox.train.finetune.fine_tune` (the schedule `online` uses)
per learning rate; val and test accuracy (both views averaged) after every epoch. At cut 0 (the
image) every batch gets random-resized crops, as in `online`; ``--crop AREA`` gives every batch
random-resized crops of AREA-100% of the cached activations' area at any cut (`online` does not);
``--seed`` seeds fine-tuning's shuffling and views (the split and the head keep seed 0).

    .venv/bin/python bench/depth_epochs.py CUT LR[,LR...] EPOCHS [SIZE [DATASET]] [--seed N] [--crop AREA]
    e.g. 5 1e-3,3e-4 8
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "submission"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from timebox.data.cache import build_cache  # noqa: E402
from timebox.data.layouts import list_images, read_dataset  # noqa: E402
from timebox.data.splits import stratified_split  # noqa: E402
from timebox.metrics import accuracy  # noqa: E402
from timebox.models.features import extract_features  # noqa: E402
from timebox.models.registry import build_extractor, get_backbone  # noqa: E402
from timebox.predict import predict_batches  # noqa: E402
from timebox.score import read_labels  # noqa: E402
from timebox.train.finetune import ScoreEpoch, fine_tune, freeze_batch_norm  # noqa: E402
from timebox.train.head import fit_head  # noqa: E402

from deadline import DATA, SPLITS  # noqa: E402
from timebox.train.augment import random_resized_crop  # noqa: E402


def _predict(model, views):
    """The model's outputs averaged over views, as `online` scores them."""
    return sum(predict_batches(model, v, 256) for v in views) / len(views)


def main(cut: int, lrs: list[float], epochs: int, size: int = 224, dataset: str = "trashnet", seed: int = 0,
         crop: float = 0.0) -> None:
    train_dir, test_dir = (DATA / dataset / d for d in SPLITS[dataset])
    ds, test_files = read_dataset(train_dir), list_images(test_dir)
    cache_dir = Path.home() / ".cache" / "timebox"
    train_cache, test_cache = build_cache(ds.files, size, cache_dir), build_cache(test_files, size, cache_dir)
    good = np.array([i for i, e in enumerate(train_cache.errors) if e is None])
    tr, va = stratified_split(ds.labels[good], 0.15, 0)  # online's split and order (seed 0)
    tr_idx, va_idx = np.random.default_rng(0).permutation(good[tr]), good[va]
    truth, root = read_labels(DATA / dataset / "test_labels.csv"), test_dir.resolve()
    ids = {str(c): i for i, c in enumerate(ds.class_ids)}
    y_test = np.array([ids[truth[f.relative_to(root).as_posix()]] for f in test_files])
    y_train, y_val = ds.labels[tr_idx], ds.labels[va_idx]
    spec = get_backbone("efficientnet-lite0")
    ex = build_extractor(spec, size, "imagenet", cut)
    t = time.time()
    parts = {"val": (train_cache, va_idx), "test": (test_cache, np.arange(len(test_files))), "train": (train_cache, tr_idx)}
    views = {p: [extract_features(ex.bottom, c.images, i, 32, flip=f, dtype=np.float16).values for f in (False, True)]
             for p, (c, i) in parts.items()}
    print(f"cut {cut}: activations {views['val'][0].shape[1:]} extracted in {time.time() - t:.1f}s", flush=True)
    t = time.time()
    pooled_val, pooled_train = _predict(ex.top, views["val"][:1]), np.concatenate([_predict(ex.top, [v]) for v in views["train"]])
    print(f"pooled features in {time.time() - t:.1f}s", flush=True)
    start_weights = ex.full.get_weights()
    for lr in lrs:
        ex.full.set_weights(start_weights)
        head = fit_head(pooled_train, np.tile(y_train, 2), pooled_val, y_val, len(ids), time_s=20, seed=0).model
        a = keras.Input(views["val"][0].shape[1:])
        scored = keras.Model(a, head(ex.top(a)))
        freeze_batch_norm(scored)
        print(f"lr {lr}: head val {accuracy(_predict(scored, views['val']), y_val):.4f} "
              f"test {accuracy(_predict(scored, views['test']), y_test):.4f}", flush=True)
        last = [time.time()]

        def on_epoch(epoch: int, step: int) -> None:
            trained = time.time() - last[0]
            print(f"  cut {cut} lr {lr} epoch {epoch}: trained {trained:.1f}s  val "
                  f"{accuracy(_predict(scored, views['val']), y_val):.4f} test "
                  f"{accuracy(_predict(scored, views['test']), y_test):.4f}", flush=True)
            last[0] = time.time()

        fine_tune(scored, views["train"], y_train, len(ids), time_s=1e9, eval_s=1.0, callbacks=[ScoreEpoch(on_epoch)], lr=lr, max_epochs=epochs, seed=seed,
                  augment=_crops(crop) if crop else random_resized_crop if cut == spec.cuts.image else None)


def _crops(least: float):
    """Random-resized crops covering ``least``-100% of the area."""
    return lambda batch, rng: random_resized_crop(batch, rng, area=(least, 1.0))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("cut", type=int)
    p.add_argument("lrs", type=lambda s: [float(x) for x in s.split(",")])
    p.add_argument("epochs", type=int)
    p.add_argument("size", type=int, nargs="?", default=224)
    p.add_argument("dataset", nargs="?", default="trashnet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop", type=float, default=0.0)
    a = p.parse_args()
    main(a.cut, a.lrs, a.epochs, a.size, a.dataset, a.seed, a.crop)

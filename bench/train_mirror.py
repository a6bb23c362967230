"""Is the training images' mirrored view worth its extraction time in a short refit? EfficientNet-Lite0 on
trashnet at 224 px: the activations at block ``cut`` of the training, val and test images (original and
mirrored views) are cached once in ``--cache FILE``; then, per configuration ``CUT:SECONDS:VIEWS`` and seed,
a 6 s head on the training views' pooled features, and `timebox.train.finetune.fine_tune` (the refit `online`
runs: training and val images, its schedule and learning rate) for SECONDS on VIEWS training views (1: the
original only, 2: and the mirrored one). Prints epochs run and test accuracy (both test views averaged),
and the mean per configuration. Compare a configuration on two views with one on one view given the
seconds that view's extraction takes (in `online`, the head's too: the early head is then the head).

    .venv/bin/python bench/train_mirror.py 12:43:2,12:58:1 [--seeds 0,1,2]
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
from timebox.data.rows import ConcatRows  # noqa: E402
from timebox.data.splits import stratified_split  # noqa: E402
from timebox.metrics import accuracy  # noqa: E402
from timebox.models.features import extract_features  # noqa: E402
from timebox.models.registry import build_extractor, get_backbone  # noqa: E402
from timebox.predict import predict_batches  # noqa: E402
from timebox.score import read_labels  # noqa: E402
from timebox.train.finetune import fine_tune, freeze_batch_norm  # noqa: E402
from timebox.train.head import fit_head  # noqa: E402

from deadline import DATA, SPLITS  # noqa: E402

SPEC = get_backbone("efficientnet-lite0")


def _predict(model, views):
    """The model's outputs averaged over views, as `online` scores them."""
    return sum(predict_batches(model, v, 32) for v in views) / len(views)


def activations(cut: int, cache_file: Path) -> dict[str, np.ndarray]:
    """Both views of every image at block ``cut`` (float16, as `online` caches them) and the labels; from
    ``cache_file`` if it exists, else extracted and saved there. The split is `online`'s (15%, seed 0)."""
    if cache_file.exists():
        return dict(np.load(cache_file))
    train_dir, test_dir = (DATA / "trashnet" / d for d in SPLITS["trashnet"])
    ds, test_files = read_dataset(train_dir), list_images(test_dir)
    cache_dir = Path.home() / ".cache" / "timebox"
    train_cache, test_cache = build_cache(ds.files, 224, cache_dir), build_cache(test_files, 224, cache_dir)
    tr, va = stratified_split(ds.labels, 0.15, 0)
    tr = np.random.default_rng(0).permutation(tr)
    truth = read_labels(DATA / "trashnet" / "test_labels.csv")
    bottom = build_extractor(SPEC, 224, "imagenet", cut).bottom
    arrays = {"y_train": ds.labels[tr], "y_val": ds.labels[va],
              "y_test": np.array([ds.class_ids.index(int(truth[f.name])) for f in test_files])}
    for part, cache, idx in (("train", train_cache, tr), ("val", train_cache, va),
                             ("test", test_cache, np.arange(len(test_files)))):
        for view in (0, 1):
            arrays[f"{part}{view}"] = extract_features(bottom, cache.images, idx, flip=bool(view),
                                                       dtype=np.float16).values
    np.savez(cache_file, **arrays)
    return arrays


def refit_start(top: keras.Model, pooled_train: list[np.ndarray], pooled_val: np.ndarray,
                a: dict[str, np.ndarray], seed: int) -> tuple[keras.Model, keras.Model]:
    """The head (6 s on the pooled training views, val for its epoch) and the model fine-tuned from it: top + head,
    BatchNormalization frozen."""
    keras.utils.set_random_seed(seed)
    head = fit_head(np.concatenate(pooled_train), np.tile(a["y_train"], len(pooled_train)), pooled_val, a["y_val"],
                    6, time_s=6.0, seed=seed).model
    x = keras.Input(a["train0"].shape[1:])
    model = keras.Model(x, head(top(x)))
    freeze_batch_norm(model)
    return head, model


def refit_data(a: dict[str, np.ndarray], n_views: int) -> tuple[list[ConcatRows], np.ndarray]:
    """The refit's training views (training and val images, original then mirrored) and labels."""
    views = [ConcatRows([a[f"train{v}"], a[f"val{v}"]]) for v in range(n_views)]
    return views, np.concatenate([a["y_train"], a["y_val"]])


def main(configs: list[tuple[int, float, int]], seeds: list[int], cache: str) -> None:
    print(f"train_mirror, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}", flush=True)
    for cut, seconds, n_views in configs:
        a = activations(cut, Path(cache.format(cut=cut)))
        top = build_extractor(SPEC, 224, "imagenet", cut).top
        pretrained = top.get_weights()
        train, val, test = ([a[f"{p}0"], a[f"{p}1"]] for p in ("train", "val", "test"))
        pooled_train = [_predict(top, [v]) for v in train[:n_views]]
        pooled_val = _predict(top, val[:1])
        accs = []
        views, labels = refit_data(a, n_views)
        for seed in seeds:
            top.set_weights(pretrained)
            _, model = refit_start(top, pooled_train, pooled_val, a, seed)
            t = time.time()
            result = fine_tune(model, views, labels, 6, seconds, 0.0, seed=seed)
            accs.append(accuracy(_predict(model, test), a["y_test"]))
            print(f"cut {cut} {seconds:.0f}s, {n_views} view(s), seed {seed}: {result.epochs_run} epochs "
                  f"({time.time() - t:.0f}s), test {100 * accs[-1]:.2f}%", flush=True)
        print(f"== cut {cut} {seconds:.0f}s, {n_views} view(s): mean {100 * np.mean(accs):.2f}%", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("configs", help="CUT:SECONDS:VIEWS,... e.g. 12:43:2,12:58:1")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--cache", default="/tmp/train_mirror_{cut}.npz", help="activations file per cut")
    args = p.parse_args()
    try:
        configs = [(int(c), float(s), int(v)) for c, s, v in (x.split(":") for x in args.configs.split(","))]
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"configs {args.configs!r} / seeds {args.seeds!r}: write CUT:SECONDS:VIEWS,... (e.g. 12:43:2,12:58:1) "
                "and SEED,... (e.g. 0,1,2)")
    if any(v not in (1, 2) for _, _, v in configs):
        p.error(f"configs {args.configs!r}: VIEWS is 1 (the original) or 2 (and the mirrored view)")
    main(configs, seeds, args.cache)

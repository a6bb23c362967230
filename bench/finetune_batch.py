"""Fine-tune batch size and peak learning rate at equal time, as a short `online` refit: EfficientNet-Lite0 on
trashnet at 224 px, activations at block ``CUT`` cached by `bench/train_mirror.py`'s ``activations`` (same
file), a 6 s head on the training images' pooled features, then `timebox.train.finetune.fine_tune` for SECONDS
on the training and val images (the original view only, as short runs train), per configuration
``BATCH:LR`` and seed. Prints epochs and test accuracy (both test views averaged) and the mean per
configuration.

    .venv/bin/python bench/finetune_batch.py 12 60 32:3e-4,16:3e-4 [--seeds 0,1,2]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "submission"))

from timebox.metrics import accuracy  # noqa: E402
from timebox.models.registry import build_extractor  # noqa: E402
from timebox.train.finetune import fine_tune  # noqa: E402

from train_mirror import SPEC, _predict, activations, refit_data, refit_start  # noqa: E402


def main(cut: int, seconds: float, configs: list[tuple[int, float]], seeds: list[int], cache: str) -> None:
    print(f"finetune_batch, cut {cut}, {seconds:.0f}s, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
          flush=True)
    a = activations(cut, Path(cache.format(cut=cut)))
    top = build_extractor(SPEC, 224, "imagenet", cut).top
    pretrained = top.get_weights()
    train, val, test = ([a[f"{p}0"], a[f"{p}1"]] for p in ("train", "val", "test"))
    pooled_train, pooled_val = _predict(top, train[:1]), _predict(top, val[:1])
    views, labels = refit_data(a, 1)
    accs: dict[tuple[int, float], list[float]] = {c: [] for c in configs}
    for seed in seeds:
        head, model = refit_start(top, [pooled_train], pooled_val, a, seed)
        head_weights = head.get_weights()
        for batch, lr in configs:  # every configuration from the same head
            top.set_weights(pretrained)
            head.set_weights(head_weights)
            t = time.time()
            result = fine_tune(model, views, labels, 6, seconds, 0.0, seed=seed, batch_size=batch, lr=lr)
            accs[(batch, lr)].append(accuracy(_predict(model, test), a["y_test"]))
            print(f"batch {batch} lr {lr:g} seed {seed}: {result.epochs_run} epochs (the last "
                  f"{result.last_epoch_steps} steps), {time.time() - t:.0f}s, test {100 * accs[(batch, lr)][-1]:.2f}%",
                  flush=True)
    for (batch, lr), values in accs.items():
        print(f"== batch {batch} lr {lr:g}: mean {100 * np.mean(values):.2f}% "
              f"({' '.join(f'{100 * v:.2f}' for v in values)})", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("cut", type=int)
    p.add_argument("seconds", type=float)
    p.add_argument("configs", help="BATCH:LR,... e.g. 32:3e-4,16:3e-4")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--cache", default="/tmp/train_mirror_{cut}.npz", help="activations file per cut (train_mirror's)")
    args = p.parse_args()
    try:
        configs = [(int(b), float(lr)) for b, lr in (c.split(":") for c in args.configs.split(","))]
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"configs {args.configs!r} / seeds {args.seeds!r}: write BATCH:LR,... (e.g. 32:3e-4,16:3e-4) "
                "and SEED,... (e.g. 0,1,2)")
    main(args.cut, args.seconds, configs, seeds, args.cache)

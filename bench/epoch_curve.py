"""Val against test accuracy of every checkpoint an online run kept: is val accuracy a good guide?

    ./run.sh online ... --out OUT --keep 100      # keep every scored epoch
    .venv/bin/python bench/epoch_curve.py OUT --labels ../shared/datasets/trashnet/test_labels.csv

Reads the run's cached activations and head from OUT/state/, loads each checkpoint into the
same model and scores the test views it would have predicted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "submission"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from timebox.data.layouts import list_images  # noqa: E402
from timebox.models import losses  # noqa: E402,F401  (registers the loss the head was compiled with)
from timebox.models.registry import build_extractor, get_backbone  # noqa: E402
from timebox.recovery import RunState  # noqa: E402
from timebox.score import read_labels  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--labels", type=Path, required=True)
    args = p.parse_args()
    state = RunState(args.out / "state")
    run = state.read("run")["info"]["identity"]
    labels = json.loads((args.out / "model" / "labels.json").read_text())
    acts = state.read("activations")
    head_record = state.read("head", load_arrays=False)
    n_views = head_record["info"]["n_views"]
    extractor = build_extractor(get_backbone(run["backbone"]), labels["input_size"], run["weights"])
    head = keras.models.model_from_json(head_record["info"]["architecture"])
    test_views = [acts["arrays"][f"test{i}"] for i in range(n_views)]
    a = keras.Input(test_views[0].shape[1:])
    scored = keras.Model(a, head(extractor.top(a)))
    root = Path(run["test_dir"])
    names = [f.relative_to(root).as_posix() for f in list_images(root)]
    truth = read_labels(args.labels)
    y = np.array([labels["class_ids"].index(int(truth[n])) for n in names])
    manifest = json.loads((args.out / "checkpoints" / "manifest.json").read_text())["checkpoints"]
    print(f"{'phase':>9} {'epoch':>5} {'val acc':>8} {'val loss':>8} {'test acc':>8}")
    for entry in sorted(manifest, key=lambda e: e["time"]):
        scored.load_weights(str(args.out / "checkpoints" / entry["file"]))
        probs = sum(np.asarray(scored.predict(v[: len(y)].astype(np.float32), batch_size=256, verbose=0))
                    for v in test_views)
        acc = float((probs.argmax(1) == y).mean())
        print(f"{entry['phase']:>9} {entry['epoch']:5d} {entry['val_accuracy']:8.4f} {entry['val_loss']:8.4f} {acc:8.4f}")


if __name__ == "__main__":
    main()

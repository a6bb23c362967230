"""Test accuracy of a finished online run's fine-tune checkpoints on each test-time view (original,
mirrored, and zoomed at each fraction given, with its mirror), and of their averages.

    .venv/bin/python bench/view_accuracy.py OUT TEST_DIR TEST_LABELS_CSV [ZOOMS=0.8]
    # e.g. OUT of `./run.sh online` on trashnet (its OUT/state/ must still be there), zooms 0.8,0.9

Answers whether the zoomed views are worth their time before they are made a default.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "submission"))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import timebox.models.losses  # noqa: E402,F401  (registers the head's loss for model_from_json)
from timebox.data.cache import build_cache  # noqa: E402
from timebox.data.layouts import list_images  # noqa: E402
from timebox.models.ensemble_model import View, view_model  # noqa: E402
from timebox.models.features import extract_features  # noqa: E402
from timebox.models.registry import build_extractor, get_backbone  # noqa: E402
from timebox.predict import LabelMap, predict_batches  # noqa: E402
from timebox.recovery import RunState  # noqa: E402
from timebox.score import read_labels  # noqa: E402

out, test_dir, labels_csv = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
zooms = [float(z) for z in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0.8]
lm = LabelMap.load(out / "model" / "labels.json")
files = list_images(test_dir)
truth = read_labels(labels_csv)
y = np.array([lm.class_ids.index(int(truth[f.name])) for f in files])
ex = build_extractor(get_backbone(lm.backbone), lm.input_size, "imagenet")
head = RunState(out / "state").read("head", load_arrays=False)
h = keras.models.model_from_json(head["info"]["architecture"])
a = keras.Input(ex.bottom.output_shape[1:])
scored = keras.Model(a, h(ex.top(a)))
cache = build_cache(files, lm.input_size, Path.home() / ".cache/timebox", None)
idx = np.arange(len(files))
views = [View("original"), View("mirrored", True)] + [v for z in zooms for v in (View(f"z{z}", False, z), View(f"z{z}m", True, z))]
acts = {v.name: extract_features(view_model(ex.bottom, v), cache.images, idx, 32, dtype=np.float16).values for v in views}


def acc(q: np.ndarray) -> float:
    return float((q.argmax(1) == y).mean())


ckpts = sorted((out / "checkpoints").glob("*finetune*.weights.h5")) + sorted((out / "state").glob("finetune-*.weights.h5"))
for ck in ckpts:
    scored.load_weights(str(ck))
    p = {n: predict_batches(scored, x, 256) for n, x in acts.items()}
    line = {n: round(acc(q) * 100, 2) for n, q in p.items()}
    line["orig+mirr"] = round(acc(p["original"] + p["mirrored"]) * 100, 2)
    for z in zooms:
        line[f"all4@{z}"] = round(acc(p["original"] + p["mirrored"] + p[f"z{z}"] + p[f"z{z}m"]) * 100, 2)
        line[f"o+m+z@{z}"] = round(acc(p["original"] + p["mirrored"] + p[f"z{z}"]) * 100, 2)
    print(ck.name, json.dumps(line), flush=True)

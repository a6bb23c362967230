"""Does a judge export give the same labels as timebox's own model? On every image of a folder.

    .venv/bin/python bench/check_export.py flink|modelarts OUT IMAGES

timebox's labels: `predict` with OUT/model (its test-time views and ensemble inside, as exported).
flink: OUT/flink/SavedModel loaded by plain TensorFlow in a fresh process (no timebox import),
fed the images as the judge's default JudgeInput says (decoded and resized by timebox's decoder,
standing in for the judge's Java side). modelarts: OUT/modelarts/model/customize_service.py run
through the local stand-in of ModelArts' base service, one request per image file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "submission"))

import numpy as np  # noqa: E402

from timebox.data.decode import decode_image  # noqa: E402
from timebox.data.layouts import list_images  # noqa: E402
from timebox.export.serving import JudgeInput  # noqa: E402
from timebox.predict import LabelMap, predict_dir  # noqa: E402
from timebox.score import read_labels  # noqa: E402

PLAIN_TF = """
import sys, numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
x = np.load(sys.argv[2])
ids = [int(i) for b in range(0, len(x), 32) for i in np.argmax(serve(input_1=tf.constant(x[b:b + 32]))["output_1"], 1)]
assert "timebox" not in sys.modules
print(" ".join(map(str, ids)))
"""


def flink_labels(out: Path, files: list[Path], size: int) -> list[str]:
    images = np.stack([decode_image(f, size).image for f in files])
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", JudgeInput(size=size).encode(images))
        result = subprocess.run([sys.executable, "-c", PLAIN_TF, str(out / "flink" / "SavedModel"), str(Path(tmp) / "x.npy")],
                                capture_output=True, text=True, check=True)
    return result.stdout.split()


def modelarts_labels(out: Path, files: list[Path], labels: LabelMap) -> list[str]:
    folder = out / "modelarts" / "model"
    sys.path.insert(0, str(ROOT / "submission" / "timebox" / "export" / "modelarts_stub"))
    sys.path.insert(0, str(folder))
    from customize_service import ImageClassifyService

    service = ImageClassifyService("model", str(folder))
    rule = json.loads((folder / "garbage_classify_rule.json").read_text(encoding="utf-8"))
    by_name = {name: cid for cid, name in rule.items()}
    answers = []
    for f in files:
        with open(f, "rb") as content:
            answers.append(by_name[service.inference({"input_img": {f.name: content}})["result"]])
    return answers


def main() -> None:
    judge, out, images = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    labels = LabelMap.load(out / "model" / "labels.json")
    files = list_images(images)
    with tempfile.TemporaryDirectory() as tmp:
        predict_dir(out / "model", images, Path(tmp) / "p.csv", Path(tmp) / "cache")
        timebox = read_labels(Path(tmp) / "p.csv")
    root = images.resolve()
    ours = [timebox[f.relative_to(root).as_posix()] for f in files]
    theirs = flink_labels(out, files, labels.input_size) if judge == "flink" else modelarts_labels(out, files, labels)
    same = sum(a == b for a, b in zip(ours, theirs))
    print(f"{judge} export vs timebox predict: same label on {same}/{len(files)} images")


if __name__ == "__main__":
    main()

"""The Tianchi/Flink 2019 judge export: a TensorFlow SavedModel at ``$MODEL_INFERENCE_PATH/SavedModel``.

The judge's Java side (Flink + Analytics Zoo, model converted by OpenVINO) decodes each image with
OpenCV (BGR), resizes it to a fixed size (the example uses 224 x 224 with bicubic interpolation;
timebox trains on Pillow's antialiased bilinear, a small shift no export can remove), optionally
reverses the channels, subtracts ``meanValues`` and divides by ``scale``, and feeds the result, a
batch of one, to the SavedModel input named ``input_1``. It takes the argmax of the first output as
the class id from its ``class_index.txt``.

:class:`JudgeInput` describes the tensor that arrives at ``input_1``: the run's ``judge_input`` setting
(``--judge-input``), by default the contestants' own Flink template (:data:`FLINK_TEMPLATE`: RGB after the
reverse, mean 127.5 and scale 127.5, 380 x 380). Check it against the Java preprocessing your contest ships;
the export writes the exact values beside the SavedModel, in ``judge_input.txt``.

The SavedModel's ``serving_default`` signature: ``input_1`` (None, size, size, 3) of the judge's
dtype -> ``output_1`` (None, max class id + 1) float32 probabilities, column = contest class id.
It undoes the judge's scaling, resizes to the model's own input size when they differ, and runs
the Keras model (preprocessing included). Written by TensorFlow 2, whose SavedModels a TF 1.x-era
judge stack may not read: another assumption to check.

Example::

    export_flink(Path("OUT/model"), Path(os.environ["MODEL_INFERENCE_PATH"]))
    latency_check(Path(os.environ["MODEL_INFERENCE_PATH"]) / "SavedModel")["p95_ms"]  # < 500
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..fileio import atomic_write_text
from .judge_input import FLINK_TEMPLATE, JudgeInput
from .serving import SIGNATURE, load_classifier, replace_dir, save_serving

SAVED_MODEL = "SavedModel"
JUDGE_INPUT_FILE = "judge_input.txt"
INPUT_NAME, OUTPUT_NAME = "input_1", "output_1"
LATENCY_LIMIT_MS = 500.0


def export_flink(model_dir: Path, dest: Path, judge: JudgeInput = JudgeInput.parse(FLINK_TEMPLATE)) -> Path:
    """Write ``dest/SavedModel`` from the timebox model in ``model_dir``, atomically, and beside it
    ``judge_input.txt`` (what the judge must feed it); returns the SavedModel's path."""
    model, labels = load_classifier(model_dir)
    saved = replace_dir(Path(dest) / SAVED_MODEL,
                        lambda tmp: save_serving(model, labels, judge, tmp, INPUT_NAME, OUTPUT_NAME))
    atomic_write_text(Path(dest) / JUDGE_INPUT_FILE, judge.instructions())
    return saved


def latency_check(saved_model_dir: Path, n: int = 20) -> dict:
    """Per-image latency of the SavedModel in this process, batch of 1: first call and p50/p95/max of ``n`` more, ms."""
    serve = tf.saved_model.load(str(saved_model_dir)).signatures[SIGNATURE]
    (name, spec), = serve.structured_input_signature[1].items()
    image = tf.zeros((1, *spec.shape[1:]), spec.dtype)
    times = [_timed(lambda: serve(**{name: image})) for _ in range(n + 1)]
    ms = np.array(times[1:]) * 1000
    return {"n": n, "first_ms": round(times[0] * 1000, 1), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "max_ms": round(float(ms.max()), 1),
            "limit_ms": LATENCY_LIMIT_MS}


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start

"""The Huawei ModelArts 2019 judge export: the ``model/`` folder a ModelArts TensorFlow model is made of.

``dest/model/`` holds, flat (the ModelArts model package layout for TensorFlow):

- ``saved_model.pb`` + ``variables/``: signature ``serving_default``, ``input_img`` (None, S, S, 3)
  uint8 RGB at the model's input size S -> ``output_score`` probabilities, column = contest class id;
- ``customize_service.py``: the inference code (a ``TfServingBaseService`` subclass with
  ``_preprocess``, ``_inference``, ``_postprocess``); it decodes each image with timebox's own
  decoder (copied beside it as ``timebox_decode.py``, so it is exactly training's decode and resize);
- ``garbage_classify_rule.json``: ``{"<id>": "<name>"}``, the contest's file or one made from labels.json;
- ``labels.json``: timebox's class map (the class given to an unreadable image);
- ``config.json``: model type, runtime, API (POST multipart field ``input_img``, a file; response
  ``{"result": "<name>"}``, the rule file's name of the top class), metrics and pip dependencies;
- ``metric.json``: ``{"accuracy": <val accuracy>}``, timebox's own val split.

Assumptions to check against the contest's instructions: the runtime ``tf2.1-python3.7`` (a
TensorFlow 2 runtime; the SavedModel is written by this machine's TF 2 and loaded with
``tf.saved_model.load``), the request data ModelArts hands ``_preprocess`` (``{"input_img":
{"<file name>": <file object>}}``), and metric.json's shape.

Example::

    export_modelarts(Path("OUT/model"), Path("OUT/modelarts"), val_accuracy=0.93,
                     rule_json=Path("train_data/../garbage_classify_rule.json"))
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..data import decode
from ..errors import UsageError
from ..predict import LABELS_FILE, LabelMap
from .serving import JudgeInput, load_classifier, replace_dir, save_serving

MODEL = "model"
RULE_FILE = "garbage_classify_rule.json"
INPUT_NAME, OUTPUT_NAME = "input_img", "output_score"
RUNTIME = "tf2.1-python3.7"
SERVICE_TEMPLATE = Path(__file__).with_name("customize_service.py")


def export_modelarts(model_dir: Path, dest: Path, val_accuracy: float, rule_json: Path | None = None) -> Path:
    """Write ``dest/model/`` from the timebox model in ``model_dir``, atomically; returns its path."""
    model, labels = load_classifier(model_dir)
    rule = rule_names(labels, rule_json)
    judge = JudgeInput(size=labels.input_size, dtype="uint8")

    def build(tmp: Path) -> None:
        save_serving(model, labels, judge, tmp, INPUT_NAME, OUTPUT_NAME)
        shutil.copyfile(SERVICE_TEMPLATE, tmp / "customize_service.py")
        shutil.copyfile(decode.__file__, tmp / "timebox_decode.py")
        shutil.copyfile(Path(model_dir) / LABELS_FILE, tmp / LABELS_FILE)
        _write_json(tmp / RULE_FILE, rule)
        _write_json(tmp / "config.json", model_config(val_accuracy))
        _write_json(tmp / "metric.json", {"accuracy": float(val_accuracy)})

    return replace_dir(Path(dest) / MODEL, build)


def _write_json(path: Path, obj) -> None:
    """A plain write (the folder is swapped in whole), so the file gets the usual world-readable mode."""
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def rule_names(labels: LabelMap, rule_json: Path | None = None) -> dict[str, str]:
    """``{"id": "name"}``: the contest's rule file (it must name every class) or, without one, labels'."""
    if rule_json is None:
        return {str(i): name for i, name in sorted(zip(labels.class_ids, labels.class_names))}
    path = Path(rule_json)
    try:
        rule = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the label rule file ({exc}); pass the contest's {RULE_FILE}") from exc
    missing = [i for i in labels.class_ids if not isinstance(rule, dict) or str(i) not in rule]
    if missing:
        raise UsageError(f"{path}: no names for class ids {missing}; it must map every id to a name, "
                         f'like {{"0": "recyclable/cardboard"}}')
    return {str(k): str(v) for k, v in rule.items()}


def model_config(val_accuracy: float) -> dict:
    """config.json: TensorFlow model, one POST / API (file ``input_img`` -> ``{"result": name}``), deps."""
    return {
        "model_algorithm": "image_classification",
        "model_type": "TensorFlow",
        "runtime": RUNTIME,
        "metrics": {"accuracy": float(val_accuracy)},
        "apis": [{
            "protocol": "http",
            "url": "/",
            "method": "post",
            "request": {"Content-type": "multipart/form-data",
                        "data": {"type": "object", "properties": {"input_img": {"type": "file"}},
                                 "required": ["input_img"]}},
            "response": {"Content-type": "application/json",
                         "data": {"type": "object", "properties": {"result": {"type": "string"}},
                                  "required": ["result"]}},
        }],
        "dependencies": [{"installer": "pip", "packages": [
            {"package_name": "numpy", "package_version": "", "restraint": ""},
            {"package_name": "Pillow", "package_version": "", "restraint": ""},
        ]}],
    }

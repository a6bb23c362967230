"""ModelArts inference service for a timebox model; export_modelarts copies it verbatim into model/.

ModelArts calls ``inference(data)`` = ``_postprocess(_inference(_preprocess(data)))`` with
``data = {"input_img": {"<file name>": <file object>}}`` and answers the request with the result,
``{"result": "<name>"}``: the name in garbage_classify_rule.json of the top class.
Images are decoded exactly as timebox trained on them, by timebox's own decoder (timebox_decode.py,
copied beside this file, which decodes a JPEG at a reduced scale); an unreadable image gets labels.json's most
frequent training class. An upload over MAX_UPLOAD_BYTES is refused (ValueError naming it), read in blocks.
"""

import importlib.util
import io
import json
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf
from model_service.tfserving_model_service import TfServingBaseService

INPUT, OUTPUT = "input_img", "output_score"
MAX_UPLOAD_BYTES = 50_000_000  # one image upload larger than this is refused: no photo needs more
READ_BLOCK = 1 << 20  # uploads are copied to disk in blocks of this many bytes


class ImageClassifyService(TfServingBaseService):
    """One uploaded image -> the name of its class."""

    def __init__(self, model_name, model_path):
        self.model_name, self.model_path = model_name, model_path
        self.serve = tf.saved_model.load(model_path).signatures["serving_default"]
        self.input_size = int(self.serve.structured_input_signature[1][INPUT].shape[1])
        self.decoder = _load_module(os.path.join(model_path, "timebox_decode.py"))
        self.names = _read_json(os.path.join(model_path, "garbage_classify_rule.json"))
        labels = _read_json(os.path.join(model_path, "labels.json"))
        self.fallback_id = labels["class_ids"][labels["prior_class"]]

    def _preprocess(self, data):
        """Decode every file of the ``input_img`` field: uint8 RGB images and whether each was readable."""
        decoded = [self._decode(name, content) for name, content in data[INPUT].items()]
        if not decoded:
            raise ValueError(f"no file in the request's {INPUT} field")
        blank = np.zeros((self.input_size, self.input_size, 3), np.uint8)
        return {"images": np.stack([blank if d is None else d for d in decoded]),
                "usable": [d is not None for d in decoded]}

    def _decode(self, name, content):
        fd, path = tempfile.mkstemp(suffix=".image")
        try:
            with os.fdopen(fd, "wb") as f:
                _copy_capped(name, content if hasattr(content, "read") else io.BytesIO(content), f)
            decoded = self.decoder.decode_image(path, self.input_size)
            if decoded.error == self.decoder.TRUNCATED:  # as timebox predicts a truncated test file: from its part
                decoded = self.decoder.decode_truncated(path, self.input_size)
            return decoded.image
        finally:
            os.unlink(path)

    def _inference(self, data):
        """Contest class id per image (column of the top score; the fallback class if unreadable)."""
        scores = self.serve(**{INPUT: tf.constant(data["images"])})[OUTPUT].numpy()
        return [int(np.argmax(s)) if ok else self.fallback_id for s, ok in zip(scores, data["usable"])]

    def _postprocess(self, data):
        names = [self.names[str(i)] for i in data]
        return {"result": names[0] if len(names) == 1 else names}


def _copy_capped(name, source, out):
    """Copy the upload ``source`` to ``out`` in blocks; ValueError as soon as it passes MAX_UPLOAD_BYTES."""
    copied = 0
    while True:
        block = source.read(min(READ_BLOCK, MAX_UPLOAD_BYTES + 1 - copied))
        if not block:
            return
        copied += len(block)
        if copied > MAX_UPLOAD_BYTES:
            raise ValueError(f"upload {name!r} is over the service's cap of {MAX_UPLOAD_BYTES / 1e6:g} MB; "
                             "send a smaller image (a photo needs a few MB)")
        out.write(block)


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _load_module(path):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

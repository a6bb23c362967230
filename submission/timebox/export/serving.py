"""What the judges' exports share: the input a judge feeds, a SavedModel that undoes it, atomic folders.

A :class:`~timebox.export.judge_input.JudgeInput` says what tensor the judge feeds (size, channel order, dtype,
value range, mean/std). :func:`save_serving` writes a SavedModel whose one signature turns that tensor back
into the uint8 RGB images the Keras model was trained on (resizing if the sizes differ) and
returns probabilities in contest-id order: output column ``k`` is the class whose contest id is
``k`` (ids that no class has get probability 0), so the judge's argmax is the contest id.
:func:`replace_dir` rewrites an export folder so that a complete one always exists.

Example::

    model, labels = load_classifier(out / "model")
    judge = JudgeInput(size=224, channels="BGR", mean=(103.9, 116.8, 123.7))
    replace_dir(dest / "SavedModel", lambda tmp: save_serving(model, labels, judge, tmp, "input_1", "output_1"))
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import tensorflow as tf

from ..errors import UsageError
from ..predict import LABELS_FILE, MODEL_FILE, LabelMap
from .judge_input import JudgeInput

if TYPE_CHECKING:
    import keras

SIGNATURE = "serving_default"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>
_NO_EXCHANGE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})  # the filesystem has none


def decode_judge_input(judge: JudgeInput, x: tf.Tensor) -> tf.Tensor:
    """The inverse of ``judge.encode``, in TensorFlow: the judge's tensor -> float32 RGB pixels in 0..255."""
    x = tf.cast(x, tf.float32) * tf.constant(judge.std, tf.float32) + tf.constant(judge.mean, tf.float32)
    if judge.channels == "BGR":
        x = tf.reverse(x, axis=[-1])
    return x * (255.0 / judge.value_max)


def load_classifier(model_dir: Path) -> tuple["keras.Model", LabelMap]:
    """(keras model, LabelMap) of a timebox model folder, or a UsageError naming what is missing."""
    from ..models.registry import load_model

    model_dir = Path(model_dir)
    for name in (MODEL_FILE, LABELS_FILE):
        if not (model_dir / name).is_file():
            raise UsageError(f"{model_dir / name}: missing; pass the model/ folder an `online` run wrote")
    return load_model(model_dir / MODEL_FILE), LabelMap.load(model_dir / LABELS_FILE)


def contest_columns(class_ids: list[int]) -> np.ndarray:
    """For each contest id 0..max, the internal class index holding it, or len(class_ids) (a zero column)."""
    if len(set(class_ids)) != len(class_ids) or min(class_ids) < 0:
        raise UsageError(f"class ids {class_ids}: must be distinct and >= 0; check class_index.txt or the label files")
    columns = np.full(max(class_ids) + 1, len(class_ids), np.int32)
    columns[np.asarray(class_ids)] = np.arange(len(class_ids), dtype=np.int32)
    return columns


class ServingModule(tf.Module):
    """The Keras model behind one signature: judge tensor ``input_name`` -> ``output_name`` probabilities."""

    def __init__(self, model, labels: LabelMap, judge: JudgeInput, input_name: str, output_name: str):
        super().__init__()
        self.model = model
        self.size = int(model.input_shape[1])
        self.columns = tf.constant(contest_columns(labels.class_ids))
        self.judge, self.output_name = judge, output_name
        spec = tf.TensorSpec((None, judge.size, judge.size, 3), judge.dtype, name=input_name)
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = decode_judge_input(self.judge, images)
        if self.judge.size != self.size:
            pixels = tf.image.resize(pixels, (self.size, self.size), method="bilinear", antialias=True)
        probs = self.model(tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8), training=False)
        padded = tf.concat([probs, tf.zeros_like(probs[:, :1])], axis=1)
        return {self.output_name: tf.gather(padded, self.columns, axis=1)}


def save_serving(model, labels: LabelMap, judge: JudgeInput, path: Path, input_name: str, output_name: str) -> None:
    """Write the SavedModel of :class:`ServingModule` to ``path`` (signature ``serving_default``)."""
    module = ServingModule(model, labels, judge, input_name, output_name)
    tf.saved_model.save(module, str(path), signatures={SIGNATURE: module.serve.get_concrete_function()})


def replace_dir(dest: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder with ``build(tmp)`` beside ``dest``, then swap it in.

    Rule: at every instant ``dest`` is the complete old folder or the complete new one (one atomic
    rename-exchange; a first export is one rename). A failing ``build`` leaves ``dest`` as it was. Temp
    folders carry their writer's PID, and a call removes only those of dead processes. Where the filesystem
    has no rename-exchange (not Linux, NFS), the swap is two renames (old aside, new in): a kill between
    them leaves the old folder as ``.NAME.old-PID-*``, which the next call puts back first.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _restore_or_clean(dest)
    tmp = _aside(dest, "tmp")
    try:
        tmp.mkdir()
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = _swap_in(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def _aside(dest: Path, kind: str) -> Path:
    """A fresh sibling name ``.NAME.KIND-PID-RANDOM``: hidden, unique, and naming its writer's process."""
    return dest.parent / f".{dest.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _swap_in(tmp: Path, dest: Path) -> Path | None:
    """Make the folder ``tmp`` be ``dest``; returns where the old ``dest`` now is (None if there was none)."""
    if not os.path.lexists(dest):
        try:
            os.rename(tmp, dest)
            return None
        except OSError as e:  # another run sharing the folder made ``dest`` since: swap with its folder instead
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if _exchange(tmp, dest):
        return tmp
    old = _aside(dest, "old")
    os.replace(dest, old)
    os.replace(tmp, dest)
    return old


@functools.cache
def _renameat2():
    """libc's ``renameat2`` (Linux, glibc 2.28+), or None."""
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (RENAME_EXCHANGE); False where the system has no such step."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _restore_or_clean(dest: Path) -> None:
    """Put back an old folder a killed two-rename swap left aside; remove the leftovers of dead writers only."""
    for old in sorted(dest.parent.glob(f".{dest.name}.old-*")):
        if _writer_alive(old):
            continue
        if not dest.exists():
            os.replace(old, dest)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in dest.parent.glob(f".{dest.name}.tmp-*"):
        if not _writer_alive(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _writer_alive(folder: Path) -> bool:
    """Whether the process named in ``.NAME.KIND-PID[-RANDOM]`` still runs (on this machine)."""
    pid = folder.name.rsplit(".", 1)[-1].split("-")[1]
    if not pid.isdigit() or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True

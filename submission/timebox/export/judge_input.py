"""The tensor a judge feeds the exported model, as a setting (``judge_input``, ``--judge-input``).

Written as ``key=value`` pairs joined by commas; keys left out keep :data:`FLINK_TEMPLATE`'s values::

    size=380,channels=RGB,mean=127.5,std=127.5,dtype=float32        # the default
    size=224,channels=BGR,mean=103.9/116.8/123.7                     # per-channel mean, in channel order

``size``: the judge's image size (the export resizes to the model's own); ``channels``: RGB or BGR (the order of
the last axis); ``mean``/``std`` (``scale`` is the same as ``std``): one value or three joined by ``/``;
``value_max``: 255 when pixels are 0..255 before mean and std, 1 when 0..1; ``dtype``: float32 or uint8.
No TensorFlow here: the command line checks the setting before it loads.

Example::

    judge = JudgeInput.parse("size=224,channels=BGR")
    judge.encode(images)        # what the judge feeds for uint8 RGB images at 224 px
    judge.instructions()        # the values the Java side must use (written as judge_input.txt)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:  # numpy is imported where encode runs: the command line reads this module at every start
    import numpy as np

# The contestants' own Flink code (LCFractal/Tianchi_garbage, RunZoo3.java): OpenCV decodes BGR, the channels are
# reversed (RGB), mean 127.5 and scale 127.5 per channel, 380 x 380.
FLINK_TEMPLATE = "size=380,channels=RGB,mean=127.5,std=127.5,dtype=float32"
_ALIASES = {"scale": "std"}


@dataclass(frozen=True)
class JudgeInput:
    """The tensor a judge feeds: ``(pixel * value_max / 255 - mean) / std`` per channel, batch of images.

    ``pixel`` is the 0..255 RGB value after the judge's own decode and resize to ``size`` x ``size``;
    ``channels`` is the order of the last axis; ``dtype`` the tensor's type.
    """

    size: int = 224
    channels: str = "RGB"  # "RGB" | "BGR"
    dtype: str = "float32"  # "float32" | "uint8"
    value_max: float = 255.0  # 255.0: values 0..255; 1.0: values 0..1
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # in `channels` order, in the value range
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        if self.channels not in ("RGB", "BGR"):
            raise UsageError(f"judge input channels {self.channels!r}: use 'RGB' or 'BGR'")
        if self.dtype not in ("float32", "uint8"):
            raise UsageError(f"judge input dtype {self.dtype!r}: use 'float32' or 'uint8'")
        if self.size < 1 or self.value_max <= 0 or len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise UsageError(f"judge input {self}: size, value_max and std must be positive, mean and std 3 values")

    @classmethod
    def parse(cls, text: str) -> "JudgeInput":
        """The judge input ``text`` gives (see the module's doc), over :data:`FLINK_TEMPLATE`; a UsageError
        naming the pair at fault otherwise."""
        return _fold(_TEMPLATE, text)

    def spec(self) -> str:
        """This judge input as :meth:`parse` reads it."""
        def number(x: float) -> str:
            return f"{x:g}"

        def triple(t: tuple) -> str:
            return number(t[0]) if len(set(t)) == 1 else "/".join(map(number, t))

        return (f"size={self.size},channels={self.channels},mean={triple(self.mean)},std={triple(self.std)},"
                f"value_max={number(self.value_max)},dtype={self.dtype}")

    def instructions(self) -> str:
        """What the judge's side must do to each image, exactly (the text of ``judge_input.txt``)."""
        return (f"judge_input: {self.spec()}\n"
                f"The SavedModel's input_1 takes a batch of {self.size} x {self.size} x 3 {self.dtype} images:\n"
                f"1. decode the image and resize it to {self.size} x {self.size};\n"
                f"2. put its channels in {self.channels} order;\n"
                f"3. scale the 0..255 values to 0..{self.value_max:g};\n"
                f"4. per channel ({'/'.join(self.channels)}), subtract mean {'/'.join(f'{m:g}' for m in self.mean)} "
                f"and divide by std (scale) {'/'.join(f'{s:g}' for s in self.std)};\n"
                f"5. feed it as {self.dtype}{' (rounded)' if self.dtype == 'uint8' else ''}.\n"
                "In OpenCV-based Java code (Analytics Zoo, OpenVINO): the image decodes as BGR, so "
                f"ifReverseInputChannels = {'true' if self.channels == 'RGB' else 'false'}, meanValues = "
                f"{{{', '.join(f'{m:g}' for m in self.mean)}}}, scale = {self.std[0]:g}"
                f"{'' if len(set(self.std)) == 1 else ' (per channel: ' + '/'.join(f'{s:g}' for s in self.std) + ')'}"
                f", inputShape = {{1, {self.size}, {self.size}, 3}}.\n")

    def encode(self, images: np.ndarray) -> np.ndarray:
        """What the judge feeds for uint8 RGB images already at ``size``: the forward transform."""
        import numpy as np

        x = np.asarray(images, np.float32) * np.float32(self.value_max / 255.0)
        if self.channels == "BGR":
            x = x[..., ::-1]
        x = (x - np.float32(self.mean)) / np.float32(self.std)
        return np.rint(x).astype(np.uint8) if self.dtype == "uint8" else x.astype(np.float32)


def _fold(judge: JudgeInput, text: str) -> JudgeInput:
    """``judge`` with the pairs of ``text`` laid over it."""
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (s.strip() for s in pair.partition("="))
        key = _ALIASES.get(key, key)
        if not sep or key not in _KEYS:
            raise UsageError(f"judge input {text!r}: {pair!r} is not key=value with a key among "
                             f"{', '.join(sorted(_KEYS | set(_ALIASES)))}")
        judge = replace(judge, **{key: _value(key, value, text)})
    return judge


def _value(key: str, value: str, text: str):
    """``value`` as the type of field ``key``."""
    try:
        if key == "size":
            return int(value)
        if key in ("mean", "std"):
            parts = tuple(float(v) for v in value.split("/"))
            if len(parts) not in (1, 3):
                raise ValueError
            return parts * 3 if len(parts) == 1 else parts
        if key == "value_max":
            return float(value)
        return value.upper() if key == "channels" else value
    except ValueError:
        raise UsageError(f"judge input {text!r}: {key}={value!r} is not "
                         f"{'a whole number' if key == 'size' else 'a number (or three joined by /)'}") from None


_KEYS = {f.name for f in fields(JudgeInput)}
_TEMPLATE = _fold(JudgeInput(), FLINK_TEMPLATE)


def check_judge_input(text: str) -> str:
    """``text`` if it parses (the setting's check)."""
    JudgeInput.parse(text)
    return text

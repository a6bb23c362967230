"""``./run.sh pretrain``: exit 0 done, 2 bad usage or input, 1 internal error."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from timebox.cli import duration_arg, verbose_flag
from timebox.console import quiet, tensorflow_quietly
from timebox.errors import UsageError, exit_code
from timebox.pretrained import MODELS_DIR


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.sh pretrain", description="Pretraining offline: an online run on all your images (a val split "
        "kept to choose checkpoints), sized to --budget, written as submission/models/NAME/, which `online` then "
        "starts from (--init auto) and `package` ships.")
    p.add_argument("--data", type=Path, required=True, help="labelled images, in any layout online reads")
    p.add_argument("--budget", type=duration_arg, required=True, help="wall-clock budget: 30m, 8h")
    p.add_argument("--out", type=Path, required=True, help="working folder (the run, its checkpoints and report)")
    p.add_argument("--name", default=None, help="the model's folder under submission/models/ (default: --data's "
                   "folder name)")
    p.add_argument("--config", type=Path, default=None, help="tuned settings (e.g. tune's best_config.json)")
    p.add_argument("--resume", action="store_true", help="continue the run killed in --out, in what is left of "
                   "its budget")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the images kept to score and choose "
                   "checkpoints (default: 0.1)")
    p.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="where NAME/ goes (default: %(default)s)")
    verbose_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet(args.verbose)
    return exit_code(lambda: _pretrain(args))


def _pretrain(args: argparse.Namespace) -> int:
    tensorflow_quietly()
    from .pretrain import PretrainConfig, run_pretrain

    name = args.name or args.data.resolve().name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise UsageError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    result = run_pretrain(PretrainConfig(args.data, args.budget, args.out, name, config=args.config,
                                         resume=args.resume, val_fraction=args.val_fraction,
                                         models_dir=args.models_dir))
    print(f"pretrained model: {result.folder} (val accuracy {100 * result.val_accuracy:.2f}%); `online` "
          f"starts from it by default (--init auto)")
    return 0

"""``./run.sh tune``: exit 0 done, 2 bad usage or input, 1 internal error."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from timebox.cli import duration_arg, verbose_flag
from timebox.console import quiet
from timebox.config import SHIPPED_CONFIG
from timebox.errors import UsageError, exit_code

from .space import DEFAULT_SPACE


def _count(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of images, or 'all'")
    return int(text)


def _target(text: str) -> tuple[float, int]:
    budget, _, images = text.partition(":")
    if not images.isdigit() or int(images) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give BUDGET:IMAGES, the online run's budget and training "
                                         "images, such as 3h:6000")
    return duration_arg(budget), int(images)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.sh tune", description="Offline tuning: many short online runs on a stratified subsample that "
        "mirrors the judge (1,000 train / 300 held out), successive halving by wall-clock time with Optuna, within "
        "--budget. Writes OUT/leaderboard.csv and .md, OUT/best_config.json (for online/pretrain/package "
        "--config) and plots (PNG).")
    p.add_argument("--data", type=Path, required=True, help="labelled images, in any layout online reads")
    p.add_argument("--budget", type=duration_arg, required=True, help="wall-clock budget of the whole search: 30m, 1h")
    p.add_argument("--out", type=Path, required=True, help="tuning folder; the same folder again resumes the search")
    p.add_argument("--space", type=Path, default=DEFAULT_SPACE, help="search space (TOML; default: %(default)s)")
    p.add_argument("--storage", default=None, help="postgresql://user@host/db to share the study between machines "
                   "(default: Optuna's journal file in --out, one machine)")
    p.add_argument("--study", default="tune", help="study name; workers with the same --storage and --study join "
                   "one search (default: %(default)s)")
    p.add_argument("--train", type=_count, default=1000, help="training images drawn, or 'all' (default: 1000)")
    p.add_argument("--val", type=int, default=300, help="held-out images each trial predicts (default: 300)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsample and the trials (default: 0)")
    p.add_argument("--min-trial", type=duration_arg, default=None,
                   help="budget of the first rung's trials (default: budget/30, between 30s and 5m)")
    p.add_argument("--target", type=_target, default=None,
                   help="the online run the search stands for, as BUDGET:IMAGES (a judge's 3h:6000): the top "
                        "rung's trials get its seconds per training image, the rungs below 1/eta of that "
                        "(default: rungs from --min-trial)")
    p.add_argument("--warm-up", type=duration_arg, default=60.0,
                   help="a plain online run first, decoding and extracting the images once for every trial "
                        "(0 for none; default: 60s)")
    p.add_argument("--eta", type=int, default=3, help="each rung keeps 1/eta of the configurations and gives them "
                   "eta times the time (default: 3)")
    p.add_argument("--trial-command", default=None, help=argparse.SUPPRESS)  # tests: a stand-in for online
    p.add_argument("--apply", action="store_true", help=f"also write the best settings to {SHIPPED_CONFIG}, which "
                   "online and package read by default")
    verbose_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet(args.verbose)
    return exit_code(lambda: _tune(args))


def _tune(args: argparse.Namespace) -> int:
    from .search import TuneConfig, run_tune

    if args.eta < 2:
        raise UsageError(f"--eta {args.eta}: it must be at least 2")
    if args.target and args.min_trial:
        raise UsageError("--target and --min-trial both set the rungs' budgets: give one")
    cfg = TuneConfig(args.data, args.budget, args.out, space=args.space, storage=args.storage, study=args.study,
                     n_train=args.train, n_val=args.val, seed=args.seed, min_trial_s=args.min_trial,
                     target=args.target, warmup_s=args.warm_up, eta=args.eta,
                     apply_to=SHIPPED_CONFIG if args.apply else None,
                     **({"trial_command": tuple(shlex.split(args.trial_command))} if args.trial_command else {}))
    result = run_tune(cfg)
    print(f"leaderboard: {result.leaderboard}; best settings: {args.out / 'best_config.json'}")
    return 0

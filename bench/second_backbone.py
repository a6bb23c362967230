"""Does a second backbone's head pay for its time? `online` with and without it, side by side.

    .venv/bin/python bench/second_backbone.py [--budget 8m] [--pairs 1] [trashnet flowers5]

For each dataset, ``--pairs`` pairs of runs (``--no-refit``: a refit run has no vote), interleaved:
``--second-backbone none``, then ``auto`` (efficientnet-lite1 beside the default efficientnet-lite0).
Prints for each run: test accuracy of the output, budget used, fine-tune epochs, what the output
is, and for ``auto`` the second head's time, val and test accuracy and its weight in the vote.
Also, from the run's saved candidate probabilities, the test accuracy of the plain average of the
fine-tune's last epoch (original view) and the second head: what the vote could have been, not
what timebox chose.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deadline import DATA, SPLITS, run  # noqa: E402  (bench/deadline.py: one `online` run and its figures)
from ensemble import test_scorer  # noqa: E402  (bench/ensemble.py)

from timebox.budget import parse_duration  # noqa: E402  (deadline put submission/ on the path)
from timebox.data.cache import build_cache  # noqa: E402
from timebox.data.layouts import list_images  # noqa: E402


SIZE = 224  # efficientnet-lite0's input size, that of the runs


def second_figures(report: Path, dataset: str) -> dict:
    """The second head's phase, its candidate's val/test accuracy and weight, and the plain average of it with
    the fine-tune's last epoch on test (from the report's saved probabilities)."""
    phases = json.loads((report / "timeline.json").read_text())["phases"]
    phase = next((p for p in phases if p["phase"] == "second backbone"), None)
    ensemble = json.loads((report / "history.json").read_text())["ensemble"]
    fig = {"phase_s": phase["actual_s"] if phase else None, "used": bool(phase and phase.get("used"))}
    cands = [c for c in ensemble.get("candidates", []) if c["source"].endswith(" head")]
    if not cands or not (report / "ensemble_test_probs.npz").exists():
        return fig
    test_acc = test_scorer(report.parent, dataset)
    test = np.load(report / "ensemble_test_probs.npz")
    second = next(k for k in test.files if k.startswith(cands[0]["source"]))
    last = max((k for k in test.files if k.startswith("finetune epoch ") and k.endswith("(original)")),
               key=lambda k: int(k.split()[2]))
    fig.update(val=cands[0]["val_accuracy"], weight=cands[0]["weight"],
               test=test_acc(test[second]), last=last, last_test=test_acc(test[last]),
               average_test=test_acc(test[last] + test[second]))
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datasets", nargs="*", default=list(SPLITS))
    p.add_argument("--budget", default="8m")
    p.add_argument("--pairs", type=int, default=1)
    args = p.parse_args()
    budget_s = parse_duration(args.budget)
    cache_dir = Path(tempfile.mkdtemp())
    for dataset in args.datasets:  # decoded before the runs: neither side of a pair pays for it
        for part in SPLITS[dataset]:
            build_cache(list_images(DATA / dataset / part), SIZE, cache_dir)
    print(f"second backbone bench, budget {budget_s:.0f}s")
    print(f"{'dataset':>9} {'second':>6} {'test acc':>8} {'used':>6} {'epochs':>6}  output / second head")
    for dataset in args.datasets:
        for _ in range(args.pairs):
            for choice in ("none", "auto"):
                r = run(dataset, budget_s, False, cache_dir, ("--second-backbone", choice, "--no-refit"))
                summary = json.loads((r["report"] / "summary.json").read_text())
                history = json.loads((r["report"] / "history.json").read_text())
                epochs = history.get("finetune", {}).get("epochs_run", 0)
                line = (f"{dataset:>9} {choice:>6} {100 * r['test_accuracy']:7.2f}% {100 * r['used']:5.1f}% "
                        f"{epochs:>6}  {summary['predictions_from']}")
                if choice == "auto":
                    f = second_figures(r["report"], dataset)
                    line += f" / {f['phase_s']}s, used {f['used']}"
                    if "val" in f:
                        line += (f", val {f['val']:.4f}, test {f['test']:.4f}, weight {f['weight']:.2f}; "
                                 f"{f['last']} test {f['last_test']:.4f}, averaged with it {f['average_test']:.4f}")
                print(line, flush=True)


if __name__ == "__main__":
    main()

"""What the benchmarks share: one `./run.sh online` run on a training folder, scored on flowers5's test split.

    result = online_run(train, out, "4m", seed=0, cache=cache, flags=["--config", "c.json"])
    result.accuracy, result.macro_accuracy, result.wall_s
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "submission"))

from timebox.score import score  # noqa: E402

FLOWERS = ROOT.parent / "shared" / "datasets" / "flowers5"


@dataclass
class RunScore:
    accuracy: float
    macro_accuracy: float
    wall_s: float


def online_run(train: Path, out: Path, budget: str, seed: int, cache: Path, flags: list[str] = (),
               test: Path = FLOWERS / "test", labels: Path = FLOWERS / "test_labels.csv", root: Path = ROOT) -> RunScore:
    """`online` of the checkout at ``root`` on ``train`` (its console discarded), scored against ``labels``."""
    start = time.time()
    subprocess.run([str(root / "run.sh"), "online", "--train-dir", str(train), "--test-dir", str(test), "--out",
                    str(out), "--budget", budget, "--seed", str(seed), "--cache-dir", str(cache), *flags],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = score(out / "predictions.csv", labels)
    return RunScore(result.accuracy, result.macro_accuracy, time.time() - start)


def work_dir(out: Path | None, prefix: str) -> Path:
    """``--out``, or a new temporary folder named by ``prefix``; created."""
    folder = out or Path(tempfile.mkdtemp(prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    return folder

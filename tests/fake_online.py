"""A stand-in for `timebox online` in the tuner's tests: the engine, storage and scheduling are real, the trial
is this small program, so a search of many trials takes seconds. It behaves as online does where the tuner
looks: a complete predictions.csv early and at the end, SIGTERM keeps it, the budget is kept.

Its accuracy on the held-out images grows with its budget and with `head_share` near 0.08; `keep` chooses a
fault: 2 exits with an error, 3 hangs (ignoring SIGTERM).
"""

import argparse
import json
import signal
import sys
import time
from pathlib import Path

START = time.time()
p = argparse.ArgumentParser()
for flag in ("--train-dir", "--test-dir", "--out", "--budget", "--config", "--cache-dir", "--feature-cache"):
    p.add_argument(flag)
args = p.parse_args()
settings = json.loads(Path(args.config).read_text())
budget = float(args.budget.rstrip("s"))
labels = json.loads((Path(args.test_dir).parent / "subsample.json").read_text())["val_labels"]
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
(out / "started").write_text(str(START))


def write(accuracy: float) -> None:
    names = sorted(labels)
    right = round(accuracy * len(names))
    rows = ["filename,label,name,confidence"] + [
        f"{n},{labels[n] if i < right else labels[n] + 1},x,0.5" for i, n in enumerate(names)]
    tmp = out / ".predictions.tmp"
    tmp.write_text("\n".join(rows) + "\n")
    tmp.replace(out / "predictions.csv")


keep = settings.get("keep", 1)
if keep == 2:
    print("error: a deliberate crash", file=sys.stderr)
    sys.exit(1)
if keep == 3:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(3600)
quality = max(0.0, 1 - 5 * abs(settings.get("head_share", 0.05) - 0.08))
final = 0.4 + 0.3 * quality + 0.25 * min(1.0, budget / 20)
write(0.3)
signal.signal(signal.SIGTERM, lambda *a: (write(final - 0.05), sys.exit(0)))
time.sleep(max(0.0, START + 0.8 * budget - time.time()))
write(final)
(out / "report").mkdir(exist_ok=True)
wall = time.time() - START
(out / "report" / "summary.json").write_text(json.dumps({"wall_s": wall, "phases": [
    {"phase": "extract", "actual_s": 0.2 * wall}, {"phase": "head", "actual_s": 0.7 * wall}]}))

#!/bin/bash
# Issue 30's acceptance run: `./run.sh tune --budget 10m` as a judge runs a command (no network, a fresh HOME,
# SIGKILL at the budget), then what it left: finished trials, leaderboard, plot, best_config.json, and an
# online run that takes that file with --config. With KILL_AT_S: SIGKILL at that second, then the same
# command again on the same OUT, in what is left of the budget (the study keeps the first start's deadline).
#
#   bench/tune_acceptance.sh DATA OUT [KILL_AT_S]      e.g. ../shared/datasets/trashnet/train_data /tmp/T 300
set -u
cd "$(dirname "$0")/.."
data=$1 out=$2 kill_at=${3:-}
budget=600
jail=(); unshare -rn true 2>/dev/null && jail=(unshare -rn)
judged() {  # SECONDS: the tune command under judge semantics, killed at SECONDS
  local home; home=$(mktemp -d)
  HOME=$home timeout --signal=KILL "$1" "${jail[@]}" ./run.sh tune --data "$data" --budget 10m --out "$out"
  local rc=$?; rm -rf "$home"; return $rc
}
start=$(date +%s.%N)
if [ -n "$kill_at" ]; then
  judged "$kill_at" > "$out.first.log" 2>&1
  echo "first run: exit $? (137: SIGKILL) at $(python3 -c "import time; print(f'{time.time() - $start:.0f}')")s;" \
       "COMPLETE trials then: $(grep -c ',COMPLETE,' "$out/leaderboard.csv")"
  cp "$out/leaderboard.csv" "$out.before_kill.csv"
  left=$(python3 -c "import time; print(max(1, int($budget - (time.time() - $start))))")
  judged "$left" > "$out.log" 2>&1
else
  judged "$budget" > "$out.log" 2>&1
fi
rc=$?
wall=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
echo "tune: exit $rc (0: finished by itself) in ${wall}s of ${budget}s"
.venv/bin/python - "$out" "${kill_at:+$out.before_kill.csv}" <<'PY'
import csv, sys
from pathlib import Path
out, before = Path(sys.argv[1]), sys.argv[2]
rows = list(csv.DictReader(open(out / "leaderboard.csv")))
states = [r["state"] for r in rows]
print(f"trials: {len(rows)} ({', '.join(f'{s} {states.count(s)}' for s in sorted(set(states)))}); "
      f"plots: {', '.join(p.name for p in sorted(out.glob('*.png')))}; best_config.json: "
      f"{(out / 'best_config.json').read_text().strip() if (out / 'best_config.json').exists() else 'MISSING'}")
if before:
    done = {r["trial"]: r for r in csv.DictReader(open(before)) if r["state"] == "COMPLETE"}
    after = {r["trial"]: r for r in rows}
    kept = all(t in after and after[t]["val_accuracy"] == r["val_accuracy"] for t, r in done.items())
    keys = [(r["rung"], r["settings"], r["seed"]) for r in rows if r["state"] == "COMPLETE"]
    print(f"after the kill: {len(done)} finished trials kept unchanged: {kept}; "
          f"a COMPLETE (rung, settings, seed) twice: {len(keys) != len(set(keys))}")
PY
tail -4 "$out.log"
./run.sh online --train-dir "$data" --test-dir "$(dirname "$data")/test_data" --out "$out.online" --budget 2m \
    --config "$out/best_config.json" > "$out.online.log" 2>&1
echo "online --config: exit $?; the run's config file: $(python3 -c "import json; print(json.load(open('$out.online/report/config.json')).get('config_file'))" 2>&1)"

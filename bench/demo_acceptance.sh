#!/bin/bash
# Issue 33's demo check, from a fresh clone of HEAD: `./run.sh demo` (the real-photo subset, 2 minutes) per seed;
# its test accuracy, and every console line that timebox did not write (none expected).
#
#   bench/demo_acceptance.sh WORK [SEED...]      e.g. /work/demo 0 1 2     (default: seed 0)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
work=$1; shift
seeds=("${@:-0}")
rm -rf "$work" && git clone -q "$here" "$work/clone" && ln -s "$here/.venv" "$work/clone/.venv"
cd "$work/clone" || exit 1
./run.sh --help > /dev/null 2>&1  # run.sh checks .venv against requirements.txt once, outside the timed runs
for seed in "${seeds[@]}"; do
  ./run.sh demo --out "$work/demo$seed" --seed "$seed" > "$work/demo$seed.log" 2>&1
  rc=$?
  foreign=$(grep -cvE '^(\[ *[0-9.]+s \||demo: |predictions: |val accuracy: |test accuracy: |  class |outputs: )' \
            "$work/demo$seed.log")
  echo "seed $seed: exit $rc; $(grep '^test accuracy' "$work/demo$seed.log"); $(grep -o 'wall: [0-9.]*s' \
       "$work/demo$seed.log"); console lines timebox did not write: $foreign"
  grep -vE '^(\[ *[0-9.]+s \||demo: |predictions: |val accuracy: |test accuracy: |  class |outputs: )' \
       "$work/demo$seed.log" | head -5
done

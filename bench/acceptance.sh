#!/usr/bin/env bash
# Acceptance runs through the judge stand-in (no network, fresh HOME, SIGKILL at the budget):
#   bench/acceptance.sh [BUDGET_SECONDS=300] [DATASET[:JUDGE]...=trashnet flowers5]
# e.g. bench/acceptance.sh 480 trashnet:modelarts flowers5:flink
# Prints the judge's summary line and timebox's test score for each dataset. The decode cache is
# cold (fresh HOME), so decoding counts against the budget as it would in a judge. With a JUDGE,
# the run also writes that judge's export; then the export is checked against timebox's own
# predictions (bench/check_export.py) and the model is packaged and smoke-tested (`package`).
# Every run has --latency-ms 500 (the Tianchi judge's per-image limit); bench/ensemble.py then prints
# the ensemble's choice, every candidate's val and test accuracy, and the p95 latency.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
budget="${1:-300}"; shift || true
datasets=("$@"); [ $# -eq 0 ] && datasets=(trashnet flowers5)
data=../shared/datasets
./run.sh --help >/dev/null  # build .venv outside the budget, as a judge image would have it
for item in "${datasets[@]}"; do
  ds="${item%%:*}"; judge="generic"; [[ "$item" == *:* ]] && judge="${item#*:}"
  case "$ds" in
    trashnet) train=$data/trashnet/train_data test=$data/trashnet/test_data ;;
    flowers5) train=$data/flowers5/train test=$data/flowers5/test ;;
    *) echo "unknown dataset $ds" >&2; exit 2 ;;
  esac
  out=$(mktemp -d)/OUT
  echo "== $ds, judge $judge, budget ${budget}s ($(nproc) CPUs, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD))"
  ../shared/judge/judge.sh "$budget" "$data/$ds/test_labels.csv" "$out/predictions.csv" -- \
    ./run.sh online --budget "${budget}s" --train-dir "$train" --test-dir "$test" --out "$out" --judge "$judge" \
      --latency-ms 500 \
    2> >(grep -E '^\[|error|watchdog' >&2) || true
  ./run.sh score --pred "$out/predictions.csv" --labels "$data/$ds/test_labels.csv" | sed -n 1p
  .venv/bin/python bench/ensemble.py --run "$out:$ds" || true
  if [ "$judge" != generic ]; then
    .venv/bin/python bench/check_export.py "$judge" "$out" "$test"
    ./run.sh package --out "$out/../submission.zip" --model "$out/model" --smoke-images "$test" | tail -2
  fi
done

#!/usr/bin/env bash
# Acceptance runs through the judge stand-in (no network, fresh HOME, SIGKILL at the budget):
#   bench/acceptance.sh [BUDGET_SECONDS=300] [DATASET...=trashnet flowers5]
# Prints the judge's summary line and timebox's test score for each dataset. The decode cache is
# cold (fresh HOME), so decoding counts against the budget as it would in a judge.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
budget="${1:-300}"; shift || true
datasets=("${@:-trashnet flowers5}"); [ $# -eq 0 ] && datasets=(trashnet flowers5)
data=../shared/datasets
./run.sh --help >/dev/null  # build .venv outside the budget, as a judge image would have it
for ds in "${datasets[@]}"; do
  case "$ds" in
    trashnet) train=$data/trashnet/train_data test=$data/trashnet/test_data ;;
    flowers5) train=$data/flowers5/train test=$data/flowers5/test ;;
    *) echo "unknown dataset $ds" >&2; exit 2 ;;
  esac
  out=$(mktemp -d)/OUT
  echo "== $ds, budget ${budget}s ($(nproc) CPUs, $(date -u +%FT%TZ))"
  ../shared/judge/judge.sh "$budget" "$data/$ds/test_labels.csv" "$out/predictions.csv" -- \
    ./run.sh online --budget "${budget}s" --train-dir "$train" --test-dir "$test" --out "$out" \
    2> >(grep -E '^\[|error|watchdog' >&2) || true
  ./run.sh score --pred "$out/predictions.csv" --labels "$data/$ds/test_labels.csv" | sed -n 1p
done

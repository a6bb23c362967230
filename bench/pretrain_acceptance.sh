#!/bin/bash
# Issue 31's acceptance run, from a fresh clone of HEAD: `./run.sh pretrain` on flowers5's train split with a
# 6-minute budget, SIGKILLed at a random second and resumed with --resume in what is left of the 6 minutes;
# then `./run.sh online` on trashnet (other classes) under judge.sh, starting from the pretrained folder
# (--init auto), scored on trashnet's test split.
#
#   bench/pretrain_acceptance.sh WORK [KILL_AT_S]     e.g. /work/pa 170   (default: a random second in 60..300)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
work=$1 kill_at=${2:-$((60 + RANDOM % 241))}
budget=360 data=$here/../shared/datasets/flowers5/train trash=$here/../shared/datasets/trashnet
rm -rf "$work" && git clone -q "$here" "$work/clone" && ln -s "$here/.venv" "$work/clone/.venv"
cd "$work/clone" || exit 1
pre=(./run.sh pretrain --data "$data" --budget 6m --out "$work/PRE" --name flowers5)
start=$(date +%s.%N)
timeout --signal=KILL "$kill_at" "${pre[@]}" > "$work/first.log" 2>&1
echo "pretrain: exit $? (137: SIGKILL) at ${kill_at}s; checkpoints then: $(ls "$work/PRE/run/checkpoints" 2>/dev/null | tr '\n' ' ')"
left=$(python3 -c "import time; print(max(1, int($budget - (time.time() - $start))))")
timeout --signal=KILL "$left" "${pre[@]}" --resume > "$work/second.log" 2>&1
rc=$?
wall=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
echo "pretrain --resume: exit $rc (0: finished by itself); both runs together ${wall}s of ${budget}s"
tail -2 "$work/second.log"
ls -la submission/models/flowers5/ && cat submission/models/flowers5/meta.json; echo
git status --short submission/models
"$here/../shared/judge/judge.sh" 240 "$trash/test_labels.csv" "$work/ON/predictions.csv" -- \
    ./run.sh online --train-dir "$trash/train_data" --test-dir "$trash/test_data" --out "$work/ON" --budget 4m \
    > "$work/online.log" 2>&1
tail -1 "$work/online.log"
python3 -c "import json; c = json.load(open('$work/ON/report/config.json')); print('online init:', c.get('init'), '| weights:', c.get('weights'))"

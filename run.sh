#!/usr/bin/env bash
# timebox's single entry. First use builds .venv from requirements.txt; later uses start at once.
#   ./run.sh --help            every subcommand
#   ./run.sh demo              the whole job on a generated dataset
#   ./run.sh test [PYTEST...]  the test suite
#   ./run.sh tune ...          offline tuning (offline_tuning/)
#   ./run.sh pretrain ...      offline pretraining (offline_pretrain/)
set -euo pipefail
# The budget counts from here, or from a TIMEBOX_START set for this command; one inherited from another run.sh
# (TIMEBOX_START_PID set: a trial a tuner started) is not ours. Python is exec'd: it keeps this PID.
[ -z "${TIMEBOX_START_PID:-}" ] || unset TIMEBOX_START
export TIMEBOX_START="${TIMEBOX_START:-$(date +%s.%N)}" TIMEBOX_START_PID=$$
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.requirements.sha256"

ensure_venv() {
  local want
  want="$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)"
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then return; fi
  local py="${PYTHON:-}"
  if [ -z "$py" ]; then
    for candidate in python3.11 python3; do
      if command -v "$candidate" >/dev/null; then py="$candidate"; break; fi
    done
  fi
  [ -n "$py" ] || { echo "error: Python 3.11 not found; install it or set PYTHON=/path/to/python3.11" >&2; exit 2; }
  echo "timebox: installing pinned requirements into $VENV (first run only)..." >&2
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.txt" >&2 \
    || { echo "error: installing requirements.txt failed (network? see pip's message above)" >&2; exit 1; }
  echo "$want" > "$STAMP"
}

ensure_venv
export PYTHONPATH="$ROOT/submission${PYTHONPATH:+:$PYTHONPATH}"
# bytecode stays out of the code tree: an unpacked submission refuses files its manifest does not list
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$VENV/pycache}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# glibc's malloc is left at its defaults: raising its trim/mmap thresholds measured no gain here
# (bench/allocator.py, bench/RESULTS.md).
cd "$ROOT"
case "${1:-}" in
  test) shift; unset TIMEBOX_START TIMEBOX_START_PID; exec "$VENV/bin/python" -m pytest -q "$ROOT/tests" "$@" ;;
  tune) shift; PYTHONPATH="$ROOT:$PYTHONPATH" exec "$VENV/bin/python" -m offline_tuning "$@" ;;
  pretrain) shift; PYTHONPATH="$ROOT:$PYTHONPATH" exec "$VENV/bin/python" -m offline_pretrain "$@" ;;
  *) exec "$VENV/bin/python" -m timebox "$@" ;;
esac

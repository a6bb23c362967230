#!/bin/bash
# A run's OUT/report/index.html in a real headless browser (Debian's Chromium, installed here when missing):
# a full-page screenshot to look at, to check that the page shows its pictures.
#
#   bench/report_screenshot.sh OUT SHOT.png      e.g. runs/demo /tmp/report.png
set -eu
out=$1 shot=$2
if ! command -v chromium >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "error: chromium not found; sudo apt-get install -y chromium" >&2; exit 1; }
  echo "report_screenshot.sh: installing Debian's chromium..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >&2; }
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1100,3200 --screenshot="$(realpath -m "$shot")" "file://$(realpath "$out")/report/index.html" 2>/dev/null
echo "screenshot of $(realpath "$out")/report/index.html: $shot ($(stat -c %s "$shot") bytes)"

#!/usr/bin/env bash
# A CJK font for the tests of the report's pictures: `fonts.sh install` makes sure Debian's WenQuanYi Zen Hei is
# present (installing `fonts-wqy-zenhei` when it is not) and prints its file.
set -euo pipefail
FONT=/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc
if [ ! -f "$FONT" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: $FONT not found; run as root, or: sudo apt-get install -y fonts-wqy-zenhei" >&2
    exit 1
  fi
  echo "fonts.sh: installing Debian's fonts-wqy-zenhei..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends fonts-wqy-zenhei >&2 \
    || { apt-get update >&2 && apt-get install -y --no-install-recommends fonts-wqy-zenhei >&2; }
fi
echo "$FONT"

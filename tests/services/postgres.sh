#!/usr/bin/env bash
# PostgreSQL for the tests: `postgres.sh install` makes sure Debian's server binaries are present (installing
# the `postgresql` package when they are not) and prints their bin folder. It never starts a server: the
# tests start their own, in a temporary folder (tests/pg.py).
set -euo pipefail

PG_LIB="${PG_LIB:-/usr/lib/postgresql}"  # overridable only to test this script

# The newest /usr/lib/postgresql/N/bin holding both initdb and pg_ctl; empty when there is none.
bin_dir() {
  local dir found=""
  for dir in $(ls -d "$PG_LIB"/*/bin 2>/dev/null | sort -V); do
    [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && found="$dir"
  done
  echo "$found"
}

install() {
  local dir
  dir="$(bin_dir)"
  if [ -z "$dir" ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "error: PostgreSQL server binaries (initdb, pg_ctl) not found under $PG_LIB/*/bin;" \
        "run as root, or: sudo apt-get install -y --no-install-recommends postgresql" >&2
      exit 1
    fi
    echo "postgres.sh: installing Debian's postgresql package..." >&2
    # The package must neither create nor start a system-wide cluster: a policy-rc.d that refuses (unless the
    # machine has one already, as Docker images do) and no main cluster.
    local policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/timebox-tests.conf
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends postgresql >&2 \
      || { apt-get update >&2 && apt-get install -y --no-install-recommends postgresql >&2; }
    dir="$(bin_dir)"
    [ -n "$dir" ] || { echo "error: postgresql installed, but no initdb/pg_ctl under $PG_LIB/*/bin" >&2; exit 1; }
  fi
  echo "$dir"
}

case "${1:-}" in
  install) install ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac

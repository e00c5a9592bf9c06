#!/usr/bin/env bash
# The PostgreSQL release benchmark (issue 7 item 8, docs/realserver.md): in one run against one
# PostgreSQL 15 (started in a temporary folder; role CONNECTION LIMIT 12), 3 dsb-load instances
# x 8 threads per scenario: refusals (PostgreSQL's log) and utilization (pg_stat_activity
# sampled every 2 ms) for no dsb, confirmed release, plain close, plain close +
# release_cooldown 5ms, plain close + reserve 2.
#
#   tools/bench/pg_release.sh [--seconds 20] [--hold-ms 5 20] [--build-dir DIR]
#
# Needs the Debian package `postgresql` (tools/run setup installs it). As root the server runs
# as the `postgres` user (runuser).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD="$ROOT/build/release"
SECONDS_PER=20
HOLD=(5 20)
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER=$2; shift 2 ;;
    --hold-ms) HOLD=("$2" "$3"); shift 3 ;;
    --build-dir) BUILD=$2; shift 2 ;;
    *) echo "pg_release.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake --preset release -B "$BUILD" -S "$ROOT" >/dev/null
fi
cmake --build "$BUILD" -j "${DSB_JOBS:-2}" --target dsb-pg-release-bench dsb-load dsb-broker >&2
exec "$BUILD/bin/dsb-pg-release-bench" --seconds "$SECONDS_PER" --hold-ms "${HOLD[@]}"

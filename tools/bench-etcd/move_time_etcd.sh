#!/usr/bin/env bash
# Capacity move time with REAL brokers whose ledger is in etcd: starts one etcd
# member (loopback port from a random free range, data on tmpfs, fsync off)
# and runs tools/leasebench/move_time.sh with LB_ETCD_ENDPOINTS set, so the same
# script and the same judge (dsb-simserver's peak) measure both ledgers
# (docs/etcd.md, "What was measured"). Stops the member it started, by PID.
#
# Usage: BIN=build/bench/bin tools/bench-etcd/move_time_etcd.sh [REPS] [TERM] [DRAIN] [OUT]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${BIN:-$HERE/../../build/bench/bin}
[ -x /usr/bin/etcd ] || { echo "SKIPPED: no /usr/bin/etcd" >&2; exit 0; }
# shellcheck source=etcd_member_lib.sh
. "$HERE/etcd_member_lib.sh"
DATA=$(mktemp -d /dev/shm/dsb-move-etcd.XXXXXX)
finish() {
  local rc=$?
  be_stop_etcd
  rm -rf "$DATA"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
be_start_etcd "$DATA"
CP=$BE_CLIENT_PORT
echo "etcd member on 127.0.0.1:$CP (pid $BE_ETCD_PID)"
LB_ETCD_ENDPOINTS="http://127.0.0.1:$CP" BIN="$BIN" "$HERE/../leasebench/move_time.sh" "$@"

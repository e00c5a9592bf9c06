#!/usr/bin/env bash
# Writes etcd sees per REAL broker per second at steady state (docs/etcd.md,
# "What was measured"): one etcd member (tmpfs, fsync off), three dsb-brokers
# with ledger = "etcd" (tools/leasebench/cluster_lib.sh), a dsb-simserver capped
# at 32 and a constant dsb-load of THREADS threads on each broker; after the
# ledger's learning and a settle time, etcd's own counters
# (etcd_server_proposals_committed_total, etcd_mvcc_put_total) are read at the
# start and end of WINDOW seconds and divided by 3 brokers and the window.
# Stops everything it started, by PID.
#
# Usage: BIN=build/bench/bin tools/bench-etcd/writes_etcd.sh [TERM] [DRAIN] [WINDOW] [THREADS]
#   defaults: "15s" "5s" 30 8
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${BIN:-$HERE/../../build/bench/bin}
TERM_D=${1:-15s}
DRAIN_H=${2:-5s}
WINDOW=${3:-30}
THREADS=${4:-8}
LIMIT=32
[ -x /usr/bin/etcd ] || { echo "SKIPPED: no /usr/bin/etcd" >&2; exit 0; }
# shellcheck source=../leasebench/cluster_lib.sh
. "$HERE/../leasebench/cluster_lib.sh"
# shellcheck source=etcd_member_lib.sh
. "$HERE/etcd_member_lib.sh"
DATA=$(mktemp -d /dev/shm/dsb-writes-etcd.XXXXXX)
finish() {
  local rc=$?
  lb_cleanup
  be_stop_etcd
  rm -rf "$DATA"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
be_start_etcd "$DATA"
CP=$BE_CLIENT_PORT
export LB_ETCD_ENDPOINTS="http://127.0.0.1:$CP"
lb_init "$TERM_D" "$DRAIN_H" "$LIMIT"
lb_start_sim "$LIMIT"
lb_start_brokers
lb_wait_ready
for i in 1 2 3; do
  "$BIN/dsb-load" --socket "$LB_DIR/ws$i.sock" --target exch01 --server "127.0.0.1:$SIM_PORT" \
    --user svc-digiscope --instances 1 --threads "$THREADS" --duration 600 \
    --hold-ms-min 20 --hold-ms-max 80 --seed "$i" >"$LB_DIR/load$i.json" 2>"$LB_DIR/load$i.log" &
  LB_PIDS+=($!)
done
lb_sleep 5
counters() {
  curl -fs "http://127.0.0.1:$CP/metrics" |
    awk '/^etcd_server_proposals_committed_total /{p=$2} /^etcd_mvcc_put_total /{k=$2} END{print p, k}'
}
read -r p0 k0 <<<"$(counters)"
lb_sleep "$WINDOW"
read -r p1 k1 <<<"$(counters)"
STATS=$(lb_stats)
awk -v p0="$p0" -v p1="$p1" -v k0="$k0" -v k1="$k1" -v w="$WINDOW" -v d="$TERM_D" \
  'BEGIN { printf "D=%s, 3 real brokers, %d s: per broker per second %.2f raft proposals, %.2f keys put\n",
           d, w, (p1 - p0) / 3 / w, (k1 - k0) / 3 / w }'
echo "server: $(jq -c '.users["svc-digiscope"] | {peak, over_limit_events}' <<<"$STATS") (limit $LIMIT)"

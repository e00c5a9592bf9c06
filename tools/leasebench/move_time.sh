#!/usr/bin/env bash
# How long capacity takes to move between brokers after a demand shift
# (docs/cluster-benchmarks.md, measurement 2).
#
# Three real dsb-brokers on loopback (ws1 is the coordinator), one simserver with
# cap LIMIT. Each repetition: 32 threads on ws1 until the ledger shows ws1
# granted >= pool - 1 and holding >= pool - 1; then at t0 SIGTERM to ws1's load
# and, at once, 32 threads on ws2. The ledger (dsbctl leases --json at ws1) is
# polled (dsb-lease-watch, every 5 ms plus the round trips) until it shows ws2
# granted >= pool - 1: that instant minus t0 is the move time. Also recorded:
# when ws1's owed first reads 0 (its slots are back and acknowledged) and when
# ws2's own agent has applied >= pool - 1 (asked at ws2). The server's peak is checked against LIMIT after the run.
#
# Usage: BIN=build/lb/bin tools/leasebench/move_time.sh [REPS] [TERM] [DRAIN] [OUT]
#   defaults: 10 repetitions, term "3s", drain "1s", OUT = /tmp/dsb-move-time
# Prints one line per repetition and a summary; writes OUT/move_time.csv.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${BIN:-$HERE/../../build/lb/bin}
REPS=${1:-10}
TERM_D=${2:-3s}
DRAIN_H=${3:-1s}
OUT=${4:-/tmp/dsb-move-time}
LIMIT=32
THREADS=32
# shellcheck source=cluster_lib.sh
. "$HERE/cluster_lib.sh"

LOAD1=""
LOAD2=""
finish() {
  local rc=$?
  mkdir -p "$OUT/logs"
  [ -n "$LB_DIR" ] && cp "$LB_DIR"/*.log "$OUT/logs/" 2>/dev/null || true
  lb_cleanup
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ms() { date +%s%3N; }
# field of one broker in the coordinator's ledger: broker, field
ledger_field() {
  jq -r --arg b "$1" --arg f "$2" \
    '.ledger.targets[0].brokers[] | select(.broker == $b) | .[$f]' <<<"$LEDGER"
}
start_load() {  # broker-index; sets LAST_PID
  "$BIN/dsb-load" --socket "$LB_DIR/ws$1.sock" --target exch01 --server "127.0.0.1:$SIM_PORT" \
    --user svc-digiscope --instances 1 --threads "$THREADS" --duration 300 \
    --hold-ms-min 20 --hold-ms-max 80 --seed "$1" \
    >>"$LB_DIR/load$1.json" 2>>"$LB_DIR/load$1.log" &
  LAST_PID=$!
  LB_PIDS+=("$LAST_PID")
}
stop_load() {  # PID
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  lb_forget "$1"
}

for exe in dsb-broker dsb-simserver dsb-load dsbctl dsb-lease-watch; do
  [ -x "$BIN/$exe" ] || { echo "missing $BIN/$exe (build it; dsb-lease-watch needs DSB_BUILD_BENCH=ON)" >&2; exit 2; }
done
mkdir -p "$OUT"
lb_init "$TERM_D" "$DRAIN_H" "$LIMIT"
lb_start_sim "$LIMIT"
lb_start_brokers
lb_wait_ready
LEDGER=$(lb_leases)
POOL=$(jq -r '.ledger.targets[0].pool' <<<"$LEDGER")
TERM_MS=$(jq -r '.ledger.term_ms' <<<"$LEDGER")
lb_log "ready: pool $POOL, term ${TERM_MS} ms, renew interval D/3 = $((TERM_MS / 3)) ms"

echo "rep,fill_ms,release_ms,move_ms,agent_ms,polls,poll_ms_mean" >"$OUT/move_time.csv"
MOVES=()
for rep in $(seq "$REPS"); do
  # Fill: ws1 takes the pool.
  start_load 1
  LOAD1=$LAST_PID
  t_fill=$(now_ms)
  filled=0
  for _ in $(seq 1500); do  # <= ~60 s
    LEDGER=$(lb_leases) || true
    if [ -n "$LEDGER" ] && [ "$(ledger_field ws1 granted)" -ge $((POOL - 1)) ] &&
       [ "$(ledger_field ws1 held)" -ge $((POOL - 1)) ]; then
      filled=1
      break
    fi
    sleep 0.02
  done
  [ "$filled" = 1 ] || { echo "rep $rep: ws1 never held the pool" >&2; exit 1; }
  fill_ms=$(($(now_ms) - t_fill))

  # Shift: ws1 stops, ws2 starts, at t0. The watcher polls from just before t0.
  "$BIN/dsb-lease-watch" --coordinator "$LB_DIR/ws1.sock" --agent-socket "$LB_DIR/ws2.sock" \
    --from ws1 --to ws2 --at-least $((POOL - 1)) --timeout-ms 120000 --interval-ms 5 \
    >"$LB_DIR/watch.json" 2>>"$LB_DIR/watch.log" &
  WATCH=$!
  LB_PIDS+=("$WATCH")
  t0=$(now_ms)
  kill -TERM "$LOAD1" 2>/dev/null || true
  start_load 2
  LOAD2=$LAST_PID
  wait "$WATCH" || true
  lb_forget "$WATCH"
  W=$(cat "$LB_DIR/watch.json")
  rel() { jq -r --arg k "$1" --argjson t0 "$t0" 'if .[$k] == null then "" else .[$k] - $t0 end' <<<"$W"; }
  release_ms=$(rel release_ms)
  move_ms=$(rel move_ms)
  agent_ms=$(rel agent_ms)
  polls=$(jq -r .polls <<<"$W")
  poll_ms=$(jq -r '.poll_ms_mean * 10 | round / 10' <<<"$W")
  [ -n "$move_ms" ] || { echo "rep $rep: ws2 never got the pool: $W" >&2; exit 1; }
  wait "$LOAD1" 2>/dev/null || true
  lb_forget "$LOAD1"
  LOAD1=""
  printf 'rep %2d: fill %5d ms; after the shift: ws1 owed 0 at %5s ms, ledger grants ws2 >= %d at %5d ms, ws2 agent applied at %5s ms (poll every %s ms)\n' \
    "$rep" "$fill_ms" "${release_ms:--}" $((POOL - 1)) "$move_ms" "${agent_ms:--}" "$poll_ms"
  echo "$rep,$fill_ms,${release_ms},$move_ms,${agent_ms},$polls,$poll_ms" >>"$OUT/move_time.csv"
  MOVES+=("$move_ms")
  stop_load "$LOAD2"
  LOAD2=""
done

STATS=$(lb_stats)
PEAK=$(jq -r '.users["svc-digiscope"].peak' <<<"$STATS")
OVER=$(jq -r '.users["svc-digiscope"].over_limit_events' <<<"$STATS")
sorted=$(printf '%s\n' "${MOVES[@]}" | sort -n)
n=${#MOVES[@]}
median=$(printf '%s\n' "$sorted" | awk -v n="$n" '{a[NR]=$1} END {if (n % 2) print a[(n+1)/2]; else print (a[n/2]+a[n/2+1])/2}')
max=$(printf '%s\n' "$sorted" | tail -n1)
min=$(printf '%s\n' "$sorted" | head -n1)
echo "summary: $n moves, term ${TERM_MS} ms (renew every $((TERM_MS / 3)) ms): move time min $min ms, median $median ms, max $max ms"
echo "server: peak $PEAK of limit $LIMIT, over_limit_events $OVER"
echo "$STATS" >"$OUT/server_stats.json"
if [ "$PEAK" -gt "$LIMIT" ]; then echo "SAFETY: server peak $PEAK above limit $LIMIT" >&2; exit 3; fi

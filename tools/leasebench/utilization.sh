#!/usr/bin/env bash
# Server utilization with dsb vs the seed's static split under uneven demand
# (docs/cluster-benchmarks.md, measurement 3).
#
# Three "machines" share one account capped at LIMIT = 32 on a dsb-simserver.
# Scenarios (each on a fresh simserver, and for dsb fresh brokers):
#   static 40/10/10  each machine runs min(wanted, floor(32/3) - 1 = 9) action
#                    threads with --no-broker (the seed's hand-computed split:
#                    (32/3 - 1) action threads plus one system session each)
#   dsb    40/10/10  three brokers in cluster mode, the real demand
#   dsb    32/32/32  even demand, for reference
#   static 40/2/2, dsb 40/2/2   one busy machine, two nearly idle
# Each run: loads start, WARM seconds later STATS RESET, MEASURE seconds later
# STATS; utilization = mean / LIMIT. Actions per machine in the window come from
# dsb-load's once-a-second progress lines (the two lines nearest the window's
# ends, scaled to MEASURE seconds); whole-run totals come from its JSON result.
#
# Usage: BIN=build/lb/bin tools/leasebench/utilization.sh [MEASURE] [WARM] [TERM] [DRAIN] [OUT]
#   defaults: 20 s, 5 s, term "3s", drain "2s", OUT = /tmp/dsb-utilization
# Env SCENARIOS="static:40:10:10 dsb:40:10:10 ..." overrides the list.
# Prints a table; writes OUT/utilization.csv and each run's raw outputs.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${BIN:-$HERE/../../build/lb/bin}
MEASURE=${1:-20}
WARM=${2:-5}
TERM_D=${3:-3s}
DRAIN_H=${4:-2s}
OUT=${5:-/tmp/dsb-utilization}
LIMIT=32
STATIC_THREADS=$((LIMIT / 3 - 1))
SCENARIOS=${SCENARIOS:-"static:40:10:10 dsb:40:10:10 dsb:32:32:32 static:40:2:2 dsb:40:2:2"}
USER_NAME=svc-digiscope
# shellcheck source=cluster_lib.sh
. "$HERE/cluster_lib.sh"

RUN_NAME=""
finish() {
  local rc=$?
  if [ -n "$LB_DIR" ] && [ -d "$LB_DIR" ] && [ -n "$RUN_NAME" ]; then
    mkdir -p "$OUT/$RUN_NAME"
    cp "$LB_DIR"/*.log "$LB_DIR"/*.json "$OUT/$RUN_NAME/" 2>/dev/null || true
  fi
  lb_cleanup
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Progress actions of one load at elapsed time T (last progress line with t <= T).
progress_at() {  # log T -> "t actions"
  sed -n 's/^dsb-load: t=\([0-9.]*\)s actions=\([0-9]*\) .*/\1 \2/p' "$1" |
    awk -v T="$2" '$1 <= T { t = $1; a = $2 } END { if (t == "") print "0 0"; else print t, a }'
}
json_num() { jq -r "$1" <<<"$2"; }

for exe in dsb-broker dsb-simserver dsb-load dsbctl; do
  [ -x "$BIN/$exe" ] || { echo "missing $BIN/$exe" >&2; exit 2; }
done
mkdir -p "$OUT"
echo "scenario,wanted,threads,mean,peak,utilization,window_refused,window_opened,actions_window_ws1,actions_window_ws2,actions_window_ws3,actions_total_ws1,actions_total_ws2,actions_total_ws3,load_refusals,acquire_p99_ms" \
  >"$OUT/utilization.csv"
printf '%-8s %-10s %-10s %6s %4s %6s %8s %8s %s\n' mode wanted threads mean peak util refused opened \
  "actions in window ws1/ws2/ws3 (whole run)"
for sc in $SCENARIOS; do
  IFS=: read -r mode w1 w2 w3 <<<"$sc"
  wanted=("$w1" "$w2" "$w3")
  threads=()
  for w in "${wanted[@]}"; do
    if [ "$mode" = static ]; then threads+=($((w < STATIC_THREADS ? w : STATIC_THREADS)));
    else threads+=("$w"); fi
  done
  RUN_NAME="${mode}-${w1}-${w2}-${w3}"
  lb_init "$TERM_D" "$DRAIN_H" "$LIMIT"
  lb_start_sim "$LIMIT"
  if [ "$mode" = dsb ]; then
    lb_start_brokers
    lb_wait_ready
  fi
  LOADS=()
  for i in 1 2 3; do
    n=${threads[$((i - 1))]}
    [ "$n" -gt 0 ] || continue
    if [ "$mode" = dsb ]; then
      how=(--socket "$LB_DIR/ws$i.sock" --target exch01)
    else
      how=(--no-broker)
    fi
    "$BIN/dsb-load" "${how[@]}" --server "127.0.0.1:$SIM_PORT" --user "$USER_NAME" \
      --instances 1 --threads "$n" --duration $((WARM + MEASURE + 1)) \
      --hold-ms-min 20 --hold-ms-max 80 --seed "$i" \
      >"$LB_DIR/load$i.json" 2>"$LB_DIR/load$i.log" &
    LB_PIDS+=($!)
    LOADS+=($!)
  done
  lb_sleep "$WARM"
  lb_stats RESET >/dev/null
  lb_sleep "$MEASURE"
  STATS=$(lb_stats)
  echo "$STATS" >"$LB_DIR/server_stats.json"
  if [ "$mode" = dsb ]; then lb_leases >"$LB_DIR/leases.json" || true; fi
  for p in "${LOADS[@]}"; do wait "$p" || true; lb_forget "$p"; done

  u=".users[\"$USER_NAME\"]"
  mean=$(json_num "$u.mean" "$STATS")
  peak=$(json_num "$u.peak" "$STATS")
  refused=$(json_num "$u.refused" "$STATS")
  opened=$(json_num "$u.opened" "$STATS")
  over=$(json_num "$u.over_limit_events" "$STATS")
  util=$(awk -v m="$mean" -v l="$LIMIT" 'BEGIN { printf "%.3f", m / l }')
  meanf=$(awk -v m="$mean" 'BEGIN { printf "%.2f", m }')
  win=()
  tot=()
  load_refusals=0
  p99s=()
  for i in 1 2 3; do
    if [ ! -s "$LB_DIR/load$i.json" ]; then win+=(0); tot+=(0); continue; fi
    read -r t0 a0 <<<"$(progress_at "$LB_DIR/load$i.log" "$WARM")"
    read -r t1 a1 <<<"$(progress_at "$LB_DIR/load$i.log" $((WARM + MEASURE)))"
    win+=("$(awk -v a0="$a0" -v a1="$a1" -v t0="$t0" -v t1="$t1" -v m="$MEASURE" \
      'BEGIN { if (t1 > t0) printf "%d", (a1 - a0) * m / (t1 - t0); else print 0 }')")
    res=$(tail -n1 "$LB_DIR/load$i.json")
    tot+=("$(json_num .actions "$res")")
    load_refusals=$((load_refusals + $(json_num .refusals "$res")))
    p99s+=("$(json_num .acquire_wait_ms.p99 "$res")")
  done
  printf '%-8s %-10s %-10s %6s %4s %6s %8s %8s %s/%s/%s (%s/%s/%s)\n' "$mode" "$w1/$w2/$w3" \
    "${threads[0]}/${threads[1]}/${threads[2]}" "$meanf" "$peak" "$util" "$refused" "$opened" \
    "${win[0]}" "${win[1]}" "${win[2]}" "${tot[0]}" "${tot[1]}" "${tot[2]}"
  echo "$mode,$w1/$w2/$w3,${threads[0]}/${threads[1]}/${threads[2]},$meanf,$peak,$util,$refused,$opened,${win[0]},${win[1]},${win[2]},${tot[0]},${tot[1]},${tot[2]},$load_refusals,$(IFS=/; echo "${p99s[*]:-}")" \
    >>"$OUT/utilization.csv"
  if [ "$peak" -gt "$LIMIT" ] || [ "$over" != 0 ]; then
    echo "SAFETY: $RUN_NAME server peak $peak above limit $LIMIT (over_limit_events $over); logs in $OUT/$RUN_NAME" >&2
    mkdir -p "$OUT/$RUN_NAME"; cp "$LB_DIR"/*.log "$LB_DIR"/*.json "$OUT/$RUN_NAME/" 2>/dev/null || true
  fi
  mkdir -p "$OUT/$RUN_NAME"
  cp "$LB_DIR"/*.log "$LB_DIR"/*.json "$OUT/$RUN_NAME/" 2>/dev/null || true
  lb_cleanup
  RUN_NAME=""
done

#!/usr/bin/env bash
# Runs the loopback-3 example: a simserver with cap 32 and three brokers (ws1 is
# the coordinator) on 127.0.0.1, a DigiScope-like load on each with uneven demand
# (40 / 10 / 10 threads), shows `dsbctl leases`, and stops everything it started.
# Called by `tools/run cluster-demo` (BIN = the folder with the executables).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${BIN:-$HERE/../../build/release/bin}
# A private folder of our own (mktemp -d: 0700): the brokers refuse a socket folder,
# state_dir or key another user could write or replace (docs/config.md).
RUN=$(mktemp -d /tmp/dsb-loopback-3.XXXXXX)
DURATION=${DSB_DEMO_SECONDS:-12}
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
# The operator's recipe: openssl rand -hex 32 > cluster.key; chmod 600 cluster.key
(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN/cluster.key")
chmod 600 "$RUN/cluster.key"
# The shipped files name /run/dsb-loopback-3; run copies that name our folder (the same
# cluster file everywhere, so the brokers' file hashes agree).
(umask 077; cp "$HERE/cluster.toml" "$RUN/cluster.toml")
for i in 1 2 3; do
  (umask 077; sed "s#/run/dsb-loopback-3#$RUN#g" "$HERE/ws$i.toml" > "$RUN/ws$i.toml")
done
echo "folder: $RUN (sockets ws1.sock ws2.sock ws3.sock, logs, key)"
wait_for() { for _ in $(seq 200); do { [ -S "$1" ] || [ -s "$1" ]; } && return 0; sleep 0.05; done
             echo "timed out waiting for $1" >&2; return 1; }

rm -f "$RUN/sim.port"
"$BIN/dsb-simserver" --listen 127.0.0.1:0 --limit 32 --port-file "$RUN/sim.port" \
  >"$RUN/sim.log" 2>&1 &
PIDS+=($!)
wait_for "$RUN/sim.port"
PORT=$(sed 's/.*://' "$RUN/sim.port")
for i in 1 2 3; do
  "$BIN/dsb-broker" --config "$RUN/ws$i.toml" >"$RUN/ws$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do wait_for "$RUN/ws$i.sock" || { cat "$RUN/ws$i.log"; exit 1; }; done
echo "three brokers up (logs in $RUN/ws*.log)"
echo "the coordinator starts in learning mode (C3): no grants for (D+H)(1+eps) = 5s"
for _ in $(seq 200); do
  "$BIN/dsbctl" --socket "$RUN/ws1.sock" leases --json 2>/dev/null | grep -q '"learning":false' && break
  sleep 0.1
done

threads=(40 10 10)
LOADPIDS=()
for i in 1 2 3; do
  "$BIN/dsb-load" --socket "$RUN/ws$i.sock" --target exch01 --server "127.0.0.1:$PORT" \
    --user svc-digiscope --instances 1 --threads "${threads[$((i - 1))]}" \
    --duration "$DURATION" --hold-ms-min 20 --hold-ms-max 80 --seed "$i" \
    >"$RUN/load$i.json" 2>"$RUN/load$i.log" &
  LOADPIDS+=($!)
  PIDS+=($!)
done
sleep $((DURATION * 2 / 3))
echo
echo "== dsbctl leases (asked at ws2, answered by the coordinator ws1)"
"$BIN/dsbctl" --socket "$RUN/ws2.sock" leases || true
for p in "${LOADPIDS[@]}"; do wait "$p" || true; done
exec 3<>"/dev/tcp/127.0.0.1/$PORT"; printf 'STATS\n' >&3; IFS= read -r stats <&3; exec 3<&-
echo
echo "== results (threads wanted 40 / 10 / 10 on ws1 / ws2 / ws3, server cap 32)"
for i in 1 2 3; do
  line=$(tail -n1 "$RUN/load$i.json")
  printf 'ws%s: actions %s, refusals %s\n' "$i" \
    "$(printf '%s' "$line" | grep -o '"actions":[0-9]*' | cut -d: -f2)" \
    "$(printf '%s' "$line" | grep -o '"refusals":[0-9]*' | cut -d: -f2)"
done
num() {  # json, key -> the first such number, non-integers to 0.01
  local v
  v=$(printf '%s' "$1" | grep -o "\"$2\":[-0-9.eE+]*" | head -n1 | cut -d: -f2)
  case "$v" in
    *[.eE]*) LC_ALL=C printf '%.2f' "$v" ;;
    *) printf '%s' "$v" ;;
  esac
}
printf 'server: peak %s, mean %s of 32, sessions opened %s, refused %s\n' \
  "$(num "$stats" peak)" "$(num "$stats" mean)" "$(num "$stats" opened)" "$(num "$stats" refused)"
echo "server statistics (JSON): $stats"

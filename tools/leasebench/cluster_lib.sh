# shellcheck shell=bash
# Shared by move_time.sh and utilization.sh (sourced, not run): starts a
# dsb-simserver and three dsb-brokers in cluster mode on loopback in a private
# temp folder (own ports, sockets, shm_prefix and key), and stops exactly the
# processes it started. Expects BIN (folder with the executables).
#
# Functions:
#   lb_init TERM DRAIN LIMIT   temp folder, key, cluster file and broker files
#   lb_start_sim               dsb-simserver --limit LIMIT; sets SIM_PORT
#   lb_start_brokers           ws1 (coordinator), ws2, ws3; waits for sockets
#   lb_wait_ready              waits until the coordinator left learning mode
#   lb_stats [RESET]           one STATS line (or STATS RESET) from the simserver
#   lb_leases                  `dsbctl leases --json` asked at ws1 (the coordinator)
#   lb_cleanup                 kills our PIDs, removes segments and the folder
# Variables: LB_DIR, SIM_PORT, LB_PIDS (every PID we started), LB_PREFIX.
# LB_ETCD_ENDPOINTS (optional, set by the caller): comma-separated etcd client URLs; the
# cluster file then says ledger = "etcd" and ws1 is a broker like the others
# (tools/bench-etcd/move_time_etcd.sh starts a member and sets it).

LB_PIDS=()
LB_DIR=""
LB_PREFIX=""

lb_log() { printf '[%s] %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }

lb_free_port_base() {
  # Three consecutive free TCP ports on 127.0.0.1, from a random base.
  local base p busy
  for _ in $(seq 50); do
    base=$((20000 + RANDOM % 30000))
    busy=0
    for p in "$base" $((base + 1)) $((base + 2)); do
      if ss -Htln "sport = :$p" | grep -q .; then busy=1; fi
    done
    [ "$busy" = 0 ] && { echo "$base"; return 0; }
  done
  echo "no free port range found" >&2
  return 1
}

lb_init() {
  local term=$1 drain=$2 limit=$3 base i
  LB_DIR=$(mktemp -d /tmp/dsb-leasebench.XXXXXX)
  LB_PREFIX="lb$$"
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$LB_DIR/cluster.key")
  chmod 600 "$LB_DIR/cluster.key"
  base=$(lb_free_port_base)
  {
    echo '[cluster]'
    if [ -n "${LB_ETCD_ENDPOINTS:-}" ]; then
      # The ledger in etcd (docs/etcd.md): no coordinator; the endpoints are
      # comma-separated URLs; a prefix of this run's own.
      echo 'ledger = "etcd"'
      echo "etcd_endpoints = [\"${LB_ETCD_ENDPOINTS//,/\", \"}\"]"
      echo "etcd_prefix = \"/dsb/lb$$/\""
    else
      echo 'coordinator = "ws1"'
    fi
    echo "term = \"$term\""
    echo "drain = \"$drain\""
    echo 'eps = 0.001'
    for i in 1 2 3; do
      echo
      echo '[[brokers]]'
      echo "id = \"ws$i\""
      echo "address = \"127.0.0.1:$((base + i - 1))\""
      echo 'system_slots = 1'
      echo 'floor = 0'
    done
    echo
    echo '[[targets]]'
    echo 'name = "exch01"'
    echo "limit = $limit"
    echo 'reserve = 0'
    echo 'quarantine = "0s"'
  } >"$LB_DIR/cluster.toml"
  for i in 1 2 3; do
    cat >"$LB_DIR/ws$i.toml" <<EOF
[broker]
id = "ws$i"
socket = "$LB_DIR/ws$i.sock"
shm_prefix = "${LB_PREFIX}w$i"
cluster = "$LB_DIR/cluster.toml"
key_file = "$LB_DIR/cluster.key"
state_dir = "$LB_DIR/state"
adopt_grace = "2s"
EOF
  done
  lb_log "run folder $LB_DIR, cluster ports $base..$((base + 2)), term $term, drain $drain, limit $limit"
}

lb_wait_file() {  # PATH [tries of 50 ms]
  local tries=${2:-200}
  for _ in $(seq "$tries"); do
    { [ -S "$1" ] || [ -s "$1" ]; } && return 0
    sleep 0.05
  done
  echo "timed out waiting for $1" >&2
  return 1
}

lb_start_sim() {
  "$BIN/dsb-simserver" --listen 127.0.0.1:0 --limit "$1" --port-file "$LB_DIR/sim.port" \
    >"$LB_DIR/sim.log" 2>&1 &
  LB_PIDS+=($!)
  lb_wait_file "$LB_DIR/sim.port"
  SIM_PORT=$(sed 's/.*://' "$LB_DIR/sim.port")
}

lb_start_brokers() {
  local i
  for i in 1 2 3; do
    "$BIN/dsb-broker" --config "$LB_DIR/ws$i.toml" >"$LB_DIR/ws$i.log" 2>&1 &
    LB_PIDS+=($!)
  done
  for i in 1 2 3; do lb_wait_file "$LB_DIR/ws$i.sock" || { cat "$LB_DIR/ws$i.log" >&2; return 1; }; done
}

lb_leases() { "$BIN/dsbctl" --socket "$LB_DIR/ws1.sock" leases --json 2>/dev/null; }

lb_wait_ready() {
  # Learning mode lasts (D + H)(1 + eps); 60 s covers every setting used here.
  for _ in $(seq 600); do
    lb_leases | grep -q '"learning":false' && return 0
    sleep 0.1
  done
  echo "coordinator still learning after 60 s" >&2
  return 1
}

lb_stats() {  # [RESET]
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$SIM_PORT"
  if [ "${1:-}" = RESET ]; then printf 'STATS RESET\n' >&3; else printf 'STATS\n' >&3; fi
  IFS= read -r line <&3
  exec 3<&-
  printf '%s\n' "$line"
}

lb_cleanup() {
  local p
  for p in "${LB_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${LB_PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  LB_PIDS=()
  if [ -n "$LB_PREFIX" ]; then rm -f /dev/shm/dsb-"${LB_PREFIX}"w[123]-* 2>/dev/null || true; fi
  if [ -n "$LB_DIR" ] && [ -d "$LB_DIR" ] && [ -z "${LB_KEEP:-}" ]; then rm -rf "$LB_DIR"; fi
}

lb_forget() {  # PID: a process we waited for; never signal its (reusable) PID again
  local p keep=()
  for p in "${LB_PIDS[@]:-}"; do [ -n "$p" ] && [ "$p" != "$1" ] && keep+=("$p"); done
  LB_PIDS=("${keep[@]:-}")
}

lb_sleep() {  # SECONDS: a sleep that a trapped SIGINT/SIGTERM interrupts at once
  sleep "$1" &
  local s=$!
  LB_PIDS+=("$s")
  wait "$s" || true
  lb_forget "$s"
}

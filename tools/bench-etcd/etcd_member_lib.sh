# shellcheck shell=bash
# One etcd member for the bench-etcd scripts (move_time_etcd.sh, writes_etcd.sh),
# sourced: loopback ports from a random free range, data in the caller's tmpfs
# folder, fsync off. Only the member it started is stopped, by PID.
#
#   be_start_etcd DIR   starts it with data in DIR/m0 (log: DIR/etcd.log); sets
#                       BE_ETCD_PID and BE_CLIENT_PORT; waits up to ~10 s for /health
#   be_stop_etcd        stops it (SIGTERM to BE_ETCD_PID, reaped); safe to call twice
BE_ETCD_PID=""
# shellcheck disable=SC2034  # read by the scripts that source this file
BE_CLIENT_PORT=""

be_start_etcd() {
  local dir=$1 cp pp
  for _ in $(seq 50); do
    cp=$((20000 + RANDOM % 30000)); pp=$((cp + 1))
    ss -Htln "sport = :$cp" | grep -q . || ss -Htln "sport = :$pp" | grep -q . || break
  done
  # shellcheck disable=SC2034  # read by the scripts that source this file
  BE_CLIENT_PORT=$cp
  /usr/bin/etcd --name m0 --data-dir "$dir/m0" \
    --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
    --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "m0=http://127.0.0.1:$pp" --initial-cluster-state new --unsafe-no-fsync \
    >"$dir/etcd.log" 2>&1 &
  BE_ETCD_PID=$!
  for _ in $(seq 200); do
    curl -fs "http://127.0.0.1:$cp/health" 2>/dev/null | grep -q '"true"' && break
    sleep 0.05
  done
}

be_stop_etcd() {
  if [ -n "$BE_ETCD_PID" ]; then
    kill "$BE_ETCD_PID" 2>/dev/null || true
    wait "$BE_ETCD_PID" 2>/dev/null || true
    BE_ETCD_PID=""
  fi
}

#!/usr/bin/env bash
# bench/idle-heap-breakdown.sh -- where the heap of an idle keep-alive connection goes,
# allocation site by allocation site: what idle-memory-bench.sh reports as one number.
#
# For each mode (MODES), twice (CONNS and 2 x CONNS connections): start edge (one
# worker) under heaptrack, open the connections with idle-conns (each fetches
# /small.bin once, then sits idle), wait SETTLE seconds, then kill edge with SIGKILL
# while they are held, so that heaptrack's "leaked" memory is exactly what was live at
# that moment. The difference between the two runs, divided by CONNS, is the heap one
# more idle connection costs; fixed costs (caches, pools, telemetry) cancel out. Sites
# are named by the innermost frame in edge, rustls, ring or tokio.
#
# Usage (root; heaptrack, curl and openssl are installed with apt-get if missing):
#   cargo build --release -p edge -p hs-load      # once; the script never runs cargo
#   bench/idle-heap-breakdown.sh                  # 2000 and 4000 connections, http and https
#   MODES=https CONNS=1000 bench/idle-heap-breakdown.sh
#
# Environment (defaults in brackets):
#   OUT             work/output dir [<repo>/bench/out] (gitignored)
#   EDGE_BIN        edge binary [${CARGO_TARGET_DIR:-<repo>/target}/release/edge]
#   IDLE_CONNS_BIN  idle-conns binary [${CARGO_TARGET_DIR:-<repo>/target}/release/idle-conns]
#   MODES           ["http https"]
#   CONNS           connections in the first run (the second opens twice as many) [2000]
#   SERVER_CPUS     CPU list for edge (taskset -c) [0]; idle-conns gets the others
#   SETTLE          seconds between the last connection opened and the kill [2]
#   EDGE_HTTP_PORT EDGE_TLS_PORT EDGE_ADMIN_PORT  [28180 28543 28181]
#
# Output: per mode, a table of bytes per idle connection by allocation site and the
# total, on stdout and in $OUT/idle-heap-<mode>.txt; heaptrack's files in
# $OUT/heaptrack/. A release build has line tables (profile.release debug = 1), so
# the sites have names.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
OUT=${OUT:-$ROOT/bench/out}
EDGE_BIN=${EDGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/edge}
IDLE_CONNS_BIN=${IDLE_CONNS_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/idle-conns}
MODES=${MODES:-http https}
CONNS=${CONNS:-2000}
SERVER_CPUS=${SERVER_CPUS:-0}
SETTLE=${SETTLE:-2}
EDGE_HTTP_PORT=${EDGE_HTTP_PORT:-28180}
EDGE_TLS_PORT=${EDGE_TLS_PORT:-28543}
EDGE_ADMIN_PORT=${EDGE_ADMIN_PORT:-28181}
NGINX_HTTP_PORT="" NGINX_HTTPS_PORT=""
HOST=127.0.0.1
IDLE_TIMEOUT=3600

# shellcheck source=bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

for m in $MODES; do [[ $m == http || $m == https ]] || die "unknown mode '$m' (http and/or https)"; done
[[ $CONNS =~ ^[0-9]+$ && $CONNS -gt 0 ]] || die "CONNS must be a positive integer: $CONNS"
[[ -x $EDGE_BIN ]] || die "edge binary not found at $EDGE_BIN (cargo build --release -p edge)"
[[ -x $IDLE_CONNS_BIN ]] || die "idle-conns not found at $IDLE_CONNS_BIN (cargo build --release -p hs-load)"
NGINX_BIN=/bin/true install_missing
if ! command -v heaptrack >/dev/null; then
  [[ $EUID -eq 0 ]] || die "heaptrack is missing (run as root to have it installed)"
  log "installing heaptrack"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends heaptrack >/dev/null
fi
CLIENT_CPUS=$(other_cpus "$SERVER_CPUS")
[[ -n $CLIENT_CPUS ]] || CLIENT_CPUS=$SERVER_CPUS
raise_nofile $((2 * CONNS + 256))
MAX_CONNS=$((2 * CONNS + 1024))
check_ports_free "$EDGE_HTTP_PORT" "$EDGE_TLS_PORT" "$EDGE_ADMIN_PORT"

mkdir -p "$OUT/logs" "$OUT/heaptrack"
OUT=$(cd "$OUT" && pwd)
WWW=$OUT/www
EDGE_STATE=$OUT/heap-edge-state
mkdir -p "$WWW"
ensure_small "$WWW"
ensure_cert "$OUT"
EDGE_CONF=$OUT/heap-edge.toml
write_edge_conf "$EDGE_CONF"
"$EDGE_BIN" serve --config "$EDGE_CONF" --check >/dev/null || die "edge --check refused $EDGE_CONF"

HT_PID=""
cleanup() {
  stop_clients
  pkill -KILL -f "$EDGE_BIN serve --config $EDGE_CONF" 2>/dev/null || true
  [[ -z $HT_PID ]] || wait "$HT_PID" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run MODE N: edge under heaptrack, N idle connections, SIGKILL; leaves the collapsed
# stacks of the memory live at the kill in $OUT/heaptrack/<mode>-<n>.stacks
run() {
  local m=$1 n=$2 port=$EDGE_HTTP_PORT scheme=http data t hold line edge_pid
  local -a tls_args=(--plain)
  if [[ $m == https ]]; then port=$EDGE_TLS_PORT scheme=https tls_args=(--insecure); fi
  data=$OUT/heaptrack/$m-$n
  rm -rf "$EDGE_STATE" "$data".*
  mkdir -p "$EDGE_STATE"
  EDGE_WORKER_THREADS=1 taskset -c "$SERVER_CPUS" heaptrack -o "$data" "$EDGE_BIN" serve \
    --config "$EDGE_CONF" </dev/null >"$OUT/logs/heap-$m-$n.stdout" 2>"$OUT/logs/heap-$m-$n.stderr" &
  HT_PID=$!
  for ((t = 0; t < 300; t++)); do
    curl -sk -o /dev/null --fail --max-time 2 "$scheme://$HOST:$port/small.bin" && break
    kill -0 "$HT_PID" 2>/dev/null || die "edge under heaptrack exited (logs: $OUT/logs/heap-$m-$n.*)"
    sleep 0.2
  done
  rm -f "$OUT/heap.fifo" && mkfifo "$OUT/heap.fifo"
  taskset -c "$CLIENT_CPUS" "$IDLE_CONNS_BIN" --addr "$HOST:$port" --conns "$n" "${tls_args[@]}" \
    --path /small.bin --concurrency 64 <"$OUT/heap.fifo" >"$OUT/logs/heap-conns-$m-$n.stdout" \
    2>"$OUT/logs/heap-conns-$m-$n.stderr" &
  CLIENT[idle-conns]=$!
  exec {hold}>"$OUT/heap.fifo"
  line=""
  for ((t = 0; t < 600; t++)); do
    line=$(grep -m1 '^open=' "$OUT/logs/heap-conns-$m-$n.stdout" || true)
    [[ -n $line ]] && break
    sleep 0.2
  done
  [[ $line == "open=$n failed=0"* ]] || die "idle-conns: ${line:-no result} (want open=$n failed=0)"
  sleep "$SETTLE"
  edge_pid=$(pgrep -f "^$EDGE_BIN serve --config $EDGE_CONF" | head -1)
  [[ -n $edge_pid ]] || die "edge's pid not found"
  kill -KILL "$edge_pid"
  wait "$HT_PID" 2>/dev/null || true
  HT_PID=""
  exec {hold}>&-
  stop_clients
  heaptrack_print -f "$data.zst" --print-flamegraph "$data.stacks" --flamegraph-cost-type leaked \
    >/dev/null 2>&1 || die "heaptrack_print failed on $data.zst"
  log "$m: $line, edge killed, $(wc -l <"$data.stacks") stacks"
}

for m in $MODES; do
  log "mode $m: $CONNS and $((2 * CONNS)) idle connections"
  run "$m" "$CONNS"
  run "$m" $((2 * CONNS))
  python3 - "$OUT/heaptrack/$m-$CONNS.stacks" "$OUT/heaptrack/$m-$((2 * CONNS)).stacks" "$CONNS" "$m" \
    <<'PY' | tee "$OUT/idle-heap-$m.txt"
import collections, re, sys

def demangle(frame):
    """Rust's legacy symbol escapes, and the hash, off a frame's name."""
    frame = re.sub(r"::h[0-9a-f]{16}$", "", frame)
    for esc, ch in (("$u7b$", "{"), ("$u7d$", "}"), ("$LT$", "<"), ("$GT$", ">"), ("$C$", ","),
                    ("$RF$", "&"), ("$u20$", " "), ("$u27$", "'"), ("$BP$", "*"), ("..", "::"), ("_{{", "{{")):
        frame = frame.replace(esc, ch)
    return frame

def sites(path):
    """Live bytes by allocation site: the innermost frame in our crates, rustls, ring or
    tokio (allocator and std frames skipped), with its caller for context."""
    out = collections.Counter()
    ours = re.compile(r"^_?<?(edge|rustls|ring|tokio|tokio_rustls|web_ui|storage|manifest)::")
    for line in open(path):
        stack, cost = line.rsplit(" ", 1)
        frames = [demangle(f.split(" (")[0]) for f in stack.split(";")]
        named = [f for f in frames if ours.search(f)]
        key = " <- ".join(named[-1:-3:-1]) if named else "(other) " + frames[-1][:60]
        out[key] += int(cost)
    return out

one, two, n, mode = sites(sys.argv[1]), sites(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
per = {k: (two[k] - one[k]) / n for k in set(one) | set(two)}
total = sum(per.values())
print(f"heap per idle {mode} connection: {total:.0f} bytes ({n} and {2 * n} connections)")
for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
    if abs(v) >= 16:
        print(f"{v:8.0f}  {k[:150]}")
PY
done

#!/usr/bin/env bash
# bench/idle-memory-bench.sh -- memory per idle keep-alive connection: `edge` vs
# Debian's nginx, plain HTTP and HTTPS, in one run.
#
# For each mode (MODES) and server (SERVERS), one after the other: start the server
# alone (edge with EDGE_WORKER_THREADS=$WORKERS, nginx with worker_processes $WORKERS),
# warm it up (wrk, 1 s, 4 connections per worker, /small.bin), let it settle, read its
# RSS (edge: VmRSS of the process; nginx: the sum of its workers' VmRSS, master left
# out), open CONNS keep-alive connections with idle-conns (bench/hs-load), each of
# which fetches /small.bin (1 KiB) once and then sits idle, wait SETTLE seconds, read
# the RSS again and the server's own count of open connections (edge:
# edge_connections_open from its /metrics; nginx: established connections on its port,
# from ss), close them all, stop the server. Per row: RSS before and after (KiB) and
# (after - before) / open connections in bytes. Then the edge/nginx ratio per mode.
# Both servers keep idle connections for IDLE_TIMEOUT s (edge
# limits.idle_timeout_secs, nginx keepalive_timeout) and accept CONNS + 1024
# (limits.max_connections, worker_connections); a connection the server closes while
# held is counted (closed column) and makes the row suspect.
#
# Usage (from anywhere; run as root or have nginx/wrk/openssl/curl installed):
#   cargo build --release -p edge -p hs-load      # once; the script never runs cargo
#   bench/idle-memory-bench.sh                    # 16000 connections x 2 modes x 2 servers (~1-2 min)
#   CONNS=500 bench/idle-memory-bench.sh          # quick check
#   MODES=https WORKERS=4 SERVER_CPUS=0-3 bench/idle-memory-bench.sh
#
# Environment (defaults in brackets):
#   OUT               work/output dir [<repo>/bench/out] (gitignored)
#   EDGE_BIN          edge binary [${CARGO_TARGET_DIR:-<repo>/target}/release/edge]
#   IDLE_CONNS_BIN    idle-conns binary [${CARGO_TARGET_DIR:-<repo>/target}/release/idle-conns]
#   SERVERS           ["nginx edge"]
#   MODES             ["http https"]
#   CONNS             idle connections to open [16000]
#   WORKERS           edge worker threads and nginx worker processes [1]
#   SERVER_CPUS       CPU list for the server (taskset -c) [0]
#   CLIENT_CPUS       CPU list for idle-conns and wrk [the other CPUs, or SERVER_CPUS on 1 CPU]
#   OPEN_CONCURRENCY  connections idle-conns opens at a time [256]
#   SETTLE            seconds between the last connection opened and the second RSS read [2]
#   IDLE_TIMEOUT      server idle keep-alive timeout, seconds [3600]
#   LOCAL_IPS         idle-conns --local-ips (source addresses, e.g. 127.0.0.1-127.0.0.4)
#                     [none; 127.0.0.1-127.0.0.N automatically when CONNS is over 90 % of
#                     the ephemeral port range]
#   NGINX_BIN         [nginx from PATH or /usr/sbin/nginx]
#   NGINX_HTTP_PORT NGINX_HTTPS_PORT              [28080 28443]
#   EDGE_HTTP_PORT EDGE_TLS_PORT EDGE_ADMIN_PORT  [28180 28543 28181]
#   (the script aborts if one of them is already in use)
#
# The script raises its soft open-file limit to the hard limit (the servers and
# idle-conns inherit it) and warns when that is below CONNS + 256. Output: a table and
# ratio lines on stdout; $OUT/idle-memory-results.md (markdown with host, nproc, CPU
# sets, versions and the command line); raw rows in $OUT/idle-memory-results.tsv;
# idle-conns output and server logs in $OUT/logs/idle-*. KiB = 1024 bytes.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# the command as given, with the settings from the environment
COMMAND_LINE=""
for v in OUT EDGE_BIN IDLE_CONNS_BIN SERVERS MODES CONNS WORKERS SERVER_CPUS CLIENT_CPUS \
  OPEN_CONCURRENCY SETTLE IDLE_TIMEOUT LOCAL_IPS NGINX_BIN; do
  if [[ -n ${!v:-} ]]; then COMMAND_LINE+="$v=$(printf '%q' "${!v}") "; fi
done
COMMAND_LINE+="$0${*:+ $*}"

OUT=${OUT:-$ROOT/bench/out}
EDGE_BIN=${EDGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/edge}
IDLE_CONNS_BIN=${IDLE_CONNS_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/idle-conns}
SERVERS=${SERVERS:-nginx edge}
MODES=${MODES:-http https}
CONNS=${CONNS:-16000}
WORKERS=${WORKERS:-1}
SERVER_CPUS=${SERVER_CPUS:-0}
OPEN_CONCURRENCY=${OPEN_CONCURRENCY:-256}
SETTLE=${SETTLE:-2}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-3600}
LOCAL_IPS=${LOCAL_IPS:-}
NGINX_HTTP_PORT=${NGINX_HTTP_PORT:-28080}
NGINX_HTTPS_PORT=${NGINX_HTTPS_PORT:-28443}
EDGE_HTTP_PORT=${EDGE_HTTP_PORT:-28180}
EDGE_TLS_PORT=${EDGE_TLS_PORT:-28543}
EDGE_ADMIN_PORT=${EDGE_ADMIN_PORT:-28181}
HOST=127.0.0.1

# shellcheck source=bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

# ---------------------------------------------------------------- checks, tools
for s in $SERVERS; do [[ $s == nginx || $s == edge ]] || die "unknown server '$s' (nginx and/or edge)"; done
for m in $MODES; do [[ $m == http || $m == https ]] || die "unknown mode '$m' (http and/or https)"; done
[[ $CONNS =~ ^[0-9]+$ && $CONNS -gt 0 ]] || die "CONNS must be a positive integer: $CONNS"
[[ $WORKERS =~ ^[0-9]+$ && $WORKERS -gt 0 ]] || die "WORKERS must be a positive integer: $WORKERS"
[[ $SETTLE =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SETTLE must be a number of seconds: $SETTLE"
[[ " $SERVERS " != *" edge "* || -x $EDGE_BIN ]] ||
  die "edge binary not found at $EDGE_BIN (build it with 'cargo build --release' or set EDGE_BIN)"
[[ -x $IDLE_CONNS_BIN ]] ||
  die "idle-conns not found at $IDLE_CONNS_BIN (build it with 'cargo build --release -p hs-load' or set IDLE_CONNS_BIN)"

install_missing
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
WRK=$(command -v wrk)
cpu_count "$SERVER_CPUS" >/dev/null
if [[ -z ${CLIENT_CPUS:-} ]]; then
  CLIENT_CPUS=$(other_cpus "$SERVER_CPUS")
  [[ -n $CLIENT_CPUS ]] || { CLIENT_CPUS=$SERVER_CPUS; warn "no CPU left for the client: it shares $SERVER_CPUS with the server"; }
fi
taskset -c "$SERVER_CPUS" true 2>/dev/null || die "cannot pin to SERVER_CPUS=$SERVER_CPUS"
taskset -c "$CLIENT_CPUS" true 2>/dev/null || die "cannot pin to CLIENT_CPUS=$CLIENT_CPUS"
raise_nofile $((CONNS + 256))
if [[ -z $LOCAL_IPS ]] && ((CONNS * 10 > $(ephemeral_ports) * 9)); then
  n=$(((CONNS + $(ephemeral_ports) / 2 - 1) / ($(ephemeral_ports) / 2)))
  LOCAL_IPS=127.0.0.1-127.0.0.$((n > 254 ? 254 : n))
  log "CONNS $CONNS is near the $(ephemeral_ports) ephemeral ports: idle-conns spreads its source addresses over $LOCAL_IPS"
fi
MAX_CONNS=$((CONNS + 1024))
check_ports_free "$NGINX_HTTP_PORT" "$NGINX_HTTPS_PORT" "$EDGE_HTTP_PORT" "$EDGE_TLS_PORT" "$EDGE_ADMIN_PORT"

# ---------------------------------------------------------------- work dir, configs
mkdir -p "$OUT/logs" "$OUT/nginx-tmp"
OUT=$(cd "$OUT" && pwd)
WWW=$OUT/www
EDGE_STATE=$OUT/idle-edge-state
mkdir -p "$WWW" "$EDGE_STATE"
ensure_small "$WWW"
ensure_cert "$OUT"
write_wrk_lua "$OUT/idle.lua"
NGINX_CONF=$OUT/idle-nginx.conf
EDGE_CONF=$OUT/idle-edge.toml
write_nginx_conf "$NGINX_CONF"
write_edge_conf "$EDGE_CONF"
log "work dir: $OUT"

trap 'stop_clients; stop_servers' EXIT
trap 'exit 130' INT TERM

url() { # server mode -> base URL
  if [[ $2 == http ]]; then echo "http://$HOST:$(http_port "$1")"; else echo "https://$HOST:$(tls_port "$1")"; fi
}
port_of() { if [[ $2 == http ]]; then http_port "$1"; else tls_port "$1"; fi; }
# RSS of what serves: edge's process, nginx's workers
server_rss() { # server
  if [[ $1 == nginx ]]; then
    # shellcheck disable=SC2046
    rss_kib $(pgrep -P "${PID[nginx]}")
  else
    rss_kib "${PID[edge]}"
  fi
}

# ---------------------------------------------------------------- host info
KERNEL=$(uname -sr)
CPU_MODEL=$(cpu_model)
NGINX_VERSION=$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')
EDGE_VERSION=$([[ -x $EDGE_BIN ]] && "$EDGE_BIN" --version 2>&1 || echo "not found")
log "host: $KERNEL, nproc $(nproc) ($CPU_MODEL), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
log "CPU sets: server on $SERVER_CPUS, client (idle-conns, wrk) on $CLIENT_CPUS; open-file limit $(ulimit -Sn)"
log "nginx: $NGINX_VERSION, worker_processes $WORKERS, worker_connections $MAX_CONNS, keepalive_timeout ${IDLE_TIMEOUT}s"
log "edge: $EDGE_VERSION ($EDGE_BIN), EDGE_WORKER_THREADS=$WORKERS, max_connections $MAX_CONNS, idle_timeout_secs $IDLE_TIMEOUT, ktls off"
log "client: idle-conns, $CONNS connections, $OPEN_CONCURRENCY opening at a time, one GET /small.bin (1 KiB) each${LOCAL_IPS:+, source addresses $LOCAL_IPS}"

RESULTS=$OUT/idle-memory-results.tsv
printf 'server\tmode\tconns\topen\tfailed\topen_secs\trss_before_kib\trss_after_kib\tbytes_per_conn\tserver_open\tclosed\n' >"$RESULTS"
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')

measure() { # server mode
  local s=$1 m=$2 conf port fifo outf errf cpid hold line open failed secs before after server_open closed per
  local -a tls_args=(--insecure)
  [[ $m == http ]] && tls_args=(--plain)
  if [[ $s == nginx ]]; then conf=$NGINX_CONF; else conf=$EDGE_CONF; fi
  port=$(port_of "$s" "$m")
  start_pinned "$s" "$conf" "$SERVER_CPUS" "idle-$s-$m" /small.bin
  # warm-up: every worker serves a few requests over this mode
  taskset -c "$CLIENT_CPUS" "$WRK" -t 1 -c $((4 * WORKERS)) -d 1s -s "$OUT/idle.lua" \
    "$(url "$s" "$m")/" -- /small.bin 1 >"$OUT/logs/idle-wrk-warmup-$s-$m.txt" 2>&1 ||
    die "warm-up wrk failed for $s $m (see $OUT/logs/idle-wrk-warmup-$s-$m.txt)"
  sleep 1
  before=$(server_rss "$s")

  fifo=$OUT/idle-conns.fifo
  outf=$OUT/logs/idle-conns-$s-$m.stdout
  errf=$OUT/logs/idle-conns-$s-$m.stderr
  rm -f "$fifo"
  mkfifo "$fifo"
  taskset -c "$CLIENT_CPUS" "$IDLE_CONNS_BIN" --addr "$HOST:$port" --conns "$CONNS" "${tls_args[@]}" \
    --path /small.bin --concurrency "$OPEN_CONCURRENCY" ${LOCAL_IPS:+--local-ips "$LOCAL_IPS"} \
    <"$fifo" >"$outf" 2>"$errf" &
  cpid=$!
  CLIENT[idle-conns]=$cpid
  exec {hold}>"$fifo" # idle-conns holds its connections until this closes
  line=""
  while kill -0 "$cpid" 2>/dev/null; do
    line=$(grep -m1 '^open=' "$outf" || true)
    [[ -n $line ]] && break
    sleep 0.2
  done
  if [[ -z $line ]]; then
    exec {hold}>&-
    wait "$cpid" || true
    cat "$errf" >&2
    die "idle-conns gave no result for $s $m (stderr in $errf)"
  fi
  sleep "$SETTLE"
  after=$(server_rss "$s")
  if [[ $s == edge ]]; then
    server_open=$(edge_metrics "$HOST:$EDGE_ADMIN_PORT" "$EDGE_STATE" | metric_values edge_connections_open | head -n 1)
    server_open=${server_open:-n/a}
  else
    server_open=$(established_on "$port")
  fi
  exec {hold}>&-
  wait "$cpid" || warn "idle-conns exited $? for $s $m (stderr in $errf)"
  unset 'CLIENT[idle-conns]'
  stop_servers
  rm -f "$fifo"
  open=$(sed -n 's/^open=\([0-9]*\) .*/\1/p' "$outf")
  failed=$(sed -n 's/^open=.* failed=\([0-9]*\) .*/\1/p' "$outf")
  secs=$(sed -n 's/^open=.* secs=\([0-9.]*\).*/\1/p' "$outf")
  closed=$(sed -n 's/^held=.* closed_by_server=\([0-9]*\) .*/\1/p' "$outf")
  closed=${closed:-n/a}
  [[ -s $errf ]] && warn "$s $m: $(head -n 1 "$errf") (more in $errf)"
  ((failed == 0)) || warn "$s $m: $failed of $CONNS connections failed to open"
  [[ $closed == 0 ]] || warn "$s $m: the server closed $closed connections while they were held: RSS after is low"
  per=$(awk -v a="$after" -v b="$before" -v n="$open" 'BEGIN { printf "%.0f", (n > 0) ? (a - b) * 1024 / n : 0 }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$m" "$CONNS" "$open" "$failed" "$secs" \
    "$before" "$after" "$per" "$server_open" "$closed" >>"$RESULTS"
  printf '    %-5s %-5s conns %s: open %s (failed %s, %s s)  RSS %s KiB -> %s KiB  %s bytes/conn  server sees %s open  closed while held %s\n' \
    "$s" "$m" "$CONNS" "$open" "$failed" "$secs" "$before" "$after" "$per" "$server_open" "$closed"
}

for m in $MODES; do
  log "mode $m"
  for s in $SERVERS; do measure "$s" "$m"; done
done

# ---------------------------------------------------------------- report
echo
echo "Idle keep-alive connections: server RSS (edge: the process; nginx: its workers) before and after"
printf '%-6s %-5s %6s %6s %14s %13s %14s %11s %7s\n' server mode conns open rss_before_kib rss_after_kib bytes_per_conn server_open closed
awk -F'\t' 'NR > 1 { printf "%-6s %-5s %6s %6s %14s %13s %14s %11s %7s\n", $1, $2, $3, $4, $7, $8, $9, $10, $11 }' "$RESULTS"

RATIOS=$OUT/idle-memory-ratios.txt
awk -F'\t' 'NR > 1 { b[$1 SUBSEP $2] = $9; if ($1 == "edge") order[++n] = $2 }
  END { for (i = 1; i <= n; i++) { m = order[i]; g = "nginx" SUBSEP m
      if (!(g in b) || b[g] <= 0) continue
      printf "ratio edge/nginx %s bytes per idle connection: %.2fx (edge %s, nginx %s)\n", m, b["edge" SUBSEP m] / b[g], b["edge" SUBSEP m], b[g] } }' \
  "$RESULTS" >"$RATIOS"
echo
if [[ -s $RATIOS ]]; then cat "$RATIOS"; echo "(< 1: edge holds an idle connection in less memory)"; else echo "no ratios: edge and nginx were not both measured (or nginx's growth was 0)"; fi

MD=$OUT/idle-memory-results.md
{
  echo "### Idle keep-alive connections: memory, edge vs nginx ($START_DATE)"
  echo
  echo "- host: $KERNEL, nproc $(nproc) ($CPU_MODEL)"
  echo "- CPU sets: server \`taskset -c $SERVER_CPUS\`, client \`taskset -c $CLIENT_CPUS\`; open-file limit $(ulimit -Sn)"
  echo "- nginx: $NGINX_VERSION, \`worker_processes $WORKERS\`, \`worker_connections $MAX_CONNS\`, \`keepalive_timeout ${IDLE_TIMEOUT}s\`, RSS = sum of the workers' VmRSS (master left out)"
  echo "- edge: $EDGE_VERSION, \`EDGE_WORKER_THREADS=$WORKERS\`, \`max_connections = $MAX_CONNS\`, \`idle_timeout_secs = $IDLE_TIMEOUT\`, ktls off, RSS = VmRSS of the process"
  echo "- client: idle-conns, $CONNS connections, each one \`GET /small.bin\` (1 KiB) then idle; RSS read after a 1 s wrk warm-up and $SETTLE s after the last connection opened; bytes/conn = (after - before) / open"
  echo "- command: \`$COMMAND_LINE\`"
  echo
  echo "| server | mode | conns | open | RSS before KiB | RSS after KiB | bytes per conn | server sees open | closed while held |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|--:|"
  awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $7, $8, $9, $10, $11 }' "$RESULTS"
  if [[ -s $RATIOS ]]; then
    echo
    echo "| mode | edge/nginx bytes per idle connection |"
    echo "|---|--:|"
    awk '{ printf "| %s | %s |\n", $3, $8 }' "$RATIOS"
  fi
} >"$MD"
echo
log "wrote $MD (raw: $RESULTS; logs: $OUT/logs/idle-*)"
log "command: $COMMAND_LINE"

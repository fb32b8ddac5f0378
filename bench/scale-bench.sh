#!/usr/bin/env bash
# bench/scale-bench.sh -- server-bound throughput at many connections: `edge` vs
# Debian's nginx, plain HTTP and HTTPS, in one run.
#
# Both servers run on SERVER_CPUS with WORKERS workers each (edge
# EDGE_WORKER_THREADS=$WORKERS, nginx worker_processes $WORKERS with reuseport);
# the client runs on CLIENT_CPUS with one thread per client CPU and keeps CONNS
# keep-alive connections busy fetching NFILES files of FILE_MIB MiB round-robin (the
# workload of host-bench.sh). The client (LOAD):
#   fetch  fetch-load (bench/hs-load): checks every response head and reads every body
#          to its end, but discards bodies in the kernel (recv MSG_TRUNC) and, over
#          HTTPS (TLS 1.3, TLS_AES_256_GCM_SHA384, what wrk gets from both servers),
#          decrypts only the records holding the head and the body's last record. Its
#          cost per byte is a fraction of the server's, so one client core can
#          saturate one server core: the setup is server-bound even on 2 CPUs;
#   wrk    wrk, which copies (and over HTTPS decrypts) every byte: it saturates before
#          the server unless it has more CPUs than the server.
# Per mode and connection count, nginx then edge:
#   1. wrk starts; the script waits until every connection is receiving a response
#      (client sockets to the port with over RAMP_BYTES received, tcp_info from ss -i:
#      past the TLS handshake; at most RAMP_MAX s), then SETTLE s more, so that the
#      connects and TLS handshakes stay out of the window;
#   2. a DURATION s window: at its start and end the script reads the server's CPU
#      time (utime+stime of the whole process tree, /proc/PID/stat; per worker too:
#      nginx worker processes; edge: its main thread, which is worker 0, and its
#      edge-worker-N threads; the admin plane has a thread of its own), the client's
#      CPU time, and the bytes the client has read from its sockets (wrk: rchar,
#      /proc/PID/io; fetch-load: its --stats file, rewritten every 20 ms; over HTTPS
#      that is TLS records, ~0.1 % over the payload); halfway through it samples the connections
#      per worker (edge: the gauge edge_worker_open_connections{worker="N"} from its
#      /metrics, "n/a" when the binary has none; nginx: established connections on
#      the port per worker pid, from ss -p) and the kernel's TCP memory in pages and
#      whether TCP is under memory pressure (/proc/net/sockstat, /proc/net/protocols:
#      TCP enters pressure above tcp_mem[1] and leaves it below tcp_mem[0]; meanwhile
#      the kernel cuts every socket's send buffer to a few tens of KB, which shrinks
#      each sendfile and raises the CPU per byte of both servers: at 16000 busy
#      connections on loopback a point can land on either side from one run to the
#      next);
#   3. the client is stopped (SIGINT) and its summary read for errors (socket
#      errors, non-2xx/3xx or bad responses, responses over WRK_TIMEOUT).
# With ROUNDS > 1 every point is measured ROUNDS times in a row, the servers' order
# reversed every other round (nginx, edge, edge, nginx, ...), so that drift in the
# host's background load hits both alike: on the 2-core host one server's plain-HTTP
# result swings by 10-25 % from one window to the next with nothing changed, more
# than the difference between the servers, and one round cannot tell them apart.
# Per point: MB/s and req/s over the window (req/s = bytes / response size, the
# file plus the server's response head as curl sees it),
# server CPU s and its share of SERVER_CPUS, server CPU s per GB, the share of that
# CPU spent in user space (utime; the rest is the kernel's: sendfile, TCP and, on
# loopback, the receiving side's TCP work run in the sender's softirq), client CPU
# share of CLIENT_CPUS, the client's wake-ups per GB (its voluntary context switches:
# it slept with nothing to read; on loopback the server's CPU pays for waking it, in
# the softirq that delivers the data, so a point's CPU per GB moves with this count),
# which side was saturated (bound: server when the server used at least SATURATION of
# its CPUs, client when wrk did and the server did not, else neither; only "server"
# points measure the server), wrk errors, and the per-worker spread of
# connections and of CPU seconds as min/max. Then the edge/nginx ratios of MB/s and of
# CPU s per GB per point and round, and with ROUNDS > 1 their median over the rounds.
#
# Usage (from anywhere; run as root or have nginx/wrk/openssl/curl installed):
#   cargo build --release -p edge -p hs-load      # once; the script never runs cargo
#   bench/scale-bench.sh                          # 3 conns x 2 modes x 2 servers x ~15 s (~3-4 min)
#   CONNS="64 256" DURATION=3 bench/scale-bench.sh             # quick check
#   ROUNDS=3 OPEN_FILE_CACHE=64 bench/scale-bench.sh           # three rounds a point (~12 min)
#   SERVER_CPUS=0-3 CLIENT_CPUS=4-15 bench/scale-bench.sh      # 16-core machine
#
# Environment (defaults in brackets):
#   OUT               work/output dir [<repo>/bench/out] (gitignored)
#   EDGE_BIN          edge binary [${CARGO_TARGET_DIR:-<repo>/target}/release/edge]
#   SERVERS           servers per point, in this order ["nginx edge"]
#   LOAD              client: fetch or wrk (above) [fetch]
#   FETCH_LOAD_BIN    fetch-load binary [${CARGO_TARGET_DIR:-<repo>/target}/release/fetch-load]
#   MODES             ["http https"]
#   CONNS             wrk connection counts ["256 4096 16000"]
#   DURATION          measured seconds per point [10]
#   ROUNDS            windows per point and server, order alternating (above) [1]
#   WARMUP            unmeasured wrk seconds per server and mode (at the smallest
#                     CONNS), 0 = none [2]
#   RAMP_MAX          longest wait for all connections to receive data, seconds [60]
#   RAMP_BYTES        bytes a connection must have received to count as receiving [16384]
#   SETTLE            seconds between "all receiving" and the window [1]
#   SERVER_CPUS       CPU list for the servers (taskset -c) [0]
#   CLIENT_CPUS       CPU list for the client (and this script) [every other CPU]
#   WORKERS           edge worker threads = nginx worker processes [CPUs in SERVER_CPUS]
#   WRK_THREADS       client threads (wrk -t, fetch-load --threads) [CPUs in CLIENT_CPUS,
#                     at most the connections]
#   WRK_TIMEOUT       client timeout: responses slower than this count as errors [60s]
#   BUSY_POLL         1 = fetch-load --busy-poll: the client never sleeps in epoll_wait,
#                     so on loopback the server's softirq does not wake it [0]
#   SATURATION        CPU share at which the client or the server counts as saturated [0.90]
#   NFILES FILE_MIB   segment files [32 2]
#   OPEN_FILE_CACHE   files kept open per worker by both servers: edge
#                     content.open_file_cache, nginx open_file_cache max=N; 0 = off [0]
#   NGINX_BIN         [nginx from PATH or /usr/sbin/nginx]
#   NGINX_HTTP_PORT NGINX_HTTPS_PORT              [29080 29443]
#   EDGE_HTTP_PORT EDGE_TLS_PORT EDGE_ADMIN_PORT  [29180 29543 29181]
#   (the script aborts if one of them is already in use)
#
# The server settings: nginx sendfile + tcp_nopush, keepalive_requests 1000000,
# worker_connections = the largest CONNS + 1024, access_log off, reuseport and
# backlog=4096 on each listen; edge max_connections = the largest CONNS + 1024,
# max_requests_per_connection 1000000, min_send_rate_bytes_per_sec 0 (nginx has no
# rate floor). Both: TLS 1.2/1.3 with an ECDSA P-256 certificate, no kTLS, idle
# timeout 3600 s. The script raises its soft open-file limit to the hard limit (wrk
# and the servers inherit it) and warns when that is below the largest CONNS + 256.
# Output: a table and ratio lines on stdout; $OUT/scale-results.md (markdown for
# BENCHMARKS.md with host, kernel, nproc, CPU sets and the command line); raw rows in
# $OUT/scale-results.tsv; wrk output and server logs in $OUT/logs/scale-*.
# Units: MB = 10^6 bytes, GB = 10^9 bytes.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

# the command as given, with the settings from the environment
COMMAND_LINE=""
for v in OUT EDGE_BIN LOAD FETCH_LOAD_BIN SERVERS MODES CONNS DURATION ROUNDS WARMUP RAMP_MAX RAMP_BYTES SETTLE SERVER_CPUS \
  CLIENT_CPUS WORKERS WRK_THREADS WRK_TIMEOUT SATURATION BUSY_POLL NFILES FILE_MIB NGINX_BIN OPEN_FILE_CACHE; do
  if [[ -n ${!v:-} ]]; then COMMAND_LINE+="$v=$(printf '%q' "${!v}") "; fi
done
COMMAND_LINE+="$0${*:+ $*}"

OUT=${OUT:-$ROOT/bench/out}
EDGE_BIN=${EDGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/edge}
SERVERS=${SERVERS:-nginx edge}
LOAD=${LOAD:-fetch}
FETCH_LOAD_BIN=${FETCH_LOAD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/fetch-load}
MODES=${MODES:-http https}
CONNS=${CONNS:-256 4096 16000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-1}
WARMUP=${WARMUP:-2}
RAMP_MAX=${RAMP_MAX:-60}
RAMP_BYTES=${RAMP_BYTES:-16384}
SETTLE=${SETTLE:-1}
SERVER_CPUS=${SERVER_CPUS:-0}
WRK_TIMEOUT=${WRK_TIMEOUT:-60s}
SATURATION=${SATURATION:-0.90}
BUSY_POLL=${BUSY_POLL:-0}
NFILES=${NFILES:-32}
FILE_MIB=${FILE_MIB:-2}
NGINX_HTTP_PORT=${NGINX_HTTP_PORT:-29080}
NGINX_HTTPS_PORT=${NGINX_HTTPS_PORT:-29443}
EDGE_HTTP_PORT=${EDGE_HTTP_PORT:-29180}
EDGE_TLS_PORT=${EDGE_TLS_PORT:-29543}
EDGE_ADMIN_PORT=${EDGE_ADMIN_PORT:-29181}
IDLE_TIMEOUT=3600
HOST=127.0.0.1

# shellcheck source=bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

# ---------------------------------------------------------------- checks, tools
for s in $SERVERS; do [[ $s == nginx || $s == edge ]] || die "unknown server '$s' (nginx and/or edge)"; done
for m in $MODES; do [[ $m == http || $m == https ]] || die "unknown mode '$m' (http and/or https)"; done
[[ $LOAD == fetch || $LOAD == wrk ]] || die "unknown LOAD '$LOAD' (fetch or wrk)"
[[ $LOAD == wrk || -x $FETCH_LOAD_BIN ]] ||
  die "fetch-load not found at $FETCH_LOAD_BIN (build it with 'cargo build --release -p hs-load' or set FETCH_LOAD_BIN)"
MAX_C=0
for c in $CONNS; do
  [[ $c =~ ^[0-9]+$ && $c -gt 0 ]] || die "CONNS must be positive integers: $CONNS"
  ((c > MAX_C)) && MAX_C=$c
done
MIN_C=$(tr ' ' '\n' <<<"$CONNS" | grep . | sort -n | head -n 1)
for v in DURATION ROUNDS WARMUP RAMP_MAX RAMP_BYTES SETTLE NFILES FILE_MIB; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number: ${!v}"
done
((DURATION > 0)) || die "DURATION must be positive"
((ROUNDS > 0)) || die "ROUNDS must be positive"
case $BUSY_POLL in
  0) BUSY_POLL_ARG= ;;
  1) [[ $LOAD == fetch ]] || die "BUSY_POLL=1 needs LOAD=fetch"; BUSY_POLL_ARG=--busy-poll ;;
  *) die "BUSY_POLL must be 0 or 1: $BUSY_POLL" ;;
esac
[[ " $SERVERS " != *" edge "* || -x $EDGE_BIN ]] ||
  die "edge binary not found at $EDGE_BIN (build it with 'cargo build --release' or set EDGE_BIN)"

install_missing
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
WRK=$(command -v wrk)
CLK_TCK=$(getconf CLK_TCK)
N_SERVER=$(cpu_count "$SERVER_CPUS")
if [[ -z ${CLIENT_CPUS:-} ]]; then
  CLIENT_CPUS=$(other_cpus "$SERVER_CPUS")
  [[ -n $CLIENT_CPUS ]] || { CLIENT_CPUS=$SERVER_CPUS; warn "no CPU left for the client: it shares $SERVER_CPUS with the servers"; }
fi
N_CLIENT=$(cpu_count "$CLIENT_CPUS")
WORKERS=${WORKERS:-$N_SERVER}
[[ $WORKERS =~ ^[0-9]+$ && $WORKERS -gt 0 ]] || die "WORKERS must be a positive integer: $WORKERS"
taskset -c "$SERVER_CPUS" true 2>/dev/null || die "cannot pin to SERVER_CPUS=$SERVER_CPUS"
NPROC=$(nproc) # before this script pins itself to the client CPUs
taskset -pc "$CLIENT_CPUS" $$ >/dev/null 2>&1 || die "cannot pin to CLIENT_CPUS=$CLIENT_CPUS"
if [[ -n $(comm -12 <(cpu_list_expand "$SERVER_CPUS" | sort -u) <(cpu_list_expand "$CLIENT_CPUS" | sort -u)) ]]; then
  warn "SERVER_CPUS ($SERVER_CPUS) and CLIENT_CPUS ($CLIENT_CPUS) overlap: the server is not alone on its CPUs"
fi
raise_nofile $((MAX_C + 256))
((MAX_C * 10 <= $(ephemeral_ports) * 9)) ||
  warn "$MAX_C connections from one address is near the $(ephemeral_ports) ephemeral ports (ip_local_port_range): connects may fail"
MAX_CONNS=$((MAX_C + 1024))
check_ports_free "$NGINX_HTTP_PORT" "$NGINX_HTTPS_PORT" "$EDGE_HTTP_PORT" "$EDGE_TLS_PORT" "$EDGE_ADMIN_PORT"

# ---------------------------------------------------------------- work dir, configs
mkdir -p "$OUT/logs" "$OUT/nginx-tmp"
OUT=$(cd "$OUT" && pwd)
WWW=$OUT/www
EDGE_STATE=$OUT/scale-edge-state
mkdir -p "$WWW" "$EDGE_STATE"
log "work dir: $OUT"
ensure_segments "$WWW" "$NFILES" "$FILE_MIB"
ensure_small "$WWW"
ensure_cert "$OUT"
write_wrk_lua "$OUT/scale.lua"
NGINX_CONF=$OUT/scale-nginx.conf
EDGE_CONF=$OUT/scale-edge.toml
write_nginx_conf "$NGINX_CONF"
write_edge_conf "$EDGE_CONF"
FILE_BYTES=$((FILE_MIB * 1024 * 1024))

trap 'stop_clients; stop_servers' EXIT
trap 'exit 130' INT TERM

base_url() { # server mode
  if [[ $2 == http ]]; then echo "http://$HOST:$(http_port "$1")"; else echo "https://$HOST:$(tls_port "$1")"; fi
}
port_of() { if [[ $2 == http ]]; then http_port "$1"; else tls_port "$1"; fi; }
wrk_threads_for() { # conns
  local t=${WRK_THREADS:-$N_CLIENT}
  ((t > $1)) && t=$1
  echo "$t"
}

# correctness gate: a segment over each mode, byte for byte; RESP_BYTES[server] = the
# size of a whole response (head + file), for req/s
declare -A RESP_BYTES=()
verify_server() { # server
  local s=$1 m got want head
  want=$(sha256sum "$WWW/seg_000.ts" | cut -d' ' -f1)
  for m in $MODES; do
    got=$(curl -sSk --fail --max-time 20 "$(base_url "$s" "$m")/seg_000.ts" | sha256sum | cut -d' ' -f1) ||
      die "$s: GET $(base_url "$s" "$m")/seg_000.ts failed"
    [[ $got == "$want" ]] || die "$s $m: wrong bytes for seg_000.ts (sha256 $got, expected $want)"
  done
  head=$(curl -sk --max-time 20 -D - -o /dev/null "$(base_url "$s" "$(awk '{ print $1 }' <<<"$MODES")")/seg_000.ts" | wc -c)
  RESP_BYTES[$s]=$((FILE_BYTES + head))
  log "$s: GET seg_000.ts sha256 OK over $MODES (response head $head bytes)"
}

# per-worker connections now ("min/max" over the workers, or n/a)
conn_spread() { # server mode
  local s=$1 port
  port=$(port_of "$s" "$2")
  if [[ $s == edge ]]; then
    edge_metrics "$HOST:$EDGE_ADMIN_PORT" "$EDGE_STATE" | metric_values edge_worker_open_connections | min_max
  else
    # shellcheck disable=SC2046
    established_by_pid "$port" $(pgrep -P "${PID[nginx]}") | min_max
  fi
}

# ---------------------------------------------------------------- host info
KERNEL=$(uname -sr)
CPU_MODEL=$(cpu_model)
NGINX_VERSION=$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')
EDGE_VERSION=$([[ -x $EDGE_BIN ]] && "$EDGE_BIN" --version 2>&1 || echo "not found")
WRK_VERSION=$("$WRK" -v 2>&1 | awk 'NR == 1 { print $2 }' || true) # wrk -v exits 1
log "host: $KERNEL, nproc $NPROC ($CPU_MODEL), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
log "CPU sets: servers on $SERVER_CPUS ($N_SERVER CPUs), the client ($LOAD) on $CLIENT_CPUS ($N_CLIENT CPUs); open-file limit $(ulimit -Sn)"
log "nginx: $NGINX_VERSION, worker_processes $WORKERS, reuseport, worker_connections $MAX_CONNS, sendfile, no kTLS"
log "edge: $EDGE_VERSION ($EDGE_BIN), EDGE_WORKER_THREADS=$WORKERS, max_connections $MAX_CONNS, ktls off"
CLIENT_DESC="wrk $WRK_VERSION \`-t T -c C --timeout $WRK_TIMEOUT\`"
[[ $LOAD == fetch ]] && CLIENT_DESC="fetch-load \`--threads T --conns C --timeout ${WRK_TIMEOUT%s}\` (bodies discarded in the kernel; HTTPS: TLS 1.3 AES-256-GCM, head and last record decrypted)"
log "load: $CLIENT_DESC, T <= $N_CLIENT, conns: $CONNS, modes: $MODES, ${DURATION}s window after the ramp, $NFILES files x ${FILE_MIB} MiB round-robin"

for s in $SERVERS; do
  if [[ $s == nginx ]]; then start_pinned nginx "$NGINX_CONF" "$SERVER_CPUS" scale-nginx /small.bin
  else start_pinned edge "$EDGE_CONF" "$SERVER_CPUS" scale-edge /small.bin; fi
  log "$s started (pid ${PID[$s]})"
  verify_server "$s"
done
if [[ ${PID[edge]+x} ]]; then
  log "edge threads: $(awk '/^Threads:/{print $2}' "/proc/${PID[edge]}/status"), workers: $(worker_ticks edge "${PID[edge]}" | wc -l)"
  if [[ -z $(edge_metrics "$HOST:$EDGE_ADMIN_PORT" "$EDGE_STATE" | metric_values edge_worker_open_connections) ]]; then
    log "edge has no edge_worker_open_connections metric: its connection spread is n/a"
  fi
fi

# ---------------------------------------------------------------- points
RESULTS=$OUT/scale-results.tsv
printf 'server\tmode\tconns\twrk_threads\tramp_s\twindow_s\tmb_s\treq_s\tserver_cpu_s\tserver_util\tcpu_s_per_gb\tclient_util\terrors\tconn_spread\tcpu_spread_s\twrk_requests\tload1\tbound\ttcp_mem_pages\ttcp_pressure\tround\tserver_user_share\tclient_wakeups_per_gb\n' >"$RESULTS"
# the kernel's TCP memory thresholds (tcp_mem, pages), and now: pages in use, pressure
TCP_MEM=$(tr -s ' \t' ' ' </proc/sys/net/ipv4/tcp_mem)
tcp_mem_pages() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }
tcp_pressure() { awk '$1 == "TCP" { print $5 }' /proc/net/protocols; }
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')

now() { echo "$EPOCHREALTIME"; }
sleep_until() { # epoch seconds (fractional)
  local d
  d=$(awk -v t="$1" -v n="$EPOCHREALTIME" 'BEGIN { d = t - n; printf "%.3f", (d > 0) ? d : 0 }')
  sleep "$d"
}

# starts the load in the background: CLIENT_PID, its output in $1; for LOAD=fetch
# its running totals in $1.stats
start_load() { # logfile server mode conns threads seconds
  local logf=$1 s=$2 m=$3 c=$4 t=$5 secs=$6
  if [[ $LOAD == wrk ]]; then
    taskset -c "$CLIENT_CPUS" "$WRK" -t "$t" -c "$c" -d "${secs}s" --timeout "$WRK_TIMEOUT" --latency \
      -s "$OUT/scale.lua" "$(base_url "$s" "$m")/" -- /seg_%03d.ts "$NFILES" >"$logf" 2>&1 &
  else
    rm -f "$logf.stats"
    taskset -c "$CLIENT_CPUS" "$FETCH_LOAD_BIN" --addr "$HOST:$(port_of "$s" "$m")" --conns "$c" --threads "$t" \
      "$([[ $m == https ]] && echo --tls || echo --plain)" --path /seg_%03d.ts --nfiles "$NFILES" \
      --timeout "${WRK_TIMEOUT%s}" --duration "$secs" --stats "$logf.stats" \
      ${BUSY_POLL_ARG:+"$BUSY_POLL_ARG"} >"$logf" 2>&1 &
  fi
  CLIENT_PID=$!
}
# bytes the client has read from its sockets so far
load_bytes() { # pid logfile
  if [[ $LOAD == wrk ]]; then proc_rchar "$1"
  else sed -n 's/^bytes=\([0-9]*\) .*/\1/p' "$2.stats" 2>/dev/null; fi
}
# key=value from the client's final summary: errors, requests
load_summary() { # logfile key
  if [[ $LOAD == wrk ]]; then
    if [[ $2 == errors ]]; then wrk_errors "$1"; else wrkstat "$1" requests; fi
  else
    awk -v k="$([[ $2 == requests ]] && echo responses || echo "$2")" '$1 ~ /^bytes=/ {
      for (i = 1; i <= NF; i++) { split($i, p, "="); if (p[1] == k) print p[2] } }' "$1"
  fi
}

bench_point() { # server mode conns round
  local s=$1 m=$2 c=$3 r=$4 port threads eff logf wpid pids pids_after t_start ramp ts t0 t1 n
  local usr0 usr1 cw0 cw1 srv0 srv1 wrk0 wrk1 rc0 rc1 w0 w1 cspread tmem tpress load1 errors requests
  port=$(port_of "$s" "$m")
  threads=$(wrk_threads_for "$c")
  eff=$c
  [[ $LOAD == wrk ]] && eff=$((c / threads * threads)) # wrk gives each thread conns/threads
  ((eff == c)) || warn "wrk opens $eff connections, not $c ($c / $threads threads rounded down)"
  logf=$OUT/logs/scale-wrk-$s-$m-c$c.txt
  ((ROUNDS == 1)) || logf=$OUT/logs/scale-wrk-$s-$m-c$c-r$r.txt
  load1=$(cut -d' ' -f1 /proc/loadavg)
  pids=$(proc_tree "${PID[$s]}" | sort -n | tr '\n' ' ')

  start_load "$logf" "$s" "$m" "$c" "$threads" "$((RAMP_MAX + SETTLE + DURATION + 30))"
  wpid=$CLIENT_PID
  CLIENT[wrk]=$wpid
  t_start=$(now)
  while :; do
    kill -0 "$wpid" 2>/dev/null || { cat "$logf" >&2; die "the client ($LOAD) exited early for $s $m c=$c"; }
    n=$(receiving_from "$port" "$RAMP_BYTES")
    ((n * 100 >= eff * 99)) && break # 99 %: room for connections wrk has just reopened
    if awk -v a="$t_start" -v b="$EPOCHREALTIME" -v m="$RAMP_MAX" 'BEGIN { exit !(b - a > m) }'; then
      warn "$s $m c=$c: only $n of $eff connections receiving after ${RAMP_MAX}s; measuring anyway"
      break
    fi
    sleep 0.3
  done
  ramp=$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  sleep "$SETTLE"

  # shellcheck disable=SC2086
  { t0=$(now); srv0=$(cpu_ticks $pids); usr0=$(user_ticks $pids); wrk0=$(cpu_ticks "$wpid"); cw0=$(sleeps "$wpid"); rc0=$(load_bytes "$wpid" "$logf"); }
  w0=$(worker_ticks "$s" "${PID[$s]}")
  ts=$(awk -v t="$t0" -v d="$DURATION" 'BEGIN { printf "%.6f", t + d }')
  sleep_until "$(awk -v t="$t0" -v d="$DURATION" 'BEGIN { printf "%.6f", t + d / 2 }')"
  cspread=$(conn_spread "$s" "$m")
  tmem=$(tcp_mem_pages)
  tpress=$(tcp_pressure)
  sleep_until "$ts"
  # shellcheck disable=SC2086
  { t1=$(now); srv1=$(cpu_ticks $pids); usr1=$(user_ticks $pids); wrk1=$(cpu_ticks "$wpid"); cw1=$(sleeps "$wpid"); rc1=$(load_bytes "$wpid" "$logf"); }
  w1=$(worker_ticks "$s" "${PID[$s]}")
  kill -INT "$wpid" 2>/dev/null || true
  wait "$wpid" || { cat "$logf" >&2; die "the client ($LOAD) failed for $s $m c=$c (see $logf)"; }
  unset 'CLIENT[wrk]'
  pids_after=$(proc_tree "${PID[$s]}" | sort -n | tr '\n' ' ')
  [[ $pids == "$pids_after" ]] || warn "$s process set changed during the run ($pids -> $pids_after); CPU may be off"
  [[ $LOAD == fetch ]] || grep -q '^WRKSTAT' "$logf" || die "no WRKSTAT line in $logf"
  [[ -n $rc0 && -n $rc1 ]] || die "cannot read the client's bytes read (wrk: /proc/$wpid/io, run as root; fetch-load: $logf.stats)"
  errors=$(load_summary "$logf" errors)
  requests=$(load_summary "$logf" requests)
  [[ -n $errors && -n $requests ]] || { cat "$logf" >&2; die "no summary from the client in $logf"; }

  awk -v s="$s" -v m="$m" -v c="$c" -v th="$threads" -v ramp="$ramp" -v t0="$t0" -v t1="$t1" \
      -v srv="$((srv1 - srv0))" -v usr="$((usr1 - usr0))" -v r="$r" -v cw="$((cw1 - cw0))" -v wrk="$((wrk1 - wrk0))" -v rb="$((rc1 - rc0))" -v hz="$CLK_TCK" \
      -v ns="$N_SERVER" -v nc="$N_CLIENT" -v errors="$errors" -v requests="$requests" \
      -v resp="${RESP_BYTES[$s]}" -v cspread="$cspread" -v w0="$w0" -v w1="$w1" -v load1="$load1" -v tmem="${tmem:-0}" -v tpress="${tpress:-n/a}" \
      -v sat="$SATURATION" 'BEGIN {
    win = t1 - t0
    mbs = rb / win / 1e6
    rps = rb / resp / win
    cpu = srv / hz; cli = wrk / hz
    perg = (rb > 0) ? cpu / (rb / 1e9) : 0
    # per-worker CPU seconds over the window
    n0 = split(w0, a, "\n"); for (i = 1; i <= n0; i++) { split(a[i], f, " "); before[f[1]] = f[2] }
    n1 = split(w1, b, "\n"); lo = ""; hi = ""
    for (i = 1; i <= n1; i++) { split(b[i], f, " "); if (!(f[1] in before)) continue
      d = (f[2] - before[f[1]]) / hz
      if (lo == "" || d < lo) lo = d; if (hi == "" || d > hi) hi = d }
    cs = (lo == "") ? "n/a" : sprintf("%.1f/%.1f", lo, hi)
    su = cpu / win / ns; cu = cli / win / nc
    bound = (su >= sat) ? "server" : (cu >= sat) ? "client" : "neither"
    us = (srv > 0) ? usr / srv : 0
    printf "%s\t%s\t%d\t%d\t%s\t%.2f\t%.1f\t%.1f\t%.2f\t%.2f\t%.3f\t%.2f\t%d\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%d\t%.3f\t%.0f\n",
      s, m, c, th, ramp, win, mbs, rps, cpu, su, perg, cu, errors, cspread, cs, requests, load1, bound, tmem, tpress, r, us, (rb > 0) ? cw / (rb / 1e9) : 0
  }' >>"$RESULTS"
  tail -n 1 "$RESULTS" | awk -F'\t' -v rounds="$ROUNDS" '{
    note = ($18 == "client") ? "  CLIENT-BOUND" : ($18 == "neither") ? "  (neither server nor client saturated)" : ""
    if ($20 == "yes") note = note "  TCP MEMORY PRESSURE"
    printf "    %-5s %-5s c=%-5s%s %9s MB/s %9s req/s  server CPU %6s s (%3.0f%% of its CPUs, %4.1f%% user)  %7s CPU-s/GB  client %3.0f%% (%s wake-ups/GB)  errors %s  conns/worker %s  CPU-s/worker %s  TCP mem %s pages  (ramp %s s)%s\n",
      $1, $2, $3, (rounds > 1) ? " r" $21 : "", $7, $8, $9, 100 * $10, 100 * $22, $11, 100 * $12, $23, $13, $14, $15, $19, $5, note }'
  ((errors == 0)) || warn "$s $m c=$c: $errors client errors (socket errors, bad responses, over $WRK_TIMEOUT), see $logf"
  sleep 1 # let the closed connections drain
}

for m in $MODES; do
  log "mode $m"
  if ((WARMUP > 0)); then
    for s in $SERVERS; do
      start_load "$OUT/logs/scale-wrk-$s-$m-warmup.txt" "$s" "$m" "$MIN_C" "$(wrk_threads_for "$MIN_C")" "$WARMUP"
      wait "$CLIENT_PID" || die "warm-up ($LOAD) failed for $s $m (see $OUT/logs/scale-wrk-$s-$m-warmup.txt)"
    done
  fi
  for c in $CONNS; do
    for r in $(seq "$ROUNDS"); do
      order=$SERVERS
      ((r % 2 == 0)) && order=$(tr ' ' '\n' <<<"$SERVERS" | grep . | tac | tr '\n' ' ')
      for s in $order; do bench_point "$s" "$m" "$c" "$r"; done
    done
  done
done
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
stop_servers

# ---------------------------------------------------------------- report
echo
echo "Results (window after the ramp; MB = 10^6 bytes; CPU-s/GB = server CPU seconds per 10^9 bytes; per worker: min/max)"
awk -F'\t' 'NR == 1 {
    printf "%-6s %-5s %6s %5s %9s %9s %9s %6s %6s %9s %6s %7s %13s %13s %8s\n",
      "server", "mode", "conns", "round", "MB/s", "req/s", "srv CPU s", "srv %", "user %", "CPU-s/GB", "cli %", "errors", "conns/worker", "CPU-s/worker", "bound"
    next }
  { printf "%-6s %-5s %6s %5s %9s %9s %9s %5.0f%% %5.1f%% %9s %5.0f%% %7s %13s %13s %8s\n", $1, $2, $3, $21, $7, $8, $9, 100 * $10, 100 * $22, $11, 100 * $12, $13, $14, $15, $18 }' "$RESULTS"

RATIOS=$OUT/scale-ratios.txt
# per point and round, then (ROUNDS > 1) the median of each point's rounds
awk -F'\t' -v rounds="$ROUNDS" '
  function median(list,   v, n, i, j, t) {
    n = split(list, v, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  NR > 1 { k = $2 SUBSEP $3; kr = k SUBSEP $21; mb[$1 SUBSEP kr] = $7; pg[$1 SUBSEP kr] = $11
    if ($1 == "edge") order[++n] = kr }
  END {
    for (i = 1; i <= n; i++) {
      split(order[i], p, SUBSEP); e = "edge" SUBSEP order[i]; g = "nginx" SUBSEP order[i]
      if (!(g in mb) || mb[g] == 0 || pg[g] == 0) continue
      tr = mb[e] / mb[g]; cr = pg[e] / pg[g]
      printf "ratio edge/nginx %s c=%s%s throughput: %.2fx cpu-per-GB: %.2fx\n", p[1], p[2], (rounds > 1) ? " round " p[3] : "", tr, cr
      k = p[1] SUBSEP p[2]
      if (!(k in trs)) korder[++nk] = k
      trs[k] = trs[k] " " tr; crs[k] = crs[k] " " cr; nr[k]++
    }
    if (rounds > 1) for (i = 1; i <= nk; i++) {
      split(korder[i], p, SUBSEP)
      printf "ratio edge/nginx %s c=%s median of %d rounds throughput: %.2fx cpu-per-GB: %.2fx\n", p[1], p[2], nr[korder[i]], median(trs[korder[i]]), median(crs[korder[i]])
    }
  }' "$RESULTS" >"$RATIOS"
echo
if [[ -s $RATIOS ]]; then
  cat "$RATIOS"
  echo "(throughput > 1: edge serves more; cpu-per-GB < 1: edge spends less CPU per byte)"
else
  echo "no ratios: edge and nginx were not both benchmarked"
fi

MD=$OUT/scale-results.md
NGINX_OFC="" EDGE_OFC=""
if ((${OPEN_FILE_CACHE:-0} > 0)); then
  NGINX_OFC=", \`open_file_cache max=$OPEN_FILE_CACHE\` (valid 1s)"
  EDGE_OFC=", \`open_file_cache = $OPEN_FILE_CACHE\` (valid 1 s)"
fi
{
  echo "### Many connections: edge vs nginx, servers on their own CPUs ($START_DATE)"
  echo
  echo "- host: $KERNEL, nproc $NPROC ($CPU_MODEL); load avg at start $START_LOAD, at end $END_LOAD"
  echo "- CPU sets: servers \`taskset -c $SERVER_CPUS\` ($N_SERVER CPUs), client \`taskset -c $CLIENT_CPUS\` ($N_CLIENT CPUs)"
  echo "- nginx: $NGINX_VERSION, \`worker_processes $WORKERS\`, \`reuseport\`, \`worker_connections $MAX_CONNS\`, sendfile, tcp_nopush, keepalive_requests 1000000, access_log off$NGINX_OFC"
  echo "- edge: $EDGE_VERSION, \`EDGE_WORKER_THREADS=$WORKERS\`, \`max_connections = $MAX_CONNS\`, \`min_send_rate_bytes_per_sec = 0\`$EDGE_OFC; binary \`$EDGE_BIN\`$([[ -x $EDGE_BIN ]] && date -u -r "$EDGE_BIN" '+ (%Y-%m-%d %H:%M UTC)')"
  echo "- client: $CLIENT_DESC (T = CPUs in the client set, at most C), keep-alive, $NFILES files x ${FILE_MIB} MiB round-robin, loopback"
  ROUNDS_DESC="$ROUNDS round"
  ((ROUNDS == 1)) || ROUNDS_DESC+="s, the servers' order reversed every other round"
  echo "- window: ${DURATION} s per point, server and round ($ROUNDS_DESC), starting ${SETTLE} s after 99 % of the C connections had received over $RAMP_BYTES bytes (connects and TLS handshakes left out); MB/s = bytes the client read from its sockets in the window (TLS records over HTTPS); req/s = that / response size (head + file); server CPU = utime+stime of all its processes and threads; TLS 1.2/1.3, ECDSA P-256, no kTLS"
  echo "- per worker (min/max): connections halfway through the window (edge: \`edge_worker_open_connections\`, n/a when the binary lacks it or the scrape took over 5 s; nginx: ss per worker pid) and CPU seconds in the window (nginx worker processes; edge: the main thread, worker 0, and the \`edge-worker-N\` threads)"
  echo "- TCP mem pages: the kernel's TCP memory halfway through the window (/proc/net/sockstat), marked (pressure) when TCP was under memory pressure then (/proc/net/protocols); tcp_mem is $TCP_MEM pages: pressure starts above the second value and ends below the first, and while it lasts the kernel cuts every socket's send buffer"
  echo "- bound: server = the server used at least $SATURATION of its CPUs (the point measures the server), client = the client did while the server did not (it measures the client), neither = both below (something else held the CPUs back)"
  echo "- command: \`$COMMAND_LINE\`"
  echo
  echo "| server | mode | conns | round | MB/s | req/s | server CPU s | server CPU % of set | user % of server CPU | CPU s/GB | client CPU % of set | client wake-ups per GB | bound | errors | conns per worker | CPU s per worker | TCP mem pages |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|"
  awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s | %s | %s | %s | %.0f%% | %.1f%% | %s | %.0f%% | %s | %s | %s | %s | %s | %s%s |\n", $1, $2, $3, $21, $7, $8, $9, 100 * $10, 100 * $22, $11, 100 * $12, $23, $18, $13, $14, $15, $19, ($20 == "yes") ? " (pressure)" : "" }' "$RESULTS"
  if [[ -s $RATIOS ]]; then
    echo
    echo "| edge/nginx | conns | round | throughput (higher is better) | CPU s per GB (lower is better) |"
    echo "|---|--:|--:|--:|--:|"
    awk '{ r = ($5 == "round") ? $6 : ($5 == "median") ? "**median of " $7 "**" : "1"
      printf "| %s | %s | %s | %s | %s |\n", $3, substr($4, 3), r, $(NF - 2), $NF }' "$RATIOS"
  fi
} >"$MD"
echo
log "wrote $MD (raw: $RESULTS; logs: $OUT/logs/scale-*)"
log "command: $COMMAND_LINE"

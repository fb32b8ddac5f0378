#!/usr/bin/env bash
# bench/storm-bench.sh -- a reconnect storm against viewers already watching: `edge`
# vs Debian's nginx, HTTPS, in one run.
#
# For each server (SERVERS, one after the other, alone on SERVER_CPUS with WORKERS
# workers: edge EDGE_WORKER_THREADS, nginx worker_processes with reuseport):
#   warm-up   WARMUP s of the keep-alive load below, not recorded;
#   baseline  keep-alive load alone: KA_CONNS (64) keep-alive connections fetching
#             NFILES files of FILE_MIB MiB round-robin over HTTPS for DURATION s: p50/p99
#             of the response times (request written to body read) and MB/s. The
#             client (KA_LOAD): fetch = fetch-load (bench/hs-load), which discards the
#             bodies in the kernel and decrypts only the records holding a response's
#             head and its last bytes (see bench/README.md), so the viewers cost the
#             client core a fraction of what they cost the server and the flood's wrk
#             gets most of that core; wrk = wrk --latency, which decrypts and copies
#             every byte and takes most of the client core itself;
#   flood     the same keep-alive load, FLOOD_MARGIN + DURATION + FLOOD_MARGIN s long,
#             and from FLOOD_MARGIN s into it, for DURATION s, a second wrk with
#             FLOOD_CONNS (256) connections doing connection-per-request over HTTPS
#             (`-H 'Connection: close'`: TCP connect, TLS handshake, GET
#             /small.bin (1 KiB), close, again), also --latency. wrk times a request
#             from its write, after the handshake, so the flood's p50 is how long a new
#             viewer waits for its first byte once connected, and the keep-alive
#             p50/p99 how the storm slows the viewers who were already there.
#             fetch-load records only the viewers' responses completed while the
#             flood runs (--record-from/--record-until; wrk as the viewers' client
#             records the margins too); the viewers' MB/s covers their whole run,
#             margins included. Every flood request meets the viewers: with
#             the flood running alone, even for a second, its wrk counts thousands of
#             fast requests that say nothing about the storm (an earlier version of
#             this script ran the flood 1 s longer on each side, and most of its
#             requests were those).
# Both clients are pinned to CLIENT_CPUS; the server's CPU seconds (utime+stime of its
# processes, /proc/PID/stat) are read around each phase.
#
# Per server it prints: keep-alive p99 at baseline and under the flood, their ratio,
# keep-alive p50 and MB/s in both phases, the flood's p50/p99 and req/s (= new
# connections per second) and errors. Then edge vs nginx: edge's keep-alive p99 under
# the flood against nginx's, and edge's flood p50 against nginx's, and the acceptance
# targets with PASS/FAIL (informational: the script exits 0 either way):
#   1. keep-alive p99 under the flood <= 2x its baseline (edge; nginx's shown too)
#   2. edge's keep-alive p99 under the flood <= nginx's
#   3. edge's flood p50 <= nginx's
#
# Usage (from anywhere; run as root or have nginx/wrk/openssl/curl installed):
#   cargo build --release -p edge -p hs-load      # once; the script never runs cargo
#   bench/storm-bench.sh                          # 2 servers x (2 + 10 + 1 + 12) s (~1 min)
#   DURATION=3 WARMUP=1 bench/storm-bench.sh      # quick check
#   SERVER_CPUS=0-3 CLIENT_CPUS=4-15 bench/storm-bench.sh   # 16-core machine
#
# Environment (defaults in brackets):
#   OUT               work/output dir [<repo>/bench/out] (gitignored)
#   EDGE_BIN          edge binary [${CARGO_TARGET_DIR:-<repo>/target}/release/edge]
#   SERVERS           in this order ["nginx edge"]
#   DURATION          seconds of each measured keep-alive run and of the flood [10]
#   FLOOD_MARGIN      seconds the keep-alive load runs before and after the flood [1]
#   WARMUP            unmeasured keep-alive seconds before the baseline, 0 = none [2]
#   KA_CONNS          keep-alive connections [64]
#   FLOOD_CONNS       connection-per-request connections [256]
#   SERVER_CPUS       CPU list for the server (taskset -c) [0]
#   CLIENT_CPUS       CPU list for both clients (and this script) [every other CPU]
#   KA_LOAD           keep-alive client: fetch or wrk (above) [fetch]
#   FETCH_LOAD_BIN    fetch-load binary [${CARGO_TARGET_DIR:-<repo>/target}/release/fetch-load]
#   WORKERS           edge worker threads = nginx worker processes [CPUs in SERVER_CPUS]
#   KA_THREADS        threads of the keep-alive client [CPUs in CLIENT_CPUS, at most KA_CONNS]
#   FLOOD_THREADS     wrk -t of the flood [CPUs in CLIENT_CPUS, at most FLOOD_CONNS]
#   WRK_TIMEOUT       wrk --timeout: slower responses count as errors [30s]
#   NFILES FILE_MIB   segment files [32 2]
#   NGINX_BIN         [nginx from PATH or /usr/sbin/nginx]
#   NGINX_HTTPS_PORT                    [30443]
#   EDGE_TLS_PORT EDGE_ADMIN_PORT       [30543 30181]
#   (the script aborts if one of them is already in use)
#
# Servers: TLS 1.2/1.3, ECDSA P-256 self-signed certificate, no kTLS; nginx sendfile,
# keepalive_requests 1000000, access_log off, worker_connections 4096, reuseport and
# backlog=4096; edge max_connections 4096, max_requests_per_connection 1000000,
# min_send_rate_bytes_per_sec 0 (as scale-bench.sh). nginx runs without a session cache
# and edge with its defaults; both issue TLS 1.3 session tickets. wrk keeps each
# connection slot's session for the slot's next connection (SSL_clear), so after the
# first handshake per slot the flood's handshakes are resumptions, on both servers
# (measured with the flood alone: nginx 8,917 of 9,173 by $ssl_session_reused, edge
# 2,889 of 3,209 by edge_tls_handshakes_total): a ticket and a key exchange, no
# certificate signature.
# Output: the lines above on stdout; $OUT/storm-results.md (markdown with host,
# nproc, CPU sets and the command line); raw rows in $OUT/storm-results.tsv; wrk
# output and server logs in $OUT/logs/storm-*.  MB = 10^6 bytes.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

# the command as given, with the settings from the environment
COMMAND_LINE=""
for v in OUT EDGE_BIN SERVERS DURATION WARMUP KA_CONNS FLOOD_CONNS SERVER_CPUS CLIENT_CPUS \
  WORKERS KA_LOAD FETCH_LOAD_BIN KA_THREADS FLOOD_THREADS WRK_TIMEOUT NFILES FILE_MIB NGINX_BIN; do
  if [[ -n ${!v:-} ]]; then COMMAND_LINE+="$v=$(printf '%q' "${!v}") "; fi
done
COMMAND_LINE+="$0${*:+ $*}"

OUT=${OUT:-$ROOT/bench/out}
EDGE_BIN=${EDGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/edge}
SERVERS=${SERVERS:-nginx edge}
DURATION=${DURATION:-10}
FLOOD_MARGIN=${FLOOD_MARGIN:-1}
WARMUP=${WARMUP:-2}
KA_CONNS=${KA_CONNS:-64}
KA_LOAD=${KA_LOAD:-fetch}
FETCH_LOAD_BIN=${FETCH_LOAD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/fetch-load}
FLOOD_CONNS=${FLOOD_CONNS:-256}
SERVER_CPUS=${SERVER_CPUS:-0}
WRK_TIMEOUT=${WRK_TIMEOUT:-30s}
NFILES=${NFILES:-32}
FILE_MIB=${FILE_MIB:-2}
NGINX_HTTPS_PORT=${NGINX_HTTPS_PORT:-30443}
EDGE_TLS_PORT=${EDGE_TLS_PORT:-30543}
EDGE_ADMIN_PORT=${EDGE_ADMIN_PORT:-30181}
HOST=127.0.0.1
# HTTPS only: no plain listeners (write_*_conf leave them out when these are empty)
NGINX_HTTP_PORT=""
EDGE_HTTP_PORT=""
IDLE_TIMEOUT=75
MAX_CONNS=4096

# shellcheck source=bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

# ---------------------------------------------------------------- checks, tools
for s in $SERVERS; do [[ $s == nginx || $s == edge ]] || die "unknown server '$s' (nginx and/or edge)"; done
for v in DURATION WARMUP KA_CONNS FLOOD_CONNS NFILES FILE_MIB; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number: ${!v}"
done
((DURATION > 0 && KA_CONNS > 0 && FLOOD_CONNS > 0)) || die "DURATION, KA_CONNS and FLOOD_CONNS must be positive"
[[ " $SERVERS " != *" edge "* || -x $EDGE_BIN ]] ||
  die "edge binary not found at $EDGE_BIN (build it with 'cargo build --release' or set EDGE_BIN)"
[[ $KA_LOAD == fetch || $KA_LOAD == wrk ]] || die "unknown KA_LOAD '$KA_LOAD' (fetch or wrk)"
[[ $KA_LOAD == wrk || -x $FETCH_LOAD_BIN ]] ||
  die "fetch-load not found at $FETCH_LOAD_BIN (build it with 'cargo build --release -p hs-load' or set FETCH_LOAD_BIN)"

install_missing
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
WRK=$(command -v wrk)
CLK_TCK=$(getconf CLK_TCK)
N_SERVER=$(cpu_count "$SERVER_CPUS")
if [[ -z ${CLIENT_CPUS:-} ]]; then
  CLIENT_CPUS=$(other_cpus "$SERVER_CPUS")
  [[ -n $CLIENT_CPUS ]] || { CLIENT_CPUS=$SERVER_CPUS; warn "no CPU left for the clients: they share $SERVER_CPUS with the server"; }
fi
N_CLIENT=$(cpu_count "$CLIENT_CPUS")
WORKERS=${WORKERS:-$N_SERVER}
[[ $WORKERS =~ ^[0-9]+$ && $WORKERS -gt 0 ]] || die "WORKERS must be a positive integer: $WORKERS"
KA_THREADS=${KA_THREADS:-$((N_CLIENT < KA_CONNS ? N_CLIENT : KA_CONNS))}
FLOOD_THREADS=${FLOOD_THREADS:-$((N_CLIENT < FLOOD_CONNS ? N_CLIENT : FLOOD_CONNS))}
((KA_THREADS <= KA_CONNS && FLOOD_THREADS <= FLOOD_CONNS)) || die "wrk threads must not exceed its connections"
taskset -c "$SERVER_CPUS" true 2>/dev/null || die "cannot pin to SERVER_CPUS=$SERVER_CPUS"
NPROC=$(nproc) # before this script pins itself to the client CPUs
taskset -pc "$CLIENT_CPUS" $$ >/dev/null 2>&1 || die "cannot pin to CLIENT_CPUS=$CLIENT_CPUS"
raise_nofile $((KA_CONNS + FLOOD_CONNS + 256))
check_ports_free "$NGINX_HTTPS_PORT" "$EDGE_TLS_PORT" "$EDGE_ADMIN_PORT"

# ---------------------------------------------------------------- work dir, configs
mkdir -p "$OUT/logs" "$OUT/nginx-tmp"
OUT=$(cd "$OUT" && pwd)
WWW=$OUT/www
EDGE_STATE=$OUT/storm-edge-state
mkdir -p "$WWW" "$EDGE_STATE"
log "work dir: $OUT"
ensure_segments "$WWW" "$NFILES" "$FILE_MIB"
ensure_small "$WWW"
ensure_cert "$OUT"
write_wrk_lua "$OUT/storm.lua"
NGINX_CONF=$OUT/storm-nginx.conf
EDGE_CONF=$OUT/storm-edge.toml
write_nginx_conf "$NGINX_CONF"
write_edge_conf "$EDGE_CONF"

trap 'stop_clients; stop_servers' EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- host info
KERNEL=$(uname -sr)
CPU_MODEL=$(cpu_model)
NGINX_VERSION=$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')
EDGE_VERSION=$([[ -x $EDGE_BIN ]] && "$EDGE_BIN" --version 2>&1 || echo "not found")
WRK_VERSION=$("$WRK" -v 2>&1 | awk 'NR == 1 { print $2 }' || true) # wrk -v exits 1
log "host: $KERNEL, nproc $NPROC ($CPU_MODEL), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
log "CPU sets: server on $SERVER_CPUS ($N_SERVER CPUs), both clients on $CLIENT_CPUS ($N_CLIENT CPUs)"
KA_DESC="wrk $WRK_VERSION \`-t $KA_THREADS -c $KA_CONNS -d ${DURATION}s --latency\`"
[[ $KA_LOAD == fetch ]] && KA_DESC="fetch-load \`--tls --threads $KA_THREADS --conns $KA_CONNS --duration $DURATION\` (bodies discarded in the kernel, only heads and last records decrypted; latency from the request write to the body's end)"
log "nginx: $NGINX_VERSION, worker_processes $WORKERS, reuseport; edge: $EDGE_VERSION ($EDGE_BIN), EDGE_WORKER_THREADS=$WORKERS; HTTPS, no kTLS"
log "keep-alive: $KA_DESC, $NFILES x ${FILE_MIB} MiB round-robin, ${DURATION}s; flood: wrk -t $FLOOD_THREADS -c $FLOOD_CONNS, Connection: close, /small.bin (1 KiB)"
if ((NPROC <= 2)); then
  warn "only $NPROC CPUs: both clients share one core, and the flood is bounded by the client's handshakes; compare the servers, not the absolute numbers"
fi

RESULTS=$OUT/storm-results.tsv
printf 'server\tka_base_p50_ms\tka_base_p99_ms\tka_base_mb_s\tka_base_errors\tbase_server_cpu_s\tka_flood_p50_ms\tka_flood_p99_ms\tka_flood_mb_s\tka_flood_errors\tflood_p50_ms\tflood_p99_ms\tflood_req_s\tflood_errors\tflood_server_cpu_s\tload1\n' >"$RESULTS"
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
URL_KA=""
PORT_KA=""

# seconds logfile [--latency [FROM UNTIL]] -> runs in the background, pid in $!; FROM
# UNTIL: fetch-load records the latencies of responses completed in that window (s)
ka_wrk() {
  if [[ $KA_LOAD == fetch ]]; then
    local window=()
    [[ -n ${4:-} ]] && window=(--record-from "$4" --record-until "$5")
    taskset -c "$CLIENT_CPUS" "$FETCH_LOAD_BIN" --addr "$HOST:$PORT_KA" --tls --conns "$KA_CONNS" \
      --threads "$KA_THREADS" --path /seg_%03d.ts --nfiles "$NFILES" --timeout "${WRK_TIMEOUT%s}" \
      --duration "$1" "${window[@]}" >"$2" 2>&1 &
  else
    taskset -c "$CLIENT_CPUS" "$WRK" -t "$KA_THREADS" -c "$KA_CONNS" -d "$1s" --timeout "$WRK_TIMEOUT" ${3:+"$3"} \
      -s "$OUT/storm.lua" "$URL_KA" -- /seg_%03d.ts "$NFILES" >"$2" 2>&1 &
  fi
}
flood_wrk() { # seconds logfile -> runs in the background, pid in $!
  taskset -c "$CLIENT_CPUS" "$WRK" -t "$FLOOD_THREADS" -c "$FLOOD_CONNS" -d "$1s" --timeout "$WRK_TIMEOUT" --latency \
    -H 'Connection: close' -s "$OUT/storm.lua" "$URL_KA" -- /small.bin 1 >"$2" 2>&1 &
}
wait_client() { # name logfile
  wait "${CLIENT[$1]}" || { cat "$2" >&2; die "the $1 client failed, see $2"; }
  unset "CLIENT[$1]"
  if [[ $1 == ka && $KA_LOAD == fetch ]]; then
    grep -q '^bytes=' "$2" || die "no summary line in $2"
  else
    grep -q '^WRKSTAT' "$2" || die "no WRKSTAT line in $2"
  fi
}
# "p50_ms p99_ms MB/s errors" of a WRKSTAT file (or of fetch-load's summary line);
# with "rps" as $2: "p50_ms p99_ms req/s errors"
wrk_summary() {
  if grep -q '^bytes=' "$1"; then
    awk '$1 ~ /^bytes=/ { for (i = 1; i <= NF; i++) { split($i, p, "="); v[p[1]] = p[2] }
      printf "%.2f %.2f %.1f %d\n", v["p50_ms"], v["p99_ms"], v["bytes"] / v["secs"] / 1e6, v["errors"] }' "$1"
    return
  fi
  awk -v what="${2:-}" '$1 == "WRKSTAT" { for (i = 2; i <= NF; i++) { split($i, p, "="); v[p[1]] = p[2] }
    d = v["duration_us"] / 1e6; e = v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"]
    rate = (what == "rps") ? sprintf("%.1f", v["requests"] / d) : sprintf("%.1f", v["bytes"] / d / 1e6)
    printf "%.2f %.2f %s %d\n", v["p50_us"] / 1000, v["p99_us"] / 1000, rate, e }' "$1"
}

bench_server() { # server
  local s=$1 pids t0 t1 f0 f1 base flood ka load1 logb logk logf
  local bp50 bp99 bmb berr kp50 kp99 kmb kerr fp50 fp99 frps ferr
  start_pinned "$s" "$( [[ $s == nginx ]] && echo "$NGINX_CONF" || echo "$EDGE_CONF")" "$SERVER_CPUS" "storm-$s" /small.bin
  URL_KA="https://$HOST:$(tls_port "$s")/"
  PORT_KA=$(tls_port "$s")
  log "$s started (pid ${PID[$s]})"
  pids=$(proc_tree "${PID[$s]}" | sort -n | tr '\n' ' ')
  load1=$(cut -d' ' -f1 /proc/loadavg)
  if ((WARMUP > 0)); then
    ka_wrk "$WARMUP" "$OUT/logs/storm-wrk-$s-warmup.txt"
    CLIENT[ka]=$!
    wait_client ka "$OUT/logs/storm-wrk-$s-warmup.txt"
  fi

  # baseline: keep-alive alone
  logb=$OUT/logs/storm-wrk-$s-ka-base.txt
  # shellcheck disable=SC2086
  t0=$(cpu_ticks $pids)
  ka_wrk "$DURATION" "$logb" --latency
  CLIENT[ka]=$!
  wait_client ka "$logb"
  # shellcheck disable=SC2086
  t1=$(cpu_ticks $pids)
  base=$(wrk_summary "$logb")

  # flood: the keep-alive load runs FLOOD_MARGIN s longer on each side than the
  # connection-per-request flood, which runs DURATION s inside it, so that every
  # flood request meets the viewers; fetch-load records only the viewers' responses
  # completed while the flood runs (wrk as the viewers' client records all)
  sleep 1
  logk=$OUT/logs/storm-wrk-$s-ka-flood.txt
  logf=$OUT/logs/storm-wrk-$s-flood.txt
  ka_wrk $((DURATION + 2 * FLOOD_MARGIN)) "$logk" --latency "$FLOOD_MARGIN" $((FLOOD_MARGIN + DURATION))
  CLIENT[ka]=$!
  sleep "$FLOOD_MARGIN"
  # shellcheck disable=SC2086
  f0=$(cpu_ticks $pids)
  flood_wrk "$DURATION" "$logf"
  CLIENT[flood]=$!
  wait_client flood "$logf"
  # shellcheck disable=SC2086
  f1=$(cpu_ticks $pids)
  wait_client ka "$logk"
  ka=$(wrk_summary "$logk")
  flood=$(wrk_summary "$logf" rps)
  stop_servers

  read -r bp50 bp99 bmb berr <<<"$base"
  read -r kp50 kp99 kmb kerr <<<"$ka"
  read -r fp50 fp99 frps ferr <<<"$flood"
  printf '%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\n' "$s" "$bp50" "$bp99" "$bmb" "$berr" \
    "$(awk -v t=$((t1 - t0)) -v h="$CLK_TCK" 'BEGIN { print t / h }')" "$kp50" "$kp99" "$kmb" "$kerr" \
    "$fp50" "$fp99" "$frps" "$ferr" "$(awk -v t=$((f1 - f0)) -v h="$CLK_TCK" 'BEGIN { print t / h }')" "$load1" >>"$RESULTS"
  tail -n 1 "$RESULTS" | awk -F'\t' '{
    r = ($3 > 0) ? sprintf("%.2fx", $8 / $3) : "n/a"
    printf "    %-5s keep-alive p99 %s ms -> %s ms under the flood (%s), p50 %s -> %s ms, %s -> %s MB/s | flood p50 %s ms p99 %s ms, %s req/s, errors %s | server CPU s %s / %s\n",
      $1, $3, $8, r, $2, $7, $4, $9, $11, $12, $13, $14, $6, $15 }'
  ((berr + kerr == 0)) || warn "$s: keep-alive client errors: $berr at baseline, $kerr under the flood (see $logb, $logk)"
  ((ferr == 0)) || warn "$s: $ferr flood errors (socket errors, non-2xx/3xx, over $WRK_TIMEOUT), see $logf"
}

for s in $SERVERS; do bench_server "$s"; done

# ---------------------------------------------------------------- report
SUMMARY=$OUT/storm-summary.txt
awk -F'\t' 'NR > 1 { s = $1; seen[s] = 1; order[++n] = s; bp99[s] = $3; kp99[s] = $8; fp50[s] = $11; frps[s] = $13 }
  function verdict(ok) { return ok ? "PASS" : "FAIL" }
  END {
    print "Per server (keep-alive = the viewers already watching; flood = connection-per-request, timed from the request write):"
    for (i = 1; i <= n; i++) { s = order[i]; printf "  %-5s keep-alive p99 base %s ms, under flood %s ms, flood/base %s; flood p50 %s ms, flood %s req/s\n",
      s, bp99[s], kp99[s], (bp99[s] > 0) ? sprintf("%.2fx", kp99[s] / bp99[s]) : "n/a", fp50[s], frps[s] }
    if (("edge" in seen) && ("nginx" in seen)) {
      print ""
      printf "edge vs nginx: keep-alive p99 under the flood %s vs %s ms (%s); flood p50 %s vs %s ms (%s); flood req/s %s vs %s\n",
        kp99["edge"], kp99["nginx"], (kp99["nginx"] > 0) ? sprintf("%.2fx", kp99["edge"] / kp99["nginx"]) : "n/a",
        fp50["edge"], fp50["nginx"], (fp50["nginx"] > 0) ? sprintf("%.2fx", fp50["edge"] / fp50["nginx"]) : "n/a",
        frps["edge"], frps["nginx"]
    }
    print ""
    print "Targets (informational):"
    for (i = n; i >= 1; i--) { s = order[i]; if (bp99[s] > 0)
      printf "  %s 1. %s keep-alive p99 under the flood <= 2x its baseline: %s ms <= %.2f ms%s\n",
        verdict(kp99[s] <= 2 * bp99[s]), s, kp99[s], 2 * bp99[s], (s == "edge") ? "" : " (for reference, not a target)" }
    if (("edge" in seen) && ("nginx" in seen)) {
      printf "  %s 2. edge keep-alive p99 under the flood <= nginx: %s ms <= %s ms\n", verdict(kp99["edge"] <= kp99["nginx"]), kp99["edge"], kp99["nginx"]
      printf "  %s 3. edge flood p50 <= nginx: %s ms <= %s ms\n", verdict(fp50["edge"] <= fp50["nginx"]), fp50["edge"], fp50["nginx"]
    } else print "  targets 2 and 3 need both servers"
  }' "$RESULTS" >"$SUMMARY"
echo
cat "$SUMMARY"

MD=$OUT/storm-results.md
{
  echo "### Reconnect storm: keep-alive viewers under a connection-per-request flood, edge vs nginx ($START_DATE)"
  echo
  echo "- host: $KERNEL, nproc $NPROC ($CPU_MODEL)"
  echo "- CPU sets: server \`taskset -c $SERVER_CPUS\` ($N_SERVER CPUs), both clients \`taskset -c $CLIENT_CPUS\` ($N_CLIENT CPUs)"
  echo "- nginx: $NGINX_VERSION, \`worker_processes $WORKERS\`, reuseport, sendfile, access_log off; edge: $EDGE_VERSION, \`EDGE_WORKER_THREADS=$WORKERS\`; HTTPS (TLS 1.2/1.3, ECDSA P-256), no kTLS"
  echo "- keep-alive: $KA_DESC, $NFILES files x ${FILE_MIB} MiB round-robin; flood: wrk \`-t $FLOOD_THREADS -c $FLOOD_CONNS -H 'Connection: close' --latency\` on /small.bin (1 KiB), for ${DURATION} s starting ${FLOOD_MARGIN} s into a keep-alive run $((DURATION + 2 * FLOOD_MARGIN)) s long (fetch-load records the viewers' responses completed while the flood runs); wrk times requests from the write, after the handshake"
  echo "- command: \`$COMMAND_LINE\`"
  echo
  echo "| server | keep-alive p50 ms base | keep-alive p99 ms base | MB/s base | keep-alive p50 ms flood | keep-alive p99 ms flood | p99 flood/base | MB/s flood | flood p50 ms | flood p99 ms | flood req/s | flood errors | server CPU s base / flood |"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s |\n", $1, $2, $3, $4, $7, $8,
    ($3 > 0) ? sprintf("%.2fx", $8 / $3) : "n/a", $9, $11, $12, $13, $14, $6, $15 }' "$RESULTS"
  echo
  sed -n '/^Targets/,$p' "$SUMMARY" | sed 's/^  /- /'
} >"$MD"
echo
log "wrote $MD (raw: $RESULTS; logs: $OUT/logs/storm-*)"
log "command: $COMMAND_LINE"

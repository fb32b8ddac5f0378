#!/usr/bin/env bash
# bench/host-bench.sh -- host benchmark: `edge` vs Debian's nginx, in one run.
#
# Serves N files of 2 MiB random data ("video segments") from both servers on
# 127.0.0.1 and loads them with wrk (keep-alive, files requested round-robin),
# over plain HTTP and over HTTPS (ECDSA P-256 self-signed cert, TLS 1.2/1.3,
# no kTLS).  For every data point it reports requests/s, MB/s, latency, the
# server's CPU seconds (utime+stime from /proc/<pid>/stat, nginx master+worker)
# and server CPU seconds per GB served, then prints a summary table, ratio
# lines (edge/nginx) and writes the table as markdown to $OUT/results.md.
#
# Usage (from anywhere; run as root or have nginx/wrk/openssl/curl installed):
#   bench/host-bench.sh
#   DURATION=3 CONNS="16 64" bench/host-bench.sh          # quick check
#   EDGE_BIN=/path/to/edge SCHEMES=https bench/host-bench.sh
#
# Environment (defaults in brackets):
#   OUT               work/output dir [<repo>/bench/out] (gitignored)
#   EDGE_BIN          edge binary [${CARGO_TARGET_DIR:-<repo>/target}/release/edge];
#                     if it is missing, nginx is benchmarked alone
#   SERVERS           servers to run ["nginx edge"]
#   SCHEMES           ["http https"]
#   CONNS             wrk connection counts ["16 64 256"]
#   DURATION          seconds per data point [10]
#   WARMUP            unmeasured warm-up seconds per server+scheme, 0 = off [2]
#   WRK_THREADS       wrk -t [2]
#   WRK_TIMEOUT       wrk --timeout [10s]
#   NFILES            number of segment files [32]
#   FILE_MIB          size of each file in MiB [2]
#   EDGE_WORKER_THREADS  edge worker threads [1] (nginx runs worker_processes 1)
#   EDGE_URL_PREFIX   URL path prefix under which edge serves [content].root [/]
#   NGINX_BIN         [nginx from PATH or /usr/sbin/nginx]
#   NGINX_HTTP_PORT NGINX_HTTPS_PORT              [24080 24443]
#   EDGE_HTTP_PORT EDGE_TLS_PORT EDGE_ADMIN_PORT  [25080 25443 25081]
#   (the script aborts if one of them is already in use)
#
# Data points are interleaved (for each scheme and conns: nginx, then edge) so
# that background load drifting over time hits both servers alike.  All
# traffic stays on loopback.  Missing tools are installed with apt-get (root).
# Raw wrk output and server logs are kept in $OUT/logs, raw numbers in
# $OUT/results.tsv.  Units: MB = 10^6 bytes, GB = 10^9 bytes.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

OUT=${OUT:-$ROOT/bench/out}
EDGE_BIN=${EDGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/edge}
SERVERS=${SERVERS:-nginx edge}
SCHEMES=${SCHEMES:-http https}
CONNS=${CONNS:-16 64 256}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
WRK_THREADS=${WRK_THREADS:-2}
WRK_TIMEOUT=${WRK_TIMEOUT:-10s}
NFILES=${NFILES:-32}
FILE_MIB=${FILE_MIB:-2}
EDGE_WORKER_THREADS=${EDGE_WORKER_THREADS:-1}
EDGE_URL_PREFIX=${EDGE_URL_PREFIX:-/}
NGINX_HTTP_PORT=${NGINX_HTTP_PORT:-24080}
NGINX_HTTPS_PORT=${NGINX_HTTPS_PORT:-24443}
EDGE_HTTP_PORT=${EDGE_HTTP_PORT:-25080}
EDGE_TLS_PORT=${EDGE_TLS_PORT:-25443}
EDGE_ADMIN_PORT=${EDGE_ADMIN_PORT:-25081}
HOST=127.0.0.1

# shellcheck source=bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

# ---------------------------------------------------------------- tools
install_missing
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
WRK=$(command -v wrk)
CLK_TCK=$(getconf CLK_TCK)

for n in $CONNS; do
  [[ $n =~ ^[0-9]+$ ]] || die "CONNS must be numbers: $CONNS"
  ((n >= WRK_THREADS)) || die "conns ($n) must be >= WRK_THREADS ($WRK_THREADS)"
done

# which servers actually run
RUN_SERVERS=()
for s in $SERVERS; do
  case $s in
    nginx) RUN_SERVERS+=(nginx) ;;
    edge)
      if [[ -x $EDGE_BIN ]]; then
        RUN_SERVERS+=(edge)
      else
        warn "edge binary not found at $EDGE_BIN (build it with 'cargo build --release' or set EDGE_BIN); benchmarking without edge"
      fi ;;
    *) die "unknown server '$s' (use nginx and/or edge)" ;;
  esac
done
((${#RUN_SERVERS[@]})) || die "no server to benchmark"
for sc in $SCHEMES; do [[ $sc == http || $sc == https ]] || die "unknown scheme '$sc'"; done

# ---------------------------------------------------------------- work dir
mkdir -p "$OUT/www" "$OUT/logs" "$OUT/edge-state" "$OUT/nginx-tmp"
OUT=$(cd "$OUT" && pwd)
FILE_BYTES=$((FILE_MIB * 1024 * 1024))

log "work dir: $OUT"
made=0
for ((i = 0; i < NFILES; i++)); do
  f=$(printf '%s/www/seg_%03d.ts' "$OUT" "$i")
  if [[ ! -f $f || $(stat -c %s "$f") -ne $FILE_BYTES ]]; then
    head -c "$FILE_BYTES" /dev/urandom >"$f.tmp" && mv "$f.tmp" "$f"
    made=$((made + 1))
  fi
done
log "segments: $NFILES x ${FILE_MIB} MiB ($made newly generated)"

if [[ ! -s $OUT/cert.pem || ! -s $OUT/key.pem ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$OUT/key.pem" -out "$OUT/cert.pem" -days 365 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
  log "generated ECDSA P-256 self-signed certificate"
fi

# wrk script: round-robin over the segments; args: <prefix> <nfiles>
cat >"$OUT/rr.lua" <<'LUA'
-- Generated by bench/host-bench.sh: request seg_000.ts .. seg_<n-1>.ts round-robin.
-- Usage: wrk ... -s rr.lua URL -- <path-prefix> <nfiles>
local nthreads = 0
function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end

local reqs, n, i = {}, 0, 0
function init(args)
  local prefix = args[1] or "/"
  n = tonumber(args[2]) or 32
  for k = 0, n - 1 do
    reqs[k] = wrk.format("GET", string.format("%sseg_%03d.ts", prefix, k))
  end
  i = ((tid or 0) * 7) % n -- spread the threads' starting points
end

function request()
  local r = reqs[i]
  i = (i + 1) % n
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKSTAT requests=%.0f bytes=%.0f duration_us=%.0f connect=%.0f read=%.0f write=%.0f status=%.0f timeout=%.0f p50_us=%.0f p99_us=%.0f\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
LUA

# nginx config: self-contained, never the system one
{
  [[ $EUID -eq 0 ]] && echo "user root;"
  cat <<EOF
worker_processes 1;
daemon off;
pid $OUT/nginx.pid;
error_log $OUT/logs/nginx-error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    types { video/mp2t ts; }
    default_type application/octet-stream;
    client_body_temp_path $OUT/nginx-tmp/body;
    proxy_temp_path $OUT/nginx-tmp/proxy;
    fastcgi_temp_path $OUT/nginx-tmp/fastcgi;
    uwsgi_temp_path $OUT/nginx-tmp/uwsgi;
    scgi_temp_path $OUT/nginx-tmp/scgi;
    server {
        listen $HOST:$NGINX_HTTP_PORT;
        listen $HOST:$NGINX_HTTPS_PORT ssl;
        ssl_certificate $OUT/cert.pem;
        ssl_certificate_key $OUT/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        # no kTLS: the host kernel has no tls module (ssl_conf_command Options KTLS not set)
        root $OUT/www;
    }
}
EOF
} >"$OUT/nginx.conf"

cat >"$OUT/edge.toml" <<EOF
[server]
tls_listen = "$HOST:$EDGE_TLS_PORT"
http_listen = "$HOST:$EDGE_HTTP_PORT"
admin_listen = "$HOST:$EDGE_ADMIN_PORT"
state_dir = "$OUT/edge-state"

[content]
root = "$OUT/www"

[tls]
cert_path = "$OUT/cert.pem"
key_path = "$OUT/key.pem"
ktls = "off"

[limits]
max_connections = 4096
max_requests_per_connection = 1000000
EOF

# ---------------------------------------------------------------- servers
trap stop_servers EXIT
trap 'exit 130' INT TERM

url_prefix() { if [[ $1 == nginx ]]; then echo /; else echo "$EDGE_URL_PREFIX"; fi; }
base_url() { # server scheme
  if [[ $2 == http ]]; then echo "http://$HOST:$(http_port "$1")"; else echo "https://$HOST:$(tls_port "$1")"; fi
}

start_server() {
  local s=$1 p t
  local -a ports
  if [[ $s == nginx ]]; then ports=("$NGINX_HTTP_PORT" "$NGINX_HTTPS_PORT")
  else ports=("$EDGE_HTTP_PORT" "$EDGE_TLS_PORT" "$EDGE_ADMIN_PORT"); fi
  for p in "${ports[@]}"; do port_busy "$p" && die "port $HOST:$p is already in use (set ${s^^}_*_PORT)"; done

  if [[ $s == nginx ]]; then
    "$NGINX_BIN" -t -q -p "$OUT" -c "$OUT/nginx.conf" -e "$OUT/logs/nginx-error.log" ||
      die "nginx config test failed (see $OUT/logs/nginx-error.log)"
    "$NGINX_BIN" -p "$OUT" -c "$OUT/nginx.conf" -e "$OUT/logs/nginx-error.log" \
      >"$OUT/logs/nginx.stdout" 2>"$OUT/logs/nginx.stderr" &
  else
    EDGE_WORKER_THREADS=$EDGE_WORKER_THREADS "$EDGE_BIN" serve --config "$OUT/edge.toml" \
      >"$OUT/logs/edge.stdout" 2>"$OUT/logs/edge.stderr" &
  fi
  PID[$s]=$!
  for ((t = 0; t < 300; t++)); do
    if ! kill -0 "${PID[$s]}" 2>/dev/null; then
      tail -n 20 "$OUT/logs/$s.stderr" "$OUT/logs/$s.stdout" >&2 2>/dev/null || true
      unset "PID[$s]"
      die "$s exited during startup (logs in $OUT/logs)"
    fi
    # ready = both ports accept and answer (any status; range keeps it small)
    if curl -s -o /dev/null -r 0-0 "http://$HOST:$(http_port "$s")$(url_prefix "$s")seg_000.ts" &&
       curl -sk -o /dev/null -r 0-0 "https://$HOST:$(tls_port "$s")$(url_prefix "$s")seg_000.ts"; then
      log "$s started (pid ${PID[$s]})"
      return 0
    fi
    sleep 0.1
  done
  die "$s did not accept connections within 30 s (logs in $OUT/logs)"
}

verify_server() {
  local s=$1 sc url got want
  want=$(sha256sum "$OUT/www/seg_000.ts" | cut -d' ' -f1)
  for sc in $SCHEMES; do
    url="$(base_url "$s" "$sc")$(url_prefix "$s")seg_000.ts"
    got=$(curl -sSk --fail --max-time 20 "$url" | sha256sum | cut -d' ' -f1) ||
      die "$s: GET $url failed"
    [[ $got == "$want" ]] || die "$s: wrong bytes from $url (sha256 $got, expected $want)"
    log "$s $sc: GET seg_000.ts sha256 OK"
  done
  if [[ " $SCHEMES " == *" https "* ]]; then
    local info
    info=$(timeout 10 openssl s_client -connect "$HOST:$(tls_port "$s")" -servername localhost </dev/null 2>/dev/null |
      sed -n 's/^New, \(.*\), Cipher is \(.*\)$/\1 \2/p' | head -n 1) || true
    log "$s https: negotiated ${info:-unknown}"
  fi
}

# ---------------------------------------------------------------- load
RESULTS=$OUT/results.tsv
printf 'server\tscheme\tconns\treq_s\tmb_s\tp50_ms\tp99_ms\tserver_cpu_s\tserver_cpu_pct\tcpu_s_per_gb\tclient_cpu_s\terrors\tload1\n' >"$RESULTS"

run_wrk() { # server scheme conns duration logfile -> prints "client_cpu_s"
  local s=$1 sc=$2 c=$3 d=$4 logf=$5 tf rc=0
  tf=$(mktemp)
  local TIMEFORMAT='%U %S'
  { time "$WRK" -t "$WRK_THREADS" -c "$c" -d "${d}s" --timeout "$WRK_TIMEOUT" --latency \
      -s "$OUT/rr.lua" "$(base_url "$s" "$sc")/" -- "$(url_prefix "$s")" "$NFILES" \
      >"$logf" 2>&1; } 2>"$tf" || rc=$?
  ((rc == 0)) || { cat "$logf" >&2; rm -f "$tf"; die "wrk failed (rc=$rc) for $s $sc c=$c"; }
  awk '{printf "%.2f", $1 + $2}' "$tf"
  rm -f "$tf"
}

bench_point() { # server scheme conns
  local s=$1 sc=$2 c=$3 logf pids pids_after t0 t1 client load1 stat
  logf="$OUT/logs/wrk-$s-$sc-c$c.txt"
  load1=$(cut -d' ' -f1 /proc/loadavg)
  pids=$(proc_tree "${PID[$s]}" | sort -n | tr '\n' ' ')
  # shellcheck disable=SC2086
  t0=$(cpu_ticks $pids)
  client=$(run_wrk "$s" "$sc" "$c" "$DURATION" "$logf")
  pids_after=$(proc_tree "${PID[$s]}" | sort -n | tr '\n' ' ')
  # shellcheck disable=SC2086
  t1=$(cpu_ticks $pids)
  [[ $pids == "$pids_after" ]] || warn "$s process set changed during the run ($pids -> $pids_after); CPU may be off"
  stat=$(grep '^WRKSTAT' "$logf") || die "no WRKSTAT line in $logf"
  awk -v s="$s" -v sc="$sc" -v c="$c" -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" \
      -v client="$client" -v load1="$load1" -v line="$stat" 'BEGIN{
    n = split(line, kv, " ")
    for (i = 2; i <= n; i++) { split(kv[i], p, "="); v[p[1]] = p[2] }
    dur = v["duration_us"] / 1e6
    rps = v["requests"] / dur; mbs = v["bytes"] / dur / 1e6
    cpu = ticks / hz; pct = 100 * cpu / dur
    perg = (v["bytes"] > 0) ? cpu / (v["bytes"] / 1e9) : 0
    err = v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"]
    printf "%s\t%s\t%d\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t%.0f\t%.3f\t%.2f\t%d\t%s\n",
      s, sc, c, rps, mbs, v["p50_us"]/1000, v["p99_us"]/1000, cpu, pct, perg, client, err, load1
  }' >>"$RESULTS"
  tail -n 1 "$RESULTS" | awk -F'\t' '{
    printf "    %-5s %-5s c=%-4s %9s req/s %9s MB/s  p50 %7s ms  p99 %7s ms  server CPU %6s s (%s%%)  %6s CPU-s/GB  client CPU %6s s  errors %s  load %s\n",
      $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 }'
  local err
  err=$(tail -n 1 "$RESULTS" | cut -f12)
  ((err == 0)) || warn "$s $sc c=$c: $err wrk errors (non-2xx/socket), see $logf"
}

# ---------------------------------------------------------------- run
log "host: $(uname -sr), $(nproc) CPUs ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
log "nginx: $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //'), worker_processes 1, sendfile+tcp_nopush, no kTLS"
if [[ " ${RUN_SERVERS[*]} " == *" edge "* ]]; then
  log "edge: $EDGE_BIN (EDGE_WORKER_THREADS=$EDGE_WORKER_THREADS to match nginx's single worker process; CPU counts all edge threads), ktls=off"
fi
log "load: wrk -t $WRK_THREADS --timeout $WRK_TIMEOUT, ${DURATION}s per point, conns: $CONNS, schemes: $SCHEMES, $NFILES files x ${FILE_MIB} MiB round-robin"
if (($(nproc) <= 2)); then
  warn "only $(nproc) CPUs: wrk and the server share them, absolute numbers are low -- compare the ratios"
fi

for s in "${RUN_SERVERS[@]}"; do start_server "$s"; done
for s in "${RUN_SERVERS[@]}"; do verify_server "$s"; done
if [[ ${PID[edge]+x} ]]; then
  log "edge threads: $(awk '/^Threads:/{print $2}' "/proc/${PID[edge]}/status")"
fi

START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
for sc in $SCHEMES; do
  log "scheme $sc"
  if ((WARMUP > 0)); then
    read -r first_c _ <<<"$CONNS"
    for s in "${RUN_SERVERS[@]}"; do
      run_wrk "$s" "$sc" "$first_c" "$WARMUP" "$OUT/logs/wrk-$s-$sc-warmup.txt" >/dev/null
    done
  fi
  for c in $CONNS; do
    for s in "${RUN_SERVERS[@]}"; do bench_point "$s" "$sc" "$c"; done
  done
done
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
stop_servers

# ---------------------------------------------------------------- report
echo
echo "Results (MB = 10^6 bytes; CPU-s/GB = server CPU seconds per 10^9 bytes served; lower is better)"
awk -F'\t' 'NR == 1 {
    printf "%-6s %-6s %6s %10s %9s %8s %8s %9s %6s %9s %9s %7s\n",
      "server", "scheme", "conns", "req/s", "MB/s", "p50 ms", "p99 ms", "srv CPU s", "CPU %", "CPU-s/GB", "cli CPU s", "errors"
    next }
  { printf "%-6s %-6s %6s %10s %9s %8s %8s %9s %6s %9s %9s %7s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 }' "$RESULTS"

RATIOS=$OUT/ratios.txt
awk -F'\t' 'NR > 1 { mb[$1 SUBSEP $2 SUBSEP $3] = $5; pg[$1 SUBSEP $2 SUBSEP $3] = $10
    if ($1 == "edge") order[++n] = $2 SUBSEP $3 }
  END {
    for (i = 1; i <= n; i++) {
      split(order[i], k, SUBSEP); e = "edge" SUBSEP order[i]; g = "nginx" SUBSEP order[i]
      if (!(g in mb) || mb[g] == 0 || pg[g] == 0) continue
      printf "ratio edge/nginx %s c=%s throughput: %.2fx cpu-per-GB: %.2fx\n", k[1], k[2], mb[e] / mb[g], pg[e] / pg[g]
    }
  }' "$RESULTS" >"$RATIOS"
echo
if [[ -s $RATIOS ]]; then
  cat "$RATIOS"
  echo "(throughput > 1: edge serves more; cpu-per-GB < 1: edge spends less CPU per byte)"
else
  echo "no ratios: edge and nginx were not both benchmarked"
fi

MD=$OUT/results.md
{
  echo "### Host benchmark: edge vs nginx ($START_DATE)"
  echo
  echo "- host: $(uname -sr), $(nproc) CPUs ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)); load avg at start $START_LOAD, at end $END_LOAD"
  echo "- client: wrk $("$WRK" -v 2>&1 | awk 'NR==1{print $2}') \`-t $WRK_THREADS -c C -d ${DURATION}s --latency\`, keep-alive, $NFILES files x ${FILE_MIB} MiB round-robin, loopback, client and servers on the same CPUs"
  echo "- nginx: $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //'), \`worker_processes 1\`, sendfile, tcp_nopush, access_log off"
  if [[ " ${RUN_SERVERS[*]} " == *" edge "* ]]; then
    echo "- edge: \`EDGE_WORKER_THREADS=$EDGE_WORKER_THREADS\` (to match nginx's one worker; CPU counts all edge threads), binary \`$EDGE_BIN\` ($(date -u -r "$EDGE_BIN" '+%Y-%m-%d %H:%M UTC'))"
  else
    echo "- edge: not benchmarked (binary not found at \`$EDGE_BIN\`)"
  fi
  echo "- TLS: ECDSA P-256 self-signed, TLS 1.2/1.3, no kTLS. MB = 10^6 bytes; CPU s/GB = server CPU seconds (utime+stime) per 10^9 bytes served"
  echo
  echo "| server | scheme | conns | req/s | MB/s | p50 ms | p99 ms | server CPU s | server CPU % | CPU s/GB | client CPU s | errors |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 }' "$RESULTS"
  if [[ -s $RATIOS ]]; then
    echo
    echo "| edge/nginx | conns | throughput | CPU s per GB |"
    echo "|---|--:|--:|--:|"
    awk '{ printf "| %s | %s | %s | %s |\n", $3, substr($4, 3), $6, $8 }' "$RATIOS"
  fi
} >"$MD"
echo
log "wrote $MD (raw: $RESULTS, logs: $OUT/logs)"

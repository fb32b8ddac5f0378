#!/usr/bin/env bash
# bench/playlist-bench.sh -- playlist requests/s: edge (generated) vs nginx (static file).
#
# Issue 7, acceptance point 7: "Playlist requests per second from edge (generated)
# vs nginx serving the same playlist as a static file, same client, plain HTTP and
# HTTPS: goal at least 1.0x."
#
# edge publishes the bundled demo DASH folder twice, as a VOD stream ("vod") and as
# a simulated live stream ("live", 10 s DVR window, epoch 0), and renders their
# manifests per request.  The script fetches each generated manifest once from edge
# and saves it under nginx's root at the same path, so nginx serves byte-for-byte
# the same body as a static file (the live playlist is a snapshot of one moment:
# same size, not the same segment numbers later).  Then wrk loads one manifest URL
# per data point, keep-alive, over plain HTTP and HTTPS (ECDSA P-256 self-signed
# cert, TLS 1.2/1.3, no kTLS).
#
# Cases:   live-hls  /streams/live/0/index.m3u8  (live HLS media playlist, rendition 0)
#          vod-hls   /streams/vod/0/index.m3u8   (VOD HLS media playlist, rendition 0)
#          live-mpd  /streams/live/manifest.mpd  (live DASH MPD)
#
# CPUs are pinned: both servers on CPU $SERVER_CPU (0), wrk on CPU $CLIENT_CPU (1).
# edge runs with EDGE_WORKER_THREADS=1 to match nginx's worker_processes 1; server
# CPU is utime+stime of all server processes and threads (/proc/<pid>/stat; nginx
# master+worker, edge all threads).  Client CPU is wrk's user+sys time; when it is
# close to the run's duration (>= SATURATION, 0.90) the client is the bottleneck
# and the rps ratio measures the client, not the servers: the output says so.
#
# Usage (from anywhere; run as root or have nginx/wrk/openssl/curl installed):
#   bench/playlist-bench.sh                        # ~3 min: 3 cases x 2 schemes x 2 servers x 10 s
#   CONNS=128 DURATION=5 bench/playlist-bench.sh
#   CASES="vod-hls" SCHEMES=http DURATION=3 bench/playlist-bench.sh   # quick check
#
# Environment (defaults in brackets):
#   OUT               work/output dir [<repo>/bench/out] (gitignored)
#   EDGE_BIN          edge binary [${CARGO_TARGET_DIR:-<repo>/target}/release/edge] (never built here)
#   STREAM_SOURCE     packaged folder published as "vod" and "live" [<repo>/edge/demo/www/content/dash]
#   CASES             ["live-hls vod-hls live-mpd"]
#   SCHEMES           ["http https"]
#   CONNS             wrk connection counts, one data point each ["32"]
#   DURATION          seconds per data point [10]
#   WARMUP            unmeasured warm-up seconds per server+scheme, 0 = off [2]
#   WRK_THREADS       wrk -t [1]
#   WRK_TIMEOUT       wrk --timeout [10s]
#   SERVER_CPU        CPU list for both servers (taskset -c) [0]
#   CLIENT_CPU        CPU list for wrk (taskset -c) [1]
#   SATURATION        client CPU s / duration at or above which the client counts as saturated [0.90]
#   EDGE_WORKER_THREADS  edge worker threads [1]
#   NGINX_BIN         [nginx from PATH or /usr/sbin/nginx]
#   NGINX_HTTP_PORT NGINX_HTTPS_PORT              [24080 24443]
#   EDGE_HTTP_PORT EDGE_TLS_PORT EDGE_ADMIN_PORT  [25080 25443 25081]
#   (the script aborts if one of them is already in use)
#
# Output: a table and ratio lines on stdout, $OUT/playlist-results.md (markdown),
# $OUT/playlist-results.tsv and $OUT/playlist-ratios.txt (raw), full wrk output and
# server logs in $OUT/logs/playlist-*.  The script never runs cargo.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

OUT=${OUT:-$ROOT/bench/out}
EDGE_BIN=${EDGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/edge}
STREAM_SOURCE=${STREAM_SOURCE:-$ROOT/edge/demo/www/content/dash}
CASES=${CASES:-live-hls vod-hls live-mpd}
SCHEMES=${SCHEMES:-http https}
CONNS=${CONNS:-32}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
WRK_THREADS=${WRK_THREADS:-1}
WRK_TIMEOUT=${WRK_TIMEOUT:-10s}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SATURATION=${SATURATION:-0.90}
EDGE_WORKER_THREADS=${EDGE_WORKER_THREADS:-1}
NGINX_HTTP_PORT=${NGINX_HTTP_PORT:-24080}
NGINX_HTTPS_PORT=${NGINX_HTTPS_PORT:-24443}
EDGE_HTTP_PORT=${EDGE_HTTP_PORT:-25080}
EDGE_TLS_PORT=${EDGE_TLS_PORT:-25443}
EDGE_ADMIN_PORT=${EDGE_ADMIN_PORT:-25081}
HOST=127.0.0.1
SERVERS=(nginx edge) # order within each data point pair

# shellcheck source=bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

case_path() {
  case $1 in
    live-hls) echo /streams/live/0/index.m3u8 ;;
    vod-hls) echo /streams/vod/0/index.m3u8 ;;
    live-mpd) echo /streams/live/manifest.mpd ;;
    vod-mpd) echo /streams/vod/manifest.mpd ;;
    *) return 1 ;;
  esac
}

# ---------------------------------------------------------------- checks, tools
for c in $CASES; do case_path "$c" >/dev/null || die "unknown case '$c' (live-hls vod-hls live-mpd vod-mpd)"; done
for sc in $SCHEMES; do [[ $sc == http || $sc == https ]] || die "unknown scheme '$sc'"; done
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || die "DURATION must be a positive integer: $DURATION"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be an integer: $WARMUP"
for n in $CONNS; do
  [[ $n =~ ^[0-9]+$ ]] || die "CONNS must be numbers: $CONNS"
  ((n >= WRK_THREADS)) || die "conns ($n) must be >= WRK_THREADS ($WRK_THREADS)"
done
NCONNS=$(wc -w <<<"$CONNS")
[[ -x $EDGE_BIN ]] || die "edge binary not found at $EDGE_BIN (build it with 'cargo build --release' or set EDGE_BIN)"
[[ -d $STREAM_SOURCE ]] || die "stream source folder not found: $STREAM_SOURCE"

install_missing
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
WRK=$(command -v wrk)
CLK_TCK=$(getconf CLK_TCK)
taskset -c "$SERVER_CPU" true 2>/dev/null || die "cannot pin to SERVER_CPU=$SERVER_CPU"
taskset -c "$CLIENT_CPU" true 2>/dev/null || die "cannot pin to CLIENT_CPU=$CLIENT_CPU"

# ---------------------------------------------------------------- work dir
mkdir -p "$OUT/www" "$OUT/nginx-www" "$OUT/logs" "$OUT/edge-state" "$OUT/nginx-tmp"
OUT=$(cd "$OUT" && pwd)
log "work dir: $OUT"

if [[ ! -s $OUT/cert.pem || ! -s $OUT/key.pem ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$OUT/key.pem" -out "$OUT/cert.pem" -days 365 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
  log "generated ECDSA P-256 self-signed certificate"
fi

# wrk script: one URL (given on the command line); report machine-readable stats.
cat >"$OUT/playlist-stat.lua" <<'LUA'
-- Generated by bench/playlist-bench.sh: print wrk's summary as one WRKSTAT line.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKSTAT requests=%.0f bytes=%.0f duration_us=%.0f connect=%.0f read=%.0f write=%.0f status=%.0f timeout=%.0f p50_us=%.0f p99_us=%.0f\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
LUA

# nginx: self-contained config (never the system one), same settings as host-bench.sh
{
  [[ $EUID -eq 0 ]] && echo "user root;"
  cat <<EOF
worker_processes 1;
daemon off;
pid $OUT/playlist-nginx.pid;
error_log $OUT/logs/playlist-nginx-error.log warn;
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
    # nginx at its best for small static files: descriptors and stat results cached
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    types {
        application/vnd.apple.mpegurl m3u8;
        application/dash+xml mpd;
    }
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
        # no kTLS (ssl_conf_command Options KTLS not set)
        root $OUT/nginx-www;
    }
}
EOF
} >"$OUT/playlist-nginx.conf"

# edge: [limits] raises max_requests_per_connection (default 10000) to match
# nginx's keepalive_requests 1000000, so neither server closes wrk's connections.
cat >"$OUT/playlist-edge.toml" <<EOF
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

[[streams]]
name = "vod"
source = "$STREAM_SOURCE"

[[streams]]
name = "live"
source = "$STREAM_SOURCE"
live = true
dvr_window_secs = 10
epoch_secs = 0
EOF

# ---------------------------------------------------------------- servers
trap stop_servers EXIT
trap 'exit 130' INT TERM

base_url() { # server scheme
  if [[ $2 == http ]]; then echo "http://$HOST:$(http_port "$1")"; else echo "https://$HOST:$(tls_port "$1")"; fi
}

# refuse to start anything when a port is taken
for p in "$NGINX_HTTP_PORT" "$NGINX_HTTPS_PORT" "$EDGE_HTTP_PORT" "$EDGE_TLS_PORT" "$EDGE_ADMIN_PORT"; do
  port_busy "$p" && die "port $HOST:$p is already in use (set NGINX_*_PORT / EDGE_*_PORT)"
done

start_server() { # server ready-path
  local s=$1 ready=$2 t
  if [[ $s == nginx ]]; then
    "$NGINX_BIN" -t -q -p "$OUT" -c "$OUT/playlist-nginx.conf" -e "$OUT/logs/playlist-nginx-error.log" ||
      die "nginx config test failed (see $OUT/logs/playlist-nginx-error.log)"
    taskset -c "$SERVER_CPU" "$NGINX_BIN" -p "$OUT" -c "$OUT/playlist-nginx.conf" \
      -e "$OUT/logs/playlist-nginx-error.log" \
      >"$OUT/logs/playlist-nginx.stdout" 2>"$OUT/logs/playlist-nginx.stderr" &
  else
    "$EDGE_BIN" serve --config "$OUT/playlist-edge.toml" --check \
      >"$OUT/logs/playlist-edge-check.txt" 2>&1 ||
      { cat "$OUT/logs/playlist-edge-check.txt" >&2; die "edge --check refused $OUT/playlist-edge.toml"; }
    EDGE_WORKER_THREADS=$EDGE_WORKER_THREADS taskset -c "$SERVER_CPU" \
      "$EDGE_BIN" serve --config "$OUT/playlist-edge.toml" \
      >"$OUT/logs/playlist-edge.stdout" 2>"$OUT/logs/playlist-edge.stderr" &
  fi
  PID[$s]=$!
  for ((t = 0; t < 300; t++)); do
    if ! kill -0 "${PID[$s]}" 2>/dev/null; then
      tail -n 20 "$OUT/logs/playlist-$s.stderr" "$OUT/logs/playlist-$s.stdout" >&2 2>/dev/null || true
      unset "PID[$s]"
      die "$s exited during startup (logs in $OUT/logs)"
    fi
    if curl -s -o /dev/null "http://$HOST:$(http_port "$s")$ready" &&
       curl -sk -o /dev/null "https://$HOST:$(tls_port "$s")$ready"; then
      log "$s started (pid ${PID[$s]}, affinity $(taskset -cp "${PID[$s]}" | sed 's/.*: //'))"
      return 0
    fi
    sleep 0.1
  done
  die "$s did not accept connections within 30 s (logs in $OUT/logs)"
}

# ---------------------------------------------------------------- host info, edge, snapshots
log "host: $(uname -sr), $(nproc) CPUs ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
log "nginx: $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //'), worker_processes 1, access_log off, open_file_cache on, no kTLS; pinned to CPU $SERVER_CPU"
log "edge: $EDGE_BIN (EDGE_WORKER_THREADS=$EDGE_WORKER_THREADS; CPU counts all edge threads), ktls=off; pinned to CPU $SERVER_CPU"
log "client: wrk -t $WRK_THREADS -c {$CONNS} -d ${DURATION}s --latency, keep-alive; pinned to CPU $CLIENT_CPU"
log "cases: $CASES; schemes: $SCHEMES; warm-up ${WARMUP}s per server+scheme"

start_server edge /streams/vod/manifest.mpd

# Snapshot every generated manifest (all four, whether benchmarked or not) into nginx's root.
log "snapshots of edge's generated manifests (served by nginx as static files):"
for c in live-hls vod-hls live-mpd vod-mpd; do
  path=$(case_path "$c")
  dst=$OUT/nginx-www$path
  mkdir -p "$(dirname "$dst")"
  code=$(curl -sS -o "$dst.tmp" -w '%{http_code}' --max-time 10 "http://$HOST:$EDGE_HTTP_PORT$path") ||
    die "edge: GET $path failed"
  [[ $code == 200 ]] || die "edge: GET $path returned HTTP $code"
  mv "$dst.tmp" "$dst"
  printf '    %-9s %-28s %6d bytes  sha256 %.16s\n' "$c" "$path" "$(stat -c %s "$dst")" "$(sha256sum "$dst" | cut -d' ' -f1)"
done
curl -sS -D - -o /dev/null "http://$HOST:$EDGE_HTTP_PORT/streams/live/0/index.m3u8" >"$OUT/logs/playlist-edge-headers.txt" || true

start_server nginx /streams/vod/manifest.mpd
curl -sS -D - -o /dev/null "http://$HOST:$NGINX_HTTP_PORT/streams/live/0/index.m3u8" >"$OUT/logs/playlist-nginx-headers.txt" || true

# ---------------------------------------------------------------- correctness gate
log "correctness checks"
vod_path=$(case_path vod-hls)
want=$(sha256sum "$OUT/nginx-www$vod_path" | cut -d' ' -f1)
for sc in $SCHEMES; do
  for s in "${SERVERS[@]}"; do
    got=$(curl -sSk --fail --max-time 10 "$(base_url "$s" "$sc")$vod_path" | sha256sum | cut -d' ' -f1) ||
      die "$s: GET $vod_path over $sc failed"
    [[ $got == "$want" ]] || die "$s $sc: VOD playlist body differs (sha256 $got, nginx file $want)"
  done
  log "VOD playlist over $sc: edge body == nginx file (sha256 ${want:0:16})"
  for c in $CASES; do
    path=$(case_path "$c")
    for s in "${SERVERS[@]}"; do
      read -r code ctype < <(curl -sSk -o /dev/null -w '%{http_code} %{content_type}\n' --max-time 10 "$(base_url "$s" "$sc")$path") ||
        die "$s: GET $path over $sc failed"
      [[ $code == 200 ]] || die "$s $sc: GET $path returned HTTP $code"
      printf '    %-5s %-5s %-9s HTTP %s  %s\n' "$s" "$sc" "$c" "$code" "$ctype"
    done
  done
done
if [[ " $SCHEMES " == *" https "* ]]; then
  for s in "${SERVERS[@]}"; do
    info=$(timeout 10 openssl s_client -connect "$HOST:$(tls_port "$s")" -servername localhost </dev/null 2>/dev/null |
      sed -n 's/^New, \(.*\), Cipher is \(.*\)$/\1 \2/p' | head -n 1) || true
    log "$s https: negotiated ${info:-unknown}"
  done
fi
log "edge threads: $(awk '/^Threads:/{print $2}' "/proc/${PID[edge]}/status")"

# ---------------------------------------------------------------- load
RESULTS=$OUT/playlist-results.tsv
printf 'server\tscheme\tcase\tconns\treq_s\tp50_ms\tp99_ms\tserver_cpu_s\tserver_us_per_req\tclient_cpu_s\tclient_util\tserver_util\terrors\tbody_bytes\tload1\n' >"$RESULTS"

run_wrk() { # server scheme case conns duration logfile -> prints client CPU seconds
  local s=$1 sc=$2 c=$3 n=$4 d=$5 logf=$6 tf rc=0
  tf=$(mktemp)
  local TIMEFORMAT='%U %S'
  { time taskset -c "$CLIENT_CPU" "$WRK" -t "$WRK_THREADS" -c "$n" -d "${d}s" --timeout "$WRK_TIMEOUT" \
      --latency -s "$OUT/playlist-stat.lua" "$(base_url "$s" "$sc")$(case_path "$c")" \
      >"$logf" 2>&1; } 2>"$tf" || rc=$?
  ((rc == 0)) || { cat "$logf" >&2; rm -f "$tf"; die "wrk failed (rc=$rc) for $s $sc $c c=$n"; }
  awk '{printf "%.2f", $1 + $2}' "$tf"
  rm -f "$tf"
}

bench_point() { # server scheme case conns
  local s=$1 sc=$2 c=$3 n=$4 logf pids pids_after t0 t1 client load1 stat body err
  logf="$OUT/logs/playlist-wrk-$s-$sc-$c-c$n.txt"
  load1=$(cut -d' ' -f1 /proc/loadavg)
  body=$(stat -c %s "$OUT/nginx-www$(case_path "$c")")
  pids=$(proc_tree "${PID[$s]}" | sort -n | tr '\n' ' ')
  # shellcheck disable=SC2086
  t0=$(cpu_ticks $pids)
  client=$(run_wrk "$s" "$sc" "$c" "$n" "$DURATION" "$logf")
  # shellcheck disable=SC2086
  t1=$(cpu_ticks $pids)
  pids_after=$(proc_tree "${PID[$s]}" | sort -n | tr '\n' ' ')
  [[ $pids == "$pids_after" ]] || warn "$s process set changed during the run ($pids -> $pids_after); CPU may be off"
  stat=$(grep '^WRKSTAT' "$logf") || die "no WRKSTAT line in $logf"
  awk -v s="$s" -v sc="$sc" -v c="$c" -v n="$n" -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" \
      -v client="$client" -v load1="$load1" -v body="$body" -v line="$stat" 'BEGIN{
    k = split(line, kv, " ")
    for (i = 2; i <= k; i++) { split(kv[i], p, "="); v[p[1]] = p[2] }
    dur = v["duration_us"] / 1e6
    rps = v["requests"] / dur
    cpu = ticks / hz
    usreq = (v["requests"] > 0) ? cpu * 1e6 / v["requests"] : 0
    err = v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"]
    printf "%s\t%s\t%s\t%d\t%.0f\t%.3f\t%.3f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%d\t%s\n",
      s, sc, c, n, rps, v["p50_us"]/1000, v["p99_us"]/1000, cpu, usreq, client,
      client / dur, cpu / dur, err, body, load1
  }' >>"$RESULTS"
  tail -n 1 "$RESULTS" | awk -F'\t' -v sat="$SATURATION" '{
    printf "    %-5s %-5s %-8s c=%-4s %8s req/s  p50 %7s ms  p99 %7s ms  server CPU %6s s (%5s us/req)  client CPU %6s s (%s of duration)%s  errors %s  load %s\n",
      $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, ($11 >= sat ? " SATURATED" : ""), $13, $15 }'
  err=$(tail -n 1 "$RESULTS" | cut -f13)
  ((err == 0)) || warn "$s $sc $c c=$n: $err wrk errors (non-2xx/socket), see $logf"
}

START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
for sc in $SCHEMES; do
  log "scheme $sc"
  if ((WARMUP > 0)); then
    read -r first_case _ <<<"$CASES"
    read -r first_n _ <<<"$CONNS"
    for s in "${SERVERS[@]}"; do
      run_wrk "$s" "$sc" "$first_case" "$first_n" "$WARMUP" "$OUT/logs/playlist-wrk-$s-$sc-warmup.txt" >/dev/null
    done
  fi
  for c in $CASES; do
    for n in $CONNS; do
      for s in "${SERVERS[@]}"; do bench_point "$s" "$sc" "$c" "$n"; done
    done
  done
done
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
# the live snapshot vs what edge renders now (size can drift as segment numbers grow)
live_now=$(curl -sS "http://$HOST:$EDGE_HTTP_PORT/streams/live/0/index.m3u8" | wc -c) || live_now=?
stop_servers

# ---------------------------------------------------------------- report
echo
echo "Results (server CPU = utime+stime of all server processes/threads; us/req = server CPU microseconds per request;"
echo "client util = wrk CPU s / duration, >= $SATURATION means the client is saturated)"
awk -F'\t' -v sat="$SATURATION" 'NR == 1 {
    printf "%-6s %-6s %-9s %5s %9s %8s %8s %9s %8s %9s %8s %6s\n",
      "server", "scheme", "case", "conns", "req/s", "p50 ms", "p99 ms", "srv CPU s", "us/req", "cli CPU s", "cli util", "errors"
    next }
  { printf "%-6s %-6s %-9s %5s %9s %8s %8s %9s %8s %9s %8s %6s%s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13,
      ($11 >= sat ? "  client saturated" : "") }' "$RESULTS"

RATIOS=$OUT/playlist-ratios.txt
awk -F'\t' -v multi=$((NCONNS > 1)) 'NR > 1 { key = $2 SUBSEP $3 SUBSEP $4
    rps[$1 SUBSEP key] = $5; upr[$1 SUBSEP key] = $9; cu[$1 SUBSEP key] = $11
    if ($1 == "edge") order[++n] = key }
  END {
    for (i = 1; i <= n; i++) {
      split(order[i], k, SUBSEP); e = "edge" SUBSEP order[i]; g = "nginx" SUBSEP order[i]
      if (!(g in rps) || rps[g] == 0 || upr[g] == 0) continue
      printf "edge/nginx %s %s%s: rps %.2fx, cpu-per-request %.2fx\n", k[2], k[1],
        (multi ? " c=" k[3] : ""), rps[e] / rps[g], upr[e] / upr[g]
    }
  }' "$RESULTS" >"$RATIOS"
echo
cat "$RATIOS"
echo "(rps > 1: edge answers more requests/s; cpu-per-request < 1: edge spends less server CPU per request)"

nsat=$(awk -F'\t' -v sat="$SATURATION" 'NR > 1 && $11 >= sat' "$RESULTS" | wc -l)
npts=$(($(wc -l <"$RESULTS") - 1))
maxcli=$(awk -F'\t' 'NR > 1 && $11 > m { m = $11 } END { printf "%.2f", m }' "$RESULTS")
if ((nsat > 0)); then
  SAT_LINE="client saturated in $nsat of $npts data points (wrk CPU up to ${maxcli}x the duration): there the rps ratio measures the client, not the servers; compare cpu-per-request"
else
  SAT_LINE="client not saturated (wrk CPU at most ${maxcli}x the duration)"
fi
echo
log "$SAT_LINE"
nerr=$(awk -F'\t' 'NR > 1 { s += $13 } END { print s + 0 }' "$RESULTS")
((nerr == 0)) || warn "$nerr wrk errors in total (non-2xx/socket); see $OUT/logs/playlist-wrk-*.txt"
log "live playlist: snapshot $(stat -c %s "$OUT/nginx-www/streams/live/0/index.m3u8") bytes, edge renders $live_now bytes now"
log "load avg at start $START_LOAD, at end $END_LOAD"

MD=$OUT/playlist-results.md
{
  echo "### Playlist benchmark: edge (generated) vs nginx (static snapshot) ($START_DATE)"
  echo
  echo "- host: $(uname -sr), $(nproc) CPUs ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)); load avg at start $START_LOAD, at end $END_LOAD"
  echo "- client: wrk $("$WRK" -v 2>&1 | awk 'NR==1{print $2}') \`-t $WRK_THREADS -c C -d ${DURATION}s --latency\`, keep-alive, one URL per point, pinned to CPU $CLIENT_CPU; servers pinned to CPU $SERVER_CPU"
  echo "- nginx: $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //'), \`worker_processes 1\`, access_log off, open_file_cache on, serving files saved from edge's responses"
  echo "- edge: \`EDGE_WORKER_THREADS=$EDGE_WORKER_THREADS\` (CPU counts all edge threads), manifests generated per request, binary \`$EDGE_BIN\` ($(date -u -r "$EDGE_BIN" '+%Y-%m-%d %H:%M UTC'))"
  echo "- TLS: ECDSA P-256 self-signed, TLS 1.2/1.3, no kTLS. us/req = server CPU microseconds per request; client util = wrk CPU s / duration"
  echo "- $SAT_LINE"
  echo
  echo "| server | scheme | case | conns | body B | req/s | p50 ms | p99 ms | server CPU s | us/req | client CPU s | client util | errors |"
  echo "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $14, $5, $6, $7, $8, $9, $10, $11, $13 }' "$RESULTS"
  echo
  echo "| edge/nginx | rps | CPU per request |"
  echo "|---|--:|--:|"
  sed -n 's/^edge\/nginx \(.*\): rps \(.*\), cpu-per-request \(.*\)$/| \1 | \2 | \3 |/p' "$RATIOS"
} >"$MD"
echo
log "wrote $MD (raw: $RESULTS, $RATIOS; logs: $OUT/logs/playlist-*)"

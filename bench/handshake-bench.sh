#!/usr/bin/env bash
# bench/handshake-bench.sh -- TLS handshake cost: `edge` vs Debian's nginx, one
# connection per request, in one run.
#
# Part 1, handshakes.  hs-load (bench/hs-load) opens connection-per-request load
# against each server: TCP connect, TLS handshake, `GET /small.bin` (1 KiB) with
# `Connection: close`, the response read to EOF, close.  Rows (ROWS):
#   full13-ecdsa  full TLS1.3 ECDSA P-256     (hs-load --mode full13)
#   full13-rsa    full TLS1.3 RSA-2048        (--mode full13, RSA certificate)
#   resumed13     resumed TLS1.3 (ECDSA)      (--mode resumed13: ticket, PSK+ECDHE)
#   resumed12     resumed TLS1.2 (ECDSA)      (--mode resumed12: the rustls client's
#                                              default, a ticket when the server gives one)
#   full12-ecdsa  full TLS1.2 ECDSA P-256     (--mode full12; not in the default ROWS)
# For each row nginx and then edge run alone, one after the other, with the row's
# certificate, each pinned with taskset to SERVER_CPUS, hs-load pinned to
# CLIENT_CPUS, same concurrency and duration.  Per row and server: handshakes/s,
# handshakes per server CPU second, p50/p99 handshake latency (connect start to
# handshake done), p50/p99 request latency (connect start to the response's EOF),
# and the edge/nginx ratios (handshakes per CPU s: higher is better; p99: lower is
# better).  Server CPU is utime+stime of all the server's processes (nginx master +
# worker, edge all threads) from /proc/PID/stat, read by hs-load at the start and
# end of its measured window (after the warm-up and, in resumed rows, the priming
# connections); its stime share is shown too (on loopback the kernel's TCP work for
# both ends lands largely there).  Client CPU is hs-load's own over the same window; at or above
# SATURATION of the window the client is the bottleneck, and handshakes/s measures
# the client: read handshakes per server CPU second instead.
# For the resumed12 row the script asks each server with `openssl s_client -tls1_2`
# whether it issues TLS 1.2 session tickets and whether it also resumes by session
# ID alone, and prints the answer (the rustls client presents a ticket when it got
# one, so that is what the row measures).
#
# Part 2, telemetry cost: edge with `[telemetry] enabled = true` vs `false`,
# segment throughput with wrk over HTTPS keep-alive (NFILES files of FILE_MIB MiB,
# round-robin, like host-bench.sh), TELEMETRY_RUNS runs of each, alternating
# (off on, on off, ...), edge pinned to SERVER_CPUS and wrk to CLIENT_CPUS; prints
# the medians and the median of the per-pair on/off ratios of MB/s and of server CPU
# seconds per GB.  When edge does not accept `[telemetry]` (checked with
# `edge serve --config F --check`) this part is skipped, and the handshake rows run
# without the key; when it does, the handshake rows run with `enabled = true`.
#
# Usage (from anywhere; run as root or have nginx/wrk/openssl/curl installed):
#   cargo build --release -p edge -p hs-load     # once; the script never runs cargo
#   bench/handshake-bench.sh                     # 4 rows x 2 servers x (2+10) s + telemetry (~4 min)
#   DURATION=2 WARMUP=1 TELEMETRY_RUNS=1 bench/handshake-bench.sh   # quick check
#   ROWS="full13-ecdsa resumed13" CONCURRENCY=64 bench/handshake-bench.sh
#
# Environment (defaults in brackets):
#   OUT               work/output dir [<repo>/bench/out] (gitignored)
#   EDGE_BIN          edge binary [${CARGO_TARGET_DIR:-<repo>/target}/release/edge]
#   HS_LOAD_BIN       hs-load binary [${CARGO_TARGET_DIR:-<repo>/target}/release/hs-load]
#   ROWS              ["full13-ecdsa full13-rsa resumed13 resumed12"]
#   SERVERS           servers per row, in this order ["nginx edge"]
#   DURATION          measured seconds per row and server (and per telemetry run) [10]
#   WARMUP            unmeasured seconds of load before each measurement [2]
#   CONCURRENCY       hs-load workers (connections at a time) [32]
#   HS_THREADS        hs-load runtime threads [1]
#   CLIENT_VERIFY     insecure = hs-load checks the handshake signature but not the
#                     certificate chain (the chain check is client-only work: it does
#                     not change the server's cost, and leaves the one client core
#                     more headroom); ca = full check against the generated certificate
#                     (--ca), as a browser would [insecure]
#   SERVER_CPUS       CPU list for the servers (taskset -c) [0]
#   CLIENT_CPUS       CPU list for hs-load and wrk (taskset -c) [1]
#   SATURATION        client CPU s / window at or above which the client counts as saturated [0.90]
#   EDGE_WORKER_THREADS  edge worker threads [1] (nginx runs worker_processes 1)
#   TELEMETRY         1 = run part 2 when edge supports it, 0 = skip it [1]
#   TELEMETRY_RUNS    runs with telemetry on, and as many off [3]
#   TELEMETRY_CONNS   wrk connections in part 2 [16]
#   WRK_THREADS       wrk -t [1]
#   NFILES FILE_MIB   segment files for part 2 [32 2]
#   NGINX_BIN         [nginx from PATH or /usr/sbin/nginx]
#   NGINX_HTTPS_PORT                    [26443]
#   EDGE_TLS_PORT EDGE_ADMIN_PORT       [27443 27081]
#   (the script aborts if one of them is already in use)
#
# Output: a table and ratio lines on stdout; $OUT/handshake-results.md (markdown,
# with nproc, CPU sets, versions and parameters at the top); raw numbers in
# $OUT/handshake-results.tsv, every hs-load result line in $OUT/handshake-raw.log,
# hs-load's stderr, wrk output and server logs in $OUT/logs/hs-*.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

OUT=${OUT:-$ROOT/bench/out}
EDGE_BIN=${EDGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/edge}
HS_LOAD_BIN=${HS_LOAD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/hs-load}
ROWS=${ROWS:-full13-ecdsa full13-rsa resumed13 resumed12}
SERVERS=${SERVERS:-nginx edge}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-32}
HS_THREADS=${HS_THREADS:-1}
CLIENT_VERIFY=${CLIENT_VERIFY:-insecure}
SERVER_CPUS=${SERVER_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}
SATURATION=${SATURATION:-0.90}
EDGE_WORKER_THREADS=${EDGE_WORKER_THREADS:-1}
TELEMETRY=${TELEMETRY:-1}
TELEMETRY_RUNS=${TELEMETRY_RUNS:-3}
TELEMETRY_CONNS=${TELEMETRY_CONNS:-16}
WRK_THREADS=${WRK_THREADS:-1}
NFILES=${NFILES:-32}
FILE_MIB=${FILE_MIB:-2}
NGINX_HTTPS_PORT=${NGINX_HTTPS_PORT:-26443}
EDGE_TLS_PORT=${EDGE_TLS_PORT:-27443}
EDGE_ADMIN_PORT=${EDGE_ADMIN_PORT:-27081}
HOST=127.0.0.1
# lib.sh's http_port() is not used here: neither server gets a plain-HTTP listener.
NGINX_HTTP_PORT=unused
EDGE_HTTP_PORT=unused

# shellcheck source=bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

# row id -> "label|mode|cert"
row_info() {
  case $1 in
    full13-ecdsa) echo "full TLS1.3 ECDSA P-256|full13|ecdsa" ;;
    full13-rsa) echo "full TLS1.3 RSA-2048|full13|rsa" ;;
    resumed13) echo "resumed TLS1.3 (ECDSA)|resumed13|ecdsa" ;;
    resumed12) echo "resumed TLS1.2 (ECDSA)|resumed12|ecdsa" ;;
    full12-ecdsa) echo "full TLS1.2 ECDSA P-256|full12|ecdsa" ;;
    *) return 1 ;;
  esac
}

# ---------------------------------------------------------------- checks, tools
for r in $ROWS; do row_info "$r" >/dev/null || die "unknown row '$r' (full13-ecdsa full13-rsa resumed13 resumed12 full12-ecdsa)"; done
for s in $SERVERS; do [[ $s == nginx || $s == edge ]] || die "unknown server '$s' (nginx and/or edge)"; done
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || die "DURATION must be a positive integer: $DURATION"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be an integer: $WARMUP"
[[ $CLIENT_VERIFY == insecure || $CLIENT_VERIFY == ca ]] || die "CLIENT_VERIFY must be insecure or ca: $CLIENT_VERIFY"
[[ $CONCURRENCY =~ ^[0-9]+$ && $CONCURRENCY -gt 0 ]] || die "CONCURRENCY must be a positive integer: $CONCURRENCY"
[[ $TELEMETRY_RUNS =~ ^[0-9]+$ && $TELEMETRY_RUNS -gt 0 ]] || die "TELEMETRY_RUNS must be a positive integer"
[[ $TELEMETRY_CONNS =~ ^[0-9]+$ && $WRK_THREADS =~ ^[0-9]+$ ]] || die "TELEMETRY_CONNS and WRK_THREADS must be integers"
((TELEMETRY_CONNS >= WRK_THREADS)) || die "TELEMETRY_CONNS ($TELEMETRY_CONNS) must be >= WRK_THREADS ($WRK_THREADS)"
if [[ " $SERVERS " == *" edge "* || $TELEMETRY == 1 ]]; then
  [[ -x $EDGE_BIN ]] || die "edge binary not found at $EDGE_BIN (build it with 'cargo build --release' or set EDGE_BIN)"
fi
[[ -x $HS_LOAD_BIN ]] || die "hs-load not found at $HS_LOAD_BIN (build it with 'cargo build --release -p hs-load' or set HS_LOAD_BIN)"

install_missing
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
WRK=$(command -v wrk)
CLK_TCK=$(getconf CLK_TCK)
taskset -c "$SERVER_CPUS" true 2>/dev/null || die "cannot pin to SERVER_CPUS=$SERVER_CPUS"
taskset -c "$CLIENT_CPUS" true 2>/dev/null || die "cannot pin to CLIENT_CPUS=$CLIENT_CPUS"
for p in "$NGINX_HTTPS_PORT" "$EDGE_TLS_PORT" "$EDGE_ADMIN_PORT"; do
  port_busy "$p" && die "port $HOST:$p is already in use (set NGINX_HTTPS_PORT / EDGE_TLS_PORT / EDGE_ADMIN_PORT)"
done

# ---------------------------------------------------------------- work dir
mkdir -p "$OUT/www" "$OUT/logs" "$OUT/hs-edge-state" "$OUT/nginx-tmp"
OUT=$(cd "$OUT" && pwd)
log "work dir: $OUT"

# certificates: leaf certificates (CA:FALSE, serverAuth) for localhost/127.0.0.1, so
# that with CLIENT_VERIFY=ca hs-load (webpki) can trust each one directly (--ca)
gen_cert() { # name openssl-newkey-args...
  local name=$1
  shift
  [[ -s $OUT/hs-$name-cert.pem && -s $OUT/hs-$name-key.pem ]] && return 0
  openssl req -x509 "$@" -nodes -keyout "$OUT/hs-$name-key.pem" -out "$OUT/hs-$name-cert.pem" \
    -days 365 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "extendedKeyUsage=serverAuth" 2>/dev/null || die "openssl could not make the $name certificate"
  chmod 600 "$OUT/hs-$name-key.pem"
  log "generated $name self-signed certificate"
}
gen_cert ecdsa -newkey ec -pkeyopt ec_paramgen_curve:prime256v1
gen_cert rsa -newkey rsa:2048

if [[ ! -f $OUT/www/small.bin || $(stat -c %s "$OUT/www/small.bin") -ne 1024 ]]; then
  head -c 1024 /dev/urandom >"$OUT/www/small.bin.tmp" && mv "$OUT/www/small.bin.tmp" "$OUT/www/small.bin"
fi
SMALL_SHA=$(sha256sum "$OUT/www/small.bin" | cut -d' ' -f1)

# nginx: self-contained config per certificate (never the system one)
nginx_conf() { # cert-name -> path
  local c=$1 f=$OUT/hs-nginx-$1.conf
  {
    [[ $EUID -eq 0 ]] && echo "user root;"
    cat <<EOF
worker_processes 1;
daemon off;
pid $OUT/hs-nginx.pid;
error_log $OUT/logs/hs-nginx-error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    default_type application/octet-stream;
    client_body_temp_path $OUT/nginx-tmp/body;
    proxy_temp_path $OUT/nginx-tmp/proxy;
    fastcgi_temp_path $OUT/nginx-tmp/fastcgi;
    uwsgi_temp_path $OUT/nginx-tmp/uwsgi;
    scgi_temp_path $OUT/nginx-tmp/scgi;
    server {
        listen $HOST:$NGINX_HTTPS_PORT ssl;
        ssl_certificate $OUT/hs-$c-cert.pem;
        ssl_certificate_key $OUT/hs-$c-key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets on;
        ssl_session_cache shared:SSL:10m;
        # no kTLS (ssl_conf_command Options KTLS not set)
        root $OUT/www;
    }
}
EOF
  } >"$f"
  echo "$f"
}

# edge: config per certificate and telemetry setting ("" = no [telemetry] table)
edge_conf() { # cert-name telemetry(true|false|"") -> path
  local c=$1 t=$2 f=$OUT/hs-edge-$1${2:+-telemetry-$2}.toml
  cat >"$f" <<EOF
[server]
tls_listen = "$HOST:$EDGE_TLS_PORT"
admin_listen = "$HOST:$EDGE_ADMIN_PORT"
state_dir = "$OUT/hs-edge-state"

[content]
root = "$OUT/www"

[tls]
cert_path = "$OUT/hs-$c-cert.pem"
key_path = "$OUT/hs-$c-key.pem"
ktls = "off"

[limits]
max_connections = 4096
max_requests_per_connection = 1000000
EOF
  if [[ -n $t ]]; then printf '\n[telemetry]\nenabled = %s\n' "$t" >>"$f"; fi
  echo "$f"
}

# Does this edge accept [telemetry]?  The key is new: older binaries refuse it.
if [[ -x $EDGE_BIN ]]; then
  f=$(edge_conf ecdsa "")
  "$EDGE_BIN" serve --config "$f" --check >"$OUT/logs/hs-edge-check.txt" 2>&1 ||
    { cat "$OUT/logs/hs-edge-check.txt" >&2; die "edge --check refused $f"; }
  f=$(edge_conf ecdsa true)
  if "$EDGE_BIN" serve --config "$f" --check >"$OUT/logs/hs-edge-check-telemetry.txt" 2>&1; then
    EDGE_TELEMETRY=true
  else
    EDGE_TELEMETRY=""
  fi
else
  EDGE_TELEMETRY=""
fi

# ---------------------------------------------------------------- servers
trap stop_servers EXIT
trap 'exit 130' INT TERM

start_server() { # server config-file
  local s=$1 conf=$2 t
  port_busy "$(tls_port "$s")" && die "port $HOST:$(tls_port "$s") is already in use"
  if [[ $s == nginx ]]; then
    "$NGINX_BIN" -t -q -p "$OUT" -c "$conf" -e "$OUT/logs/hs-nginx-error.log" ||
      die "nginx config test failed for $conf (see $OUT/logs/hs-nginx-error.log)"
    taskset -c "$SERVER_CPUS" "$NGINX_BIN" -p "$OUT" -c "$conf" -e "$OUT/logs/hs-nginx-error.log" \
      >>"$OUT/logs/hs-nginx.stdout" 2>>"$OUT/logs/hs-nginx.stderr" &
  else
    EDGE_WORKER_THREADS=$EDGE_WORKER_THREADS taskset -c "$SERVER_CPUS" \
      "$EDGE_BIN" serve --config "$conf" >>"$OUT/logs/hs-edge.stdout" 2>>"$OUT/logs/hs-edge.stderr" &
  fi
  PID[$s]=$!
  for ((t = 0; t < 300; t++)); do
    if ! kill -0 "${PID[$s]}" 2>/dev/null; then
      tail -n 20 "$OUT/logs/hs-$s.stderr" "$OUT/logs/hs-$s.stdout" >&2 2>/dev/null || true
      unset "PID[$s]"
      die "$s exited during startup (logs in $OUT/logs)"
    fi
    if curl -sk -o /dev/null --max-time 2 "https://$HOST:$(tls_port "$s")/small.bin"; then
      return 0
    fi
    sleep 0.1
  done
  die "$s did not accept connections within 30 s (logs in $OUT/logs)"
}

# the bytes of /small.bin, checked against the file, with the certificate as the only root
verify_small() { # server cert-name
  local s=$1 c=$2 got
  got=$(curl -sS --fail --max-time 10 --cacert "$OUT/hs-$c-cert.pem" \
    --resolve "localhost:$(tls_port "$s"):$HOST" "https://localhost:$(tls_port "$s")/small.bin" |
    sha256sum | cut -d' ' -f1) || die "$s: GET /small.bin failed"
  [[ $got == "$SMALL_SHA" ]] || die "$s: wrong bytes for /small.bin (sha256 $got, expected $SMALL_SHA)"
}

# How a server resumes TLS 1.2: does it issue tickets, does a ticket resume, does a
# session ID alone (client sends no ticket extension) resume?  One line.
tls12_resumption_probe() { # server
  local s=$1 port sess out ticket by_ticket by_id
  port=$(tls_port "$s")
  sess=$(mktemp)
  out=$(timeout 10 openssl s_client -connect "$HOST:$port" -servername localhost -tls1_2 \
    -sess_out "$sess" </dev/null 2>/dev/null) || true
  if grep -q 'TLS session ticket lifetime hint' <<<"$out"; then ticket=yes; else ticket=no; fi
  by_ticket=$(timeout 10 openssl s_client -connect "$HOST:$port" -servername localhost -tls1_2 \
    -sess_in "$sess" </dev/null 2>/dev/null | grep -c '^Reused,' || true)
  timeout 10 openssl s_client -connect "$HOST:$port" -servername localhost -tls1_2 -no_ticket \
    -sess_out "$sess" </dev/null >/dev/null 2>&1 || true
  by_id=$(timeout 10 openssl s_client -connect "$HOST:$port" -servername localhost -tls1_2 -no_ticket \
    -sess_in "$sess" </dev/null 2>/dev/null | grep -c '^Reused,' || true)
  rm -f "$sess"
  local yn=(no yes)
  if [[ $ticket == yes ]]; then
    echo "$s: TLS 1.2 session tickets issued: yes (a ticket resumes: ${yn[by_ticket > 0]}), session ID alone resumes: ${yn[by_id > 0]} -> the rustls client resumes by ticket"
  else
    echo "$s: TLS 1.2 session tickets issued: no, session ID alone resumes: ${yn[by_id > 0]} -> the rustls client resumes by session ID"
  fi
}

# ---------------------------------------------------------------- host info
NGINX_VERSION=$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')
EDGE_VERSION=$([[ -x $EDGE_BIN ]] && "$EDGE_BIN" --version 2>&1 || echo "not found")
KERNEL=$(uname -sr)
CPU_MODEL=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
log "host: $KERNEL, nproc $(nproc) ($CPU_MODEL), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
log "CPU sets: servers on $SERVER_CPUS, client (hs-load, wrk) on $CLIENT_CPUS"
log "nginx: $NGINX_VERSION, worker_processes 1, ssl_session_tickets on, ssl_session_cache shared:SSL:10m, access_log off, no kTLS"
if [[ -n $EDGE_TELEMETRY ]]; then TELEMETRY_NOTE="[telemetry] enabled = true"; else TELEMETRY_NOTE="[telemetry] not supported by this binary (left out)"; fi
log "edge: $EDGE_VERSION ($EDGE_BIN), EDGE_WORKER_THREADS=$EDGE_WORKER_THREADS, ktls=off, $TELEMETRY_NOTE"
if [[ $CLIENT_VERIFY == ca ]]; then VERIFY_NOTE="certificate chain and name verified (--ca)"; else VERIFY_NOTE="handshake signature verified, certificate chain not (--insecure)"; fi
log "client: $HS_LOAD_BIN --concurrency $CONCURRENCY --threads $HS_THREADS --warmup $WARMUP --duration $DURATION, /small.bin (1 KiB), Connection: close; $VERIFY_NOTE"
log "$(openssl version)"
if (($(nproc) <= 2)); then
  warn "only $(nproc) CPUs: absolute numbers say little; compare the ratios (and keep the machine otherwise idle)"
fi

# ---------------------------------------------------------------- part 1: handshakes
RESULTS=$OUT/handshake-results.tsv
RAW=$OUT/handshake-raw.log
printf 'row\tlabel\tserver\tmode\thandshakes\tsecs\trate\tserver_cpu_s\ths_per_cpu_s\ths_p50_ms\ths_p99_ms\treq_p50_ms\treq_p99_ms\tresumed\terrors\tclient_cpu_s\tclient_util\tserver_util\tversion\tsuite\tkx\trc\tload1\tserver_sys_share\n' >"$RESULTS"
: >"$RAW"
PROBES=()
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')

bench_row() { # row server
  local r=$1 s=$2 label mode cert conf pids pids_after line rc=0 errf load1
  local -a verify=(--insecure)
  IFS='|' read -r label mode cert <<<"$(row_info "$r")"
  [[ $CLIENT_VERIFY == ca ]] && verify=(--ca "$OUT/hs-$cert-cert.pem")
  if [[ $s == nginx ]]; then conf=$(nginx_conf "$cert"); else conf=$(edge_conf "$cert" "$EDGE_TELEMETRY"); fi
  start_server "$s" "$conf"
  verify_small "$s" "$cert"
  [[ $mode == resumed12 ]] && PROBES+=("$(tls12_resumption_probe "$s")")
  pids=$(proc_tree "${PID[$s]}" | sort -n | tr '\n' ' ')
  load1=$(cut -d' ' -f1 /proc/loadavg)
  errf=$OUT/logs/hs-load-$r-$s.stderr
  line=$(taskset -c "$CLIENT_CPUS" "$HS_LOAD_BIN" --addr "$HOST:$(tls_port "$s")" --sni localhost \
    --path /small.bin --mode "$mode" --concurrency "$CONCURRENCY" --threads "$HS_THREADS" \
    --duration "$DURATION" --warmup "$WARMUP" "${verify[@]}" \
    --server-pids "$(tr ' ' ',' <<<"${pids% }")" --clk-tck "$CLK_TCK" 2>"$errf") || rc=$?
  pids_after=$(proc_tree "${PID[$s]}" | sort -n | tr '\n' ' ')
  stop_servers
  [[ $pids == "$pids_after" ]] || warn "$s process set changed during the run ($pids -> $pids_after); CPU may be off"
  printf '%s %s %s\n' "$r" "$s" "${line:-(no result line, rc=$rc)}" >>"$RAW"
  if [[ $line != mode=* ]]; then
    cat "$errf" >&2
    die "hs-load gave no result for $r $s (rc=$rc, stderr in $errf)"
  fi
  if ((rc != 0)); then
    warn "$r $s: hs-load exited $rc: $(tail -n 1 "$errf")"
  elif [[ -s $errf ]]; then
    warn "$r $s: $(head -n 1 "$errf") (more in $errf)"
  fi
  awk -v r="$r" -v label="$label" -v s="$s" -v rc="$rc" -v load1="$load1" -v line="$line" 'BEGIN{
    n = split(line, kv, " ")
    for (i = 1; i <= n; i++) { eq = index(kv[i], "="); v[substr(kv[i], 1, eq - 1)] = substr(kv[i], eq + 1) }
    secs = v["secs"]; cpu = v["server_cpu_s"]
    hpc = (cpu > 0) ? v["handshakes"] / cpu : 0
    sys = (cpu > 0) ? v["server_sys_s"] / cpu : 0
    printf "%s\t%s\t%s\t%s\t%d\t%.3f\t%.1f\t%.2f\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%d\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t%d\t%s\t%.2f\n",
      r, label, s, v["mode"], v["handshakes"], secs, v["rate"], cpu, hpc,
      v["hs_p50_ms"], v["hs_p99_ms"], v["req_p50_ms"], v["req_p99_ms"], v["resumed"], v["errors"],
      v["client_cpu_s"], v["client_cpu_s"] / secs, cpu / secs, v["version"], v["suite"], v["kx"], rc, load1, sys
  }' >>"$RESULTS"
  tail -n 1 "$RESULTS" | awk -F'\t' -v sat="$SATURATION" '{
    printf "    %-5s %8s hs/s  %6s hs/CPU-s  hs p50/p99 %s/%s ms  req p50/p99 %s/%s ms  resumed %s/%s  errors %s  server CPU %s s (%.0f%% sys)  client CPU %s s (%s)%s  %s %s %s\n",
      $3, $7, $9, $10, $11, $12, $13, $14, $5, $15, $8, 100 * $24, $16, $17, ($17 >= sat ? " SATURATED" : ""), $19, $20, $21 }'
}

for r in $ROWS; do
  log "row $r: $(row_info "$r" | cut -d'|' -f1)"
  for s in $SERVERS; do bench_row "$r" "$s"; done
done
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- part 2: telemetry cost
TELEMETRY_LINE=""
TEL_TSV=$OUT/handshake-telemetry.tsv
rm -f "$TEL_TSV"
if [[ $TELEMETRY != 1 ]]; then
  TELEMETRY_LINE="telemetry cost: skipped (TELEMETRY=$TELEMETRY)"
elif [[ -z $EDGE_TELEMETRY ]]; then
  TELEMETRY_LINE="telemetry cost: skipped (edge lacks [telemetry])"
else
  log "telemetry cost: edge [telemetry] enabled = false vs true, wrk HTTPS keep-alive, $NFILES x ${FILE_MIB} MiB"
  FILE_BYTES=$((FILE_MIB * 1024 * 1024))
  for ((i = 0; i < NFILES; i++)); do
    f=$(printf '%s/www/seg_%03d.ts' "$OUT" "$i")
    if [[ ! -f $f || $(stat -c %s "$f") -ne $FILE_BYTES ]]; then
      head -c "$FILE_BYTES" /dev/urandom >"$f.tmp" && mv "$f.tmp" "$f"
    fi
  done
  cat >"$OUT/hs-rr.lua" <<'LUA'
-- Generated by bench/handshake-bench.sh: seg_000.ts .. seg_<n-1>.ts round-robin.
-- Usage: wrk ... -s hs-rr.lua URL -- <nfiles>
local reqs, n, i = {}, 0, 0
function init(args)
  n = tonumber(args[1]) or 32
  for k = 0, n - 1 do reqs[k] = wrk.format("GET", string.format("/seg_%03d.ts", k)) end
end
function request()
  local r = reqs[i]
  i = (i + 1) % n
  return r
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKSTAT requests=%.0f bytes=%.0f duration_us=%.0f errors=%.0f p99_us=%.0f\n",
    summary.requests, summary.bytes, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(99)))
end
LUA
  printf 'run\ttelemetry\tmb_s\tserver_cpu_s\tcpu_s_per_gb\terrors\n' >"$TEL_TSV"
  tel_run() { # run-number true|false
    local k=$1 t=$2 conf logf pids t0 t1 stat
    conf=$(edge_conf ecdsa "$t")
    start_server edge "$conf"
    logf=$OUT/logs/hs-wrk-telemetry-$t-$k.txt
    if ((WARMUP > 0)); then
      taskset -c "$CLIENT_CPUS" "$WRK" -t "$WRK_THREADS" -c "$TELEMETRY_CONNS" -d "${WARMUP}s" \
        -s "$OUT/hs-rr.lua" "https://$HOST:$EDGE_TLS_PORT/" -- "$NFILES" >"$logf.warmup" 2>&1 ||
        die "wrk warm-up failed (see $logf.warmup)"
    fi
    pids=$(proc_tree "${PID[edge]}" | sort -n | tr '\n' ' ')
    # shellcheck disable=SC2086
    t0=$(cpu_ticks $pids)
    taskset -c "$CLIENT_CPUS" "$WRK" -t "$WRK_THREADS" -c "$TELEMETRY_CONNS" -d "${DURATION}s" --latency \
      -s "$OUT/hs-rr.lua" "https://$HOST:$EDGE_TLS_PORT/" -- "$NFILES" >"$logf" 2>&1 ||
      { cat "$logf" >&2; die "wrk failed (telemetry $t run $k)"; }
    # shellcheck disable=SC2086
    t1=$(cpu_ticks $pids)
    stop_servers
    stat=$(grep '^WRKSTAT' "$logf") || die "no WRKSTAT line in $logf"
    awk -v k="$k" -v t="$t" -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" -v line="$stat" 'BEGIN{
      n = split(line, kv, " ")
      for (i = 2; i <= n; i++) { split(kv[i], p, "="); v[p[1]] = p[2] }
      dur = v["duration_us"] / 1e6; cpu = ticks / hz
      printf "%d\t%s\t%.1f\t%.2f\t%.3f\t%d\n", k, t, v["bytes"] / dur / 1e6, cpu,
        (v["bytes"] > 0) ? cpu / (v["bytes"] / 1e9) : 0, v["errors"]
    }' >>"$TEL_TSV"
    tail -n 1 "$TEL_TSV" | awk -F'\t' '{ printf "    run %s telemetry %-5s %8s MB/s  server CPU %s s  %s CPU-s/GB  errors %s\n", $1, $2, $3, $4, $5, $6 }'
  }
  for ((k = 1; k <= TELEMETRY_RUNS; k++)); do
    # ABBA order, so that a drift over time hits both settings alike
    if ((k % 2)); then tel_run "$k" false; tel_run "$k" true; else tel_run "$k" true; tel_run "$k" false; fi
  done
  TELEMETRY_LINE=$(awk -F'\t' 'function median(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    NR > 1 { if ($2 == "true") { on_mb[$1] = $3; on_g[$1] = $5 } else { off_mb[$1] = $3; off_g[$1] = $5 } }
    END {
      for (k in on_mb) if ((k in off_mb) && off_mb[k] > 0 && off_g[k] > 0) {
        n++; rm[n] = on_mb[k] / off_mb[k]; rg[n] = on_g[k] / off_g[k]; a[n] = on_mb[k]; b[n] = off_mb[k]; c[n] = on_g[k]; d[n] = off_g[k] }
      if (!n) { print "telemetry cost: no complete on/off pair"; exit }
      printf "telemetry cost (on/off, median of %d pairs): throughput %.3fx, server CPU s per GB %.3fx (medians: on %.1f MB/s %.3f CPU-s/GB, off %.1f MB/s %.3f CPU-s/GB)",
        n, median(rm, n), median(rg, n), median(a, n), median(c, n), median(b, n), median(d, n) }' "$TEL_TSV")
fi
stop_servers

# ---------------------------------------------------------------- report
echo
echo "Handshakes (hs/CPU-s = completed connections per server CPU second; sys = kernel share of the server's CPU;"
echo "client util = hs-load CPU s / window, >= $SATURATION: client saturated)"
awk -F'\t' -v sat="$SATURATION" 'NR == 1 {
    printf "%-24s %-6s %9s %9s %9s %9s %9s %9s %9s %5s %8s %7s %8s\n",
      "row", "server", "hs/s", "hs/CPU-s", "hs p50", "hs p99", "req p50", "req p99", "srv CPU s", "sys", "cli util", "errors", "resumed"
    next }
  { printf "%-24s %-6s %9s %9s %9s %9s %9s %9s %9s %4.0f%% %8s %7s %8s%s\n", $2, $3, $7, $9, $10, $11, $12, $13, $8, 100 * $24, $17, $15, $14,
      ($17 >= sat ? "  client saturated" : "") }' "$RESULTS"
echo "(latencies in ms)"

RATIOS=$OUT/handshake-ratios.txt
awk -F'\t' 'NR > 1 { key = $1 SUBSEP $3; hpc[key] = $9; hp99[key] = $11; rp99[key] = $13; rate[key] = $7; label[$1] = $2
    if ($3 == "edge") order[++n] = $1 }
  END {
    for (i = 1; i <= n; i++) {
      r = order[i]; e = r SUBSEP "edge"; g = r SUBSEP "nginx"
      if (!(g in hpc) || hpc[g] == 0 || hp99[g] == 0 || rp99[g] == 0 || rate[g] == 0) continue
      printf "ratio edge/nginx %s: handshakes per CPU s %.2fx (higher is better), hs p99 %.2fx, req p99 %.2fx (lower is better), hs/s %.2fx\n",
        label[r], hpc[e] / hpc[g], hp99[e] / hp99[g], rp99[e] / rp99[g], rate[e] / rate[g]
    }
  }' "$RESULTS" >"$RATIOS"
echo
if [[ -s $RATIOS ]]; then cat "$RATIOS"; else echo "no ratios: edge and nginx were not both benchmarked"; fi
for p in "${PROBES[@]}"; do echo "$p"; done
echo
echo "$TELEMETRY_LINE"

MD=$OUT/handshake-results.md
{
  echo "### TLS handshakes: edge vs nginx, connection per request ($START_DATE)"
  echo
  echo "- host: $KERNEL, nproc $(nproc) ($CPU_MODEL); load avg at start $START_LOAD, at end $END_LOAD"
  echo "- CPU sets: servers \`taskset -c $SERVER_CPUS\`, client \`taskset -c $CLIENT_CPUS\`"
  echo "- nginx: $NGINX_VERSION, \`worker_processes 1\`, \`ssl_session_tickets on\`, \`ssl_session_cache shared:SSL:10m\`, TLS 1.2/1.3, access_log off, no kTLS"
  echo "- edge: $EDGE_VERSION, \`EDGE_WORKER_THREADS=$EDGE_WORKER_THREADS\` (CPU counts all its threads), ktls off, $TELEMETRY_NOTE; binary \`$EDGE_BIN\`$([[ -x $EDGE_BIN ]] && date -u -r "$EDGE_BIN" '+ (%Y-%m-%d %H:%M UTC)')"
  echo "- client: hs-load (rustls, ring) \`--concurrency $CONCURRENCY --threads $HS_THREADS --warmup $WARMUP --duration $DURATION\`, $VERIFY_NOTE, one \`GET /small.bin\` (1 KiB) per connection, \`Connection: close\`, response read to EOF; $(openssl version)"
  echo "- hs = connect start to handshake done; req = connect start to the response's EOF; hs/CPU-s = completed connections per server CPU second (utime+stime, /proc, over the measured window)"
  echo
  echo "| row | server | hs/s | hs per CPU s | hs p50 ms | hs p99 ms | req p50 ms | req p99 ms | server CPU s | of it sys | client util | resumed | errors | suite | kx |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|"
  awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f%% | %s | %s/%s | %s | %s | %s |\n", $2, $3, $7, $9, $10, $11, $12, $13, $8, 100 * $24, $17, $14, $5, $15, $20, $21 }' "$RESULTS"
  if [[ -s $RATIOS ]]; then
    echo
    echo "| edge/nginx | hs per CPU s (higher is better) | hs p99 (lower is better) | req p99 (lower is better) | hs/s |"
    echo "|---|--:|--:|--:|--:|"
    sed -E 's/^ratio edge\/nginx (.*): handshakes per CPU s ([0-9.]+x).*hs p99 ([0-9.]+x), req p99 ([0-9.]+x).*hs\/s ([0-9.]+x)$/| \1 | \2 | \3 | \4 | \5 |/' "$RATIOS"
  fi
  if ((${#PROBES[@]})); then
    echo
    for p in "${PROBES[@]}"; do echo "- $p"; done
  fi
  echo
  echo "- $TELEMETRY_LINE"
} >"$MD"
echo
[[ -s $TEL_TSV ]] && RAW="$RAW, $TEL_TSV"
log "wrote $MD (raw: $RESULTS, $RAW; logs: $OUT/logs/hs-*)"

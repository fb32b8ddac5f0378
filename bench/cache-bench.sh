#!/usr/bin/env bash
# bench/cache-bench.sh -- the segment cache (issue 6), in one run on the host:
#
#  1. hit throughput: the same N x 2 MiB objects served by edge as plain files
#     (`content.root`) and by edge from its warm cache (ring container, filled from
#     an origin), and by nginx `proxy_cache` in front of the same origin (warm),
#     over plain HTTP and HTTPS (userspace TLS: the host has no kTLS). wrk
#     (keep-alive, objects round-robin) pinned to its own CPU, all servers pinned to
#     another (taskset), so the client does not steal the servers' CPU. Prints
#     MB/s, p99, server CPU seconds per GB, and the ratios cache/files (goal >= 0.95)
#     and edge-cache/nginx-cache (goal >= 1.0).
#  2. container write throughput (storage-bench write: 1 MiB objects, synced and
#     indexed) vs `dd bs=1M conv=fdatasync` on the same filesystem (goal >= 0.8x).
#  3. index: start-up time and lookup latency with INDEX_OBJECTS indexed objects.
#
# Usage: cargo build --release -p edge && cargo build --release -p storage --example storage-bench
#        bench/cache-bench.sh
#        DURATION=5 CONNS=16 INDEX_OBJECTS=100000 bench/cache-bench.sh   # quick
# Environment [defaults]: OUT [bench/out-cache], DURATION [10], CONNS ["16 64"],
#   SCHEMES ["http https"], NFILES [32], WRITE_MIB [2048], INDEX_OBJECTS [1000000],
#   SERVER_CPU [0], CLIENT_CPU [1], PARTS ["hits write index"].
# Units: MB = 10^6 bytes, GB = 10^9 bytes.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
OUT=${OUT:-$ROOT/bench/out-cache}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
EDGE_BIN=${EDGE_BIN:-$TARGET/edge}
STORAGE_BENCH=${STORAGE_BENCH:-$TARGET/examples/storage-bench}
DURATION=${DURATION:-10}
CONNS=${CONNS:-16 64}
SCHEMES=${SCHEMES:-http https}
NFILES=${NFILES:-32}
WRITE_MIB=${WRITE_MIB:-2048}
INDEX_OBJECTS=${INDEX_OBJECTS:-1000000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PARTS=${PARTS:-hits write index}
HOST=127.0.0.1
# lib.sh's port helpers are not used here; these keep it quiet.
NGINX_HTTP_PORT=26080 NGINX_HTTPS_PORT=26443 EDGE_HTTP_PORT=25080 EDGE_TLS_PORT=25443
# shellcheck source=bench/lib.sh
source "$SCRIPT_DIR/lib.sh"
install_missing
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
CLK_TCK=$(getconf CLK_TCK)
[[ -x $EDGE_BIN ]] || die "no $EDGE_BIN: cargo build --release -p edge -p storage --example storage-bench"
[[ -x $STORAGE_BENCH ]] || die "no $STORAGE_BENCH: cargo build --release -p storage --example storage-bench"

rm -rf "$OUT/cache" "$OUT/nginx-cache" "$OUT/edge-files-state" "$OUT/edge-cache-state"
mkdir -p "$OUT/www" "$OUT/logs" "$OUT/cache/disk0" "$OUT/nginx-cache" "$OUT/nginx-tmp" "$OUT/edge-files-state" "$OUT/edge-cache-state"
OUT=$(cd "$OUT" && pwd)
for ((i = 0; i < NFILES; i++)); do
  f=$(printf '%s/www/seg_%03d.ts' "$OUT" "$i")
  [[ -f $f ]] || head -c $((2 << 20)) /dev/urandom >"$f"
done
if [[ ! -s $OUT/cert.pem ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$OUT/key.pem" -out "$OUT/cert.pem" -days 365 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
fi
cat >"$OUT/rr.lua" <<'LUA'
local reqs, n, i = {}, 0, 0
function init(args)
  n = tonumber(args[1]) or 32
  for k = 0, n - 1 do reqs[k] = wrk.format("GET", string.format("/seg_%03d.ts", k)) end
end
function request() local r = reqs[i]; i = (i + 1) % n; return r end
function done(s, lat, req)
  local e = s.errors
  io.write(string.format("WRKSTAT requests=%.0f bytes=%.0f duration_us=%.0f errors=%.0f p99_us=%.0f\n",
    s.requests, s.bytes, s.duration, e.connect + e.read + e.write + e.status + e.timeout, lat:percentile(99)))
end
LUA

# servers: name -> "http_port https_port"
declare -A PORTS=([origin]="26080 0" [files]="25080 25443" [cache]="27080 27443" [nginx-cache]="28080 28443")
{
  [[ $EUID -eq 0 ]] && echo "user root;"
  cat <<EOF
worker_processes 1;
daemon off;
pid $OUT/nginx-%NAME%.pid;
error_log $OUT/logs/nginx-%NAME%.log warn;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000; keepalive_timeout 75s;
  types { video/mp2t ts; } default_type application/octet-stream;
  client_body_temp_path $OUT/nginx-tmp/%NAME%-body; proxy_temp_path $OUT/nginx-tmp/%NAME%-proxy;
  fastcgi_temp_path $OUT/nginx-tmp/%NAME%-fcgi; uwsgi_temp_path $OUT/nginx-tmp/%NAME%-uwsgi;
  scgi_temp_path $OUT/nginx-tmp/%NAME%-scgi;
  %SERVER%
}
EOF
} >"$OUT/nginx.tmpl"
sed -e 's/%NAME%/origin/g' -e "s|%SERVER%|server { listen $HOST:26080; root $OUT/www; }|" "$OUT/nginx.tmpl" >"$OUT/nginx-origin.conf"
sed -e 's/%NAME%/cache/g' -e "s|%SERVER%|proxy_cache_path $OUT/nginx-cache levels=1:2 keys_zone=segs:10m max_size=1g inactive=1d use_temp_path=off; server { listen $HOST:28080; listen $HOST:28443 ssl; ssl_certificate $OUT/cert.pem; ssl_certificate_key $OUT/key.pem; ssl_protocols TLSv1.2 TLSv1.3; location / { proxy_pass http://$HOST:26080; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_cache segs; proxy_cache_valid 200 1d; proxy_cache_lock on; } }|" "$OUT/nginx.tmpl" >"$OUT/nginx-cache.conf"
edge_conf() { # name http tls extra
  cat <<EOF
[server]
tls_listen = "$HOST:$3"
http_listen = "$HOST:$2"
admin_listen = "$HOST:0"
state_dir = "$OUT/edge-$1-state"
[content]
root = "$OUT/www"
[tls]
cert_path = "$OUT/cert.pem"
key_path = "$OUT/key.pem"
ktls = "off"
[limits]
max_connections = 4096
max_requests_per_connection = 1000000
$4
EOF
}
edge_conf files 25080 25443 "" >"$OUT/edge-files.toml"
edge_conf cache 27080 27443 "[upstream]
origin = \"http://$HOST:26080\"
[storage]
index_dir = \"$OUT/cache/index\"
[[storage.disks]]
path = \"$OUT/cache/disk0\"
size_mib = 512" >"$OUT/edge-cache.toml"

trap stop_servers EXIT
start() { # name cmd...
  local n=$1; shift
  taskset -c "$SERVER_CPU" "$@" >"$OUT/logs/$n.out" 2>"$OUT/logs/$n.err" &
  PID[$n]=$!
  local port=${PORTS[$n]%% *}
  for ((t = 0; t < 100; t++)); do
    curl -s -o /dev/null "http://$HOST:$port/seg_000.ts" && return 0
    sleep 0.1
  done
  cat "$OUT/logs/$n.err" >&2; die "$n did not start"
}

if [[ " $PARTS " == *" hits "* ]]; then
  start origin "$NGINX_BIN" -p "$OUT" -c "$OUT/nginx-origin.conf" -e "$OUT/logs/nginx-origin.log"
  start files env EDGE_WORKER_THREADS=1 "$EDGE_BIN" serve --config "$OUT/edge-files.toml"
  start cache env EDGE_WORKER_THREADS=1 "$EDGE_BIN" serve --config "$OUT/edge-cache.toml"
  start nginx-cache "$NGINX_BIN" -p "$OUT" -c "$OUT/nginx-cache.conf" -e "$OUT/logs/nginx-cache.log"
  # warm both caches and check bytes
  for ((i = 0; i < NFILES; i++)); do
    f=$(printf 'seg_%03d.ts' "$i"); want=$(sha256sum <"$OUT/www/$f")
    for port in 27080 28080 27080 28080; do
      got=$(curl -s "http://$HOST:$port/$f" | sha256sum)
      [[ $got == "$want" ]] || die "wrong bytes for $f from port $port"
    done
  done
  hits=$(curl -s -D- -o /dev/null "http://$HOST:27080/seg_000.ts" | tr -d '\r' | sed -n 's/^X-Cache: //p')
  nhits=$(curl -s -D- -o /dev/null "http://$HOST:28080/seg_000.ts" | tr -d '\r' | grep -ci '^x-cache-status\|^x-cache' || true)
  log "caches warm (edge says X-Cache: $hits); $NFILES x 2 MiB; servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
  RES=$OUT/results.tsv
  : >"$RES"
  for sc in $SCHEMES; do
    for c in $CONNS; do
      for n in files cache nginx-cache; do
        read -r hp tp <<<"${PORTS[$n]}"
        url="http://$HOST:$hp/"; [[ $sc == https ]] && url="https://$HOST:$tp/"
        pids=$(proc_tree "${PID[$n]}" | tr '\n' ' ')
        # shellcheck disable=SC2086
        t0=$(cpu_ticks $pids)
        taskset -c "$CLIENT_CPU" wrk -t 1 -c "$c" -d "${DURATION}s" --timeout 10s -s "$OUT/rr.lua" "$url" -- "$NFILES" >"$OUT/logs/wrk-$n-$sc-$c.txt" 2>&1
        # shellcheck disable=SC2086
        t1=$(cpu_ticks $pids)
        line=$(grep '^WRKSTAT' "$OUT/logs/wrk-$n-$sc-$c.txt")
        awk -v n="$n" -v sc="$sc" -v c="$c" -v cpu=$(((t1 - t0))) -v hz="$CLK_TCK" -v line="$line" 'BEGIN{
          split(line, kv, " "); for (i = 2; i in kv; i++) { split(kv[i], p, "="); v[p[1]] = p[2] }
          d = v["duration_us"] / 1e6; mb = v["bytes"] / d / 1e6; s = cpu / hz
          printf "%s\t%s\t%s\t%.1f\t%.2f\t%.3f\t%d\n", n, sc, c, mb, v["p99_us"] / 1000, s / (v["bytes"] / 1e9), v["errors"] }' >>"$RES"
        tail -n1 "$RES" | awk -F'\t' '{printf "    %-11s %-5s c=%-3s %8s MB/s  p99 %7s ms  %6s CPU-s/GB  errors %s\n", $1, $2, $3, $4, $5, $6, $7}'
      done
    done
  done
  stop_servers
  echo
  echo "| server | scheme | conns | MB/s | p99 ms | server CPU s/GB |"
  echo "|---|---|--:|--:|--:|--:|"
  awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$RES"
  echo
  awk -F'\t' '{ mb[$1 SUBSEP $2 SUBSEP $3] = $4; cg[$1 SUBSEP $2 SUBSEP $3] = $6; if ($1 == "cache") k[++n] = $2 SUBSEP $3 }
    END { for (i = 1; i <= n; i++) { split(k[i], p, SUBSEP)
      printf "ratio %s c=%s: cache/files %.2fx (CPU/GB %.2fx), edge-cache/nginx-cache %.2fx (CPU/GB %.2fx)\n", p[1], p[2],
        mb["cache" SUBSEP k[i]] / mb["files" SUBSEP k[i]], cg["cache" SUBSEP k[i]] / cg["files" SUBSEP k[i]],
        mb["cache" SUBSEP k[i]] / mb["nginx-cache" SUBSEP k[i]], cg["cache" SUBSEP k[i]] / cg["nginx-cache" SUBSEP k[i]] } }' "$RES"
fi

if [[ " $PARTS " == *" write "* ]]; then
  echo
  log "container write vs dd, $WRITE_MIB MiB on $(df -T "$OUT" | awk 'NR==2{print $2" "$1}')"
  rm -f "$OUT/dd.bin"; sync
  # into a preallocated file, as the container is (a fresh file also pays allocation)
  fallocate -l "${WRITE_MIB}M" "$OUT/dd.bin"; sync
  ddline=$(dd if=/dev/zero of="$OUT/dd.bin" bs=1M count="$WRITE_MIB" conv=notrunc,fdatasync 2>&1 | tail -n1)
  rm -f "$OUT/dd.bin"; sync
  echo "    dd bs=1M conv=notrunc,fdatasync into a preallocated file: $ddline"
  wline=$("$STORAGE_BENCH" write "$OUT/sb" "$WRITE_MIB")
  echo "    $wline"
  dd_mbs=$(awk -v l="$ddline" 'BEGIN{ n = split(l, w, " "); v = w[n-1]; u = w[n]; if (u ~ /^GB/) v *= 1000; print v }')
  c_mbs=$(sed -n 's/.*= \([0-9.]*\) MB\/s.*/\1/p' <<<"$wline")
  awk -v a="$c_mbs" -v b="$dd_mbs" 'BEGIN{ printf "ratio container/dd write: %.2fx (%s vs %s MB/s)\n", a / b, a, b }'
fi

if [[ " $PARTS " == *" index "* ]]; then
  echo
  log "index with $INDEX_OBJECTS objects"
  "$STORAGE_BENCH" index "$OUT/sb" "$INDEX_OBJECTS" | sed 's/^/    /'
fi

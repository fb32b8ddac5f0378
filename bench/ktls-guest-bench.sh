#!/bin/bash
# bench/ktls-guest-bench.sh - kTLS vs userspace-TLS HTTPS benchmark, run in
# ONE kTLS-capable QEMU guest (tests/vm/run-in-vm.sh), so that all servers
# see the same (slow, TCG-emulated) CPUs: compare ratios, not absolutes.
#
# usage (on the host, from anywhere):
#   bench/ktls-guest-bench.sh [--conns 4,16] [--duration 10] [--files 8]
#                             [--rounds 1] [--servers LIST] [-t TIMEOUT]
#
# Servers (--servers, comma-separated, default all four):
#   nginx-ktls  Debian nginx, sendfile on + ssl_conf_command Options KTLS
#   nginx-user  the same nginx with Options -KTLS (OpenSSL in userspace)
#   edge-ktls   $EDGE_BIN serve, [tls] ktls = "require"
#   edge-user   $EDGE_BIN serve, [tls] ktls = "off"
#   edge-cache  $EDGE_BIN serve in edge mode, ktls = "require": the same files from its
#               warm disk cache (ring container on guest tmpfs), filled from an origin
#               edge (verify_files fills it, the warm-up and the points are hits)
# --edge-threads N sets edge's server.worker_threads (default: one per vCPU).
# --idle N measures memory instead of throughput: per server, N keep-alive TLS
# connections (idle-conns from target/release or target/debug: one GET of a 1 KiB
# file each, then idle) and the server's RSS (VmRSS of its processes, nginx's workers)
# before and after: bytes per idle connection, and how many of them kTLS carries
# (TlsTxSw delta); for edge also the growth of edge_heap_in_use_bytes (its allocator's
# live bytes, from /metrics) per connection. E.g. `bench/ktls-guest-bench.sh --idle 1000 --servers
# nginx-ktls,edge-ktls,nginx-user,edge-user`.
# --tls13-cipher NAME (OpenSSL name, e.g. TLS_CHACHA20_POLY1305_SHA256) makes every
# server offer only that TLS 1.3 suite (nginx: ssl_conf_command Ciphersuites; edge:
# tls.cipher_suites), to compare with the crypto implementation held fixed.
# --thp MODE sets the guest's transparent huge pages (always, madvise, never) before
# the servers start; the mode in use is printed either way (the guest kernel's default
# is always, where a few live bytes keep a whole 2 MiB page resident, which inflates
# RSS per connection; Debian hosts default to madvise).
# GUEST_MEM (environment) is the guest's memory [1G]; --idle 16000 wants 4G (the
# client holds every connection too).
# EDGE_BIN defaults to target/release/edge, else target/debug/edge; when
# neither exists the edge servers are skipped ("edge: binary not found").
#
# Every server serves the same --files 2 MiB files from guest tmpfs with the
# same ECDSA P-256 cert on 127.0.0.1; the client (wrk, keep-alive; a curl
# loop if wrk is missing) fetches them round-robin for --duration seconds
# per connection count.  Per point it records throughput (MB/s, 10^6), the
# server's CPU time (utime+stime of its worker processes from /proc/PID/stat,
# in CLK_TCK ticks), and how many kTLS TX sockets were set up (TlsTxSw delta).
# Output: a table, "ratio A/B METRIC: X" lines; a copy goes to bench/out/.
#
# Adding a server: add its name to ALL_SERVERS and write start_NAME /
# stop_NAME (dashes become underscores): start_NAME must set SRV_URL (https
# base URL) and SRV_PIDS (pids whose CPU time counts), or return 2 after
# saying why the server is not available, or 1 when it failed to start.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
. "$REPO/tests/vm/lib.sh"

ALL_SERVERS=nginx-ktls,nginx-user,edge-ktls,edge-user,edge-cache
CONNS=4,16 DURATION=10 NFILES=8 ROUNDS=1 SERVERS=$ALL_SERVERS TIMEOUT=900
IN_GUEST=0 GUEST_EDGE_BIN= EDGE_THREADS= TLS13_CIPHER= IDLE=0 GUEST_IDLE_BIN= THP=
while [ $# -gt 0 ]; do
    case $1 in
    --conns) CONNS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --files) NFILES=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    -t) TIMEOUT=$2; shift 2 ;;
    --in-guest) IN_GUEST=1; shift ;;
    --edge-bin) GUEST_EDGE_BIN=$2; shift 2 ;;
    --edge-threads) EDGE_THREADS=$2; shift 2 ;;
    --tls13-cipher) TLS13_CIPHER=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --idle-bin) GUEST_IDLE_BIN=$2; shift 2 ;;
    --thp) THP=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
    *) echo "unknown argument: $1 (-h for help)" >&2; exit 2 ;;
    esac
done
[[ $IDLE =~ ^[0-9]+$ ]] || { echo "bad --idle: $IDLE" >&2; exit 2; }
[[ -z $THP || $THP =~ ^(always|madvise|never)$ ]] || { echo "bad --thp: $THP (always, madvise or never)" >&2; exit 2; }
for v in "$DURATION" "$NFILES" "$ROUNDS"; do
    [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "not a positive number: $v" >&2; exit 2; }
done
[[ $CONNS =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "bad --conns: $CONNS" >&2; exit 2; }

# =================================================================== host
if [ $IN_GUEST = 0 ]; then
    vm_ensure_host_pkgs nginx:nginx curl:curl openssl:openssl wrk:wrk
    edge_arg=()
    bin=${EDGE_BIN:-}
    if [ -z "$bin" ]; then
        for c in "$REPO/target/release/edge" "$REPO/target/debug/edge"; do
            [ -x "$c" ] && { bin=$c; break; }
        done
    fi
    if [ -n "$bin" ]; then
        [ -x "$bin" ] || { echo "EDGE_BIN not executable: $bin" >&2; exit 2; }
        bin=$(realpath "$bin")
        case $bin in
        "$REPO"/*) ;;
        *)  # the guest sees only the repo (and /usr): copy it into bench/out/
            mkdir -p "$REPO/bench/out/guest-bin"
            cp "$bin" "$REPO/bench/out/guest-bin/edge"
            bin=$REPO/bench/out/guest-bin/edge ;;
        esac
        case $bin,$SERVERS in
        */debug/*,*edge*) echo "note: $bin is a debug build; its numbers mean little" ;;
        esac
        edge_arg=(--edge-bin "/hostdir/${bin#"$REPO"/}")
    fi
    if [ "$IDLE" -gt 0 ]; then
        ibin=
        for c in "$REPO/target/release/idle-conns" "$REPO/target/debug/idle-conns"; do
            [ -x "$c" ] && { ibin=$c; break; }
        done
        [ -n "$ibin" ] || { echo "--idle needs idle-conns: cargo build --release -p hs-load" >&2; exit 2; }
        edge_arg+=(--idle "$IDLE" --idle-bin "/hostdir/${ibin#"$REPO"/}")
    fi
    mkdir -p "$REPO/bench/out"
    out=$REPO/bench/out/ktls-guest-bench-$(date +%Y%m%d-%H%M%S).txt
    echo "host: $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg) (TCG guest: host load skews results)" | tee "$out"
    set +e
    "$REPO/tests/vm/run-in-vm.sh" -u -m "${GUEST_MEM:-1G}" -t "$TIMEOUT" "$REPO" \
        bench/ktls-guest-bench.sh --in-guest --conns "$CONNS" --duration "$DURATION" \
        --files "$NFILES" --rounds "$ROUNDS" --servers "$SERVERS" ${THP:+--thp "$THP"} ${EDGE_THREADS:+--edge-threads "$EDGE_THREADS"} ${TLS13_CIPHER:+--tls13-cipher "$TLS13_CIPHER"} "${edge_arg[@]}" 2>&1 | tee -a "$out"
    rc=${PIPESTATUS[0]}
    set -e
    echo "host: load after: $(cut -d' ' -f1-3 /proc/loadavg); results in ${out#"$REPO"/}" | tee -a "$out"
    exit "$rc"
fi

# =================================================================== guest
ulimit -n 65536 2>/dev/null || true   # --idle: servers and client hold many sockets
if [ "$IDLE" -gt 0 ]; then
    # nginx must be able to hold every idle connection as long as edge can (edge gets
    # max_connections IDLE + 1024 and idle_timeout_secs 3600 below)
    export NGINX_WORKER_CONNECTIONS=$((IDLE + 1024)) NGINX_KEEPALIVE_TIMEOUT=3600s
fi
EDGE_CIPHER_LINE= NGINX_SSL_EXTRA=
if [ -n "$TLS13_CIPHER" ]; then
    EDGE_CIPHER_LINE="cipher_suites = [\"TLS13_${TLS13_CIPHER#TLS_}\"]"
    NGINX_SSL_EXTRA="ssl_conf_command Ciphersuites $TLS13_CIPHER;"
    echo "guest: every server offers only TLS 1.3 $TLS13_CIPHER"
fi
B=/tmp/ktls-bench
WWW=$B/www
RESULTS=$B/results          # server conns round bytes duration_us ticks ktls_tx errors requests
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)
EDGE_BIN=$GUEST_EDGE_BIN
IFS=, read -r -a CONN_LIST <<< "$CONNS"
IFS=, read -r -a SERVER_LIST <<< "$SERVERS"
SRV_URL='' SRV_PIDS=''

rm -rf "$B"; mkdir -p "$B"; : > "$RESULTS"
vm_make_cert "$B"
mapfile -t FILES < <(vm_make_files "$WWW" "$NFILES" 2048)
if command -v wrk >/dev/null; then CLIENT=wrk; else CLIENT=curl-loop; fi
THP_FILE=/sys/kernel/mm/transparent_hugepage/enabled
if [ -n "$THP" ]; then
    echo "$THP" > "$THP_FILE" || { echo "cannot set transparent huge pages to $THP" >&2; exit 1; }
fi
echo "guest: transparent huge pages: $(cat "$THP_FILE" 2>/dev/null || echo unknown)"
echo "guest: $(uname -r), $NCPU vCPUs, $(nginx -v 2>&1 | sed 's/.*: //'), $(openssl version | cut -d' ' -f1-2)," \
     "client $CLIENT, $NFILES x 2 MiB files, ${DURATION}s per point, conns $CONNS, rounds $ROUNDS"

# wrk script: round-robin over the files, one machine-readable result line
{
    printf 'local paths = {'
    printf '"/%s",' "${FILES[@]}"
    cat <<'EOF'
}
local n = 0
request = function()
    n = n + 1
    return wrk.format("GET", paths[(n % #paths) + 1])
end
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("WRK_RESULT %d %d %d %d\n", summary.bytes,
        summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
        summary.requests))
end
EOF
} > "$B/rr.lua"

# ------------------------------------------------------------------ servers
NGINX_WORKERS=${NGINX_WORKERS:-$NCPU}

nginx_kind_start() {   # DIR PORT KTLS
    nginx_write_conf "$1" "$2" "$3" "$NGINX_WORKERS" "$WWW" "$B"
    nginx_start "$1" "$2" || return 1
    SRV_URL=https://127.0.0.1:$2
    SRV_PIDS=$(proc_children "$NGINX_PID" | tr '\n' ' ')
}
start_nginx_ktls() { nginx_kind_start "$B/nginx-ktls" 8443 on; }
stop_nginx_ktls() { nginx_stop; }
start_nginx_user() { nginx_kind_start "$B/nginx-user" 8444 off; }
stop_nginx_user() { nginx_stop; }

# edge: `$EDGE_BIN serve --config FILE`; prints
# "edge: listening tls=IP:PORT http=... admin=IP:PORT" on stdout and a
# "kTLS: available for ..." / "kTLS: unavailable (...)" line on stderr.
EDGE_PID='' EDGE_DIR='' EDGE_ADMIN=''
edge_kind_start() {    # NAME TLS_PORT ADMIN_PORT KTLS_MODE [EXTRA_TOML]
    if [ -z "$EDGE_BIN" ] || [ ! -x "$EDGE_BIN" ]; then
        echo "edge: binary not found, skipped"; return 2
    fi
    local d=$B/$1 i line
    EDGE_DIR=$d
    mkdir -p "$d"
    cat > "$d/edge.toml" <<EOF
[server]
tls_listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"
state_dir = "$d/state"
${EDGE_THREADS:+worker_threads = $EDGE_THREADS}
[content]
root = "$WWW"
[tls]
cert_path = "$B/cert.pem"
key_path = "$B/key.pem"
ktls = "$4"
$EDGE_CIPHER_LINE
${5:-}
EOF
    if [ "$IDLE" -gt 0 ]; then
        # --idle: room for every idle connection (the default max_connections scales
        # with the guest's small memory), kept open as long as the run needs
        printf '[limits]\nmax_connections = %d\nidle_timeout_secs = 3600\n' \
            $((IDLE + 1024)) >> "$d/edge.toml"
    fi
    cp "$EDGE_BIN" "$B/edge"      # run it from tmpfs, not from 9p
    "$B/edge" serve --config "$d/edge.toml" </dev/null >"$d/stdout" 2>"$d/stderr" &
    EDGE_PID=$!
    line=
    for i in $(seq 1 300); do
        line=$(grep -m1 '^edge: listening' "$d/stdout" || true)
        [ -n "$line" ] && break
        kill -0 "$EDGE_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$line" ]; then
        echo "edge ($1): did not report listening; stderr tail:"; tail -n 20 "$d/stderr"
        kill -KILL "$EDGE_PID" 2>/dev/null || true; wait "$EDGE_PID" 2>/dev/null || true
        EDGE_PID=; return 1
    fi
    echo "$1: $line"
    grep -m1 -o 'kTLS: .*' "$d/stderr" | sed "s/^/$1: /" || echo "$1: (no kTLS log line)"
    local tls admin
    tls=$(sed -n 's/.* tls=\([^ ]*\).*/\1/p' <<< "$line")
    admin=$(sed -n 's/.* admin=\([^ ]*\).*/\1/p' <<< "$line")
    SRV_URL=https://$tls
    EDGE_ADMIN=$admin
    SRV_PIDS=$EDGE_PID
}
edge_kind_stop() {
    [ -n "$EDGE_PID" ] || return 0
    if [ -n "$EDGE_ADMIN" ] && [ "$EDGE_ADMIN" != off ] && [ -s "$EDGE_DIR/state/admin.token" ]; then
        echo "$(basename "$EDGE_DIR") metrics:"
        curl -s --max-time 10 -H "Authorization: Bearer $(cat "$EDGE_DIR/state/admin.token")" \
            "http://$EDGE_ADMIN/metrics" |
            grep -E '^edge_(tls_connections_total|body_bytes_total)' | sed 's/^/  /' || true
    fi
    kill -TERM "$EDGE_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$EDGE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$EDGE_PID" 2>/dev/null || true
    wait "$EDGE_PID" 2>/dev/null || true
    EDGE_PID='' EDGE_ADMIN=''
}
start_edge_ktls() { edge_kind_start edge-ktls 8445 9445 require; }
stop_edge_ktls() { edge_kind_stop; }
start_edge_user() { edge_kind_start edge-user 8446 9446 off; }
stop_edge_user() { edge_kind_stop; }
ORIGIN_PID=''
start_edge_cache() {
    [ -x "$EDGE_BIN" ] || { echo "edge: binary not found, skipped"; return 2; }
    local o=$B/origin
    mkdir -p "$o" "$B/edge-cache/cache/d0"
    cp "$EDGE_BIN" "$B/edge"
    printf '[server]\ntls_listen = "127.0.0.1:8461"\nhttp_listen = "127.0.0.1:8460"\nadmin_listen = "127.0.0.1:9460"\nstate_dir = "%s/state"\n[content]\nroot = "%s"\n[tls]\nktls = "off"\n' "$o" "$WWW" > "$o/edge.toml"
    "$B/edge" serve --config "$o/edge.toml" </dev/null >"$o/stdout" 2>"$o/stderr" &
    ORIGIN_PID=$!
    edge_kind_start edge-cache 8447 9447 require "[upstream]
origin = \"http://127.0.0.1:8460\"
[storage]
index_dir = \"$B/edge-cache/cache/index\"
[[storage.disks]]
path = \"$B/edge-cache/cache/d0\"
size_mib = 64"
}
stop_edge_cache() {
    if [ -n "$EDGE_ADMIN" ] && [ -s "$EDGE_DIR/state/admin.token" ]; then
        curl -s --max-time 10 -H "Authorization: Bearer $(cat "$EDGE_DIR/state/admin.token")" \
            "http://$EDGE_ADMIN/metrics" | grep -E '^edge_cache_(hits|misses|stored)_total' | sed 's/^/  /' || true
    fi
    edge_kind_stop
    kill -TERM "$ORIGIN_PID" 2>/dev/null || true; wait "$ORIGIN_PID" 2>/dev/null || true; ORIGIN_PID=''
}

# ------------------------------------------------------------------ client + measure

# verify_files: every file comes back intact from SRV_URL (one curl process:
# starting curl costs ~1 s in the guest, its libraries come over 9p)
verify_files() {
    local f args=()
    rm -rf "$B/got"; mkdir -p "$B/got"
    for f in "${FILES[@]}"; do args+=(-o "$B/got/$f" "$SRV_URL/$f"); done
    curl -sS --max-time 120 --cacert "$B/cert.pem" "${args[@]}" || return 1
    for f in "${FILES[@]}"; do
        cmp -s "$B/got/$f" "$WWW/$f" || { echo "  $f: content mismatch"; return 1; }
    done
}

# run_client CONNS SECONDS: prints "bytes duration_us errors requests"
run_client() {
    local c=$1 secs=$2
    if [ $CLIENT = wrk ]; then
        local t=$(( c < NCPU ? c : NCPU ))
        wrk -t "$t" -c "$c" -d "${secs}s" --timeout 60s -s "$B/rr.lua" "$SRV_URL/" \
            > "$B/wrk.out" 2>&1 || true
        awk '/^WRK_RESULT/ { print $2, $3, $4, $5; f = 1 } END { if (!f) print 0, 1, 1, 0 }' "$B/wrk.out"
    else
        # curl loop: C workers, each one keep-alive curl per pass over the files
        local end=$(( $(date +%s) + secs )) i t0 t1 args=() f cpids=()
        for f in "${FILES[@]}"; do args+=(-o /dev/null "$SRV_URL/$f"); done
        t0=$(date +%s%N)
        for i in $(seq 1 "$c"); do
            ( while [ "$(date +%s)" -lt $end ]; do
                curl -s --cacert "$B/cert.pem" -w '%{size_download} %{http_code}\n' "${args[@]}" || echo "0 000"
              done > "$B/curl.$i" ) &
            cpids+=($!)
        done
        wait "${cpids[@]}"          # not a bare wait: the server is our child too
        t1=$(date +%s%N)
        cat "$B"/curl.* | awk -v us=$(( (t1 - t0) / 1000 )) \
            '{ b += $1; n++; if ($2 != 200) e++ } END { print b + 0, us, e + 0, n + 0 }'
        rm -f "$B"/curl.*
    fi
}

# measure SERVER CONNS ROUND: one data point into $RESULTS
measure() {
    local s=$1 c=$2 r=$3 t0 t1 k0 k1 res
    read -r -a pids <<< "$SRV_PIDS"
    t0=$(proc_cpu_ticks "${pids[@]}"); k0=$(tls_stat TlsTxSw)
    res=$(run_client "$c" "$DURATION")
    t1=$(proc_cpu_ticks "${pids[@]}"); k1=$(tls_stat TlsTxSw)
    echo "$s $c $r $res" | awk -v dt=$((t1 - t0)) -v dk=$((k1 - k0)) \
        '{ print $1, $2, $3, $4, $5, dt, dk, $6, $7 }' >> "$RESULTS"
    tail -n1 "$RESULTS" | awk -v hz="$HZ" '{
        mbs = $4 / ($5 / 1e6) / 1e6; cpu = $6 / hz
        printf "  %-11s c=%-3d round %d: %8.1f MB/s  cpu %6.2fs  ktls_tx +%d  errors %d\n",
            $1, $2, $3, mbs, cpu, $7, $8 }'
}

rss_kib() {   # PID...: the sum of their VmRSS
    local p t=0 v
    for p; do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# edge's edge_heap_in_use_bytes (its allocator's live bytes), or -1 for nginx, an edge
# without the admin plane, or one without the gauge
edge_heap_in_use() {
    local v=""
    if [ -n "$EDGE_PID" ] && [ -n "$EDGE_ADMIN" ] && [ "$EDGE_ADMIN" != off ] &&
        [ -s "$EDGE_DIR/state/admin.token" ]; then
        v=$(curl -s --max-time 10 -H "Authorization: Bearer $(cat "$EDGE_DIR/state/admin.token")" \
            "http://$EDGE_ADMIN/metrics" | awk '$1 == "edge_heap_in_use_bytes" { print $2 }')
    fi
    echo "${v:--1}"
}

# --idle: RSS per idle keep-alive TLS connection (and, for edge, live heap per connection)
measure_idle() {
    local s=$1 before after k0 k1 line h0 h1 held
    read -r -a pids <<< "$SRV_PIDS"
    [ -f "$WWW/small.bin" ] || head -c 1024 /dev/urandom > "$WWW/small.bin"
    curl -sk -o /dev/null "$SRV_URL/small.bin"
    sleep 1
    h0=$(edge_heap_in_use)
    before=$(rss_kib "${pids[@]}"); k0=$(tls_stat TlsTxSw)
    coproc IC { "$GUEST_IDLE_BIN" --insecure --addr "${SRV_URL#https://}" --conns "$IDLE" \
        --path /small.bin --concurrency 32 --timeout 60 2>"$B/idle-$s.err"; }
    read -r line <&"${IC[0]}" || line="idle-conns failed: $(tail -n 3 "$B/idle-$s.err")"
    sleep 2
    after=$(rss_kib "${pids[@]}"); k1=$(tls_stat TlsTxSw)
    h1=$(edge_heap_in_use)
    held=$(tcp_sockets "${SRV_URL##*:}" 01)
    eval "exec ${IC[1]}>&-"
    wait "$IC_PID" 2>/dev/null || true
    # Per connection the server still holds (a server that closed some would otherwise
    # look cheaper than it is); fewer held than opened is flagged.
    echo "$s $line" | awk -v b="$before" -v a="$after" -v k=$((k1 - k0)) -v h0="$h0" -v h1="$h1" -v held="$held" '{
        open = 0; for (i = 2; i <= NF; i++) if ($i ~ /^open=/) { sub("open=", "", $i); open = $i }
        heap = (h0 >= 0 && h1 >= 0 && held > 0) ? sprintf(" | heap in use %d bytes per idle connection", (h1 - h0) / held) : ""
        warn = (held < open) ? sprintf(" | SUSPECT: the server closed %d", open - held) : ""
        printf "  IDLE %-11s %s | server holds %d | rss %d -> %d KiB | %d bytes per idle connection%s | ktls_tx +%d%s\n",
            $1, substr($0, length($1) + 2), held, b, a, (held > 0 ? (a - b) * 1024 / held : 0), heap, k, warn }'
}


# ------------------------------------------------------------------ run
for r in $(seq 1 "$ROUNDS"); do
    for s in "${SERVER_LIST[@]}"; do
        fn=${s//-/_}
        if ! declare -F "start_$fn" >/dev/null; then echo "unknown server $s, skipped"; continue; fi
        echo "== $s (round $r)"
        SRV_URL='' SRV_PIDS=''
        rc=0; "start_$fn" || rc=$?   # 2: not available (said why), other: failed
        if [ $rc != 0 ]; then [ $rc = 2 ] || echo "$s: failed to start, skipped"; continue; fi
        if [ "$IDLE" -gt 0 ]; then
            measure_idle "$s"
        elif verify_files; then
            echo "  $s: ${#FILES[@]} files verified at $SRV_URL, cpu pids: $SRV_PIDS"
            run_client 2 2 > /dev/null      # 2 s warm-up
            for c in "${CONN_LIST[@]}"; do measure "$s" "$c" "$r"; done
        else
            echo "  $s: content check FAILED at $SRV_URL, not measured"
        fi
        "stop_$fn"
    done
done

# ------------------------------------------------------------------ report
echo
echo "== results (MB = 10^6 bytes; cpu = server utime+stime; ktls_tx = new kTLS TX sockets)"
awk -v hz="$HZ" -v order="$SERVERS" -v conns="$CONNS" '
    { k = $1 " " $2; b[k] += $4; us[k] += $5; t[k] += $6; kt[k] += $7; e[k] += $8; n[k] += $9
      B[$1] += $4; T[$1] += $6; US[$1] += $5; seen[$1] = 1 }
    function mbs(bytes, usec) { return usec > 0 ? bytes / (usec / 1e6) / 1e6 : 0 }
    function gbcpu(bytes, ticks) { return ticks > 0 ? (bytes / 1e9) / (ticks / hz) : 0 }
    function cpugb(bytes, ticks) { return bytes > 0 ? (ticks / hz) / (bytes / 1e9) : 0 }
    END {
        ns = split(order, S, ","); nc = split(conns, C, ",")
        printf "%-11s %5s %8s %8s %9s %9s %9s %7s %6s\n", "server", "conns", "MB/s",
            "cpu-s", "cpu-s/GB", "GB/cpu-s", "requests", "ktls_tx", "errors"
        for (i = 1; i <= ns; i++) for (j = 1; j <= nc; j++) {
            k = S[i] " " C[j]; if (!(k in b)) continue
            printf "%-11s %5d %8.1f %8.2f %9.2f %9.4f %9d %7d %6d\n", S[i], C[j],
                mbs(b[k], us[k]), t[k] / hz, cpugb(b[k], t[k]), gbcpu(b[k], t[k]), n[k], kt[k], e[k]
        }
        print ""
        np = split("edge-ktls/nginx-ktls edge-user/nginx-user edge-ktls/edge-user nginx-ktls/nginx-user edge-cache/edge-ktls edge-cache/nginx-ktls", P, " ")
        for (p = 1; p <= np; p++) {
            split(P[p], ab, "/"); a = ab[1]; z = ab[2]
            if (!(a in seen) || !(z in seen)) continue
            m1 = ""; m2 = ""
            for (j = 1; j <= nc; j++) {
                ka = a " " C[j]; kz = z " " C[j]
                if (!(ka in b) || !(kz in b)) continue
                x = mbs(b[kz], us[kz]); y = gbcpu(b[kz], t[kz])
                sep = (m1 == "" ? "" : ", ")
                m1 = m1 sep sprintf("c=%d: %.2f", C[j], (x > 0 ? mbs(b[ka], us[ka]) / x : 0))
                m2 = m2 sep sprintf("c=%d: %.2f", C[j], (y > 0 ? gbcpu(b[ka], t[ka]) / y : 0))
            }
            x = mbs(B[z], US[z]); y = gbcpu(B[z], T[z])
            # (parenthesised: a bare ">" in a printf argument list is a redirection)
            printf "ratio %s MB/s: %.2f  (%s)\n", P[p], (x > 0 ? mbs(B[a], US[a]) / x : 0), m1
            printf "ratio %s GB-per-cpu-s: %.2f  (%s)\n", P[p], (y > 0 ? gbcpu(B[a], T[a]) / y : 0), m2
        }
    }' "$RESULTS"

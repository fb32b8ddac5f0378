#!/bin/bash
# tests/vm/cache-disk-suite.sh - edge's disk-cache acceptance suite in the kTLS guest:
# (A) a slow (HDD-throttled) cache disk must not slow hot clients down, (B) a cache
# disk that starts failing is taken out of service without ever serving wrong bytes.
#
# On the host (repo root; needs edge and cache-load, `cargo build --workspace --bins`):
#     tests/vm/cache-disk-suite.sh             # both parts
#     tests/vm/cache-disk-suite.sh A           # one part (A or B)
# EDGE_BIN and CACHE_LOAD name the binaries (default target/debug/edge and
# target/debug/cache-load). The host side copies them (without debug info) with this
# script, lib.sh and disk-lib.sh into a directory of its own, with the test content
# (random bytes, made here: ~15 s of emulated CPU in the guest), and shares that with
# the guest, so a rebuild of target/ during the run does not matter. It makes two
# sparse 512 MiB images in ${EDGE_VM_HOME:-$HOME/.cache/edge-vm}/cachedisk.XXXXXX
# (removed afterwards) and boots the guest with run-in-vm.sh -u -m 2G
#     -d slow.img:throttling.iops-total=150,throttling.bps-total=157286400  -> /dev/vda (an HDD)
#     -d plain.img                                                          -> /dev/vdb (dm)
#
# In the guest, an origin (`edge serve`, plain HTTP, content on tmpfs: 48 cold objects
# of 2 MiB and one hot object of 1 MiB) and a caching edge (tls.ktls = "require", TLS
# 1.3 AES-128-GCM, EDGE_WORKER_THREADS=1):
#  A. cache (container and index) on ext4 on /dev/vda. Every object is filled through
#     the edge (sha256); then the disk is made slow: readahead CACHE_SUITE_RA_KIB (128)
#     and requests of at most CACHE_SUITE_MAX_SECTORS_KB (32) KiB, so at 150 IOPS it
#     reads ~5 MiB/s (QEMU counts each request as one I/O; a 1 MiB pread is split into
#     max_sectors_kb requests, and readahead does not cap it). Sync, drop caches, fetch
#     the hot object once. Phase 1: 8 clients loop on the hot object over TLS for
#     CACHE_SUITE_PHASE_SECS (15) -> hot p99 alone. Drop caches, re-warm the hot
#     object. Phase 2: the same 8 hot clients; CACHE_SUITE_COLD_LEAD (-2: 2 s after
#     them) 32 clients start fetching random 16 KiB ranges of the cold objects (each
#     checked against the origin's copy) until the hot clients are done -> hot p99 with
#     cold load. Ranges load the disk (a seek each) but hardly the CPU: under TCG kTLS
#     encrypts ~12 MB/s, so whole cold objects would measure CPU sharing, not whether a
#     cold read blocks the worker. Then every cold object is fetched whole over kTLS
#     from the dropped cache (sha256).
#     PASS if that is at most CACHE_SUITE_MAX_RATIO (3) x the p99 alone, every cold
#     body is right, edge_cold_reads_total rose (cold ranges went to the disk's I/O
#     pool) and TlsTxSw rose (kTLS carried the bytes). Printed per phase: the clients'
#     numbers, the disk's reads, the edge worker thread's state (R/S/D, with its kernel
#     stack when in D) and per second the CPU of the worker, the edge's other threads
#     and the two clients, and the worker's syscalls (perf stat; CACHE_SUITE_PERF).
#  B. an edge with two disks: d0 on ext4 on a dm linear map of /dev/vdb, d1 on tmpfs.
#     Fill every object (sha256), sync, drop caches, vm_dm_fail: every I/O to d0 now
#     fails with EIO. Fetch every object again (over TLS, then each twice in a row over
#     plain HTTP): each response is the right bytes or a failed/cut transfer, never
#     wrong bytes. Then the edge reports one disk in service and one disk failure, a
#     later pass serves every object right (refilled onto d1) and from the cache, the
#     edge is alive and never panicked. The dm table is restored at the end.
# Prints PASS/FAIL per check and "N passed, M failed"; exit 0 only if all passed.
# Diagnostics (host environment): CACHE_SUITE_CONTROL=1 runs phase 2 again with every
# cold object in the page cache; CACHE_SUITE_PERF=3 times the worker's sendfile and
# epoll_wait calls (strace), =1 profiles the edge (perf record); CACHE_SUITE_PIN=1
# puts the worker thread alone on vCPU 0; CACHE_SUITE_TCP_WMEM sets net.ipv4.tcp_wmem.
# Timings and what they showed: tests/vm/README.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
. "$HERE/disk-lib.sh"

# tunables (host environment, passed into the guest)
TUNABLES=(CACHE_SUITE_PHASE_SECS CACHE_SUITE_RA_KIB CACHE_SUITE_MAX_SECTORS_KB
          CACHE_SUITE_MAX_RATIO CACHE_SUITE_COLD_LEAD CACHE_SUITE_PIN CACHE_SUITE_CONTROL
          CACHE_SUITE_TCP_WMEM CACHE_SUITE_PERF)

if [ "${EDGE_VM:-}" != 1 ]; then
    REPO=$(cd "$HERE/../.." && pwd)
    EDGE_BIN=${EDGE_BIN:-$REPO/target/debug/edge}
    CACHE_LOAD=${CACHE_LOAD:-$REPO/target/debug/cache-load}
    for b in "$EDGE_BIN" "$CACHE_LOAD"; do
        [ -x "$b" ] || { echo "$b missing: run cargo build --workspace --bins (or set EDGE_BIN / CACHE_LOAD)" >&2; exit 2; }
    done
    vm_ensure_host_pkgs curl:curl openssl:openssl
    vm_disk_host_pkgs
    VM_HOME=${EDGE_VM_HOME:-$HOME/.cache/edge-vm}
    mkdir -p "$VM_HOME"
    # not /tmp: cache=none wants O_DIRECT, which tmpfs may refuse
    D=$(mktemp -d "$VM_HOME/cachedisk.XXXXXX")
    trap 'rm -rf "$D"' EXIT
    S=$D/share
    mkdir -p "$S/tests/vm" "$S/bin" "$S/www/cold" "$S/www/hot"
    cp "$HERE/cache-disk-suite.sh" "$HERE/lib.sh" "$HERE/disk-lib.sh" "$S/tests/vm/"
    # copies without debug info (symbols kept, for perf and backtraces): 9p reads and
    # guest tmpfs stay small (edge 190 MB -> 21 MB)
    strip --strip-debug -o "$S/bin/edge" "$EDGE_BIN" 2>/dev/null || cp "$EDGE_BIN" "$S/bin/edge"
    strip --strip-debug -o "$S/bin/cache-load" "$CACHE_LOAD" 2>/dev/null || cp "$CACHE_LOAD" "$S/bin/cache-load"
    # the content (random bytes) and its sha256 are made here: in the guest that takes
    # ~15 s of emulated CPU, copying it in over 9p a few
    head -c $((48 << 21)) /dev/urandom |
        split -a 2 -d -b $((2 << 20)) --additional-suffix=.m4s - "$S/www/cold/c_"
    head -c $((1 << 20)) /dev/urandom > "$S/www/hot/hot.m4s"
    (cd "$S/www" && sha256sum cold/* hot/hot.m4s) | awk '{ print "/" $2, $1 }' > "$S/want"
    truncate -s 512M "$D/slow.img" "$D/plain.img"
    envs=()
    for v in "${TUNABLES[@]}"; do [ -z "${!v:-}" ] || envs+=("$v='${!v}'"); done
    rc=0
    "$HERE/run-in-vm.sh" -u -m 2G -t "${SUITE_TIMEOUT:-480}" \
        -d "$D/slow.img:throttling.iops-total=150,throttling.bps-total=157286400" \
        -d "$D/plain.img" "$S" "${envs[@]}" tests/vm/cache-disk-suite.sh "$@" || rc=$?
    exit $rc
fi

# ------------------------------------------------------------------ guest
# no errexit: every step ends in a PASS/FAIL line
set +e
T0=$EPOCHREALTIME
PHASE_SECS=${CACHE_SUITE_PHASE_SECS:-15}
RA_KIB=${CACHE_SUITE_RA_KIB:-128}
MAX_SECTORS_KB=${CACHE_SUITE_MAX_SECTORS_KB:-32}
MAX_RATIO=${CACHE_SUITE_MAX_RATIO:-3}
COLD_LEAD=${CACHE_SUITE_COLD_LEAD:--2}
PIN=${CACHE_SUITE_PIN:-0}          # 1: the edge's worker thread alone on vCPU 0, all else on vCPU 1
CONTROL=${CACHE_SUITE_CONTROL:-0}  # 1: phase 2 again with the cold objects in the page cache
# diagnostics of the worker thread during the phases: 2 (default) its syscalls counted
# (perf stat on tracepoints: epoll_wait says how often the event loop polled for I/O),
# 3 its sendfile/epoll_wait calls timed (strace), 1 a CPU profile (perf record), 0 none
PERF=${CACHE_SUITE_PERF:-2}
command -v perf > /dev/null || [ "$PERF" = 3 ] || PERF=0
PARTS=${*:-A B}
pass=0; fail=0
check() { # NAME STATUS DETAIL
    if [ "$2" = 0 ]; then echo "PASS $1"; pass=$((pass + 1)); else echo "FAIL $1${3:+: $3}"; fail=$((fail + 1)); fi
}
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "guest: [$(since "$T0") s] $*"; }
# jv FILE GROUP KEY - a value of GROUP from cache-load's JSON line ("null" if absent)
jv() {
    awk -v g="\"$2\":{" -v k="\"$3\":" '
        { i = index($0, g); if (!i) next; s = substr($0, i); j = index(s, k); if (!j) next
          s = substr(s, j + length(k)); match(s, /^[^,}]*/); v = substr(s, 1, RLENGTH) }
        END { print (v == "" ? "null" : v) }' "$1" 2>/dev/null
}
# summary FILE GROUP - the numbers of one group, short
summary() {
    local k out=""
    for k in requests errors mismatches p50_ms p99_ms max_ms ttfb_p99_ms; do out+="$k=$(jv "$1" "$2" $k) "; done
    echo "${out}elapsed_s=$(awk 'match($0, /"elapsed_s":[^,}]*/) { print substr($0, RSTART + 12, RLENGTH - 12) }' "$1")"
}

mkdir -p /tmp/bin
cp /hostdir/bin/edge /hostdir/bin/cache-load /tmp/bin/
EDGE=/tmp/bin/edge LOAD=/tmp/bin/cache-load
ON_EDGE=() ON_LOAD=()
if [ "$PIN" = 1 ]; then ON_EDGE=(taskset -c 1) ON_LOAD=(taskset -c 1); fi
if [ -n "${CACHE_SUITE_TCP_WMEM:-}" ]; then echo "$CACHE_SUITE_TCP_WMEM" > /proc/sys/net/ipv4/tcp_wmem; fi
say "kernel $(uname -r), $(nproc) vCPUs, $(awk '/MemTotal/ { print int($2 / 1024) " MiB" }' /proc/meminfo);" \
    "disks $(cat /sys/block/vda/serial) $(cat /sys/block/vdb/serial); parts: $PARTS; tcp_wmem $(tr '\t' ' ' < /proc/sys/net/ipv4/tcp_wmem)"
grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp || { echo "FAIL: no tls ULP in this kernel"; exit 1; }

# ---- content (made on the host) on tmpfs, served by an origin over plain HTTP
W=/tmp/origin/www
mkdir -p /tmp/origin
cp -r /hostdir/www "$W"
cp /hostdir/want /tmp/want
grep '^/cold/' /tmp/want > /tmp/want.cold
cut -d' ' -f1 /tmp/want.cold > /tmp/cold.list
cut -d' ' -f1 /tmp/want > /tmp/all.list
HOT=/hot/hot.m4s
HOT_SHA=$(awk -v p=$HOT '$1 == p { print $2 }' /tmp/want)
say "content: $(wc -l < /tmp/cold.list) cold objects of 2 MiB and $HOT (1 MiB) on tmpfs"

cat > /tmp/origin/edge.toml <<EOF
[server]
tls_listen = "127.0.0.1:9444"
http_listen = "127.0.0.1:8081"
admin_listen = "127.0.0.1:9091"
state_dir = "/tmp/origin/state"
shutdown_grace_secs = 1
[content]
root = "$W"
[tls]
ktls = "off"
[limits]
max_requests_per_connection = 1000000
EOF
"${ON_EDGE[@]}" "$EDGE" serve --config /tmp/origin/edge.toml > /tmp/origin/stdout 2> /tmp/origin/stderr &
ORIGIN_PID=$!

# start_edge NAME TLS HTTP ADMIN DISKS_TOML [INDEX_DIR] - S=/tmp/NAME, EDGE_PID.
# One worker thread (where a blocking disk read would stall every client), kTLS
# required, TLS 1.3 AES-128-GCM only (the cheapest suite to emulate: AES-256 costs
# 14 rounds instead of 10 on both ends).
start_edge() {
    local name=$1 tls=$2 http=$3 admin=$4 disks=$5 index=${6:-/tmp/$1/index}
    S=/tmp/$name ADMIN=$admin TLSPORT=$tls HTTPPORT=$http
    mkdir -p "$S/empty"
    cat > "$S/edge.toml" <<EOF
[server]
tls_listen = "127.0.0.1:$tls"
http_listen = "127.0.0.1:$http"
admin_listen = "127.0.0.1:$admin"
state_dir = "$S/state"
shutdown_grace_secs = 1
[content]
root = "$S/empty"
[tls]
ktls = "require"
cipher_suites = ["TLS13_AES_128_GCM_SHA256"]
[limits]
max_requests_per_connection = 1000000
[upstream]
origin = "http://127.0.0.1:8081"
header_timeout_ms = 5000
[storage]
index_dir = "$index"
io_threads_per_disk = 4
$disks
EOF
    EDGE_WORKER_THREADS=1 "${ON_EDGE[@]}" "$EDGE" serve --config "$S/edge.toml" > "$S/stdout" 2> "$S/stderr" &
    EDGE_PID=$!
    local i
    for i in $(seq 1 600); do
        grep -q '^edge: listening' "$S/stdout" 2>/dev/null && break
        kill -0 "$EDGE_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^edge: listening' "$S/stdout"; then
        cat "$S/stderr"; echo "FAIL: edge $name did not start"; fail=$((fail + 1)); return 1
    fi
    wait_listen 8081 30 || { cat /tmp/origin/stderr; echo "FAIL: the origin did not start"; fail=$((fail + 1)); return 1; }
    say "edge $name up: $(cat "$S/stdout"); $(grep -o 'kTLS: [^"]*' "$S/stderr" | head -1)"
    # with EDGE_WORKER_THREADS=1 the worker is the main thread (tid = pid)
    if [ "$PIN" = 1 ]; then taskset -p -c 0 "$EDGE_PID" > /dev/null; fi
}
stop_edge() {
    kill -TERM "$EDGE_PID" 2>/dev/null; wait "$EDGE_PID" 2>/dev/null; EDGE_PID=
}
# snap FILE - the edge's metrics into FILE (one curl: a process start costs ~0.5-2 s here)
snap() { curl -s -H "Authorization: Bearer $(cat "$S/state/admin.token")" "http://127.0.0.1:$ADMIN/metrics" > "$1"; }
# mval FILE NAME{labels} - a value from a snapshot (0 when absent)
mval() { awk -v k="$2" '$1 == k { v = $2 } END { print (v == "" ? 0 : v) }' "$1"; }
# wait_stored - until every fill queued for storage is stored and none runs (30 s)
wait_stored() {
    local i
    for i in $(seq 1 60); do
        snap "$S/m.wait"
        [ "$(mval "$S/m.wait" edge_cache_stored_total)" -ge "$(mval "$S/m.wait" 'edge_cache_fills_total{result="stored"}')" ] &&
            [ "$(mval "$S/m.wait" edge_cache_fills_running)" = 0 ] && return 0
        sleep 0.5
    done
    return 1
}
# load NAME tls|plain ARGS... - cache-load against the current edge, JSON in $S/NAME.json
load() {
    local name=$1 how=$2; shift 2
    if [ "$how" = tls ]; then
        "${ON_LOAD[@]}" "$LOAD" --addr 127.0.0.1:$TLSPORT --tls --ca "$S/state/cert.pem" "$@" > "$S/$name.json" 2> "$S/$name.err"
    else
        "${ON_LOAD[@]}" "$LOAD" --addr 127.0.0.1:$HTTPPORT "$@" > "$S/$name.json" 2> "$S/$name.err"
    fi
}
# get_hot - the hot object once over TLS; prints its sha256, head in $S/hot.head
get_hot() {
    curl -s -D "$S/hot.head" --cacert "$S/state/cert.pem" --resolve localhost:$TLSPORT:127.0.0.1 \
        "https://localhost:$TLSPORT$HOT" | sha256sum | cut -d' ' -f1
}
# ticks VAR STATFILE - VAR=utime + stime (clock ticks) from a /proc/.../stat file, 0 if
# gone. No $(...): a subshell is a fork, milliseconds in this guest, and four of them
# per sample made the sampler itself a load (~40 forks/s at nice 0).
ticks() {
    local line f
    if read -r line 2>/dev/null < "$2"; then
        read -r -a f <<< "${line##*) }"
        printf -v "$1" %d $((f[11] + f[12]))
    else
        printf -v "$1" %d 0
    fi
}
# sampler OUT PID HOT_PID COLD_PIDFILE - every 0.1 s until killed, a line
# "TIME STATE WORKER EDGE HOT COLD [STACK]": the state of thread PID (the only worker
# with EDGE_WORKER_THREADS=1 is the main thread; its kernel stack when in D, waiting
# for the disk) and the CPU ticks so far of that thread, of the whole edge, and of
# the two clients. Bash builtins only: no process start, no fork per sample.
sampler() {
    local out=$1 pid=$2 hp=$3 cpf=$4 cp= line st stack never w e h c
    mkfifo "$out.fifo"; exec {never}<>"$out.fifo"
    : > "$out"
    while [ -e /proc/$pid ]; do
        read -r line 2>/dev/null < /proc/$pid/task/$pid/stat || break
        st=${line##*) }; st=${st%% *}
        ticks w /proc/$pid/task/$pid/stat; ticks e /proc/$pid/stat; h=0 c=0
        [ -z "$hp" ] || ticks h /proc/$hp/stat
        [ -n "$cp" ] || [ ! -s "$cpf" ] || read -r cp 2>/dev/null < "$cpf"
        [ -z "$cp" ] || ticks c /proc/$cp/stat
        if [ "$st" = D ]; then
            mapfile -t stack 2>/dev/null < /proc/$pid/task/$pid/stack
            st="D ${stack[*]:0:12}"
        fi
        echo "$EPOCHREALTIME $w $e $h $c $st" >> "$out"
        read -r -t 0.1 -u $never
    done
}
# sampled OUT - the worker's states, the commonest kernel stacks in D, and per second
# the CPU share (% of one vCPU) of the edge's worker thread, of its other threads
# (cold-read pool, disk writer, ...), and of the hot and the cold clients
sampled() {
    awk '{ n++; c[$6]++ } END { printf "%d samples:", n; for (s in c) printf " %s %.0f%%", s, 100 * c[s] / n; print "" }' "$1"
    awk '$6 == "D"' "$1" | cut -d' ' -f7- | sed -E 's/\[<0>\] //g; s/\+0x[0-9a-f]+\/0x[0-9a-f]+//g' |
        sort | uniq -c | sort -rn | head -3 | sed 's/^/      in D: /'
    # a client's ticks read 0 once it has exited: carry the last value
    awk 'NR == 1 { t0 = $1 } { s = int($1 - t0); for (k = 2; k <= 5; k++) { if ($k == 0 && last[k] > 0) $k = last[k]; last[k] = $k }
                   if (!(s in first)) { first[s] = 1; for (k = 2; k <= 5; k++) v0[s, k] = $k; ts[s] = $1 }
                   for (k = 2; k <= 5; k++) v1[s, k] = $k; te[s] = $1; if (s > m) m = s }
         END { split("worker other hot cold", name, " ")
               for (k = 2; k <= 5; k++) { line = sprintf("      %-6s %%CPU:", name[k - 1])
                   for (i = 0; i <= m; i++) { if (!(i in first)) continue
                       j = i + 1; e = (j in first) ? v0[j, k] : v1[i, k]; d = (j in first) ? ts[j] - ts[i] : te[i] - ts[i]
                       x = e - v0[i, k]; if (k == 3) x -= ((j in first) ? v0[j, 2] : v1[i, 2]) - v0[i, 2]
                       line = line sprintf(" %3.0f", d > 0 ? x / d : 0) }
                   print line } }' "$1"
}
vda_io() { awk '{ print $1, $3 }' /sys/block/vda/stat; }   # reads, sectors read

# ================================================================== A. slow disk
# phase NAME - 8 hot clients for PHASE_SECS over TLS; with COLD=1 32 clients fetch
# every cold object once, starting COLD_LEAD s before them (so that every hot request
# runs under cold load). Sets P99 (hot) and leaves $S/NAME*.json, $S/m.NAME.{0,1}.
phase() {
    local name=$1 cold_pid="" hot_pid t th io0 io1 spid
    rm -f "$S/$name.coldpid"
    snap "$S/m.$name.0"; local tx0; tx0=$(tls_stat TlsTxSw); io0=$(vda_io)
    t=$EPOCHREALTIME
    # COLD_LEAD >= 0: the cold clients start that many seconds before the hot ones
    # (whose connections and handshakes then meet the cold load too); < 0: after them
    start_cold() {
        # random 16 KiB ranges of the cold objects, each checked against the
        # origin's copy: a load on the disk (a seek per range), not on the CPU
        ( exec "${ON_LOAD[@]}" "$LOAD" --addr 127.0.0.1:$TLSPORT --tls --ca "$S/state/cert.pem" \
            --duration-secs $((PHASE_SECS + ${COLD_LEAD#-} + 1)) --timeout-secs 120 \
            --group cold:32:@/tmp/cold.list --range-group "cold:16384:$W" \
            > "$S/$name-cold.json" 2> "$S/$name-cold.err" ) &
        cold_pid=$!
        echo "$cold_pid" > "$S/$name.coldpid"
    }
    if [ "$COLD" = 1 ] && [ "${COLD_LEAD#-}" = "$COLD_LEAD" ]; then start_cold; sleep "$COLD_LEAD"; fi
    th=$EPOCHREALTIME
    ( exec "${ON_LOAD[@]}" "$LOAD" --addr 127.0.0.1:$TLSPORT --tls --ca "$S/state/cert.pem" \
        --duration-secs "$PHASE_SECS" --group hot:8:$HOT > "$S/$name.json" 2> "$S/$name.err" ) &
    hot_pid=$!
    sampler "$S/$name.samples" "$EDGE_PID" "$hot_pid" "$S/$name.coldpid" & spid=$!
    local ppid=
    EPOLLS=?
    if [ "$PERF" = 1 ] && [ "$COLD" = 1 ]; then
        perf record -q -e cpu-clock -F 250 -g -p "$EDGE_PID" -o "$S/$name.perf" -- sleep 10 > /dev/null 2>&1 & ppid=$!
    fi
    if [ "$PERF" = 3 ] && [ "$COLD" = 1 ]; then
        # the worker's sendfile and epoll_wait calls, timed, for 10 s from the hot clients' start
        timeout -s INT 10 strace -qq -tt -T -p "$EDGE_PID" -e trace=epoll_wait,sendfile,recvmsg \
            -o "$S/$name.strace" > /dev/null 2>&1 & ppid=$!
    fi
    if [ "$PERF" = 2 ]; then
        # the worker thread's syscalls for 10 s from the hot clients' start
        mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
        perf stat -t "$EDGE_PID" -x, -o "$S/$name.pstat" \
            -e syscalls:sys_enter_epoll_wait,syscalls:sys_enter_sendfile64,syscalls:sys_enter_recvmsg,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_futex,syscalls:sys_enter_mincore,syscalls:sys_enter_write,syscalls:sys_enter_read \
            -- sleep 10 > /dev/null 2>&1 & ppid=$!
    fi
    if [ "$COLD" = 1 ] && [ -z "$cold_pid" ]; then sleep "${COLD_LEAD#-}"; start_cold; fi
    wait "$hot_pid"; RC_HOT=$?
    local hot_end; hot_end=$(since "$t")
    RC_COLD=0
    if [ -n "$cold_pid" ]; then wait "$cold_pid"; RC_COLD=$?; fi
    kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
    COLD_S=$(since "$t")
    if [ -n "$ppid" ] && [ "$PERF" = 3 ]; then
        wait "$ppid"
        say "$name: worker trace (10 s): $(awk '
            function sec(t,  a) { split(t, a, ":"); return a[1] * 3600 + a[2] * 60 + a[3] }
            { t = sec($1); d = $NF; gsub(/[<>]/, "", d) }
            /epoll_wait/ { ne++; if (lastep != "" && t - lastep > gap) gap = t - lastep; lastep = t; ewait += d }
            /sendfile\(/ { match($0, /sendfile\([0-9]+/); fd = substr($0, RSTART + 9, RLENGTH - 9)
                           match($0, /, [0-9]+\) += /); cnt = substr($0, RSTART + 2, RLENGTH - 6) + 0
                           if (cnt == 2097152) cl[fd] = "cold"; else if (cnt == 1048576) cl[fd] = "hot"
                           cls = (fd in cl) ? cl[fd] : "unknown"; n[cls]++; dur[cls] += d; if (d > mx[cls]) mx[cls] = d
                           match($0, /\) += -?[0-9]+/); r = substr($0, RSTART + 4, RLENGTH - 4) + 0; if (r > 0) by[cls] += r }
            END { printf "epoll_wait %d (longest gap %.2f s, %.2f s blocked in it); ", ne, gap, ewait
                  for (c in n) printf "sendfile %s %d calls, %.1f MiB, %.2f s in them (longest %.3f s); ", c, n[c], by[c] / 1048576, dur[c], mx[c] }' "$S/$name.strace")"
        grep -m 12 -E 'sendfile|epoll_wait' "$S/$name.strace" | sed 's/^/      /'
    elif [ -n "$ppid" ] && [ "$PERF" = 2 ]; then
        wait "$ppid"
        EPOLLS=$(awk -F, '$3 == "syscalls:sys_enter_epoll_wait" { print $1 }' "$S/$name.pstat")
        say "$name: worker syscalls in 10 s from the hot clients' start:" \
            "$(awk -F, '$3 ~ /syscalls/ { sub("syscalls:sys_enter_", "", $3); printf "%s%s %s", sep, $3, $1; sep = ", " }' "$S/$name.pstat")"
    elif [ -n "$ppid" ]; then
        wait "$ppid"
        say "$name: perf profile of the edge (10 s from the hot clients' start), by thread and symbol:"
        perf report -i "$S/$name.perf" --stdio --no-children -g none --sort comm,sym --percent-limit 1.5 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -40
        say "$name: ... callers of the top symbols of the worker:"
        perf report -i "$S/$name.perf" --stdio --no-children --comm edge --sort sym -g caller,0.5,callee,function,percent --percent-limit 5 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -80
    fi
    io1=$(vda_io); TX0=$tx0 TX1=$(tls_stat TlsTxSw)
    snap "$S/m.$name.1"
    P99=$(jv "$S/$name.json" hot p99_ms)
    say "$name hot:  $(summary "$S/$name.json" hot) (from +$(awk -v a="$t" -v b="$th" 'BEGIN { printf "%.1f", b - a }') s to +$hot_end s)"
    if [ "$COLD" = 1 ]; then
        say "$name cold: $(summary "$S/$name-cold.json" cold) (until +$COLD_S s)"
        set -- $io0 $io1
        local n=$(($3 - $1)) mib=$((($4 - $2) / 2048))
        say "$name: vda $n reads, $mib MiB ($(awk -v n=$n -v s="$COLD_S" 'BEGIN { printf "%.0f", n / s }') IOPS," \
            "$(awk -v b=$((($4 - $2) * 512)) -v s="$COLD_S" 'BEGIN { printf "%.1f", b / 1048576 / s }') MiB/s," \
            "$(awk -v n=$n -v s=$(($4 - $2)) 'BEGIN { printf "%.0f", (n > 0 ? s / 2 / n : 0) }') KiB per read)"
    fi
    say "$name: edge worker thread from the hot clients' start: $(sampled "$S/$name.samples")"
    say "$name: edge_cold_reads_total $(mval "$S/m.$name.0" edge_cold_reads_total) -> $(mval "$S/m.$name.1" edge_cold_reads_total)," \
        "hits $(mval "$S/m.$name.0" edge_cache_hits_total) -> $(mval "$S/m.$name.1" edge_cache_hits_total)," \
        "misses $(mval "$S/m.$name.0" edge_cache_misses_total) -> $(mval "$S/m.$name.1" edge_cache_misses_total), TlsTxSw $TX0 -> $TX1"
}

part_a() {
    local t=$EPOCHREALTIME h
    echo "== A. slow disk: hot clients next to cold reads"
    vm_mkfs_mount /dev/vda /cache
    mkdir -p /cache/d0
    blockdev --setra $((RA_KIB * 2)) /dev/vda
    say "ext4 on the throttled /dev/vda at /cache ($(since "$t") s)"
    start_edge edge-a 8443 8080 9090 $'[[storage.disks]]\npath = "/cache/d0"\nsize_mib = 256' /cache/index || return

    # fill every object through the edge (sha256); plain HTTP, the cheap path here
    t=$EPOCHREALTIME
    load fill plain --expect /tmp/want --once --duration-secs 120 --group fill:4:@/tmp/all.list
    local rc=$?
    [ $rc = 0 ] && [ "$(jv "$S/fill.json" fill requests)" = 49 ]
    check "[A] 49 objects filled through the edge, sha256 right ($(since "$t") s)" $? "$(cat "$S/fill.json" "$S/fill.err" | head -5)"
    wait_stored
    check "[A] all 49 stored (edge_cache_stored_total=$(mval "$S/m.wait" edge_cache_stored_total))" $?
    # From here on the disk is slow: QEMU counts every request as one I/O, and a 1 MiB
    # pread goes to the disk in requests of at most max_sectors_kb (readahead does
    # not cap it: the kernel widens its window to the read's size, up to max_sectors_kb).
    echo "$MAX_SECTORS_KB" > /sys/block/vda/queue/max_sectors_kb
    say "throttled disk: readahead $(($(blockdev --getra /dev/vda) / 2)) KiB, max_sectors_kb" \
        "$(cat /sys/block/vda/queue/max_sectors_kb): at most ~$((150 * MAX_SECTORS_KB / 1024)) MiB/s at 150 IOPS"
    vm_drop_caches
    h=$(get_hot)
    [ "$h" = "$HOT_SHA" ] && grep -qi '^x-cache: HIT' "$S/hot.head"
    check "[A] after sync + drop_caches the hot object is a HIT, right bytes" $? "$(head -12 "$S/hot.head")"

    COLD=0 phase phase1
    local p1=$P99 tx1a=$TX0 tx1b=$TX1 ep1=$EPOLLS
    [ $RC_HOT = 0 ] && [ "$p1" != null ]
    check "[A] phase 1 (hot alone): $(jv "$S/phase1.json" hot requests) hot requests, p99 $p1 ms" $? "$(head -3 "$S/phase1.err")"

    vm_drop_caches
    h=$(get_hot)
    [ "$h" = "$HOT_SHA" ] || echo "guest: re-warming the hot object got the wrong bytes"
    COLD=1 phase phase2
    local p2=$P99 cr
    [ $RC_HOT = 0 ] && [ "$p2" != null ]
    check "[A] phase 2 (with cold load): $(jv "$S/phase2.json" hot requests) hot requests, p99 $p2 ms" $? "$(head -3 "$S/phase2.err")"
    cr=$(jv "$S/phase2-cold.json" cold requests)
    [ $RC_COLD = 0 ] && [ "$cr" -gt 100 ] && [ "$(jv "$S/phase2-cold.json" cold mismatches)" = 0 ]
    check "[A] phase 2: $cr random 16 KiB ranges of cold objects from 32 clients, bytes right (p99 $(jv "$S/phase2-cold.json" cold p99_ms) ms)" $? "$(head -5 "$S/phase2-cold.err")"
    local ratio
    ratio=$(awk -v a="$p1" -v b="$p2" 'BEGIN { if (a + 0 > 0 && b != "null") printf "%.2f", b / a; else print "inf" }')
    awk -v r="$ratio" -v m="$MAX_RATIO" 'BEGIN { exit !(r != "inf" && r + 0 <= m + 0) }'
    check "[A] hot p99 with cold load $p2 ms <= ${MAX_RATIO} x hot p99 alone $p1 ms (ratio $ratio)" $? \
        "hot requests $(jv "$S/phase1.json" hot requests) alone, $(jv "$S/phase2.json" hot requests) with cold load; the worker's epoll_wait calls in the first 10 s: $ep1 alone, $EPOLLS with cold load"
    local c0 c1 c2
    c0=$(mval "$S/m.phase1.0" edge_cold_reads_total); c1=$(mval "$S/m.phase2.0" edge_cold_reads_total); c2=$(mval "$S/m.phase2.1" edge_cold_reads_total)
    [ "$c2" -gt "$c1" ]
    check "[A] edge_cold_reads_total rose during phase 2: $c1 -> $c2 (phase 1: $c0 -> $(mval "$S/m.phase1.1" edge_cold_reads_total))" $?
    [ "$TX1" -gt "$TX0" ] && [ "$tx1b" -gt "$tx1a" ]
    check "[A] TlsTxSw rose: phase 1 $tx1a -> $tx1b, phase 2 $TX0 -> $TX1 (kTLS carried the bytes)" $?
    local m0 m2
    m0=$(mval "$S/m.phase1.0" edge_cache_misses_total); m2=$(mval "$S/m.phase2.1" edge_cache_misses_total)
    [ "$m2" = "$m0" ]
    check "[A] no cache miss during the phases (edge_cache_misses_total $m0 -> $m2)" $?

    # every cold object whole, once, over kTLS, from the slow disk: the bytes
    vm_drop_caches
    local tc=$EPOCHREALTIME x0 x1
    x0=$(tls_stat TlsTxSw)
    load coldfull tls --expect /tmp/want.cold --once --duration-secs 300 --timeout-secs 120 \
        --group cold:32:@/tmp/cold.list
    x1=$(tls_stat TlsTxSw)
    [ "$(jv "$S/coldfull.json" cold requests)" = 48 ] && [ "$(jv "$S/coldfull.json" cold mismatches)" = 0 ] &&
        [ "$(jv "$S/coldfull.json" cold errors)" = 0 ] && [ "$x1" -gt "$x0" ]
    check "[A] 48 cold objects whole from the slow disk over kTLS, sha256 right ($(since "$tc") s, TlsTxSw $x0 -> $x1)" $? \
        "$(cat "$S/coldfull.json" "$S/coldfull.err" | head -5)"

    if [ "$CONTROL" = 1 ]; then
        # the same load with every cold object in the page cache: what the CPU alone costs
        cat /cache/d0/data.bin > /dev/null
        h=$(get_hot)
        COLD=1 phase control
        say "control (cold objects in the page cache): hot p99 $P99 ms, $(awk -v a="$p1" -v b="$P99" 'BEGIN { printf "%.2f", b / a }') x alone"
    fi
    kill -0 "$EDGE_PID" && ! grep -aq panicked "$S/stderr"
    check "[A] edge alive, no panic" $? "$(grep -a -m2 panicked "$S/stderr")"
    stop_edge
    umount /cache
    say "A took $(since "$t") s from the fill"
}

# ================================================================== B. failing disk
part_b() {
    local t=$EPOCHREALTIME rc
    echo "== B. a cache disk that starts failing"
    vm_dm_linear edgefault /dev/vdb && vm_mkfs_mount /dev/mapper/edgefault /mnt/fault
    check "[B] ext4 on /dev/mapper/edgefault ($(vm_dmsetup table edgefault))" $?
    mkdir -p /mnt/fault/d0 /tmp/edge-b/d1
    start_edge edge-b 8444 8082 9092 $'[[storage.disks]]\npath = "/mnt/fault/d0"\nsize_mib = 256\n[[storage.disks]]\npath = "/tmp/edge-b/d1"\nsize_mib = 160' || return
    local D0='{disk="/mnt/fault/d0"}' D1='{disk="/tmp/edge-b/d1"}'
    load fill plain --expect /tmp/want --once --duration-secs 120 --group fill:4:@/tmp/all.list
    rc=$?
    [ $rc = 0 ] && [ "$(jv "$S/fill.json" fill requests)" = 49 ]
    check "[B] 49 objects filled through the edge, sha256 right" $? "$(cat "$S/fill.json" "$S/fill.err" | head -5)"
    wait_stored
    local u0 u1
    u0=$(mval "$S/m.wait" "edge_cache_disk_used_bytes$D0"); u1=$(mval "$S/m.wait" "edge_cache_disk_used_bytes$D1")
    [ "$u0" -gt 0 ] && [ "$u1" -gt 0 ]
    check "[B] stored on both disks (used bytes: d0 $u0, d1 $u1)" $?

    vm_drop_caches
    local tf=$EPOCHREALTIME
    vm_dm_fail edgefault
    check "[B] vm_dm_fail: every I/O to d0 now fails ($(vm_dmsetup table edgefault), $(since "$tf") s)" $?
    # every object over TLS (kTLS), then each twice in a row over plain HTTP (two
    # clients on one key: the second joins the refill)
    tf=$EPOCHREALTIME
    load fail1 tls --expect /tmp/want --once --duration-secs 120 --timeout-secs 30 --group fail:8:@/tmp/all.list
    say "B: after the failure, TLS:   $(summary "$S/fail1.json" fail) ($(since "$tf") s)"
    awk '{ print; print }' /tmp/all.list > /tmp/twice.list
    load fail2 plain --expect /tmp/want --once --duration-secs 120 --timeout-secs 30 --group fail:8:@/tmp/twice.list
    say "B: then plain HTTP, twice: $(summary "$S/fail2.json" fail)"
    local n1 e1 x1 n2 e2 x2
    n1=$(jv "$S/fail1.json" fail requests); e1=$(jv "$S/fail1.json" fail errors); x1=$(jv "$S/fail1.json" fail mismatches)
    n2=$(jv "$S/fail2.json" fail requests); e2=$(jv "$S/fail2.json" fail errors); x2=$(jv "$S/fail2.json" fail mismatches)
    [ "$x1" = 0 ] && [ "$x2" = 0 ] && [ "$n1" != null ] && [ "$n2" != null ]
    check "[B] never wrong bytes after the failure: TLS $n1 responses ($e1 failed/cut, $x1 wrong), plain $n2 ($e2 failed/cut, $x2 wrong)" $? \
        "$(head -5 "$S/fail1.err" "$S/fail2.err")"
    [ -s "$S/fail1.err" ] && say "B: client errors (samples): $(head -3 "$S/fail1.err" | cut -c1-120 | tr '\n' ';')"
    snap "$S/m.b1"
    local dis fails in0 in1
    dis=$(mval "$S/m.b1" edge_cache_disks_in_service); fails=$(mval "$S/m.b1" edge_cache_disk_failures_total)
    in0=$(mval "$S/m.b1" "edge_cache_disk_in_service$D0"); in1=$(mval "$S/m.b1" "edge_cache_disk_in_service$D1")
    [ "$dis" = 1 ] && [ "$fails" = 1 ] && [ "$in0" = 0 ] && [ "$in1" = 1 ]
    check "[B] edge_cache_disks_in_service=$dis, edge_cache_disk_failures_total=$fails (in service: d0 $in0, d1 $in1)" $?
    say "B: edge said: $(grep -a 'out of service' "$S/stderr" | sed 's/\x1b\[[0-9;]*m//g' | head -2)"
    wait_stored
    load after plain --expect /tmp/want --once --duration-secs 120 --group after:4:@/tmp/all.list
    rc=$?
    snap "$S/m.b2"
    say "B: later pass: $(summary "$S/after.json" after)"
    [ $rc = 0 ] && [ "$(jv "$S/after.json" after requests)" = 49 ]
    check "[B] a later pass serves all 49 objects right" $? "$(head -5 "$S/after.err")"
    local h1 h2 mi1 mi2 ud1
    h1=$(mval "$S/m.wait" edge_cache_hits_total); h2=$(mval "$S/m.b2" edge_cache_hits_total)
    mi1=$(mval "$S/m.wait" edge_cache_misses_total); mi2=$(mval "$S/m.b2" edge_cache_misses_total)
    ud1=$(mval "$S/m.b2" "edge_cache_disk_used_bytes$D1")
    [ $((h2 - h1)) = 49 ] && [ "$mi2" = "$mi1" ] && [ "$ud1" -gt "$u1" ]
    check "[B] ... all from the cache, d0's objects now on d1 (hits +$((h2 - h1)), misses +$((mi2 - mi1)); d1 used $u1 -> $ud1)" $?
    kill -0 "$EDGE_PID" && ! grep -aq panicked "$S/stderr"
    check "[B] edge alive, no panic in its stderr" $? "$(grep -a -m2 panicked "$S/stderr")"
    say "B: $(grep -E '^edge_cache_(disk_failures|stored|store_failures|fills_total|evictions)' "$S/m.b2" | tr '\n' ' ')"
    stop_edge
    timeout -k 5 20 umount /mnt/fault
    vm_dm_restore edgefault
    check "[B] dm table restored: $(vm_dmsetup table edgefault)" $?
    vm_dm_remove edgefault
    say "B took $(since "$t") s"
}

for p in $PARTS; do
    case $p in
    A) part_a ;;
    B) part_b ;;
    *) echo "unknown part $p (A or B)"; fail=$((fail + 1)) ;;
    esac
done
kill -TERM "$ORIGIN_PID" 2>/dev/null; wait "$ORIGIN_PID" 2>/dev/null
bad=$(dmesg | grep -E 'hung_task|blocked for more than|BUG:|Oops' | head -3)
check "no hung task, BUG or Oops in the kernel log" "$([ -z "$bad" ]; echo $?)" "$bad"
say "suite took $(since "$T0") s; $(cut -d' ' -f1 /proc/uptime) s since guest boot"
echo "cache-disk-suite: $pass passed, $fail failed"
[ "$fail" = 0 ]

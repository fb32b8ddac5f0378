#!/bin/bash
# tests/vm/edge-ktls-suite.sh - edge's kTLS acceptance suite, inside the kTLS guest.
#
# On the host (repo root; needs target/debug/edge, tls-peer and tls-nonce-relay, which
# `cargo build --workspace --bins` makes):
#     tests/vm/edge-ktls-suite.sh            # both modes: tls.ktls = "require", then "off"
#     tests/vm/edge-ktls-suite.sh off        # one mode
# The host side apt-get installs what the guest borrows from /usr (curl, openssl,
# strace, python3), then runs itself in the guest with tests/vm/run-in-vm.sh -u.
#
# In the guest, per mode, against one `edge serve` on 127.0.0.1:8443:
#  1. a 64 MiB object and 1,000 segments over ONE keep-alive connection, sha256-checked;
#     kTLS mode: TlsTxSw/TlsRxSw rise; TlsCurrTxSw equals the offloaded connections
#     held open (3 idle openssl clients); off mode: the counters do not move;
#  2. kTLS mode, server under strace -f: bodies leave through sendfile from the files'
#     descriptors, nothing reads them into userspace, and the bytes written with
#     write/writev/sendto/sendmsg on the offloaded socket equal the response heads
#     curl received (the 2-byte close_notify alert aside);
#  3. TLS 1.3 resumption (openssl -sess_out/-sess_in: "Reused"), still offloaded;
#     kTLS engages on resumed connections, TLS 1.3 and 1.2: the resumed connection
#     (s_client "Reused", edge_tls_handshakes_total{kind="resumed"} +1) is handed to
#     kTLS (TlsTxSw +1, path="ktls" +1) and its segment leaves by sendfile on kTLS
#     (sendfile_ktls + its size), sha256-identical; off mode: in userspace;
#     TLS 1.2 and 1.3 with AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 each served
#     (and offloaded in kTLS mode); a client sending close_notify, a fatal alert and a
#     KeyUpdate (tests/src/bin/tls-peer.rs) is handled, no panic, others still served;
#  4. the metrics say which path carried the bytes (sendfile_ktls vs userspace_copy);
#  5. TLS 1.2 AES-128-GCM and AES-256-GCM explicit nonces (tests/src/bin/tls-nonce-relay.rs):
#     50 connections each through an in-process relay that reads the server's records
#     off the wire; no explicit nonce may repeat within a connection (the server's
#     Finished included). kTLS mode: TlsTxSw rises by exactly 50 per cipher; off mode:
#     it does not move;
#  6. kTLS mode: 10 clients in a row send a request and then a FIN without close_notify
#     (tls-peer half-close); each gets its whole response and no kTLS hand-over fails.
# Prints PASS/FAIL per check and "N passed, M failed"; exit 0 only if all passed.
#
# Checks 5 and 6 run against a second edge per mode (not under strace).
# SUITE_ONLY="nonce half-close" (either or both) runs only those checks, for working on
# them: no checks 1-4, no byte-cap run.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"

if [ "${EDGE_VM:-}" != 1 ]; then
    REPO=$(cd "$HERE/../.." && pwd)
    for b in edge tls-peer tls-nonce-relay; do
        [ -x "$REPO/target/debug/$b" ] || { echo "target/debug/$b missing: run cargo build --workspace --bins" >&2; exit 2; }
    done
    vm_ensure_host_pkgs curl:curl openssl:openssl strace:strace python3:python3-minimal
    exec "$HERE/run-in-vm.sh" -u -m 1G -t "${SUITE_TIMEOUT:-900}" "$REPO" \
        ${SUITE_ONLY:+"SUITE_ONLY='$SUITE_ONLY'"} tests/vm/edge-ktls-suite.sh "$@"
fi

# ------------------------------------------------------------------ guest
REPO=$(pwd)
EDGE=$REPO/target/debug/edge
PEER=$REPO/target/debug/tls-peer
PORT=8443
ADMIN=9090
PY=/usr/bin/python3
pass=0; fail=0
check() { # NAME STATUS DETAIL
    if [ "$2" = 0 ]; then echo "PASS $1"; pass=$((pass + 1)); else echo "FAIL $1${3:+: $3}"; fail=$((fail + 1)); fi
}
metric() { # NAME{labels} -> value (0 when absent)
    curl -s -H "Authorization: Bearer $(cat "$S/state/admin.token")" "http://127.0.0.1:$ADMIN/metrics" |
        awk -v k="$1" '$1 == k { v = $2 } END { print (v == "" ? 0 : v) }'
}
stat_all() { grep -E '^Tls(Curr)?(Tx|Rx)Sw ' /proc/net/tls_stat | tr -s ' \t' '=' | tr '\n' ' '; }
grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp || { echo "FAIL: no tls ULP in this kernel"; exit 1; }
echo "guest: kernel $(uname -r), ULPs: $(cat /proc/sys/net/ipv4/tcp_available_ulp), $(openssl version)"

W=/tmp/www
mkdir -p "$W/seg"
head -c $((64 << 20)) /dev/urandom > "$W/big.bin"
# 1,000 segments of 24 KiB (distinct content) from one random pool.
head -c $((1000 * 24576)) /dev/urandom > /tmp/pool
split -a 4 -d -b 24576 /tmp/pool "$W/seg/s_"
rm /tmp/pool
ls "$W/seg" | head -1000 > /tmp/seglist
(cd "$W" && sha256sum big.bin seg/* > /tmp/want.sha256)

start_edge() { # MODE [strace] [extra [tls] keys]
    S=/tmp/run-$1
    rm -rf "$S"; mkdir -p "$S"
    cat > "$S/edge.toml" <<EOF
[server]
tls_listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$ADMIN"
state_dir = "$S/state"
shutdown_grace_secs = 2
[content]
root = "$W"
[tls]
ktls = "$1"
${3:-}
[limits]
max_requests_per_connection = 100000
EOF
    if [ "${2:-}" = strace ]; then
        strace -f -qq -o "$S/strace.log" \
            -e trace=openat,openat2,close,accept4,read,pread64,readv,preadv,preadv2,sendfile,write,writev,sendto,sendmsg,setsockopt \
            "$EDGE" serve --config "$S/edge.toml" > "$S/stdout" 2> "$S/stderr" &
    else
        "$EDGE" serve --config "$S/edge.toml" > "$S/stdout" 2> "$S/stderr" &
    fi
    EDGE_PID=$!
    wait_listen "$PORT" 60 && wait_listen "$ADMIN" 10 || { cat "$S/stderr"; echo "FAIL: edge did not start"; exit 1; }
    echo "guest: edge ($1) up: $(grep -o 'kTLS: .*' "$S/stderr" | head -1)"
}
stop_edge() {
    pkill -TERM -P "$EDGE_PID" 2>/dev/null || true   # edge under strace
    kill -TERM "$EDGE_PID" 2>/dev/null || true
    wait "$EDGE_PID" 2>/dev/null || true
}

want() { [ -z "${SUITE_ONLY:-}" ] || [[ " $SUITE_ONLY " == *" $1 "* ]]; }

# 5. TLS 1.2 AES-GCM explicit nonces never repeat on a connection (kTLS or not).
nonce_check() { # MODE OFFLOAD
    local mode=$1 offload=$2 suite tx0 tx1 rc out t0=$SECONDS
    for suite in TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384; do
        out=$S/nonce-$suite.out
        tx0=$(tls_stat TlsTxSw)
        rc=0
        "$RELAY" --server 127.0.0.1:$PORT --cipher "$suite" --connections 50 \
            --path /seg/s_0010 --requests 3 --length 24576 > "$out" 2>&1 || rc=$?
        tx1=$(tls_stat TlsTxSw)
        check "[$mode] $suite: no explicit nonce repeats on 50 relayed connections" $rc \
            "$(tail -1 "$out"); first of $(($(wc -l < "$out") - 1)) problem lines:"$'\n'"$(head -3 "$out" | sed 's/^/    /')"
        if [ "$offload" = 1 ]; then
            [ $((tx1 - tx0)) = 50 ]
        else
            [ "$tx1" = "$tx0" ]
        fi
        check "[$mode] $suite: TlsTxSw $tx0->$tx1 (+$((tx1 - tx0)), want +$((50 * offload)))" $?
    done
    echo "guest: [$mode] nonce checks took $((SECONDS - t0)) s"
}

# 6. A request followed by a FIN (no close_notify) before the kTLS hand-over is answered.
HANDOVER_WARN='WARN.*(hand-?over|[kK][tT][lL][sS])'
half_close_check() { # MODE
    local mode=$1 i ok=0 f0 f1 r0 r1 warns t0=$SECONDS
    f0=$(metric 'edge_ktls_setup_failures_total{reason="setup"}')
    r0=$(metric 'edge_ktls_setup_failures_total{reason="ulp_refused"}')
    for i in $(seq 1 10); do
        "$TMP_PEER" 127.0.0.1:$PORT "$S/state/cert.pem" half-close /seg/s_0005 > "$S/half-close.$i" 2>&1 && ok=$((ok + 1))
    done
    f1=$(metric 'edge_ktls_setup_failures_total{reason="setup"}')
    r1=$(metric 'edge_ktls_setup_failures_total{reason="ulp_refused"}')
    warns=$(grep -acE "$HANDOVER_WARN" "$S/stderr" || true)
    # All answered, none lost, no log line; and the userspace fallback (the kernel
    # refusing the ULP after the FIN) was really taken at least once.
    [ "$ok" = 10 ] && [ "$warns" = 0 ] && [ "$f1" = "$f0" ] && [ $((r1 - r0)) -ge 1 ]
    check "[$mode] 10 half-closed clients (request, FIN, no close_notify) all answered ($((r1 - r0)) by the userspace fallback)" $? \
        "$ok of 10 answered ($(head -1 "$S/half-close.1")); setup failures +$((f1 - f0)), ulp_refused +$((r1 - r0)); $warns WARN line(s) about the hand-over: $(grep -am1 -E "$HANDOVER_WARN" "$S/stderr" | sed 's/\x1b\[[0-9;]*m//g')"
    echo "guest: [$mode] half-close check took $((SECONDS - t0)) s"
}

# metrics_snap FILE: /metrics once (one curl start instead of one per value);
# mval FILE NAME{labels} -> value (0 when absent), like metric.
metrics_snap() {
    curl -s -H "Authorization: Bearer $(cat "$S/state/admin.token")" "http://127.0.0.1:$ADMIN/metrics" > "$1"
}
mval() { awk -v k="$2" '$1 == k { v = $2 } END { print (v == "" ? 0 : v) }' "$1"; }

# s_client_body OUT BODY: the HTTP response body in openssl s_client's output OUT
# (after its handshake text), cut by Content-Length; fails without a 200 head.
s_client_body() {
    local off hdr len
    off=$(grep -abo -m1 'HTTP/1\.1 200 ' "$1" | head -1 | cut -d: -f1) || true
    [ -n "$off" ] || return 1
    tail -c +$((off + 1)) "$1" > "$2.resp"
    hdr=$(grep -abo -m1 $'^\r$' "$2.resp" | head -1 | cut -d: -f1) || true
    [ -n "$hdr" ] || return 1
    len=$(head -c "$hdr" "$2.resp" | tr -d '\r' | awk -F': *' 'tolower($1) == "content-length" { print $2 }')
    [ -n "$len" ] || return 1
    tail -c +$((hdr + 3)) "$2.resp" | head -c "$len" > "$2"
}

# 3a'. kTLS engages on resumed connections. A first connection (TLS VERSION) saves
# its session after a GET (so a TLS 1.3 NewSessionTicket has arrived); a second one
# resumes it (-sess_in) and fetches the segment SEG. The second must be resumed
# (s_client "Reused, TLSvV", edge_tls_handshakes_total{kind="resumed"} +1, full +0)
# and byte-identical (sha256); kTLS mode: handed to kTLS (edge_tls_connections_total
# {path="ktls"} +1, TlsTxSw +1) with its body sent by sendfile on kTLS
# (edge_body_bytes_total{path="sendfile_ktls"} + the segment's size, userspace_copy
# +0); off mode: userspace (path="userspace" +1, userspace_copy + the size), tls_stat
# unchanged.
resumed_check() { # MODE OFFLOAD VERSION SEG
    local mode=$1 offload=$2 v=$3 seg=$4 flag=-tls1_3 o1 o2 m0 m1 t0 t1 x0 x1 size got want rc=0 bad=()
    local res full ktls user sf uc
    if [ "$v" = 1.2 ]; then flag=-tls1_2; fi
    o1=$S/res$v-1.out; o2=$S/res$v-2.out; m0=$S/res$v-m0; m1=$S/res$v-m1
    printf 'GET /seg/s_0007 HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n' |
        openssl s_client $flag -ign_eof -sess_out "$S/sess$v" -connect 127.0.0.1:$PORT > "$o1" 2>&1 || true
    metrics_snap "$m0"; t0=$(tls_stat TlsTxSw); x0=$(tls_stat TlsRxSw)
    printf 'GET /seg/%s HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n' "$seg" |
        openssl s_client $flag -ign_eof -sess_in "$S/sess$v" -connect 127.0.0.1:$PORT > "$o2" 2>&1 || true
    metrics_snap "$m1"; t1=$(tls_stat TlsTxSw); x1=$(tls_stat TlsRxSw)
    delta() { echo $(($(mval "$m1" "$1") - $(mval "$m0" "$1"))); }
    res=$(delta 'edge_tls_handshakes_total{kind="resumed"}'); full=$(delta 'edge_tls_handshakes_total{kind="full"}')
    ktls=$(delta 'edge_tls_connections_total{path="ktls"}'); user=$(delta 'edge_tls_connections_total{path="userspace"}')
    sf=$(delta 'edge_body_bytes_total{path="sendfile_ktls"}'); uc=$(delta 'edge_body_bytes_total{path="userspace_copy"}')
    size=$(stat -c %s "$W/seg/$seg")
    grep -aq 'HTTP/1.1 200' "$o1" && [ -s "$S/sess$v" ] || bad+=("first connection: no 200 or no session saved")
    grep -aq "^Reused, TLSv$v," "$o2" || bad+=("not resumed: $(grep -aE '^(New|Reused),' "$o2" | head -1 || true)")
    [ "$res" = 1 ] && [ "$full" = 0 ] || bad+=("handshakes resumed +$res, full +$full")
    want=$(sha256sum < "$W/seg/$seg" | cut -d' ' -f1)
    got=$(s_client_body "$o2" "$S/res$v.body" && sha256sum < "$S/res$v.body" | cut -d' ' -f1) || got="(no 200 with a Content-Length)"
    [ "$got" = "$want" ] || bad+=("body sha256 $got, want $want")
    if [ "$offload" = 1 ]; then
        [ "$ktls" = 1 ] && [ "$user" = 0 ] && [ $((t1 - t0)) = 1 ] && [ "$sf" = "$size" ] && [ "$uc" = 0 ] ||
            bad+=("not offloaded")
    else
        [ "$user" = 1 ] && [ "$ktls" = 0 ] && [ "$t1" = "$t0" ] && [ "$uc" = "$size" ] && [ "$sf" = 0 ] ||
            bad+=("not in userspace")
    fi
    [ ${#bad[@]} = 0 ] || rc=1
    local what="kTLS engages on resumed connections"; [ "$offload" = 1 ] || what="resumed connections served in userspace"
    check "[$mode] TLS $v: $what (Reused, resumed +$res; ktls +$ktls userspace +$user; TlsTxSw $t0->$t1, TlsRxSw $x0->$x1; body bytes sendfile_ktls +$sf userspace_copy +$uc of $size; sha256 ${got:0:12})" $rc \
        "$(IFS=';'; echo "${bad[*]}"); $(grep -aE '^(New|Reused),' "$o2" | head -1 || true)"
}

run_mode() { # require|off
    local mode=$1 tx0 rx0 tx1 rx1 curr k0 k1 u0 out m
    local offload=0; [ "$mode" = require ] && offload=1
    echo "== tls.ktls = \"$mode\""
    if [ $offload = 1 ]; then start_edge "$mode" strace; else start_edge "$mode"; fi
    grep -q "kTLS: $([ $offload = 1 ] && echo available || echo unavailable)" "$S/stderr"
    check "[$mode] start-up log states the kTLS decision" $? "$(head -3 "$S/stderr")"

    # 1. big object + 1,000 segments over one keep-alive connection
    tx0=$(tls_stat TlsTxSw); rx0=$(tls_stat TlsRxSw)
    mkdir -p "$S/got/seg"
    {
        echo "url = \"https://127.0.0.1:$PORT/big.bin\""; echo "output = \"$S/got/big.bin\""
        while read -r f; do echo "url = \"https://127.0.0.1:$PORT/seg/$f\""; echo "output = \"$S/got/seg/$f\""; done < /tmp/seglist
    } > "$S/curl.cfg"
    curl -sk --http1.1 --config "$S/curl.cfg" -w '%{num_connects} %{size_header}\n' > "$S/curl.out"
    (cd "$S/got" && sha256sum -c --quiet /tmp/want.sha256)
    check "[$mode] 64 MiB + 1,000 segments byte-identical (sha256)" $?
    conns=$(awk '{s += $1} END {print s}' "$S/curl.out"); nresp=$(wc -l < "$S/curl.out")
    [ "$conns" = 1 ] && [ "$nresp" = 1001 ]
    check "[$mode] 1,001 responses over one keep-alive connection" $? "$conns connections, $nresp responses"
    tx1=$(tls_stat TlsTxSw); rx1=$(tls_stat TlsRxSw)
    if [ $offload = 1 ]; then
        [ $((tx1 - tx0)) -ge 1 ] && [ $((rx1 - rx0)) -ge 1 ]
        check "[$mode] TlsTxSw/TlsRxSw rose ($tx0->$tx1, $rx0->$rx1)" $?
    else
        [ "$tx1" = "$tx0" ] && [ "$rx1" = "$rx0" ]
        check "[$mode] tls_stat unchanged on the userspace path ($tx0->$tx1)" $?
    fi

    # TlsCurrTxSw equals the offloaded connections held open.
    # The clients' stdin stays open until they are killed (openssl takes seconds to
    # start in the guest when the host is busy; a fixed sleep raced it), and the
    # count is polled until all three are in (up to 30 s).
    local idle_pids=() i
    for i in 1 2 3; do
        sleep 120 | openssl s_client -connect 127.0.0.1:$PORT > /dev/null 2>&1 &
        idle_pids+=($!)
    done
    for i in $(seq 1 60); do
        curr=$(tls_stat TlsCurrTxSw); open=$(metric edge_connections_open)
        [ "$open" = 3 ] && [ "$curr" = $((3 * offload)) ] && break
        sleep 0.5
    done
    rc=0; [ "$curr" = $((3 * offload)) ] && [ "$open" = 3 ] || rc=1
    check "[$mode] TlsCurrTxSw=$curr with 3 idle clients open (edge_connections_open=$open)" $rc "$(stat_all)"
    kill "${idle_pids[@]}" 2>/dev/null || true
    for i in $(seq 1 40); do [ "$(metric edge_connections_open)" = 0 ] && break; sleep 0.25; done

    # 3a. resumption
    k0=$(metric 'edge_tls_connections_total{path="ktls"}')
    printf 'GET /seg/s_0001 HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n' |
        openssl s_client -tls1_3 -ign_eof -sess_out "$S/sess" -connect 127.0.0.1:$PORT > "$S/s1.out" 2>&1 || true
    printf 'GET /seg/s_0002 HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n' |
        openssl s_client -tls1_3 -ign_eof -sess_in "$S/sess" -connect 127.0.0.1:$PORT > "$S/s2.out" 2>&1 || true
    k1=$(metric 'edge_tls_connections_total{path="ktls"}')
    grep -aq '^Reused, TLSv1.3' "$S/s2.out" && grep -aq 'HTTP/1.1 200' "$S/s2.out" &&
        [ "$(metric 'edge_tls_handshakes_total{kind="resumed"}')" -ge 1 ] && [ $((k1 - k0)) = $((2 * offload)) ]
    check "[$mode] TLS 1.3 resumption: second connection reused the session, $((k1 - k0)) offloaded" $? \
        "$(grep -aE '^(New|Reused)' "$S/s2.out")"

    # 3a'. kTLS engages on resumed connections, TLS 1.3 and 1.2: the resumed
    # connection's segment leaves through sendfile on kTLS, byte-identical.
    resumed_check "$mode" $offload 1.3 s_0600
    resumed_check "$mode" $offload 1.2 s_0601

    # 3b. versions x ciphers
    u0=$(metric 'edge_ktls_setup_failures_total{reason="unsupported_cipher"}')
    for spec in "1.2 ECDHE-ECDSA-AES128-GCM-SHA256" "1.2 ECDHE-ECDSA-AES256-GCM-SHA384" "1.2 ECDHE-ECDSA-CHACHA20-POLY1305" \
                "1.3 TLS_AES_128_GCM_SHA256" "1.3 TLS_AES_256_GCM_SHA384" "1.3 TLS_CHACHA20_POLY1305_SHA256"; do
        set -- $spec
        k0=$(metric 'edge_tls_connections_total{path="ktls"}')
        if [ "$1" = 1.2 ]; then cipher=(--ciphers "$2"); else cipher=(--tls13-ciphers "$2"); fi
        out=$(curl -sk --http1.1 --tlsv"$1" --tls-max "$1" "${cipher[@]}" -o "$S/c.bin" -w '%{http_code}' \
            "https://127.0.0.1:$PORT/seg/s_0500" 2>&1) || true
        k1=$(metric 'edge_tls_connections_total{path="ktls"}')
        rc=0; [ "$out" = 200 ] && cmp -s "$S/c.bin" "$W/seg/s_0500" && [ $((k1 - k0)) = "$offload" ] || rc=1
        what=served; [ $offload = 1 ] && what="served, offloaded"
        check "[$mode] TLS $1 $2: $what" $rc "status $out, ktls +$((k1 - k0)), $(cmp "$S/c.bin" "$W/seg/s_0500" 2>&1 | head -1)"
    done
    [ "$(metric 'edge_ktls_setup_failures_total{reason="unsupported_cipher"}')" = "$u0" ]
    check "[$mode] no connection fell back for its cipher" $?

    # 3c. misbehaving peers
    for m in close-notify fatal-alert key-update; do
        rc=0; out=$("$PEER" 127.0.0.1:$PORT "$S/state/cert.pem" "$m" /seg/s_0003 2>&1) || rc=$?
        check "[$mode] peer $m: $out" $rc
    done
    curl -sk --http1.1 -o "$S/c.bin" "https://127.0.0.1:$PORT/seg/s_0004" && cmp -s "$S/c.bin" "$W/seg/s_0004" &&
        kill -0 "$EDGE_PID" && ! grep -qi panick "$S/stderr"
    check "[$mode] still serving after the misbehaving peers, no panic" $? "$(grep -i panick "$S/stderr" | head -2)"
    if [ $offload = 1 ]; then
        [ "$(metric 'edge_connection_closes_total{reason="ktls_control_record"}')" -ge 1 ]
        check "[$mode] KeyUpdate on an offloaded connection closed it (ktls_control_record)" $?
    fi

    # 4. metrics name the path
    local ktls_bytes user_bytes
    ktls_bytes=$(metric 'edge_body_bytes_total{path="sendfile_ktls"}'); user_bytes=$(metric 'edge_body_bytes_total{path="userspace_copy"}')
    if [ $offload = 1 ]; then
        [ "$ktls_bytes" -ge $((64 << 20)) ] && [ "$user_bytes" = 0 ]
    else
        [ "$user_bytes" -ge $((64 << 20)) ] && [ "$ktls_bytes" = 0 ]
    fi
    check "[$mode] metrics: sendfile_ktls=$ktls_bytes userspace_copy=$user_bytes bytes" $?
    echo "guest: tls_stat now: $(stat_all)"
    stop_edge

    # 2. strace: bodies by sendfile, writes = heads
    if [ $offload = 1 ]; then
        heads=$(awk '{s += $2} END {print s}' "$S/curl.out")
        rc=0; out=$("$PY" "$HERE/strace_bodies.py" "$S/strace.log" "$heads" $(((64 << 20) + 1000 * 24576)) 2>&1) || rc=$?
        check "[$mode] strace: $out" $rc
    fi
}

# tmp_bin NAME: a copy of target/debug/NAME in guest tmpfs, for binaries started many
# times (a start over 9p is slow); stripped (~3 MB instead of 40-80 MB) when binutils is
# there, so tmpfs (guest RAM) stays free for the test files.
tmp_bin() {
    [ -x "/tmp/bin/$1" ] || { mkdir -p /tmp/bin &&
        { strip -o "/tmp/bin/$1" "$REPO/target/debug/$1" 2>/dev/null || cp "$REPO/target/debug/$1" "/tmp/bin/$1"; }; }
    echo "/tmp/bin/$1"
}

# 5 and 6 get an edge of their own, not under strace: check 2 counts every read of a
# content file, and a server may well answer a half-closed client in userspace.
wire_checks() { # MODE
    local mode=$1 offload=0 t0=$SECONDS; [ "$1" = require ] && offload=1
    RELAY=$(tmp_bin tls-nonce-relay); TMP_PEER=$(tmp_bin tls-peer)
    start_edge "$mode"
    if want nonce; then nonce_check "$mode" $offload; fi
    if [ $offload = 1 ] && want half-close; then half_close_check "$mode"; fi
    stop_edge
    echo "guest: [$mode] checks 5-6 took $((SECONDS - t0)) s, edge start and stop included"
}

# Without KeyUpdate, a kTLS connection carries at most tls.ktls_max_bytes_per_connection
# and closes gracefully after the response that reaches it.
cap_check() {
    local out
    start_edge require "" "ktls_max_bytes_per_connection = 1048576"
    out=$(curl -sk --http1.1 -o /dev/null -o /dev/null -o /dev/null -H 'Range: bytes=0-1048575' \
        -w '%{num_connects} %{http_code} %header{connection}\n' \
        "https://127.0.0.1:$PORT/big.bin" "https://127.0.0.1:$PORT/seg/s_0001" "https://127.0.0.1:$PORT/seg/s_0002" | tr '\n' ' ')
    [ "$out" = "1 206 close 1 206 keep-alive 0 206 keep-alive " ] &&
        [ "$(metric 'edge_connection_closes_total{reason="ktls_byte_cap"}')" = 1 ]
    check "[require] kTLS byte cap (1 MiB): connection closed after the response reaching it" $? "$out"
    stop_edge
}

modes=("$@"); [ ${#modes[@]} -gt 0 ] || modes=(require off)
for m in "${modes[@]}"; do
    if [ -z "${SUITE_ONLY:-}" ]; then run_mode "$m"; fi
    wire_checks "$m"
done
[[ " ${modes[*]} " == *" require "* ]] && [ -z "${SUITE_ONLY:-}" ] && cap_check
echo "ktls-suite: $pass passed, $fail failed"
[ "$fail" = 0 ]

#!/bin/bash
# tests/vm/nginx-ktls-check.sh - prove that Debian's nginx offloads TLS to the
# kernel (kTLS + sendfile) in the test guest, so it can serve as the peer for
# edge's kTLS benchmarks (bench/ktls-guest-bench.sh).
#
# In the guest (run from the repo root):
#     tests/vm/run-in-vm.sh -u . tests/vm/nginx-ktls-check.sh
# On the host, the script does that by itself after apt-get installing what
# the guest borrows from the host's /usr (nginx, curl, openssl, strace):
#     tests/vm/nginx-ktls-check.sh
#
# Guest side: generates an ECDSA P-256 self-signed cert, writes a few 2 MiB
# files to tmpfs, starts nginx with its own config in /tmp (sendfile on;
# ssl_conf_command Options KTLS), fetches every file over HTTPS with curl
# (TLS 1.3, and one more over TLS 1.2), compares sha256, and checks that
# TlsTxSw in /proc/net/tls_stat rose by at least one per connection.  An
# strace of the worker during one fetch shows setsockopt(SOL_TLS) and
# sendfile() (informational).  Exit 0 only if the offload is confirmed.
#
# Env: NGINX_CHECK_PORT (default 8443), NGINX_CHECK_FILES (default 4).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"

if [ "${EDGE_VM:-}" != 1 ]; then
    # ---- host: install the borrowed tools, then run ourselves in the guest
    vm_ensure_host_pkgs nginx:nginx curl:curl openssl:openssl strace:strace
    REPO=$(cd "$HERE/../.." && pwd)
    exec "$HERE/run-in-vm.sh" -u -t 300 "$REPO" tests/vm/nginx-ktls-check.sh
fi

# ---- guest
PORT=${NGINX_CHECK_PORT:-8443}
NFILES=${NGINX_CHECK_FILES:-4}
D=/tmp/nginx-ktls-check
WWW=$D/www

fail() { echo "FAIL: $*"; exit 1; }
for t in nginx curl openssl sha256sum; do
    command -v "$t" >/dev/null ||
        fail "$t not found in the guest: install it on the host and run with -u"
done
grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp ||
    fail "no tls ULP (not in the kTLS guest?)"

echo "guest: kernel $(uname -r), ULPs: $(cat /proc/sys/net/ipv4/tcp_available_ulp)"
echo "guest: $(nginx -v 2>&1), $(openssl version)"

rm -rf "$D"; mkdir -p "$D"
vm_make_cert "$D"
mapfile -t FILES < <(vm_make_files "$WWW" "$NFILES" 2048)
nginx_write_conf "$D" "$PORT" on 1 "$WWW" "$D"
trap nginx_stop EXIT
nginx_start "$D" "$PORT"
WORKER=$(proc_children "$NGINX_PID" | head -n1)
echo "guest: nginx master $NGINX_PID, worker $WORKER, https://127.0.0.1:$PORT/"

before_tx=$(tls_stat TlsTxSw)
echo "tls_stat before: $(grep -E '^Tls(Curr)?(Tx|Rx)Sw' /proc/net/tls_stat | tr -s ' \t' '=' | tr '\n' ' ')"

# fetch URL FILE TLSVER: download, compare sha256, print one line
conns=0 bad=0
fetch() {
    local name=$1 ver=$2 got want info
    info=$(curl -sS --cacert "$D/cert.pem" --tlsv"$ver" --tls-max "$ver" \
        -o "$D/got" -w '%{http_code} %{size_download}B %{speed_download}B/s' \
        "https://127.0.0.1:$PORT/$name") || { echo "  $name TLSv$ver: curl failed"; bad=$((bad + 1)); return 0; }
    conns=$((conns + 1))
    want=$(sha256sum < "$WWW/$name" | cut -d' ' -f1)
    got=$(sha256sum < "$D/got" | cut -d' ' -f1)
    if [ "$got" = "$want" ]; then
        echo "  $name TLSv$ver: $info sha256 ok ${got:0:16}"
    else
        echo "  $name TLSv$ver: $info sha256 MISMATCH"; bad=$((bad + 1))
    fi
}

# strace the worker during the first fetch (informational: the proof is
# tls_stat below).  Wait until the tracer is attached before fetching.
STRACE_PID=
if command -v strace >/dev/null; then
    strace -f -qq -e trace=setsockopt,sendfile -o "$D/strace.txt" -p "$WORKER" 2>"$D/strace.err" &
    STRACE_PID=$!
    for _ in $(seq 1 50); do
        [ "$(awk '/^TracerPid:/ { print $2 }' "/proc/$WORKER/status")" != 0 ] && break
        sleep 0.1
    done
fi
echo "fetching over HTTPS:"
fetch "${FILES[0]}" 1.3
if [ -n "$STRACE_PID" ]; then
    sleep 0.5; kill -INT "$STRACE_PID" 2>/dev/null || true; wait "$STRACE_PID" 2>/dev/null || true
fi
for f in "${FILES[@]:1}"; do fetch "$f" 1.3; done
fetch "${FILES[0]}" 1.2

after_tx=$(tls_stat TlsTxSw)
echo "tls_stat after:  $(grep -E '^Tls(Curr)?(Tx|Rx)Sw' /proc/net/tls_stat | tr -s ' \t' '=' | tr '\n' ' ')"
if [ -n "$STRACE_PID" ]; then
    echo "strace of the worker during the first fetch:"
    grep -m2 "SOL_TLS" "$D/strace.txt" | sed -E 's/"[^"]*"(\.\.\.)?/".."/; s/^/  /' ||
        echo "  (no setsockopt SOL_TLS seen)"
    awk '/sendfile\(/ { n++; if ($NF ~ /^[0-9]+$/) b += $NF }
         END { printf "  sendfile() calls: %d, %d bytes\n", n, b }' "$D/strace.txt"
fi
if grep -E '\[(emerg|alert|crit)\]' "$D/logs/error.log"; then
    echo "(nginx error log has the lines above)"
fi

delta=$((after_tx - before_tx))
echo "TlsTxSw: $before_tx -> $after_tx (+$delta) for $conns HTTPS connections, $bad bad"
[ "$bad" = 0 ] || fail "$bad fetches failed or mismatched"
[ "$conns" -gt 0 ] && [ "$delta" -ge "$conns" ] ||
    fail "TlsTxSw rose by $delta for $conns connections: nginx did not offload TLS"
echo "PASS: nginx offloads TLS transmit to the kernel (kTLS + sendfile)"

#!/bin/bash
# tests/fleet/fleet-suite.sh - ansible/ proven against real hosts: three Debian guests
# under QEMU (build-rootfs.sh, guest.sh) provisioned over SSH by site.yml, one origin
# and two edges, with the pinned Ansible of ansible/requirements.txt. Checks, each a
# PASS/FAIL line:
#   1. site.yml converges; a second run reports changed=0 on every host
#   2. HTTPS from the host to each edge returns every demo file byte-identical, the
#      first time filled from the origin (X-Cache: MISS), then from the cache (HIT)
#   3. the edges serve with kTLS: TlsTxSw in the guest's /proc/net/tls_stat rises
#   4. a session from edge 1 resumes on edge 2 (the fleet's ticket keys)
#   5. rotate-ticket-keys.yml runs while a client keeps resuming, alternating edges:
#      every connection resumes (no full handshake forced), the edges end with the new
#      key first and the previous second, and the vault file holds the same keys
#   6. `systemctl reload edge` under a download drops no connection (same PID, one
#      TCP connection for the whole transfer, edge_config_reloads_total applied +1)
#   7. bad input changes nothing: a vault without a required variable and an invalid
#      value fail in argument_specs before any task; a value that renders a config
#      edge refuses fails at `edge serve --check`; config files and PIDs unchanged
#      and the edge still serves
#
#   tests/fleet/fleet-suite.sh      (EDGE_BIN=path to the edge binary, default
#                                    target/debug/edge; KEEP=1 leaves the guests up)
# Ports: 127.0.0.1:$FLEET_PORT_BASE.. (default 23200): SSH +1..+3, origin +10,
# edge1 +11, edge2 +12. Exit 0 only if every check passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
VM_HOME=${EDGE_VM_HOME:-$HOME/.cache/edge-vm}
B=${FLEET_PORT_BASE:-23200}
G=tests/fleet/guest.sh
pass=0 fail=0
check() { # DESCRIPTION STATUS
    if [ "$2" = 0 ]; then echo "PASS $1"; pass=$((pass + 1)); else echo "FAIL $1"; fail=$((fail + 1)); fi
}
die() { echo "fleet-suite: $*"; exit 1; }
T0=$SECONDS

command -v socat >/dev/null || apt-get install -y -q --no-install-recommends socat >/dev/null ||
    die "socat missing (guest port forwards)"
ABIN=$(tests/fleet/ansible-env.sh) || die "cannot install the pinned Ansible"
export PATH="$ABIN:$PATH"
EDGE_BIN=${EDGE_BIN:-target/debug/edge}
[ -x "$EDGE_BIN" ] || die "no edge binary at $EDGE_BIN (cargo build first)"

W=$(mktemp -d /tmp/edge-fleet.XXXXXX)
guests=(origin edge1 edge2)
cleanup() {
    if [ "${KEEP:-0}" = 1 ]; then echo "guests kept; work dir $W"; return; fi
    for g in "${guests[@]}"; do $G stop "$g" >/dev/null 2>&1 & done; wait
    rm -rf "$W"
}
trap cleanup EXIT

# --- the controller's side: a stripped binary, the content, an inventory and a vault
strip -o "$W/edge" "$EDGE_BIN" || die "strip failed"
tar -C edge/demo/www -czf "$W/content.tar.gz" . || die "tar failed"
inv=$W/inventory
mkdir -p "$inv/group_vars/all" "$inv/group_vars/edges" "$inv/group_vars/origins"
key=$VM_HOME/fleet/ssh/id_ed25519
cat > "$inv/hosts.yml" <<YML
all:
  vars:
    ansible_user: root
    ansible_host: 127.0.0.1
    ansible_ssh_private_key_file: $key
    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  children:
    origins:
      hosts:
        origin: {ansible_port: $((B + 1))}
    edges:
      hosts:
        edge1: {ansible_port: $((B + 2))}
        edge2: {ansible_port: $((B + 3))}
YML
cat > "$inv/group_vars/all/vars.yml" <<YML
edge_host_binary_src: $W/edge
YML
cat > "$inv/group_vars/edges/vars.yml" <<YML
edge_origin_url: https://10.0.2.100:8443
edge_cache_disks:
  - path: /var/cache/edge/disk0
    size_mib: 64
edge_max_connections: 4096
edge_worker_threads: 1
YML
cat > "$inv/group_vars/origins/vars.yml" <<YML
origin_content_archive: $W/content.tar.gz
origin_max_connections: 4096
origin_worker_threads: 1
YML
printf 'fleet-test-%s\n' "$(openssl rand -hex 16)" > "$W/vault-pass"; chmod 600 "$W/vault-pass"
export ANSIBLE_VAULT_PASSWORD_FILE=$W/vault-pass ANSIBLE_CONFIG=$REPO/ansible/ansible.cfg
export ANSIBLE_INVENTORY=$inv/hosts.yml ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1
ansible/make-vault.sh "$inv" edge.fleet.test,127.0.0.1 origin.fleet.test,10.0.2.100 >/dev/null ||
    die "make-vault.sh failed"
CA=$inv/fleet-ca.pem

# --- three guests: sshd, and the origin's 8443 reachable from the edges as 10.0.2.100
$G start origin $((B + 1)) -p $((B + 10)):8443 > "$W/boot-origin.log" 2>&1 &
$G start edge1 $((B + 2)) -p $((B + 11)):443 -g 8443:$((B + 10)) > "$W/boot-edge1.log" 2>&1 &
$G start edge2 $((B + 3)) -p $((B + 12)):443 -g 8443:$((B + 10)) > "$W/boot-edge2.log" 2>&1 &
booted=0
for j in $(jobs -p); do wait "$j" && booted=$((booted + 1)); done
cat "$W"/boot-*.log
[ $booted = 3 ] || die "a guest did not boot"
echo "guests up after $((SECONDS - T0)) s"

play() { # LOG PLAYBOOK [ARGS...]: ansible-playbook from ansible/, output in LOG
    local log=$1; shift
    (cd ansible && ansible-playbook "$@") > "$log" 2>&1
}
recap_changed() { # LOG -> sum of changed= over the recap
    sed -n '/PLAY RECAP/,$p' "$1" | grep -o 'changed=[0-9]*' | cut -d= -f2 | paste -sd+ | bc
}
gssh() { $G ssh "$@"; }
state_of() { # HOST -> what must not change: config checksum and the service's PID
    gssh "$1" 'sha256sum /etc/edge/edge.toml 2>/dev/null | cut -c1-16; systemctl show -p MainPID --value edge'
}

# --- 1. converge, then converge again
t=$SECONDS; play "$W/site1.log" site.yml; rc=$?
check "site.yml converges the origin and two edges (rc=$rc, $((SECONDS - t)) s, changed=$(recap_changed "$W/site1.log"))" $rc
[ $rc = 0 ] || { tail -n 60 "$W/site1.log"; die "site.yml failed"; }
t=$SECONDS; play "$W/site2.log" site.yml; rc=$?
c=$(recap_changed "$W/site2.log")
[ $rc = 0 ] && [ "$c" = 0 ]
check "a second site.yml run reports changed=0 ($((SECONDS - t)) s; recap: $(sed -n '/PLAY RECAP/,$p' "$W/site2.log" | grep -o 'changed=[0-9]*' | tr '\n' ' '))" $?
[ "$c" = 0 ] || grep -B2 -A3 '^changed:' "$W/site2.log" | head -40

tls_tx() { gssh "$1" "awk '\$1==\"TlsTxSw\"{print \$2}' /proc/net/tls_stat"; }
metric() { # HOST NAME -> value from the host's admin plane
    gssh "$1" "curl -s -H \"Authorization: Bearer \$(cat /etc/edge/admin.token)\" http://127.0.0.1:9090/metrics" |
        awk -v n="$2" '$1==n{print $2}'
}
fetch() { # PORT PATH OUTFILE -> prints X-Cache
    curl -s --max-time 30 --cacert "$CA" --resolve "edge.fleet.test:$1:127.0.0.1" \
        -D "$3.h" -o "$3" "https://edge.fleet.test:$1$2" && tr -d '\r' < "$3.h" | sed -n 's/^x-cache: //Ip'
}

# --- 2, 3. every demo file from each edge, byte-identical, MISS then HIT, over kTLS
mapfile -t files < <(cd edge/demo/www && find . -type f | sed 's|^\.||' | sort)
batch() { # PORT OUTDIR FILES...: one keep-alive connection fetches them all, into
    # OUTDIR/0, 1, ...; OUTDIR/index has a line per file: X-Cache|Cache-Control
    local port=$1 out=$2 i=0 f args=(); shift 2
    rm -rf "$out"; mkdir -p "$out"
    for f in "$@"; do args+=(-o "$out/$i" "https://edge.fleet.test:$port$f"); i=$((i + 1)); done
    curl -s --max-time 300 --cacert "$CA" --resolve "edge.fleet.test:$port:127.0.0.1" \
        -w '%header{x-cache}|%header{cache-control}\n' "${args[@]}" > "$out/index"
}
for e in 1 2; do
    port=$((B + 10 + e)) host=edge$e
    tx0=$(tls_tx $host); bad=() miss=0 hit=0 cacheable=()
    batch $port "$W/first" "${files[@]}" || bad+=("curl failed")
    for i in "${!files[@]}"; do
        f=${files[$i]} line=$(sed -n "$((i + 1))p" "$W/first/index" | tr -d '\r')
        cmp -s "$W/first/$i" "edge/demo/www$f" || bad+=("$f: bytes differ")
        [ "${line%%|*}" = MISS ] && miss=$((miss + 1))
        # what the origin lets the edge keep for a minute or more (segments, init
        # segments); playlists live 2 s and pages and scripts are no-cache
        age=$(sed -n 's/.*max-age=\([0-9]*\).*/\1/p' <<< "$line")
        [ "${age:-0}" -ge 60 ] && cacheable+=("$f")
    done
    # then from the cache: a fill is stored after its response went out, so a file
    # may take a moment (on a slow guest) before it hits
    want=("${cacheable[@]}")
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [ ${#want[@]} = 0 ] && break
        batch $port "$W/again" "${want[@]}" || { bad+=("second curl failed"); break; }
        left=()
        for i in "${!want[@]}"; do
            f=${want[$i]}
            cmp -s "$W/again/$i" "edge/demo/www$f" || bad+=("$f: cached bytes differ")
            if [ "$(sed -n "$((i + 1))p" "$W/again/index" | cut -d'|' -f1)" = HIT ]; then
                hit=$((hit + 1))
            else
                left+=("$f")
            fi
        done
        want=("${left[@]}")
        [ ${#want[@]} = 0 ] || sleep 1
    done
    tx1=$(tls_tx $host)
    [ ${#bad[@]} = 0 ] && [ $miss = ${#files[@]} ] && [ ${#cacheable[@]} -ge 20 ] && [ $hit = ${#cacheable[@]} ]
    check "edge $e: ${#files[@]} demo files byte-identical over HTTPS, filled from the origin (MISS $miss), the ${#cacheable[@]} cacheable ones then from the cache (HIT $hit) ${bad[*]:0:3}" $?
    ktls=$(metric $host 'edge_tls_connections_total{path="ktls"}')
    [ "$tx1" -ge $((tx0 + 2)) ] && [ "${ktls:-0}" -ge 2 ]
    check "edge $e: served with kTLS (TlsTxSw $tx0 -> $tx1; edge_tls_connections_total{path=\"ktls\"} $ktls)" $?
done

# --- 4. a ticket from edge 1 resumes on edge 2
sclient() { # PORT SESSFILE [-sess_in FILE] -> s_client output (one request)
    local port=$1 out=$2; shift 2
    printf 'GET /content/hls_ts/master.m3u8 HTTP/1.1\r\nHost: edge.fleet.test\r\nConnection: close\r\n\r\n' |
        timeout 20 openssl s_client -connect "127.0.0.1:$port" -servername edge.fleet.test -CAfile "$CA" \
            -verify_return_error -ign_eof -sess_out "$out" "$@" 2>&1
}
sclient $((B + 11)) "$W/s1" > "$W/first.out"
sclient $((B + 12)) "$W/s2" -sess_in "$W/s1" > "$W/second.out"
grep -aq '^New, TLSv1.3' "$W/first.out" && grep -aq '^Reused, TLSv1.3' "$W/second.out"
check "a TLS 1.3 session from edge 1 resumes on edge 2 ($(grep -a -m1 -E '^(New|Reused),' "$W/second.out"))" $?

# --- 5. rotation while a client keeps resuming, alternating between the edges
keys_on() { gssh "$1" 'cat /etc/edge/tls/ticket.keys'; }
old_keys=$(keys_on edge1)
full0=$(( $(metric edge1 'edge_tls_handshakes_total{kind="full"}') + $(metric edge2 'edge_tls_handshakes_total{kind="full"}') ))
cp "$W/s2" "$W/sess"
( trap - EXIT
  port=$((B + 11)) other=$((B + 12))
  while [ ! -e "$W/stop" ]; do
      sclient "$port" "$W/sess.new" -sess_in "$W/sess" | grep -a -m1 -E '^(New|Reused),' | cut -d, -f1 >> "$W/resumes"
      [ -s "$W/sess.new" ] && mv "$W/sess.new" "$W/sess"
      read -r port other <<< "$other $port"
  done ) &
loop=$!
sleep 3
t=$SECONDS; play "$W/rotate.log" rotate-ticket-keys.yml; rrc=$?
sleep 3; touch "$W/stop"; wait $loop
full1=$(( $(metric edge1 'edge_tls_handshakes_total{kind="full"}') + $(metric edge2 'edge_tls_handshakes_total{kind="full"}') ))
reused=$(grep -c '^Reused' "$W/resumes"); new=$(grep -c '^New' "$W/resumes")
[ $rrc = 0 ] && [ "$new" = 0 ] && [ "$reused" -ge 6 ] && [ $full1 = $full0 ]
check "rotate-ticket-keys.yml (rc=$rrc, $((SECONDS - t)) s) under a client resuming on alternate edges: $reused resumed, $new full; edges' full handshakes +$((full1 - full0))" $?
[ $rrc = 0 ] || tail -n 40 "$W/rotate.log"
k1=$(keys_on edge1); k2=$(keys_on edge2)
vault_keys=$(cd ansible && ansible-vault view "$inv/group_vars/edges/ticket_keys.yml" | sed -n 's/^- \(.*\)$/\1/p; s/^  - \(.*\)$/\1/p')
[ "$k1" = "$k2" ] && [ "$(echo "$k1" | wc -l)" = 2 ] && [ "$(echo "$k1" | sed -n 2p)" = "$(echo "$old_keys" | head -1)" ] &&
    [ "$(echo "$k1" | head -1)" != "$(echo "$old_keys" | head -1)" ] && [ "$vault_keys" = "$k1" ]
check "after the rotation both edges hold [new, previous] and the vault file holds the same two keys" $?

# --- 6. systemctl reload under a download drops nothing
pid0=$(gssh edge1 'systemctl show -p MainPID --value edge'); ap0=$(metric edge1 'edge_config_reloads_total{result="applied"}')
urls=(); for f in "${files[@]}"; do urls+=(-o /dev/null "https://edge.fleet.test:$((B + 11))$f"); done
curl -s --cacert "$CA" --resolve "edge.fleet.test:$((B + 11)):127.0.0.1" --limit-rate 400k \
    -w '%{num_connects} %{size_download} %{http_code}\n' "${urls[@]}" > "$W/reload.curl" 2>&1 &
dl=$!
sleep 2
gssh edge1 'systemctl reload edge'; rl=$?
wait $dl; dlrc=$?
pid1=$(gssh edge1 'systemctl show -p MainPID --value edge'); ap1=$(metric edge1 'edge_config_reloads_total{result="applied"}')
conns=$(awk '{s+=$1} END {print s}' "$W/reload.curl"); codes=$(awk '{print $3}' "$W/reload.curl" | sort -u | tr '\n' ' ')
[ $rl = 0 ] && [ $dlrc = 0 ] && [ "$pid0" = "$pid1" ] && [ "$conns" = 1 ] && [ "$codes" = "200 " ] && [ $((ap1 - ap0)) = 1 ]
check "systemctl reload edge during a ${#files[@]}-file download on one connection: curl rc=$dlrc, connections $conns, statuses $codes; PID $pid0 -> $pid1; reloads applied +$((ap1 - ap0))" $?

# --- 7. bad input changes nothing
before=$(for h in origin edge1 edge2; do state_of $h; done)
bad=$W/inventory-bad
cp -r "$inv" "$bad"
(cd ansible && ansible-vault view "$inv/group_vars/edges/vault.yml") | grep -v '^edge_host_admin_token:' |
    (cd ansible && ansible-vault encrypt --output "$bad/group_vars/edges/vault.yml" -) >/dev/null
play "$W/bad1.log" site.yml -i "$bad/hosts.yml"; rc=$?
[ $rc != 0 ] && grep -q 'missing required arguments: edge_host_admin_token' "$W/bad1.log" && [ "$(recap_changed "$W/bad1.log")" = 0 ]
check "a vault without edge_host_admin_token fails in argument_specs before any change (rc=$rc: $(grep -o -m1 'missing required arguments: [a-z_]*' "$W/bad1.log"))" $?
play "$W/bad2.log" site.yml -e edge_max_connections=lots; rc=$?
[ $rc != 0 ] && grep -q "edge_max_connections" "$W/bad2.log" && grep -qi "argument spec\|argument_spec\|Validation of arguments failed" "$W/bad2.log" && [ "$(recap_changed "$W/bad2.log")" = 0 ]
check "edge_max_connections=lots fails in argument_specs before any change (rc=$rc: $(grep -o -m1 "edge_max_connections'* [^.\"]*" "$W/bad2.log" | head -1))" $?
play "$W/bad3.log" site.yml -e edge_max_connections=0 --limit edge1 --tags config; rc=$?
[ $rc != 0 ] && grep -q 'failed to validate' "$W/bad3.log" && grep -q 'max_connections' "$W/bad3.log"
check "edge_max_connections=0 renders a config edge serve --check refuses: the play fails there (rc=$rc: $(grep -o -m1 'edge: error: [^"\\]*' "$W/bad3.log"))" $?
after=$(for h in origin edge1 edge2; do state_of $h; done)
x=$(fetch $((B + 11)) /content/hls_ts/seg_000.ts "$W/got")
[ "$before" = "$after" ] && [ "$x" = HIT ] && cmp -s "$W/got" edge/demo/www/content/hls_ts/seg_000.ts
check "after the three failed plays every host's config and edge PID are unchanged and edge 1 still serves" $?

echo "fleet-suite: $pass passed, $fail failed ($((SECONDS - T0)) s)"
[ $fail = 0 ]

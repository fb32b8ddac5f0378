#!/bin/bash
# ansible/make-vault.sh - creates the secrets of a new fleet in an inventory
# directory, encrypted with ansible-vault (README "Operate a fleet"):
#
#   ANSIBLE_VAULT_PASSWORD_FILE=~/.edge-vault-pass \
#   ansible/make-vault.sh INVENTORY_DIR EDGE_NAMES ORIGIN_NAMES
#
# EDGE_NAMES / ORIGIN_NAMES: comma-separated DNS names or IP addresses the edges'
# and the origin's certificates are for (e.g. "cdn.example.net" "origin.example.net").
# Writes, refusing to overwrite any of them:
#   group_vars/edges/vault.yml        edge_host_tls_cert_pem, edge_host_tls_key_pem,
#                                     edge_host_admin_token (encrypted)
#   group_vars/edges/ticket_keys.yml  edge_ticket_keys: one new key (encrypted;
#                                     rotate-ticket-keys.yml rewrites it)
#   group_vars/origins/vault.yml      the origin's certificate, key and admin token
#                                     (encrypted)
#   group_vars/all/fleet_ca.yml       edge_origin_ca_pem: the fleet CA's certificate
#                                     (public), which signed both certificates
#   fleet-ca.pem                      the same certificate, for clients and tests
# The edges' certificate is signed by a private CA made here: fine for the origin
# link and for tests; for viewers, put a publicly trusted certificate and key in
# group_vars/edges/vault.yml (`ansible-vault edit`). The CA's key is not kept.
set -euo pipefail
[ $# -eq 3 ] || { sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;$d' >&2; exit 2; }
inv=$1 edge_names=$2 origin_names=$3
[ -n "${ANSIBLE_VAULT_PASSWORD_FILE:-}" ] && [ -r "$ANSIBLE_VAULT_PASSWORD_FILE" ] ||
    { echo "make-vault.sh: set ANSIBLE_VAULT_PASSWORD_FILE to a readable file holding the vault password" >&2; exit 2; }
command -v ansible-vault >/dev/null || { echo "make-vault.sh: ansible-vault not on PATH" >&2; exit 2; }
outs=("$inv/group_vars/edges/vault.yml" "$inv/group_vars/edges/ticket_keys.yml"
      "$inv/group_vars/origins/vault.yml" "$inv/group_vars/all/fleet_ca.yml" "$inv/fleet-ca.pem")
for f in "${outs[@]}"; do
    [ ! -e "$f" ] || { echo "make-vault.sh: $f exists; not overwriting secrets" >&2; exit 1; }
done
umask 077
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
san() { # comma-separated names -> subjectAltName value
    local n out=() IFS=,
    for n in $1; do
        if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then out+=("IP:$n"); else out+=("DNS:$n"); fi
    done
    (IFS=,; echo "${out[*]}")
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=edge fleet CA" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
leaf() { # NAME NAMES
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=${2%%,*}" -keyout "$tmp/$1.key" -out "$tmp/$1.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
        "$(san "$2")" > "$tmp/$1.ext"
    openssl x509 -req -in "$tmp/$1.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
        -days 825 -extfile "$tmp/$1.ext" -out "$tmp/$1.pem" 2>/dev/null
}
leaf edge "$edge_names"
leaf origin "$origin_names"
indent() { sed 's/^/  /' "$1"; }
secrets() { # NAME -> YAML of the host secrets
    echo "edge_host_tls_cert_pem: |"; indent "$tmp/$1.pem"
    echo "edge_host_tls_key_pem: |"; indent "$tmp/$1.key"
    echo "edge_host_admin_token: $(openssl rand -hex 24)"
}
mkdir -p "$inv/group_vars/edges" "$inv/group_vars/origins" "$inv/group_vars/all"
{ echo "---"; secrets edge; } | ansible-vault encrypt --output "$inv/group_vars/edges/vault.yml" - >/dev/null
{ echo "---"; secrets origin; } | ansible-vault encrypt --output "$inv/group_vars/origins/vault.yml" - >/dev/null
printf -- '---\nedge_ticket_keys:\n  - %s\n' "$(openssl rand -hex 48)" |
    ansible-vault encrypt --output "$inv/group_vars/edges/ticket_keys.yml" - >/dev/null
{ echo "---"; echo "# The fleet CA (public): signed the origin's certificate (make-vault.sh)."
  echo "edge_origin_ca_pem: |"; indent "$tmp/ca.pem"; } > "$inv/group_vars/all/fleet_ca.yml"
cp "$tmp/ca.pem" "$inv/fleet-ca.pem"
chmod 644 "$inv/group_vars/all/fleet_ca.yml" "$inv/fleet-ca.pem"
echo "make-vault.sh: wrote ${outs[*]}"

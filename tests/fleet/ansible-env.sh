#!/bin/bash
# tests/fleet/ansible-env.sh - the pinned Ansible tooling (ansible/requirements.txt:
# ansible-core, ansible-lint and what they resolved to), in a virtualenv from PyPI,
# cached under $EDGE_VM_HOME/ansible-venv-HASH (HASH over the requirements). Prints
# the virtualenv's bin directory: PATH="$(tests/fleet/ansible-env.sh):$PATH".
set -euo pipefail
REQ=$(cd "$(dirname "$0")/../../ansible" && pwd)/requirements.txt
VM_HOME=${EDGE_VM_HOME:-$HOME/.cache/edge-vm}
VENV=$VM_HOME/ansible-venv-$(md5sum < "$REQ" | cut -c1-8)
mkdir -p "$VM_HOME"
exec 9>"$VM_HOME/.ansible-venv.lock"; flock 9
if [ ! -x "$VENV/bin/ansible-playbook" ] || [ ! -x "$VENV/bin/ansible-lint" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2 || {
        apt-get install -y -q --no-install-recommends python3-venv >&2 && python3 -m venv "$VENV" >&2; }
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >&2 || { rm -rf "$VENV"; exit 1; }
    for old in "$VM_HOME"/ansible-venv-*; do [ "$old" = "$VENV" ] || rm -rf "$old"; done
fi
echo "$VENV/bin"

#!/bin/bash
# tests/fleet/lint.sh - the static checks of ansible/: ansible-lint with the production
# profile (ansible/.ansible-lint), ansible-playbook --syntax-check of both playbooks
# against the example inventory, and the example vault opening with its password.
set -uo pipefail
cd "$(dirname "$0")/../../ansible"
ABIN=$(../tests/fleet/ansible-env.sh) || { echo "cannot install the pinned Ansible"; exit 1; }
export PATH="$ABIN:$PATH" ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
export ANSIBLE_VAULT_PASSWORD_FILE=$PWD/inventory/example/vault-password.txt
rc=0
ansible-lint --nocolor || rc=1
ansible-playbook --syntax-check site.yml rotate-ticket-keys.yml || rc=1
for f in inventory/example/group_vars/edges/vault.yml inventory/example/group_vars/edges/ticket_keys.yml \
         inventory/example/group_vars/origins/vault.yml; do
    ansible-vault view "$f" | grep -q '^edge_' || { echo "example vault $f does not open"; rc=1; }
done
# the example inventory's variables satisfy the roles' argument specs
ansible-playbook site.yml --tags never -e edge_host_binary_src=/bin/true > /tmp/edge-lint-preflight.log 2>&1 ||
    { cat /tmp/edge-lint-preflight.log; rc=1; }
[ $rc = 0 ] && echo "ansible: lint, syntax check and example vault OK"
exit $rc

#!/bin/bash
# tests/fleet/guest.sh - boot, reach and stop the fleet test's Debian guests: the
# image of build-rootfs.sh (systemd, sshd, python3) on Debian's kernel (the kTLS-capable
# one of tests/vm/run-in-vm.sh), under QEMU (TCG here; KVM where it is real).
#
#   guest.sh start NAME SSHPORT [-p HOSTPORT:GUESTPORT]... [-g GUESTPORT:HOSTPORT]...
#                         boot NAME (writes discarded: -snapshot), wait for sshd on
#                         127.0.0.1:SSHPORT. -p forwards a host loopback port to the
#                         guest; -g makes 10.0.2.100:GUESTPORT inside the guest reach
#                         127.0.0.1:HOSTPORT on the host (how edges reach the origin:
#                         each guest's network is its own restricted slirp)
#   guest.sh ssh NAME [CMD...]    run CMD in NAME as root
#   guest.sh stop NAME            power off (killed after 30 s)
#
# State: $EDGE_VM_HOME/fleet/run/NAME/ (qemu.pid, console.log, sshport).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VM_HOME=${EDGE_VM_HOME:-$HOME/.cache/edge-vm}
FLEET=$VM_HOME/fleet
die() { echo "guest.sh: $*" >&2; exit 1; }
ssh_cmd() { # NAME -> the ssh argv prefix
    local port; port=$(cat "$FLEET/run/$1/sshport" 2>/dev/null) || die "guest $1 is not running"
    SSH=(ssh -q -i "$FLEET/ssh/id_ed25519" -p "$port" -o StrictHostKeyChecking=no
         -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 -o BatchMode=yes root@127.0.0.1)
}

case ${1:-} in
start)
    [ $# -ge 3 ] || die "usage: guest.sh start NAME SSHPORT [-p H:G]... [-g G:H]..."
    name=$2 port=$3; shift 3
    img=$("$HERE/build-rootfs.sh")
    kdir=$("$HERE/../vm/run-in-vm.sh" --print-kdir)
    kernel=$kdir/vmlinuz; [ -s "$kdir/vmlinux" ] && kernel=$kdir/vmlinux
    fwd=",hostfwd=tcp:127.0.0.1:$port-:22"
    while [ $# -gt 0 ]; do
        case $1 in
        -p) fwd+=",hostfwd=tcp:127.0.0.1:${2%%:*}-:${2##*:}" ;;
        -g) fwd+=",guestfwd=tcp:10.0.2.100:${2%%:*}-cmd:socat STDIO TCP:127.0.0.1:${2##*:}" ;;
        *) die "unknown option $1" ;;
        esac
        shift 2
    done
    accel=tcg cpu=max
    if [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ] &&
       { [ -e /sys/module/kvm_intel ] || [ -e /sys/module/kvm_amd ]; }; then accel=kvm cpu=host; fi
    st=$FLEET/run/$name
    mkdir -p "$st"; echo "$port" > "$st/sshport"; t0=$SECONDS
    # shellcheck disable=SC2054  # commas are qemu option syntax
    qemu-system-x86_64 -nodefaults -no-user-config -display none \
        -machine "q35,accel=$accel" -cpu "${GUEST_CPU_MODEL:-$cpu}" -smp "${GUEST_CPUS:-1}" -m "${GUEST_MEM:-768M}" \
        -kernel "$kernel" -initrd "$kdir/initramfs.img" \
        -append "console=ttyS0 edgevm.root=/dev/vda quiet panic=-1 tsc=reliable systemd.hostname=$name ${EDGE_VM_APPEND:-}" \
        -no-reboot -serial "file:$st/console.log" \
        -drive "file=$img,if=virtio,format=raw,snapshot=on" \
        -device virtio-rng-pci \
        -netdev "user,id=n0,restrict=on$fwd" -device virtio-net-pci,netdev=n0,romfile= \
        -daemonize -pidfile "$st/qemu.pid"
    ssh_cmd "$name"
    for _ in $(seq 1 600); do
        if "${SSH[@]}" true 2>/dev/null; then
            echo "guest $name: ssh on 127.0.0.1:$port after $((SECONDS - t0)) s (accel=$accel)"
            exit 0
        fi
        kill -0 "$(cat "$st/qemu.pid")" 2>/dev/null || { cat "$st/console.log" >&2; die "qemu of $name died"; }
        sleep 0.5
    done
    die "guest $name: no ssh after 300 s; see $st/console.log" ;;
ssh)
    [ $# -ge 2 ] || die "usage: guest.sh ssh NAME [CMD...]"
    ssh_cmd "$2"; shift 2
    exec "${SSH[@]}" "$@" ;;
stop)
    [ $# -ge 2 ] || die "usage: guest.sh stop NAME"
    st=$FLEET/run/$2
    pid=$(cat "$st/qemu.pid" 2>/dev/null) || exit 0
    ssh_cmd "$2"
    "${SSH[@]}" 'systemctl poweroff' 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill "$pid" 2>/dev/null || true
    rm -f "$st/qemu.pid" ;;
*)
    sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 2 ;;
esac

#!/bin/bash
# tests/fleet/build-rootfs.sh - the Debian host image the fleet guests boot: a
# debootstrap'd bookworm (minbase + systemd, udev, openssh-server, python3 and what
# Ansible's modules call) with the guest kernel's modules, as an ext4 image made with
# `mke2fs -d` (no loop device or mount). Guests boot it with -snapshot, so it is never
# written. Needs root, debootstrap, e2fsprogs and tests/vm/run-in-vm.sh's kernel cache.
#
#   tests/fleet/build-rootfs.sh        prints the image's path (builds it if missing)
#
# Ansible's tasks are sped up with a bytecode cache for zip imports (guest/
# edge_zipimport_cache.py, loaded by a .pth file), filled here from the pinned
# ansible-core's modules and module_utils: about 1 s less per task under TCG.
#
# Cached as $EDGE_VM_HOME/fleet/rootfs-HASH.img, HASH over this script, the cache
# module, ansible/requirements.txt and the kernel cache directory, so editing any of
# them builds a new image (the old one is removed).
# Also makes $EDGE_VM_HOME/fleet/ssh/id_ed25519, the test-only key root logs in with.
# First build: about 60-90 s (debootstrap from Debian's mirror); later: instant.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VM_HOME=${EDGE_VM_HOME:-$HOME/.cache/edge-vm}
FLEET=$VM_HOME/fleet
KDIR=$("$HERE/../vm/run-in-vm.sh" --print-kdir)
KVER=$(cat "$KDIR/kver")
ZIPCACHE=$HERE/guest/edge_zipimport_cache.py
HASH=$( { cat "$0" "$ZIPCACHE" "$HERE/../../ansible/requirements.txt"; echo "$KDIR"; } | md5sum | cut -c1-8)
IMG=$FLEET/rootfs-$HASH.img
log() { echo "build-rootfs: $*" >&2; }

mkdir -p "$FLEET"
exec 9>"$FLEET/.build.lock"; flock 9
[ -s "$IMG" ] && { echo "$IMG"; exit 0; }

MIRROR=${MIRROR:-$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
[ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
command -v debootstrap >/dev/null && command -v mke2fs >/dev/null ||
    apt-get install -y -q --no-install-recommends --no-remove debootstrap e2fsprogs >&2
T0=$SECONDS
R=$FLEET/rootfs.build
rm -rf "$R"
log "debootstrap bookworm from $MIRROR"
debootstrap --variant=minbase \
    --include=systemd-sysv,udev,openssh-server,python3,kmod,iproute2,openssl,procps,sudo,ca-certificates,curl \
    bookworm "$R" "$MIRROR" >&2
log "debootstrap: $((SECONDS - T0)) s"

echo fleet-host > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 fleet-host\n::1 localhost\n' > "$R/etc/hosts"
echo '/dev/vda / ext4 defaults,noatime 0 1' > "$R/etc/fstab"
# QEMU user-mode networking; udev names the NIC enp0sN
mkdir -p "$R/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n' \
    > "$R/etc/systemd/network/10-qemu.network"
chroot "$R" systemctl enable systemd-networkd >&2
chroot "$R" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service systemd-timesyncd.service getty@tty1.service >&2
# sshd: no reverse DNS (the guest resolves nothing)
echo 'UseDNS no' > "$R/etc/ssh/sshd_config.d/fleet-test.conf"
# test-only credentials: key login for root
mkdir -p "$FLEET/ssh"
[ -f "$FLEET/ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C edge-fleet-test -f "$FLEET/ssh/id_ed25519"
install -d -m 700 "$R/root/.ssh"
install -m 600 "$FLEET/ssh/id_ed25519.pub" "$R/root/.ssh/authorized_keys"
# the kernel's modules: the initramfs's set (virtio, ext4, tls, crypto)
tmp=$(mktemp -d)
( cd "$tmp" && cpio -idm --quiet "lib/modules/*" < "$KDIR/initramfs.img" )
mkdir -p "$R/lib/modules"; cp -a "$tmp/lib/modules/$KVER" "$R/lib/modules/"
rm -rf "$tmp"
chroot "$R" depmod "$KVER"
# the zip-import bytecode cache, filled from the pinned ansible-core's sources
SITE=$(chroot "$R" python3 -c 'import site; print(site.getsitepackages()[0])')
install -D -m 644 "$ZIPCACHE" "$R$SITE/edge_zipimport_cache.py"
echo 'import edge_zipimport_cache' > "$R$SITE/edge-zipimport-cache.pth"
ANSIBLE_PKG=$("$("$HERE/ansible-env.sh")/python" -c 'import ansible, os; print(os.path.dirname(ansible.__file__))')
mkdir -p "$R/tmp/ansible-src"
cp -r "$ANSIBLE_PKG/module_utils" "$ANSIBLE_PKG/modules" "$R/tmp/ansible-src/"
chroot "$R" python3 - <<'PY' >&2
import pathlib, zipimport
n = bad = 0
for p in sorted(pathlib.Path("/tmp/ansible-src").rglob("*.py")):
    try:
        zipimport._compile_source(str(p), p.read_bytes())
        n += 1
    except SyntaxError:
        bad += 1  # a source for another Python; it compiles (and fails) as before
print("build-rootfs: zip-import cache holds %d ansible-core sources (%d not for this Python)" % (n, bad))
PY
rm -rf "$R/tmp/ansible-src"
chroot "$R" apt-get clean
rm -rf "$R"/var/lib/apt/lists/*_Packages "$R"/var/log/*.log
rm -f "$FLEET"/rootfs-*.img
mke2fs -q -t ext4 -L root -d "$R" -E root_owner=0:0 "$IMG.tmp" 2G >&2
mv "$IMG.tmp" "$IMG"
rm -rf "$R"
log "image $IMG ($(du -sh "$IMG" | cut -f1) allocated of 2G) in $((SECONDS - T0)) s"
echo "$IMG"

# shellcheck shell=bash
# tests/vm/disk-lib.sh - block-device helpers for guest tests with disks
# (run-in-vm.sh -u -d FILE[:OPTS] ...): an ext4 filesystem on /dev/vdX, page
# cache dropping, random-read IOPS, and device-mapper devices that can be
# switched to fail every I/O with EIO while mounted.  Source it from bash; it
# sets no shell options itself.  Used by tests/vm/disk-selftest.sh.
#
# Host side:  vm_disk_host_pkgs  (mkfs.ext4, filefrag, dmsetup, blockdev, python3 under
#             the host's /usr, which the guest borrows with -u)
# Guest side: vm_mkfs_mount, vm_drop_caches, vm_rand_read, vm_file_sectors,
#             vm_dm_linear, vm_dm_fail, vm_dm_restore, vm_dm_remove
#
# There is no udev in the guest: devtmpfs makes /dev/vdX, /dev/dm-N and
# /dev/mapper/control, and dmsetup runs with DM_DISABLE_UDEV=1 so that
# libdevmapper itself creates /dev/mapper/NAME (without it, `dmsetup create`
# succeeds but no /dev/mapper/NAME appears, and it waits for no udev cookie).

# ------------------------------------------------------------------ host side

# vm_disk_host_pkgs - apt-get install what the disk helpers run from the host's
# /usr (absolute paths: the guest sees only /usr, and /usr/sbin is not in every
# host user's PATH).  Needs vm_ensure_host_pkgs (tests/vm/lib.sh).
vm_disk_host_pkgs() {
    vm_ensure_host_pkgs /usr/sbin/mkfs.ext4:e2fsprogs /usr/sbin/filefrag:e2fsprogs \
        /usr/sbin/dmsetup:dmsetup \
        /usr/sbin/blockdev:util-linux /usr/bin/python3:python3-minimal
}

# ------------------------------------------------------------------ guest side

# vm_mkfs_mount DEV DIR [MOUNT_OPTS] - a fresh ext4 on DEV, mounted on DIR.
# Inode tables and journal are zeroed by mkfs (lazy_*_init=0) and nothing is
# discarded, so no ext4lazyinit thread writes in the background later and eats
# a throttled disk's IOPS during a measurement (mkfs + mount: 1.4-2.4 s on a
# 512 MiB disk at 150 IOPS).
vm_mkfs_mount() {
    local dev=$1 dir=$2 opts=${3:-}
    mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$dev" || return
    mkdir -p "$dir"
    mount -t ext4 ${opts:+-o "$opts"} "$dev" "$dir"
}

# vm_drop_caches - write back dirty data, then drop clean page cache, dentries
# and inodes: the next read of any file goes to the disk
vm_drop_caches() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
}

# vm_rand_read DEV COUNT [BS] [SEED] - COUNT reads of BS bytes (default 4096)
# at distinct random BS-aligned offsets of DEV, with O_DIRECT, one at a time
# from one process; prints "COUNT reads of BS B in S s: N IOPS" and sets
# VM_IOPS (integer).  Fails (after the line) if a read fails.
# python3 from the host's /usr; without it, a busybox dd loop (one process per
# read, ~18 ms each under TCG: it reads ~55 IOPS on any disk, throttled or not).
vm_rand_read() {
    local dev=$1 n=$2 bs=${3:-4096} seed=${4:-1} out rc=0
    if [ -x /usr/bin/python3 ]; then
        out=$(/usr/bin/python3 - "$dev" "$n" "$bs" "$seed" <<'PY'
import mmap, os, random, sys, time
dev, n, bs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
size = os.lseek(fd, 0, os.SEEK_END)
offs = [b * bs for b in random.Random(seed).sample(range(size // bs), n)]
buf = mmap.mmap(-1, bs)                  # page-aligned, as O_DIRECT wants
t0 = time.monotonic()
for off in offs:
    if os.preadv(fd, [buf], off) != bs:
        sys.exit(f"short read at {off}")
dt = time.monotonic() - t0
print(f"{n} reads of {bs} B in {dt:.2f} s: {n / dt:.0f} IOPS")
PY
        ) || rc=$?
    else
        local blocks i t0 t1
        blocks=$(( $(cat "/sys/class/block/${dev##*/}/size") * 512 / bs ))
        t0=$(cut -d' ' -f1 /proc/uptime)
        for i in $(seq 1 "$n"); do
            # distinct enough: a 32-bit LCG over the blocks
            seed=$(( (seed * 1103515245 + 12345) % 2147483648 ))
            busybox dd if="$dev" of=/dev/null bs="$bs" count=1 skip=$((seed % blocks)) \
                iflag=direct 2>/dev/null || { rc=1; break; }
        done
        t1=$(cut -d' ' -f1 /proc/uptime)
        out=$(awk -v n="$n" -v bs="$bs" -v t="$t0" -v u="$t1" \
            'BEGIN { d = u - t; if (d <= 0) d = 0.01; printf "%d reads of %d B in %.2f s: %.0f IOPS (dd loop)\n", n, bs, d, n / d }')
    fi
    echo "$out"
    VM_IOPS=$(echo "$out" | awk 'match($0, /[0-9]+ IOPS/) { print substr($0, RSTART, RLENGTH) + 0 }')
    VM_IOPS=${VM_IOPS:-0}
    return $rc
}

# vm_file_sectors FILE - where FILE lies on its block device: one line
# "START COUNT" (512-byte sectors) per extent, from filefrag (e2fsprogs).
# With vm_dm_linear (sector n of the map is sector n of the disk), feed it to
# vm_dm_fail NAME START COUNT to make exactly that file unreadable.
vm_file_sectors() {
    sync "$1" || return
    filefrag -v -b512 "$1" | awk '/^ *[0-9]+:/ { gsub(/[.:]+/, " "); print $4, $6 }'
}

# dmsetup without udev (see the top of this file)
vm_dmsetup() { DM_DISABLE_UDEV=1 dmsetup "$@"; }

# vm_dm_linear NAME DEV - /dev/mapper/NAME, a linear map of all of DEV; its
# table is kept in /run/vm-dm/NAME.table for vm_dm_restore
vm_dm_linear() {
    local name=$1 dev=$2 sectors
    sectors=$(blockdev --getsz "$dev") || return
    mkdir -p /run/vm-dm
    echo "0 $sectors linear $dev 0" > "/run/vm-dm/$name.table"
    vm_dmsetup create "$name" < "/run/vm-dm/$name.table" || return
    [ -b "/dev/mapper/$name" ] || { echo "vm_dm_linear: no /dev/mapper/$name" >&2; return 1; }
}

# _vm_dm_swap NAME - replace NAME's live table with the one on stdin.  Suspend
# with --noflush --nolockfs first, as a disk that dies would: the filesystem is
# not frozen/synced, and I/O in flight is requeued to the new table.
_vm_dm_swap() {
    local name=$1
    vm_dmsetup suspend --noflush --nolockfs "$name" || return
    if ! vm_dmsetup load "$name"; then
        vm_dmsetup resume "$name"; return 1
    fi
    vm_dmsetup resume "$name"
}

# vm_dm_fail NAME [START COUNT] - from now on every I/O to /dev/mapper/NAME
# fails with EIO (dm "error" target), the device and any filesystem on it stay
# in place; with START COUNT (512-byte sectors) only that range fails and the
# rest still maps to the disk.  Clean cached pages are still served from the
# page cache: vm_drop_caches first to make reads reach the device.
vm_dm_fail() {
    local name=$1 start=${2:-} count=${3:-} sectors dev table
    read -r _ sectors _ dev _ < "/run/vm-dm/$name.table" ||
        { echo "vm_dm_fail: $name was not made by vm_dm_linear" >&2; return 1; }
    if [ -z "$start" ]; then
        table="0 $sectors error"
    else
        table="$start $count error"
        if [ "$start" -gt 0 ]; then table="0 $start linear $dev 0"$'\n'"$table"; fi
        if [ $((start + count)) -lt "$sectors" ]; then
            table+=$'\n'"$((start + count)) $((sectors - start - count)) linear $dev $((start + count))"
        fi
    fi
    _vm_dm_swap "$name" <<< "$table"
}

# vm_dm_restore NAME - back to the linear table of vm_dm_linear (the disk works
# again; a filesystem that saw errors may have aborted its journal meanwhile)
vm_dm_restore() {
    _vm_dm_swap "$1" < "/run/vm-dm/$1.table"
}

# vm_dm_remove NAME - remove /dev/mapper/NAME (unmount it first)
vm_dm_remove() {
    vm_dmsetup remove --retry "$1" && rm -f "/run/vm-dm/$1.table"
}

#!/bin/bash
# tests/vm/disk-selftest.sh - proves the guest disk pieces that the HDD-cache
# acceptance tests build on (run-in-vm.sh -d, tests/vm/disk-lib.sh).
#
# On the host (repo root):
#     tests/vm/disk-selftest.sh
# The host side apt-get installs what the guest borrows from /usr (mkfs.ext4,
# filefrag, dmsetup, blockdev, python3), makes two sparse 512 MiB images in
# ${EDGE_VM_HOME:-$HOME/.cache/edge-vm}/disks.XXXXXX (removed afterwards) and
# boots the guest with
#     -d slow.img:throttling.iops-total=150,throttling.bps-total=157286400  -> /dev/vda (an HDD)
#     -d plain.img                                                          -> /dev/vdb
# In the guest:
#  a. the throttled disk, page cache dropped: 200 random 4 KiB O_DIRECT reads run
#     at about 150 IOPS (QEMU lets a burst of 15 through: ~160 measured), the same
#     on the plain disk at least 3 times faster; 128 MiB sequential (1 MiB O_DIRECT
#     reads) at about 150 MiB/s; a 32 MiB file on ext4 on the slow disk read cold
#     through the page cache, 128 KiB and 1 MiB readahead (informational);
#  b. ext4 on /dev/mapper/edgefault (dm linear over /dev/vdb): a file reads back
#     intact; after vm_drop_caches + vm_dm_fail reads, an O_DIRECT read of the device and a write
#     + fsync fail with EIO (each under a 20 s timeout: no hang), umount returns;
#     after vm_dm_restore the file mounts and reads intact; failing only one
#     file's sectors (vm_file_sectors) breaks that file and not its neighbour;
#  c. prints the guest time (script and since boot).
# Prints PASS/FAIL per check and "N passed, M failed"; exit 0 only if all passed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
. "$HERE/disk-lib.sh"

if [ "${EDGE_VM:-}" != 1 ]; then
    REPO=$(cd "$HERE/../.." && pwd)
    vm_disk_host_pkgs
    VM_HOME=${EDGE_VM_HOME:-$HOME/.cache/edge-vm}
    mkdir -p "$VM_HOME"
    # not /tmp: cache=none wants O_DIRECT, which tmpfs may refuse
    D=$(mktemp -d "$VM_HOME/disks.XXXXXX")
    trap 'rm -rf "$D"' EXIT
    truncate -s 512M "$D/slow.img" "$D/plain.img"
    rc=0
    "$HERE/run-in-vm.sh" -u -m 1G -t "${SELFTEST_TIMEOUT:-300}" \
        -d "$D/slow.img:throttling.iops-total=150,throttling.bps-total=157286400" \
        -d "$D/plain.img" "$REPO" tests/vm/disk-selftest.sh || rc=$?
    exit $rc
fi

# ------------------------------------------------------------------ guest
# no errexit: every step ends in a PASS/FAIL line, and a broken step fails the
# checks after it rather than ending the run without a summary
set +e
T0=$EPOCHREALTIME
pass=0; fail=0
check() { # NAME STATUS DETAIL
    if [ "$2" = 0 ]; then echo "PASS $1"; pass=$((pass + 1)); else echo "FAIL $1${3:+: $3}"; fail=$((fail + 1)); fi
}
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
# seq_read DEV MIB - MiB/s of MIB 1 MiB O_DIRECT reads from the start of DEV
seq_read() {
    dd if="$1" of=/dev/null bs=1M count="$2" iflag=direct 2>&1 |
        awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) s = $(i - 1)
                        printf "%.0f\n", $1 / 1048576 / s }'
}
# ok_in SECONDS CMD... - CMD's status; 124 (and a FAIL) if it takes longer
ok_in() { timeout -k 5 "$@"; }
echo "guest: kernel $(uname -r), $(nproc) vCPUs; disks: $(cd /sys/block && echo vd*)" \
     "($(cat /sys/block/vda/serial) $(cat /sys/block/vda/size) sectors," \
     "$(cat /sys/block/vdb/serial) $(cat /sys/block/vdb/size))"

# ---- set-up: modules, nodes
mods=$(awk '{ print $1 }' /proc/modules | grep -xE 'virtio_blk|dm_mod|ext4|jbd2|mbcache|crc16' | sort | tr '\n' ' ')
[ "$mods" = "crc16 dm_mod ext4 jbd2 mbcache virtio_blk " ] && [ -b /dev/vda ] && [ -b /dev/vdb ] && [ -c /dev/mapper/control ]
check "modules loaded ($mods), /dev/vda /dev/vdb /dev/mapper/control present" $?

# ---- a. the throttled disk
vm_drop_caches
t=$EPOCHREALTIME
vm_rand_read /dev/vda 200; slow=$VM_IOPS
vm_rand_read /dev/vdb 200; fast=$VM_IOPS
echo "guest: random reads took $(since "$t") s, python start-ups included"
[ "$slow" -ge 75 ] && [ "$slow" -le 250 ]
check "throttled /dev/vda: $slow IOPS at 4 KiB random (QEMU limit 150)" $?
[ "$fast" -ge $((3 * slow)) ]
check "plain /dev/vdb: $fast IOPS, at least 3 x the throttled disk" $?
# (the plain disk's number is only printed: 0.15-0.3 s of reading, it swings
# with the host's load, 160-850 MiB/s seen)
sslow=$(seq_read /dev/vda 128); sfast=$(seq_read /dev/vdb 128)
[ "${sslow:-0}" -ge 75 ] && [ "${sslow:-999}" -le 200 ]
check "sequential 1 MiB O_DIRECT reads: throttled $sslow MiB/s (limit 150; plain disk: $sfast MiB/s)" $?

t=$EPOCHREALTIME
vm_mkfs_mount /dev/vda /mnt/slow
check "vm_mkfs_mount on the throttled disk ($(since "$t") s)" $?
# Every request counts as one I/O against iops-total, whatever its size, so a
# cold buffered read goes at (readahead size x 150) per second: 128 KiB (the
# default) gives ~19 MiB/s, unlike a real HDD's sequential rate.
head -c $((32 << 20)) /dev/urandom > /mnt/slow/obj
ra0=$(blockdev --getra /dev/vda)
for ra in "$ra0" 2048; do
    blockdev --setra "$ra" /dev/vda
    vm_drop_caches
    t=$EPOCHREALTIME
    cat /mnt/slow/obj > /dev/null
    dt=$(since "$t")
    echo "guest: 32 MiB file on ext4 on the throttled disk, cold, buffered, readahead" \
         "$((ra / 2)) KiB: $dt s ($(awk -v t="$dt" 'BEGIN { printf "%.0f", 32 / (t > 0 ? t : 0.1) }') MiB/s)"
done
blockdev --setra "$ra0" /dev/vda
umount /mnt/slow

# ---- b. a disk that starts failing (device-mapper error target)
vm_dm_linear edgefault /dev/vdb
check "vm_dm_linear: /dev/mapper/edgefault without udev ($(vm_dmsetup table edgefault))" \
    $([ -b /dev/mapper/edgefault ]; echo $?)
vm_mkfs_mount /dev/mapper/edgefault /mnt/fault &&
    head -c $((4 << 20)) /dev/urandom > /mnt/fault/seg &&
    want=$(sha256sum < /mnt/fault/seg) && vm_drop_caches &&
    [ "$(sha256sum < /mnt/fault/seg)" = "$want" ]
check "ext4 on /dev/mapper/edgefault: 4 MiB file reads back intact" $?

vm_drop_caches          # else the file's pages are still cached: no I/O, no error
t=$EPOCHREALTIME
vm_dm_fail edgefault
echo "guest: vm_dm_fail took $(since "$t") s; table now: $(vm_dmsetup table edgefault)"
rc=0; err=$(ok_in 20 cat /mnt/fault/seg 2>&1 >/dev/null) || rc=$?
[ $rc != 0 ] && [ $rc != 124 ] && [[ $err == *"Input/output error"* ]]
check "after vm_dm_fail, reading the file fails with EIO ($err)" $? "status $rc"
rc=0; err=$(ok_in 20 dd if=/dev/mapper/edgefault of=/dev/null bs=4096 count=1 skip=1000 iflag=direct 2>&1) || rc=$?
[ $rc != 0 ] && [ $rc != 124 ] && [[ $err == *"Input/output error"* ]]
check "O_DIRECT read of the device fails with EIO ($(echo "$err" | head -1))" $? "status $rc"
rc=0; err=$(ok_in 20 dd if=/dev/zero of=/mnt/fault/new bs=64k count=4 conv=fsync 2>&1) || rc=$?
[ $rc != 0 ] && [ $rc != 124 ] && [[ $err == *"Input/output error"* ]]
check "a write + fsync fails with EIO ($(echo "$err" | head -1))" $? "status $rc"
rc=0; ok_in 20 umount /mnt/fault || rc=$?
check "umount of the failed filesystem returns (status $rc), no hang" $([ $rc != 124 ]; echo $?)
echo "guest: kernel said: $(dmesg | grep -E 'I/O error|Aborting journal' | head -3 | sed 's/^\[ *[0-9.]*\] //' | tr '\n' ';')"

vm_dm_restore edgefault
echo "guest: restored: $(vm_dmsetup table edgefault)"
mount -t ext4 /dev/mapper/edgefault /mnt/fault && [ "$(sha256sum < /mnt/fault/seg)" = "$want" ]
check "after vm_dm_restore the filesystem mounts and the file is intact" $?

# only one file's sectors fail: it breaks, its neighbour does not
head -c $((1 << 20)) /dev/urandom > /mnt/fault/other
read -r start count < <(vm_file_sectors /mnt/fault/seg)
vm_drop_caches
vm_dm_fail edgefault "$start" "$count"
rc=0; err=$(ok_in 20 cat /mnt/fault/seg 2>&1 >/dev/null) || rc=$?
rc2=0; ok_in 20 cat /mnt/fault/other > /dev/null || rc2=$?
[ $rc != 0 ] && [ $rc != 124 ] && [[ $err == *"Input/output error"* ]] && [ $rc2 = 0 ]
check "sectors $start+$count failed: that file EIO, the other file reads" $? "seg: status $rc $err; other: status $rc2"
ok_in 20 umount /mnt/fault || true
vm_dm_restore edgefault
vm_dm_remove edgefault
check "vm_dm_remove: /dev/mapper/edgefault gone" $([ ! -e /dev/mapper/edgefault ]; echo $?)
bad=$(dmesg | grep -E 'hung_task|blocked for more than|BUG:|Oops' | head -3)
check "no hung task, BUG or Oops in the kernel log" $([ -z "$bad" ]; echo $?) "$bad"

# ---- c. time
echo "guest: self-test took $(since "$T0") s; $(cut -d' ' -f1 /proc/uptime) s since guest boot"
echo "disk-selftest: $pass passed, $fail failed"
[ "$fail" = 0 ]

#!/bin/bash
# tests/vm/run-in-vm.sh - run a command inside a throw-away QEMU guest (KVM if
# usable, else TCG) that boots a stock Debian bookworm kernel (which ships
# tls.ko as a module) with kTLS loaded.  Guest userland: busybox-static in an
# initramfs (+ the host's /usr and /etc with -u).
#
# Why: the build/CI machines' kernel has no kTLS (CONFIG_TLS unset) and their
# /dev/kvm (PVM) cannot boot a stock kernel, so kTLS code paths of edge (and of
# the nginx peer used in benchmarks) can only be exercised in this guest.
# See tests/vm/README.md.
#
# usage: run-in-vm.sh [options] HOSTDIR COMMAND [ARGS...]
#
#   HOSTDIR is shared into the guest (9p) at /hostdir, which is also the cwd.
#   COMMAND [ARGS...] is joined with spaces and run by the guest's shell -c
#   (same convention as ssh): busybox ash, or the host's bash with -u (ash
#   would prefer its own applets, e.g. head, over /usr/bin).  Its
#   stdout+stderr stream to our stdout; we exit with its exit status.
#
# options:
#   -w            mount HOSTDIR read-write (default: read-only)
#   -u            also share host /usr and /etc read-only, so dynamically
#                 linked host programs (openssl, nginx, curl, wrk, strace,
#                 bash, our glibc binaries) run in the guest; PATH then
#                 prefers /usr/bin over busybox, and /bin/bash exists so
#                 "#!/bin/bash" scripts work
#   -p H:G        forward 127.0.0.1:H on the host to guest TCP port G
#                 (repeatable).  Guest net is slirp with restrict=on: the
#                 guest cannot reach the host or anything outside.
#   -t SECONDS    overall timeout (default 300); exit 124 on timeout
#   -m MEM        guest memory (default 1G; /tmp is a tmpfs limited to 75%
#                 of it, i.e. ~750 MiB free at the default)
#   -c CPUS       guest vCPUs (default 2)
#   -d FILE[:OPTS]
#                 attach FILE (a raw image the caller made, e.g. truncate -s
#                 512M) as a virtio-blk disk; repeatable: /dev/vda, /dev/vdb,
#                 ... in order.  OPTS (comma-separated) are appended to its
#                 QEMU -drive, e.g. throttling.iops-total=150,throttling.bps-total=157286400
#                 (an HDD); they may replace the defaults cache=none (O_DIRECT
#                 on the host; cache=writeback if FILE's filesystem refuses
#                 O_DIRECT) and aio=threads.  The guest loads virtio_blk,
#                 dm_mod and ext4 and waits for the nodes (serial edge-diskN
#                 in /sys/block/vdX/serial); tools (mkfs.ext4, dmsetup) come
#                 from the host with -u: see tests/vm/disk-lib.sh
#   -k PKG        Debian kernel package (default: what linux-image-amd64
#                 currently depends on, e.g. linux-image-6.1.0-56-amd64)
#   -v            verbose: show kernel boot messages
#   --tcg / --kvm force the accelerator.  Default: KVM only if /dev/kvm is
#                 usable and backed by hardware virt (kvm_intel/kvm_amd);
#                 if it is PVM (kvm_pvm, as on Firecracker sandboxes), which
#                 cannot run a stock kernel, use TCG (software emulation).
#   --rebuild     rebuild the cached kernel/initramfs
#   --print-kdir  print the kernel/initramfs cache directory (building it if
#                 needed) and exit; its /init boots a root disk when the kernel
#                 command line has edgevm.root=/dev/vdX (tests/fleet/guest.sh)
#
# Exit status: the command's status; 124 timeout; 125 VM/setup failure.
#
# Guest environment: cwd /hostdir, EDGE_VM=1, HOME=/root, /tmp and /run are
# tmpfs, loopback up; eth0 (slirp, restricted) only matters for -p.
#
# Cache: ${EDGE_VM_HOME:-$HOME/.cache/edge-vm}/cache (~120 MB).  The first run
# apt-get downloads the kernel + busybox-static (~72 MB, kept in cache/debs)
# and builds the initramfs + vmlinux; later runs only boot.  Timings: tests/vm/README.md.
# Missing host tools (qemu-system-x86, cpio, kmod, xz-utils) are apt-get
# installed when running as root (apt-get update first if the lists are empty).
# Extra kernel parameters: EDGE_VM_APPEND (e.g. cryptomgr.notests=1 saves
# ~0.5-1 s of crypto self-tests under TCG).
set -euo pipefail

VM_HOME=${EDGE_VM_HOME:-$HOME/.cache/edge-vm}
CACHE=$VM_HOME/cache
RW=off HOSTUSR=0 TIMEOUT=300 MEM=1G CPUS=2 KPKG='' VERBOSE=0 ACCEL=auto REBUILD=0 PRINT_KDIR=0
FWDS=() DISKS=()

die() { echo "run-in-vm: $*" >&2; exit 125; }
log() { echo "run-in-vm: $*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }
apt_updated=0
apt_update_once() {   # a fresh machine has empty package lists
    [ $apt_updated = 1 ] && return 0
    is_root || return 1
    log "apt-get update"
    apt-get update -q >&2 && apt_updated=1
}

while [ $# -gt 0 ]; do
    case $1 in
    -w) RW=on; shift ;;
    -u) HOSTUSR=1; shift ;;
    -p) [[ ${2:-} =~ ^[0-9]+:[0-9]+$ ]] || die "-p wants HOSTPORT:GUESTPORT"
        FWDS+=("$2"); shift 2 ;;
    -t) [[ ${2:-} =~ ^[0-9]+$ ]] || die "-t wants SECONDS"; TIMEOUT=$2; shift 2 ;;
    -m) [ -n "${2:-}" ] || die "-m wants MEM"; MEM=$2; shift 2 ;;
    -c) [[ ${2:-} =~ ^[0-9]+$ ]] || die "-c wants CPUS"; CPUS=$2; shift 2 ;;
    -d) [ -n "${2:-}" ] || die "-d wants FILE[:OPTS]"; DISKS+=("$2"); shift 2 ;;
    -k) [ -n "${2:-}" ] || die "-k wants PKG"; KPKG=$2; shift 2 ;;
    -v) VERBOSE=1; shift ;;
    --tcg) ACCEL=tcg; shift ;;
    --kvm) ACCEL=kvm; shift ;;
    --rebuild) REBUILD=1; shift ;;
    --print-kdir) PRINT_KDIR=1; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
    esac
done
if [ $PRINT_KDIR = 0 ]; then
    [ $# -ge 2 ] || die "usage: $0 [options] HOSTDIR COMMAND [ARGS...]  (-h for help)"
    HOSTDIR=$(realpath -e -- "$1") || die "no such directory: $1"
    [ -d "$HOSTDIR" ] || die "not a directory: $HOSTDIR"
    shift
    CMD="$*"
fi

# -d FILE[:OPTS]: the part after the last ':' is OPTS if it holds a '='
DRIVES=() n=0
for d in "${DISKS[@]}"; do
    dfile=$d dopts=
    if [[ $d == *:* ]] && [[ ${d##*:} == *=* ]]; then dfile=${d%:*} dopts=${d##*:}; fi
    [ -f "$dfile" ] || [ -b "$dfile" ] || die "-d: not a file or block device: $dfile"
    dfile=$(realpath -- "$dfile")
    ddef=format=raw
    if [[ ,$dopts, != *,cache=* ]]; then
        # cache=none opens FILE with O_DIRECT, which e.g. tmpfs (< 6.6) refuses
        if dd if="$dfile" of=/dev/null bs=4096 count=1 iflag=direct status=none 2>/dev/null; then
            ddef+=,cache=none
        else
            ddef+=,cache=writeback; log "-d $dfile: no O_DIRECT there, using cache=writeback"
        fi
    fi
    [[ ,$dopts, == *,aio=* ]] || ddef+=,aio=threads
    # shellcheck disable=SC2054  # commas are qemu option syntax
    DRIVES+=(-drive "file=${dfile//,/,,},if=none,id=disk$n,$ddef${dopts:+,$dopts}"
             -device "virtio-blk-pci,drive=disk$n,serial=edge-disk$n")
    n=$((n + 1))
done

# ---------------------------------------------------------------- tools
need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v depmod >/dev/null || need_pkgs+=(kmod)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    is_root || die "missing tools, install: ${need_pkgs[*]}"
    log "installing ${need_pkgs[*]} (apt-get, --no-remove)"
    apt-cache show "${need_pkgs[@]}" >/dev/null 2>&1 || apt_update_once || true
    # --no-remove: never let apt remove anything (on some images bookworm's
    # qemu-system-x86 would otherwise replace a backported qemu-utils).
    # Fallback: some images ship qemu-utils from bookworm-backports, which bookworm's
    # qemu-system-x86 replaces; the harness does not need qemu-utils, so allow that.
    apt-get install -y -q --no-install-recommends --no-remove "${need_pkgs[@]}" >&2 ||
    apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2 ||
        die "apt-get install ${need_pkgs[*]} failed"
fi

# ---------------------------------------------------------------- kernel + initramfs cache
if [ -z "$KPKG" ]; then
    if [ -e "$CACHE/default-kpkg" ] && [ $REBUILD = 0 ]; then
        KPKG=$(cat "$CACHE/default-kpkg")
    else
        resolve_kpkg() {
            apt-cache depends linux-image-amd64 2>/dev/null |
                awk '/Depends: linux-image-[0-9]/{print $2; exit}'
        }
        KPKG=$(resolve_kpkg)
        [ -n "$KPKG" ] || { apt_update_once && KPKG=$(resolve_kpkg); } || true
        [ -n "$KPKG" ] || die "cannot resolve linux-image-amd64 (run apt-get update)"
        mkdir -p "$CACHE"; echo "$KPKG" > "$CACHE/default-kpkg"
    fi
fi

build_cache() {
    local t0=$SECONDS tmp
    log "building $KDIR (kernel $KPKG + busybox-static)"
    rm -rf "$KDIR"; tmp=$(mktemp -d "$CACHE/build.XXXXXX")
    # The .debs stay in $CACHE/debs, so a rebuild (after editing /init) is
    # offline.  Stale or empty package lists (fresh machine): update, retry.
    # (Sandbox::User=root: the _apt user cannot write into $HOME/.cache)
    local debs=$CACHE/debs kdeb bdeb
    mkdir -p "$debs"
    kdeb=$(ls "$debs/${KPKG}"_*.deb 2>/dev/null | head -n1) || true
    bdeb=$(ls "$debs"/busybox-static_*.deb 2>/dev/null | head -n1) || true
    if [ -z "$kdeb" ] || [ -z "$bdeb" ] || [ $REBUILD = 1 ]; then
        rm -f "$debs"/*.deb
        local dl=(apt-get download -q -o APT::Sandbox::User=root "$KPKG" busybox-static)
        ( cd "$debs" && "${dl[@]}" >&2 ) ||
        { apt_update_once && ( cd "$debs" && "${dl[@]}" >&2 ); } ||
            die "apt-get download $KPKG busybox-static failed (an old kernel ABI? try --rebuild)"
        kdeb=$(ls "$debs/${KPKG}"_*.deb | head -n1)
        bdeb=$(ls "$debs"/busybox-static_*.deb | head -n1)
    fi
    dpkg-deb -x "$kdeb" "$tmp/k"
    dpkg-deb -x "$bdeb" "$tmp/bb"
    local kver; kver=$(ls "$tmp/k/lib/modules")
    local src=$tmp/k/lib/modules/$kver st=$tmp/root
    depmod -b "$tmp/k" "$kver"

    # Modules: virtio + 9p + net + tls, and every crypto module so that the
    # kernel can autoload any kTLS cipher backend (gcm, ccm, chacha20poly1305,
    # aesni/ghash/chacha/poly1305 x86 implementations, ...).
    # Disks (-d): virtio_blk, ext4 (pulls jbd2, mbcache, crc16; crc32c is a
    # crypto module, below), device-mapper with the linear/error targets
    # (built into dm_mod) and flakey/delay for later fault tests.
    local want=(virtio_pci virtio_net virtio_console virtio-rng 9pnet_virtio 9p tls
                virtio_blk ext4 dm_mod dm-flakey dm-delay)
    local f
    for f in "$src"/kernel/crypto/*.ko "$src"/kernel/arch/x86/crypto/*.ko; do
        want+=("$(basename "$f" .ko)")
    done
    mkdir -p "$st"/{bin,dev,proc,sys,tmp,run,root,hostdir,ctl,usr,etc,mnt,lib/modules/$kver} \
             "$st"/var/{tmp,log,lib,cache}
    local m mods=()
    for m in "${want[@]}"; do
        mapfile -t -O ${#mods[@]} mods < <(modprobe -d "$tmp/k" -S "$kver" \
            --show-depends "$m" 2>/dev/null | awk '$1=="insmod"{print $2}')
    done
    printf '%s\n' "${mods[@]}" | sort -u | while read -r m; do
        install -D -m 644 "$m" "$st/lib/modules/$kver/${m#"$src"/}"
    done
    cp "$src"/modules.order "$src"/modules.builtin "$src"/modules.builtin.modinfo \
       "$st/lib/modules/$kver/"
    depmod -b "$st" "$kver"

    cp "$tmp/bb/bin/busybox" "$st/bin/busybox"
    local a
    for a in $("$st/bin/busybox" --list); do
        [ "$a" = busybox ] || ln -sf busybox "$st/bin/$a"
    done
    ln -s bin "$st/sbin"
    echo 'root:x:0:0:root:/root:/bin/sh' > "$st/etc/passwd"
    echo 'root:x:0:' > "$st/etc/group"
    printf '127.0.0.1 localhost\n::1 localhost\n127.0.1.1 edge-vm\n' > "$st/etc/hosts"
    cat > "$st/init" <<'INIT'
#!/bin/busybox sh
# guest PID 1: set up, run /ctl/cmd, report status via /ctl/rc, power off
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev 2>/dev/null
$B mkdir -p /dev/pts /dev/shm
$B mount -t devpts devpts /dev/pts
# bash process substitution and /dev/stdout need these (devtmpfs lacks them)
$B ln -sf /proc/self/fd /dev/fd
$B ln -sf /proc/self/fd/0 /dev/stdin
$B ln -sf /proc/self/fd/1 /dev/stdout
$B ln -sf /proc/self/fd/2 /dev/stderr
$B mount -t tmpfs -o size=75% tmpfs /tmp
$B mount -t tmpfs tmpfs /run
$B mount -t tmpfs tmpfs /dev/shm
fail() { echo "[vm] $*" >/dev/console; $B poweroff -f; }
# Root-disk mode (tests/fleet/guest.sh): edgevm.root=/dev/vda on the kernel command
# line mounts that ext4 disk (a debootstrap'd Debian) and hands over to its systemd.
root=$($B sed -n 's/.*edgevm\.root=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$root" ]; then
    for m in virtio_pci virtio_blk ext4; do $B modprobe -q $m; done
    i=0; while [ ! -b "$root" ] && [ $i -lt 200 ]; do $B usleep 50000; i=$((i+1)); done
    $B mkdir -p /newroot
    $B mount -t ext4 -o rw,noatime "$root" /newroot || fail "cannot mount $root"
    $B umount /dev/pts /dev/shm /tmp /run
    $B mount --move /dev /newroot/dev
    $B umount /sys /proc
    exec $B switch_root /newroot /sbin/init
fi
RUNSH=/bin/sh   # busybox ash; /bin/bash with -u
for m in virtio_pci virtio_console virtio_net 9pnet_virtio 9p virtio-rng tls \
         aesni_intel ghash_clmulni_intel gcm ccm chacha20poly1305 \
         chacha_x86_64 poly1305_x86_64; do
    $B modprobe -q $m || echo "[vm] warning: modprobe $m failed" >/dev/console
done
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none ctl /ctl ||
    fail "cannot mount ctl share"
. /ctl/env
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,$WORK_RO work /hostdir ||
    fail "cannot mount work share"
if [ "${NDISKS:-0}" -gt 0 ]; then
    # -d disks: devtmpfs makes /dev/vdX, /dev/dm-N and /dev/mapper/control;
    # there is no udev (disk-lib.sh runs dmsetup with DM_DISABLE_UDEV=1)
    for m in virtio_blk dm_mod ext4; do
        $B modprobe -q $m || echo "[vm] warning: modprobe $m failed" >/dev/console
    done
    i=0; while [ "$($B ls /dev | $B grep -c '^vd[a-z]$')" -lt "$NDISKS" ] && [ $i -lt 250 ]; do
        $B usleep 20000; i=$((i+1))
    done
    [ $i -lt 250 ] || echo "[vm] warning: not all $NDISKS disks appeared" >/dev/console
fi
if [ "$HOSTUSR" = 1 ]; then
    $B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro hostusr /usr ||
        fail "cannot mount host /usr"
    $B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro hostetc /etc ||
        fail "cannot mount host /etc"
    $B ln -s /usr/lib64 /lib64
    $B ln -s /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu
    # merged-/usr hosts: "#!/bin/bash" scripts and /bin/bash callers
    [ -x /usr/bin/bash ] && $B ln -sf /usr/bin/bash /bin/bash && RUNSH=/bin/bash
    # The host's /etc/hosts does not know our hostname and its nameserver is
    # unreachable: every gethostbyname(hostname) (libcurl -> libldap -> sasl
    # does one at startup!) would hang 2 x 5 s.  Overlay both files.
    { $B cat /etc/hosts; echo "127.0.1.1 edge-vm"; } > /run/hosts 2>/dev/null
    $B mount --bind /run/hosts /etc/hosts
    echo "nameserver 127.0.0.1" > /run/resolv.conf      # fails fast
    [ -f /etc/resolv.conf ] && [ ! -L /etc/resolv.conf ] &&
        $B mount --bind /run/resolv.conf /etc/resolv.conf
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/bin
else
    PATH=/bin
fi
$B hostname edge-vm
$B ip link set lo up
if $B ip link set eth0 up 2>/dev/null; then
    $B ip addr add 10.0.2.15/24 dev eth0
    $B ip route add default via 10.0.2.2
fi
export PATH HOME=/root TERM=dumb EDGE_VM=1
cd /hostdir
# command output goes to hvc0 (virtio console -> host stdout); the kernel
# console stays on ttyS0 (-> log file), so the two never mix
OUT=/dev/hvc0
i=0; while [ ! -c $OUT ] && [ $i -lt 100 ]; do $B usleep 20000; i=$((i+1)); done
[ -c $OUT ] || OUT=/dev/console
# keep the tty open on fd 3 (hvc resets termios on last close) and switch
# off output post-processing: no \n -> \r\n, and no per-line writes
exec 3<>$OUT
$B stty -opost <&3 2>/dev/null
# The command writes into a FIFO, not the tty, so its stdio is block-buffered
# (a write() to hvc0 costs ~0.2 ms under TCG).  cat copies FIFO -> hvc0 and
# ignores SIGTERM, so leftover background processes can be killed below
# without losing output.
$B mkfifo /run/out
( trap '' TERM; exec $B cat /run/out >&3 ) &
CAT=$!
$RUNSH -c "$($B cat /ctl/cmd)" </dev/null >/run/out 2>&1 3>&-
echo $? > /ctl/rc
$B kill -TERM -1 2>/dev/null       # everything except init and cat
i=0; while [ -d /proc/$CAT ] && [ $i -lt 100 ]; do $B usleep 20000; i=$((i+1)); done
[ -d /proc/$CAT ] && $B kill -KILL -1 2>/dev/null
$B sync
$B umount /hostdir 2>/dev/null
$B poweroff -f
INIT
    chmod 755 "$st/init"
    # uncompressed cpio: decompressing in the guest costs more than reading 10 MB
    ( cd "$st" && find . -print0 | LC_ALL=C sort -z |
      cpio --null -o -H newc --quiet --owner=0:0 ) > "$tmp/initramfs.img"
    mkdir -p "$KDIR"
    cp "$tmp"/k/boot/vmlinuz-* "$KDIR/vmlinuz"
    # Also keep the uncompressed ELF vmlinux: QEMU boots it via the PVH entry
    # point, which skips the in-guest xz decompression (~3 s under TCG).
    local off
    off=$(LC_ALL=C grep -abo -m1 -P '\xfd7zXZ\x00' "$KDIR/vmlinuz" | head -n1 | cut -d: -f1)
    if [ -n "$off" ] && { tail -c +$((off + 1)) "$KDIR/vmlinuz" || true; } |
           xz -dc --single-stream > "$KDIR/vmlinux.tmp" 2>/dev/null &&
       [ "$(head -c 4 "$KDIR/vmlinux.tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
        mv "$KDIR/vmlinux.tmp" "$KDIR/vmlinux"
    else
        rm -f "$KDIR/vmlinux.tmp"; log "could not extract vmlinux, will boot bzImage"
    fi
    mv "$tmp/initramfs.img" "$KDIR/initramfs.img"
    echo "$kver" > "$KDIR/kver"
    dpkg-deb -f "$kdeb" Package Version > "$KDIR/versions"
    dpkg-deb -f "$bdeb" Package Version >> "$KDIR/versions"
    rm -rf "$tmp"
    local old; for old in "$CACHE/$KPKG"-*; do   # stale builds of this kernel
        [ "$old" = "$KDIR" ] || [ ! -d "$old" ] || rm -rf "$old"
    done
    log "cache ready in $((SECONDS - t0))s: $(du -sh "$KDIR" | cut -f1) in $KDIR"
}
# The cache directory name carries a hash of build_cache itself (which holds
# the guest's /init), so editing this script rebuilds the initramfs by itself.
KDIR=$CACHE/$KPKG-$(declare -f build_cache | md5sum | cut -c1-8)
mkdir -p "$CACHE"
if [ $REBUILD = 1 ] || [ ! -s "$KDIR/initramfs.img" ] || [ ! -s "$KDIR/vmlinuz" ]; then
    ( flock 9; [ $REBUILD = 0 ] && [ -s "$KDIR/initramfs.img" ] || build_cache ) 9>"$CACHE/.lock"
fi
# --print-kdir: the kernel + initramfs directory (built if needed), for guests that
# boot a root disk (tests/fleet/guest.sh)
[ $PRINT_KDIR = 0 ] || { echo "$KDIR"; exit 0; }

# ---------------------------------------------------------------- run
if [ $ACCEL = auto ]; then
    if [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ] &&
       { [ -e /sys/module/kvm_intel ] || [ -e /sys/module/kvm_amd ]; }; then
        ACCEL=kvm
    else
        ACCEL=tcg
    fi
fi
CTL=$(mktemp -d "$VM_HOME/run.XXXXXX")
QPID=
cleanup() { [ -n "$QPID" ] && kill "$QPID" 2>/dev/null; rm -rf "$CTL"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
printf '%s\n' "$CMD" > "$CTL/cmd"
{ [ $RW = on ] && echo "WORK_RO=rw" || echo "WORK_RO=ro"; echo "HOSTUSR=$HOSTUSR"; echo "NDISKS=${#DISKS[@]}"; } > "$CTL/env"

hostfwd=
for f in "${FWDS[@]}"; do hostfwd+=",hostfwd=tcp:127.0.0.1:${f%%:*}-:${f##*:}"; done
if [ $VERBOSE = 1 ]; then KLOG="loglevel=7"; else KLOG="quiet loglevel=3"; fi
if [ $ACCEL = kvm ]; then CPU=host; else CPU=max; fi
KERNEL=$KDIR/vmlinuz; [ -s "$KDIR/vmlinux" ] && KERNEL=$KDIR/vmlinux
RO_OPT=; [ $RW = on ] || RO_OPT=,readonly=on

# shellcheck disable=SC2054  # commas are qemu option syntax
qemu=(qemu-system-x86_64 -nodefaults -no-user-config -display none
    -machine "q35,accel=$ACCEL" -cpu "$CPU" -smp "$CPUS" -m "$MEM"
    -kernel "$KERNEL" -initrd "$KDIR/initramfs.img"
    -append "console=ttyS0 $KLOG panic=-1 oops=panic 8250.nr_uarts=1 tsc=reliable ${EDGE_VM_APPEND:-}"
    -no-reboot -serial "file:$CTL/console.log"
    -device virtio-serial-pci -chardev stdio,id=out -device virtconsole,chardev=out
    -device virtio-rng-pci
    -netdev "user,id=n0,restrict=on$hostfwd" -device virtio-net-pci,netdev=n0,romfile=
    -fsdev "local,id=ctl,path=${CTL//,/,,},security_model=none"
    -device virtio-9p-pci,fsdev=ctl,mount_tag=ctl
    -fsdev "local,id=work,path=${HOSTDIR//,/,,},security_model=none$RO_OPT"
    -device virtio-9p-pci,fsdev=work,mount_tag=work)
qemu+=("${DRIVES[@]}")
if [ $HOSTUSR = 1 ]; then
    # shellcheck disable=SC2054
    qemu+=(-fsdev local,id=hostusr,path=/usr,security_model=none,readonly=on
           -device virtio-9p-pci,fsdev=hostusr,mount_tag=hostusr
           -fsdev local,id=hostetc,path=/etc,security_model=none,readonly=on
           -device virtio-9p-pci,fsdev=hostetc,mount_tag=hostetc)
fi

T0=$SECONDS
set +e
: > "$CTL/console.log"
timeout -k 5 "$TIMEOUT" "${qemu[@]}" </dev/null &
QPID=$!
[ $VERBOSE = 1 ] && tail -n +1 -f --pid=$QPID "$CTL/console.log" >&2 &
wait $QPID; qrc=$?
QPID=
set -e
if [ $qrc = 124 ] || [ $qrc = 137 ]; then
    log "timeout after ${TIMEOUT}s; last console lines:"; tail -n 10 "$CTL/console.log" >&2
    exit 124
fi
[ $qrc = 0 ] || log "qemu exited with status $qrc"
if [ -s "$CTL/rc" ]; then
    rc=$(cat "$CTL/rc")
    log "exit code: $rc (accel=$ACCEL, vm wall time $((SECONDS - T0))s)"
    exit "$rc"
fi
[ -s "$CTL/console.log" ] || die "qemu did not start (its message is above)"
log "VM ended without a result (kernel panic or boot failure?); last console lines:"
tail -n 25 "$CTL/console.log" >&2
exit 125

#!/usr/bin/env bash
# Runs a command as root on a cgroup-v2 test node: Debian 12's kernel
# (6.1) under qemu (TCG; KVM does not boot guests on every CI machine),
# systemd as PID 1 on the unified hierarchy, and this machine's root shared
# read-only as the node's root (writes go to a tmpfs and vanish). Paths are
# the same inside, so `target/debug/deps/cri_lifecycle-*` built here runs
# there unchanged. /tmp, /var/lib/capcri and /var/lib/kubelet are on a fresh
# ext4 scratch disk (virtio-blk): 6.1 cannot idmap a tmpfs (6.3 can), and
# overlayfs cannot take its upper dir from the overlay root.
#
#   hack/vm/run.sh [--timeout SECS] [--mem MIB] [--cpus N] [--disk SIZE]
#                  [--out DIR] [--env NAME]... -- COMMAND [ARG]...
#
# The command runs in the current directory with the CAPCRI_* variables of
# this environment (and any --env NAME). Its output is printed as it runs;
# the exit code is the command's (124 when the node's own timeout ended it),
# 125 when no exit code came back: the node hung, crashed or failed to boot
# (then the node's watchdog report or the console log is printed).
# Whatever the command writes to $CAPCRI_VM_OUT (a directory in the node) is
# copied to --out DIR, the node's kernel log included, also after a timeout.
# Nothing is left running or mounted afterwards.
#
# Cache (kernel, initramfs): $CAPCRI_VM_CACHE, default /var/tmp/capcri-vm;
# the scratch disk (sparse, --disk SIZE, default 32G) lives there for the
# run only.
set -euo pipefail

timeout_s=1800
mem=4096
cpus=$(nproc)
disk=32G
out=
env_names=()
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) timeout_s=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --disk) disk=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --env) env_names+=("$2"); shift 2 ;;
        --) shift; break ;;
        *) echo "hack/vm/run.sh: unknown option $1 (usage: see the head of this file)" >&2; exit 2 ;;
    esac
done
if [ $# -eq 0 ]; then
    echo "hack/vm/run.sh: no command (usage: hack/vm/run.sh [options] -- COMMAND [ARG]...)" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "hack/vm/run.sh: needs root (9p passthrough shares the root as it is)" >&2
    exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
cache=${CAPCRI_VM_CACHE:-/var/tmp/capcri-vm}
mkdir -p "$cache"

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v depmod >/dev/null || need+=(kmod)
command -v cpio >/dev/null || need+=(cpio)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || need+=(busybox-static)
command -v file >/dev/null || need+=(file)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# --- the kernel: Debian's, unpacked (never installed) ---------------------
kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$kernel_pkg" ]; then
    apt-get update -q
    kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
kver=${kernel_pkg#linux-image-}
kdir=$cache/kernel-$kver
if [ ! -f "$kdir/ready" ]; then
    rm -rf "$kdir" && mkdir -p "$kdir"
    (cd "$kdir" && apt-get download "$kernel_pkg" >/dev/null)
    dpkg-deb -x "$kdir"/"$kernel_pkg"_*.deb "$kdir/root"
    rm -f "$kdir"/*.deb
    depmod -b "$kdir/root" "$kver"
    touch "$kdir/ready"
fi
moddir=$kdir/root/lib/modules/$kver

# --- the initramfs: static busybox, hack/vm/init, the root's modules -------
initrd=$kdir/initrd-$(sha256sum "$here/init" "$0" | sha256sum | cut -c1-12).cpio.gz
if [ ! -f "$initrd" ]; then
    staging=$(mktemp -d)
    mkdir -p "$staging"/{bin,proc,sys,dev,modules}
    cp /bin/busybox "$staging/bin/busybox"
    install -m 0755 "$here/init" "$staging/init"
    # Dependencies first (modules.dep lists them after the module; the
    # deepest are last), each once.
    : > "$staging/modules.order"
    add_module() {
        local line deps d
        line=$(grep -E "(^|/)$1\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -1)
        [ -n "$line" ] || { echo "hack/vm/run.sh: module $1 not in $kver" >&2; exit 1; }
        deps=${line#*:}
        for d in $(echo "$deps" | tr ' ' '\n' | tac); do
            add_path "$d"
        done
        add_path "${line%%:*}"
    }
    add_path() {
        local base
        base=$(basename "$1")
        grep -qx "$base" "$staging/modules.order" && return
        cp "$moddir/$1" "$staging/modules/$base"
        echo "$base" >> "$staging/modules.order"
    }
    # crc32c_generic: ext4's metadata checksums ask the crypto API for
    # crc32c, which the initramfs has no modprobe to load on demand.
    for m in virtio_pci 9pnet_virtio 9p overlay virtio_blk crc32c_generic ext4; do add_module "$m"; done
    (cd "$staging" && find . | cpio -o -H newc --quiet | gzip -1) > "$initrd.tmp"
    mv "$initrd.tmp" "$initrd"
    rm -rf "$staging"
fi

# --- the exchange directory: the command in, output and exit code out ------
io=$(mktemp -d "$cache/io.XXXXXX")
mkdir "$io/out"
out=${out:-$cache/last-out}
# A fresh scratch disk each run: sparse, so only what the node writes takes
# space, and nothing of one run's state leaks into the next. Inode tables
# are not zeroed (lazy_itable_init here, noinit_itable in the node): the
# disk is new and thrown away, and zeroing them would cost the node minutes
# of TCG time.
scratch=$(mktemp "$cache/scratch.XXXXXX.img")
qpid=
tailpid=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    [ -n "$qpid" ] && kill "$qpid" 2>/dev/null
    [ -n "$tailpid" ] && kill "$tailpid" 2>/dev/null
    rm -rf "$io" "$scratch"
}
trap cleanup EXIT
truncate -s "$disk" "$scratch"
mkfs.ext4 -q -F -L capcri-scratch -E lazy_itable_init=1,lazy_journal_init=1 "$scratch"

# The node's own timeout ends the command early enough to copy its logs
# back and power off cleanly. Should the node hang instead (its 9p root or
# exchange directory not answering), its watchdog (init) prints what every
# thread waits on to the console and powers it off. The host's timeout
# (below) is the backstop: it prints what qemu's own threads wait on.
if [ "$timeout_s" -gt 300 ]; then
    guest_timeout=$((timeout_s - 150)) watchdog_s=$((timeout_s - 120))
else
    guest_timeout=$((timeout_s / 2)) watchdog_s=$((timeout_s * 6 / 10))
fi
# shellcheck disable=SC2016  # the $rc lines expand in the node
{
    echo '#!/bin/bash'
    echo "cd $(printf %q "$PWD")"
    { env | grep -E '^CAPCRI_[A-Z0-9_]*=' || true; } | while IFS= read -r kv; do
        echo "export $(printf %q "$kv")"
    done
    for n in "${env_names[@]}"; do
        [ -n "${!n+x}" ] && echo "export $n=$(printf %q "${!n}")"
    done
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/root/.cargo/bin'
    echo 'export TMPDIR=/tmp CAPCRI_VM_OUT=/run/capcri-vm/out'
    printf 'timeout --kill-after=20 %s ' "$guest_timeout"
    printf '%q ' "$@"
    echo '> /run/capcri-vm/output.log 2>&1'
    echo 'rc=$?'
    echo '[ "$rc" = 124 ] && echo "hack/vm/run.sh: the command timed out in the node after '"$guest_timeout"'s" >> /run/capcri-vm/output.log'
    echo 'dmesg > /run/capcri-vm/out/dmesg.log 2>&1'
    echo 'journalctl -b --no-pager -p warning > /run/capcri-vm/out/journal-warnings.log 2>&1'
    echo 'echo $rc > /run/capcri-vm/rc.tmp && mv /run/capcri-vm/rc.tmp /run/capcri-vm/rc'
    echo 'sync'
    # The service's SuccessAction powers the node off (processes killed,
    # file systems unmounted); run.sh stops qemu if that hangs.
} > "$io/guest.sh"

# --- boot -------------------------------------------------------------------
share() { echo "-virtfs local,path=$1,mount_tag=$2,security_model=passthrough,multidevs=remap$3"; }
: > "$io/output.log"
# shellcheck disable=SC2046
qemu-system-x86_64 \
    -accel tcg -cpu max -smp "$cpus" -m "$mem" \
    -nographic -no-reboot -nic none \
    -kernel "$kdir/root/boot/vmlinuz-$kver" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4 systemd.unit=capcri-vm.target systemd.unified_cgroup_hierarchy=1 systemd.show_status=0 capcri_vm.watchdog=$watchdog_s" \
    $(share / hostroot ",readonly=on") \
    $(share "$moddir" modules ",readonly=on") \
    $(share "$io" io "") \
    -drive "file=$scratch,format=raw,if=virtio,cache=unsafe" \
    < /dev/null > "$io/console.log" 2>&1 &
qpid=$!
# The command's output as it is written (the exchange directory is not
# cached in the node), so a long run shows progress.
tail -n +1 -F "$io/output.log" 2>/dev/null &
tailpid=$!
# What each of qemu's threads waits on in this machine's kernel: a node
# that stopped answering may be an emulator stuck in a host call.
qemu_threads() {
    local t
    for t in /proc/"$1"/task/[0-9]*; do
        printf '  %s %s %s wchan=%s syscall=%s\n' "${t##*/}" "$(cat "$t/comm" 2>/dev/null)" \
            "$(sed 's/.*) //' "$t/stat" 2>/dev/null | cut -d' ' -f1)" "$(cat "$t/wchan" 2>/dev/null)" \
            "$(cut -d' ' -f1 "$t/syscall" 2>/dev/null)"
    done
}
# Once the command's exit code is back, the node has 60 s to power off.
timed_out=
start=$SECONDS
while kill -0 "$qpid" 2>/dev/null; do
    if [ -f "$io/rc" ]; then
        for _ in $(seq 60); do kill -0 "$qpid" 2>/dev/null || break; sleep 1; done
        kill "$qpid" 2>/dev/null || true
        break
    fi
    if [ $((SECONDS - start)) -ge "$timeout_s" ]; then
        timed_out=1
        echo "hack/vm/run.sh: the node did not end within ${timeout_s}s; qemu's threads (tid, name, state, wait channel, system call):" >&2
        qemu_threads "$qpid" >&2
        kill "$qpid" 2>/dev/null
        for _ in $(seq 10); do kill -0 "$qpid" 2>/dev/null || break; sleep 1; done
        kill -9 "$qpid" 2>/dev/null || true
        break
    fi
    sleep 1
done
set +e
wait "$qpid"
qemu_rc=$?
set -e
qpid=
sleep 1
kill "$tailpid" 2>/dev/null || true
wait "$tailpid" 2>/dev/null || true
tailpid=
cp "$io/console.log" "$cache/last-console.log"
rm -rf "$out" && mkdir -p "$(dirname "$out")" && cp -a "$io/out" "$out"

if [ ! -f "$io/rc" ]; then
    # No exit code came back: the node hung, crashed or did not boot.
    if grep -q '^capcri-vm watchdog:' "$cache/last-console.log"; then
        echo "hack/vm/run.sh: the node hung: its watchdog's report (whole console in $cache/last-console.log):" >&2
        sed -n '/^capcri-vm watchdog:/,$p' "$cache/last-console.log" | tr -d '\r' >&2
    elif [ -n "$timed_out" ]; then
        echo "hack/vm/run.sh: timed out after ${timeout_s}s; the console's last lines:" >&2
        tail -n 40 "$cache/last-console.log" >&2
    else
        echo "hack/vm/run.sh: the node did not run the command (qemu exit $qemu_rc); console:" >&2
        tail -n 80 "$cache/last-console.log" >&2
    fi
    exit 125
fi
exit "$(cat "$io/rc")"

#!/usr/bin/env bash
# Runs a command as root on a cgroup-v2 test node: Debian 12's kernel
# (6.1) under qemu (TCG; KVM does not boot guests on every CI machine),
# systemd as PID 1 on the unified hierarchy, and this machine's root shared
# read-only as the node's root (writes go to a tmpfs and vanish). Paths are
# the same inside, so `target/debug/deps/cri_lifecycle-*` built here runs
# there unchanged.
#
#   hack/vm/run.sh [--timeout SECS] [--mem MIB] [--cpus N] [--env NAME]... -- COMMAND [ARG]...
#
# The command runs in the current directory with the CAPCRI_* variables of
# this environment (and any --env NAME). Its output is printed; the exit
# code is the command's, 124 on timeout, 125 when the node failed to boot
# (then the console log is printed). Nothing is left running afterwards.
#
# Cache (kernel, initramfs): $CAPCRI_VM_CACHE, default /var/tmp/capcri-vm.
set -euo pipefail

timeout_s=1800
mem=4096
cpus=$(nproc)
env_names=()
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) timeout_s=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
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
    for m in virtio_pci 9pnet_virtio 9p overlay; do add_module "$m"; done
    (cd "$staging" && find . | cpio -o -H newc --quiet | gzip -1) > "$initrd.tmp"
    mv "$initrd.tmp" "$initrd"
    rm -rf "$staging"
fi

# --- the exchange directory: the command in, output and exit code out ------
io=$(mktemp -d "$cache/io.XXXXXX")
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { rm -rf "$io"; }
trap cleanup EXIT
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
    printf '%q ' "$@"
    echo '> /run/capcri-vm/output.log 2>&1'
    echo 'echo $? > /run/capcri-vm/rc.tmp && mv /run/capcri-vm/rc.tmp /run/capcri-vm/rc'
    echo 'sync'
    # Power off at once: the tmpfs root holds nothing worth an orderly
    # shutdown, and the results are already on the host.
    echo 'echo o > /proc/sysrq-trigger'
} > "$io/guest.sh"

# --- boot -------------------------------------------------------------------
share() { echo "-virtfs local,path=$1,mount_tag=$2,security_model=passthrough,multidevs=remap$3"; }
set +e
# shellcheck disable=SC2046
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
    -accel tcg -cpu max -smp "$cpus" -m "$mem" \
    -nographic -no-reboot -nic none \
    -kernel "$kdir/root/boot/vmlinuz-$kver" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4 systemd.unit=capcri-vm.target systemd.unified_cgroup_hierarchy=1 systemd.show_status=0" \
    $(share / hostroot ",readonly=on") \
    $(share "$moddir" modules ",readonly=on") \
    $(share "$io" io "") \
    < /dev/null > "$io/console.log" 2>&1
qemu_rc=$?
set -e
cp "$io/console.log" "$cache/last-console.log"

[ -f "$io/output.log" ] && cat "$io/output.log"
if [ "$qemu_rc" = 124 ]; then
    echo "hack/vm/run.sh: timed out after ${timeout_s}s; the console's last lines:" >&2
    tail -n 40 "$io/console.log" >&2
    exit 124
fi
if [ ! -f "$io/rc" ]; then
    echo "hack/vm/run.sh: the node did not run the command (qemu exit $qemu_rc); console:" >&2
    tail -n 80 "$io/console.log" >&2
    exit 125
fi
exit "$(cat "$io/rc")"

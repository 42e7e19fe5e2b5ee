#!/usr/bin/env bash
# Keeps capcri runnable on the nodes people have (issue 13, items 6 and 7).
#
#   hack/portability-check.sh [BINARY]      default: target/release/capcri
#
# 1. The binary (ELF, readelf from binutils): it must start on glibc 2.34,
#    the oldest glibc of the distributions README "Supported nodes" lists
#    (RHEL 9: 2.34, Ubuntu 22.04: 2.35, Amazon Linux 2023: 2.34, Flatcar:
#    2.3x). So no DT_RELR (packed relocations need glibc 2.36's loader, which
#    refuses the binary through the GLIBC_ABI_DT_RELR version), no symbol
#    version newer than GLIBC_2.34 (Debian 12 links against 2.36: a libc
#    function added in 2.35 or 2.36 would be bound to its new version), the
#    standard dynamic loader of the architecture, and only libraries every
#    such node has.
# 2. The sources: no raw syscall numbers (they differ between x86_64 and
#    arm64; libc::SYS_* is right on both) and no code for x86_64 without an
#    aarch64 counterpart. dmz/main.rs, the libc-free trampoline, keeps its
#    own numbers per architecture: `cargo check --target
#    aarch64-unknown-linux-gnu` builds it for arm64 (hack/test.sh).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$repo/target/release/capcri}
max_glibc=${CAPCRI_MAX_GLIBC:-2.34}
failures=0
fail() {
    echo "portability-check: $*" >&2
    failures=$((failures + 1))
}

# --- the binary -----------------------------------------------------------
if [ ! -f "$bin" ]; then
    echo "portability-check: $bin does not exist (cargo build --release --locked first)" >&2
    exit 2
fi
header=$(readelf --file-header --wide "$bin")
case "$header" in
*"Advanced Micro Devices X86-64"*) interp_ok=/lib64/ld-linux-x86-64.so.2 ;;
*AArch64*) interp_ok=/lib/ld-linux-aarch64.so.1 ;;
*) fail "$bin: not an x86_64 or aarch64 ELF file" ; exit 1 ;;
esac
dynamic=$(readelf --dynamic --wide "$bin")
versions=$(readelf --version-info --wide "$bin")
interp=$(readelf --program-headers --wide "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')

if [ "$interp" != "$interp_ok" ]; then
    fail "$bin: program interpreter is '${interp:-none}', expected $interp_ok"
fi
if grep -qE '\((RELR|RELRSZ|RELRENT)\)' <<<"$dynamic"; then
    fail "$bin: has DT_RELR packed relocations, which glibc < 2.36 cannot load; drop -z pack-relative-relocs"
fi
if grep -q 'GLIBC_ABI_DT_RELR' <<<"$versions"; then
    fail "$bin: needs GLIBC_ABI_DT_RELR (glibc 2.36+)"
fi
newest=$(grep -oE 'Name: GLIBC_[0-9]+\.[0-9]+(\.[0-9]+)?' <<<"$versions" | sed 's/Name: GLIBC_//' | sort -V | tail -1)
if [ -z "$newest" ]; then
    fail "$bin: needs no GLIBC version at all: not linked against glibc as expected"
elif [ "$(printf '%s\n%s\n' "$newest" "$max_glibc" | sort -V | tail -1)" != "$max_glibc" ]; then
    fail "$bin: needs GLIBC_$newest, newer than $max_glibc; the symbols bound to it:"
    # objdump names each undefined symbol with its version.
    objdump -T "$bin" | awk -v max="$max_glibc" '
        match($0, /GLIBC_[0-9.]+/) {
            v = substr($0, RSTART + 6, RLENGTH - 6)
            split(v, a, "."); split(max, m, ".")
            if (a[1] > m[1] || (a[1] == m[1] && a[2] + 0 > m[2] + 0)) print "    " $NF " (GLIBC_" v ")"
        }' >&2
fi
# Libraries every supported node has in its base image.
allowed='^(libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1)$'
while read -r lib; do
    grep -qE "$allowed" <<<"$lib" || fail "$bin: needs $lib, which a node may not have (link it statically)"
done < <(sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' <<<"$dynamic")
if [ "$failures" = 0 ]; then
    echo "portability-check: $bin: loader $interp, newest glibc symbol version $newest (<= $max_glibc), no DT_RELR, needs $(sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' <<<"$dynamic" | paste -sd' ')"
fi

# --- the sources ----------------------------------------------------------
cd "$repo"
binary_failures=$failures
mapfile -t sources < <(git ls-files --cached --others --exclude-standard -- 'src/*.rs' 'tests/*.rs' 'benches/*.rs' 'fuzz/*.rs' 'build.rs')
# A raw number as syscall(2)'s first argument, or a constant of our own for one.
raw=$(perl -0ne '
    while (/\bsyscall\(\s*(-?\d+|0x[0-9a-fA-F]+)\b/g) { print "$ARGV: syscall($1, ...)\n" }
    while (/\bconst\s+((?:SYS|NR|__NR)_\w+)\s*:\s*\w+\s*=\s*(\d+)\s*;/g) { print "$ARGV: const $1 = $2\n" }
' "${sources[@]}")
if [ -n "$raw" ]; then
    fail "raw syscall numbers (x86_64 and arm64 number syscalls differently; use libc::SYS_*):"
    while read -r line; do echo "    $line"; done <<<"$raw" >&2
fi
# x86-only code: an x86 cfg, intrinsic module or inline assembly in a file
# that has no aarch64 counterpart.
# Tests are left out: one may exercise an x86-only kernel interface
# (modify_ldt) under a cfg, and that they build for arm64 is what the
# aarch64 clippy run of hack/test.sh checks.
for f in "${sources[@]}"; do
    case "$f" in tests/*) continue ;; esac
    if grep -qE 'target_arch *= *"(x86_64|x86)"|(std|core)::arch::x86|\basm!|global_asm!' "$f" \
        && ! grep -qE 'target_arch *= *"aarch64"' "$f"; then
        fail "$f: x86-specific code without an aarch64 counterpart"
    fi
done
# c_char is i8 on x86_64 and u8 on arm64: a cast to i8 (or a *const i8)
# where a C string is meant compiles on one and not the other, or silently
# changes meaning.
signed=$(grep -nE '\bas \*(const|mut) i8\b|\*(const|mut) i8\b|\[i8; ' "${sources[@]}" || true)
if [ -n "$signed" ]; then
    fail "i8 used for C characters (use libc::c_char):"
    while read -r line; do echo "    $line"; done <<<"$signed" >&2
fi
if [ "$failures" = "$binary_failures" ]; then
    echo "portability-check: sources: no raw syscall numbers, no x86-only code, no i8 C strings"
fi
[ "$failures" = 0 ]

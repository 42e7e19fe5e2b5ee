#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2028 # the node's script is quoted on purpose: it expands (and its awk and printf read \t) there
# Runs capcri's privileged test suites on the cgroup-v2 test node
# (hack/vm/run.sh): builds the named test binaries here, boots the node,
# serves the test images there from the local test registry's storage,
# and runs each binary as root in a private mount namespace, as
# hack/test.sh does on the host.
#
#   hack/vm/test.sh [--timeout SECS] [--out DIR] SUITE[:FILTER]...
#     SUITE   a file of tests/ without .rs (cri_lifecycle, cri_resources, ...)
#     FILTER  passed to the test binary (a test name or part of one)
#     DIR     where the node's logs land: results.tsv (suite, exit code,
#             seconds, passed, failed, ignored), SUITE.log, dmesg.log;
#             default $CAPCRI_VM_CACHE/last-out
#
# Every suite runs in one boot of the node; the table of results, and on a
# failure the failing tests and the node's kernel log, are printed at the
# end. See hack/vm/README.md.
#
# Needs the test registry of hack/test.sh (tests/images/registry.sh) with
# the images pushed: CAPCRI_TEST_REGISTRY_DIR (default
# /var/tmp/capcri-test-registry), CAPCRI_TEST_REGISTRY_PORT (default 5055)
# and CAPCRI_TEST_OCI_DIR (default /var/tmp/capcri-test-oci), the same
# variables and defaults as hack/test.sh. Exit code: 0 when every suite
# passed.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
timeout_s=1500
out=
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) timeout_s=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --) shift; break ;;
        -*) echo "hack/vm/test.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || { echo "usage: hack/vm/test.sh [--timeout SECS] SUITE[:FILTER]..." >&2; exit 2; }

regdir=${CAPCRI_TEST_REGISTRY_DIR:-/var/tmp/capcri-test-registry}
port=${CAPCRI_TEST_REGISTRY_PORT:-5055}
ocidir=${CAPCRI_TEST_OCI_DIR:-/var/tmp/capcri-test-oci}
[ -d "$regdir/storage/docker" ] || {
    echo "hack/vm/test.sh: no test registry storage in $regdir: run tests/images/registry.sh start $regdir $port and tests/images/build.py --out $ocidir --push 127.0.0.1:$port first" >&2
    exit 2
}

cd "$repo"
# One build for every suite; the binaries' paths come from cargo itself.
suites=()
filters=()
args=()
for s in "$@"; do
    suites+=("${s%%:*}")
    if [[ "$s" == *:* ]]; then filters+=("${s#*:}"); else filters+=(""); fi
    args+=(--test "${s%%:*}")
done
cargo build --locked --bin capcri
mapfile -t exes < <(cargo test --locked --no-run --message-format=json "${args[@]}" 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["target"]["name"] + "\t" + m["executable"])
')

# Not under /tmp: the node has its own /tmp (its scratch disk).
cache=${CAPCRI_VM_CACHE:-/var/tmp/capcri-vm}
out=${out:-$cache/last-out}
mkdir -p "$cache"
script=$(mktemp "$cache/suites.XXXXXX")
trap 'rm -f "$script"' EXIT
{
    echo 'set -u'
    echo 'set -o pipefail'
    # What pods need of the kernel, loaded up front so a missing module is
    # reported as such rather than as a failed test (the kernel would load
    # most on demand through the node's modprobe).
    echo 'modprobe -a overlay veth bridge br_netfilter nf_tables nft_chain_nat nf_nat nf_conntrack xt_MASQUERADE xt_conntrack xt_comment xt_addrtype iptable_nat iptable_filter || exit 4'
    # The registry serves the host's storage in place (the node's root is
    # the host's, read-only, under a writable overlay): copying its 3,000
    # files over 9p costs minutes of TCG time, reading a blob per pull none.
    echo 'reg=$(mktemp -d /tmp/registry.XXXXXX)'
    echo "ln -s $(printf %q "$regdir/storage") \"\$reg/storage\""
    echo "tests/images/registry.sh start \"\$reg\" $port >/dev/null || exit 3"
    echo 'echo "node: $(uname -r), $(stat -fc %T /sys/fs/cgroup), PID 1 $(cat /proc/1/comm), controllers: $(cat /sys/fs/cgroup/cgroup.controllers), /tmp on $(stat -fc %T /tmp)"'
    echo 'failed=0'
    echo ': > "$CAPCRI_VM_OUT/results.tsv"'
    for i in "${!suites[@]}"; do
        exe=$(printf '%s\n' "${exes[@]}" | awk -F'\t' -v n="${suites[$i]}" '$1 == n {print $2; exit}')
        [ -n "$exe" ] || { echo "hack/vm/test.sh: no test binary for ${suites[$i]}" >&2; exit 2; }
        log="\$CAPCRI_VM_OUT/${suites[$i]}${filters[$i]:+-$i}.log"
        echo "echo '=== ${suites[$i]} ${filters[$i]}'"
        echo 'start=$(date +%s)'
        echo "CAPCRI_PRIVILEGED_TESTS=1 CAPCRI_TEST_REGISTRY=127.0.0.1:$port CAPCRI_TEST_OCI_LAYOUT=$(printf %q "$ocidir") \\"
        echo "  unshare --mount --propagation private -- $(printf %q "$exe") ${filters[$i]:+$(printf %q "${filters[$i]}")} --test-threads=2 2>&1 | tee \"$log\""
        echo 'rc=$?; [ "$rc" = 0 ] || failed=1'
        # passed, failed and ignored tests, summed over the binary's
        # "test result:" lines.
        echo "counts=\$(awk '/^test result:/ {p += \$4; f += \$6; i += \$8} END {print p+0 \"\\t\" f+0 \"\\t\" i+0}' \"$log\")"
        echo "printf '%s\t%s\t%s\t%s\n' $(printf %q "${suites[$i]}${filters[$i]:+:${filters[$i]}}") \"\$rc\" \"\$((\$(date +%s) - start))\" \"\$counts\" >> \"\$CAPCRI_VM_OUT/results.tsv\""
    done
    echo "tests/images/registry.sh stop \"\$reg\" >/dev/null"
    echo 'exit $failed'
} > "$script"
chmod 0644 "$script"

set +e
"$repo/hack/vm/run.sh" --timeout "$timeout_s" --out "$out" -- bash "$script"
rc=$?
set -e
echo "hack/vm/test.sh: results on the node (suite, exit code, seconds, passed, failed, ignored; logs in $out):"
if [ -s "$out/results.tsv" ]; then
    column -t -s $'\t' "$out/results.tsv" | sed 's/^/  /'
else
    echo "  none: the node ran no suite to its end"
fi
if [ "$rc" != 0 ]; then
    for f in "$out"/*.log; do
        [ -f "$f" ] || continue
        case "$f" in */dmesg.log | */journal-warnings.log) continue ;; esac
        # The failing tests' names, as the harness listed them.
        if grep -q '^failures:$' "$f"; then
            echo "--- failed in $(basename "$f" .log):"
            awk '/^failures:$/ {n++} n == 2 && /^    / {print}' "$f"
        fi
    done
    echo "--- the node's kernel log, last lines:"
    tail -n 40 "$out/dmesg.log" 2>/dev/null || echo "  (none)"
    echo "hack/vm/test.sh: FAILED (exit $rc)" >&2
fi
exit "$rc"

#!/usr/bin/env bash
# shellcheck disable=SC2016 # the node's script is single-quoted on purpose: it expands there
# Runs capcri's privileged test suites on the cgroup-v2 test node
# (hack/vm/run.sh): builds the named test binaries here, boots the node,
# serves the test images there from a copy of the local test registry's
# storage, and runs each binary as root in a private mount namespace, as
# hack/test.sh does on the host.
#
#   hack/vm/test.sh [--timeout SECS] SUITE[:FILTER]... 
#     SUITE   a file of tests/ without .rs (cri_lifecycle, cri_resources, ...)
#     FILTER  passed to the test binary (a test name or part of one)
#
# Needs the test registry of hack/test.sh (tests/images/registry.sh) with
# the images pushed: CAPCRI_TEST_REGISTRY_DIR (default
# /var/tmp/capcri-test-registry), CAPCRI_TEST_REGISTRY_PORT (default 5055)
# and CAPCRI_TEST_OCI_DIR (default /var/tmp/capcri-test-oci), the same
# variables and defaults as hack/test.sh. Exit code: 0 when every suite
# passed.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
timeout_s=2400
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) timeout_s=$2; shift 2 ;;
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

# Not under /tmp: the node mounts its own tmpfs there.
cache=${CAPCRI_VM_CACHE:-/var/tmp/capcri-vm}
mkdir -p "$cache"
script=$(mktemp "$cache/suites.XXXXXX")
trap 'rm -f "$script"' EXIT
{
    echo 'set -u'
    echo 'reg=$(mktemp -d /tmp/registry.XXXXXX)'
    echo "cp -a $(printf %q "$regdir/storage") \"\$reg/storage\""
    echo "tests/images/registry.sh start \"\$reg\" $port >/dev/null || exit 3"
    echo 'echo "node: $(uname -r), $(stat -fc %T /sys/fs/cgroup), PID 1 $(cat /proc/1/comm), controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"'
    echo 'failed=0'
    for i in "${!suites[@]}"; do
        exe=$(printf '%s\n' "${exes[@]}" | awk -F'\t' -v n="${suites[$i]}" '$1 == n {print $2; exit}')
        [ -n "$exe" ] || { echo "hack/vm/test.sh: no test binary for ${suites[$i]}" >&2; exit 2; }
        echo "echo '=== ${suites[$i]} ${filters[$i]}'"
        echo "CAPCRI_PRIVILEGED_TESTS=1 CAPCRI_TEST_REGISTRY=127.0.0.1:$port CAPCRI_TEST_OCI_LAYOUT=$(printf %q "$ocidir") \\"
        echo "  unshare --mount --propagation private -- $(printf %q "$exe") ${filters[$i]:+$(printf %q "${filters[$i]}")} --test-threads=2 || failed=1"
    done
    echo "tests/images/registry.sh stop \"\$reg\" >/dev/null"
    echo 'exit $failed'
} > "$script"
chmod 0644 "$script"

"$repo/hack/vm/run.sh" --timeout "$timeout_s" -- bash "$script"

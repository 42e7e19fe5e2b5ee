#!/usr/bin/env bash
# The full side-by-side benchmark: capcri and containerd 1.6 (Debian's
# `containerd` and `runc` packages), both started by `capcri-bench` in a
# private mount namespace, against the test images of a local registry.
#
#   sudo hack/bench.sh [capcri-bench flags...]     e.g. --quick, --json out.json
#
# Modes besides the pod cycles (see capcri-bench --help):
#   --scale 10,100,250   kubelet's steady calls (lists, stats, status) and
#                        memory with that many pods held running, and one
#                        more pod's whole life at each size (--scale-cycles)
#   --pull               a generated 1 GiB image (--pull-mib) pulled cold
# --containerd-bin PATH takes a containerd 2.x built from its tag (with
# containerd-shim-runc-v2 and runc beside it; the bench writes containerd 2's
# version 3 config for it) instead of Debian's 1.6.
#
# The registry: CAPCRI_TEST_REGISTRY (default 127.0.0.1:5000) must already
# serve the test images of tests/images (hack/test.sh starts one; by hand see
# tests/images/README.md).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "hack/bench.sh: the bench runs real containers and needs root (sudo $0)" >&2
    exit 2
fi
missing=()
for p in containerd runc containernetworking-plugins; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "hack/bench.sh: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
registry=${CAPCRI_TEST_REGISTRY:-127.0.0.1:5000}
if ! curl -fsS "http://$registry/v2/" >/dev/null 2>&1; then
    echo "hack/bench.sh: no registry answers on $registry; start one with the test images" >&2
    echo "  (tests/images/registry.sh start DIR PORT && tests/images/build.py --out OCI_DIR --push 127.0.0.1:PORT)" >&2
    exit 2
fi

cd "$repo"
# Both binaries: capcri-bench serves target/release/capcri (beside it).
cargo build --release --locked --bin capcri --bin capcri-bench
# Mounts made by either daemon vanish with the namespace; the bench removes
# its cgroups, processes and /tmp/cb-* directory itself.
exec unshare --mount --propagation private -- \
    target/release/capcri-bench --registry "$registry" "$@"

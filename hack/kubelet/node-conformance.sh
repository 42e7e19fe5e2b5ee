#!/usr/bin/env bash
# Kubernetes Node Conformance against capcri: test/e2e_node of the pinned
# release (hack/kubelet/go.mod), focus [NodeConformance], the way containerd
# and CRI-O are validated upstream. The test binary starts its own etcd, API
# server and namespace controller in-process and runs the kubelet built by
# hack/kubelet/build.sh against capcri's socket. Not in CI: a full run takes
# far longer than CI's budget, and its test images come from registry.k8s.io
# (see "Images" below).
#
# Usage (root): hack/kubelet/node-conformance.sh [GINKGO_FOCUS] [GINKGO_SKIP]
# Env: CAPCRI (default: cargo build), CAPCRI_TEST_REGISTRY (default
#      127.0.0.1:5055, given to capcri as the mirror of registry.k8s.io),
#      NC_TIMEOUT (default 2h), NC_KEEP=1 (keep the work dir).
#
# Images: the conformance tests pull registry.k8s.io/e2e-test-images/*
# (agnhost, busybox, nginx, ...) at the tags of this release. capcri mirrors
# registry.k8s.io to CAPCRI_TEST_REGISTRY; an image that registry lacks
# fails its test with ErrImagePull, which the summary counts apart.
#
# Isolation: a private mount namespace with tmpfs over the fixed paths the
# suite writes (/var/lib/kubelet, /var/log), capcri's state in a temporary
# directory. The API server and etcd listen on loopback.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "node-conformance: needs root" >&2
    exit 2
fi
if [ -z "${NC_IN_NAMESPACE:-}" ]; then
    exec env NC_IN_NAMESPACE=1 unshare --mount --propagation private -- "$0" "$@"
fi
focus=${1:-'\[NodeConformance\]'}
skip=${2:-'\[Flaky\]|\[Serial\]|\[Slow\]|\[Feature:[^]]*\]'}

kubelet=$("$repo/hack/kubelet/build.sh" --e2e-node)
bindir=$(dirname "$kubelet")
if [ -z "${CAPCRI:-}" ]; then
    (cd "$repo" && cargo build --locked --quiet)
    CAPCRI=$repo/target/debug/capcri
fi
registry=${CAPCRI_TEST_REGISTRY:-127.0.0.1:5055}

work=$(mktemp -d /tmp/nc.XXXXXX)
chmod 755 "$work"
capcri_pid=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    [ -n "$capcri_pid" ] && kill "$capcri_pid" 2>/dev/null && wait "$capcri_pid" 2>/dev/null
    if [ -z "${NC_KEEP:-}" ]; then
        awk -v w="$work" '$5 ~ "^" w {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
        rm -rf "$work"
    else
        echo "kept $work"
    fi
}
trap cleanup EXIT

mount --make-rshared /
# The suite runs kubelet through systemd-run whenever that binary exists;
# on a node whose PID 1 is not systemd it fails: hide it (in this namespace).
if [ ! -d /run/systemd/system ] && [ -x /usr/bin/systemd-run ]; then
    mount --bind /dev/null /usr/bin/systemd-run
fi
for d in /var/lib/kubelet /var/log; do
    mkdir -p "$d"
    mount -t tmpfs -o mode=755 capcri-nc "$d"
done
mkdir -p "$work"/{run,lib,cni,policies,report}
cat >"$work/cni/10-loopback.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "nc-loopback", "plugins": [{"type": "loopback"}]}
JSON
"$CAPCRI" serve --socket "$work/capcri.sock" --admin-socket "$work/admin.sock" \
    --state-dir "$work/run" --data-dir "$work/lib" --policy-dir "$work/policies" \
    --cni-conf-dir "$work/cni" --cni-bin-dir /usr/lib/cni --cni-bin-dir /opt/cni/bin \
    --registry-mirror "registry.k8s.io=$registry" >"$work/report/capcri.log" 2>&1 &
capcri_pid=$!
for _ in $(seq 100); do [ -S "$work/capcri.sock" ] && break; sleep 0.1; done

# The base kubelet configuration the suite starts from: this host is cgroup
# v1 (hybrid), and capcri manages cgroupfs paths.
cat >"$work/kubelet-base.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
# Without systemd the suite sets systemCgroups=/system, and kubelet then
# moves EVERY process of the host's root cgroup into /system (seen on the
# shared development machine): --kubelet-flags below empties it again, and
# the cgroupRoot it would need is set anyway.
cgroupRoot: /
failSwapOn: false
YAML

cd "$work"
set +e
timeout "${NC_TIMEOUT:-2h}" "$bindir/e2e_node.test" \
    --ginkgo.focus="$focus" --ginkgo.skip="$skip" --ginkgo.no-color --ginkgo.v=false \
    --ginkgo.junit-report="$work/report/junit.xml" \
    --k8s-bin-dir="$bindir" --report-dir="$work/report" --prepull-images=false \
    --container-runtime-endpoint="unix://$work/capcri.sock" \
    --image-service-endpoint="unix://$work/capcri.sock" \
    --kubelet-config-file="$work/kubelet-base.yaml" \
    --node-name=nc-node --standalone-mode=false \
    --kubelet-flags="--system-cgroups= --kubelet-cgroups= --runtime-cgroups=" \
    >"$work/report/e2e_node.log" 2>&1
rc=$?
set -e
python3 - "$work/report/junit.xml" <<'PY' || true
import collections, sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as e:
    sys.exit(f"node-conformance: no JUnit report ({e})")
count = collections.Counter()
failures = []
for case in root.iter("testcase"):
    if case.find("skipped") is not None:
        count["skipped"] += 1
    elif case.find("failure") is not None or case.find("error") is not None:
        count["failed"] += 1
        node = case.find("failure") if case.find("failure") is not None else case.find("error")
        msg = (node.get("message") or node.text or "").strip().splitlines()
        failures.append((case.get("name"), msg[0][:300] if msg else ""))
    else:
        count["passed"] += 1
for name, msg in failures:
    print(f"FAIL {name}: {msg}")
print(f"node-conformance: {count['passed']} passed, {count['failed']} failed, {count['skipped']} skipped")
PY
tail -n 5 "$work/report/e2e_node.log"
exit "$rc"

#!/usr/bin/env bash
# Runs the e2e scenarios of e2e/scenarios/ through a real kubelet in
# standalone mode (no API server): kubelet reads static pods from a
# manifest directory and runs them through capcri's CRI socket; the
# assertions (e2e/check.py, the rules of NAME.expect.yaml) read the pod
# status from kubelet's read-only /pods endpoint, the container logs from
# kubelet's pod log directory and, for CreateContainerError, kubelet's own
# log (the event would carry the same message).
#
# Usage (root): e2e/kubelet.sh            KUBELET=/path/to/kubelet e2e/kubelet.sh
# Env: KUBELET (default: kubelet in PATH; none: the script says so and exits 0,
#      CI then relies on tests/e2e_scenarios.rs), CAPCRI (default: cargo build),
#      CAPCRI_TEST_REGISTRY (default 127.0.0.1:5000, the registry holding the
#      test images), KUBELET_PORT (default 10350; the read-only port is +5),
#      E2E_TIMEOUT (seconds per scenario, default 120), E2E_KEEP=1 (keep the work dir).
#
# Everything lives in one temporary directory and a private mount
# namespace: kubelet's root dir, pod logs, manifests, capcri's state and a
# loopback-only CNI config (the scenarios need no pod network, and the host's
# interfaces, routes and sysctls stay untouched).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
kubelet=${KUBELET:-$(command -v kubelet || true)}
if [ -z "$kubelet" ]; then
    echo "e2e/kubelet.sh: no kubelet (set KUBELET=/path/to/kubelet or put one in PATH): skipped;" \
        "tests/e2e_scenarios.rs runs the same scenarios against the CRI directly" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "e2e/kubelet.sh: kubelet and capcri need root (sudo $0)" >&2
    exit 2
fi
if [ -z "${E2E_IN_NAMESPACE:-}" ]; then
    # A private mount namespace: kubelet's and capcri's mounts vanish with it.
    exec env E2E_IN_NAMESPACE=1 unshare --mount --propagation private -- "$0" "$@"
fi
python3 -c 'import yaml' 2>/dev/null || {
    echo "e2e/kubelet.sh: needs PyYAML: apt-get install python3-yaml" >&2
    exit 2
}

registry=${CAPCRI_TEST_REGISTRY:-127.0.0.1:5000}
port=${KUBELET_PORT:-10350}
ro_port=$((port + 5))
timeout=${E2E_TIMEOUT:-120}
node=e2e-node
if [ -z "${CAPCRI:-}" ]; then
    (cd "$repo" && cargo build --locked --quiet)
    CAPCRI=$repo/target/debug/capcri
fi
echo "kubelet: $("$kubelet" --version)"

work=$(mktemp -d /tmp/capcri-kubelet-e2e.XXXXXX)
pids=()
stop_all() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    pids=()
}
cleanup() {
    stop_all
    if [ -z "${E2E_KEEP:-}" ]; then
        # The pods' monitors mention the work dir; end them before removing it.
        grep -l -s -F "$work" /proc/[0-9]*/cmdline | cut -d/ -f3 | while read -r p; do
            kill -9 "$p" 2>/dev/null || true
        done
        rm -rf "$work"
    else
        echo "kept $work"
    fi
}
trap cleanup EXIT

mkdir -p "$work"/{cni,manifests,pods,kubelet,run,lib}
cat >"$work/cni/10-loopback.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "e2e-loopback", "plugins": [{"type": "loopback"}]}
JSON
cat >"$work/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: $work/manifests
fileCheckFrequency: 2s
syncFrequency: 5s
containerRuntimeEndpoint: unix://$work/capcri.sock
imageServiceEndpoint: unix://$work/capcri.sock
podLogsDirectory: $work/pods
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
address: 127.0.0.1
port: $port
readOnlyPort: $ro_port
healthzPort: 0
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
YAML

start_node() { # POLICIES: recommended | none
    rm -rf "$work/policies"
    mkdir -p "$work/policies"
    [ "$1" = recommended ] && cp "$repo"/policy/*.yaml "$work/policies/"
    "$CAPCRI" serve --socket "$work/capcri.sock" --admin-socket "$work/admin.sock" \
        --state-dir "$work/run" --data-dir "$work/lib" --policy-dir "$work/policies" \
        --cni-conf-dir "$work/cni" --cni-bin-dir /usr/lib/cni --cni-bin-dir /opt/cni/bin \
        --cgroup-parent /capcri-kubelet-e2e \
        --registry-mirror "e2e.capcri.test=$registry" \
        >>"$work/capcri.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do [ -S "$work/capcri.sock" ] && break; sleep 0.1; done
    "$kubelet" --config "$work/kubelet.yaml" --root-dir "$work/kubelet" \
        --cert-dir "$work/kubelet/pki" --hostname-override "$node" --v 2 \
        >>"$work/kubelet.log" 2>&1 &
    pids+=($!)
}

pods_json() { curl -fsS "http://127.0.0.1:$ro_port/pods" 2>/dev/null || echo '{"items": []}'; }

passed=0
failed=0
for policies in recommended none; do
    echo "== policies: $policies"
    start_node "$policies"
    for manifest in "$repo"/e2e/scenarios/*.yaml; do
        case $manifest in *.expect.yaml) continue ;; esac
        expect=${manifest%.yaml}.expect.yaml
        grep -q "policies: $policies" "$expect" || continue
        name=$(python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["metadata"]["name"])' "$manifest")
        static=$name-$node # kubelet suffixes static pods with the node name
        cp "$manifest" "$work/manifests/"
        result=3
        deadline=$((SECONDS + timeout))
        while [ "$result" = 3 ] && [ $SECONDS -lt $deadline ]; do
            sleep 2
            pods_json | python3 -c '
import json, sys
pods = [p for p in json.load(sys.stdin).get("items", []) if p["metadata"]["name"] == sys.argv[1]]
json.dump(pods[0] if pods else {}, sys.stdout)' "$static" >"$work/pod.json"
            rm -rf "$work/logs" && mkdir -p "$work/logs"
            for d in "$work/pods"/*_"${static}"_*/*/; do
                [ -d "$d" ] || continue
                c=$(basename "$d")
                cat "$d"/*.log >"$work/logs/$c.log" 2>/dev/null || true
            done
            set +e
            python3 "$repo/e2e/check.py" --expect "$expect" --policies "$policies" \
                --pod-json "$work/pod.json" --logs "$work/logs" --messages "$work/kubelet.log" >"$work/check.out"
            result=$?
            set -e
        done
        cat "$work/check.out"
        if [ "$result" = 0 ]; then
            passed=$((passed + 1))
        else
            echo "FAIL $(basename "$manifest") ($policies): not settled or wrong; pod status:"
            cat "$work/pod.json"
            echo
            failed=$((failed + 1))
        fi
        rm -f "$work/manifests/$(basename "$manifest")"
        for _ in $(seq 60); do
            pods_json | grep -q "\"$static\"" || break
            sleep 1
        done
    done
    stop_all
    rm -f "$work/capcri.sock"
done
echo "e2e (kubelet $("$kubelet" --version | awk '{print $2}')): $passed passed, $failed failed"
[ "$failed" = 0 ]

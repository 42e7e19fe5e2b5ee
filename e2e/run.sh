#!/usr/bin/env bash
# The kind e2e suite: builds a kind node image with capcri as its runtime
# (e2e/Dockerfile), creates the cluster (e2e/kind-config.yaml), installs
# the Helm chart (charts/capcri, values e2e/values-kind.yaml), runs every
# scenario of e2e/scenarios/ with kubectl and asserts its NAME.expect.yaml
# on the pod status, container logs and events (e2e/check.py), first with
# the recommended policies, then with none (helm upgrade), and deletes the
# cluster.
#
# Needs: docker, kind, kubectl, helm, python3 with PyYAML, and network
# (the node image, rust:1-bookworm, registry:2 and, because kind preloads
# the control-plane images into containerd and not into capcri,
# registry.k8s.io). Not run on the CI machine (no Docker, no network): CI
# runs the same scenarios with tests/e2e_scenarios.rs and e2e/kubelet.sh.
#
# Env: KIND_NODE_IMAGE (default kindest/node:v1.34.0), E2E_REGISTRY_PORT
# (default 5001), E2E_TIMEOUT (seconds per scenario, default 180),
# E2E_KEEP_CLUSTER=1 (do not delete the cluster).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cluster=capcri-e2e
node_image=capcri-kind-node:e2e
reg_name=kind-registry
reg_port=${E2E_REGISTRY_PORT:-5001}
timeout=${E2E_TIMEOUT:-180}

for tool in docker kind kubectl helm python3; do
    command -v "$tool" >/dev/null || {
        echo "e2e/run.sh: $tool is missing (see e2e/README.md)" >&2
        exit 2
    }
done
python3 -c 'import yaml' 2>/dev/null || {
    echo "e2e/run.sh: needs PyYAML: apt-get install python3-yaml" >&2
    exit 2
}

work=$(mktemp -d)
cleanup() {
    if [ -z "${E2E_KEEP_CLUSTER:-}" ]; then
        kind delete cluster --name "$cluster" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== local registry $reg_name (127.0.0.1:$reg_port), test images and the chart image"
if [ "$(docker inspect -f '{{.State.Running}}' "$reg_name" 2>/dev/null || true)" != true ]; then
    docker run -d --restart=always -p "127.0.0.1:$reg_port:5000" --name "$reg_name" registry:2
fi
"$repo/tests/images/build.py" --out "$work/testimages-oci" --push "127.0.0.1:$reg_port"
docker build -f "$repo/contrib/image/Dockerfile" -t "127.0.0.1:$reg_port/capcri:e2e" "$repo"
docker push "127.0.0.1:$reg_port/capcri:e2e"

echo "== node image $node_image"
docker build -f "$repo/e2e/Dockerfile" -t "$node_image" \
    --build-arg "KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.34.0}" "$repo"

echo "== cluster $cluster"
kind create cluster --config "$repo/e2e/kind-config.yaml" --image "$node_image" --wait 5m
docker network connect kind "$reg_name" 2>/dev/null || true
kubectl get nodes -o wide
# The node's runtime really is capcri.
kubectl get nodes -o jsonpath='{.items[0].status.nodeInfo.containerRuntimeVersion}' | grep -q capcri

echo "== helm install capcri"
helm install capcri "$repo/charts/capcri" --namespace kube-system \
    --values "$repo/e2e/values-kind.yaml" --wait --timeout 5m

policies_on_node() { docker exec "$cluster-control-plane" sh -c 'ls /etc/capcri/policies 2>/dev/null' || true; }

passed=0
failed=0
run_scenarios() { # POLICIES
    local policies=$1 manifest expect name result deadline c
    for manifest in "$repo"/e2e/scenarios/*.yaml; do
        case $manifest in *.expect.yaml) continue ;; esac
        expect=${manifest%.yaml}.expect.yaml
        grep -q "policies: $policies" "$expect" || continue
        name=$(kubectl create --dry-run=client -o jsonpath='{.metadata.name}' -f "$manifest")
        kubectl apply -f "$manifest"
        result=3
        deadline=$((SECONDS + timeout))
        while [ "$result" = 3 ] && [ $SECONDS -lt $deadline ]; do
            sleep 3
            kubectl get pod "$name" -o json >"$work/pod.json"
            rm -rf "$work/logs" && mkdir -p "$work/logs"
            for c in $(kubectl get pod "$name" -o jsonpath='{.spec.containers[*].name}'); do
                kubectl logs "$name" -c "$c" >"$work/logs/$c.log" 2>/dev/null || true
            done
            kubectl get events --field-selector "involvedObject.name=$name" \
                -o jsonpath='{range .items[*]}{.reason}: {.message}{"\n"}{end}' >"$work/events.txt"
            set +e
            python3 "$repo/e2e/check.py" --expect "$expect" --policies "$policies" \
                --pod-json "$work/pod.json" --logs "$work/logs" --messages "$work/events.txt" >"$work/check.out"
            result=$?
            set -e
        done
        cat "$work/check.out"
        if [ "$result" = 0 ]; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            echo "FAIL $(basename "$manifest") ($policies):"
            kubectl describe pod "$name" || true
        fi
        kubectl delete -f "$manifest" --wait=true --timeout=60s
    done
}

echo "== scenarios, recommended policies: $(policies_on_node | tr '\n' ' ')"
run_scenarios recommended

echo "== scenarios, no policies (capcri's built-in defaults)"
helm upgrade capcri "$repo/charts/capcri" --namespace kube-system \
    --values "$repo/e2e/values-kind.yaml" --set policies.recommended=false --wait --timeout 5m
for _ in $(seq 60); do
    [ -z "$(policies_on_node)" ] && break
    sleep 2
done
[ -z "$(policies_on_node)" ] || {
    echo "e2e/run.sh: the node still has policies after helm upgrade: $(policies_on_node)" >&2
    exit 1
}
sleep 5 # capcri polls its policy directory every 2 s
run_scenarios none

echo "e2e (kind): $passed passed, $failed failed"
[ "$failed" = 0 ]

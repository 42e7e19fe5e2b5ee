#!/usr/bin/env bash
# Runs the e2e scenarios through a real kubelet in standalone mode (no API
# server): kubelet reads static pods from a manifest directory and runs them
# through capcri's CRI socket; e2e/kubelet_e2e.py judges each scenario from
# kubelet's side (its read-only /pods and /stats/summary endpoints, the pod
# logs it keeps, its own log, the cgroup tree it builds). The scenarios: the
# capability ones of e2e/scenarios/ (rules of NAME.expect.yaml, check.py) and
# those of e2e/kubelet-scenarios/ (probes, crash back-off, a failed start,
# OnFailure, graceful termination, QoS cgroups and stats, shared PID
# namespace, host network, volumes, user namespace, then kubelet and capcri
# restarted under running pods). See e2e/README.md.
#
# Usage (root): e2e/kubelet.sh [--vm] [--only NAME,...]
#   --vm  on the cgroup-v2 test node instead (hack/vm/run.sh: Debian's 6.1
#         kernel under qemu, systemd as PID 1): kubelet and capcri both on the
#         systemd cgroup driver, which capcri detects there. The binaries are
#         built here; the node serves the test registry's storage
#         (CAPCRI_TEST_REGISTRY_DIR, default /var/tmp/capcri-test-registry) on
#         its own 127.0.0.1:5055. Also: CAPCRI_VM_TIMEOUT (seconds, default
#         1200; all 19 take under 3 minutes there), E2E_TIMEOUT defaults to
#         300 there (TCG is several times slower; the slowest scenario,
#         crash-backoff, takes about 100 s). Exit code 125: the node hung
#         (hack/vm/run.sh).
# Env: KUBELET (default: hack/kubelet/build.sh builds the pinned release from
#      the k8s.io/kubernetes Go module, cached under /var/tmp/capcri-kubelet),
#      CAPCRI (default: cargo build), CAPCRI_TEST_REGISTRY (default
#      127.0.0.1:5000, the registry holding the test images), E2E_TIMEOUT
#      (seconds per scenario, default 180), E2E_KEEP=1 (keep the work dir).
#
# Everything lives in one temporary directory, a private mount namespace and
# a cgroup subtree of its own (kubelet's cgroupRoot): kubelet's root dir, pod
# logs, manifests, capcri's state, a loopback-only CNI config (the scenarios
# need no pod network, and the host's interfaces, routes and sysctls stay
# untouched), a tmpfs over /var/log (kubelet's /var/log/containers links).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "e2e/kubelet.sh: kubelet and capcri need root (sudo $0)" >&2
    exit 2
fi
if [ "${1:-}" = --vm ]; then
    shift
    regdir=${CAPCRI_TEST_REGISTRY_DIR:-/var/tmp/capcri-test-registry}
    [ -d "$regdir/storage/docker" ] || {
        echo "e2e/kubelet.sh: no test registry storage in $regdir: run hack/test.sh (or tests/images/registry.sh and build.py --push) first" >&2
        exit 2
    }
    KUBELET=${KUBELET:-$("$repo/hack/kubelet/build.sh")}
    if [ -z "${CAPCRI:-}" ]; then
        (cd "$repo" && cargo build --locked --quiet --bin capcri)
        CAPCRI=$repo/target/debug/capcri
    fi
    export KUBELET CAPCRI E2E_TIMEOUT=${E2E_TIMEOUT:-300}
    # The node's registry reads the host's storage in place (as
    # hack/vm/test.sh's does); its own loopback, the port the images'
    # mirror names.
    # shellcheck disable=SC2016 # expanded in the node
    node_script='reg=$(mktemp -d /tmp/registry.XXXXXX) && ln -s "$0/storage" "$reg/storage" &&
        tests/images/registry.sh start "$reg" 5055 >/dev/null || exit 3
        echo "node: $(uname -r), $(stat -fc %T /sys/fs/cgroup), PID 1 $(cat /proc/1/comm)"
        start=$(date +%s)
        CAPCRI_TEST_REGISTRY=127.0.0.1:5055 e2e/kubelet.sh "$@"; rc=$?
        echo "e2e/kubelet.sh --vm: the scenarios took $(($(date +%s) - start)) s on the node"
        tests/images/registry.sh stop "$reg" >/dev/null
        exit $rc'
    cd "$repo"
    exec hack/vm/run.sh --out "${CAPCRI_VM_OUT_DIR:-${CAPCRI_VM_CACHE:-/var/tmp/capcri-vm}/kubelet-out}" --timeout "${CAPCRI_VM_TIMEOUT:-1200}" --env KUBELET --env CAPCRI --env E2E_TIMEOUT \
        ${E2E_KEEP:+--env E2E_KEEP} -- bash -c "$node_script" "$regdir" "$@"
fi
if [ -z "${E2E_IN_NAMESPACE:-}" ]; then
    # A private mount namespace: kubelet's and capcri's mounts vanish with it.
    exec env E2E_IN_NAMESPACE=1 unshare --mount --propagation private -- "$0" "$@"
fi
python3 -c 'import yaml' 2>/dev/null || {
    echo "e2e/kubelet.sh: needs PyYAML: apt-get install python3-yaml" >&2
    exit 2
}

kubelet=${KUBELET:-}
if [ -z "$kubelet" ]; then
    kubelet=$("$repo/hack/kubelet/build.sh")
fi
if [ -z "${CAPCRI:-}" ]; then
    (cd "$repo" && cargo build --locked --quiet)
    CAPCRI=$repo/target/debug/capcri
fi
echo "kubelet: $kubelet ($("$kubelet" --version))"

# Short: capcri's state dir (in it) holds unix sockets, whose paths are
# limited to 107 bytes.
work=$(mktemp -d /tmp/ck.XXXXXX)
chmod 755 "$work"
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    # On the VM node (hack/vm/run.sh) the daemons' logs go back to the host.
    if [ -n "${CAPCRI_VM_OUT:-}" ]; then
        for log in "$work"/*/kubelet.log "$work"/*/capcri.log; do
            [ -f "$log" ] && cp "$log" "$CAPCRI_VM_OUT/$(basename "$(dirname "$log")")-$(basename "$log")"
        done
    fi
    if [ -z "${E2E_KEEP:-}" ]; then
        # The pods' monitors mention the work dir; end any left before
        # removing it (the list is taken before the greps run, and names
        # this shell's pid, which is skipped).
        for f in /proc/[0-9]*/cmdline; do
            p=${f#/proc/}
            p=${p%/cmdline}
            [ "$p" = $$ ] && continue
            if tr '\0' ' ' 2>/dev/null <"$f" | grep -qF -- "$work/"; then
                kill -9 "$p" 2>/dev/null || true
            fi
        done
        # Stopped pods capcri had not removed yet keep mounts (shm, ns
        # files) in this namespace.
        awk -v w="$work" '$5 ~ "^" w {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
        rm -rf "$work"
    else
        echo "kept $work"
    fi
}
trap cleanup EXIT

set +e
python3 "$repo/e2e/kubelet_e2e.py" --kubelet "$kubelet" --capcri "$CAPCRI" \
    --registry "${CAPCRI_TEST_REGISTRY:-127.0.0.1:5000}" --work "$work" \
    --timeout "${E2E_TIMEOUT:-180}" "$@"
rc=$?
set -e
if [ "$rc" != 0 ]; then
    for log in "$work"/*/kubelet.log "$work"/*/capcri.log; do
        [ -f "$log" ] || continue
        echo "---- last lines of $log"
        tail -n 40 "$log"
    done
fi
exit "$rc"

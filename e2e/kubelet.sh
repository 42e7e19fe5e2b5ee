#!/usr/bin/env bash
# Runs the e2e scenarios through a real kubelet in standalone mode (no API
# server): kubelet reads static pods from a manifest directory and runs them
# through capcri's CRI socket; e2e/kubelet_e2e.py judges each scenario from
# kubelet's side (its read-only /pods and /stats/summary endpoints, the pod
# logs it keeps, its own log, the cgroup tree it builds). The scenarios: the
# capability ones of e2e/scenarios/ (rules of NAME.expect.yaml, check.py) and
# those of e2e/kubelet-scenarios/ (probes, crash back-off, OnFailure, graceful
# termination, QoS cgroups and stats, shared PID namespace, host network,
# volumes, user namespace, then kubelet and capcri restarted under running
# pods). See e2e/README.md.
#
# Usage (root): e2e/kubelet.sh [--only NAME,...]
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
    if [ -z "${E2E_KEEP:-}" ]; then
        # The pods' monitors mention the work dir; end any left before
        # removing it (the list is taken before the greps run, and names
        # this shell's pid, which is skipped).
        for f in /proc/[0-9]*/cmdline; do
            p=${f#/proc/}
            p=${p%/cmdline}
            [ "$p" = $$ ] && continue
            if tr '\0' ' ' <"$f" 2>/dev/null | grep -qF -- "$work/"; then
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

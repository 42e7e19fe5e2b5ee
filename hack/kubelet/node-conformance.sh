#!/usr/bin/env bash
# Kubernetes Node Conformance against capcri: test/e2e_node of the pinned
# release (hack/kubelet/go.mod), focus [NodeConformance], the way containerd
# and CRI-O are validated upstream. The test binary starts its own etcd, API
# server and namespace controller in-process and runs the kubelet built by
# hack/kubelet/build.sh against capcri's socket.
#
# Usage (root): hack/kubelet/node-conformance.sh [GINKGO_FOCUS] [GINKGO_SKIP]
#   default focus \[NodeConformance\], skip \[Flaky\]|\[Serial\]|\[Slow\]|\[Feature:...\]
# Env: CAPCRI (default: cargo build), CAPCRI_TEST_REGISTRY (default
#      127.0.0.1:5055: the test registry the images are pushed to),
#      CAPCRI_TEST_REGISTRY_DIR (default /var/tmp/capcri-test-registry: its
#      storage, served again inside the run's network namespace),
#      NC_TIMEOUT (ginkgo's suite timeout, default 2h; specs not run by then
#      are reported as such), NC_PROCS (parallel ginkgo processes, default 8), NC_OUT (where the report lands, default
#      /var/tmp/capcri-nc/last: junit.xml, e2e_node.log, kubelet.log,
#      capcri.log, summary.txt), NC_KEEP=1 (keep the work dir).
#
# Images: the tests pull registry.k8s.io/e2e-test-images/* and
# registry.k8s.io/pause at this release's tags. hack/kubelet/e2e-images.py
# rebuilds them (agnhost from the same module, the rest from
# tests/images/build.py's layers) and pushes them to the test registry;
# capcri mirrors registry.k8s.io there (--registry-mirror).
#
# Isolation, because this runs on shared machines (a kubelet run by e2e_node
# on a host once moved every process of the root cgroup into /system):
# - kubelet gets empty --system-cgroups, --kubelet-cgroups and
#   --runtime-cgroups, so it moves no process; the cgroup of PID 1, of this
#   script and of every process outside the run is recorded before and
#   compared after, and a change fails the run;
# - a network namespace of its own: loopback, a veth holding the
#   node IP (10.99.0.1) and the CNI bridge the pods get (10.88.0.0/16); the
#   API server, etcd and a second registry on the test registry's storage
#   listen there;
# - a mount namespace of its own: tmpfs over /var/lib/kubelet and /var/log;
#   kubelet's host sysctls (vm.overcommit_memory, kernel.panic, ...) land on
#   files bind-mounted over /proc/sys in kubelet's own mount namespace;
# - kubelet's /kubepods cgroups (cgroupRoot /, as upstream) are removed
#   after, with anything left in them.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "node-conformance: needs root" >&2
    exit 2
fi
focus=${1:-'\[NodeConformance\]'}
skip=${2:-'\[Flaky\]|\[Serial\]|\[Slow\]|\[Feature:[^]]*\]'}
out=${NC_OUT:-/var/tmp/capcri-nc/last}
regdir=${CAPCRI_TEST_REGISTRY_DIR:-/var/tmp/capcri-test-registry}

# Sysctls kubelet sets on start (KernelTunableModify); pid-independent keys.
sysctls="vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1
kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000"

if [ -z "${NC_INNER:-}" ]; then
    # ---- on the host: build, push the images, snapshot, run, compare ----
    [ -d "$regdir/storage/docker" ] || {
        echo "node-conformance: no test registry storage in $regdir (run hack/test.sh first)" >&2
        exit 2
    }
    kubelet=$("$repo/hack/kubelet/build.sh" --e2e-node)
    if [ -z "${CAPCRI:-}" ]; then
        (cd "$repo" && cargo build --locked --quiet --bin capcri)
        CAPCRI=$repo/target/debug/capcri
    fi
    # agnhost's TLS pair is in the module build.sh fetched (GOMODCACHE there).
    release=$(basename "$(dirname "$kubelet")")
    porter=${CAPCRI_KUBELET_CACHE:-/var/tmp/capcri-kubelet}/gomod/k8s.io/kubernetes@${release%-*}/test/images/agnhost/porter
    python3 "$repo/hack/kubelet/e2e-images.py" --agnhost "$(dirname "$kubelet")/agnhost" \
        --porter "$porter" --push "${CAPCRI_TEST_REGISTRY:-127.0.0.1:5055}"
    snapshot() { # every process (pid and start time) with its cgroups; kubelet's sysctls
        for f in /proc/[0-9]*/cgroup; do
            d=${f%/cgroup}
            c=$(tr '\n' ' ' 2>/dev/null <"$f") || continue
            t=$(awk '{print $22}' "$d/stat" 2>/dev/null) || continue
            echo "${d#/proc/}:$t $c"
        done | sort
        for kv in $sysctls; do echo "sysctl:${kv%%=*} $(cat "/proc/sys/${kv%%=*}")"; done
    }
    rm -rf "$out" && mkdir -p "$out"
    snapshot >"$out/host-before.txt"
    set +e
    NC_INNER=1 CAPCRI=$CAPCRI KUBELET=$kubelet unshare --mount --net --propagation private -- "$0" "$@"
    rc=$?
    set -e
    # kubelet's QoS cgroups (and anything a pod left in them), deepest first.
    for h in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
        [ -d "$h" ] || continue
        find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r p; do kill -9 "$p" 2>/dev/null || true; done
        sleep 0.5
        find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [ -d "$h" ] && echo "node-conformance: could not remove $h" >&2
    done
    snapshot >"$out/host-after.txt"
    # A process alive before and after (same pid, same start time) now in
    # a cgroup kubelet makes or moves processes to, or a sysctl changed.
    changed=$(python3 -c '
import re, sys
def load(path):
    return dict(l.rstrip("\n").split(" ", 1) for l in open(path) if " " in l)
before, after = load(sys.argv[1]), load(sys.argv[2])
kubelets = re.compile(r":/(system|kubelet|kubepods|docker-daemon)\b")
for k in sorted(set(before) & set(after)):
    b, a = before[k], after[k]
    if b != a and (k.startswith("sysctl:") or kubelets.search(a)):
        print(f"  {k}: {b!r} -> {a!r}")
' "$out/host-before.txt" "$out/host-after.txt")
    if [ -n "$changed" ]; then
        echo "node-conformance: FAILED: the run changed the host (process cgroups or sysctls):" >&2
        echo "$changed" >&2
        exit 1
    fi
    echo "node-conformance: host untouched ($(wc -l <"$out/host-before.txt") processes' cgroups and kubelet's sysctls compared); report in $out"
    exit "$rc"
fi

# ---- inside the run's own mount and network namespaces ----
kubelet=${KUBELET:?set by the outer part of this script}
work=$(mktemp -d /tmp/nc.XXXXXX)
chmod 755 "$work"
# The suite writes its kubeconfig, token file and kubelet config into its
# --k8s-bin-dir: a directory of the run's own, linking to the binaries of
# the shared cache.
bindir=$work/bin
mkdir "$bindir"
for b in kubelet e2e_node.test ginkgo; do ln -s "$(dirname "$kubelet")/$b" "$bindir/$b"; done
capcri_pid=
reg=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    [ -n "$capcri_pid" ] && kill "$capcri_pid" 2>/dev/null && wait "$capcri_pid" 2>/dev/null
    # Monitors of pods left running name the work dir.
    for f in /proc/[0-9]*/cmdline; do
        p=${f#/proc/}
        p=${p%/cmdline}
        [ "$p" = $$ ] && continue
        if tr '\0' ' ' 2>/dev/null <"$f" | grep -qF -- "$work/"; then kill -9 "$p" 2>/dev/null || true; fi
    done
    # (rm -rf removes the link to the storage, not the storage)
    [ -n "$reg" ] && "$repo/tests/images/registry.sh" stop "$reg" >/dev/null 2>&1 && rm -rf "$reg"
    cp "$work"/report/*.log "$work"/report/junit.xml "$out/" 2>/dev/null || true
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
mkdir -p "$work"/{run,lib,cni,policies,report,ipam}

ip link set lo up
# The node's address on one end of a veth pair (the kernel may lack the
# dummy driver), the default route through it: kubelet wants both.
ip link add nc0 type veth peer name nc1
ip addr add 10.99.0.1/24 dev nc0
ip link set nc1 up
ip link set nc0 up
ip route add default via 10.99.0.254 dev nc0 onlink
cat >"$work/cni/10-nc.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "nc-bridge", "plugins": [
  {"type": "loopback"},
  {"type": "bridge", "bridge": "ncbr0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$work/ipam"}}]}
JSON

# The test registry again, on this namespace's loopback, serving the
# storage in place.
reg=$(mktemp -d /tmp/nc-registry.XXXXXX)
ln -s "$regdir/storage" "$reg/storage"
"$repo/tests/images/registry.sh" start "$reg" 5055 >/dev/null

# The RuntimeClass tests run pods with the handler "test-handler", which
# upstream's node e2e configures in containerd (as runc); here it is one
# more name capcri accepts.
echo 'runtime_handlers = ["capcri", "runc", "test-handler"]' >"$work/capcri.toml"
"$CAPCRI" serve --config "$work/capcri.toml" --socket "$work/capcri.sock" --admin-socket "$work/admin.sock" \
    --state-dir "$work/run" --data-dir "$work/lib" --policy-dir "$work/policies" \
    --cni-conf-dir "$work/cni" --cni-bin-dir /usr/lib/cni --cni-bin-dir /opt/cni/bin \
    --registry-mirror "registry.k8s.io=127.0.0.1:5055" >"$work/report/capcri.log" 2>&1 &
capcri_pid=$!
for _ in $(seq 100); do [ -S "$work/capcri.sock" ] && break; sleep 0.1; done

driver=cgroupfs
if [ -f /sys/fs/cgroup/cgroup.controllers ] && [ -d /run/systemd/system ]; then driver=systemd; fi
cat >"$work/kubelet-base.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: $driver
failCgroupV1: false
cgroupRoot: /
failSwapOn: false
# Disk-pressure eviction at kubelet's defaults (15% image fs free) evicts
# every pod on a development machine's busy disk; memory kept as upstream's
# node e2e config has it.
evictionHard:
  memory.available: 250Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
YAML

# kubelet's sysctls on files in a mount namespace of the test binary's (and
# so kubelet's) own; /proc private there so they stay there.
binds=
for kv in $sysctls; do
    k=${kv%%=*}
    f=$work/sysctl-${k//\//-}
    echo "${kv#*=}" >"$f"
    binds+="mount --bind $f /proc/sys/$k && "
done

cd "$work"
set +e
# ginkgo's runner, NC_PROCS processes (default 8, upstream's node e2e
# setting on its 2-CPU nodes): the first starts etcd, the API server and
# kubelet, every one runs specs.
unshare --mount --propagation unchanged -- sh -c "mount --make-rprivate /proc && $binds exec \"\$0\" \"\$@\"" \
    "$bindir/ginkgo" --procs="${NC_PROCS:-8}" --no-color -v \
    --focus="$focus" --skip="$skip" --timeout="${NC_TIMEOUT:-2h}" \
    --output-dir="$work/report" --junit-report=junit.xml \
    "$bindir/e2e_node.test" -- \
    --k8s-bin-dir="$bindir" --report-dir="$work/report" --prepull-images=false \
    --container-runtime-endpoint="unix://$work/capcri.sock" \
    --image-service-endpoint="unix://$work/capcri.sock" \
    --kubelet-config-file="$work/kubelet-base.yaml" \
    --node-name=nc-node --standalone-mode=false \
    --kubelet-flags="--system-cgroups= --kubelet-cgroups= --runtime-cgroups= --node-ip=10.99.0.1" \
    >"$work/report/e2e_node.log" 2>&1
rc=$?
set -e
python3 "$repo/hack/kubelet/nc_summary.py" "$work/report/junit.xml" | tee "$out/summary.txt" || true
tail -n 5 "$work/report/e2e_node.log"
exit "$rc"

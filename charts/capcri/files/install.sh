#!/bin/sh
# The DaemonSet's init container: puts capcri on the node the way README's
# "Install on a node" does, from the image and the chart's ConfigMaps:
#   $HOST_BIN_DIR/capcri          the binary
#   /etc/capcri/config.toml       the config
#   /etc/capcri/policies          the policy set (a symlink to a versioned
#                                 directory, swapped in one rename)
# Every file is written beside its target and renamed over it, so a running
# capcri or a node admin never sees half a file or half a policy set. An
# invalid policy set is refused before it replaces the current one.
set -eu

chart=${CAPCRI_CHART_DIR:-/opt/capcri-chart}
host=${HOST_ROOT:-/host}
binary=${CAPCRI_BINARY:-/usr/local/bin/capcri}
bin_dir=$host${HOST_BIN_DIR:-/usr/local/bin}
etc=$host/etc/capcri

mkdir -p "$bin_dir" "$etc"

# The binary: a running capcri keeps the inode it runs from.
cp "$binary" "$bin_dir/.capcri.new"
chmod 0755 "$bin_dir/.capcri.new"
mv -f "$bin_dir/.capcri.new" "$bin_dir/capcri"

cp "$chart/config/config.toml" "$etc/.config.toml.new"
chmod 0644 "$etc/.config.toml.new"
mv -f "$etc/.config.toml.new" "$etc/config.toml"

# The policy set: ConfigMap files are symlinks into its ..data directory,
# hence cp -L; only *.yaml files are policies.
version=$(date +%Y%m%d%H%M%S).$$
new="$etc/.policies.$version"
mkdir "$new"
count=0
for f in "$chart"/policies/*.yaml; do
    [ -e "$f" ] || continue
    cp -L "$f" "$new/"
    count=$((count + 1))
done
if [ "$count" -gt 0 ] && ! "$binary" policy check "$new"; then
    rm -rf "$new"
    echo "capcri install: the chart's policy set is invalid (above); the node keeps its current one. Fix policies.extra in the chart's values." >&2
    exit 1
fi
# A policies directory from a manual node install is kept aside, once.
if [ -d "$etc/policies" ] && [ ! -L "$etc/policies" ]; then
    mv "$etc/policies" "$etc/policies.before-helm"
    echo "capcri install: moved the node's own $etc/policies to $etc/policies.before-helm"
fi
ln -s ".policies.$version" "$etc/.policies.link.new"
mv -T -f "$etc/.policies.link.new" "$etc/policies"
# Older versions are no longer referenced.
for old in "$etc"/.policies.*; do
    [ "$old" = "$new" ] || rm -rf "$old"
done

# daemon.mode=systemd: the unit and a drop-in (rendered by the chart) that
# points it at the installed binary and config.
if [ "${CAPCRI_SYSTEMD_UNIT:-false}" = true ]; then
    units=$host/etc/systemd/system
    mkdir -p "$units/capcri.service.d"
    cp "$chart/scripts/capcri.service" "$units/.capcri.service.new"
    mv -f "$units/.capcri.service.new" "$units/capcri.service"
    cp "$chart/scripts/10-helm.conf" "$units/capcri.service.d/.10-helm.conf.new"
    mv -f "$units/capcri.service.d/.10-helm.conf.new" "$units/capcri.service.d/10-helm.conf"
    echo "capcri install: $units/capcri.service with drop-in capcri.service.d/10-helm.conf"
fi

echo "capcri install: $bin_dir/capcri ($("$binary" version 2>/dev/null || echo unknown version)), $etc/config.toml, $count polic(y/ies) in $etc/policies"

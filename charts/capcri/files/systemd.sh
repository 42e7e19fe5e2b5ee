#!/bin/sh
# shellcheck disable=SC2016 # the inner `sh -c` scripts expand their own arguments
# The DaemonSet's main container with daemon.mode=systemd: capcri runs as
# the node's systemd service (contrib/systemd/capcri.service, installed by
# the init container with a drop-in pointing it at /etc/capcri/config.toml),
# so it starts at boot before kubelet and is supervised by the node, not by
# the kubelet that depends on it. This container enables the unit, starts
# it, restarts it when the binary, config or unit changed (safe:
# KillMode=process keeps every pod running), then follows its journal so
# `kubectl logs` shows the daemon. Stopping this pod leaves capcri running.
# Policies need no restart: capcri reloads /etc/capcri/policies itself.
set -eu

bin=${HOST_BIN_DIR:-/usr/local/bin}/capcri
marker=/run/capcri/.helm-applied

on_node() { nsenter --target 1 --mount -- "$@"; }

if ! on_node test -d /run/systemd/system; then
    echo "capcri: daemon.mode=systemd, but this node does not run systemd; install the chart with --set daemon.mode=pod" >&2
    exit 1
fi
on_node systemctl daemon-reload
on_node systemctl enable capcri.service
applied=$(on_node sh -c 'cat "$@" | sha256sum | cut -d" " -f1' sh "$bin" /etc/capcri/config.toml \
    /etc/systemd/system/capcri.service /etc/systemd/system/capcri.service.d/10-helm.conf)
if ! on_node systemctl is-active --quiet capcri.service; then
    echo "capcri: starting capcri.service"
    on_node systemctl start capcri.service
elif [ "$applied" != "$(on_node cat "$marker" 2>/dev/null || true)" ]; then
    echo "capcri: binary, config or unit changed: restarting capcri.service (pods keep running)"
    on_node systemctl restart capcri.service
fi
on_node sh -c 'mkdir -p "$(dirname "$1")" && echo "$2" > "$1"' sh "$marker" "$applied"
exec nsenter --target 1 --mount -- journalctl --unit capcri.service --follow --lines 20 --output cat

#!/bin/sh
# The DaemonSet's main container: `capcri serve`, set up to behave like the
# systemd unit (contrib/systemd/capcri.service) so that this pod's restart
# is a daemon restart, not the end of the node's containers.
set -eu

host_bin=${HOST_BIN_DIR:-/usr/local/bin}/capcri

if [ "${CAPCRI_LEAVE_POD_CGROUP:-true}" = true ]; then
    # A container runtime that stops this container kills every process
    # left in its cgroup (runc does for a container in the host's PID
    # namespace). The daemon's per-pod monitors are its children: in a
    # cgroup of its own, which they inherit, they outlive this pod as they
    # outlive `systemctl restart capcri` (Delegate=yes, KillMode=process).
    # The move is made from the host's cgroup namespace: a process cannot
    # be moved to a cgroup outside the writer's namespace.
    # shellcheck disable=SC2016 # the inner script expands its own arguments
    nsenter --target 1 --cgroup --mount -- /bin/sh -c '
        set -eu
        pid=$1 name=$2
        if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
            hierarchies=/sys/fs/cgroup        # cgroup v2
        else
            hierarchies=$(for h in /sys/fs/cgroup/*; do
                [ ! -L "$h" ] && [ -f "$h/cgroup.procs" ] && echo "$h"
            done)                             # cgroup v1 or hybrid
        fi
        for h in $hierarchies; do
            mkdir -p "$h/$name"
            # A new v1 cpuset takes no process until it has CPUs and memory nodes.
            for f in cpuset.cpus cpuset.mems; do
                if [ -f "$h/$name/$f" ] && [ -z "$(cat "$h/$name/$f")" ]; then
                    cat "$(dirname "$h/$name")/$f" > "$h/$name/$f"
                fi
            done
            echo "$pid" > "$h/$name/cgroup.procs"
        done
        echo "capcri start: pid $pid moved to cgroup /$name in" $hierarchies
    ' sh "$$" "${CAPCRI_DAEMON_CGROUP:-capcri.daemon}"
fi

if [ "${CAPCRI_HOST_MOUNT_NS:-true}" = true ]; then
    # The node's mount namespace: the paths kubelet hands over (volumes,
    # hostPath, /var/log/pods) resolve as on the node, and the binary and
    # config are the ones the init container installed there.
    exec nsenter --target 1 --mount -- "$host_bin" serve --config /etc/capcri/config.toml "$@"
fi
exec /usr/local/bin/capcri serve --config /etc/capcri/config.toml "$@"

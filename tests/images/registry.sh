#!/bin/sh
# A local plain-HTTP registry for the test images: Debian's docker-registry
# (distribution 2.8) on 127.0.0.1:PORT only, no auth, every byte of state in
# DIR (config.yml, storage/, registry.log, registry.pid). No systemd unit, no
# file outside DIR; stopped by its recorded pid, never by name.
#
#   tests/images/registry.sh start DIR PORT   start it (a no-op when it already runs)
#   tests/images/registry.sh stop DIR         stop it; DIR/storage is kept (rm -rf DIR drops it)
#   tests/images/registry.sh status DIR       exit 0 when it runs
#
# On hosts with systemd, installing docker-registry also starts Debian's own
# service on :5000; pick another PORT or `systemctl disable --now docker-registry`.
set -eu

usage() {
    echo "usage: $0 start DIR PORT | stop DIR | status DIR" >&2
    exit 2
}
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
bin=${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}

# running: true when DIR's pid file names a live registry serving DIR/config.yml
running() {
    [ -f "$dir/registry.pid" ] || return 1
    pid=$(cat "$dir/registry.pid")
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "serve $dir/config.yml"
}

answers() { # PORT: true when something answers HTTP on 127.0.0.1:PORT
    python3 -c 'import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen("http://127.0.0.1:%s/v2/" % sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)' "$1"
}

case $cmd in
start)
    [ $# -eq 3 ] || usage
    port=$3
    case $port in '' | *[!0-9]*) echo "$0: PORT must be a number, got '$port'" >&2 && exit 2 ;; esac
    [ -x "$bin" ] || {
        echo "$0: $bin is missing: apt-get install docker-registry" >&2
        exit 2
    }
    mkdir -p "$dir/storage"
    dir=$(cd "$dir" && pwd -P)
    if running; then
        echo "registry already running: pid $pid, data $dir"
        exit 0
    fi
    if answers "$port"; then
        echo "$0: something else already listens on 127.0.0.1:$port; pick another PORT" >&2
        exit 1
    fi
    cat >"$dir/config.yml" <<EOF
# written by tests/images/registry.sh
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    # REGISTRY_* variables override the config file: drop them all.
    for v in $(env | sed -n 's/^\(REGISTRY_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$v"; done
    nohup "$bin" serve "$dir/config.yml" </dev/null >>"$dir/registry.log" 2>&1 &
    echo $! >"$dir/registry.pid"
    i=0
    while [ $i -lt 50 ]; do
        if answers "$port"; then
            echo "registry on http://127.0.0.1:$port, pid $(cat "$dir/registry.pid"), data $dir"
            exit 0
        fi
        kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null || break
        sleep 0.2
        i=$((i + 1))
    done
    echo "$0: the registry did not come up; the end of $dir/registry.log:" >&2
    tail -n 5 "$dir/registry.log" >&2
    kill "$(cat "$dir/registry.pid")" 2>/dev/null || true
    rm -f "$dir/registry.pid"
    exit 1
    ;;
stop)
    [ -d "$dir" ] || {
        echo "$0: no directory $dir" >&2
        exit 1
    }
    dir=$(cd "$dir" && pwd -P)
    if running; then
        kill "$pid"
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
            sleep 0.2
            i=$((i + 1))
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "stopped registry pid $pid (data kept in $dir/storage)"
    else
        echo "no registry of $dir is running"
    fi
    rm -f "$dir/registry.pid"
    ;;
status)
    dir=$(cd "$dir" 2>/dev/null && pwd -P) || exit 1
    running
    ;;
*) usage ;;
esac

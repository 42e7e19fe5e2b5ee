#!/usr/bin/env bash
# shellcheck disable=SC2016 # the scripts below run in the images, unexpanded here
# Checks the behaviour critest and the e2e scenarios expect of the images
# that capcri's own tests do not run (nginx, httpd, nonewprivs, the USER
# images, the benchmark busyboxes), plus the file capabilities: each image is
# unpacked from the OCI layout with umoci and run with chroot in private
# PID, network, mount and IPC namespaces (nothing listens on the host).
#
#   sudo tests/images/verify.sh OCI_DIR       (the --out of build.py; needs umoci)
set -euo pipefail

layout=${1:?usage: $0 OCI_DIR}
[ "$(id -u)" = 0 ] || { echo "$0: needs root (unpacks owners, runs chroot)" >&2; exit 2; }
command -v umoci >/dev/null || { echo "$0: apt-get install umoci" >&2; exit 2; }
work=$(mktemp -d /tmp/capcri-images-verify.XXXXXX)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

rootfs() { # REF: unpack once, print the rootfs path
    local dir
    dir=$work/$(printf %s "$1" | tr '/:' '__')
    if [ ! -d "$dir" ]; then
        # umoci 0.4 refuses an index with more than one manifest ("tag is
        # ambiguous": the attestation next to the image): unpack this
        # platform's manifest through a one-entry copy of the layout's index.
        mkdir -p "$work/layout"
        ln -sfn "$(cd "$layout" && pwd)/blobs" "$work/layout/blobs"
        cp "$layout/oci-layout" "$work/layout/"
        python3 - "$layout" "$1" >"$work/layout/index.json" <<'PY'
import json, sys
layout, ref = sys.argv[1:]
blob = lambda d: json.load(open(f"{layout}/blobs/sha256/{d['digest'][7:]}"))
top = next(m for m in json.load(open(f"{layout}/index.json"))["manifests"]
           if m["annotations"]["org.opencontainers.image.ref.name"] == ref)
if "index" in top["mediaType"]:
    top = next(m for m in blob(top)["manifests"] if m["platform"]["os"] == "linux")
print(json.dumps({"schemaVersion": 2, "manifests": [dict(top, annotations={
    "org.opencontainers.image.ref.name": "verify"})]}))
PY
        umoci unpack --image "$work/layout:verify" "$dir" >/dev/null
    fi
    echo "$dir/rootfs"
}

# check NAME REF EXPECTED SCRIPT [AS...]: runs SCRIPT with /bin/sh in REF's
# rootfs, in fresh namespaces with lo up, as root or through the command AS
# (e.g. setpriv ... chroot --userspec=1000:1000); passes when the output
# contains EXPECTED.
check() {
    local name=$1 ref=$2 expected=$3 script=$4 root out
    shift 4
    local as=("$@")
    [ ${#as[@]} -gt 0 ] || as=(chroot)
    root=$(rootfs "$ref")
    out=$(unshare --pid --fork --net --mount --ipc --mount-proc -- sh -c '
        root=$1 script=$2
        shift 2
        mkdir -p "$root/proc" && mount -t proc proc "$root/proc"
        mount -t tmpfs tmpfs "$root/dev" && mknod -m 666 "$root/dev/null" c 1 3
        ln -s /proc/self/fd/1 "$root/dev/stdout" && ln -s /proc/self/fd/2 "$root/dev/stderr"
        ip link set lo up
        "$@" "$root" /bin/sh -c "$script"' sh "$root" "$script" "${as[@]}" 2>&1) || true
    if [[ $out == *"$expected"* ]]; then
        passed=$((passed + 1))
        echo "ok    $name"
    else
        failed=$((failed + 1))
        printf 'FAIL  %s: expected %q in:\n%s\n' "$name" "$expected" "$out"
    fi
}
uid1000=(chroot --userspec=1000:1000)
nnp1000=(setpriv --no-new-privs chroot --userspec=1000:1000)
no_raw=(setpriv --bounding-set -net_raw chroot --userspec=1000:1000)

E=registry.k8s.io/e2e-test-images
G=gcr.io/k8s-staging-cri-tools
check "busybox: critest's commands" $E/busybox:1.29-2 "all present" \
    'for c in sh top sleep echo cat ls id ping hostname pidof pgrep pkill ipcs ipcrm grep chmod touch brctl netstat dd mount mkdir; do command -v $c >/dev/null || echo missing $c; done; echo all present'
check "busybox: sh execs /bin/ls (MaskedPaths)" $E/busybox:1.29-2 "/bin/sh: ls: Permission denied" \
    'mount --bind /dev/null /bin/ls && /bin/sh -c ls'
check "busybox: pgrep and ipcs" $E/busybox:1.29-2 "Shared Memory" \
    'sleep 30 & i=0; until pgrep sleep >/dev/null; do i=$((i + 1)); [ $i -lt 10 ] || exit 1; sleep 1; done; ipcs -m'
check "busybox: users www-data and nobody" $E/busybox:1.29-2 "uid=65534(nobody)" \
    'id www-data && id nobody'
check "nginx: answers on :80" $E/nginx:1.14-2 "Welcome to nginx" \
    'nginx -g "daemon off;" & sleep 1; wget -qO- http://127.0.0.1:80/'
check "nginx: master process title" $E/nginx:1.14-2 "nginx: master process" \
    'nginx -g "daemon off;" & sleep 1; ps -o args'
check "hostnet nginx: answers on :12003" $G/hostnet-nginx-amd64:latest "Welcome to nginx" \
    'nginx -g "daemon off;" & sleep 1; wget -qO- http://127.0.0.1:12003/'
check "httpd: 'httpd' log line and HTTP 200 on :80" $E/httpd:2.4.39-4 "It works" \
    'PATH=/usr/local/apache2/bin:$PATH httpd-foreground & sleep 1; wget -qO- http://127.0.0.1:80/'
check "nonewprivs: setuid root works" $E/nonewprivs:1.3 "Effective uid: 0" nnp "${uid1000[@]}"
check "nonewprivs: not under no_new_privs" $E/nonewprivs:1.3 "Effective uid: 1000" nnp "${nnp1000[@]}"
check "predefined group: default-user in 50000" $G/test-image-predefined-group:latest \
    "50000(group-defined-in-image)" 'id default-user'
check "filecaps: ping carries cap_net_raw=ep" cri-lab/filecaps:latest "cap_net_raw=ep" \
    'getcap /usr/local/bin/ping'
check "filecaps: ping works as uid 1000" cri-lab/filecaps:latest "1 packets received" \
    'ping -c 1 127.0.0.1' "${uid1000[@]}"
check "filecaps: execve EPERM without NET_RAW" cri-lab/filecaps:latest "ermission denied" \
    'ping -c 1 127.0.0.1' "${no_raw[@]}"
check "bind80: uid 1000 cannot bind :80" cri-lab/bind80:latest "ermission denied" \
    'nc -l -p 80' "${uid1000[@]}"
check "filecaps-netadmin: ping and ip caps" cri-lab/filecaps-netadmin:latest \
    "/usr/local/bin/ping cap_net_admin,cap_net_raw=ep" 'getcap /usr/local/bin/ip /usr/local/bin/ping'
check "whiteout: /data and /opq" cri-lab/whiteout:latest "b link-to-b y" \
    'echo $(ls /data) $(ls /opq)'
for tag in 1.35.0-glibc 1 1-glibc 1-musl 1-uclibc; do
    check "bench busybox:$tag runs" public.ecr.aws/docker/library/busybox:$tag "variant $tag" \
        "echo variant \$(sed 's/.*://' /etc/capcri-test-image-variant)"
done

# pause has no shell: run it directly, stop it, look at the exit code.
root=$(rootfs registry.k8s.io/pause:3.9)
chroot "$root" /pause &
pause_pid=$!
sleep 0.3
kill -TERM "$pause_pid"
if wait "$pause_pid"; then
    passed=$((passed + 1))
    echo "ok    pause: exits 0 on SIGTERM"
else
    failed=$((failed + 1))
    echo "FAIL  pause: exit code $? after SIGTERM, expected 0"
fi

echo "verify: $passed passed, $failed failed"
[ "$failed" = 0 ]

#!/usr/bin/env python3
"""The images Kubernetes' Node Conformance tests pull, rebuilt here and pushed
to a local registry under their upstream repository paths, so capcri (with
`--registry-mirror registry.k8s.io=HOST:PORT`) resolves the tests' unchanged
names. The project's machines cannot reach registry.k8s.io.

  e2e-images.py --agnhost PATH --porter DIR --push HOST:PORT [--cache DIR]

PATH is agnhost built from the k8s.io/kubernetes module of the pinned release
(hack/kubelet/build.sh --e2e-node puts it next to the kubelet). Everything
else comes from tests/images/build.py's layers (Debian's busybox, nginx, the
C programs in tests/images/src, and hack/kubelet/images/nmeter.c for the
applet Debian's busybox lacks), so the blobs are as reproducible as those.

What differs from upstream (test/images/*/Dockerfile): the base is Debian's
busybox instead of Alpine, so agnhost's image lacks Alpine's bind-tools,
iperf and coredns (the DNS and network tests that call them are not Node
Conformance; it has Debian's curl, bash and OpenBSD netcat); kitten and nautilus are agnhost's
web server rather than their own pages; perl, etcd and the node-perf images
are not built (no Node Conformance test that runs by default uses them).
Each image's tag is the one test/utils/image/manifest.go names for v1.36.
"""
import argparse
import importlib.util
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
spec = importlib.util.spec_from_file_location("images", os.path.join(REPO, "tests", "images", "build.py"))
images = importlib.util.module_from_spec(spec)
spec.loader.exec_module(images)

E2E = "registry.k8s.io/e2e-test-images/"
PATH_ENV = images.PATH_ENV


def catalogue():
    """(refs, layers, config, form, purpose) of each image."""
    base = ["busybox", "tools"]
    shell = {"Env": [PATH_ENV], "Cmd": ["sh"]}
    nginx = {"Env": [PATH_ENV], "Cmd": ["nginx", "-g", "daemon off;"],
             "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGQUIT"}
    agnhost = {"Env": [PATH_ENV], "Entrypoint": ["/agnhost"], "Cmd": ["pause"],
               "ExposedPorts": {f"{p}/tcp": {} for p in (80, 8080, 8081, 9376, 5000)}}
    return [
        images.Image([E2E + "busybox:1.37.0-1"], base + ["nmeter"], shell, "docker-list",
                     "Node Conformance: most pods (sh, sleep, cat, ...)"),
        # predefined-group: uid 1000 in group 50000, as agnhost's Dockerfile adds.
        images.Image([E2E + "agnhost:2.63.0", E2E + "agnhost:2.55"],
                     base + ["nmeter", "agnhost-tools", "predefined-group", "agnhost"], agnhost,
                     "docker-list",
                     "Node Conformance: agnhost (netexec, mounttest, liveness, pause, ...)"),
        images.Image([E2E + "nginx:1.15-4", E2E + "nginx:1.27-0"], base + ["nginx"], nginx,
                     "docker-list", "Node Conformance: a web server on :80"),
        images.Image([E2E + "nonewprivs:1.4"], base + ["nnp"],
                     {"Env": [PATH_ENV], "Cmd": ["/usr/local/bin/nnp"]}, "docker-list",
                     "Node Conformance: setuid-root nnp prints 'Effective uid: N'"),
        images.Image([E2E + "nonroot:1.5"], base, dict(shell, User="1234"), "docker-list",
                     "Node Conformance: an image whose USER is 1234"),
        images.Image([E2E + "glibc-dns-testing:2.0.0"], base, shell, "docker-list",
                     "Node Conformance: a glibc userland (Debian's busybox is glibc-linked)"),
        images.Image([E2E + "ipc-utils:1.4"], base, shell, "docker-list",
                     "Node Conformance: ipcmk, ipcs, ipcrm (the tools layer)"),
        images.Image([E2E + "kitten:1.8", E2E + "nautilus:1.8"],
                     base + ["predefined-group", "agnhost"], dict(agnhost, Cmd=["test-webserver"]),
                     "docker-list", "Node Conformance: images pulled by name; agnhost's web server"),
        images.Image(["registry.k8s.io/pause:3.10.2"], ["pause"],
                     {"Env": [PATH_ENV], "Entrypoint": ["/pause"], "User": "65535:65535",
                      "WorkingDir": "/"}, "oci-index", "the release's pause image"),
    ]


def compile_c(path):
    """A C program of hack/kubelet/images linked statically, as build.py
    compiles tests/images/src (same gcc, same flags, stripped)."""
    with tempfile.TemporaryDirectory(prefix="capcri-e2e-images-cc.") as tmp:
        shutil.copy(path, os.path.join(tmp, "prog.c"))
        images.sh("gcc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror",
                  "-o", "prog", "prog.c", cwd=tmp)
        with open(os.path.join(tmp, "prog"), "rb") as f:
            return f.read()


def extra_layers(src, layers):
    """What the upstream images have and tests/images' layers lack."""
    # busybox's nmeter (Debian builds busybox without it): the restartable
    # init container tests (agnhost and busybox pods) time-stamp their logs
    # with `nmeter '%3t'`.
    nm = images.Layer("nmeter", "hack/kubelet/images/nmeter.c as /usr/local/bin/nmeter")
    nm.file("usr/local/bin/nmeter", compile_c(os.path.join(HERE, "images", "nmeter.c")), 0o755)
    layers["nmeter"] = nm
    # curl and bash (Debian's, with their libraries), as agnhost's Alpine
    # base has them: the lifecycle hook and networking tests curl other
    # pods, the probe tests run /bin/bash.
    agn = images.Layer("agnhost-tools", "curl and bash (Debian) and the libraries the busybox layers lack")
    for path in ("/usr/bin/curl", "/bin/bash"):
        images.add_installed(agn, src, path, lower=[layers["busybox"], layers["tools"]])
    # netcat-openbsd, as Alpine's: the UDP networking tests run `nc -u`,
    # which busybox's nc lacks. /usr/local/bin comes first in PATH.
    data, host_path = src.downloaded("netcat-openbsd", "/bin/nc.openbsd")
    agn.file("usr/local/bin/nc", data, 0o755)
    agn.packages.add("netcat-openbsd")
    images.add_libraries(agn, src, host_path, "netcat-openbsd", lower=[layers["busybox"], layers["tools"]])
    layers["agnhost-tools"] = agn


def agnhost_layer(path, porter):
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"\x7fELF"):
        images.fail(f"{path} is not an ELF executable (build it with hack/kubelet/build.sh --e2e-node)")
    layer = images.Layer("agnhost", f"agnhost of k8s.io/kubernetes ({len(data)} bytes), /uploads")
    layer.file("agnhost", data, 0o755)
    layer.symlink("agnhost-2", "agnhost")
    layer.dir("uploads", 0o777)
    # The TLS pair agnhost's Dockerfile adds (porter/localhost.{crt,key}):
    # the https lifecycle hook tests serve with it.
    for name in ("localhost.crt", "localhost.key"):
        with open(os.path.join(porter, name), "rb") as f:
            layer.file(name, f.read(), 0o644)
    return layer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agnhost", required=True, metavar="PATH")
    ap.add_argument("--porter", required=True, metavar="DIR",
                    help="test/images/agnhost/porter of the same k8s.io/kubernetes module")
    ap.add_argument("--push", required=True, metavar="HOST:PORT")
    ap.add_argument("--cache", metavar="DIR", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "capcri-test-images"))
    a = ap.parse_args()

    src = images.Sources(os.path.abspath(a.cache))
    missing = src.check()
    if missing:
        images.fail("missing build inputs (see tests/images/build.py --check): " +
                    ", ".join(p for p, _ in missing), 2)
    layers = images.build_layers(src)
    layers["agnhost"] = agnhost_layer(a.agnhost, a.porter)
    extra_layers(src, layers)
    goarch = images.goarch_of(src.arch)
    blobs = images.Blobs()
    pusher = images.Pusher(a.push)
    for img in catalogue():
        stack = [layers[n] for n in img.layers]
        pkgs = sorted(set().union(*(l.packages for l in stack)))
        top, _ = images.assemble(blobs, img, stack, goarch, {p: src.used[p] for p in pkgs})
        for ref in img.refs:
            pusher.image(blobs, ref, top)
    print(f"e2e-images: pushed to {a.push}: {pusher.uploaded} blobs uploaded, "
          f"{pusher.mounted} mounted, {pusher.present} already there")


if __name__ == "__main__":
    sys.exit(main())

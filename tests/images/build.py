#!/usr/bin/env python3
"""capcri's test images: every image the tests, critest v1.36.0 and the e2e
scenarios pull, built from Debian 12 packages and the C sources in src/.

  build.py --out DIR [--push HOST:PORT]   build into the OCI layout DIR, then push
  build.py --check                        only check the build inputs
  build.py --list                         print the catalogue

The images keep their upstream repository paths (registry.k8s.io/pause:3.9 is
pushed as HOST:PORT/pause:3.9) so a runtime with a registry mirror resolves
critest's unchanged names; capcri's own images are cri-lab/*. Same inputs (the
Debian package versions, gcc, Python's zlib) give byte-identical blobs: every
mtime is EPOCH, owners are explicit, entries are sorted, gzip carries no time
and JSON is canonical. Python 3 standard library only; see README.md here.

Sections: 1 inputs, 2 layer building, 3 image catalogue, 4 manifests and the
OCI layout writer, 5 registry push, 6 command line.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
EPOCH = 1704067200  # 2024-01-01T00:00:00Z, the mtime of every file and the "created" of every image
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def fail(msg, code=1):
    print(f"tests/images/build.py: {msg}", file=sys.stderr)
    sys.exit(code)


def sh(*cmd, cwd=None):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r.stdout


# ===========================================================================
# 1. Inputs: files of installed Debian packages, three downloaded .debs, and
#    the C sources of src/ compiled statically.
# ===========================================================================

# Installed on the build host (hack/test.sh installs them). The tools are
# copied into the images with the shared libraries ldd names.
HOST_PACKAGES = {
    "gcc": "compiles src/*.c",
    "libc6-dev": "static glibc for src/*.c",
    "procps": "pgrep/pkill (critest runs 'pgrep'; Debian's busybox has none)",
    "util-linux": "ipcs/ipcrm/ipcmk (critest runs 'ipcs'; Debian's busybox has none)",
    "libcap2-bin": "getcap/setcap/capsh, to look at file capabilities in a container",
    "libssl3": "a library of nginx",
    "libpcre2-8-0": "a library of nginx",
    "zlib1g": "a library of nginx",
    "libcrypt1": "a library of nginx",
}
# Downloaded with `apt-get download`, never installed: busybox conflicts with
# busybox-static, and nginx's postinst would start a web server on the host.
#  - busybox (dynamic, glibc): the shell and applets of every image. Not
#    busybox-static as the shell: that build has FEATURE_SH_STANDALONE and
#    FEATURE_PREFER_APPLETS, so `sh -c ls` runs the built-in ls instead of
#    exec'ing /bin/ls (critest's MaskedPaths spec masks /bin/ls and expects
#    "Permission denied"), and `sh -c ping` would bypass a file-capability ping.
#  - busybox-static: the copies that carry file capabilities (a static binary
#    needs nothing else) and the static benchmark variants. It has `su`, which
#    e2e/scenarios/04-su-audit-write.yaml calls through /usr/local/bin/ping.
#  - nginx: the web server images.
DOWNLOADED = ("busybox", "busybox-static", "nginx")


class Sources:
    """Reads build inputs and records every Debian package used, with its
    version, so each image can name its sources in a label."""

    def __init__(self, cache):
        self.cache = cache
        self.arch = sh("dpkg", "--print-architecture").strip()
        self.used = {}  # package -> version
        self.roots = {}  # downloaded package -> extracted directory
        self._owners = {}

    def check(self):
        """[(package, why)] of the host packages that are missing."""
        missing = []
        for pkg, why in HOST_PACKAGES.items():
            r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                               capture_output=True, text=True)
            if "install ok installed" not in r.stdout:
                missing.append((pkg, why))
        for tool, pkg in (("apt-get", "apt"), ("dpkg-deb", "dpkg"), ("ldd", "libc-bin")):
            if shutil.which(tool) is None:
                missing.append((pkg, f"the {tool} command"))
        return missing

    # -- installed files ----------------------------------------------------

    def owner(self, path):
        """The installed package shipping path. Debian 12 is /usr-merged, so
        /lib/x is also looked up as /usr/lib/x and the other way round."""
        if path not in self._owners:
            spellings = [path, path[4:] if path.startswith("/usr/") else "/usr" + path]
            self._owners[path] = None
            for p in spellings:
                r = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True)
                for line in r.stdout.splitlines():
                    pkgs, _, shipped = line.partition(": ")
                    if shipped == p and not pkgs.startswith("diversion"):
                        self._owners[path] = pkgs.split(",")[0].strip()
                        break
                if self._owners[path]:
                    break
        return self._owners[path]

    def installed(self, path):
        """(bytes, mode) of a file an installed Debian package ships."""
        pkg = self.owner(path)
        if pkg is None:
            fail(f"{path} belongs to no installed Debian package; the images contain only "
                 "Debian files (install the package that ships it)", 2)
        self.used[pkg.split(":")[0]] = sh("dpkg-query", "-W", "-f=${Version}", pkg).strip()
        real = os.path.realpath(path)
        with open(real, "rb") as f:
            return f.read(), os.stat(real).st_mode & 0o7777

    # -- downloaded packages ------------------------------------------------

    def download(self, pkg):
        """The directory holding the extracted files of pkg's candidate
        version; the .deb and the tree are kept in the cache."""
        if pkg in self.roots:
            return self.roots[pkg]
        debs = os.path.join(self.cache, "debs")
        os.makedirs(debs, exist_ok=True)
        policy = sh("apt-cache", "policy", pkg)
        m = re.search(r"Candidate:\s*(\S+)", policy)
        if not m or m.group(1) == "(none)":
            fail(f"apt knows no candidate for {pkg}: run 'apt-get update' once (or put "
                 f"{pkg}_*_{self.arch}.deb into {debs})", 2)
        version = m.group(1)
        deb = os.path.join(debs, f"{pkg}_{version.replace(':', '%3a')}_{self.arch}.deb")
        if not os.path.exists(deb):
            print(f"  apt-get download {pkg}={version} -> {debs}")
            r = subprocess.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
                                f"{pkg}={version}"], cwd=debs, capture_output=True, text=True)
            if r.returncode != 0 or not os.path.exists(deb):
                fail(f"apt-get download {pkg}={version} failed:\n{r.stdout}{r.stderr}", 2)
        root = os.path.join(self.cache, "root", os.path.basename(deb)[:-4])
        if not os.path.isdir(root):
            os.makedirs(os.path.dirname(root), exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=".extract.", dir=os.path.dirname(root))
            sh("dpkg-deb", "-x", deb, tmp)
            os.replace(tmp, root)
        self.used[pkg] = version
        self.roots[pkg] = root
        return root

    def downloaded(self, pkg, path):
        """(bytes, host path) of a file of a downloaded package."""
        host_path = os.path.join(self.download(pkg), path.lstrip("/"))
        with open(host_path, "rb") as f:
            return f.read(), host_path

    # -- shared libraries and compiled helpers ------------------------------

    def libraries(self, exe, needed_by):
        """[(path in image, bytes, mode)] of the shared libraries and the ELF
        interpreter exe needs, read from the installed packages at the paths
        ldd prints (the same paths the loader uses in the image)."""
        r = subprocess.run(["ldd", exe], capture_output=True, text=True)
        if "not a dynamic executable" in r.stdout + r.stderr:
            return []
        if r.returncode != 0:
            fail(f"ldd {exe}: {r.stderr.strip()}")
        paths, missing = set(), []
        for line in r.stdout.splitlines():
            m = re.match(r"\s*(\S+) => (\S+)", line)
            if m and m.group(2) == "not":
                missing.append(m.group(1))
            elif m:
                paths.add(m.group(2))
            elif line.strip().startswith("/"):
                paths.add(line.split()[0])
        if missing:
            fail(f"{needed_by} needs {', '.join(missing)}, not installed on this host; install "
                 f"the package providing it (see HOST_PACKAGES in {__file__})", 2)
        out = []
        for p in sorted(paths):
            data, mode = self.installed(p)
            out.append((p, data, mode))
        return out

    def compile(self, name):
        """src/<name>.c linked statically; same gcc and libc6-dev, same bytes
        (built in a scratch dir under a fixed name, stripped)."""
        with tempfile.TemporaryDirectory(prefix="capcri-images-cc.") as tmp:
            shutil.copy(os.path.join(HERE, "src", name + ".c"), os.path.join(tmp, "prog.c"))
            sh("gcc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror",
               "-o", "prog", "prog.c", cwd=tmp)
            with open(os.path.join(tmp, "prog"), "rb") as f:
                data = f.read()
        gcc = "gcc-" + sh("gcc", "-dumpversion").strip().split(".")[0]
        for pkg in ("libc6-dev", gcc):
            r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                               capture_output=True, text=True)
            if r.returncode == 0:
                self.used[pkg] = r.stdout.strip()
        return data


# ===========================================================================
# 2. Layer building: an in-memory tree per layer, written as a sorted PAX tar
#    with fixed metadata, gzip'ed without a timestamp.
# ===========================================================================

CAP_NAMES = ("chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap "
             "linux_immutable net_bind_service net_broadcast net_admin net_raw ipc_lock "
             "ipc_owner sys_module sys_rawio sys_chroot sys_ptrace sys_pacct sys_admin sys_boot "
             "sys_nice sys_resource sys_time sys_tty_config mknod lease audit_write "
             "audit_control setfcap mac_override mac_admin syslog wake_alarm block_suspend "
             "audit_read perfmon bpf checkpoint_restore").split()


def file_capability(names):
    """The security.capability xattr `setcap <names>+ep` writes: struct
    vfs_cap_data revision 2 (include/uapi/linux/capability.h), little endian,
    magic | VFS_CAP_FLAGS_EFFECTIVE, then permitted/inheritable low and high
    words; no root uid (that is revision 3, for user namespaces)."""
    permitted = 0
    for n in names:
        permitted |= 1 << CAP_NAMES.index(n.lower().removeprefix("cap_"))
    words = (0x02000000 | 1, permitted & 0xFFFFFFFF, 0, permitted >> 32, 0)
    return b"".join(w.to_bytes(4, "little") for w in words)


@dataclass
class Entry:
    kind: str  # dir | file | symlink
    mode: int
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    target: str = ""  # symlink target
    xattrs: dict = field(default_factory=dict)
    inode: object = None  # entries sharing an inode are hard links


class Layer:
    def __init__(self, name, created_by):
        self.name, self.created_by = name, created_by
        self.entries = {}
        self.packages = set()
        self._blob = None

    def _parents(self, path):
        parts = path.split("/")
        for i in range(1, len(parts)):
            self.entries.setdefault("/".join(parts[:i]), Entry("dir", 0o755))

    def dir(self, path, mode=0o755, uid=0, gid=0):
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = Entry("dir", mode, uid, gid)

    def file(self, path, data, mode=0o644, uid=0, gid=0, xattrs=None):
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = Entry("file", mode, uid, gid, data.encode()
                                   if isinstance(data, str) else data,
                                   xattrs=dict(xattrs or {}), inode=object())

    def hardlink(self, path, existing):
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = self.entries[existing.strip("/")]

    def symlink(self, path, target):
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = Entry("symlink", 0o777, target=target)

    def whiteout(self, path):
        """Deletes path of a lower layer (OCI image spec, layer.md)."""
        d, _, base = path.strip("/").rpartition("/")
        self.file(f"{d}/.wh.{base}" if d else f".wh.{base}", b"")

    def opaque(self, path):
        """Hides everything lower layers have under path."""
        self.dir(path)
        self.file(path.strip("/") + "/.wh..wh..opq", b"")

    def has(self, path, data):
        e = self.entries.get(path.strip("/"))
        return e is not None and e.data == data

    def blob(self):
        """(gzip bytes, diff_id). Entries in path-component order (a parent
        before its children); the first path of an inode carries the data,
        later ones are hard links to it."""
        if self._blob is None:
            raw = io.BytesIO()
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT,
                              encoding="utf-8", errors="surrogateescape") as tar:
                first = {}
                for path in sorted(self.entries, key=lambda p: p.split("/")):
                    e = self.entries[path]
                    ti = tarfile.TarInfo(path + "/" if e.kind == "dir" else path)
                    ti.mtime, ti.mode, ti.uid, ti.gid = EPOCH, e.mode, e.uid, e.gid
                    ti.uname = ti.gname = ""
                    body = None
                    if e.kind == "dir":
                        ti.type = tarfile.DIRTYPE
                    elif e.kind == "symlink":
                        ti.type, ti.linkname = tarfile.SYMTYPE, e.target
                    elif id(e.inode) in first:
                        ti.type, ti.linkname = tarfile.LNKTYPE, first[id(e.inode)]
                    else:
                        first[id(e.inode)] = path
                        ti.type, ti.size, body = tarfile.REGTYPE, len(e.data), io.BytesIO(e.data)
                        # file capabilities travel as PAX xattr records, like GNU tar --xattrs
                        ti.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
                                          for k, v in sorted(e.xattrs.items())}
                    tar.addfile(ti, body)
            tar_bytes = raw.getvalue()
            gz = io.BytesIO()
            with gzip.GzipFile(fileobj=gz, mode="wb", compresslevel=9, mtime=0) as g:
                g.write(tar_bytes)
            self._blob = (gz.getvalue(), digest(tar_bytes))
        return self._blob


PASSWD = [("root", 0, 0, "/root", "/bin/sh"), ("daemon", 1, 1, "/usr/sbin", "/bin/false"),
          ("bin", 2, 2, "/bin", "/bin/false"), ("sys", 3, 3, "/dev", "/bin/false"),
          ("sync", 4, 65534, "/bin", "/bin/sync"), ("mail", 8, 8, "/var/mail", "/bin/false"),
          ("www-data", 33, 33, "/var/www", "/bin/false"),
          ("nobody", 65534, 65534, "/nonexistent", "/bin/false")]
GROUPS = [("root", 0, ""), ("daemon", 1, ""), ("bin", 2, ""), ("sys", 3, ""), ("adm", 4, ""),
          ("tty", 5, ""), ("disk", 6, ""), ("lp", 7, ""), ("mail", 8, ""), ("kmem", 9, ""),
          ("wheel", 10, "root"), ("dialout", 20, ""), ("cdrom", 24, ""), ("audio", 29, ""),
          ("www-data", 33, ""), ("shadow", 42, ""), ("utmp", 43, ""), ("video", 44, ""),
          ("plugdev", 46, ""), ("staff", 50, ""), ("users", 100, ""), ("nogroup", 65534, "")]


def user_files(layer, users=(), groups=()):
    """/etc/passwd, group and shadow: the base accounts plus extra ones."""
    us, gs = PASSWD + list(users), GROUPS + list(groups)
    layer.file("etc/passwd", "".join(f"{n}:x:{u}:{g}:{n}:{h}:{s}\n" for n, u, g, h, s in us))
    layer.file("etc/group", "".join(f"{n}:x:{g}:{m}\n" for n, g, m in gs))
    layer.file("etc/shadow", "".join(f"{u[0]}:*:19723:0:99999:7:::\n" for u in us), 0o640, 0, 42)


def busybox_root(layer, src, static):
    """A root like docker-library's busybox image: /bin/busybox plus one hard
    link per applet in /bin, the accounts, /tmp 1777."""
    pkg = "busybox-static" if static else "busybox"
    data, host_path = src.downloaded(pkg, "/bin/busybox")
    for d in ("bin", "dev", "etc", "home", "usr/bin", "usr/sbin", "usr/local/bin", "var/www",
              "var/mail"):
        layer.dir(d)
    layer.dir("root", 0o700)
    layer.dir("tmp", 0o1777)
    layer.file("bin/busybox", data, 0o755)
    for applet in sorted(set(sh(host_path, "--list").split()) - {"busybox"}):
        layer.hardlink("bin/" + applet, "bin/busybox")
    layer.packages.add(pkg)
    add_libraries(layer, src, host_path, pkg)
    user_files(layer)
    layer.file("etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\n"
               "hosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n")


def add_libraries(layer, src, exe, needed_by, lower=()):
    for path, data, mode in src.libraries(exe, needed_by):
        if not any(low.has(path, data) for low in lower):
            layer.file(path, data, mode)
            layer.packages.add(src.owner(path).split(":")[0])


def add_installed(layer, src, path, image_path=None, lower=()):
    """A Debian executable at its path (or image_path) and its libraries."""
    data, mode = src.installed(path)
    layer.file(image_path or path, data, mode)
    layer.packages.add(src.owner(path).split(":")[0])
    add_libraries(layer, src, path, path, lower)


NGINX_CONF = """# capcri test images: Debian's nginx, set up like the official nginx image
user  nginx;
worker_processes  1;
error_log  /var/log/nginx/error.log notice;
pid        /var/run/nginx.pid;
events {
    worker_connections  1024;
}
http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;
    access_log    /var/log/nginx/access.log;
    sendfile      on;
    keepalive_timeout  65;
    include /etc/nginx/conf.d/*.conf;
}
"""
NGINX_SITE = """server {
    listen       %d;
    server_name  localhost;
    location / {
        root   /usr/share/nginx/html;
        index  index.html;
    }
}
"""
BENCH_TAGS = ("1.35.0-glibc", "1-uclibc", "1", "1-glibc", "1-musl")
MARKER_FILES = ("test-image-1", "test-image-2", "test-image-3", "test-image-latest",
                "test-image-digest", "same-image", "test", "all")


def build_layers(src):
    """Every layer, by name. The catalogue (section 3) stacks them."""
    L = {}

    def layer(name, created_by):
        L[name] = Layer(name, created_by)
        return L[name]

    busybox_root(layer("busybox", "busybox (Debian, glibc): /bin/busybox, applets as hard "
                       "links, accounts"), src, static=False)

    tools = layer("tools", "pgrep/pkill, ipcs/ipcrm/ipcmk, getcap/setcap/capsh (Debian) and "
                  "the libraries the busybox layer lacks")
    for path, image_path in (("/usr/bin/pgrep", None), ("/usr/bin/ipcs", None),
                             ("/usr/bin/ipcrm", None), ("/usr/bin/ipcmk", None),
                             ("/usr/sbin/getcap", None), ("/usr/sbin/setcap", None),
                             ("/usr/sbin/capsh", None)):
        add_installed(tools, src, path, image_path, lower=[L["busybox"]])
    tools.symlink("usr/bin/pkill", "pgrep")

    ng = layer("nginx", "nginx (Debian) and its libraries; listen 80, logs to stdout/stderr")
    data, host_path = src.downloaded("nginx", "/usr/sbin/nginx")
    ng.file("usr/sbin/nginx", data, 0o755)
    ng.packages.add("nginx")
    add_libraries(ng, src, host_path, "nginx", lower=[L["busybox"], tools])
    ng.file("etc/nginx/nginx.conf", NGINX_CONF)
    ng.file("etc/nginx/mime.types", "types {\n    text/html html htm;\n    text/plain txt;\n"
            "    application/json json;\n}\n")
    ng.file("etc/nginx/conf.d/default.conf", NGINX_SITE % 80)
    ng.file("usr/share/nginx/html/index.html",
            "<!DOCTYPE html>\n<html><body><h1>Welcome to nginx!</h1></body></html>\n")
    # Debian's nginx opens these compiled-in paths before reading its config
    ng.symlink("var/log/nginx/access.log", "/dev/stdout")
    ng.symlink("var/log/nginx/error.log", "/dev/stderr")
    ng.dir("var/lib/nginx")
    ng.dir("run")
    ng.symlink("var/run", "/run")
    user_files(ng, [("nginx", 101, 101, "/nonexistent", "/bin/false")], [("nginx", 101, "")])

    layer("hostnet-conf", "nginx listens on 12003 (critest's host-network port-forward)").file(
        "etc/nginx/conf.d/default.conf", NGINX_SITE % 12003)

    hd = layer("httpd", "busybox httpd on :80, standing in for Apache httpd")
    hd.file("usr/local/apache2/htdocs/index.html", "<html><body><h1>It works!</h1></body></html>\n")
    hd.dir("usr/local/apache2/logs")
    # critest's Multiple Containers spec wants HTTP 200 on :80 and "httpd" in the log
    hd.file("usr/local/bin/httpd-foreground",
            "#!/bin/sh\necho \"httpd: busybox httpd serving /usr/local/apache2/htdocs on :80\" >&2\n"
            "exec httpd -f -v -p 80 -h /usr/local/apache2/htdocs\n", 0o755)

    nnp = layer("nnp", "src/euid.c as /usr/local/bin/nnp, setuid root")
    nnp.file("usr/local/bin/nnp", src.compile("euid"), 0o4755)
    nnp.packages.update(["libc6-dev"])

    pause = layer("pause", "src/pause.c as /pause")
    pause.file("pause", src.compile("pause"), 0o755)
    pause.packages.update(["libc6-dev"])

    pg = layer("predefined-group", "user default-user (1000) in group group-defined-in-image (50000)")
    user_files(pg, [("default-user", 1000, 1000, "/home/default-user", "/bin/sh")],
               [("default-user", 1000, ""), ("group-defined-in-image", 50000, "default-user")])
    pg.dir("home/default-user", 0o755, 1000, 1000)

    for name in MARKER_FILES:  # images that differ by one empty file, as upstream's
        layer("marker:" + name, f"ADD {name} /{name}").file(name, b"")

    static_busybox, _ = src.downloaded("busybox-static", "/bin/busybox")
    fc = layer("filecaps", "busybox-static as /usr/local/bin/ping, cap_net_raw+ep")
    fc.file("usr/local/bin/ping", static_busybox, 0o755,
            xattrs={"security.capability": file_capability(["net_raw"])})
    fc.packages.add("busybox-static")
    na = layer("filecaps-netadmin", "busybox-static as /usr/local/bin/ping "
               "(cap_net_admin,cap_net_raw+ep) and /usr/local/bin/ip (cap_net_admin+ep)")
    na.file("usr/local/bin/ping", static_busybox, 0o755,
            xattrs={"security.capability": file_capability(["net_admin", "net_raw"])})
    na.file("usr/local/bin/ip", static_busybox, 0o755,
            xattrs={"security.capability": file_capability(["net_admin"])})
    na.packages.add("busybox-static")

    w1 = layer("whiteout-lower", "/data/{a,b,link-to-b,dir/f}, /opq/{x,sub/z}")
    for p in ("data/a", "data/b", "data/dir/f", "opq/x", "opq/sub/z"):
        w1.file(p, p.rsplit("/", 1)[1] + "\n")
    w1.symlink("data/link-to-b", "b")
    w2 = layer("whiteout-upper", "whiteout /data/a and /data/dir, /opq opaque, add /opq/y")
    w2.whiteout("data/a")
    w2.whiteout("data/dir")
    w2.opaque("opq")
    w2.file("opq/y", "y\n")
    w2.file("etc/testimages-expect",  # tests/image_pull.rs prints it
            "/data: b link-to-b (a and dir whited out)\n/opq: y (opaque: x and sub hidden)\n")

    for tag in BENCH_TAGS:  # critest -benchmark: five distinct single-layer images
        static = tag.endswith(("musl", "uclibc"))  # upstream's are static there too
        b = layer("bench:" + tag, f"busybox{'-static' if static else ''} root, variant {tag}")
        busybox_root(b, src, static)
        b.file("etc/capcri-test-image-variant", f"public.ecr.aws/docker/library/busybox:{tag}\n")
    return L


# ===========================================================================
# 3. Image catalogue: references, layers, config, registry format, purpose.
#    Formats are upstream's, so pulls meet Docker lists, single Docker
#    manifests, OCI indexes with attestations, and single OCI manifests.
# ===========================================================================

@dataclass
class Image:
    refs: list
    layers: list
    config: dict
    form: str  # docker-list | docker-manifest | oci-index | oci-index+attestation | oci-manifest
    purpose: str


def catalogue(goarch):
    E2E, G = "registry.k8s.io/e2e-test-images/", "gcr.io/k8s-staging-cri-tools/"
    base = ["busybox", "tools"]
    shell = {"Env": [PATH_ENV], "Cmd": ["sh"]}
    nginx = {"Env": [PATH_ENV], "Cmd": ["nginx", "-g", "daemon off;"],
             "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGQUIT"}
    pause = {"Env": [PATH_ENV], "Entrypoint": ["/pause"], "User": "65535:65535",
             "WorkingDir": "/"}
    as_user = lambda user: dict(shell, User=user)
    c = [
        Image([E2E + "busybox:1.29-2"], base, shell, "docker-list",
              "critest's default container image; most capcri tests"),
        Image([E2E + "nginx:1.14-2"], base + ["nginx"], nginx, "docker-list",
              "critest web server: networking, port-forward, PID namespace specs"),
        Image([E2E + "httpd:2.4.39-4"], base + ["httpd"],
              {"Env": ["PATH=/usr/local/apache2/bin:" + PATH_ENV[5:],
                       "HTTPD_PREFIX=/usr/local/apache2"], "Cmd": ["httpd-foreground"],
               "WorkingDir": "/usr/local/apache2", "ExposedPorts": {"80/tcp": {}}},
              "docker-list", "critest Multiple Containers: HTTP 200 on :80, 'httpd' in the log"),
        Image([E2E + "nonewprivs:1.3"], base + ["nnp"],
              {"Env": [PATH_ENV], "Entrypoint": ["/usr/local/bin/nnp"]}, "docker-list",
              "critest NoNewPrivs: setuid-root nnp prints 'Effective uid: N'"),
        Image(["registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"], ["pause"], pause,
              "docker-list", "sandbox image; critest Image ID consistency runs /pause"),
        Image(["registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10.1"], ["pause"], pause,
              "oci-index", "same image ID as pause:3.9, as an OCI index (newer default tags)"),
    ]
    for name, user in (("test-image-user-uid", "1002"), ("test-image-user-username", "www-data"),
                       ("test-image-user-uid-group", "1003:1004"),
                       ("test-image-user-username-group", "www-data:1004")):
        c.append(Image([G + name + ":latest"], base, as_user(user), "docker-list",
                       f"critest Image Manager: image USER {user}"))
    c += [
        Image([G + "test-image-predefined-group:latest"], base + ["predefined-group"],
              as_user("1000"), "docker-list",
              "SupplementalGroupsPolicy: uid 1000 in the image's group 50000"),
        Image([G + f"hostnet-nginx-{goarch}:latest"], base + ["nginx", "hostnet-conf"], nginx,
              "docker-manifest", "critest port-forward in a host-network pod (nginx on 12003)"),
    ]
    for name in ("test-image-1", "test-image-2", "test-image-3", "test-image-latest",
                 "test-image-digest"):
        c.append(Image([G + name + ":latest"], base + ["marker:" + name], shell, "docker-list",
                       "critest Image Manager (test-image-digest: only so the repository "
                       "exists; critest pins an upstream digest nobody can rebuild)"))
    c += [
        Image([G + f"test-image-tags:{t}" for t in (1, 2, 3)], base + ["marker:same-image"],
              shell, "docker-list", "one image under three tags"),
        Image([G + "test-image-tag:test"], base + ["marker:test"], shell, "docker-list",
              "pull by tag; Image (ID) consistency runs its CMD"),
        Image([G + "test-image-tag:all"], base + ["marker:all"], shell, "docker-list",
              "ImageStatus by every kind of reference"),
    ]
    for tag in BENCH_TAGS:
        c.append(Image(["public.ecr.aws/docker/library/busybox:" + tag], ["bench:" + tag], shell,
                       "oci-index+attestation", "critest -benchmark default images"))
    filecaps_cfg = {"Env": [PATH_ENV], "Cmd": ["ping", "-c", "1", "127.0.0.1"], "User": "1000"}
    c += [
        Image(["docker.io/library/busybox:latest", "docker.io/library/busybox:1"], base, shell,
              "oci-index+attestation", "'crictl pull busybox' through a docker.io mirror"),
        Image(["cri-lab/busybox:latest"], base, shell, "oci-manifest",
              "plain busybox as a single OCI manifest"),
        Image(["cri-lab/filecaps:latest"], base + ["filecaps"], filecaps_cfg, "oci-manifest",
              "uid 1000; ping = cap_net_raw+ep: works while NET_RAW is in the bounding set, "
              "execve EPERM once it is dropped"),
        Image(["cri-lab/filecaps-netadmin:latest"], base + ["filecaps-netadmin"], filecaps_cfg,
              "oci-manifest", "uid 1000; ping = cap_net_admin,cap_net_raw+ep, ip = "
              "cap_net_admin+ep: execve EPERM unless NET_ADMIN is in the bounding set"),
        Image(["cri-lab/bind80:latest"], base,
              {"Env": [PATH_ENV], "Cmd": ["nc", "-ll", "-p", "80", "-e", "echo", "hello from :80"],
               "User": "1000", "ExposedPorts": {"80/tcp": {}}}, "oci-manifest",
              "uid 1000 binding :80 with plain nc: needs NET_BIND_SERVICE in the ambient set"),
        Image(["cri-lab/whiteout:latest"], base + ["whiteout-lower", "whiteout-upper"], shell,
              "oci-manifest", "whiteouts and an opaque directory"),
    ]
    return c


def split_ref(ref):
    """'registry.k8s.io/pause:3.9' -> ('pause', '3.9'): the registry path
    drops the upstream host; 'cri-lab/busybox:latest' has none."""
    name, _, tag = ref.rpartition(":")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        name = rest
    return name, tag


# ===========================================================================
# 4. Manifests and the OCI layout writer
# ===========================================================================

MEDIA = {
    "oci": {"manifest": "application/vnd.oci.image.manifest.v1+json",
            "index": "application/vnd.oci.image.index.v1+json",
            "config": "application/vnd.oci.image.config.v1+json",
            "layer": "application/vnd.oci.image.layer.v1.tar+gzip"},
    "docker": {"manifest": "application/vnd.docker.distribution.manifest.v2+json",
               "index": "application/vnd.docker.distribution.manifest.list.v2+json",
               "config": "application/vnd.docker.container.image.v1+json",
               "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip"},
}


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Blobs:
    """Content-addressed store; a descriptor's children are listed so push
    and layout writing can walk an image from its top."""

    def __init__(self):
        self.data, self.children = {}, {}

    def add(self, media_type, data, children=(), **extra):
        d = digest(data)
        self.data[d] = data
        self.children[d] = list(children)
        return dict({"mediaType": media_type, "digest": d, "size": len(data)}, **extra)

    def walk(self, desc):
        """Descriptors below desc, children before parents."""
        out = []
        for child in self.children[desc["digest"]]:
            out += self.walk(child) + [child]
        return out


def image_manifest(blobs, fmt, config_bytes, layers):
    m = MEDIA[fmt]
    cfg = blobs.add(m["config"], config_bytes)
    lays = [blobs.add(m["layer"], l.blob()[0]) for l in layers]
    body = {"schemaVersion": 2, "mediaType": m["manifest"], "config": cfg, "layers": lays}
    return blobs.add(m["manifest"], canonical(body), [cfg] + lays)


def attestation(blobs, subject, packages):
    """A buildx-style attestation manifest (platform unknown/unknown): a
    runtime must skip it when it picks the image for its platform."""
    statement = canonical({
        "_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://spdx.dev/Document",
        "subject": [{"name": "capcri-test-image", "digest": {"sha256": subject["digest"][7:]}}],
        "predicate": {"spdxVersion": "SPDX-2.3", "name": "capcri-test-image",
                      "packages": [{"name": p, "versionInfo": v} for p, v in packages.items()]}})
    cfg = blobs.add(MEDIA["oci"]["config"], canonical({
        "architecture": "unknown", "os": "unknown", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest(statement)]}}))
    lay = blobs.add("application/vnd.in-toto+json", statement,
                    annotations={"in-toto.io/predicate-type": "https://spdx.dev/Document"})
    body = canonical({"schemaVersion": 2, "mediaType": MEDIA["oci"]["manifest"], "config": cfg,
                      "layers": [lay]})
    return blobs.add(MEDIA["oci"]["manifest"], body, [cfg, lay],
                     annotations={"vnd.docker.reference.digest": subject["digest"],
                                  "vnd.docker.reference.type": "attestation-manifest"},
                     platform={"architecture": "unknown", "os": "unknown"})


def assemble(blobs, img, layers, goarch, packages):
    """(registry descriptor, layout descriptor) of one image. The layout gets
    OCI media types (skopeo and umoci read no Docker types there) around the
    same config and layer bytes, so the image ID is the same in both."""
    config = canonical({
        "architecture": goarch, "os": "linux", "created": CREATED,
        "config": dict(img.config, Labels={
            "org.opencontainers.image.description": img.purpose,
            "org.capcri.test-images.debian-packages":
                " ".join(f"{p}={v}" for p, v in packages.items())}),
        "rootfs": {"type": "layers", "diff_ids": [l.blob()[1] for l in layers]},
        "history": [{"created": CREATED, "created_by": l.created_by} for l in layers]})
    tops = []
    for fmt in (("docker" if img.form.startswith("docker") else "oci"), "oci"):
        man = image_manifest(blobs, fmt, config, layers)
        if img.form == "docker-manifest" or img.form == "oci-manifest":
            tops.append(man)
            continue
        entries = [dict(man, platform={"architecture": goarch, "os": "linux"})]
        if img.form == "oci-index+attestation":
            entries.append(attestation(blobs, man, packages))
        idx = {"schemaVersion": 2, "mediaType": MEDIA[fmt]["index"], "manifests": entries}
        tops.append(blobs.add(MEDIA[fmt]["index"], canonical(idx), entries))
    return tops[0], tops[1]


def write_layout(out, blobs, images):
    """Writes the OCI image layout: every reference under its full name
    (org.opencontainers.image.ref.name, as `umoci unpack --image DIR:REF` and
    `skopeo copy oci:DIR:REF` look it up). Rewriting a layout keeps unchanged
    blobs and deletes the ones no reference needs any more."""
    out = os.path.abspath(out)
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(f"{out}/oci-layout"):
        fail(f"--out {out} is a non-empty directory without an oci-layout file; refusing to "
             "write into it (pick an empty or new directory)", 2)
    bdir = os.path.join(out, "blobs", "sha256")
    os.makedirs(bdir, exist_ok=True)
    wanted, index = set(), []
    for img in images:
        top = img["layout"]
        wanted.update(d["digest"] for d in blobs.walk(top) + [top])
        for ref in img["image"].refs:
            index.append(dict(top, annotations={"org.opencontainers.image.ref.name": ref,
                                                "io.containerd.image.name": ref}))
    for d in sorted(wanted):
        path = os.path.join(bdir, d[7:])
        if not (os.path.exists(path) and os.path.getsize(path) == len(blobs.data[d])):
            replace_file(path, blobs.data[d])
    for name in os.listdir(bdir):
        if "sha256:" + name not in wanted:
            os.unlink(os.path.join(bdir, name))
    replace_file(f"{out}/oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))
    replace_file(f"{out}/index.json", canonical(
        {"schemaVersion": 2, "mediaType": MEDIA["oci"]["index"], "manifests": index}))
    return len(wanted), sum(len(blobs.data[d]) for d in wanted)


def replace_file(path, data):
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


# ===========================================================================
# 5. Registry push: the distribution API over plain HTTP, no auth
# ===========================================================================

def request(method, url, body=None, content_type=None):
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
    except urllib.error.URLError as e:
        fail(f"{method} {url}: {e.reason} (is the registry running? tests/images/registry.sh)")


class Pusher:
    def __init__(self, registry):
        self.base = f"http://{registry}/v2"
        status, _, body = request("GET", self.base + "/")
        if status != 200:
            fail(f"{self.base}/ answered {status} {body[:200]!r}; need a plain-HTTP registry "
                 "without auth (tests/images/registry.sh start DIR PORT)")
        self.home = {}  # blob digest -> a repository holding it
        self.uploaded = self.mounted = self.present = 0

    def blob(self, repo, d, data):
        status, _, _ = request("HEAD", f"{self.base}/{repo}/blobs/{d}")
        if status == 200:
            self.present += 1
            return
        location = None
        if d in self.home:  # cross-repository mount: no bytes sent
            status, h, _ = request("POST", f"{self.base}/{repo}/blobs/uploads/"
                                   f"?mount={d}&from={self.home[d]}")
            if status == 201:
                self.mounted += 1
                return
            location = h.get("Location") if status == 202 else None
        if location is None:
            status, h, body = request("POST", f"{self.base}/{repo}/blobs/uploads/")
            if status != 202:
                fail(f"starting an upload to {repo}: {status} {body[:200]!r}")
            location = h.get("Location")
        if location.startswith("/"):
            location = self.base[:-3] + location
        location += ("&" if "?" in location else "?") + "digest=" + d
        status, _, body = request("PUT", location, data, "application/octet-stream")
        if status != 201:
            fail(f"uploading {d} to {repo}: {status} {body[:200]!r}")
        self.uploaded += 1

    def manifest(self, repo, reference, desc, data):
        status, h, body = request("PUT", f"{self.base}/{repo}/manifests/{reference}", data,
                                  desc["mediaType"])
        got = h.get("Docker-Content-Digest") if h else None
        if status != 201 or got != desc["digest"]:
            fail(f"PUT {repo}:{reference}: {status}, digest {got}, expected {desc['digest']}: "
                 f"{body[:200]!r}")

    def image(self, blobs, ref, top):
        repo, tag = split_ref(ref)
        for d in blobs.walk(top):
            if blobs.children[d["digest"]]:  # a manifest or an index: its parts went first
                self.manifest(repo, d["digest"], d, blobs.data[d["digest"]])
            else:
                self.blob(repo, d["digest"], blobs.data[d["digest"]])
                self.home.setdefault(d["digest"], repo)
        self.manifest(repo, tag, top, blobs.data[top["digest"]])
        print(f"  pushed {repo}:{tag}  {top['digest']}")


# ===========================================================================
# 6. Command line
# ===========================================================================

def goarch_of(debian_arch):
    return {"armhf": "arm", "i386": "386", "ppc64el": "ppc64le"}.get(debian_arch, debian_arch)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", metavar="DIR", help="the OCI image layout to write (or update)")
    ap.add_argument("--push", metavar="HOST:PORT", help="push every image to this plain-HTTP "
                    "registry, keeping the repository paths")
    ap.add_argument("--cache", metavar="DIR", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "capcri-test-images"),
        help="downloaded .debs and their extracted files (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="only check the build inputs")
    ap.add_argument("--list", action="store_true", help="print the catalogue and exit")
    a = ap.parse_args()

    if a.list:
        for img in catalogue("amd64"):
            print(" ".join(img.refs))
            print(f"    {img.form}; layers {', '.join(img.layers)}; {img.purpose}")
        return
    if not (a.out or a.check):
        ap.error("--out DIR is required (or --check, --list)")
    if sys.version_info < (3, 9):
        fail("needs Python 3.9 or newer")

    src = Sources(os.path.abspath(a.cache))
    missing = src.check()
    if missing:
        fail("missing build inputs:\n" + "".join(f"  {p:14} {why}\n" for p, why in missing) +
             "install them (as root):\n  apt-get install -y --no-install-recommends " +
             " ".join(sorted({p for p, _ in missing})), 2)
    if a.check:
        print("all build inputs present; busybox, busybox-static and nginx are fetched with "
              "apt-get download when the cache lacks them")
        return

    layers = build_layers(src)
    goarch = goarch_of(src.arch)
    blobs, images = Blobs(), []
    for img in catalogue(goarch):
        stack = [layers[n] for n in img.layers]
        pkgs = sorted(set().union(*(l.packages for l in stack)))
        packages = {p: src.used[p] for p in pkgs}
        registry_top, layout_top = assemble(blobs, img, stack, goarch, packages)
        images.append({"image": img, "registry": registry_top, "layout": layout_top})

    n, size = write_layout(a.out, blobs, images)
    print("Debian packages: " + " ".join(f"{p}={v}" for p, v in sorted(src.used.items())))
    for img in images:
        print(f"  {' '.join(img['image'].refs)}  {img['registry']['digest'][:19]}")
    print(f"OCI layout {os.path.abspath(a.out)}: {len(images)} images, {n} blobs, {size} bytes")
    if a.push:
        p = Pusher(a.push)
        for img in images:
            for ref in img["image"].refs:
                p.image(blobs, ref, img["registry"])
        print(f"push to {a.push}: {p.uploaded} blobs uploaded, {p.mounted} mounted from another "
              f"repository, {p.present} already there")


if __name__ == "__main__":
    main()

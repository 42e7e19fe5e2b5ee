#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into corpus/<target>/seed-*.

Run from anywhere: python3 fuzz/make_seeds.py. Seeds are small valid (and a
few hostile) inputs; the fuzzer's own finds are added by hack/fuzz.sh.
"""
import gzip
import io
import json
import os
import re
import struct
import subprocess
import tarfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def tar_bytes(entries, mode=None, mtime=1700000000):
    """entries: (name, type, data, linkname, pax) tuples; `mode` overrides
    every entry's mode (0o777 for the swap seeds)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data, link, pax in entries:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.mode = mode if mode is not None else (0o755 if kind == tarfile.DIRTYPE else 0o644)
            ti.mtime = mtime
            ti.linkname = link or ""
            ti.pax_headers = pax or {}
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    raw = buf.getvalue().rstrip(b"\0")
    # Whole 512-byte blocks plus the two zero blocks of the end of archive.
    raw += b"\0" * ((-len(raw)) % 512)
    return raw + b"\0" * 1024


def layer_seeds():
    caps_v2 = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)  # cap_net_raw+ep
    pax_caps = {"SCHILY.xattr.security.capability": caps_v2.decode("latin-1")}
    good = tar_bytes([
        ("bin/", tarfile.DIRTYPE, b"", None, None),
        ("bin/ping", tarfile.REGTYPE, b"\x7fELF", None, pax_caps),
        ("bin/ping6", tarfile.LNKTYPE, b"", "bin/ping", None),
        ("bin/sh", tarfile.SYMTYPE, b"", "/bin/busybox", None),
        ("etc/.wh.passwd", tarfile.REGTYPE, b"", None, None),
        ("var/.wh..wh..opq", tarfile.REGTYPE, b"", None, None),
        ("var/log", tarfile.REGTYPE, b"hello\n", None, None),
    ])
    write("layer_unpack", "tar", b"\x00" + good)
    write("layer_unpack", "gzip", b"\x01" + gzip.compress(good, mtime=0))
    zst = subprocess.run(["zstd", "-q", "-c"], input=good, stdout=subprocess.PIPE, check=True)
    write("layer_unpack", "zstd", b"\x02" + zst.stdout)
    write("layer_unpack", "dotdot", b"\x00" + tar_bytes([
        ("../escape", tarfile.REGTYPE, b"x", None, None)]))
    write("layer_unpack", "symlink-parent", b"\x00" + tar_bytes([
        ("up", tarfile.SYMTYPE, b"", "../../canary", None),
        ("up/keep", tarfile.REGTYPE, b"pwned", None, None)]))
    write("layer_unpack", "hardlink-out", b"\x00" + tar_bytes([
        ("out", tarfile.LNKTYPE, b"", "../../canary/keep", None)]))
    # Issue 12 item 1: a parent swapped for a symlink after its children.
    # The harness's canary/sub must keep its mode (0750) and mtime.
    swap = [
        ("x/", tarfile.DIRTYPE, b"", None, None),
        ("x/sub/", tarfile.DIRTYPE, b"", None, None),
        ("real", tarfile.REGTYPE, b"r", None, None),
        ("x", tarfile.SYMTYPE, b"", "../../canary", None),
    ]
    write("layer_unpack", "swap-deferred-mode", b"\x00" + tar_bytes(swap, mode=0o777, mtime=0))
    for name, extra in [
        ("swap-file", ("x/sub/f", tarfile.REGTYPE, b"pwned", None, None)),
        ("swap-dir-xattr", ("x/sub/", tarfile.DIRTYPE, b"", None,
                            {"SCHILY.xattr.user.pwned": "1"})),
        ("swap-hardlink-dest", ("x/sub/hl", tarfile.LNKTYPE, b"", "real", None)),
        ("swap-hardlink-src", ("stolen", tarfile.LNKTYPE, b"", "x/keep", None)),
        ("swap-whiteout", ("x/.wh.keep", tarfile.REGTYPE, b"", None, None)),
        ("swap-opaque", ("x/sub/.wh..wh..opq", tarfile.REGTYPE, b"", None, None)),
        ("swap-fifo", ("x/sub/p", tarfile.FIFOTYPE, b"", None, None)),
    ]:
        write("layer_unpack", name, b"\x00" + tar_bytes(swap + [extra], mode=0o777, mtime=0))
    write("layer_unpack", "overlay-xattr", b"\x00" + tar_bytes([
        ("d/", tarfile.DIRTYPE, b"", None,
         {"SCHILY.xattr.trusted.overlay.redirect": "/etc"})]))


def filecaps_seeds():
    write("file_caps", "v1", struct.pack("<3I", 0x01000000, 1 << 13, 0))
    write("file_caps", "v2", struct.pack("<5I", 0x02000001, 1 << 10, 0, 1 << 8, 0))
    write("file_caps", "v3", struct.pack("<6I", 0x03000001, 1 << 13, 1 << 13, 0, 0, 1000))


def policy_seeds():
    pdir = os.path.join(REPO, "policy")
    for name in sorted(os.listdir(pdir)):
        if name.endswith(".yaml"):
            with open(os.path.join(pdir, name), "rb") as f:
                write("policy_load", name, f.read())


def cri_log_seeds():
    lines = [
        b"2024-01-02T03:04:05.000000006Z stdout F hello\n",
        b"2024-01-02T03:04:05.5+01:00 stderr P:x part",
        b"2024-01-02T03:04:05Z stdout F \n",
    ]
    for i, line in enumerate(lines):
        write("cri_log_parse", "line%d" % i, line)
    # splitter: 4 read sizes, then (byte, count) runs: a long line and short ones.
    cuts = struct.pack(">4H", 1, 4096, 17, 65535)
    write("cri_log_splitter", "long-line", cuts + b"x\xc0\n\x00a\x05\n\x00\n\x00z\x10")
    write("cri_log_splitter", "short", struct.pack(">4H", 3, 3, 3, 3) + b"a\x02\n\x00b\x00")


def frame(obj):
    body = json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack(">I", len(body)) + body


def monitor_seeds():
    write("monitor_frame", "requests",
          frame({"op": "ping"}) + frame({"op": "start", "id": "c1"})
          + frame({"op": "kill", "id": "c1", "signal": 9})
          + frame({"op": "stop", "id": "c1", "timeout": {"secs": 10, "nanos": 0}, "signal": 15}))
    write("monitor_frame", "responses",
          frame({"result": "ok"}) + frame({"result": "pong", "pid": 42})
          + frame({"result": "error", "kind": "not_found", "container": "c1",
                   "message": "no such container"}))


def spdy_dictionary():
    with open(os.path.join(REPO, "src/stream/spdy/header.rs")) as f:
        src = f.read()
    words_src = src.split("const DICTIONARY_WORDS")[1].split("];")[0]
    words = re.findall(r'"((?:[^"\\]|\\.)*)"', words_src)
    tail_src = src.split("const DICTIONARY_TAIL")[1].split(");")[0]
    tail = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', tail_src))
    d = b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + tail.encode()
    assert len(d) == 1423, len(d)
    return d


def header_block(pairs):
    out = struct.pack(">I", len(pairs))
    for n, v in pairs:
        out += struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v
    return out


def spdy_seeds():
    h1 = header_block([(b"streamtype", b"stdout"), (b"port", b"8080"), (b"x", b"a\0b")])
    h2 = header_block([(b"streamtype", b"error")])
    write("spdy_header", "raw-block", h1)
    z = zlib.compressobj(zdict=spdy_dictionary())
    c1 = z.compress(h1) + z.flush(zlib.Z_SYNC_FLUSH)
    write("spdy_header", "one-block", b"\x00" + c1)
    # First byte 1: the target cuts the rest into two equal halves, so grow
    # the second block's value until its compressed size matches the first.
    for k in range(60):
        z2 = z.copy()
        h2 = header_block([(b"streamtype", b"error"), (b"id", bytes(range(65, 65 + k)))])
        c2 = z2.compress(h2) + z2.flush(zlib.Z_SYNC_FLUSH)
        if len(c2) == len(c1):
            write("spdy_header", "two-blocks", b"\x01" + c1 + c2)
            break
    h2 = header_block([(b"streamtype", b"error")])
    c2 = z.compress(h2) + z.flush(zlib.Z_SYNC_FLUSH)

    def control(ftype, flags, body):
        return struct.pack(">HHB", 0x8003, ftype, flags) + struct.pack(">I", len(body))[1:] + body

    frames = (
        control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + c1)        # SYN_STREAM
        + control(2, 0, struct.pack(">I", 1) + c2)                    # SYN_REPLY
        + control(3, 0, struct.pack(">II", 1, 5))                     # RST_STREAM
        + control(4, 0, struct.pack(">I", 1) + struct.pack(">BBBBI", 0, 0, 0, 7, 65536))  # SETTINGS
        + control(6, 0, struct.pack(">I", 7))                         # PING
        + control(7, 0, struct.pack(">II", 1, 0))                     # GOAWAY
        + control(8, 0, struct.pack(">I", 1) + c2)                    # HEADERS
        + control(9, 0, struct.pack(">II", 1, 4096))                  # WINDOW_UPDATE
        + struct.pack(">IB", 1, 1) + struct.pack(">I", 5)[1:] + b"hello"  # DATA + FIN
    )
    write("spdy_frame", "all-types", frames)


layer_seeds()
filecaps_seeds()
policy_seeds()
cri_log_seeds()
monitor_seeds()
spdy_seeds()

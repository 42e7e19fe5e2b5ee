#!/usr/bin/env python3
"""Runs the e2e scenarios through a real kubelet in standalone mode (static
pods, no API server) on top of capcri, and judges every scenario from
kubelet's side: its read-only /pods and /stats/summary endpoints, the pod
logs it keeps, its own log, and the cgroup tree it built.

Started by e2e/kubelet.sh (which checks root, enters a private mount
namespace and builds the binaries); it is not meant to be run by hand.

Two node runs:
  1. capcri with the repository's recommended policies: the capability
     scenarios of e2e/scenarios/ (judged by check.py's rules) and the
     kubelet scenarios of e2e/kubelet-scenarios/ at the same time, then the
     restarts (kubelet, then capcri, while pods run);
  2. capcri with no policies: the capability scenarios' `none` expectations.

Prints one line per scenario (ok/FAIL and the cause), then
"kubelet-e2e: N passed, N failed"; exit status 1 when any failed.
"""

import argparse
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import check  # noqa: E402  (e2e/check.py: the capability scenarios' rules)

NODE = "e2e-node"
CGROUP_FS = "/sys/fs/cgroup"
# The unified hierarchy's mount: /sys/fs/cgroup itself on a cgroup-v2 node,
# /sys/fs/cgroup/unified beside the v1 hierarchies on a hybrid one.
UNIFIED = os.path.exists(os.path.join(CGROUP_FS, "cgroup.controllers"))
# The driver capcri picks when it is given none (sandbox/cgroups.rs
# CgroupSetup::resolve): systemd where systemd is init (sd_booted's test) on
# cgroup v2, cgroupfs elsewhere. kubelet is configured with the same one.
DRIVER = "systemd" if UNIFIED and os.path.isdir("/run/systemd/system") else "cgroupfs"
# capcri's parent of pods kubelet gives none, on the systemd driver: a slice
# of its own (no '-': that would make it a child of another slice).
CAPCRI_SLICE = "capcrie2e.slice"
# The v1 hierarchies kubelet's cgroupfs manager needs a cgroupRoot in
# (cgroup_manager_linux.go's Exists allowlist; hugetlb only where mounted).
V1_CONTROLLERS = ["cpu", "cpuacct", "cpuset", "memory", "pids", "systemd", "hugetlb", "freezer", "devices", "blkio"]
# Host sysctls kubelet sets on start (KernelTunableModify when
# protectKernelDefaults is false). kubelet runs in a mount namespace of its
# own where files with these values are bind-mounted over /proc/sys, so it
# finds them set and the shared host keeps its own. Only kubelet's: a
# container in a user namespace may mount a new /proc only where no mount
# hides part of the old one (the kernel's mount_too_revealing), so capcri's
# namespace must have none.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}


class Failure(Exception):
    """A scenario's assertion failed; the message is the cause."""


def free_port(taken=()):
    """A loopback port nothing listens on, below the kernel's ephemeral
    range: a port bind(0) hands out is ephemeral, and an outgoing
    connection (capcri to the registry, kubelet to capcri) may take it as
    its source port before kubelet listens on it ("address already in
    use", seen once in a run of the second node)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = list(range(10000, max(10001, low)))
    random.shuffle(candidates)
    for port in candidates:
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise Failure(f"no free loopback port between 10000 and {low}")


def go_duration(text):
    """Seconds of a Go duration string (10s, 1m20s, 500ms, 2.5s)."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"([0-9.]+)(ms|us|µs|ns|h|m|s)", text)
    if not parts:
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def log_text(cri_log):
    """The payload of a CRI log file (each line: time stream P|F text)."""
    out = []
    for line in cri_log.splitlines():
        fields = line.split(" ", 3)
        out.append(fields[3] if len(fields) == 4 else line)
    return "\n".join(out)


def container_status(pod, name):
    for cs in (pod or {}).get("status", {}).get("containerStatuses") or []:
        if cs.get("name") == name:
            return cs
    return None


class Node:
    """A capcri daemon and a standalone kubelet sharing one work directory."""

    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.port = free_port()
        self.ro_port = free_port(taken=(self.port,))
        if DRIVER == "cgroupfs":
            # kubelet's cgroupRoot: its own subtree, so runs never share cgroups.
            self.cgroup_root = f"/capcri-kubelet-e2e-{os.getpid()}"
            self.capcri_parent = f"{self.cgroup_root}/capcri"
            self.capcri_parent_dir = self.capcri_parent
            self.kubepods = f"{self.cgroup_root}/kubepods"
            # The cgroup subtrees the pods' processes live in.
            self.trees = [self.cgroup_root]
        else:
            # systemd: kubelet's kubepods.slice under the root slice (the
            # node is a throwaway VM: hack/vm/run.sh), capcri's own slice
            # beside it.
            self.cgroup_root = "/"
            self.capcri_parent = CAPCRI_SLICE
            self.capcri_parent_dir = "/" + CAPCRI_SLICE
            self.kubepods = "/kubepods.slice"
            self.trees = [self.kubepods, self.capcri_parent_dir]
        self.capcri = None
        self.kubelet = None
        self.policies = None
        for d in ("cni", "manifests", "pods", "kubelet", "run", "lib", "policies", "plugins"):
            os.makedirs(os.path.join(work, d), exist_ok=True)
        with open(os.path.join(work, "cni", "10-loopback.conflist"), "w") as f:
            f.write('{"cniVersion": "1.0.0", "name": "e2e-loopback", "plugins": [{"type": "loopback"}]}\n')

    # ---- host preparation (inside the private mount namespace) ----

    def prepare_host(self):
        # kubelet links container logs into /var/log/containers (a fixed
        # path): a tmpfs there, in this mount namespace only.
        os.makedirs("/var/log", exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "capcri-e2e-log", "/var/log"], check=True)
        # Shared within this (private) namespace: the volumes kubelet mounts
        # in its own namespace reach capcri's.
        subprocess.run(["mount", "--make-rshared", "/"], check=True)
        for key, value in KUBELET_SYSCTLS.items():
            with open(os.path.join(self.work, "sysctl-" + key.replace("/", "-")), "w") as f:
                f.write(value + "\n")
        if UNIFIED:
            # v2 with systemd: systemd and kubelet make the slices; v2 with
            # cgroupfs: kubelet makes its cgroupRoot's kubepods below it and
            # enables the controllers on the way.
            if DRIVER == "cgroupfs":
                os.makedirs(CGROUP_FS + self.cgroup_root, exist_ok=True)
            return
        for c in V1_CONTROLLERS:
            base = os.path.join(CGROUP_FS, c)
            if not os.path.isdir(base):
                continue
            path = base + self.cgroup_root
            os.makedirs(path, exist_ok=True)
            if c == "cpuset":
                # A new v1 cpuset starts with no CPUs and no memory nodes.
                for f in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(base, f)) as src, open(os.path.join(path, f), "w") as dst:
                        dst.write(src.read())

    def remove_cgroups(self):
        """Kills what is left in kubelet's and capcri's cgroups (pods kubelet
        did not stop in time), then removes the cgroupfs ones, deepest first
        (systemd's slices and scopes go with their units)."""
        for _ in range(3):
            pids = set()
            if UNIFIED:
                for tree in self.trees:
                    pids.update(procs_under("memory", tree))
            else:
                for c in V1_CONTROLLERS + ["unified"]:
                    if os.path.isdir(os.path.join(CGROUP_FS, c) + self.cgroup_root):
                        pids.update(procs_under_v1(c, self.cgroup_root))
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.5)
        if DRIVER == "systemd":
            return []
        left = []
        tops = [CGROUP_FS + self.cgroup_root] if UNIFIED else [
            os.path.join(CGROUP_FS, c) + self.cgroup_root for c in V1_CONTROLLERS + ["unified"]]
        for top in tops:
            if not os.path.isdir(top):
                continue
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                for _ in range(20):
                    try:
                        os.rmdir(dirpath)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)
                else:
                    left.append(dirpath)
        return left

    # ---- daemons ----

    def write_kubelet_config(self):
        w = self.work
        config = f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: {w}/manifests
fileCheckFrequency: 2s
syncFrequency: 5s
containerRuntimeEndpoint: unix://{w}/capcri.sock
imageServiceEndpoint: unix://{w}/capcri.sock
podLogsDir: {w}/pods
volumePluginDir: {w}/plugins
cgroupDriver: {DRIVER}
cgroupsPerQOS: true
cgroupRoot: {self.cgroup_root}
enforceNodeAllocatable: [pods]
failCgroupV1: false
failSwapOn: false
address: 127.0.0.1
port: {self.port}
readOnlyPort: {self.ro_port}
healthzPort: 0
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
"""
        with open(os.path.join(w, "kubelet.yaml"), "w") as f:
            f.write(config)

    def start_capcri(self, policies=None):
        if policies is not None:
            self.policies = policies
            pdir = os.path.join(self.work, "policies")
            shutil.rmtree(pdir)
            os.makedirs(pdir)
            if policies == "recommended":
                for name in os.listdir(os.path.join(REPO, "policy")):
                    if name.endswith(".yaml"):
                        shutil.copy(os.path.join(REPO, "policy", name), pdir)
        sock = os.path.join(self.work, "capcri.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        w = self.work
        cmd = [self.args.capcri, "serve", "--socket", sock, "--admin-socket", f"{w}/admin.sock",
               "--state-dir", f"{w}/run", "--data-dir", f"{w}/lib", "--policy-dir", f"{w}/policies",
               "--cni-conf-dir", f"{w}/cni", "--cni-bin-dir", "/usr/lib/cni", "--cni-bin-dir", "/opt/cni/bin",
               "--cgroup-parent", self.capcri_parent,
               "--registry-mirror", f"e2e.capcri.test={self.args.registry}"]
        log = open(os.path.join(w, "capcri.log"), "a")
        self.capcri = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(200):
            if os.path.exists(sock):
                return
            if self.capcri.poll() is not None:
                raise Failure(f"capcri exited with {self.capcri.returncode}: see {w}/capcri.log")
            time.sleep(0.05)
        raise Failure("capcri did not create its socket in 10 s")

    def start_kubelet(self):
        w = self.work
        log = open(os.path.join(w, "kubelet.log"), "a")
        binds = " ".join(f"mount --bind {self.work}/sysctl-{k.replace('/', '-')} /proc/sys/{k} &&"
                         for k in KUBELET_SYSCTLS)
        wrapper = f'mount --make-rprivate /proc && {binds} exec "$0" "$@"'
        cmd = ["unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c", wrapper,
               self.args.kubelet, "--config", f"{w}/kubelet.yaml", "--root-dir", f"{w}/kubelet",
               "--cert-dir", f"{w}/kubelet/pki", "--hostname-override", NODE, "--v", "2"]
        self.kubelet = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.kubelet.poll() is not None:
                raise Failure(f"kubelet exited with {self.kubelet.returncode}: {self.kubelet_log()[-1500:]}")
            try:
                self.get("/pods")
                return
            except OSError:
                time.sleep(0.5)
        raise Failure("kubelet's read-only port did not answer in 60 s")

    @staticmethod
    def _stop(proc, name):
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            print(f"{name} ignored SIGTERM for 30 s: killed", file=sys.stderr)
            proc.kill()
            proc.wait()

    def stop_kubelet(self):
        self._stop(self.kubelet, "kubelet")

    def stop_capcri(self):
        self._stop(self.capcri, "capcri")

    # ---- what kubelet shows ----

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ro_port}{path}", timeout=10) as r:
            return json.load(r)

    def pods(self):
        try:
            return {p["metadata"]["name"]: p for p in self.get("/pods").get("items") or []}
        except OSError:
            return {}

    def pod(self, name):
        return self.pods().get(f"{name}-{NODE}")

    def summary_pod(self, name):
        try:
            summary = self.get("/stats/summary")
        except OSError:
            return None
        for p in summary.get("pods") or []:
            if p["podRef"]["name"] == f"{name}-{NODE}":
                return p
        return None

    def logs(self, name, container):
        """Every attempt's log of a container, oldest first, as plain text."""
        out = []
        base = os.path.join(self.work, "pods")
        for d in os.listdir(base):
            if f"_{name}-{NODE}_" not in d:
                continue
            cdir = os.path.join(base, d, container)
            if not os.path.isdir(cdir):
                continue
            files = [f for f in os.listdir(cdir) if re.fullmatch(r"\d+\.log", f)]
            for f in sorted(files, key=lambda f: int(f.split(".")[0])):
                with open(os.path.join(cdir, f), errors="replace") as fh:
                    out.append(log_text(fh.read()))
        return "\n".join(out)

    def kubelet_log(self, since=0):
        with open(os.path.join(self.work, "kubelet.log"), errors="replace") as f:
            f.seek(since)
            return f.read()

    def kubelet_log_size(self):
        return os.path.getsize(os.path.join(self.work, "kubelet.log"))

    # ---- manifests ----

    def add(self, manifest):
        with open(manifest) as f:
            text = f.read().replace("__WORK__", self.work)
        # Written aside and renamed in: kubelet never reads half a file.
        tmp = os.path.join(self.work, os.path.basename(manifest) + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.work, "manifests", os.path.basename(manifest)))

    def remove(self, manifest):
        try:
            os.unlink(os.path.join(self.work, "manifests", os.path.basename(manifest)))
        except FileNotFoundError:
            pass

    def manifests(self):
        return os.listdir(os.path.join(self.work, "manifests"))


def wait(what, fn, timeout):
    """Polls fn until it returns a true value; Failure(last reason) at the deadline.
    fn returns (value) or raises Pending(reason)."""
    deadline = time.time() + timeout
    reason = "nothing seen"
    while True:
        try:
            value = fn()
            if value:
                return value
        except Pending as p:
            reason = str(p)
        if time.time() > deadline:
            raise Failure(f"{what}: not within {timeout} s; last seen: {reason}")
        time.sleep(1)


class Pending(Exception):
    """Not settled yet (with what was seen)."""


def running(node, name, containers):
    """The pod once every named container is running."""
    pod = node.pod(name)
    if not pod:
        raise Pending(f"{name}: not in /pods")
    for c in containers:
        cs = container_status(pod, c)
        if not cs or "running" not in (cs.get("state") or {}):
            raise Pending(f"{name}/{c}: {json.dumps(cs and cs.get('state'))}")
    return pod


def log_has(node, name, container, *needles):
    text = node.logs(name, container)
    missing = [n for n in needles if n not in text]
    if missing:
        raise Pending(f"{name}/{container} log lacks {missing!r}: {text[-400:]!r}")
    return text


# ---------------------------------------------------------------------------
# The kubelet scenarios. Each gets the node, runs while the others run, and
# returns a one-line summary of what it saw or raises Failure with the cause.

SCENARIOS = {}


def scenario(name, manifests):
    def register(fn):
        SCENARIOS[name] = (fn, manifests)
        return fn
    return register


@scenario("probes", ["probes.yaml"])
def probes(node, t):
    def settled():
        pod = running(node, "probes", ["live", "ready", "notready"])
        live = container_status(pod, "live")
        if live["restartCount"] < 1:
            raise Pending(f"live: restartCount {live['restartCount']}")
        if not container_status(pod, "ready").get("ready"):
            raise Pending("ready: not ready yet")
        return pod
    pod = wait("liveness restart and readiness", settled, t)
    time.sleep(6)  # three more readiness periods for `notready`
    pod = node.pod("probes")
    live, ready, notready = (container_status(pod, c) for c in ("live", "ready", "notready"))
    term = (live.get("lastState") or {}).get("terminated") or {}
    if term.get("exitCode") not in (137, 143):
        raise Failure(f"live: killed for its liveness probe should end by signal, lastState {live.get('lastState')}")
    if ready["restartCount"] or notready["restartCount"]:
        raise Failure(f"readiness must not restart: ready {ready['restartCount']}, notready {notready['restartCount']}")
    if notready.get("ready") or "running" not in notready["state"]:
        raise Failure(f"notready: ready={notready.get('ready')} state={notready['state']}")
    conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
    if conditions.get("Ready") != "False" or conditions.get("ContainersReady") != "False":
        raise Failure(f"pod conditions should say not Ready: {conditions}")
    klog = node.kubelet_log()
    if not re.search(r'failed liveness probe, will be restarted.*containerName="live"|'
                     r'containerName="live".*failed liveness probe', klog):
        raise Failure("kubelet's log has no 'failed liveness probe, will be restarted' for live")
    if not re.search(r'"Probe failed" probeType="Readiness"[^\n]*containerName="notready"[^\n]*output=<\n\s*not ready by design',
                     klog):
        raise Failure("kubelet's log has no readiness 'Probe failed' for notready with the probe's output")
    return (f"live restarted {live['restartCount']}x (exit {term['exitCode']}), ready=True, "
            "notready=False and never restarted, probe output in kubelet's log")


@scenario("crash-backoff", ["crash-backoff.yaml"])
def crash_backoff(node, t):
    reasons = set()

    def settled():
        pod = node.pod("crash-backoff")
        cs = container_status(pod, "crash")
        if not cs:
            raise Pending("no status")
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            reasons.add(waiting.get("reason"))
        if cs["restartCount"] < 3 or "CrashLoopBackOff" not in reasons:
            raise Pending(f"restartCount {cs['restartCount']}, waiting reasons seen {sorted(reasons)}")
        return cs
    cs = wait("three restarts and CrashLoopBackOff", settled, t)
    term = (cs.get("lastState") or {}).get("terminated") or {}
    if term.get("exitCode") != 2:
        raise Failure(f"lastState should be terminated with exit code 2: {cs.get('lastState')}")
    backoffs = [go_duration(d) for d in re.findall(
        r'back-off (\S+) restarting failed container=crash pod=crash-backoff', node.kubelet_log())]
    if len(set(backoffs)) < 2 or backoffs != sorted(backoffs):
        raise Failure(f"the back-off should grow: kubelet logged {backoffs}")
    # kubelet keeps the log of the last attempt or two (older ones go with
    # their dead containers).
    if "attempt at" not in node.logs("crash-backoff", "crash"):
        raise Failure("the last attempt's log is missing")
    return (f"restartCount {cs['restartCount']}, last exit 2, CrashLoopBackOff, "
            f"back-off {sorted(set(backoffs))} s")


@scenario("start-error", ["start-error.yaml"])
def start_error(node, t):
    """A command the image lacks: CreateContainer succeeds, StartContainer
    fails with libcontainer's report, and kubelet sees what it sees from
    containerd: RunContainerError, then the attempt exited with StartError
    and 128, restarted with a back-off."""
    waiting = {}

    def settled():
        pod = node.pod("start-error")
        cs = container_status(pod, "missing")
        if not cs:
            raise Pending("no status")
        w = (cs.get("state") or {}).get("waiting")
        if w:
            waiting.setdefault(w.get("reason"), w.get("message") or "")
        term = (cs.get("lastState") or {}).get("terminated")
        if cs["restartCount"] < 1 or not term or "RunContainerError" not in waiting:
            raise Pending(f"restartCount {cs['restartCount']}, waiting {sorted(waiting)}, "
                          f"lastState {cs.get('lastState')}")
        return cs
    cs = wait("a failed start, seen by kubelet, and a restart", settled, t)
    term = cs["lastState"]["terminated"]
    if term.get("reason") != "StartError" or term.get("exitCode") != 128:
        raise Failure(f"lastState should be StartError with exit code 128: {term}")
    if "/no/such/binary" not in (term.get("message") or ""):
        raise Failure(f"lastState's message should name the missing command: {term}")
    if "/no/such/binary" not in waiting["RunContainerError"]:
        raise Failure(f"RunContainerError should name the missing command: {waiting}")
    if cs.get("started"):
        raise Failure(f"a container that never ran is reported started: {cs}")
    return (f"RunContainerError naming the command, lastState StartError 128, "
            f"restartCount {cs['restartCount']}, waiting reasons {sorted(waiting)}")


@scenario("on-failure", ["on-failure.yaml"])
def on_failure(node, t):
    def settled():
        pod = node.pod("on-failure")
        phase = (pod or {}).get("status", {}).get("phase")
        if phase not in ("Succeeded", "Failed"):
            raise Pending(f"phase {phase}")
        return pod
    pod = wait("the pod to finish", settled, t)
    ok, flaky = container_status(pod, "ok"), container_status(pod, "flaky")
    if pod["status"]["phase"] != "Succeeded":
        raise Failure(f"phase {pod['status']['phase']}, want Succeeded: {json.dumps(pod['status'])[:600]}")
    if ok["restartCount"] != 0 or ok["state"].get("terminated", {}).get("exitCode") != 0:
        raise Failure(f"ok: exit 0 is not a failure and is not restarted: {ok}")
    last = (flaky.get("lastState") or {}).get("terminated") or {}
    if flaky["restartCount"] != 1 or last.get("exitCode") != 3 or flaky["state"].get("terminated", {}).get("exitCode") != 0:
        raise Failure(f"flaky: want exit 3, one restart, then exit 0: {flaky}")
    log_has(node, "on-failure", "flaky", "second run: exit 0")
    return "ok exit 0 not restarted; flaky exit 3 -> restarted once -> exit 0; phase Succeeded"


@scenario("graceful", ["graceful.yaml"])
def graceful(node, t):
    events = os.path.join(node.work, "graceful", "events")
    wait("app running", lambda: running(node, "graceful", ["app"]) and log_has(node, "graceful", "app", "waiting for TERM"), t)
    mark = node.kubelet_log_size()
    removed = time.time()
    node.remove("graceful.yaml")
    grace = 10
    # kubelet sees the removal within fileCheckFrequency (2 s), then has the
    # grace period; a few seconds more for its sync loop and teardown.
    budget = 2 + grace + 8

    def terminated():
        try:
            with open(events) as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        if "TERM " not in text:
            raise Pending(f"events so far: {text!r}")
        return True
    wait("the container to end after its manifest was removed", terminated, budget)
    took = time.time() - removed
    with open(events) as f:
        lines = f.read().split("\n")
    times = {}
    for line in lines:
        if " " in line:
            k, v = line.split(" ", 1)
            times[k] = int(v)
    if "preStop" not in times:
        raise Failure(f"the preStop hook did not run: events {lines}")
    if "TERM" not in times:
        raise Failure(f"the container got no SIGTERM (killed without grace?): events {lines}")
    if not times["preStop"] <= times["TERM"]:
        raise Failure(f"preStop must run before SIGTERM: {times}")
    if times["TERM"] - removed > grace + 2:
        raise Failure(f"SIGTERM came {times['TERM'] - removed:.0f} s after the removal, grace is {grace} s")
    klog = node.kubelet_log(mark)
    # kubelet logs the grace left after the preStop hook took its share.
    m = re.search(r'"Killing container with a grace period" pod="default/graceful-e2e-node".*'
                  r'containerName="app".*gracePeriod=(\d+)', klog)
    if not m or not 0 < int(m.group(1)) <= grace:
        raise Failure(f"kubelet's log lacks 'Killing container with a grace period' for app with 0 < gracePeriod <= {grace}")
    return (f"preStop at +{times['preStop'] - removed:.0f} s, SIGTERM handled at +{times['TERM'] - removed:.0f} s "
            f"(grace {grace} s), seen after {took:.1f} s")


QOS = {
    # pod name: (qosClass, QoS level under kubepods ("" for Guaranteed), kubelet's pod-level limits per hierarchy)
    "qos-guaranteed": ("Guaranteed", "", {
        "v1": {"memory.limit_in_bytes": 64 << 20, "cpu.cfs_quota_us": 10000, "cpu.shares": 102},
        # kubelet's pod cgroups on v2 (cm/cgroup_manager_linux.go
        # getCPUWeight): weight = 1 + (shares - 2) * 9999 / 262142.
        "v2": {"memory.max": 64 << 20, "cpu.max": 10000, "cpu.weight": 4}}),
    "qos-burstable": ("Burstable", "burstable", {
        "v1": {"memory.limit_in_bytes": 128 << 20, "cpu.shares": 51},
        "v2": {"memory.max": 128 << 20, "cpu.weight": 2}}),
    "qos-besteffort": ("BestEffort", "besteffort", {
        "v1": {"cpu.shares": 2},
        "v2": {"cpu.weight": 1}}),
}
# The container-level limits capcri applies from kubelet's
# LinuxContainerResources, read in the container's own cgroup.
QOS_CONTAINER = {
    "qos-guaranteed": {"v1": {"memory.limit_in_bytes": 64 << 20, "cpu.cfs_quota_us": 10000},
                       "v2": {"memory.max": 64 << 20, "cpu.max": 10000}},
    "qos-burstable": {"v1": {"memory.limit_in_bytes": 128 << 20}, "v2": {"memory.max": 128 << 20}},
    "qos-besteffort": {"v1": {}, "v2": {}},
}


def cgroup_dir(controller, path):
    """The directory of cgroup `path` in the hierarchy holding `controller`."""
    if UNIFIED:
        return CGROUP_FS + path
    return os.path.join(CGROUP_FS, controller) + path


def cgroup_value(controller, path, key):
    """A cgroup file's first field as a number (cpu.max's quota; "max" is -1)."""
    with open(os.path.join(cgroup_dir(controller, path), key)) as f:
        first = f.read().split()[0]
    return -1 if first == "max" else int(first)


def pod_cgroup(node, qos_level, uid):
    """kubelet's cgroup of a pod (cm/pod_container_manager_linux.go): under
    kubepods, in its QoS level's cgroup unless Guaranteed. The systemd driver
    names each level a slice nested by '-' (`kubepods-burstable-pod<uid>.slice`,
    dashes of the uid made '_')."""
    if DRIVER == "cgroupfs":
        return f"{node.kubepods}/{qos_level + '/' if qos_level else ''}pod{uid}"
    uid = uid.replace("-", "_")
    if not qos_level:
        return f"{node.kubepods}/kubepods-pod{uid}.slice"
    return f"{node.kubepods}/kubepods-{qos_level}.slice/kubepods-{qos_level}-pod{uid}.slice"


def cgroup_of(pid, controller="memory"):
    """A process's cgroup path in the hierarchy holding `controller`."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f.read().splitlines():
            _, controllers, path = line.split(":", 2)
            if (UNIFIED and controllers == "") or (not UNIFIED and controller in controllers.split(",")):
                return path
    raise Failure(f"process {pid} has no {controller} cgroup: {open(f'/proc/{pid}/cgroup').read()!r}")


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def procs_under(controller, path):
    """PIDs in the cgroup at path and its descendants."""
    return procs_in_tree(cgroup_dir(controller, path))


def procs_under_v1(hierarchy, path):
    """PIDs under path in one v1 hierarchy (or the hybrid's "unified")."""
    return procs_in_tree(os.path.join(CGROUP_FS, hierarchy) + path)


def procs_in_tree(top):
    pids = []
    for dirpath, _, files in os.walk(top):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    pids += [int(p) for p in f.read().split()]
            except OSError:  # removed meanwhile
                pass
    return pids


@scenario("qos", ["qos-guaranteed.yaml", "qos-burstable.yaml", "qos-besteffort.yaml"])
def qos(node, t):
    seen, failures = [], []
    hierarchy = "v2" if UNIFIED else "v1"
    for name, (klass, level, limits) in QOS.items():
        pod = wait(f"{name} running", lambda n=name: running(node, n, ["work"]), t)
        if pod["status"].get("qosClass") != klass:
            failures.append(f"{name}: qosClass {pod['status'].get('qosClass')}, want {klass}")
        # kubelet's own pod cgroup, with the limits kubelet computed.
        cgroup = pod_cgroup(node, level, pod["metadata"]["uid"])
        for key, want in limits[hierarchy].items():
            controller = key.split(".")[0]
            try:
                got = cgroup_value(controller, cgroup, key)
            except FileNotFoundError:
                failures.append(f"{name}: kubelet's pod cgroup {controller}:{cgroup} (or its {key}) does not exist")
                break
            if got != want:
                failures.append(f"{name}: {controller}:{cgroup}/{key} is {got}, kubelet's limit is {want}")

        def stats(n=name):
            p = node.summary_pod(n)
            if not p:
                raise Pending(f"{n} not in /stats/summary")
            containers = {c["name"]: c for c in p.get("containers") or []}
            for what, s in (("pod", p), ("container work", containers.get("work") or {})):
                cpu = (s.get("cpu") or {}).get("usageCoreNanoSeconds") or 0
                mem = (s.get("memory") or {}).get("workingSetBytes") or 0
                if cpu <= 0 or mem <= 0:
                    raise Pending(f"{n} {what}: cpu {cpu} ns, memory {mem} B in /stats/summary")
            return p
        # Pod-level stats come from kubelet's pod cgroup (cadvisor): with no
        # process in it they stay 0, so a short wait says as much.
        placed = bool(procs_under("memory", cgroup))
        try:
            p = wait(f"{name} in /stats/summary", stats, 60 if placed else 15)
            work = [c for c in p["containers"] if c["name"] == "work"][0]
            seen.append(f"{klass}: pod cpu {p['cpu']['usageCoreNanoSeconds'] // 1000000} ms mem "
                        f"{p['memory']['workingSetBytes'] >> 20} MiB, container cpu "
                        f"{work['cpu']['usageCoreNanoSeconds'] // 1000000} ms mem {work['memory']['workingSetBytes'] >> 20} MiB")
        except Failure as e:
            failures.append(str(e))

        # The containers must run inside kubelet's pod cgroup (the
        # cgroup_parent of the sandbox config), under kubelet's limits.
        pids = procs_under("memory", cgroup)
        if not pids:
            elsewhere = procs_under("memory", node.capcri_parent_dir)
            failures.append(f"{name}: kubelet's pod cgroup memory:{cgroup} holds no process: the containers run "
                            f"outside it ({len(elsewhere)} processes under capcri's own --cgroup-parent "
                            f"{node.capcri_parent}), not under the cgroup_parent kubelet sent")
            continue
        # The container's own cgroup (its shell's, not the pod init's):
        # kubelet's container limits, applied by capcri.
        shell = [p for p in pids if b"data=$(head" in cmdline(p)]
        if not shell:
            failures.append(f"{name}: the container's shell is not in kubelet's pod cgroup memory:{cgroup}")
            continue
        mine = cgroup_of(shell[0])
        if DRIVER == "systemd":
            # capcri's transient scope for the container, in the pod's slice
            # (util/cgroup_paths.rs: capcri-<container id>.scope).
            cid = (container_status(pod, "work").get("containerID") or "").split("://")[-1]
            if mine != f"{cgroup}/capcri-{cid}.scope":
                failures.append(f"{name}: the container's cgroup is {mine}, want the scope "
                                f"{cgroup}/capcri-{cid}.scope in kubelet's pod slice")
                continue
        for key, want in QOS_CONTAINER[name][hierarchy].items():
            got = cgroup_value(key.split(".")[0], mine, key)
            if got != want:
                failures.append(f"{name}: container cgroup {mine}/{key} is {got}, want {want}")
    if failures:
        raise Failure("; ".join(failures) + (f" (passed: {'; '.join(seen)})" if seen else ""))
    return f"{DRIVER} driver, cgroup {hierarchy}: " + "; ".join(seen)


@scenario("share-pid", ["share-pid.yaml"])
def share_pid(node, t):
    wait("both containers running", lambda: running(node, "share-pid", ["sleeper", "looker"]), t)
    text = wait("looker's report", lambda: log_has(node, "share-pid", "looker", "saw sleeper", "pid 1 is"), t)
    m = re.search(r"my pid (\d+)", text)
    if not m or m.group(1) == "1":
        raise Failure(f"looker should not be PID 1 of a shared namespace: {text!r}")
    return text.split("\n")[0].strip()


@scenario("host-network", ["host-network.yaml"])
def host_network(node, t):
    pod = wait("running", lambda: running(node, "host-network", ["net"]), t)
    text = wait("its log", lambda: log_has(node, "host-network", "net", "netns "), t)
    mine = os.readlink("/proc/self/ns/net")
    theirs = re.search(r"netns (\S+)", text).group(1)
    if theirs != mine:
        raise Failure(f"hostNetwork container is in {theirs}, the node is in {mine}")
    if not pod["spec"].get("hostNetwork"):
        raise Failure("kubelet's pod lacks hostNetwork")
    return f"container's netns {theirs} is the node's"


@scenario("volumes", ["volumes.yaml"])
def volumes(node, t):
    wait("running", lambda: running(node, "volumes", ["writer", "reader"]), t)
    want = ["emptyDir: written by writer", f"podinfo name: volumes-{NODE}", 'scenario="downward-api-file"',
            "memory: tmpfs /memory tmpfs", "memory writable", "podinfo read-only"]
    wait("reader's report", lambda: log_has(node, "volumes", "reader", *want), t)
    return "emptyDir shared, memory emptyDir is tmpfs, downwardAPI files (name, labels) read-only"


@scenario("user-namespace", ["user-namespace.yaml"])
def user_namespace(node, t):
    pod = wait("running", lambda: running(node, "user-namespace", ["userns"]), t)
    text = wait("its report", lambda: log_has(node, "user-namespace", "userns", "uid_map:", "scratch owner:"), t)
    if "id: 0:0" not in text:
        raise Failure(f"the container should be root in its user namespace: {text!r}")
    m = re.search(r"uid_map:\s*(\d+)\s+(\d+)\s+(\d+)", text)
    if not m or m.group(1) != "0" or int(m.group(2)) == 0 or int(m.group(3)) > 65536:
        raise Failure(f"uid 0 should map to a non-root host range of at most 65536 IDs: {text!r}")
    if "scratch owner: 0:0" not in text:
        raise Failure(f"a file root creates in an emptyDir should be root's inside: {text!r}")
    host_uid = int(m.group(2))
    # The host side: kubelet's emptyDir holds the file.
    owned = os.path.join(node.work, "kubelet", "pods", pod["metadata"]["uid"], "volumes",
                         "kubernetes.io~empty-dir", "scratch", "owned")
    st = os.stat(owned)
    return f"root inside, host uid range {host_uid}+{m.group(3)}, emptyDir file on the host owned by {st.st_uid}"


def stable_containers(node, names):
    """(pod, container) -> (id, restarts, running) of the named pods whose
    containers all run."""
    out = {}
    for name in names:
        statuses = (node.pod(name) or {}).get("status", {}).get("containerStatuses") or []
        if not statuses or not all("running" in cs["state"] for cs in statuses):
            continue
        for cs in statuses:
            out[(name, cs["name"])] = (cs.get("containerID"), cs["restartCount"], "running" in cs["state"])
    return out


def ticks(node):
    """(time, probes) of the survivor's tick lines."""
    return [(int(a), int(b)) for a, b in re.findall(r"tick (\d+) probes (\d+)", node.logs("survivor", "tick"))]


def restarts(node, t):
    """kubelet restarted while pods run, then capcri: the pods are adopted."""
    keep = ["survivor", "qos-guaranteed", "qos-burstable", "qos-besteffort", "share-pid", "volumes", "host-network"]
    wait("survivor ready", lambda: (container_status(running(node, "survivor", ["tick"]), "tick") or {}).get("ready"), t)
    before = stable_containers(node, keep)
    keep = sorted({pod for pod, _ in before})
    if "survivor" not in keep:
        raise Failure(f"the survivor pod is not running: {keep}")
    report = []
    for daemon in ("kubelet", "capcri"):
        mark = node.kubelet_log_size()
        stopped = time.time()
        (node.stop_kubelet if daemon == "kubelet" else node.stop_capcri)()
        time.sleep(4)
        if not [tk for tk in ticks(node) if tk[0] > stopped + 1]:
            raise Failure(f"with {daemon} stopped the survivor stopped ticking")
        probes_then = max(p for _, p in ticks(node))
        restarted = time.time()
        (node.start_kubelet if daemon == "kubelet" else node.start_capcri)()

        def adopted():
            pod = running(node, "survivor", ["tick"])
            if not container_status(pod, "tick").get("ready"):
                raise Pending("survivor not ready again")
            late = [p for s, p in ticks(node) if s > restarted + 1]
            if not late or max(late) < probes_then + 2:
                raise Pending(f"readiness probes since the restart: {late[-1:] or 'none'} (were {probes_then})")
            return True
        wait(f"pods adopted after the {daemon} restart", adopted, 90)
        after = stable_containers(node, keep)
        changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
        missing = sorted(set(before) - set(after))
        if changed or missing:
            raise Failure(f"after the {daemon} restart containers changed (id, restarts, running): {changed}, "
                          f"missing {missing}")
        klog = node.kubelet_log(mark)
        fresh = re.findall(r'(No sandbox for pod can be found|No ready sandbox for pod can be found)[^\n]*pod="default/(\S+)"', klog)
        fresh = [p for _, p in fresh if any(p.startswith(k) for k in keep)]
        if fresh:
            raise Failure(f"after the {daemon} restart kubelet made new sandboxes for {fresh}")
        report.append(f"{daemon}: {len(after)} containers of {len(keep)} pods kept (ids, restartCounts), probes resumed")
    return "; ".join(report)


# ---------------------------------------------------------------------------


def capability_scenarios(policies):
    out = []
    for f in sorted(os.listdir(os.path.join(HERE, "scenarios"))):
        if not f.endswith(".yaml") or f.endswith(".expect.yaml"):
            continue
        expect = os.path.join(HERE, "scenarios", f[:-5] + ".expect.yaml")
        if any(e["policies"] == policies for e in check.load_yaml(expect)["expect"]):
            out.append((os.path.join(HERE, "scenarios", f), expect))
    return out


def run_capability(node, manifest, expect, policies, t):
    name = check.load_yaml(manifest)["metadata"]["name"]
    node.add(manifest)
    deadline = time.time() + t
    while True:
        pod = node.pod(name) or {}
        logs = os.path.join(node.work, "logs", name)
        shutil.rmtree(logs, ignore_errors=True)
        os.makedirs(logs)
        for c in (pod.get("spec") or {}).get("containers") or []:
            with open(os.path.join(logs, c["name"] + ".log"), "w") as f:
                f.write(node.logs(name, c["name"]))
        # Its own stream: the other scenarios' threads print meanwhile.
        out = io.StringIO()
        result = check.run(expect, policies, pod, logs, node.kubelet_log(), out=out)
        if result == check.SETTLED_OK:
            node.remove(manifest)
            return out.getvalue().strip().replace("\n", "; ")
        if result != check.PENDING or time.time() > deadline:
            raise Failure((out.getvalue().strip() or "not settled") + f"; pod status: {json.dumps(pod.get('status'))[:800]}")
        time.sleep(2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kubelet", required=True)
    p.add_argument("--capcri", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--timeout", type=int, default=180)
    p.add_argument("--only", help="comma-separated scenario names (kubelet scenarios, 'capabilities', 'restarts')")
    a = p.parse_args()
    only = set(a.only.split(",")) if a.only else None
    results = []  # (name, ok, detail)
    lock = threading.Lock()

    def record(name, fn, *args):
        start = time.time()
        try:
            detail = fn(*args)
            ok = True
        except Failure as e:
            detail, ok = str(e), False
        except Exception:  # a bug in a check is a failure, with its trace
            detail, ok = traceback.format_exc(limit=3).strip().replace("\n", " | "), False
        with lock:
            results.append((name, ok, detail))
            print(f"{'ok  ' if ok else 'FAIL'} {name} ({time.time() - start:.0f} s): {detail}", flush=True)

    for policies in ("recommended", "none"):
        print(f"== node: capcri with policies: {policies}", flush=True)
        # Four letters: capcri refuses a state dir whose socket paths would be too long.
        node = Node(a, os.path.join(a.work, policies[:4]))
        node.prepare_host()
        node.write_kubelet_config()
        try:
            node.start_capcri(policies)
            node.start_kubelet()
            jobs = []
            if only is None or "capabilities" in only:
                for manifest, expect in capability_scenarios(policies):
                    label = f"{os.path.basename(manifest)[:-5]} ({policies} policies)"
                    jobs.append((label, run_capability, node, manifest, expect, policies, a.timeout))
            if policies == "recommended":
                for name, (fn, manifests) in SCENARIOS.items():
                    if only is not None and name not in only:
                        continue
                    for m in manifests:
                        node.add(os.path.join(HERE, "kubelet-scenarios", m))
                    jobs.append((name, fn, node, a.timeout))
                if only is None or "restarts" in only:
                    node.add(os.path.join(HERE, "kubelet-scenarios", "survivor.yaml"))
            with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
                for job in jobs:
                    pool.submit(record, *job)
            if policies == "recommended" and (only is None or "restarts" in only):
                record("restarts", restarts, node, a.timeout)
        except Failure as e:
            results.append((f"node ({policies})", False, str(e)))
            print(f"FAIL node ({policies}): {e}", flush=True)
        finally:
            teardown(node)
    passed = sum(1 for _, ok, _ in results if ok)
    failed = len(results) - passed
    print(f"kubelet-e2e: {passed} passed, {failed} failed")
    return 1 if failed else 0


def teardown(node):
    """Every pod removed through kubelet, then both daemons stopped."""
    for m in node.manifests():
        node.remove(m)
    if node.kubelet and node.kubelet.poll() is None and node.capcri and node.capcri.poll() is None:
        # kubelet drops a static pod from /pods at once and stops it after:
        # wait until no process is left in the cgroup tree.
        deadline = time.time() + 60
        def left_running():
            return [p for tree in node.trees for p in procs_under("memory", tree)]
        while left_running() and time.time() < deadline:
            time.sleep(1)
        left = left_running()
        if left:
            print(f"teardown: {len(left)} processes still run in the pods after 60 s", file=sys.stderr)
    node.stop_kubelet()
    node.stop_capcri()
    # Monitors of pods kubelet did not stop name the work dir.
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if node.work.encode() in f.read():
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.5)
    left = node.remove_cgroups()
    if left:
        print(f"teardown: cgroups left: {left}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

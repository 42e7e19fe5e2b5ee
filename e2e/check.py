#!/usr/bin/env python3
"""Judges a scenario's expectations (NAME.expect.yaml) against what a
Kubernetes runner saw: a Pod object as JSON (from the API server with
`kubectl get pod -o json`, or from a standalone kubelet's /pods endpoint),
one log file per container, and optionally event messages (kubectl) or the
kubelet's own log (standalone kubelet: no API server, so no events).

The rules are those of tests/e2e_support/expect.rs, which the CRI-direct
runner uses: Running + a log substring, Terminated + exit code (+ log),
CreateContainerError + a message substring (in the container's waiting
state, and in an event or kubelet log line when those are given).

Exit status: 0 all hold, 1 one fails for good, 3 not settled yet (poll
again), 2 usage or input error. Needs PyYAML (Debian python3-yaml).
"""

import argparse
import json
import os
import sys

SETTLED_OK, FAILED, USAGE, PENDING = 0, 1, 2, 3


def load_yaml(path):
    try:
        import yaml
    except ImportError:
        sys.exit("check.py: PyYAML is missing: apt-get install python3-yaml (or pip install pyyaml)")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def observe(pod, name, log, extra_messages):
    """What the pod status says of container `name`: (outcome, details)."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") != name:
            continue
        state = cs.get("state") or {}
        if "running" in state:
            return ("Running", {"log": log})
        if "terminated" in state:
            return ("Terminated", {"exitCode": state["terminated"].get("exitCode"), "log": log})
        waiting = state.get("waiting") or {}
        if waiting.get("reason") == "CreateContainerError":
            return ("CreateContainerError", {"message": waiting.get("message", ""), "elsewhere": extra_messages})
    return ("Pending", {})


def judge(expectation, seen):
    """(settled, failure or None) for one expectation."""
    outcome, d = seen
    want = expectation["outcome"]
    if outcome == "Pending":
        return (False, None)
    if want == "Running" and outcome == "Running" and expectation["log"] not in d["log"]:
        return (False, None)
    if outcome == "Running" and want != "Running":
        return (False, None)
    if outcome != want:
        return (True, f"expected {want}, seen {outcome} {d}")
    if want == "Terminated" and d["exitCode"] != expectation.get("exitCode"):
        return (True, f"expected exit code {expectation.get('exitCode')}, seen {d['exitCode']}")
    if "log" in expectation and expectation["log"] not in d.get("log", ""):
        return (True, f"log lacks {expectation['log']!r}: {d.get('log', '')!r}")
    if want == "CreateContainerError":
        sub = expectation["message"]
        if sub not in d["message"]:
            return (True, f"waiting message lacks {sub!r}: {d['message']!r}")
        if d["elsewhere"] is not None and sub not in d["elsewhere"]:
            return (False, None)  # the event / kubelet log line may lag the status
    return (True, None)


def run(expect_file, policies, pod, logs_dir, extra_messages, out=None):
    """Judges every expectation for `policies`; one line each to `out`
    (stdout by default)."""
    out = out or sys.stdout
    expectations = [e for e in load_yaml(expect_file)["expect"] if e["policies"] == policies]
    if not expectations:
        print(f"{expect_file}: no expectation for policies {policies}", file=out)
        return USAGE
    status = SETTLED_OK
    for e in expectations:
        log_path = os.path.join(logs_dir, e["container"] + ".log")
        log = open(log_path, encoding="utf-8", errors="replace").read() if os.path.exists(log_path) else ""
        settled, failure = judge(e, observe(pod, e["container"], log, extra_messages))
        label = f"{os.path.basename(expect_file)} {e['container']} {e['outcome']}"
        if failure:
            print(f"FAIL {label}: {failure}", file=out)
            status = FAILED
        elif not settled:
            status = PENDING if status == SETTLED_OK else status
        else:
            print(f"ok   {label}", file=out)
    return status


def self_test():
    """The mapping of pod statuses, checked without a cluster (CI lint)."""
    def pod(state):
        return {"status": {"containerStatuses": [{"name": "c", "state": state}]}}
    term = {"policies": "none", "container": "c", "outcome": "Terminated", "exitCode": 1, "log": "denied"}
    assert judge(term, observe(pod({"terminated": {"exitCode": 1}}), "c", "bind: denied", None)) == (True, None)
    assert judge(term, observe(pod({"terminated": {"exitCode": 0}}), "c", "denied", None))[1]
    assert judge(term, observe(pod({"running": {}}), "c", "", None)) == (False, None)
    assert judge(term, observe({"status": {}}, "c", "", None)) == (False, None)
    running = {"policies": "recommended", "container": "c", "outcome": "Running", "log": "answer"}
    assert judge(running, observe(pod({"running": {}}), "c", "starting", None)) == (False, None)
    assert judge(running, observe(pod({"running": {}}), "c", "answer from :53", None)) == (True, None)
    assert judge(running, observe(pod({"terminated": {"exitCode": 1}}), "c", "", None))[1]
    err = {"policies": "recommended", "container": "c", "outcome": "CreateContainerError", "message": "CAP_NET_ADMIN"}
    waiting = pod({"waiting": {"reason": "CreateContainerError", "message": "ping needs CAP_NET_ADMIN"}})
    assert judge(err, observe(waiting, "c", "", None)) == (True, None)
    assert judge(err, observe(waiting, "c", "", "Error: ping needs CAP_NET_ADMIN")) == (True, None)
    assert judge(err, observe(waiting, "c", "", "")) == (False, None)
    other = pod({"waiting": {"reason": "CreateContainerError", "message": "no such image"}})
    assert judge(err, observe(other, "c", "", None))[1]
    print("check.py self-test: 11 passed, 0 failed")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--self-test", action="store_true")
    p.add_argument("--expect", help="NAME.expect.yaml")
    p.add_argument("--policies", choices=["recommended", "none"], default="recommended")
    p.add_argument("--pod-json", help="the Pod object (JSON)")
    p.add_argument("--logs", help="directory with <container>.log files")
    p.add_argument("--messages", help="file of event messages or kubelet log lines")
    a = p.parse_args()
    if a.self_test:
        self_test()
        return SETTLED_OK
    if not (a.expect and a.pod_json and a.logs):
        p.error("--expect, --pod-json and --logs are required")
    with open(a.pod_json, encoding="utf-8") as f:
        pod = json.load(f)
    extra = None
    if a.messages:
        extra = open(a.messages, encoding="utf-8", errors="replace").read() if os.path.exists(a.messages) else ""
    return run(a.expect, a.policies, pod, a.logs, extra)


if __name__ == "__main__":
    sys.exit(main())

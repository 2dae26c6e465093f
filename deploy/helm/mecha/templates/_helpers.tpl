{{/* Names and labels shared by every template. */}}

{{- define "mecha.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* `<release>-mecha`, or the release name alone when it already says mecha. */}}
{{- define "mecha.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mecha.agent.fullname" -}}
{{- printf "%s-agent" (include "mecha.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mecha.aggregator.fullname" -}}
{{- printf "%s-aggregator" (include "mecha.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mecha.aggregator.secretName" -}}
{{- default (include "mecha.aggregator.fullname" .) .Values.aggregator.secretEnv.existingSecret }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "agent"). */}}
{{- define "mecha.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mecha.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mecha.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{ include "mecha.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{- define "mecha.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The agent's config: the values' config, forwarding to this release's aggregator unless it says otherwise. */}}
{{- define "mecha.agent.config" -}}
{{- $endpoint := printf "http://%s:4317" (include "mecha.aggregator.fullname" .) }}
{{- $defaults := dict "agent" (dict "forward" (dict "endpoint" $endpoint)) }}
{{- toYaml (mergeOverwrite $defaults (deepCopy .Values.agent.config)) }}
{{- end }}

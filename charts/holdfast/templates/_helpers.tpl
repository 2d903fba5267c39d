{{/*
The prefix of every object's name. A release named after the chart
("holdfast") gives the names config/default uses: holdfast-operator,
holdfast-leader-election. Short enough that "-leader-election" still fits
in 63 characters.
*/}}
{{- define "holdfast.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 46 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 46 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "holdfast.operatorName" -}}
{{- include "holdfast.fullname" . }}-operator
{{- end -}}

{{- define "holdfast.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "holdfast.operatorName" .) -}}
{{- end -}}

{{/*
The name label is config/default's, so tools that find the operator's pods
by it work with either install; the instance label keeps two releases apart.
*/}}
{{- define "holdfast.selectorLabels" -}}
app.kubernetes.io/name: holdfast-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "holdfast.labels" -}}
{{ include "holdfast.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* <registry>/<repository>:<tag>; no registry, no leading slash. */}}
{{- define "holdfast.imageRef" -}}
{{- if .registry }}{{ .registry }}/{{ end }}{{ .repository }}:{{ .tag }}
{{- end -}}

{{- define "holdfast.image" -}}
{{- include "holdfast.imageRef" (dict
  "registry" .Values.image.registry
  "repository" .Values.image.repository
  "tag" (.Values.image.tag | default .Chart.AppVersion)) -}}
{{- end -}}

{{- define "holdfast.instanceImage" -}}
{{- include "holdfast.imageRef" (dict
  "registry" (.Values.instanceImage.registry | default .Values.image.registry)
  "repository" (.Values.instanceImage.repository | default .Values.image.repository)
  "tag" (.Values.instanceImage.tag | default .Chart.AppVersion)) -}}
{{- end -}}

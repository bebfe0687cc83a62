{{/* The roles `clawx serve` runs, each a Deployment and a Service. */}}
{{- define "clawx.roles" -}}
["gateway", "identity", "messaging", "groups", "verify"]
{{- end }}

{{/* Which roles call which: the ingress of each service and the egress of its callers. */}}
{{- define "clawx.callers" -}}
{"identity": ["gateway", "messaging", "groups", "verify"], "messaging": ["gateway", "groups", "verify"], "groups": ["gateway"], "verify": ["gateway"], "gateway": []}
{{- end }}

{{- define "clawx.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clawx.fullname" -}}
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

{{/* The name of a role's Deployment and Service: <fullname>-<role>. */}}
{{- define "clawx.roleName" -}}
{{- printf "%s-%s" (include "clawx.fullname" .root | trunc 52 | trimSuffix "-") .role }}
{{- end }}

{{- define "clawx.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clawx.labels" -}}
helm.sh/chart: {{ include "clawx.chart" . }}
app.kubernetes.io/name: {{ include "clawx.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: clawx
{{- end }}

{{/* Labels of a role: dict "root" $ "role" "gateway". */}}
{{- define "clawx.roleLabels" -}}
{{ include "clawx.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "clawx.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clawx.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "clawx.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "clawx.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "clawx.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "clawx.configMapName" -}}
{{- printf "%s-config" (include "clawx.fullname" .) }}
{{- end }}

{{- define "clawx.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "clawx.fullname" . }}
{{- end }}
{{- end }}

{{/*
A value of the ConfigMap as the binary parses it: integers without an exponent (YAML numbers
reach templates as floats), lists comma-separated.
*/}}
{{- define "clawx.configValue" -}}
{{- if kindIs "slice" . }}
{{- join "," . }}
{{- else if and (kindIs "float64" .) (eq (floor .) .) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
The non-secret CLAWX_* variables, from .Values.config (key in upper snake case). Without
config.mcpAllowedHosts, /mcp answers the Ingress hosts (its DNS-rebinding protection would
otherwise refuse every host but loopback).
*/}}
{{- define "clawx.configData" -}}
{{- range $key, $value := .Values.config }}
{{- if not (kindIs "invalid" $value) }}
{{ printf "CLAWX_%s" ($key | snakecase | upper) }}: {{ include "clawx.configValue" $value | quote }}
{{- end }}
{{- end }}
{{- if and (not (hasKey .Values.config "mcpAllowedHosts")) .Values.ingress.enabled }}
{{- $hosts := list }}
{{- range .Values.ingress.hosts }}
{{- $hosts = append $hosts .host }}
{{- end }}
{{- with $hosts }}
CLAWX_MCP_ALLOWED_HOSTS: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The secret keys the chart creates, by variable name; required ones fail the rendering when
missing (unless existingSecret names a Secret of the operator's).
*/}}
{{- define "clawx.secretData" -}}
{{- $s := .Values.secrets }}
{{- $msg := "is required unless secrets.existingSecret names a Secret holding it" }}
CLAWX_DATABASE_URL: {{ required (printf "secrets.databaseUrl %s" $msg) $s.databaseUrl | quote }}
CLAWX_REDIS_URL: {{ required (printf "secrets.redisUrl %s" $msg) $s.redisUrl | quote }}
CLAWX_JWT_SECRET: {{ required (printf "secrets.jwtSecret %s" $msg) $s.jwtSecret | quote }}
CLAWX_MASTER_KEY: {{ required (printf "secrets.masterKey %s" $msg) $s.masterKey | quote }}
{{- if lt (len $s.jwtSecret) 32 }}
{{- fail "secrets.jwtSecret must be at least 32 characters (e.g. openssl rand -hex 32)" }}
{{- end }}
{{- with $s.masterKeysRetired }}
CLAWX_MASTER_KEYS_RETIRED: {{ . | quote }}
{{- end }}
{{- with $s.twitterBearerToken }}
CLAWX_TWITTER_BEARER_TOKEN: {{ . | quote }}
{{- end }}
{{- with $s.pushWebhookSecret }}
CLAWX_PUSH_WEBHOOK_SECRET: {{ . | quote }}
{{- end }}
{{- with $s.pushFcmServiceAccount }}
CLAWX_PUSH_FCM_SERVICE_ACCOUNT: {{ . | quote }}
{{- end }}
{{- range $chain, $url := $s.chainRpcUrls }}
CLAWX_CHAIN_RPC_{{ $chain }}: {{ $url | quote }}
{{- end }}
{{- end }}

{{/* The chain ids whose RPC URL the groups role reads. */}}
{{- define "clawx.chainIds" -}}
{{- if .Values.secrets.existingSecret }}
{{- $ids := list }}
{{- range .Values.secrets.existingSecretChainIds }}
{{- $ids = append $ids (include "clawx.configValue" .) }}
{{- end }}
{{- toJson $ids }}
{{- else }}
{{- toJson (keys .Values.secrets.chainRpcUrls | sortAlpha) }}
{{- end }}
{{- end }}

{{/* One env entry read from the release's Secret: dict "root" $ "name" VAR "optional" bool. */}}
{{- define "clawx.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "clawx.secretName" .root }}
      key: {{ .name }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/* The secret variables a role reads, and only those: dict "root" $ "role" ROLE. */}}
{{- define "clawx.roleSecretEnv" -}}
{{- $root := .root }}
{{- $role := .role }}
{{- include "clawx.secretEnv" (dict "root" $root "name" "CLAWX_JWT_SECRET") }}
{{ include "clawx.secretEnv" (dict "root" $root "name" "CLAWX_REDIS_URL") }}
{{- if ne $role "gateway" }}
{{ include "clawx.secretEnv" (dict "root" $root "name" "CLAWX_DATABASE_URL") }}
{{- end }}
{{- if or (eq $role "identity") (eq $role "messaging") }}
{{ include "clawx.secretEnv" (dict "root" $root "name" "CLAWX_MASTER_KEY") }}
{{ include "clawx.secretEnv" (dict "root" $root "name" "CLAWX_MASTER_KEYS_RETIRED" "optional" true) }}
{{- end }}
{{- if eq $role "messaging" }}
{{ include "clawx.secretEnv" (dict "root" $root "name" "CLAWX_PUSH_WEBHOOK_SECRET" "optional" true) }}
{{ include "clawx.secretEnv" (dict "root" $root "name" "CLAWX_PUSH_FCM_SERVICE_ACCOUNT" "optional" true) }}
{{- end }}
{{- if eq $role "verify" }}
{{ include "clawx.secretEnv" (dict "root" $root "name" "CLAWX_TWITTER_BEARER_TOKEN" "optional" true) }}
{{- end }}
{{- if eq $role "groups" }}
{{- range $chain := include "clawx.chainIds" $root | fromJsonArray }}
{{ include "clawx.secretEnv" (dict "root" $root "name" (printf "CLAWX_CHAIN_RPC_%v" $chain)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The service URLs a role calls. */}}
{{- define "clawx.upstreamEnv" -}}
{{- $root := .root }}
{{- range $callee := list "identity" "messaging" "groups" "verify" }}
{{- if has $.role (index (include "clawx.callers" $root | fromJson) $callee) }}
- name: CLAWX_{{ upper $callee }}_URL
  value: {{ printf "http://%s:%v" (include "clawx.roleName" (dict "root" $root "role" $callee)) (index $root.Values $callee "port") | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The grace period must outlast the preStop sleep and the drain. */}}
{{- define "clawx.checkGracePeriod" -}}
{{- $drain := max 10 (int64 (default 15 .Values.config.upstreamTimeoutSecs)) }}
{{- if le (int64 .Values.terminationGracePeriodSeconds) (add (int64 .Values.preStopSleepSeconds) $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed preStopSleepSeconds (%v) plus the drain (%v s: the longest upstream call)" .Values.terminationGracePeriodSeconds .Values.preStopSleepSeconds $drain) }}
{{- end }}
{{- end }}

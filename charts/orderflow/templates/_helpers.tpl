{{/*
Names. Helpers are namespaced `orderflow.*` so they never collide with a parent chart's.
*/}}
{{- define "orderflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "orderflow.fullname" -}}
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

{{/* "<fullname>-<component>", e.g. orderflow-ingest. Call with (dict "ctx" $ "component" "ingest"). */}}
{{- define "orderflow.componentName" -}}
{{- printf "%s-%s" (include "orderflow.fullname" .ctx | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "orderflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "orderflow.labels" -}}
helm.sh/chart: {{ include "orderflow.chart" . }}
app.kubernetes.io/name: {{ include "orderflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: orderflow
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one workload's objects. Call with (dict "ctx" $ "component" "worker"). */}}
{{- define "orderflow.componentLabels" -}}
{{ include "orderflow.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels of one workload: stable across upgrades, so never the version. */}}
{{- define "orderflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orderflow.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* image reference of a workload's image values; the tag defaults to the chart's appVersion. */}}
{{- define "orderflow.image" -}}
{{- $img := .image -}}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .ctx.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{- define "orderflow.worker.serviceAccountName" -}}
{{- if .Values.worker.serviceAccount.create }}
{{- default (include "orderflow.componentName" (dict "ctx" . "component" "worker")) .Values.worker.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.worker.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the NATS URL and credentials: an existing one, or the one this chart creates. */}}
{{- define "orderflow.nats.secretName" -}}
{{- default (include "orderflow.componentName" (dict "ctx" . "component" "nats")) .Values.nats.existingSecret }}
{{- end }}

{{/*
ORDERFLOW_* settings from a values map whose keys are the env suffix in lowerCamelCase:
drainTimeoutS -> ORDERFLOW_DRAIN_TIMEOUT_S, ingestProcesses -> ORDERFLOW_INGEST_PROCESSES.
values.schema.json lists the keys each map accepts, so a typo fails at install time instead of
crash-looping the pod (the settings loader rejects unknown ORDERFLOW_* names).
Null values are skipped: the application's default applies.
*/}}
{{- define "orderflow.configEnv" -}}
{{- range $key, $value := . }}
{{- if not (kindIs "invalid" $value) }}
- name: ORDERFLOW_{{ $key | snakecase | upper }}
  value: {{ include "orderflow.str" $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* A value as env text. YAML numbers arrive as float64: print 1209600, not 1.2096e+06. */}}
{{- define "orderflow.str" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- . | int64 }}
{{- else }}
{{- . | toString }}
{{- end }}
{{- end }}

{{/* NATS connection env, read from the Secret; the creds file is mounted by the pod template. */}}
{{- define "orderflow.nats.env" -}}
{{- $secret := include "orderflow.nats.secretName" . -}}
{{- $keys := .Values.nats.secretKeys -}}
- name: ORDERFLOW_NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.url }}
{{- if eq .Values.nats.auth.mode "userPassword" }}
- name: ORDERFLOW_NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.user }}
- name: ORDERFLOW_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.password }}
{{- else if eq .Values.nats.auth.mode "creds" }}
- name: ORDERFLOW_NATS_CREDS_FILE
  value: /etc/orderflow/nats/{{ $keys.creds }}
{{- end }}
{{- end }}

{{- define "orderflow.nats.volumeMounts" -}}
{{- if eq .Values.nats.auth.mode "creds" }}
- name: nats-creds
  mountPath: /etc/orderflow/nats
  readOnly: true
{{- end }}
{{- end }}

{{- define "orderflow.nats.volumes" -}}
{{- if eq .Values.nats.auth.mode "creds" }}
- name: nats-creds
  secret:
    secretName: {{ include "orderflow.nats.secretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.nats.secretKeys.creds }}
        path: {{ .Values.nats.secretKeys.creds }}
{{- end }}
{{- end }}

{{/*
Worker terminationGracePeriodSeconds, derived from the drain timeout and never set on its own
(SPEC §6). After SIGTERM the worker:
  1. stops fetching and keeps heart-beating its running jobs for up to drainTimeoutS; the jobs
     still running handback_lead = min(2 s, 10% of drainTimeoutS) before that deadline are naked
     back to the queue, so the drain phase ends by drainTimeoutS at the latest;
  2. drains its NATS connection (flushes the acks/naks just sent): natsDrainMarginS;
  3. exits 0. safetyMarginS covers process start-up of the shutdown path, logging, a slow node.
  grace = ceil(drainTimeoutS) + natsDrainMarginS + safetyMarginS
  defaults: 60 + 5 + 5 = 70 s.
The kubelet sends SIGKILL at the end of the grace period: if it were shorter than the drain, a
long job would be killed instead of handed back and would only return after ack_wait.
*/}}
{{- define "orderflow.worker.terminationGracePeriodSeconds" -}}
{{- $drain := .Values.worker.config.drainTimeoutS | float64 -}}
{{- $t := .Values.worker.termination -}}
{{- add (ceil $drain | int) ($t.natsDrainMarginS | int) ($t.safetyMarginS | int) -}}
{{- end }}

{{/*
Ingest terminationGracePeriodSeconds. After SIGTERM the ingest answers /readyz with 503 at once and
keeps serving for shutdownDelayS (time for the endpoint removal to reach every kube-proxy and
ingress), then stops accepting and finishes in-flight requests within shutdownTimeoutS, then
drains its NATS connection; marginS covers that drain and the exit.
  grace = ceil(shutdownDelayS + shutdownTimeoutS) + marginS
  defaults: ceil(5 + 10) + 5 = 20 s.
There is deliberately no preStop sleep: the application's own shutdown delay does that job and
a preStop sleep would add to it (the kubelet runs preStop before sending SIGTERM).
*/}}
{{- define "orderflow.ingest.terminationGracePeriodSeconds" -}}
{{- $c := .Values.ingest.config -}}
{{- $delay := $c.shutdownDelayS | float64 -}}
{{- $timeout := $c.shutdownTimeoutS | float64 -}}
{{- add (ceil (addf $delay $timeout) | int) (.Values.ingest.termination.marginS | int) -}}
{{- end }}

{{/* Pod-level security defaults shared by every pod of the chart, including the test pod. */}}
{{- define "orderflow.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "orderflow.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* NetworkPolicy egress shared by both workloads: NATS and DNS. */}}
{{- define "orderflow.networkPolicy.egressNatsDns" -}}
# NATS client port.
- ports:
    - port: {{ .Values.nats.port }}
      protocol: TCP
  {{- with .Values.networkPolicy.natsTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# DNS, to resolve the NATS service name.
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

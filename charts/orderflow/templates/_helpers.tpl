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
{{/*
The Secret with the ingest's API key file: existingSecret, else <fullname>-api-keys (the chart's
when ingest.auth.keys is set, else the operator's).
*/}}
{{- define "orderflow.ingest.apiKeysSecret" -}}
{{- default (printf "%s-api-keys" (include "orderflow.fullname" .)) .Values.ingest.auth.existingSecret }}
{{- end }}

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

{{/*
NATS: the URL as a plain value (it carries no credentials); the identity (password, creds or nkey
seed file) and the TLS files from Secrets mounted read-only as files, never env values
(docs/kubernetes.md). Each takes (dict "ctx" $ "component" "ingest|worker"): a component may have
a Secret of its own, hence a NATS identity of its own.
*/}}
{{- define "orderflow.nats.identitySecret" -}}
{{- $n := .ctx.Values.nats -}}
{{- default (include "orderflow.nats.secretName" .ctx) (get $n.componentSecrets .component) }}
{{- end }}

{{- define "orderflow.nats.tlsSecret" -}}
{{- $t := .ctx.Values.nats.tls -}}
{{- default $t.secretName (get $t.componentSecrets .component) }}
{{- end }}

{{- define "orderflow.nats.env" -}}
{{- $n := .ctx.Values.nats -}}
{{- $k := $n.secretKeys -}}
- name: ORDERFLOW_NATS_URL
  value: {{ required "nats.url is required" $n.url | quote }}
{{- if eq $n.auth.mode "userPassword" }}
- name: ORDERFLOW_NATS_USER
  value: {{ required "nats.auth.user is required for auth.mode userPassword" $n.auth.user | quote }}
- name: ORDERFLOW_NATS_PASSWORD_FILE
  value: /etc/orderflow/nats/{{ $k.password }}
{{- else if eq $n.auth.mode "creds" }}
- name: ORDERFLOW_NATS_CREDS_FILE
  value: /etc/orderflow/nats/{{ $k.creds }}
{{- else if eq $n.auth.mode "nkey" }}
- name: ORDERFLOW_NATS_NKEY_SEED_FILE
  value: /etc/orderflow/nats/{{ $k.nkeySeed }}
{{- end }}
{{- if $n.tls.enabled }}
- name: ORDERFLOW_NATS_CA_FILE
  value: /etc/orderflow/nats-tls/{{ $n.tls.keys.ca }}
{{- if $n.tls.clientCertificate }}
- name: ORDERFLOW_NATS_CERT_FILE
  value: /etc/orderflow/nats-tls/{{ $n.tls.keys.cert }}
- name: ORDERFLOW_NATS_KEY_FILE
  value: /etc/orderflow/nats-tls/{{ $n.tls.keys.key }}
{{- end }}
{{- with $n.tls.serverName }}
- name: ORDERFLOW_NATS_TLS_HOSTNAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "orderflow.nats.volumeMounts" -}}
{{- $n := .ctx.Values.nats -}}
{{- if ne $n.auth.mode "none" }}
- name: nats-identity
  mountPath: /etc/orderflow/nats
  readOnly: true
{{- end }}
{{- if $n.tls.enabled }}
- name: nats-tls
  mountPath: /etc/orderflow/nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "orderflow.nats.volumes" -}}
{{- $n := .ctx.Values.nats -}}
{{- $k := $n.secretKeys -}}
{{- if ne $n.auth.mode "none" }}
{{- $key := get (dict "userPassword" $k.password "creds" $k.creds "nkey" $k.nkeySeed) $n.auth.mode }}
- name: nats-identity
  secret:
    secretName: {{ include "orderflow.nats.identitySecret" . }}
    defaultMode: 0440
    items:
      - key: {{ $key }}
        path: {{ $key }}
{{- end }}
{{- if $n.tls.enabled }}
- name: nats-tls
  secret:
    secretName: {{ required "nats.tls.secretName (or nats.tls.componentSecrets) is required with nats.tls.enabled" (include "orderflow.nats.tlsSecret" .) }}
    defaultMode: 0440
    items:
      - key: {{ $n.tls.keys.ca }}
        path: {{ $n.tls.keys.ca }}
      {{- if $n.tls.clientCertificate }}
      - key: {{ $n.tls.keys.cert }}
        path: {{ $n.tls.keys.cert }}
      - key: {{ $n.tls.keys.key }}
        path: {{ $n.tls.keys.key }}
      {{- end }}
{{- end }}
{{- end }}

{{/*
The NATS connection drain budget, seconds (config.natsDrainTimeoutS, ORDERFLOW_NATS_DRAIN_TIMEOUT_S):
one value read by both services and by both grace periods below, whole seconds for the arithmetic.
*/}}
{{- define "orderflow.natsDrainSeconds" -}}
{{- .Values.config.natsDrainTimeoutS | float64 | ceil | int -}}
{{- end }}

{{/*
Worker terminationGracePeriodSeconds, derived from the drain timeout and never set on its own
(docs/kubernetes.md, "Shutdown timing"); a Deployment of its own (worker.ownDeployments) derives
its own from its own drainTimeoutS and safetyMarginS. After SIGTERM the worker:
  1. stops fetching and keeps heart-beating its running jobs for up to drainTimeoutS; the jobs
     still running handback_lead = min(2 s, 10% of drainTimeoutS) before that deadline are naked
     back to the queue, so the drain phase ends by drainTimeoutS at the latest;
  2. drains its NATS connection (flushes the acks/naks just sent) within natsDrainTimeoutS;
  3. exits 0. safetyMarginS covers process start-up of the shutdown path, logging, a slow node.
  grace = ceil(worker.config.drainTimeoutS) + ceil(config.natsDrainTimeoutS) + worker.termination.safetyMarginS
  defaults: 60 + 5 + 5 = 70 s.
The kubelet sends SIGKILL at the end of the grace period: if it were shorter than the drain, a
long job would be killed instead of handed back and would only return after ack_wait.
*/}}
{{- define "orderflow.worker.terminationGracePeriodSeconds" -}}
{{- /* called with the root context (the main worker), or (dict "ctx" $ "v" <a worker Deployment's values>) */ -}}
{{- $root := .ctx | default . -}}
{{- $v := .v | default $root.Values.worker -}}
{{- $drain := $v.config.drainTimeoutS | float64 -}}
{{- add (ceil $drain | int) (include "orderflow.natsDrainSeconds" $root | int) ($v.termination.safetyMarginS | int) -}}
{{- end }}

{{/*
Ingest terminationGracePeriodSeconds. After SIGTERM the ingest answers /readyz with 503 at once and
keeps serving for shutdownDelayS (time for the endpoint removal to reach every kube-proxy and
ingress), then stops accepting and finishes in-flight requests within shutdownTimeoutS, then
drains its NATS connection within natsDrainTimeoutS and exits; safetyMarginS covers the exit.
  grace = ceil(shutdownDelayS + shutdownTimeoutS) + ceil(config.natsDrainTimeoutS) + ingest.termination.safetyMarginS
  defaults: ceil(5 + 10) + 5 + 5 = 25 s.
There is deliberately no preStop sleep: the application's own shutdown delay does that job and
a preStop sleep would add to it (the kubelet runs preStop before sending SIGTERM).
*/}}
{{- define "orderflow.ingest.terminationGracePeriodSeconds" -}}
{{- $c := .Values.ingest.config -}}
{{- $delay := $c.shutdownDelayS | float64 -}}
{{- $timeout := $c.shutdownTimeoutS | float64 -}}
{{- add (ceil (addf $delay $timeout) | int) (include "orderflow.natsDrainSeconds" . | int) (.Values.ingest.termination.safetyMarginS | int) -}}
{{- end }}

{{/*
Worker liveness probe, derived from worker.config.ackWaitS (A) so that a worker whose event loop
is blocked (a handler making a sync call) is restarted before any of its jobs is redelivered to a
second worker while the blocked one may still run it:
  - a running job is never silent for more than A/2 (in_progress when its last one is A/3 old,
    checked every A/6: worker/pool.py), so when the loop blocks at t = 0 every job's message has
    at least A/2 left before JetStream redelivers it (A after the job's last heartbeat);
  - /healthz answers 503 once the loop has not run for loop_block_limit = A/4 (worker/timing.py);
  - the kubelet sees the failureThreshold-th failed probe at most periodSeconds x failureThreshold
    later, each probe taking up to timeoutSeconds;
  - it then sends SIGTERM, which a blocked loop cannot act on, and SIGKILL after the probe-level
    terminationGracePeriodSeconds. The dead process's connection closes, no heartbeat ever follows.
  restart by  A/4 + periodSeconds x failureThreshold + timeoutSeconds + terminationGracePeriodSeconds
  which must stay below A/2 (a stricter bound than "below A": it also covers the heartbeat gap). Hence
  periodSeconds = the largest whole number with
    periodSeconds x failureThreshold < A/4 - timeoutSeconds - terminationGracePeriodSeconds,
  i.e. ceil((A/4 - timeoutSeconds - grace) / failureThreshold) - 1, capped at maxPeriodSeconds.
  defaults (A = 30, failureThreshold 2, timeout 1, grace 1): ceil(5.5 / 2) - 1 = 2 s; restart by
  7.5 + 4 + 1 + 1 = 13.5 s < 15 s. Rendering fails when no period of at least 1 s fits.
This is the consumer's ack wait as configured here; an operator who edits ack_wait on the server
(the worker paces its heartbeats from the server's value) must re-derive these numbers.
*/}}
{{- define "orderflow.worker.livenessPeriodSeconds" -}}
{{- $root := .ctx | default . -}}
{{- $v := .v | default $root.Values.worker -}}
{{- $p := $v.livenessProbe -}}
{{- $ack := $v.config.ackWaitS | float64 -}}
{{- $slack := subf (divf $ack 4.0) (addf ($p.timeoutSeconds | float64) ($p.terminationGracePeriodSeconds | float64)) -}}
{{- $period := sub (ceil (divf $slack ($p.failureThreshold | float64)) | int) 1 -}}
{{- if lt $period 1 }}
{{- fail (printf "worker.config.ackWaitS=%v is too short for a liveness probe that restarts a blocked worker before its jobs' ack wait runs out: it needs ackWaitS/4 > livenessProbe.timeoutSeconds (%v) + terminationGracePeriodSeconds (%v) + failureThreshold (%v) x 1 s; raise ackWaitS or lower those (see _helpers.tpl)" $v.config.ackWaitS $p.timeoutSeconds $p.terminationGracePeriodSeconds $p.failureThreshold) }}
{{- end }}
{{- min $period ($p.maxPeriodSeconds | int) -}}
{{- end }}

{{/* Pod-level security defaults shared by every pod of the chart, including the test pod. */}}
{{- define "orderflow.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "orderflow.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* NetworkPolicy egress shared by both workloads: NATS and DNS, each to its peers only. */}}
{{- define "orderflow.networkPolicy.egressNatsDns" -}}
# NATS client port.
- ports:
    - port: {{ .Values.nats.port }}
      protocol: TCP
  {{- with .Values.networkPolicy.natsTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{ include "orderflow.networkPolicy.egressDns" . }}
{{- end }}

{{/* The collector's port, with tracing on: the OTLP exporter's only way out. */}}
{{- define "orderflow.networkPolicy.egressTracing" -}}
{{- if .Values.tracing.enabled }}
# The OpenTelemetry collector (tracing.enabled).
- ports:
    - port: {{ .Values.tracing.collectorPort }}
      protocol: TCP
  {{- with .Values.tracing.collectorTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The standard OTEL_* variables of tracing.* (orderflow/otel.py reads them; nothing secret). */}}
{{- define "orderflow.tracingEnv" -}}
{{- $t := .Values.tracing }}
{{- if $t.enabled }}
- name: OTEL_TRACES_EXPORTER
  value: otlp
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ required "tracing.endpoint is required when tracing.enabled" $t.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $t.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
{{- if has $t.sampler (list "traceidratio" "parentbased_traceidratio") }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $t.ratio | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* DNS, to resolve the NATS and ingest service names. */}}
{{- define "orderflow.networkPolicy.egressDns" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
  {{- with .Values.networkPolicy.dnsTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
The worker's own-pod admission rules (variables and validations of worker-admission-policy.yaml;
kustomize/components/worker-admission-policy carries the same text, and a test holds them equal).
A bound service account token names its pod in userInfo.extra; every check compares the object
after the update with the one before it.
*/}}
{{- define "orderflow.worker.ownPodRules" -}}
variables:
  - name: costKey
    expression: "'controller.kubernetes.io/pod-deletion-cost'"
  - name: callerPod
    expression: >-
      'authentication.kubernetes.io/pod-name' in request.userInfo.extra
      ? request.userInfo.extra['authentication.kubernetes.io/pod-name'] : []
  - name: before
    expression: "has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {}"
  - name: after
    expression: "has(object.metadata.annotations) ? object.metadata.annotations : {}"
validations:
  - expression: variables.callerPod == [object.metadata.name]
    message: the worker may update only its own pod (the pod its token is bound to)
    reason: Forbidden
  - expression: object.spec == oldObject.spec
    message: the worker may not change a pod's spec (images, activeDeadlineSeconds, ...)
    reason: Forbidden
  - expression: >-
      (has(object.metadata.labels) ? object.metadata.labels : {})
      == (has(oldObject.metadata.labels) ? oldObject.metadata.labels : {})
    message: the worker may not change a pod's labels (they select Services and ReplicaSets)
    reason: Forbidden
  - expression: >-
      (has(object.metadata.ownerReferences) ? object.metadata.ownerReferences : [])
      == (has(oldObject.metadata.ownerReferences) ? oldObject.metadata.ownerReferences : [])
      && (has(object.metadata.finalizers) ? object.metadata.finalizers : [])
      == (has(oldObject.metadata.finalizers) ? oldObject.metadata.finalizers : [])
    message: the worker may not change a pod's owners or finalizers
    reason: Forbidden
  - expression: >-
      variables.after.all(k, k == variables.costKey
      || (k in variables.before && variables.before[k] == variables.after[k]))
      && variables.before.all(k, k == variables.costKey || k in variables.after)
    message: the worker may change no annotation but controller.kubernetes.io/pod-deletion-cost
    reason: Forbidden
  - expression: >-
      !(variables.costKey in variables.after)
      || variables.after[variables.costKey].matches('^-?[0-9]{1,10}$')
    message: controller.kubernetes.io/pod-deletion-cost must be a whole number
    reason: Invalid
{{- end }}

{{/*
checkov's skip annotations (checkov.io/skip*: "CHECK_ID=reason"; no "=" in a reason, checkov splits
on it), one per check a workload fails on purpose. Each is rendered only while its reason holds: set
a digest, pullPolicy Always or a CPU limit and the skip goes, so checkov checks the object again.
tests/k8s/test_scanners.py fails on any failure without one. Call with the image values.
*/}}
{{- define "orderflow.checkovImageSkips" -}}
{{- if not .digest }}
checkov.io/skip-image-digest: "CKV_K8S_43=the images are yours (make images) so no digest exists before your build; pin it with the image.digest value"
{{- end }}
{{- if ne .pullPolicy "Always" }}
checkov.io/skip-pull-policy: "CKV_K8S_15=IfNotPresent: a release tag is never rebuilt and a digest cannot change; Always adds a registry round trip to every pod start"
{{- end }}
{{- end }}

{{/* CKV_K8S_11 while resources.limits.cpu is unset. Call with the workload's resources. */}}
{{- define "orderflow.checkovCpuLimitSkip" -}}
{{- if not (dig "limits" "cpu" "" .) }}
checkov.io/skip-cpu-limit: "CKV_K8S_11=no CPU limit on purpose: CFS throttling adds latency; requests.cpu reserves the share and drives the autoscaler"
{{- end }}
{{- end }}

{{/* CKV_K8S_38 while the worker mounts its token. Call with the worker values. */}}
{{- define "orderflow.checkovTokenSkip" -}}
{{- if .podDeletionCost.enabled }}
checkov.io/skip-token: "CKV_K8S_38=the token patches this pod's deletion-cost annotation and the own-pod admission policy allows nothing else; not mounted with podDeletionCost off"
{{- end }}
{{- end }}

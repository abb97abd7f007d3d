{{/*
One worker Deployment: (dict "ctx" $ "g" <a group of orderflow.worker.groups>). The main one
("worker") and each of worker.ownDeployments ("worker-<type>") are this one template, so what is
added to the worker's pod (env, volumes) is added once, here, for all of them; `$v` is the
Deployment's own values (the worker block, with its overrides merged over it).
*/}}
{{- define "orderflow.worker.deployment" -}}
{{- $ctx := .ctx }}
{{- $v := .g.values }}
{{- $types := .g.types }}
{{- $c := dict "ctx" $ctx "component" .g.name }}
{{- /* ORDERFLOW_MAX_ATTEMPTS is the worker's other name for ORDERFLOW_MAX_DELIVER: both set and
       different stop the worker at start-up, so say it at install time instead. */}}
{{- range $v.extraEnv }}
{{- if and (eq .name "ORDERFLOW_MAX_ATTEMPTS") (not (kindIs "invalid" $v.config.maxDeliver)) }}
{{- fail "worker.extraEnv sets ORDERFLOW_MAX_ATTEMPTS, the worker's other name for worker.config.maxDeliver (rendered as ORDERFLOW_MAX_DELIVER): set worker.config.maxDeliver instead" }}
{{- end }}
{{- end }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "orderflow.componentName" $c }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "orderflow.componentLabels" $c | nindent 4 }}
  {{- with print (include "orderflow.checkovImageSkips" $v.image) (include "orderflow.checkovCpuLimitSkip" $v.resources) (include "orderflow.checkovTokenSkip" $v) | trim }}
  annotations:
    {{- . | nindent 4 }}
  {{- end }}
spec:
  {{- if eq $v.autoscaling.mode "none" }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    {{- toYaml $v.strategy | nindent 4 }}
  selector:
    matchLabels:
      {{- include "orderflow.selectorLabels" $c | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "orderflow.componentLabels" $c | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # Rolls the pods when the NATS Secret changes (values.yaml, nats.secretRevision: a
        # revision, since any hash of the Secret would let whoever reads pods guess the password).
        orderflow.io/nats-secret-revision: {{ $ctx.Values.nats.secretRevision | toString | quote }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "orderflow.worker.serviceAccountName" $ctx }}
      # The token is needed only to patch this pod's deletion-cost annotation.
      automountServiceAccountToken: {{ $v.podDeletionCost.enabled }}
      # Service links would inject e.g. ORDERFLOW_WORKER_PORT=tcp://... for a Service named
      # orderflow-worker, and the settings loader rejects unknown ORDERFLOW_* names.
      enableServiceLinks: false
      # Derived from this Deployment's config.drainTimeoutS, never set on its own:
      # grace = ceil(drainTimeoutS) + ceil(config.natsDrainTimeoutS) + safetyMarginS (see _helpers.tpl).
      terminationGracePeriodSeconds: {{ include "orderflow.worker.terminationGracePeriodSeconds" (dict "ctx" $ctx "v" $v) }}
      securityContext:
        {{- include "orderflow.podSecurityContext" $ctx | nindent 8 }}
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      containers:
        - name: worker
          image: {{ include "orderflow.image" (dict "ctx" $ctx "image" $v.image) }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ $v.port }}
              protocol: TCP
          env:
            - name: ORDERFLOW_HTTP_PORT
              value: {{ $v.port | quote }}
            # Downward API: the pod-deletion-cost keeper patches its own pod, and the worker id
            # (ORDERFLOW_WORKER_ID) defaults to the pod name.
            - name: ORDERFLOW_POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: ORDERFLOW_POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            - name: ORDERFLOW_POD_DELETION_COST
              value: {{ ternary "auto" "off" $v.podDeletionCost.enabled | quote }}
            - name: ORDERFLOW_POD_DELETION_COST_MIN_INTERVAL_S
              value: {{ include "orderflow.str" $v.podDeletionCost.minIntervalS | quote }}
            {{- include "orderflow.nats.env" (dict "ctx" $ctx "component" "worker") | nindent 12 }}
            {{- include "orderflow.configEnv" $ctx.Values.config | trim | nindent 12 }}
            {{- include "orderflow.configEnv" $v.config | trim | nindent 12 }}
            {{- if $ctx.Values.worker.ownDeployments }}
            # The task types this Deployment runs (the others run in their own Deployments).
            - name: ORDERFLOW_WORKER_TYPES
              value: {{ join "," $types | quote }}
            {{- end }}
            {{- if $ctx.Values.tracing.enabled }}
            {{- include "orderflow.tracingEnv" $ctx | trim | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          # A blocked event loop turns /healthz to 503 after ackWaitS/4; the period is derived from
          # ackWaitS so that the restart comes before any job's ack wait runs out (see _helpers.tpl).
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: {{ include "orderflow.worker.livenessPeriodSeconds" (dict "ctx" $ctx "v" $v) }}
            timeoutSeconds: {{ $v.livenessProbe.timeoutSeconds }}
            failureThreshold: {{ $v.livenessProbe.failureThreshold }}
            terminationGracePeriodSeconds: {{ $v.livenessProbe.terminationGracePeriodSeconds }}
          # 503 while draining or while NATS is unreachable. Nothing routes work through the
          # Service, so readiness gates rollouts only.
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 5
            timeoutSeconds: 2
            failureThreshold: 2
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 1
            failureThreshold: 30
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- include "orderflow.containerSecurityContext" $ctx | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- include "orderflow.nats.volumeMounts" (dict "ctx" $ctx "component" "worker") | nindent 12 }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $v.tmpSizeLimit }}
        {{- include "orderflow.nats.volumes" (dict "ctx" $ctx "component" "worker") | nindent 8 }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

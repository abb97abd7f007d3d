{{/*
The task types of config.taskTypes ("name[:concurrency[:timeout_s]]", comma-separated): the
names, as a JSON list, in their order.
*/}}
{{- define "orderflow.taskTypes" -}}
{{- $names := list -}}
{{- range splitList "," .Values.config.taskTypes -}}
{{- $name := splitList ":" (trim .) | first | trim -}}
{{- if $name }}{{ $names = append $names $name }}{{ end -}}
{{- end -}}
{{- toJson $names -}}
{{- end }}

{{/*
The worker Deployments, as a JSON list of {name, types, consumers, values}, the main one first:
  - "worker" runs every task type not in worker.ownDeployments, with the worker values;
  - each key of worker.ownDeployments is a task type with a Deployment of its own,
    "worker-<type>", its values the worker block with the key's overrides merged over it (so its
    own drainTimeoutS gives it its own grace period, its own autoscaling its own scaler).
Consumers are derived as orderflow/contract.py names them (consumer_name), never typed by hand:
`workers` with one task type, `workers-<type>` each with several. worker.autoscaling.consumer may
name one of them (a scaler on that consumer alone); anything else fails here, at `helm template`
time, as does an ownDeployments key that is not a task type or one that leaves the main
Deployment nothing to run.
*/}}
{{- define "orderflow.worker.groups" -}}
{{- $types := include "orderflow.taskTypes" . | fromJsonArray -}}
{{- $split := gt (len $types) 1 -}}
{{- $own := .Values.worker.ownDeployments | default dict -}}
{{- range $t := keys $own | sortAlpha }}
{{- if not (has $t $types) }}
{{- fail (printf "worker.ownDeployments.%s: %s is not a task type of config.taskTypes (%s)" $t $t (join ", " $types)) }}
{{- end }}
{{- end }}
{{- $base := omit (deepCopy .Values.worker) "ownDeployments" -}}
{{- $main := list -}}
{{- range $types }}{{ if not (hasKey $own .) }}{{ $main = append $main . }}{{ end }}{{ end -}}
{{- if not $main }}
{{- fail (printf "worker.ownDeployments takes every task type (%s): leave at least one to the main worker Deployment" (join ", " $types)) }}
{{- end }}
{{- $groups := list (dict "name" "worker" "types" $main "values" $base "own" false) -}}
{{- range $t := keys $own | sortAlpha }}
{{- $v := mergeOverwrite (deepCopy $base) (deepCopy (get $own $t | default dict)) -}}
{{- /* the main Deployment's consumer choice is not this one's */ -}}
{{- $_ := set $v.autoscaling "consumer" (dig "autoscaling" "consumer" "" (get $own $t | default dict)) -}}
{{- $groups = append $groups (dict "name" (printf "worker-%s" $t) "types" (list $t) "values" $v "own" true) -}}
{{- end }}
{{- range $g := $groups }}
{{- $consumers := list -}}
{{- range $g.types }}{{ $consumers = append $consumers (ternary (printf "workers-%s" .) "workers" $split) }}{{ end -}}
{{- $chosen := $g.values.autoscaling.consumer | default "" -}}
{{- if $chosen }}
{{- if not (has $chosen $consumers) }}
{{- $where := ternary (printf "worker.ownDeployments.%s.autoscaling.consumer" (first $g.types)) "worker.autoscaling.consumer" $g.own }}
{{- fail (printf "%s=%s: no such consumer for task type(s) %s; with config.taskTypes=%s it is %s (or leave it empty: derived)" $where $chosen (join ", " $g.types) $.Values.config.taskTypes (join " or " $consumers)) }}
{{- end }}
{{- $consumers = list $chosen -}}
{{- end }}
{{- $_ := set $g "consumers" $consumers -}}
{{- end }}
{{- toJson $groups -}}
{{- end }}

{{/*
A selector of every worker pod of the release, whichever Deployment runs it (a NetworkPolicy's
podSelector): the main worker's selector labels, or with worker.ownDeployments their components.
*/}}
{{- define "orderflow.worker.podSelector" -}}
{{- if .Values.worker.ownDeployments -}}
matchLabels:
  app.kubernetes.io/name: {{ include "orderflow.name" . }}
  app.kubernetes.io/instance: {{ .Release.Name }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values:
      {{- range $g := include "orderflow.worker.groups" . | fromJsonArray }}
      - {{ $g.name }}
      {{- end }}
{{- else -}}
matchLabels:
  {{- include "orderflow.selectorLabels" (dict "ctx" . "component" "worker") | nindent 2 }}
{{- end }}
{{- end }}

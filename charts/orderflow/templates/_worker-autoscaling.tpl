{{/*
HPA behavior of the worker, shared by the KEDA ScaledObject (which creates the HPA) and the plain
HPA. A scale-down SIGTERMs a worker that then drains for up to drainTimeoutS: removing at most
`pods` per `periodSeconds`, after `stabilizationWindowSeconds` of lower recommendations, keeps the
number of draining pods (and of handed-back jobs) small. The ReplicaSet picks the pods with the
lowest controller.kubernetes.io/pod-deletion-cost first: idle ones (see worker/kube.py).
scaleDown.tolerance (autoscaling/v2 HPAScalingRules.tolerance, feature HPAConfigurableTolerance:
alpha and off by default in Kubernetes 1.33-1.34, beta and on by default from 1.35) is rendered
only for a cluster of 1.35 or newer: older API servers do not know the field (strict validation
rejects it) or drop it. `helm template` needs --kube-version to render it.
*/}}
{{- define "orderflow.worker.behavior" -}}
{{- /* (dict "ctx" $ "g" <a worker group>) */ -}}
{{- $a := .g.values.autoscaling -}}
scaleDown:
  stabilizationWindowSeconds: {{ $a.scaleDown.stabilizationWindowSeconds }}
  selectPolicy: Min
  policies:
    - type: Pods
      value: {{ $a.scaleDown.pods }}
      periodSeconds: {{ $a.scaleDown.periodSeconds }}
  {{- if and (not (kindIs "invalid" $a.scaleDown.tolerance)) (include "orderflow.hpaTolerance.supported" .ctx) }}
  tolerance: {{ include "orderflow.str" $a.scaleDown.tolerance | quote }}
  {{- end }}
scaleUp:
  stabilizationWindowSeconds: {{ $a.scaleUp.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
    - type: Pods
      value: {{ $a.scaleUp.pods }}
      periodSeconds: {{ $a.scaleUp.periodSeconds }}
{{- end }}

{{/* "true" (non-empty) when the cluster serves HPAScalingRules.tolerance by default (>= 1.35). */}}
{{- define "orderflow.hpaTolerance.supported" -}}
{{- if semverCompare ">=1.35.0-0" .Capabilities.KubeVersion.Version }}true{{ end }}
{{- end }}

{{/*
Label matchers of one worker Deployment's series: the release namespace plus
worker.autoscaling.utilisation.matchers (job="worker" by default, what the ServiceMonitor sets),
and, where task types run in Deployments of their own, the Deployment's types (the metrics'
`type` label: each pod has a pool per type, so a type's slots are its own Deployment's).
*/}}
{{- define "orderflow.worker.seriesMatchers" -}}
namespace="{{ .ctx.Release.Namespace }}",{{ .g.values.autoscaling.utilisation.matchers }}
{{- if .ctx.Values.worker.ownDeployments }},type=~"{{ join "|" .g.types }}"{{ end }}
{{- end }}

{{/*
The utilisation signal for KEDA's prometheus trigger, in the backlog's unit (messages), so the
formula can put either signal in the other's place:
  u        = sum(orderflow_tasks_in_flight) / sum(orderflow_pool_slots)      slot utilisation
  pods     = count(count by (instance) (orderflow_pool_slots))               workers reporting
  desired  = pods x u / target                                               pods for u = target
  running  = desired x lagPerReplica                                         as outstanding messages
so running / lagPerReplica is the pod count the utilisation asks for, as lag / lagPerReplica is
the backlog's. No worker running: the query is empty and the trigger reports 0
(ignoreNullValues, KEDA's default), so a scale from zero waits for the backlog alone.
*/}}
{{- define "orderflow.worker.runningQuery" -}}
{{- $a := .g.values.autoscaling -}}
{{- $m := include "orderflow.worker.seriesMatchers" . -}}
sum(orderflow_tasks_in_flight{ {{- $m -}} }) / sum(orderflow_pool_slots{ {{- $m -}} }) * count(count by (instance) (orderflow_pool_slots{ {{- $m -}} })) * {{ $a.lagPerReplica }} / {{ include "orderflow.str" $a.utilisation.target }}
{{- end }}

{{/*
The names of a worker Deployment's lag triggers, one per consumer, as a JSON list: `lag` for one
consumer (the formula below then reads as it always did), `lag_<type>` for several.
*/}}
{{- define "orderflow.worker.lagTriggers" -}}
{{- $names := list -}}
{{- if eq (len .g.consumers) 1 }}
{{- $names = list "lag" -}}
{{- else }}
{{- range .g.consumers }}{{ $names = append $names (printf "lag_%s" (trimPrefix "workers-" . | replace "-" "_")) }}{{ end -}}
{{- end }}
{{- toJson $names -}}
{{- end }}

{{/*
KEDA's composite formula over the lag triggers (one per consumer) and `running`, F being
fallback.replicas pods' worth of messages:
  one consumer:  max(lag ?? running ?? F, running ?? lag ?? F)
  several:       max(lag_a ?? running ?? F, lag_b ?? running ?? F, running ?? lag_a ?? lag_b ?? F)
The largest wins: each pod has a pool per task type, so the type with the largest backlog per pod
asks for the most pods (the backlogs are not added). A broken trigger reaches the formula as nil
and `??` puts another signal in its place; all broken: F.
*/}}
{{- define "orderflow.worker.formula" -}}
{{- $a := .g.values.autoscaling -}}
{{- $both := mul $a.keda.fallback.replicas $a.lagPerReplica -}}
{{- $lags := include "orderflow.worker.lagTriggers" . | fromJsonArray -}}
{{- $terms := list -}}
{{- range $lags }}{{ $terms = append $terms (printf "%s ?? running ?? %d" . $both) }}{{ end -}}
{{- $terms = append $terms (printf "running ?? %s ?? %d" (join " ?? " $lags) $both) -}}
max({{ join ", " $terms }})
{{- end }}

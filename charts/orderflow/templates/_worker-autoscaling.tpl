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
{{- $a := .Values.worker.autoscaling -}}
scaleDown:
  stabilizationWindowSeconds: {{ $a.scaleDown.stabilizationWindowSeconds }}
  selectPolicy: Min
  policies:
    - type: Pods
      value: {{ $a.scaleDown.pods }}
      periodSeconds: {{ $a.scaleDown.periodSeconds }}
  {{- if and (not (kindIs "invalid" $a.scaleDown.tolerance)) (include "orderflow.hpaTolerance.supported" .) }}
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
Label matchers of this release's worker series: the release namespace plus
worker.autoscaling.utilisation.matchers (job="worker" by default, what the ServiceMonitor sets).
*/}}
{{- define "orderflow.worker.seriesMatchers" -}}
namespace="{{ .Release.Namespace }}",{{ .Values.worker.autoscaling.utilisation.matchers }}
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
{{- $a := .Values.worker.autoscaling -}}
{{- $m := include "orderflow.worker.seriesMatchers" . -}}
sum(orderflow_tasks_in_flight{ {{- $m -}} }) / sum(orderflow_pool_slots{ {{- $m -}} }) * count(count by (instance) (orderflow_pool_slots{ {{- $m -}} })) * {{ $a.lagPerReplica }} / {{ include "orderflow.str" $a.utilisation.target }}
{{- end }}

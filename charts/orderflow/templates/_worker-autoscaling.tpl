{{/*
HPA behavior of the worker, shared by the KEDA ScaledObject (which creates the HPA) and the plain
HPA. A scale-down SIGTERMs a worker that then drains for up to drainTimeoutS: removing at most
`pods` per `periodSeconds`, after `stabilizationWindowSeconds` of lower recommendations, keeps the
number of draining pods (and of handed-back jobs) small. The ReplicaSet picks the pods with the
lowest controller.kubernetes.io/pod-deletion-cost first: idle ones (see worker/kube.py).
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
scaleUp:
  stabilizationWindowSeconds: {{ $a.scaleUp.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
    - type: Pods
      value: {{ $a.scaleUp.pods }}
      periodSeconds: {{ $a.scaleUp.periodSeconds }}
{{- end }}

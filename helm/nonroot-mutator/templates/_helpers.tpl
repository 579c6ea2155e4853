{{/* Names */}}
{{- define "nonroot-mutator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nonroot-mutator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "nonroot-mutator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nonroot-mutator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nonroot-mutator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "nonroot-mutator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "nonroot-mutator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "nonroot-mutator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "nonroot-mutator.tlsSecret" -}}
{{- printf "%s-tls" (include "nonroot-mutator.fullname" .) -}}
{{- end -}}

{{- define "nonroot-mutator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The chart-generated CA and serving certificate, computed once per render and memoised in .Values so the
Secret and the webhook's caBundle agree. An existing Secret (from a previous install) is reused as it is,
so `helm upgrade` keeps the caBundle the API server trusts.
*/}}
{{- define "nonroot-mutator.generatedTLS" -}}
{{- if not .Values._generatedTLS -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "nonroot-mutator.tlsSecret" .) -}}
{{- if and $secret $secret.data (index $secret.data "ca.crt") (index $secret.data "tls.crt") (index $secret.data "tls.key") -}}
{{- $_ := set .Values "_generatedTLS" (dict "ca" (index $secret.data "ca.crt") "cert" (index $secret.data "tls.crt") "key" (index $secret.data "tls.key")) -}}
{{- else -}}
{{- $service := include "nonroot-mutator.fullname" . -}}
{{- $days := int .Values.tls.validityDays -}}
{{- $ca := genCA (printf "%s-ca" $service) $days -}}
{{- $dns := list $service (printf "%s.%s" $service .Release.Namespace) (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.cluster.local" $service .Release.Namespace) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $service .Release.Namespace) nil $dns $days $ca -}}
{{- $_ := set .Values "_generatedTLS" (dict "ca" ($ca.Cert | b64enc) "cert" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The namespaces no webhook is ever called for. */}}
{{- define "nonroot-mutator.excludedNamespaces" -}}
{{- $never := list "kube-system" "kube-node-lease" "kube-public" .Release.Namespace -}}
{{- range .Values.webhook.excludeNamespaces -}}{{- $never = append $never . -}}{{- end -}}
{{- $never | uniq | toJson -}}
{{- end -}}

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

{{/* A webhook's clientConfig: the Service, or webhook.url out of cluster. Args: root, path, caBundle. */}}
{{- define "nonroot-mutator.clientConfig" -}}
{{- $root := .root -}}
{{- if $root.Values.webhook.url -}}
url: {{ printf "%s%s" (trimSuffix "/" $root.Values.webhook.url) .path | quote }}
{{- else -}}
service:
  name: {{ include "nonroot-mutator.fullname" $root }}
  namespace: {{ $root.Release.Namespace }}
  path: {{ .path | quote }}
  port: {{ $root.Values.service.port }}
{{- end }}
{{- if .caBundle }}
caBundle: {{ .caBundle }}
{{- end }}
{{- end -}}

{{/* The namespaces labelled with a mode, never the excluded ones. Args: root, mode. */}}
{{- define "nonroot-mutator.namespaceSelector" -}}
matchExpressions:
  - key: nonroot-mutator/mode
    operator: In
    values: [{{ .mode | quote }}]
  # set automatically from Kubernetes 1.21 on; absent (so NotIn matches) before
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: {{ include "nonroot-mutator.excludedNamespaces" .root }}
{{- end -}}

{{/* The caBundle for the webhooks: given (webhook.caBundle), the chart's CA, or none (cert-manager injects it). */}}
{{- define "nonroot-mutator.caBundle" -}}
{{- if .Values.webhook.caBundle -}}
{{- .Values.webhook.caBundle -}}
{{- else if not .Values.tls.certManager.enabled -}}
{{- include "nonroot-mutator.generatedTLS" . -}}
{{- .Values._generatedTLS.ca -}}
{{- end -}}
{{- end -}}

{{/* Where the dockerconfigjson Secret is mounted. */}}
{{- define "nonroot-mutator.dockerConfigDir" -}}/etc/nonroot-mutator/docker{{- end -}}

{{/* The server's config: values.config, plus what the chart mounts for it. */}}
{{- define "nonroot-mutator.serverConfig" -}}
{{- $config := deepCopy .Values.config -}}
{{- /* without the RBAC for them, the server must not try: it would log 403s and wait for nothing */ -}}
{{- if not .Values.pullSecrets.enabled -}}
{{- $_ := set $config "pull_secrets" false -}}
{{- end -}}
{{- if not .Values.warmup.enabled -}}
{{- $_ := set $config "warmup" false -}}
{{- end -}}
{{- if .Values.credentials.dockerConfigSecret -}}
{{- $_ := set $config "docker_config" (printf "%s/config.json" (include "nonroot-mutator.dockerConfigDir" .)) -}}
{{- end -}}
{{- if $config -}}
{{- toYaml $config -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{/*
Name of the chart, or nameOverride; cut at 63 characters (the DNS label limit).
*/}}
{{- define "kstep.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Prefix of every resource name: <release>-<chart> (the release alone when it already contains
the chart name), or fullnameOverride; cut at 63 characters.
*/}}
{{- define "kstep.fullname" -}}
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

{{/*
Name of a component's objects: <fullname>-<component>, cut at 63 characters.
Call with (dict "context" $ "component" "operator").
*/}}
{{- define "kstep.componentName" -}}
{{- printf "%s-%s" (include "kstep.fullname" .context) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "kstep.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Version label: the image tag, without a digest, cut at 63 characters.
*/}}
{{- define "kstep.versionLabel" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- $withoutDigest := first (splitList "@" $tag) -}}
{{- regexReplaceAll "[^a-zA-Z0-9._-]" $withoutDigest "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels of a component: stable for the life of a release, so never the version.
Call with (dict "context" $ "component" "operator").
*/}}
{{- define "kstep.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kstep.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/*
Every label of a component's objects: the selector labels plus chart, version, manager and
commonLabels. Call with (dict "context" $ "component" "operator").
*/}}
{{- define "kstep.labels" -}}
helm.sh/chart: {{ include "kstep.chart" .context }}
{{ include "kstep.selectorLabels" . }}
app.kubernetes.io/version: {{ include "kstep.versionLabel" .context | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: kstep
{{- with .context.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The kstep image reference: repository and tag (or digest).
*/}}
{{- define "kstep.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if hasPrefix "sha256:" $tag -}}
{{- printf "%s@%s" .Values.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "kstep.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- $default := include "kstep.componentName" (dict "context" . "component" "operator") -}}
{{- default $default .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Name of the step pods' ServiceAccount.
*/}}
{{- define "kstep.steps.serviceAccountName" -}}
{{- $default := include "kstep.componentName" (dict "context" . "component" "step") -}}
{{- default $default .Values.steps.serviceAccount.name -}}
{{- end -}}

{{/*
Name of the ServiceAccount of dynamic runs' orchestrator pods.
*/}}
{{- define "kstep.orchestrator.serviceAccountName" -}}
{{- $default := include "kstep.componentName" (dict "context" . "component" "orchestrator") -}}
{{- default $default .Values.orchestrator.serviceAccount.name -}}
{{- end -}}

{{/*
Namespaces the operator watches, as a JSON list: empty when cluster-wide, else `namespaces`
or the release namespace.
*/}}
{{- define "kstep.watchedNamespaces" -}}
{{- if .Values.clusterWide -}}
[]
{{- else if .Values.namespaces -}}
{{- toJson (uniq .Values.namespaces) -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/*
Namespaces where runs execute, which get the step pods' and orchestrator pods' ServiceAccounts
and, with quickstart, the store Secret: the watched namespaces, or in cluster-wide mode the
release namespace and runNamespaces.
*/}}
{{- define "kstep.runNamespaces" -}}
{{- if .Values.clusterWide -}}
{{- toJson (uniq (prepend .Values.runNamespaces .Release.Namespace)) -}}
{{- else -}}
{{- include "kstep.watchedNamespaces" . -}}
{{- end -}}
{{- end -}}

{{/*
Names of the Secrets the operator may read: the store Secret and the extra ones runs may name.
*/}}
{{- define "kstep.storeSecretNames" -}}
{{- toJson (uniq (prepend .Values.stores.extraSecretNames .Values.stores.secretName)) -}}
{{- end -}}

{{/*
Label matchers that scope PromQL to this release's operator.
*/}}
{{- define "kstep.metricsSelector" -}}
{{- $service := include "kstep.componentName" (dict "context" . "component" "metrics") -}}
namespace="{{ .Release.Namespace }}", service="{{ $service }}"
{{- end -}}

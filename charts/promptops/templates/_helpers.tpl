{{/*
The chart name, or nameOverride.
*/}}
{{- define "promptops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: fullnameOverride; else the release name when it
already contains the chart name; else "<release>-<name>". At most 63 characters (a DNS
label, so it can name a Service).
*/}}
{{- define "promptops.fullname" -}}
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

{{/*
"<chart>-<version>" for the helm.sh/chart label.
*/}}
{{- define "promptops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every object of the release carries.
*/}}
{{- define "promptops.labels" -}}
helm.sh/chart: {{ include "promptops.chart" . }}
{{ include "promptops.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The labels that select the promptops pod (Deployment, Service, PodDisruptionBudget,
NetworkPolicy). Never change them in an upgrade: a Deployment's selector is immutable.
*/}}
{{- define "promptops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "promptops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The service account the pod runs as.
*/}}
{{- define "promptops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "promptops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {registry, repository, tag, digest}: "registry/repository:tag",
or "registry/repository@digest" when a digest is set; no registry prefix when the
registry is empty. Call with (dict "image" <values> "defaultTag" <tag>).
*/}}
{{- define "promptops.imageRef" -}}
{{- $repository := .image.repository }}
{{- with .image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repository .image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (toString (default .defaultTag .image.tag)) }}
{{- end }}
{{- end }}

{{/*
The promptops image; the tag defaults to the chart's appVersion.
*/}}
{{- define "promptops.image" -}}
{{- include "promptops.imageRef" (dict "image" .Values.image "defaultTag" .Chart.AppVersion) }}
{{- end }}

{{/*
imagePullSecrets of every pod of the release, from image.pullSecrets (a list of names,
or of {name: …} objects).
*/}}
{{- define "promptops.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
{{- if kindIs "map" . }}
  - name: {{ .name | quote }}
{{- else }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The Secret holding encryption-keys and admin-password: secrets.existingSecret, or the
chart's own.
*/}}
{{- define "promptops.secretName" -}}
{{- default (include "promptops.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
The data (base64 values) of the chart-owned Secret, as JSON. Values already in the
cluster's Secret are reused, so the keys and the admin password are generated once, at
the first install, and kept across upgrades. The result is memoised in the render
context, so the Secret and the pod's checksum/secret annotation see the same data
within one render even when nothing exists yet.
*/}}
{{- define "promptops.secretData" -}}
{{- if not (hasKey . "promptopsSecretData") }}
{{- $found := lookup "v1" "Secret" .Release.Namespace (include "promptops.fullname" .) | default dict }}
{{- $existing := get $found "data" | default dict }}
{{- $data := dict }}
{{- $key := get $existing "encryption-keys" | default (printf "k1:%s" (randBytes 32) | b64enc) }}
{{- $_ := set $data "encryption-keys" $key }}
{{- $password := get $existing "admin-password" | default (randAlphaNum 24 | b64enc) }}
{{- $_ := set $data "admin-password" $password }}
{{- $_ := set . "promptopsSecretData" $data }}
{{- end }}
{{- get . "promptopsSecretData" | toJson }}
{{- end }}

{{/*
The ConfigMap mounted as the config directory.
*/}}
{{- define "promptops.configMapName" -}}
{{- default (printf "%s-config" (include "promptops.fullname" .)) .Values.config.existingConfigMap }}
{{- end }}

{{/*
The PersistentVolumeClaim of the data volume.
*/}}
{{- define "promptops.claimName" -}}
{{- default (printf "%s-data" (include "promptops.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/*
The port (name) serving /healthz and /readyz: "metrics" when the metrics listener is
on (the probes move there with it), else "http".
*/}}
{{- define "promptops.probePort" -}}
{{- if .Values.metrics.enabled }}metrics{{ else }}http{{ end }}
{{- end }}

{{/*
A probe from values, with the port filled in where the probe names none. Call with
(dict "probe" <probe> "port" <port>).
*/}}
{{- define "promptops.renderProbe" -}}
{{- $probe := deepCopy .probe }}
{{- range $kind := list "httpGet" "tcpSocket" "grpc" }}
{{- if and (hasKey $probe $kind) (kindIs "map" (get $probe $kind)) }}
{{- $handler := get $probe $kind }}
{{- if not (hasKey $handler "port") }}
{{- $_ := set $handler "port" $.port }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
Name and labels of the optional mcp-atlassian server. Its app.kubernetes.io/name differs
from promptops's, so no promptops selector ever matches its pod.
*/}}
{{- define "promptops.mcpAtlassian.fullname" -}}
{{- printf "%s-mcp-atlassian" (include "promptops.fullname" . | trunc 49 | trimSuffix "-") }}
{{- end }}

{{- define "promptops.mcpAtlassian.selectorLabels" -}}
app.kubernetes.io/name: mcp-atlassian
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "promptops.mcpAtlassian.labels" -}}
helm.sh/chart: {{ include "promptops.chart" . }}
{{ include "promptops.mcpAtlassian.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.mcpAtlassian.image.tag | toString | quote }}
app.kubernetes.io/component: mcp-server
app.kubernetes.io/part-of: {{ include "promptops.name" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The MCP URL promptops uses for the atlassian server: mcpAtlassian.url, else the bundled
server's Service when it is enabled; empty otherwise (config.json's default applies).
*/}}
{{- define "promptops.mcpAtlassianUrl" -}}
{{- if .Values.mcpAtlassian.url }}
{{- .Values.mcpAtlassian.url }}
{{- else if .Values.mcpAtlassian.enabled }}
{{- printf "http://%s:%d/mcp" (include "promptops.mcpAtlassian.fullname" .) (int .Values.mcpAtlassian.port) }}
{{- end }}
{{- end }}

{{/*
An IntOrString value: a number as an integer, anything else quoted ("50%").
*/}}
{{- define "promptops.intOrString" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ int . }}{{ end }}
{{- end }}

{{/*
The controller's rules in the watched namespaces (a Role each, or one ClusterRole).
*/}}
{{- define "promptops.controllerRules" -}}
# Prompts and PromptJobs: read, watch, and finalizers/annotations on the objects.
- apiGroups: ["promptops.dev"]
  resources: ["prompts", "promptjobs"]
  verbs: ["get", "list", "watch", "patch", "update"]
# Their status, written by server-side apply.
- apiGroups: ["promptops.dev"]
  resources: ["prompts/status", "promptjobs/status"]
  verbs: ["get", "patch", "update"]
# The cleanup finalizer (needed where OwnerReferencesPermissionEnforcement is on).
- apiGroups: ["promptops.dev"]
  resources: ["prompts/finalizers", "promptjobs/finalizers"]
  verbs: ["update"]
# The token a PromptJob's credentialsSecretRef names, read at each run: get only, no list or watch.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Events on Prompts and PromptJobs.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
Checks on values that the schema cannot express. Included by the Deployment.
*/}}
{{- define "promptops.validate" -}}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail "promptops stores its data in SQLite on a ReadWriteOnce volume: replicaCount must be 1" }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownTimeoutSeconds) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than shutdownTimeoutSeconds (%d): the kubelet kills the pod at the end of the grace period, before in-flight requests have drained" (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownTimeoutSeconds)) }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled=true: the ServiceMonitor scrapes the Service's metrics port" }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) 8080) }}
{{- fail "metrics.port must not be 8080: that is the container's http port" }}
{{- end }}
{{- if and .Values.mcpAtlassian.enabled (not (or .Values.mcpAtlassian.jiraUrl .Values.mcpAtlassian.confluenceUrl)) }}
{{- fail "mcpAtlassian.enabled needs mcpAtlassian.jiraUrl (and/or mcpAtlassian.confluenceUrl): the Jira/Confluence base URL the MCP server talks to" }}
{{- end }}
{{- if and .Values.llm.apiKeySecret.name (not .Values.llm.apiKeySecret.key) }}
{{- fail "llm.apiKeySecret.key must be set when llm.apiKeySecret.name is" }}
{{- end }}
{{- if and .Values.otel.headersSecret.name (not .Values.otel.headersSecret.key) }}
{{- fail "otel.headersSecret.key must be set when otel.headersSecret.name is" }}
{{- end }}
{{- end }}

{{/*
config.json: config.files.config with the auth section the sso values describe.
*/}}
{{- define "promptops.configJson" -}}
{{- $config := deepCopy .Values.config.files.config }}
{{- with .Values.sso }}
{{- if .issuer }}
{{- if not .clientId }}{{ fail "sso.clientId is required with sso.issuer" }}{{ end }}
{{- $auth := deepCopy (default dict $config.auth) }}
{{- if $auth.oidc }}{{ fail "set single sign-on either in sso or in config.files.config.auth.oidc, not both" }}{{ end }}
{{- $oidc := dict "issuer" .issuer "client_id" .clientId "scopes" .scopes "groups_claim" .groupsClaim "allowed_groups" .allowedGroups "admin_groups" .adminGroups "label" .label "link_by_username" .linkByUsername }}
{{- if .usernameClaim }}{{ $_ := set $oidc "username_claim" .usernameClaim }}{{ end }}
{{- if .existingSecret }}{{ $_ := set $oidc "client_secret" "${env:PROMPTOPS_OIDC_CLIENT_SECRET}" }}{{ end }}
{{- $_ := set $auth "oidc" $oidc }}
{{- $_ := set $auth "local" .local }}
{{- $_ := set $config "auth" $auth }}
{{- else if ne .local "enabled" }}
{{- fail "sso.local other than enabled needs sso.issuer (or auth.oidc in config.files.config)" }}
{{- end }}
{{- end }}
{{- toJson $config }}
{{- end }}

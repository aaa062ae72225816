{{/* Names and labels. */}}
{{- define "agentia.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "agentia.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 57 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 57 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 57 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: <fullname>-<component> (57 + 6 <= 63); a worker
of one agent of worker.agents: <fullname>-worker-<agent>, cut at 63. */}}
{{- define "agentia.component" -}}
{{- if .agent -}}
{{- printf "%s-%s-%s" (include "agentia.fullname" .root) .component .agent | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" (include "agentia.fullname" .root) .component -}}
{{- end -}}
{{- end -}}

{{- define "agentia.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentia.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .agent }}
agentia.io/agent: {{ . }}
{{- end }}
{{- end -}}

{{/* Pod template labels: the selector's plus part-of, which the PodMonitor's jobLabel reads. */}}
{{- define "agentia.podLabels" -}}
{{ include "agentia.selectorLabels" . }}
app.kubernetes.io/part-of: agentia
{{- end -}}

{{- define "agentia.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "agentia.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: agentia
{{- end -}}

{{- define "agentia.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "agentia.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "agentia.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Values without a safe default: fail early with what to set (every top-level template
calls this, so the same message comes first whichever template helm renders first). */}}
{{- define "agentia.validate" -}}
{{- if not .Values.redis.host -}}
{{- fail "redis.host is required: the Redis (>= 7) every process uses, e.g. <release>-redis-master.<namespace>.svc.cluster.local (docs/deploy.md)" -}}
{{- end -}}
{{- if and (not .Values.auth.existingSecret) (not .Values.auth.jwtSecret) -}}
{{- fail "set auth.existingSecret (a Secret with the JWT secret) or auth.jwtSecret: the default secret is public (docs/deploy.md)" -}}
{{- end -}}
{{- $secret := .Values.auth.jwtSecret | default "" -}}
{{- if and $secret (or (lt (len $secret) 32) (eq $secret "agentia-dev-secret-change-me-in-production")) -}}
{{- fail "auth.jwtSecret must be at least 32 bytes and not the public default (e.g. openssl rand -hex 32; docs/deploy.md)" -}}
{{- end -}}
{{- if eq (int .Values.edge.internalPort) (int .Values.edge.port) -}}
{{- fail "edge.internalPort must differ from edge.port: /readyz and /metrics are not served on the public port" -}}
{{- end -}}
{{- if and .Values.voice.enabled (or (not .Values.livekit.url) (not .Values.livekit.existingSecret)) -}}
{{- fail "voice.enabled needs livekit.url and livekit.existingSecret (docs/deploy.md)" -}}
{{- end -}}
{{- if and .Values.sip.enabled (not .Values.voice.enabled) -}}
{{- fail "sip.enabled needs voice.enabled: phone calls are answered by the voice agent (docs/voice.md, Telephony)" -}}
{{- end -}}
{{- if and .Values.sip.enabled (not .Values.sip.redis.address) -}}
{{- fail "sip.redis.address is required: host:port of the LiveKit server's Redis, which LiveKit and its SIP service share (never Agentia's; docs/voice.md, Telephony)" -}}
{{- end -}}
{{- if and .Values.dapr.enabled .Values.dapr.inbound.topic (not .Values.dapr.inbound.appTokenSecret) -}}
{{- fail "dapr.inbound.topic needs dapr.inbound.appTokenSecret: a Secret with key `token`, the sidecar's APP_API_TOKEN and the control plane's AGENTIA_DAPR_APP_TOKEN (/dapr/messages posts into any session; docs/dapr.md)" -}}
{{- end -}}
{{- if and .Values.worker.enabled .Values.worker.keda.enabled -}}
{{- range include "agentia.workerUnits" . | fromJsonArray -}}
{{- include "agentia.validateStreams" (dict "root" $ "unit" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "agentia.jwtSecretName" -}}
{{- default (printf "%s-auth" (include "agentia.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* AGENTIA_REDIS_URL; the password is expanded by Kubernetes from REDIS_PASSWORD. */}}
{{- define "agentia.redisUrl" -}}
{{- $r := .Values.redis -}}
{{- $userinfo := "" -}}
{{- if $r.auth.existingSecret -}}
{{- $userinfo = printf "%s:$(REDIS_PASSWORD)@" $r.auth.username -}}
{{- else if $r.auth.username -}}
{{- $userinfo = printf "%s@" $r.auth.username -}}
{{- end -}}
{{- if $r.cluster -}}
{{- /* sessions/bus.py CLUSTER_SCHEMES: redis+cluster://[user:password@]seed,seed... */ -}}
{{- printf "%s://%s%s" (ternary "rediss+cluster" "redis+cluster" $r.tls) $userinfo (include "agentia.redisAddresses" .) -}}
{{- else -}}
{{- printf "%s://%s%s:%v/%v" (ternary "rediss" "redis" $r.tls) $userinfo $r.host $r.port $r.db -}}
{{- end -}}
{{- end -}}

{{/* Redis seed addresses for KEDA's redis-cluster-streams trigger. */}}
{{- define "agentia.redisAddresses" -}}
{{- if .Values.redis.clusterNodes -}}
{{- join "," .Values.redis.clusterNodes -}}
{{- else -}}
{{- printf "%s:%v" .Values.redis.host .Values.redis.port -}}
{{- end -}}
{{- end -}}

{{/*
Inbound stream names as a JSON list, from worker.keda.streams. The chart cannot derive them:
sessions/keys.py picks each shard's hash tag by a CRC16 search (Keys(prefix, shards).inbound),
so they are printed by the application (docs/deploy.md) and checked here against
config.shards and config.redisPrefix.
*/}}
{{/*
The worker Deployments as a JSON list of units: without worker.agents, one (component
"worker", no agent) running worker.agent, named `default` (the stream names of before the
agent registry); with worker.agents, one per agent (docs/agents.md), each running
`--agents <the chart's agents.toml> --only <name>` with its own replicas, concurrency and KEDA
settings (each agent's keda merged over worker.keda). Each unit: agent, where (the values path
for messages), replicas, concurrency, keda.
*/}}
{{- define "agentia.workerUnits" -}}
{{- $w := .Values.worker -}}
{{- $units := list -}}
{{- if not $w.agents -}}
{{- $units = append $units (dict "agent" "" "where" "worker" "replicas" $w.replicas "concurrency" $w.concurrency "keda" $w.keda) -}}
{{- else -}}
{{- range $i, $a := $w.agents -}}
{{- $keda := mergeOverwrite (deepCopy $w.keda) (dict "streams" list) (default dict $a.keda) -}}
{{- $units = append $units (dict "agent" $a.name "where" (printf "worker.agents[%d]" $i) "replicas" (default $w.replicas $a.replicas) "concurrency" (default $w.concurrency $a.concurrency) "keda" $keda) -}}
{{- end -}}
{{- end -}}
{{- toJson $units -}}
{{- end -}}

{{/* Checks one unit's keda.streams (.root, .unit) against config.shards, the prefix and its
agent (an agent's streams carry the hash tag {in.<agent>.<k>.<salt>}, sessions/keys.py). */}}
{{- define "agentia.validateStreams" -}}
{{- $u := .unit -}}
{{- $streams := $u.keda.streams -}}
{{- $shards := int .root.Values.config.shards -}}
{{- $prefix := .root.Values.config.redisPrefix -}}
{{- $call := ternary (printf "k.inbound(i, %q)" $u.agent) "k.inbound(i)" (ne $u.agent "") -}}
{{- if not $streams -}}
{{- fail (printf "%s.keda.streams is required with worker.keda.enabled: the %d inbound stream names of prefix %q, printed by: python -c 'from sessions.keys import Keys; k = Keys(%q, %d); print(*(%s for i in range(%d)), sep=chr(10))' (docs/deploy.md)" $u.where $shards $prefix $prefix $shards $call $shards) -}}
{{- end -}}
{{- if ne (len $streams) $shards -}}
{{- fail (printf "%s.keda.streams has %d names but config.shards is %d: print them again for the new shard count (docs/deploy.md)" $u.where (len $streams) $shards) -}}
{{- end -}}
{{- range $streams -}}
{{- if not (hasPrefix (printf "%s:" $prefix) .) -}}
{{- fail (printf "%s.keda.streams: %q is not under config.redisPrefix %q" $u.where . $prefix) -}}
{{- end -}}
{{- if and $u.agent (ne $u.agent "default") (not (contains (printf ":{in.%s." $u.agent) .)) -}}
{{- fail (printf "%s.keda.streams: %q is not an inbound stream of agent %q (print them with %s)" $u.where . $u.agent $call) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* worker.agents as the TOML file of the registry (sessions/registry.py): strings and lists
through toJson (a JSON string or list of strings is valid TOML), maps as inline tables. */}}
{{- define "agentia.agentsToml" -}}
{{- range .Values.worker.agents }}
[[agents]]
name = {{ .name | toJson }}
agent = {{ .agent | toJson }}
{{- with .description }}
description = {{ . | toJson }}
{{- end }}
{{- with .privateTools }}
private_tools = {{ . | toJson }}
{{- end }}
{{- range .mcp }}
[[agents.mcp]]
{{- range $k, $v := . }}
{{- if kindIs "map" $v }}
{{ $k }} = { {{- $items := list }}{{ range $ek, $ev := $v }}{{ $items = append $items (printf "%s = %s" ($ek | toJson) ($ev | toString | toJson)) }}{{ end }}{{ join ", " $items }} }
{{- else }}
{{ $k }} = {{ $v | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{ end }}
{{- end -}}

{{/* A map of name: value as container env entries. */}}
{{- define "agentia.envMap" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end -}}

{{/* Environment every Agentia container gets: Redis, the shared settings, extraEnv. */}}
{{- define "agentia.env.common" -}}
{{- $r := .Values.redis -}}
{{- if $r.auth.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $r.auth.existingSecret }}
      key: {{ $r.auth.passwordKey }}
{{- end }}
{{- if $r.auth.username }}
- name: REDIS_USERNAME
  value: {{ $r.auth.username | quote }}
{{- end }}
- name: AGENTIA_REDIS_URL
  value: {{ include "agentia.redisUrl" . | quote }}
- name: AGENTIA_REDIS_PREFIX
  value: {{ .Values.config.redisPrefix | quote }}
- name: AGENTIA_SHARDS
  value: {{ .Values.config.shards | quote }}
- name: AGENTIA_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: AGENTIA_LOG_JSON
  value: {{ .Values.config.logJson | quote }}
- name: AGENTIA_NEW_SESSION_TTL_S
  value: {{ .Values.config.newSessionTtlSeconds | quote }}
{{- if and .Values.dapr.enabled .Values.dapr.events.topic }}
- name: AGENTIA_DAPR_PUBSUB                 # every process that appends queues the events
  value: {{ .Values.dapr.pubsub | quote }}
- name: AGENTIA_DAPR_TOPIC_EVENTS
  value: {{ .Values.dapr.events.topic | quote }}
- name: AGENTIA_DAPR_EVENTS
  value: {{ .Values.dapr.events.types | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A Dapr app id: dict root, component ("api", "worker", "worker-<agent>", "publisher"). */}}
{{- define "agentia.daprAppId" -}}
{{- printf "%s-%s" (default (include "agentia.fullname" .root) .root.Values.dapr.appIdPrefix) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The sidecar injector's annotations: dict root, component, appPort and tokenSecret
     (both optional: only the control plane receives from Dapr). */}}
{{- define "agentia.daprAnnotations" -}}
{{- $d := .root.Values.dapr -}}
dapr.io/enabled: "true"
dapr.io/app-id: {{ include "agentia.daprAppId" . | quote }}
{{- with .appPort }}
dapr.io/app-port: {{ . | quote }}
{{- end }}
{{- with .tokenSecret }}
dapr.io/app-token-secret: {{ . | quote }}
{{- end }}
{{- with $d.config }}
dapr.io/config: {{ . | quote }}
{{- end }}
dapr.io/log-level: {{ $d.logLevel | quote }}
{{- end -}}

{{/* Token verification (edges and the control plane). */}}
{{- define "agentia.env.auth" -}}
- name: AGENTIA_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "agentia.jwtSecretName" . }}
      key: {{ .Values.auth.jwtSecretKey }}
      {{- if .Values.auth.publicKeyKey }}
      optional: true                # RS256/ES256 verify with the public key alone
      {{- end }}
- name: AGENTIA_JWT_ALGORITHMS
  value: {{ .Values.auth.algorithms | quote }}
- name: AGENTIA_ALLOWED_ORIGINS         # WebSocket upgrades (403) and the API's CORS
  value: {{ join "," .Values.auth.allowedOrigins | quote }}
{{- if .Values.auth.publicKeyKey }}
- name: AGENTIA_JWT_PUBLIC_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "agentia.jwtSecretName" . }}
      key: {{ .Values.auth.publicKeyKey }}
{{- end }}
{{- end -}}

{{/* LiveKit (voice workers, and the control plane's voice route). */}}
{{- define "agentia.env.livekit" -}}
- name: AGENTIA_LIVEKIT_URL
  value: {{ .Values.livekit.url | quote }}
- name: AGENTIA_LIVEKIT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.livekit.existingSecret }}
      key: {{ .Values.livekit.apiKeyKey }}
- name: AGENTIA_LIVEKIT_API_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.livekit.existingSecret }}
      key: {{ .Values.livekit.apiSecretKey }}
- name: AGENTIA_VOICE_MAX_CALLS_PER_USER
  value: {{ .Values.voice.maxCallsPerUser | quote }}
- name: AGENTIA_VOICE_JOIN_TIMEOUT_S
  value: {{ .Values.voice.joinTimeoutSeconds | quote }}
{{- end -}}

{{/* The edge's grace period: preStop sleep + drain + listener close (2 s) + the
supervisor's kill margin (5 s) + exit; a shorter explicit value is refused. */}}
{{- define "agentia.edgeGrace" -}}
{{- $e := .Values.edge -}}
{{- $min := add (int $e.preStopSleepSeconds) (int (ceil $e.drainSeconds)) 7 -}}
{{- if kindIs "invalid" $e.terminationGracePeriodSeconds -}}
{{- add $min 8 -}}
{{- else if lt (int $e.terminationGracePeriodSeconds) $min -}}
{{- fail (printf "edge.terminationGracePeriodSeconds=%v is shorter than preStopSleepSeconds + drainSeconds + 7 = %d: the drain would be cut by SIGKILL" $e.terminationGracePeriodSeconds $min) -}}
{{- else -}}
{{- $e.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/* Edge resources: explicit, or sized from the measured figures in edge.sizing:
memory = supervisor + processes * (process + (nofile - 1000) * connection). */}}
{{- define "agentia.edgeResources" -}}
{{- $e := .Values.edge -}}
{{- if $e.resources -}}
{{- toYaml $e.resources -}}
{{- else -}}
{{- $s := $e.sizing -}}
{{- $conns := sub (int $e.nofile) 1000 -}}
{{- $perProcess := add (int $s.processMiB) (div (mul $conns (int $s.connectionKiB)) 1024) -}}
{{- $mem := add (int $s.supervisorMiB) (mul (int $e.processes) $perProcess) -}}
{{- $cpu := mul (int $e.processes) (int $s.cpuPerProcessMillicores) -}}
requests:
  cpu: {{ printf "%dm" $cpu }}
  memory: {{ printf "%dMi" $mem }}
limits:
  memory: {{ printf "%dMi" (div (mul $mem (int $s.memoryLimitPercent)) 100) }}
{{- end -}}
{{- end -}}

{{/* Scheduling fields shared by every pod template. */}}
{{- define "agentia.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

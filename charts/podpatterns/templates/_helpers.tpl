{{/* Names and labels shared by every object of the release. */}}

{{- define "podpatterns.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "podpatterns.fullname" -}}
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

{{- define "podpatterns.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podpatterns.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "podpatterns.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "podpatterns.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "podpatterns.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "podpatterns.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "podpatterns.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding the serving certificate, in every mode. */}}
{{- define "podpatterns.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "existingSecret" -}}
{{- required "certificates.existingSecret.name is required when certificates.mode is existingSecret" .Values.certificates.existingSecret.name -}}
{{- else -}}
{{- printf "%s-tls" (include "podpatterns.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The Service's DNS names, which the serving certificate must cover. */}}
{{- define "podpatterns.dnsNames" -}}
{{- $svc := include "podpatterns.fullname" . -}}
- {{ $svc }}
- {{ $svc }}.{{ .Release.Namespace }}
- {{ $svc }}.{{ .Release.Namespace }}.svc
- {{ $svc }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end -}}

{{/* --- Where the webhook is called (MutatingWebhookConfiguration, policyguard.yaml, NOTES.txt) --- */}}

{{/* Namespaces never sent to the webhook nor checked by the guard, as a JSON list: the webhook's own (it
must always be able to start), the control plane's, and webhook.excludedNamespaces. */}}
{{- define "podpatterns.excludedNamespaces" -}}
{{- toJson (uniq (concat (list .Release.Namespace "kube-system" "kube-public" "kube-node-lease") .Values.webhook.excludedNamespaces)) -}}
{{- end -}}

{{/* The Namespace label that opts all of a Namespace's Pods in (value "enabled"). */}}
{{- define "podpatterns.injectionLabel" -}}
{{- printf "%s/injection" (index .Values.settings "prefix") -}}
{{- end -}}

{{/* One label selector that matches exactly what every selector of the list matches, as JSON. matchLabels
are merged; a key two of them give different values becomes an `In` expression, so the result matches
nothing, as the intersection does. Empty (`{}`) when the list holds only empty selectors. */}}
{{- define "podpatterns.intersect" -}}
{{- $labels := dict -}}
{{- $expressions := list -}}
{{- range $selector := . -}}
{{- range $key, $value := ($selector.matchLabels | default dict) -}}
{{- if and (hasKey $labels $key) (ne (get $labels $key) $value) -}}
{{- $expressions = append $expressions (dict "key" $key "operator" "In" "values" (list $value)) -}}
{{- else -}}
{{- $_ := set $labels $key $value -}}
{{- end -}}
{{- end -}}
{{- $expressions = concat $expressions ($selector.matchExpressions | default list) -}}
{{- end -}}
{{- $out := dict -}}
{{- if $labels }}{{ $_ := set $out "matchLabels" $labels }}{{ end -}}
{{- if $expressions }}{{ $_ := set $out "matchExpressions" $expressions }}{{ end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The scopes of the policy's rules that act on Pods without an annotation (inject, resources,
maxContainers; allowedEntries alone only restricts what Pods and Namespaces ask for), as a JSON list of
{rules, namespaceSelector, podSelector}, in policy order. A scope whose selector terms include all the terms
of another scope's selects a subset of its Pods: it is folded into that scope, so a Pod is sent once for
them (a rule without selectors folds every other rule into one scope). */}}
{{- define "podpatterns.ruleScopes" -}}
{{- $scopes := list -}}
{{- $byKey := dict -}}
{{- range $rule := (.Values.policy.rules | default list) -}}
{{- if or $rule.inject $rule.resources $rule.maxContainers -}}
{{- $namespaces := include "podpatterns.intersect" (list ($rule.namespaceSelector | default dict)) | fromJson -}}
{{- $pods := include "podpatterns.intersect" (list ($rule.podSelector | default dict)) | fromJson -}}
{{- $key := toJson (list $namespaces $pods) -}}
{{- if hasKey $byKey $key -}}
{{- $scope := get $byKey $key -}}
{{- $_ := set $scope "rules" (append $scope.rules $rule.name) -}}
{{- else -}}
{{- $terms := list -}}
{{- range $part, $selector := dict "namespace" $namespaces "pod" $pods -}}
{{- range $k, $v := ($selector.matchLabels | default dict) }}{{ $terms = append $terms (toJson (list $part "In" $k (list $v))) }}{{ end -}}
{{- range $e := ($selector.matchExpressions | default list) }}{{ $terms = append $terms (toJson (list $part $e.operator $e.key ($e.values | default list))) }}{{ end -}}
{{- end -}}
{{- $scope := dict "key" $key "terms" $terms "rules" (list $rule.name) "namespaceSelector" $namespaces "podSelector" $pods -}}
{{- $_ := set $byKey $key $scope -}}
{{- $scopes = append $scopes $scope -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $kept := list -}}
{{- range $j, $b := $scopes -}}
{{- $into := "" -}}
{{- range $i, $a := $scopes -}}
{{- /* Into an earlier scope or one with fewer terms: the folding never goes round in a circle. */ -}}
{{- if and (not $into) (ne $i $j) (or (lt $i $j) (lt (len $a.terms) (len $b.terms))) -}}
{{- $subset := true -}}
{{- range $term := $a.terms }}{{ if not (has $term $b.terms) }}{{ $subset = false }}{{ end }}{{ end -}}
{{- if $subset }}{{ $into = $a.key }}{{ end -}}
{{- end -}}
{{- end -}}
{{- if $into -}}
{{- $_ := set $b "into" $into -}}
{{- else -}}
{{- $kept = append $kept $b -}}
{{- end -}}
{{- end -}}
{{- /* Follow each folded scope to the kept scope its chain ends at (a subset's subset is a subset). */ -}}
{{- range $b := $scopes -}}
{{- $target := $b -}}
{{- range $step := $scopes }}{{ if hasKey $target "into" }}{{ $target = get $byKey $target.into }}{{ end }}{{ end -}}
{{- if ne $target.key $b.key }}{{ $_ := set $target "rules" (concat $target.rules $b.rules) }}{{ end -}}
{{- end -}}
{{- $out := list -}}
{{- range $scope := $kept -}}
{{- $out = append $out (dict "rules" $scope.rules "namespaceSelector" $scope.namespaceSelector "podSelector" $scope.podSelector) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* --- The guard (policyguard.yaml) --- */}}

{{/* Entry name -> the containers ({name, image}) the webhook injects for it, as JSON: policyGuard.entries
(the built-ins), overridden by the entries of the `catalogue` value, as the server's catalogue overrides
its built-ins by name. */}}
{{- define "podpatterns.guardContainers" -}}
{{- $found := dict -}}
{{- range $name, $containers := (.Values.policyGuard.entries | default dict) -}}
{{- $_ := set $found $name $containers -}}
{{- end -}}
{{- range $file, $value := (.Values.catalogue | default dict) -}}
{{- $documents := list -}}
{{- if kindIs "string" $value -}}
{{- range $text := regexSplit `(?m)^---[ \t]*$` $value -1 -}}
{{- $documents = append $documents (fromYaml $text) -}}
{{- end -}}
{{- else -}}
{{- $documents = list $value -}}
{{- end -}}
{{- range $document := $documents -}}
{{- $name := "" -}}
{{- if kindIs "map" $document }}{{ $name = dig "metadata" "name" "" $document }}{{ end -}}
{{- if and $name (kindIs "string" $name) -}}
{{- $containers := list -}}
{{- range $container := (dig "spec" "containers" (list) $document) -}}
{{- if kindIs "map" $container -}}
{{- $containers = append $containers (dict "name" ($container.name | default "") "image" ($container.image | default "")) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $found $name $containers -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $found -}}
{{- end -}}

{{/* The image `.image` as the server injects it with `.registry` (settings.image-registry): the rule of
webhook/core/images.py. The first component is a registry when it has a '.' or ':' or is localhost, and is replaced;
otherwise the image is Docker Hub's, kept whole (a one-component name in library/), under the new registry. */}}
{{- define "podpatterns.withRegistry" -}}
{{- if .registry -}}
{{- $first := first (splitList "/" .image) -}}
{{- $rest := .image -}}
{{- if not (contains "/" .image) -}}
{{- $rest = printf "library/%s" .image -}}
{{- else if or (contains "." $first) (contains ":" $first) (eq $first "localhost") -}}
{{- $rest = trimPrefix (printf "%s/" $first) .image -}}
{{- end -}}
{{- printf "%s/%s" (trimSuffix "/" .registry) $rest -}}
{{- else -}}
{{- .image -}}
{{- end -}}
{{- end -}}

{{/* CEL: does the Pod `.pod` (object or oldObject) hold every entry of `.entries` ([{name, containers}]):
listed in the status annotation `.status`, and each of its containers there by name with its image, as a
native sidecar (an init container with restartPolicy Always) or a regular container. */}}
{{- define "podpatterns.guardCheck" -}}
{{- $pod := .pod -}}
{{- $status := .status -}}
{{- $checks := list (printf "has(%s.metadata.annotations) && '%s' in %s.metadata.annotations" $pod $status $pod) -}}
{{- range $entry := .entries -}}
{{- $checks = append $checks (printf "%s.metadata.annotations['%s'].contains('\"entry\":\"%s\"')" $pod $status $entry.name) -}}
{{- range $container := $entry.containers -}}
{{- $same := printf "c.name == '%s' && has(c.image) && c.image == '%s'" $container.name $container.image -}}
{{- $checks = append $checks (printf "((has(%s.spec.initContainers) && %s.spec.initContainers.exists(c, %s && has(c.restartPolicy) && c.restartPolicy == 'Always')) || %s.spec.containers.exists(c, %s))" $pod $pod $same $pod $same) -}}
{{- end -}}
{{- end -}}
{{- join " && " $checks -}}
{{- end -}}

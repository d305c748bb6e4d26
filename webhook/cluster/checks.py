"""`podpatterns check`: the health of an installed release, as verdicts (ok, warning, failure) with what to do."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from webhook import certs
from webhook.cluster import kubeclient, kubeversion, podmetrics, servingcert, webhookscope, workloads
from webhook.core import inventory
from webhook.core.configuration import Configuration

OK, WARNING, FAILURE, UNCHECKED = "ok", "warning", "failure", "unchecked"  # unchecked: the API refused or is gone
INSTANCE = "app.kubernetes.io/instance"
MINIMUM_VERSION = (1, 28)  # the chart's kubeVersion: webhook matchConditions
EXPIRY_WARNING = dt.timedelta(days=14)  # both chart modes renew 30 days before: 14 left means renewal is failing
TIMEOUT_LIMIT = 10  # seconds: the apiserver's own budget for a request's admission (chart README)
RELOAD_METRIC = "podpatterns_config_last_reload_success"
README = "charts/podpatterns/README.md"
SHOWN = 5  # Pods or objects named in a result's details, the rest counted


@dataclass(frozen=True)
class Result:
    group: str
    check: str  # what holds when it passes, as a sentence
    status: str = OK
    details: tuple[str, ...] = ()  # what was found, when it is not plainly ok
    hint: str = ""  # what to do: "hint: …" or "see …"


@dataclass(frozen=True)
class Target:
    release: str
    namespace: str
    webhook_url: str | None = None  # also verify the certificate served there (e.g. through kubectl port-forward)


class ConfigurationBroken(Exception):
    """The release's catalogue or policy cannot be read or does not load (the message says which and why)."""


class _Unchecked(Exception):
    def __init__(self, reason: str, hint: str):
        super().__init__(reason)
        self.reason, self.hint = reason, hint


class Checker:
    """`run()` yields the results group by group, as they are found; the API is read once per object."""

    def __init__(self, api: Any, target: Target, configuration: Callable[[], Configuration],
                 now: Callable[[], dt.datetime] = certs.now):
        from kubernetes import client

        self.api, self.target, self._load, self.now = api, target, configuration, now
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.admission, self.policy = client.AdmissionregistrationV1Api(api), client.PolicyV1Api(api)
        self.version = client.VersionApi(api)
        self.webhooks: dict[str, Any] | None = None  # the MutatingWebhookConfiguration
        self.deployment: dict[str, Any] | None = None
        self.configuration: Configuration | None = None

    def run(self) -> Iterator[Result]:
        reached = yield from self._kubernetes_api()
        if not reached:
            return  # nothing else can be checked
        for group in (self._webhook, self._replicas, self._config, self._pods):
            yield from group()

    # --- kubernetes-api

    def _kubernetes_api(self) -> Iterator[Result]:
        group = "kubernetes-api"
        yield Result(group, "can initialize the client")
        try:
            info = self.version.get_code(_request_timeout=kubeclient.TIMEOUT)
        except Exception as err:
            reason, hint = _api_problem(err, "get", "/version")
            yield Result(group, "can query the Kubernetes API", UNCHECKED, (reason,), hint)
            return False
        yield Result(group, f"can query the Kubernetes API ({info.git_version})")
        version = kubeversion.parse(f"{info.major}.{re.sub(r'[^0-9].*', '', info.minor)}")
        minimum, native = ".".join(map(str, MINIMUM_VERSION)), ".".join(map(str, kubeversion.NATIVE_SIDECARS_SINCE))
        if version < MINIMUM_VERSION:
            yield Result(group, f"is running the minimum Kubernetes version ({minimum})", FAILURE,
                         (f"the cluster runs {info.git_version}",),
                         "hint: the chart's webhook configuration needs matchConditions (Kubernetes >= 1.28)")
        else:
            yield Result(group, f"is running the minimum Kubernetes version ({minimum})")
        if version < kubeversion.NATIVE_SIDECARS_SINCE:
            yield Result(group, f"has native sidecars (Kubernetes >= {native})", WARNING,
                         (f"the cluster runs {info.git_version}: entries with lifecycle auto run as regular containers",),
                         "hint: a regular sidecar starts beside the app, not before it, and keeps a Job running; "
                         "upgrade the cluster for native sidecars")
        else:
            yield Result(group, f"has native sidecars (Kubernetes >= {native})")
        return True

    # --- podpatterns-webhook

    def _webhook(self) -> Iterator[Result]:
        group, release, namespace = "podpatterns-webhook", self.target.release, self.target.namespace
        exists = "the MutatingWebhookConfiguration exists"
        try:
            found = self._list(self.admission.list_mutating_webhook_configuration, "list",
                               "mutatingwebhookconfigurations", label_selector=f"{INSTANCE}={release}")
        except _Unchecked as err:
            yield Result(group, exists, UNCHECKED, (err.reason,), err.hint)
            return
        mine = [c for c in found if any(_service(w).get("namespace") == namespace for w in c.get("webhooks") or [])]
        if not mine:
            yield Result(group, exists, FAILURE,
                         (f"no MutatingWebhookConfiguration labelled {INSTANCE}={release} calls a Service in namespace "
                          f"{namespace}",),
                         f"hint: is the release installed there? helm -n {namespace} status {release}")
            return
        self.webhooks = configuration = sorted(mine, key=lambda c: c["metadata"]["name"])[0]
        entries = configuration.get("webhooks") or []
        name = configuration["metadata"]["name"]
        yield Result(group, f"the MutatingWebhookConfiguration {name} exists ({len(entries)} webhooks)")
        yield _same(group, "failurePolicy is Fail", entries, "failurePolicy", "Fail", WARNING,
                    f"see {README}, failurePolicy: the trade-off (with Ignore, in-scope Pods are created without "
                    "their entries while no replica answers; with mandatory rules, enable policyGuard)")
        slow = [f"{w['name']}: {w.get('timeoutSeconds', 10)}s" for w in entries
                if not 1 <= w.get("timeoutSeconds", 10) <= TIMEOUT_LIMIT]
        yield Result(group, f"timeoutSeconds is at most {TIMEOUT_LIMIT}", WARNING if slow else OK, tuple(slow),
                     "hint: every Pod create waits this long for a replica that does not answer; the chart's default "
                     "is 5 (webhook.timeoutSeconds)" if slow else "")
        yield _same(group, "reinvocationPolicy is IfNeeded", entries, "reinvocationPolicy", "IfNeeded", WARNING,
                    "hint: with Never, containers a later webhook adds are not checked again by podpatterns; the chart "
                    "renders IfNeeded")
        excludes = webhookscope.excludes
        leaky = [f"{w['name']} is called for Pods of {', '.join(n for n in (namespace, 'kube-system') if not excludes(w, n))}"
                 for w in entries if not (excludes(w, namespace) and excludes(w, "kube-system"))]
        yield Result(group, f"namespaces {namespace} and kube-system are excluded", FAILURE if leaky else OK,
                     tuple(leaky),
                     "hint: with failurePolicy Fail the webhook's own Pods and the control plane's could not start "
                     "while it is down; the chart excludes them in every webhook's namespaceSelector" if leaky else "")
        yield from self._certificate(group, entries)

    def _certificate(self, group: str, entries: list[dict[str, Any]]) -> Iterator[Result]:
        check = "the caBundle verifies the serving certificate"
        bundles = {(w.get("clientConfig") or {}).get("caBundle") or "" for w in entries}
        if "" in bundles:
            missing = [w["name"] for w in entries if not (w.get("clientConfig") or {}).get("caBundle")]
            yield Result(group, check, FAILURE, (f"no caBundle in {', '.join(missing)}",),
                         "hint: selfManaged: the server writes it when it starts (are its Pods running? kubectl -n "
                         f"{self.target.namespace} logs deploy/{self.webhooks['metadata']['name']}); certManager: "
                         "cert-manager's cainjector writes it")
            return
        if len(bundles) > 1:
            yield Result(group, check, FAILURE, ("the webhooks carry different caBundles",),
                         "hint: selfManaged: the server re-asserts one caBundle in every webhook at its next "
                         "certificate check (certificates.selfManaged.checkSeconds)")
            return
        try:
            ca = base64.b64decode(bundles.pop(), validate=True)
        except (binascii.Error, ValueError):
            yield Result(group, check, FAILURE, ("the caBundle is not base64",))
            return
        service = _service(entries[0])
        server_name = f"{service.get('name')}.{service.get('namespace')}.svc"
        secret = servingcert.secret_name(self._deployment_or_none(), self.webhooks["metadata"]["name"])
        label = f"Secret {self.target.namespace}/{secret}"
        try:
            pem = servingcert.read_secret_certificate(self.api, self.target.namespace, secret)
        except Exception as err:
            status = getattr(err, "status", None)
            if status == 404:
                yield Result(group, check, FAILURE, (f"{label}, whose certificate the server serves, does not exist",),
                             "hint: selfManaged: the first replica creates it; existingSecret: create it; "
                             "certManager: kubectl -n " f"{self.target.namespace} describe certificate")
            else:
                reason, hint = _api_problem(err, "get", "secrets")
                yield Result(group, check, UNCHECKED, (reason,), hint)
            pem = None
        if pem is not None:
            yield self._verdict(group, check, label, pem, ca, server_name)
        if self.target.webhook_url:
            yield self._endpoint(group, ca, server_name)

    def _verdict(self, group: str, check: str, label: str, pem: bytes, ca: bytes, server_name: str) -> Result:
        if not pem:
            return Result(group, check, FAILURE, (f"{label} has no tls.crt",))
        now = self.now()
        problems = certs.chain_problems(pem, ca, server_name, now)
        if problems:
            return Result(group, check, FAILURE, tuple(f"{label}: tls.crt: {p}" for p in problems),
                          "hint: the apiserver refuses the webhook's TLS, so every in-scope Pod is refused "
                          "(failurePolicy Fail) or created without its entries (Ignore); selfManaged: the server "
                          "rewrites the caBundle at its next check; certManager: check the cainjector")
        expires = certs.expiry(pem)
        if expires - now < EXPIRY_WARNING:
            return Result(group, check, WARNING, (f"{label}: tls.crt expires {expires:%Y-%m-%d %H:%M} UTC",),
                          "hint: it should have been renewed 30 days before; see the server's logs (selfManaged) or "
                          "the Certificate's events (certManager)")
        return Result(group, f"{check} ({label}, for {server_name}, until {expires:%Y-%m-%d})")

    def _endpoint(self, group: str, ca: bytes, server_name: str) -> Result:
        url = self.target.webhook_url
        check = f"the webhook at {url} serves a certificate the caBundle verifies"
        try:
            pem, refused = servingcert.served(url, server_name, ca)
        except (OSError, ValueError) as err:
            return Result(group, check, UNCHECKED, (f"cannot connect: {err}",),
                          f"hint: kubectl -n {self.target.namespace} port-forward svc/"
                          f"{_service((self.webhooks.get('webhooks') or [{}])[0]).get('name')} 8443:443, then "
                          "--webhook-url https://127.0.0.1:8443")
        if refused:
            return Result(group, check, FAILURE, (f"a client trusting the caBundle, dialling {server_name}, refuses it: "
                                                  f"{refused}",),
                          "hint: the replica serves another certificate than the caBundle's CA signed")
        return Result(group, f"{check} (for {server_name}, until {certs.expiry(pem):%Y-%m-%d})")

    # --- podpatterns-replicas

    def _replicas(self) -> Iterator[Result]:
        group, namespace = "podpatterns-replicas", self.target.namespace
        exists = "the Deployment exists"
        try:
            deployment = self._deployment()
        except _Unchecked as err:
            yield Result(group, exists, UNCHECKED, (err.reason,), err.hint)
            return
        if deployment is None:
            yield Result(group, exists, FAILURE, (f"no Deployment labelled {INSTANCE}={self.target.release} in "
                                                  f"namespace {namespace}",),
                         f"hint: helm -n {namespace} status {self.target.release}")
            return
        name = deployment["metadata"]["name"]
        yield Result(group, f"the Deployment {name} exists")
        wanted = (deployment.get("spec") or {}).get("replicas", 1)
        ready = (deployment.get("status") or {}).get("readyReplicas") or 0
        check = "at least two replicas are ready"
        if ready == 0:
            yield Result(group, check, FAILURE, (f"0 of {wanted} replicas ready",),
                         f"hint: kubectl -n {namespace} describe deploy/{name}; kubectl -n {namespace} logs deploy/{name}")
        elif ready < 2 or ready < wanted:
            yield Result(group, check, WARNING, (f"{ready} of {wanted} replicas ready",),
                         "hint: with one ready replica a restart or a node drain stops the webhook; the chart's "
                         "default is replicaCount 2" if wanted < 2 else
                         f"hint: kubectl -n {namespace} rollout status deploy/{name}")
        else:
            yield Result(group, f"{check} ({ready} of {wanted})")
        yield from self._disruption_budget(group, deployment)
        yield from self._replica_configuration(group, deployment)

    def _disruption_budget(self, group: str, deployment: dict[str, Any]) -> Iterator[Result]:
        check = "a PodDisruptionBudget covers the replicas"
        try:
            budgets = self._list(self.policy.list_namespaced_pod_disruption_budget, "list", "poddisruptionbudgets",
                                 self.target.namespace)
        except _Unchecked as err:
            yield Result(group, check, UNCHECKED, (err.reason,), err.hint)
            return
        labels = ((deployment["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        covering = [b for b in budgets if _selects((b.get("spec") or {}).get("selector") or {}, labels)]
        if not covering:
            yield Result(group, check, WARNING, ("no PodDisruptionBudget selects the webhook's Pods",),
                         "hint: a node drain may evict every replica at once; the chart renders one when "
                         "replicaCount > 1 (podDisruptionBudget.enabled)")
            return
        spec = covering[0]["spec"]
        rule = f"minAvailable {spec['minAvailable']}" if "minAvailable" in spec else f"maxUnavailable {spec.get('maxUnavailable')}"
        yield Result(group, f"{check} ({covering[0]['metadata']['name']}, {rule})")

    def _replica_configuration(self, group: str, deployment: dict[str, Any]) -> Iterator[Result]:
        check = "every replica serves the catalogue and policy on disk"
        namespace = self.target.namespace
        selector = ",".join(f"{k}={v}" for k, v in sorted(
            ((deployment["spec"].get("selector") or {}).get("matchLabels") or {}).items()))
        try:
            pods = self._list(self.core.list_namespaced_pod, "list", "pods", namespace, label_selector=selector)
        except _Unchecked as err:
            yield Result(group, check, UNCHECKED, (err.reason,), err.hint)
            return
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
                   and not (p.get("metadata") or {}).get("deletionTimestamp")]
        if not running:
            yield Result(group, check, FAILURE, ("no running replica to ask",),
                         f"hint: kubectl -n {namespace} get pods -l {selector}")
            return
        bad, unchecked, hint, unreachable = [], [], "", False
        for pod in sorted(running, key=lambda p: p["metadata"]["name"]):
            pod_name = pod["metadata"]["name"]
            proxied = podmetrics.proxy_name(pod)
            if proxied is None:
                bad.append(f"{pod_name}: declares no port named health or https to read /metrics from")
                continue
            try:
                text = podmetrics.scrape(self.api, namespace, proxied)
                value = podmetrics.sample(text, RELOAD_METRIC)
            except ValueError as err:
                bad.append(f"{pod_name}: /metrics is not a Prometheus exposition: {err}")
                continue
            except Exception as err:
                reason, why = _api_problem(err, "get", "pods/proxy")
                if getattr(err, "status", None) in (401, 403) or not hasattr(err, "status"):
                    unchecked.append(f"{pod_name}: {reason}")  # the user's access, or the API itself
                    hint = why
                else:  # the apiserver could not reach the replica's port (503), or the Pod is gone (404)
                    bad.append(f"{pod_name}: cannot read /metrics through the pod proxy ({proxied}): {reason}")
                    unreachable = True
                continue
            if value is None:
                bad.append(f"{pod_name}: /metrics has no {RELOAD_METRIC}")
            elif value != 1:
                bad.append(f"{pod_name}: {RELOAD_METRIC} is {value:g}: the catalogue or policy on disk does not load; "
                           "it serves the last configuration that did")
        if unchecked:
            yield Result(group, check, UNCHECKED, tuple(unchecked + bad), hint)
        elif bad:
            yield Result(group, check, FAILURE, tuple(bad),
                         "hint: the apiserver cannot reach the replica's port: is it running, and with "
                         "networkPolicy.enabled, does networkPolicy.apiserver name where the apiserver connects from?"
                         if unreachable else
                         f"hint: kubectl -n {namespace} logs POD names the broken file and line; fix the chart's "
                         "catalogue:/policy: values and helm upgrade (podpatterns catalog validate, policy validate)")
        else:
            yield Result(group, f"{check} ({len(running)} of {len(running)} read through the pod proxy)")

    # --- podpatterns-config

    def _config(self) -> Iterator[Result]:
        group = "podpatterns-config"
        loads = "the release's catalogue and policy load"
        try:
            self.configuration = configuration = self._load()
        except ConfigurationBroken as err:
            yield Result(group, loads, FAILURE, tuple(str(err).splitlines()),
                         "hint: the replicas keep serving the last configuration that loaded; fix the chart's "
                         "catalogue:/policy: values and helm upgrade")
            return
        except Exception as err:
            reason, hint = _api_problem(err, "list", "configmaps")
            yield Result(group, loads, UNCHECKED, (reason,), hint)
            return
        rules = configuration.policy.rules
        mandatory = [r for r in rules if r.mandatory and r.inject]
        yield Result(group, f"{loads} ({len(configuration.catalogue.names())} entries, {len(rules)} policy rules, "
                            f"{len(mandatory)} mandatory)")
        yield from self._namespaces(group, configuration)
        yield self._guard(group, configuration)

    def _namespaces(self, group: str, configuration: Configuration) -> Iterator[Result]:
        keys = configuration.settings.keys
        known = "Namespace annotations name only catalogue entries"
        try:
            namespaces = self._list(self.core.list_namespace, "list", "namespaces")
        except _Unchecked as err:
            yield Result(group, known, UNCHECKED, (err.reason,), err.hint)
            return
        unknown, unlabelled = [], []
        label = f"{keys.prefix}/injection"
        for item in sorted(namespaces, key=lambda n: n["metadata"]["name"]):
            meta = item["metadata"]
            asked = (meta.get("annotations") or {}).get(keys.inject)
            if asked is None:
                continue
            missing = [n for n in dict.fromkeys(s.strip() for s in asked.split(",")) if n and n not in configuration.catalogue]
            if missing:
                unknown.append(f"namespace {meta['name']}: {keys.inject}={asked!r} names {', '.join(missing)}, "
                               f"not in the catalogue")
            if (meta.get("labels") or {}).get(label) != "enabled":
                unlabelled.append(f"namespace {meta['name']} has {keys.inject} but not the label {label}=enabled")
        yield Result(group, known, FAILURE if unknown else OK, tuple(unknown),
                     f"hint: its Pods get a warning and not the entry; known entries: "
                     f"{', '.join(configuration.catalogue.names())} (podpatterns catalog list)" if unknown else "")
        yield Result(group, "annotated Namespaces are labelled for injection", WARNING if unlabelled else OK,
                     tuple(unlabelled),
                     f"hint: the apiserver sends a Namespace's Pods by its labels only: kubectl label namespace NS "
                     f"{label}=enabled" if unlabelled else "")

    def _guard(self, group: str, configuration: Configuration) -> Result:
        check = "mandatory rules are guarded where the webhook fails open"
        # As policyguard.yaml renders them: mandatory rules that enforce (warn and audit admit what they would deny).
        mandatory = [r.name for r in configuration.policy.rules if r.mandatory and r.inject and r.enforcement == "enforce"]
        entries = (self.webhooks or {}).get("webhooks") or []
        open_ = [w["name"] for w in entries if w.get("failurePolicy") == "Ignore"]
        if not open_:
            return Result(group, f"{check} (not needed: failurePolicy Fail)")
        if not mandatory:
            return Result(group, f"{check} (not needed: no mandatory rule enforces)")
        fullname = self.webhooks["metadata"]["name"]
        try:
            policies = {p["metadata"]["name"] for p in self._list(
                self.admission.list_validating_admission_policy, "list", "validatingadmissionpolicies")}
            bindings = {b["metadata"]["name"] for b in self._list(
                self.admission.list_validating_admission_policy_binding, "list", "validatingadmissionpolicybindings")}
        except _Unchecked as err:
            if err.reason.startswith("not found"):  # admissionregistration.k8s.io/v1 has them since 1.30
                policies, bindings = set(), set()
            else:
                return Result(group, check, UNCHECKED, (err.reason,), err.hint)
        unguarded = [r for r in mandatory if f"{fullname}-{r}" not in policies or f"{fullname}-{r}" not in bindings]
        if unguarded:
            return Result(group, check, FAILURE,
                          (f"failurePolicy Ignore, and no ValidatingAdmissionPolicy and binding for the mandatory "
                           f"{'rule' if len(unguarded) == 1 else 'rules'} {', '.join(unguarded)} "
                           f"({', '.join(f'{fullname}-{r}' for r in unguarded)}): while the webhook is down, the Pods "
                           "they select are created without their entries",),
                          f"hint: helm upgrade {self.target.release} charts/podpatterns -n {self.target.namespace} "
                          f"--reuse-values --set policyGuard.enabled=true (Kubernetes >= 1.30); see {README}, The guard")
        return Result(group, f"{check} ({len(mandatory)} ValidatingAdmissionPolicies)")

    # --- podpatterns-pods

    def _pods(self) -> Iterator[Result]:
        group = "podpatterns-pods"
        checks = ("no injected Pod is stale", "no Pod lacks a mandatory entry", "no Pod carries a forged or unknown entry")
        if self.configuration is None:
            return  # judged against the configuration, which did not load (said above)
        try:
            found = workloads.take_inventory(self.api, self.configuration, None, self._never_sent())
        except Exception as err:
            reason, hint = _api_problem(err, "list", "pods")
            for check in checks:
                yield Result(group, check, UNCHECKED, (reason,), hint)
            return
        pods = [p for g in found.groups for p in g.pods]
        injected = [p for p in pods if any(r.digest for r in p.records)]
        stale = [p for p in pods if p.stale]
        missing = [p for p in pods if any(r.state == inventory.MISSING for r in p.records)]
        flagged = [p for p in pods if any(r.state in (inventory.FORGED, inventory.UNKNOWN, inventory.UNREADABLE)
                                          for r in p.records)]
        yield Result(group, f"{checks[0]} ({len(injected)} injected)", WARNING if stale else OK,
                     _named(stale, f"{len(stale)} of {len(injected)} injected Pods run entries from an "
                                   "older catalogue", lambda p: _states(p, inventory.STALE)),
                     "hint: running Pods keep what they were injected with; podpatterns status --stale -A lists "
                     "their workloads, podpatterns rollout restarts them" if stale else "")
        yield Result(group, checks[1], FAILURE if missing else OK,
                     _named(missing, f"{_plural(len(missing), 'Pod')} without entries a mandatory rule adds",
                            lambda p: _states(p, inventory.MISSING)),
                     "hint: created while the webhook was down (failurePolicy Ignore) or before the rule; restart "
                     "their workloads (podpatterns rollout) so the webhook injects them" if missing else "")
        yield Result(group, checks[2], WARNING if flagged else OK,
                     _named(flagged, f"{_plural(len(flagged), 'Pod')} with a status annotation that does not hold",
                            lambda p: _states(p, inventory.FORGED, inventory.UNKNOWN, inventory.UNREADABLE)),
                     "hint: podpatterns status -A shows why" if flagged else "")

    def _never_sent(self) -> tuple[str, ...]:
        return webhookscope.never_sent((self.webhooks or {}).get("webhooks") or [], self.target.namespace)

    # --- reading the API

    def _deployment(self) -> dict[str, Any] | None:
        if self.deployment is None:
            found = self._list(self.apps.list_namespaced_deployment, "list", "deployments", self.target.namespace,
                               label_selector=f"{INSTANCE}={self.target.release}")
            name = self.webhooks["metadata"]["name"] if self.webhooks else None
            found.sort(key=lambda d: (d["metadata"]["name"] != name, d["metadata"]["name"]))
            self.deployment = found[0] if found else None
        return self.deployment

    def _deployment_or_none(self) -> dict[str, Any] | None:
        try:
            return self._deployment()
        except _Unchecked:
            return None

    @staticmethod
    def _list(method: Callable[..., Any], verb: str, resource: str, *args: Any, **options: Any) -> list[dict[str, Any]]:
        try:
            response = method(*args, **options, _preload_content=False, _request_timeout=kubeclient.TIMEOUT)
        except Exception as err:
            raise _Unchecked(*_api_problem(err, verb, resource)) from err
        return json.loads(response.data).get("items") or []


def _service(webhook: dict[str, Any]) -> dict[str, Any]:
    return (webhook.get("clientConfig") or {}).get("service") or {}


def _same(group: str, check: str, entries: list[dict[str, Any]], field: str, wanted: str, status: str, hint: str) -> Result:
    other = [w for w in entries if w.get(field) != wanted]
    if not other:
        return Result(group, check)
    values = {w.get(field) for w in other}
    if len(other) == len(entries) and len(values) == 1:
        return Result(group, check, status, (f"every webhook: {field} {values.pop()}",), hint)
    return Result(group, check, status, tuple(f"{w['name']}: {field} {w.get(field)}" for w in other), hint)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions) against labels; an empty selector selects everything."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if (operator == "In" and labels.get(key) not in values) or (operator == "NotIn" and labels.get(key) in values) \
                or (operator == "Exists" and key not in labels) or (operator == "DoesNotExist" and key in labels):
            return False
    return True


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _states(pod: inventory.PodState, *states: str) -> str:
    entries = [r.entry or "?" for r in pod.records if r.state in states]
    return f"{pod.namespace}/{pod.name} ({pod.workload.label}): {', '.join(entries)}"


def _named(pods: list[inventory.PodState], summary: str, describe: Callable[[inventory.PodState], str]) -> tuple[str, ...]:
    if not pods:
        return ()
    more = [f"… and {len(pods) - SHOWN} more"] if len(pods) > SHOWN else []
    return (summary, *(describe(p) for p in pods[:SHOWN]), *more)


def _api_problem(err: Exception, verb: str, resource: str) -> tuple[str, str]:
    """What went wrong reading the API, and what to do."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(err, ApiException):
        try:
            message = json.loads(err.body).get("message") or str(err.reason)
        except (TypeError, ValueError, AttributeError):
            message = str(err.reason)
        if err.status == 403:
            return (f"forbidden to {verb} {resource}: {message}",
                    f"hint: grant the user {verb} on {resource} (README, podpatterns check, lists the rules it needs)")
        if err.status == 401:
            return f"unauthorized: {message}", "hint: the kubeconfig's credentials were refused"
        if err.status == 404:
            return f"not found: {message}", ""
        return f"the API answered {err.status} {err.reason} to {verb} {resource}: {message}", ""
    if isinstance(err, (HTTPError, OSError)):
        return (f"cannot reach the Kubernetes API: {err}",
                "hint: is the cluster up, and the kubeconfig's server right? (kubectl cluster-info)")
    raise err

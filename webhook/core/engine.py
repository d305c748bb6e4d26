"""The injection engine: a pure function from a Pod, its catalogue and settings to a plan.

A plan is the list of JSON-Patch operations plus what was decided for each requested entry and the
warnings, or a denial that names the annotation, the value and what would be accepted. No I/O, no
globals: the HTTP endpoint, the CLI and the tests all call `plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from webhook.core import additions, limits, podkinds, podresources, updates, verify
from webhook.core.entries import Catalogue, Entry
from webhook.core.findings import Finding
from webhook.core.keys import DEFAULT_CONTAINER, AnnotationKeys
from webhook.core.parameters import Parameter, ParameterError
from webhook.core.patch import Additions, Op, operations
from webhook.core.pod import (
    PodShapeError,
    PodView,
    check_containers,
    check_resources,
    read_pod,
)
from webhook.core.renders import Rendered
from webhook.core.rules import EMPTY as EMPTY_POLICY
from webhook.core.rules import Policy, Rule

MAX_SHOWN = 100  # characters of a user's value repeated in a message


@dataclass(frozen=True)
class Settings:
    keys: AnnotationKeys = AnnotationKeys()
    native_sidecars: bool = True  # the cluster runs Kubernetes >= 1.29 (see webhook.kubeversion)
    # Air-gapped clusters: every injected image is pulled from this registry (host[/path]) instead; see core/images.py.
    image_registry: str | None = None
    image_pull_secrets: tuple[str, ...] = ()  # added to every Pod that gets an entry


@dataclass(frozen=True)
class NamespaceInfo:
    """What the engine knows of the Pod's Namespace (from the namespace cache, or a manifest offline)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 3× as much, and a plan makes several
class Decision:
    entry: str
    source: str  # who asked for it, as a phrase: "requested by annotation …", "added by rule … (mandatory)"
    injected: bool
    reason: str = ""  # why not, when not injected; why again, when re-injected
    parameters: dict[str, tuple[Any, str]] = field(default_factory=dict)  # name -> (value, where it came from)
    enforcement: str = ""  # the enforcement of the rule that asked for it; "" when the Pod or Namespace did


@dataclass
class Plan:
    ops: list[Op] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    denial: str | None = None
    notes: list[str] = field(default_factory=list)  # what the policy changed besides injecting, for explain
    # How the Pod breaks the policy's rules, whatever their enforcement (webhook.core.audit reads them). A denial
    # stops the plan, so a denied Pod's findings end with the one that denied it.
    findings: list[Finding] = field(default_factory=list)

    @property
    def injected(self) -> list[str]:
        return [d.entry for d in self.decisions if d.injected]


class Denied(Exception):
    """A user mistake: the Pod must not be created as it is."""


@dataclass
class _Request:
    entry: str
    source: str
    asked_by: str  # "pod", "namespace" or "rule"
    mandatory_by: str | None = None  # the first mandatory rule that adds it
    rule: Rule | None = None  # the first (enforced) rule that adds it


def plan(pod: Any, catalogue: Catalogue, settings: Settings, namespace: str = "", name: str = "",
         namespace_info: NamespaceInfo | None = None, policy: Policy = EMPTY_POLICY, partial: bool = False,
         wire: bool = False) -> Plan:
    """`namespace` and `name` stand in when the Pod has none (the request's namespace; a workload's name).
    Without `namespace_info` the Namespace is taken to have no labels and no annotations. `partial`: the Pod
    holds only the fields of webhook.core.podfields; raises NeedsWholePod when the plan needs more. `wire`: the
    operations only for orjson to write, as the server does (webhook.core.patch)."""
    result = Plan()
    try:
        view = read_pod(pod, namespace, name, partial)
        _plan(view, catalogue, settings, namespace_info or NamespaceInfo(view.namespace), policy, result, wire)
    except PodShapeError as err:
        result.ops, result.denial = [], f"the object is not a valid Pod: {err}"
    except (Denied, additions.Clash) as err:
        result.ops, result.denial = [], str(err)
    return result


def check_update(old: Any, new: Any, catalogue: Catalogue, settings: Settings) -> str | None:
    """Why an UPDATE of a Pod is refused (it changes what an entry injected; webhook.core.updates), or None.
    Objects that are not Pod-shaped are the apiserver's to refuse."""
    try:
        old_view, new_view = read_pod(old), read_pod(new)
    except PodShapeError:
        return None
    return updates.violation(old_view, new_view, catalogue, settings.keys)


def _plan(pod: PodView, catalogue: Catalogue, settings: Settings, namespace: NamespaceInfo, policy: Policy,
          result: Plan, wire: bool = False) -> None:
    keys = settings.keys
    rules = policy.matching(namespace.labels, pod.labels)
    requested = _requested(pod, namespace, rules, catalogue, keys, result)
    if podkinds.is_mirror(pod):
        # The kubelet runs a static Pod from its file; the API object only mirrors it. Never changed.
        for request in requested:
            result.decisions.append(Decision(request.entry, request.source, False, "a mirror (static) Pod is never changed"))
        if requested:
            result.warnings.append(f"mirror Pod ({podkinds.MIRROR_ANNOTATION}): nothing injected; the static Pod's "
                                   f"file on the node decides its containers")
        return
    if podkinds.is_windows(pod):
        requested = _without_linux_entries(requested, result)
    records = _status_records(pod, keys)
    claimed = {r["entry"]: r for r in records}
    supplied = _supplied_parameters(pod, catalogue, keys, {r.entry for r in requested}, result.warnings)
    if rules:
        _check_bounds(supplied, rules, catalogue, keys, result)
    environment = namespace.labels.get(policy.environment_label)
    by_environment = policy.environments.get(environment, {}) if environment is not None else {}
    chosen: list[additions.Chosen] = []
    held: set[str] = set()  # entries the Pod claims and holds
    pod_values = _pod_values(pod)
    for request in requested:
        entry = catalogue[request.entry]
        environment_values = {
            name: (value, f"environment {environment} (namespace label {policy.environment_label})")
            for name, value in by_environment.get(entry.name, {}).items()
        }
        values = _resolve_parameters(entry, environment_values | supplied.get(entry.name, {}), keys)
        rendered, native = _render(entry, values, pod_values, settings)
        if rendered.problems:
            sizes = [f"{name} = {value} ({origin})" for name, (value, origin) in values.items()
                     if entry.parameters[name].type == "quantity"]
            raise Denied(f"{entry.name}: {'; '.join(rendered.problems)}, which the apiserver refuses; its resource "
                         f"parameters: {', '.join(sizes) or 'none'}")
        reinjected = ""
        enforcement = request.rule.enforcement if request.rule is not None else ""
        if entry.name in claimed:
            # The annotation is a claim: it counts only when the Pod holds what the entry injects.
            pod.needs_whole()
            wrong = verify.mismatch(pod, rendered)
            if wrong is None:
                result.decisions.append(Decision(request.entry, request.source, False,
                                                 f"already injected (annotation {keys.status}), and the Pod holds it",
                                                 enforcement=enforcement))
                held.add(entry.name)
                continue
            # Stale (an older catalogue version) or forged: either way the Pod gets what the entry injects now.
            digest = claimed[entry.name]["digest"]
            version = "" if digest == entry.digest else f", digest {digest}; the catalogue's is {entry.digest}"
            reinjected = f"annotation {keys.status} claims it{version}, but {wrong}; injected afresh"
            result.warnings.append(f"{entry.name}: {reinjected}")
        result.decisions.append(Decision(request.entry, request.source, True, reinjected, parameters=values,
                                         enforcement=enforcement))
        chosen.append(additions.Chosen(entry, rendered, native, replace=bool(reinjected)))
        if request.rule is not None:
            why = f"mandatory by rule {request.mandatory_by}" if request.mandatory_by else f"added by rule {request.rule.name}"
            result.findings.append(Finding(request.mandatory_by or request.rule.name, "missing-entry",
                                           f"the Pod lacks {entry.name} ({why}){'; ' + wrong if reinjected else ''}",
                                           "enforce", "inject", request.mandatory_by is not None, (entry.name,)))
    limits_rules: list[Rule] = []
    cap_rules: list[Rule] = []
    if rules:  # most Pods meet no rule: none of this
        _report_unenforced_entries(pod, rules, catalogue, settings, held | {c.entry.name for c in chosen}, claimed,
                                   result)
        limits_rules = [rule for rule in rules if rule.resources is not None]
        cap_rules = sorted((rule for rule in rules if rule.max_containers is not None), key=lambda rule: rule.max_containers)
    records = [r for r in records if r["entry"] not in {c.entry.name for c in chosen}]
    if not chosen and not limits_rules and not cap_rules:
        return
    check_containers(pod)
    added = additions.build(pod, chosen, result.warnings, catalogue.combinations) if chosen else Additions()
    for rule in cap_rules:
        excess = limits.container_count_excess(pod, added, rule)
        if excess is not None:
            _breaks(rule, "too-many-containers", excess, True, result)
    if limits_rules:
        pod.needs_whole()  # defaults are set on the containers' whole resources
        check_resources(pod)
    # The first enforced rule with resources sets defaults or decides; the others (warn, audit) report what it leaves.
    deciding = next((rule for rule in limits_rules if rule.enforcement == "enforce"), None)
    for rule in sorted(limits_rules, key=lambda rule: rule is not deciding):
        if rule.enforcement == "enforce" and rule is not deciding:
            continue
        missing, defaulted = limits.apply(pod, added, rule, defaulting=rule is deciding)
        if defaulted:
            names = ", ".join(defaulted)
            result.notes.append(f"rule {rule.name}: default resources set on {names}")
            result.findings.append(Finding(rule.name, "missing-limits", f"rule {rule.name}: no cpu or memory limit on "
                                           f"{names}; admission sets the rule's defaults", "enforce", "default"))
        if missing is not None:
            _breaks(rule, "missing-limits", missing, rule.resources.missing_limits == "deny", result)
    for kind, index in added.replaced:  # a replaced container is the entry's, not an app container
        added.app_resources.pop((kind, index), None)
        if kind == "containers":
            added.app_env.pop(index, None)
            added.app_mounts.pop(index, None)
    if pod.spec.get("resources") is not None:
        added.pod_resources = podresources.grown(pod, added.native_sidecars + added.containers)
    if chosen:
        secrets = settings.image_pull_secrets + tuple(name for c in chosen for name in c.entry.image_pull_secrets)
        if secrets:
            added.pull_secrets = _pull_secrets(pod, secrets)
        if settings.image_registry:
            result.notes += [f"{c.entry.name}: images from registry {settings.image_registry} (--image-registry): "
                             + ", ".join(container["image"] for container in c.rendered.containers) for c in chosen]
    if chosen:
        records += [{"entry": c.entry.name, "pattern": c.entry.pattern, "digest": c.entry.digest} for c in chosen]
        added.annotations[keys.status] = orjson.dumps(records).decode()
        if DEFAULT_CONTAINER not in pod.annotations:
            # Keeps `kubectl logs` and `kubectl exec` on the app, not on an injected container.
            added.annotations[DEFAULT_CONTAINER] = pod.containers[0]["name"]
    result.ops = operations(pod, added, wire)


def _breaks(rule: Rule, kind: str, message: str, denies: bool, result: Plan, entries: tuple[str, ...] = ()) -> None:
    """The Pod breaks `rule`: a finding, and what the rule's enforcement makes of it: a denial (enforce, when the
    rule denies), an admission warning (enforce when the rule only warns, and warn), or nothing more (audit)."""
    enforcement = rule.enforcement
    admission = "deny" if denies and enforcement == "enforce" else "report" if enforcement == "audit" else "warn"
    result.findings.append(Finding(rule.name, kind, message, enforcement, admission, entries=entries))
    if admission == "deny":
        raise Denied(message)
    if admission == "warn":
        result.warnings.append(message if enforcement == "enforce" else
                               f"{message} (rule enforcement warn: admitted; enforce would {'deny' if denies else 'warn'})")


def _report_unenforced_entries(pod: PodView, rules: list[Rule], catalogue: Catalogue, settings: Settings,
                               present: set[str], claimed: dict[str, dict[str, str]], result: Plan) -> None:
    """Rules with enforcement warn or audit inject nothing: a Pod lacking their entries gets a finding (and with
    warn, a warning). An entry counts as present when injected now, or claimed by the status annotation and held."""
    if podkinds.is_windows(pod):
        return  # no entry runs on a Windows Pod (_without_linux_entries)
    for rule in rules:
        if rule.enforcement == "enforce" or not rule.inject:
            continue
        for name in rule.inject:
            if name in claimed and name not in present:
                pod.needs_whole()  # _holds compares the Pod's containers with the entry's
            if name in present or (name in claimed and _holds(pod, catalogue[name], settings)):
                present.add(name)
                continue
            source = f"rule {rule.name}" + (" (mandatory)" if rule.mandatory else "")
            result.decisions.append(Decision(name, f"{'mandatory by' if rule.mandatory else 'added by'} {source}",
                                             False, f"{source} is not enforced: the Pod lacks it",
                                             enforcement=rule.enforcement))
            message = f"the Pod lacks {name} ({'mandatory by' if rule.mandatory else 'added by'} rule {rule.name})"
            admission = "warn" if rule.enforcement == "warn" else "report"
            result.findings.append(Finding(rule.name, "missing-entry", message, rule.enforcement, admission,
                                           rule.mandatory, (name,)))
            if admission == "warn":
                result.warnings.append(f"{message}: not injected, the rule's enforcement is warn")


def _holds(pod: PodView, entry: Entry, settings: Settings) -> bool:
    """Whether the Pod holds what `entry` injects with its default parameters (a claimed entry no rule enforces)."""
    if entry.required_unset is not None:
        return True  # it cannot be rendered without the Pod's own values: the claim is taken as it is
    rendered, _ = _render(entry, entry.defaults, _pod_values(pod), settings)
    return verify.mismatch(pod, rendered) is None


def _check_bounds(supplied: dict[str, dict[str, tuple[Any, str]]], rules: list[Rule], catalogue: Catalogue,
                  keys: AnnotationKeys, result: Plan) -> None:
    """A rule's parameterBounds narrow what the Pod's own annotations may ask (environments and defaults are the
    platform team's own)."""
    for rule in rules:
        for entry, name, minimum, maximum in rule.parameter_bounds:
            value, _ = supplied.get(entry, {}).get(name, (None, ""))
            if value is None or catalogue[entry].parameters[name].within(value, minimum, maximum):
                continue
            bounds = " and ".join(b for b in (f"at least {minimum}" if minimum is not None else "",
                                              f"at most {maximum}" if maximum is not None else "") if b)
            _breaks(rule, "parameter-out-of-bounds", f"annotation {keys.parameter(entry, name)}: value "
                    f"{_show(str(value))} is not accepted: rule {rule.name} allows {bounds}", True, result, (entry,))


def _pull_secrets(pod: PodView, wanted: tuple[str, ...]) -> list[str]:
    """The Secret names to add to spec.imagePullSecrets: merged by name with the Pod's own, never twice."""
    own = pod.spec.get("imagePullSecrets")
    if own is not None and not (isinstance(own, list) and all(isinstance(s, dict) for s in own)):
        raise Denied("spec.imagePullSecrets must be a list of {name: SECRET}")
    have = {s.get("name") for s in own or ()}
    return [name for name in dict.fromkeys(wanted) if name not in have]


def _show(value: str) -> str:
    return repr(value if len(value) <= MAX_SHOWN else value[:MAX_SHOWN] + "…")


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _requested(pod: PodView, namespace: NamespaceInfo, rules: list[Rule], catalogue: Catalogue,
               keys: AnnotationKeys, result: Plan) -> list[_Request]:
    """The entries asked for, in order: the Pod's annotation, the Namespace's annotation, then the policy's
    rules in file order. An entry asked for twice keeps its first source; a mandatory rule marks it."""
    requests: dict[str, _Request] = {}
    value = pod.annotations.get(keys.inject)
    for name in _names(value or ""):
        if name not in catalogue:
            raise Denied(
                f"annotation {keys.inject}: {_show(value)} names unknown entry {_show(name)}; "
                f"known entries: {', '.join(catalogue.names())}"
            )
        if name in requests:
            result.warnings.append(f"annotation {keys.inject}: {name} is listed twice; injected once")
            continue
        requests[name] = _Request(name, f"requested by annotation {keys.inject}", "pod")
    namespace_source = f"added by namespace {namespace.name} (annotation {keys.inject})"
    for name in _names(namespace.annotations.get(keys.inject, "")):
        if name not in catalogue:
            # The Pod's author cannot fix the Namespace: say so, and create the Pod.
            result.warnings.append(f"namespace {namespace.name} annotation {keys.inject} names unknown entry "
                                   f"{_show(name)}; ignored")
            continue
        requests.setdefault(name, _Request(name, namespace_source, "namespace"))
    for rule in rules:
        if rule.enforcement != "enforce":
            continue  # it injects nothing (_report_unenforced_entries)
        for name in rule.inject:
            request = requests.setdefault(name, _Request(name, f"added by rule {rule.name}", "rule"))
            if request.rule is None:
                request.rule = rule
            if rule.mandatory and request.mandatory_by is None:
                request.mandatory_by = rule.name
                added_here = request.source == f"added by rule {rule.name}"
                request.source += " (mandatory)" if added_here else f"; mandatory by rule {rule.name}"
    _check_allowed(requests, rules, namespace, result)
    return _without_excluded(requests, pod, catalogue, keys, result)


def _without_linux_entries(requests: list[_Request], result: Plan) -> list[_Request]:
    """A Windows Pod gets no entry (they are Linux containers): denied where the Pod cannot do without it,
    skipped with a warning where a Namespace default or an optional rule added it."""
    for request in requests:
        if request.mandatory_by is not None:
            raise Denied(f"{request.entry} is mandatory by rule {request.mandatory_by} and runs Linux containers, "
                         f"and this Pod has spec.os.name windows; select Windows workloads out of the rule "
                         f"(its podSelector), or run the Pod on Linux")
        if request.asked_by == "pod":
            raise Denied(f"{request.entry} ({request.source}) runs Linux containers, and this Pod has spec.os.name "
                         f"windows; remove it from the Pod's annotation, or run the Pod on Linux")
        result.decisions.append(Decision(request.entry, request.source, False, "a Windows Pod (spec.os.name: windows)"))
        result.warnings.append(f"{request.entry} ({request.source}) skipped: it runs Linux containers and the Pod is a "
                               f"Windows Pod")
    return []


def _check_allowed(requests: dict[str, _Request], rules: list[Rule], namespace: NamespaceInfo, result: Plan) -> None:
    # Rules restrict what the Pod and the Namespace ask for; entries the rules add themselves are the
    # platform team's own choice.
    for rule in rules:
        if rule.allowed_entries is None:
            continue
        for request in requests.values():
            if request.asked_by != "rule" and request.entry not in rule.allowed_entries:
                allowed = ", ".join(sorted(rule.allowed_entries)) or "none"
                _breaks(rule, "entry-not-allowed", f"{request.entry} ({request.source}) is not allowed in namespace "
                        f"{namespace.name} by rule {rule.name}; allowed entries: {allowed}", True, result, (request.entry,))


def _without_excluded(requests: dict[str, _Request], pod: PodView, catalogue: Catalogue, keys: AnnotationKeys,
                      result: Plan) -> list[_Request]:
    value = pod.annotations.get(keys.exclude)
    if value is None:
        return list(requests.values())
    excluded = set(_names(value))
    everything = "all" in excluded
    for name in sorted(excluded - {"all"} - set(catalogue.names())):
        result.warnings.append(f"annotation {keys.exclude}: there is no catalogue entry {name!r}; ignored")
    kept = []
    for request in requests.values():
        from_pod = request.asked_by == "pod"
        if from_pod or not (everything or request.entry in excluded):
            if from_pod and request.entry in excluded:
                result.warnings.append(f"{request.entry} is both requested by {keys.inject} and excluded by "
                                       f"{keys.exclude}; the request wins")
            kept.append(request)
        elif request.mandatory_by is not None:
            raise Denied(f"annotation {keys.exclude}: {_show(value)} excludes {request.entry}, which is mandatory "
                         f"by rule {request.mandatory_by}; remove it from the annotation")
        else:
            result.decisions.append(Decision(request.entry, request.source, False,
                                             f"excluded by annotation {keys.exclude}"))
    return kept


def _status_records(pod: PodView, keys: AnnotationKeys) -> list[dict[str, str]]:
    text = pod.annotations.get(keys.status)
    if text is None:
        return []
    try:
        records = orjson.loads(text)
    except orjson.JSONDecodeError:
        records = None
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and all(isinstance(r.get(k), str) for k in ("entry", "pattern", "digest")) for r in records
    ):
        raise Denied(
            f"annotation {keys.status}: {_show(text)} is not a record written by podpatterns "
            '(a JSON list of {"entry", "pattern", "digest"}); remove the annotation'
        )
    # Written back with the new records: only the three fields, so nothing else a user put in (a value
    # nested deeper than orjson writes, say) comes back out.
    return [{"entry": r["entry"], "pattern": r["pattern"], "digest": r["digest"]} for r in records]


def _supplied_parameters(
    pod: PodView, catalogue: Catalogue, keys: AnnotationKeys, requested: set[str], warnings: list[str]
) -> dict[str, dict[str, tuple[Any, str]]]:
    supplied: dict[str, dict[str, tuple[Any, str]]] = {}
    infix = keys.parameter_infix
    # Only the keys that can be parameters are split: a Pod may carry many annotations of its own.
    for key in [key for key in pod.annotations if infix in key]:
        split = keys.split_parameter(key)
        if split is None:
            continue
        name, param_name = split
        text = pod.annotations[key]
        if name not in catalogue:
            warnings.append(f"annotation {key}: there is no catalogue entry {name!r}; ignored")
            continue
        if name not in requested:
            warnings.append(f"annotation {key}: {name} is not requested for this Pod; ignored")
            continue
        entry = catalogue[name]
        param = entry.parameters.get(param_name)
        if param is None:
            accepted = ", ".join(entry.parameters) or "none"
            raise Denied(f"annotation {key}: {name} has no parameter {param_name!r}; its parameters: {accepted}")
        try:
            value = param.parse(text)
        except ParameterError as err:
            raise Denied(f"annotation {key}: value {_show(text)} is not accepted: {err}") from None
        supplied.setdefault(name, {})[param_name] = (value, f"annotation {key}")
    return supplied


def _resolve_parameters(entry: Entry, supplied: dict[str, tuple[Any, str]], keys: AnnotationKeys) -> dict[str, tuple[Any, str]]:
    if not supplied:  # most Pods: the entry's defaults, resolved once (shared, read-only)
        if entry.required_unset is not None:
            raise Denied(_required_missing(entry, entry.required_unset, keys))
        return entry.defaults
    values: dict[str, tuple[Any, str]] = {}
    for param in entry.parameters.values():
        if param.name in supplied:
            values[param.name] = supplied[param.name]
        elif param.default is not None:
            values[param.name] = (param.default, "default")
        elif param.required:
            raise Denied(_required_missing(entry, param, keys))
    return values


def _required_missing(entry: Entry, param: Parameter, keys: AnnotationKeys) -> str:
    return (f"{entry.name}: required parameter {param.name} is missing; set annotation "
            f"{keys.parameter(entry.name, param.name)} to {param.accepted()} ({param.description})")


def _pod_values(pod: PodView) -> dict[str, Any]:
    """The placeholders a template may use besides its parameters."""
    return {"pod.name": pod.name, "pod.namespace": pod.namespace,
            "pod.serviceAccountName": pod.spec.get("serviceAccountName") or "default"}


def _render(entry: Entry, params: dict[str, tuple[Any, str]], pod_values: dict[str, Any],
            settings: Settings) -> tuple[Rendered, bool]:
    native = entry.lifecycle == "native" or (entry.lifecycle == "auto" and settings.native_sidecars)
    return entry.renders.get(entry.placeholder_values(params), pod_values, native, settings.image_registry), native

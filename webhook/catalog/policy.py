"""The cluster-wide policy: rules selected by namespace and Pod labels, loaded and checked against the catalogue.

A rule can add entries (optionally mandatory), default or require resource limits, cap the number of
containers, and restrict which entries a namespace may request; the policy also maps each environment (a
namespace label) to parameter values, e.g. the db-ambassador's upstream. Every problem is reported with
file and line, and a policy with any problem is refused whole, so a running server keeps its last good one.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from kubernetes.utils import parse_quantity

from webhook.catalog.sourcemap import (
    Document,
    Invalid,
    Problem,
    Problems,
    SourceError,
    load_documents,
)
from webhook.core.entries import Catalogue, Entry
from webhook.core.findings import ENFORCEMENTS
from webhook.core.parameters import ParameterError
from webhook.core.rules import (
    LIMITED,
    MISSING_LIMITS,
    Policy,
    Resources,
    Rule,
    Selector,
)

API_VERSION = "podpatterns.io/v1alpha1"
KIND = "Policy"
RULE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class PolicyError(Problems):
    pass


def load(path: str | Path, catalogue: Catalogue) -> Policy:
    """The policy in the file at `path`, checked against `catalogue`; raises PolicyError."""
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PolicyError([Problem(filename, 0, f"cannot read: {err}")]) from None
    return load_text(text, filename, catalogue)


def load_text(text: str, filename: str, catalogue: Catalogue) -> Policy:
    try:
        documents = load_documents(text)
    except SourceError as err:
        raise PolicyError([Problem(filename, err.line, err.message)]) from None
    if len(documents) != 1:
        raise PolicyError([Problem(filename, 0, f"expected one {KIND} document, found {len(documents)}")])
    doc = documents[0]
    try:
        return replace(_policy(doc, filename, catalogue), source=text)
    except Invalid as err:
        raise PolicyError([Problem(filename, doc.line_of(err.path), err.message)]) from None


def _policy(doc: Document, filename: str, catalogue: Catalogue) -> Policy:
    data = doc.data
    if not isinstance(data, dict) or data.get("apiVersion") != API_VERSION or data.get("kind") != KIND:
        raise Invalid(("kind",), f"expected apiVersion: {API_VERSION} and kind: {KIND}")
    _only(data, {"apiVersion", "kind", "metadata", "spec"}, ())
    spec = data.get("spec") or {}
    _mapping(spec, ("spec",))
    _only(spec, {"environments", "rules"}, ("spec",))
    label, environments = _environments(spec.get("environments") or {}, catalogue)
    rules = spec.get("rules") or []
    if not isinstance(rules, list):
        raise Invalid(("spec", "rules"), "spec.rules must be a list of rules")
    parsed: list[Rule] = []
    for i, rule in enumerate(rules):
        parsed.append(_rule(rule, ("spec", "rules", i), catalogue))
        if parsed[-1].name in [r.name for r in parsed[:-1]]:
            raise Invalid(("spec", "rules", i, "name"), f"rule name {parsed[-1].name!r} is used twice")
    return Policy(tuple(parsed), label, environments, f"{filename}")


def _environments(data: Any, catalogue: Catalogue) -> tuple[str, dict[str, dict[str, dict[str, Any]]]]:
    path = ("spec", "environments")
    _mapping(data, path)
    _only(data, {"label", "parameters"}, path)
    label = data.get("label", "env")
    if not isinstance(label, str) or not label:
        raise Invalid(path + ("label",), "environments.label must be a namespace label key, e.g. env")
    result: dict[str, dict[str, dict[str, Any]]] = {}
    parameters = data.get("parameters") or {}
    _mapping(parameters, path + ("parameters",))
    for environment, entries in parameters.items():
        where = path + ("parameters", environment)
        _mapping(entries, where, f"environment {environment!r} must map entry names to parameters")
        for entry_name, values in entries.items():
            entry = _entry(catalogue, entry_name, where + (entry_name,), f"environment {environment}: ")
            _mapping(values, where + (entry_name,), f"environment {environment}: {entry_name} must map parameters to values")
            for name, value in values.items():
                parameter = entry.parameters.get(name)
                if parameter is None:
                    raise Invalid(where + (entry_name, name), f"environment {environment}: {entry_name} has no parameter "
                                                               f"{name!r}; its parameters: {', '.join(entry.parameters) or 'none'}")
                try:
                    typed = parameter.parse(str(value).lower() if isinstance(value, bool) else str(value))
                except ParameterError as err:
                    raise Invalid(where + (entry_name, name), f"environment {environment}: {entry_name}.{name}: {err}") from None
                result.setdefault(str(environment), {}).setdefault(entry_name, {})[name] = typed
    return label, result


RULE_FIELDS = {"name", "namespaceSelector", "podSelector", "inject", "mandatory", "resources", "maxContainers",
               "allowedEntries", "enforcement", "parameterBounds"}


def _rule(data: Any, path: tuple[Any, ...], catalogue: Catalogue) -> Rule:
    _mapping(data, path, "a rule must be a mapping")
    _only(data, RULE_FIELDS, path)
    name = data.get("name")
    if not isinstance(name, str) or not RULE_NAME.match(name):
        raise Invalid(path + ("name",), f"rule name {name!r} must be lower-case letters, digits, '-' and '.'")
    if set(data) <= {"name", "namespaceSelector", "podSelector", "enforcement"}:
        raise Invalid(path, f"rule {name} does nothing: give it inject, resources, maxContainers, allowedEntries or "
                            f"parameterBounds")
    inject = _entry_names(data, "inject", path, catalogue) or ()
    mandatory = data.get("mandatory", False)
    if not isinstance(mandatory, bool):
        raise Invalid(path + ("mandatory",), f"rule {name}: mandatory must be true or false")
    if mandatory and not inject:
        raise Invalid(path + ("mandatory",), f"rule {name}: mandatory needs entries in inject")
    max_containers = data.get("maxContainers")
    if max_containers is not None and (not isinstance(max_containers, int) or isinstance(max_containers, bool)
                                       or max_containers < 1):
        raise Invalid(path + ("maxContainers",), f"rule {name}: maxContainers must be a whole number of at least 1")
    allowed = _entry_names(data, "allowedEntries", path, catalogue)
    enforcement = data.get("enforcement", "enforce")
    if enforcement not in ENFORCEMENTS:
        raise Invalid(path + ("enforcement",), f"rule {name}: enforcement must be one of {', '.join(ENFORCEMENTS)}, "
                                                f"got {enforcement!r}")
    return Rule(
        name=name,
        namespace_selector=_selector(data.get("namespaceSelector"), path + ("namespaceSelector",)),
        pod_selector=_selector(data.get("podSelector"), path + ("podSelector",)),
        inject=tuple(inject),
        mandatory=mandatory,
        resources=_resources(data["resources"], path + ("resources",), name) if "resources" in data else None,
        max_containers=max_containers,
        allowed_entries=frozenset(allowed) if allowed is not None else None,
        enforcement=enforcement,
        parameter_bounds=_parameter_bounds(data.get("parameterBounds"), path + ("parameterBounds",), name, catalogue),
    )


def _parameter_bounds(data: Any, path: tuple[Any, ...], rule: str, catalogue: Catalogue) -> tuple[tuple[str, str, Any, Any], ...]:
    """entry -> parameter -> {minimum, maximum}: narrower bounds for what a Pod's annotation asks."""
    if data is None:
        return ()
    _mapping(data, path, f"rule {rule}: parameterBounds must map entry names to parameters")
    bounds = []
    for entry_name, parameters in data.items():
        entry = _entry(catalogue, entry_name, path + (entry_name,), f"rule {rule}: parameterBounds: ")
        _mapping(parameters, path + (entry_name,), f"rule {rule}: parameterBounds.{entry_name} must map parameters to bounds")
        for name, limits in parameters.items():
            where = path + (entry_name, name)
            parameter = entry.parameters.get(name)
            if parameter is None or parameter.type not in ("integer", "quantity"):
                bounded = ", ".join(p.name for p in entry.parameters.values() if p.type in ("integer", "quantity"))
                raise Invalid(where, f"rule {rule}: {entry_name} has no integer or quantity parameter {name!r}; "
                                     f"its bounded parameters: {bounded or 'none'}")
            _mapping(limits, where, f"rule {rule}: {entry_name}.{name} needs minimum and/or maximum")
            _only(limits, {"minimum", "maximum"}, where)
            if not limits:
                raise Invalid(where, f"rule {rule}: {entry_name}.{name} needs minimum and/or maximum")
            for bound, value in limits.items():
                try:
                    parameter.check(value if parameter.type == "integer" else str(value))
                except ParameterError as err:
                    raise Invalid(where + (bound,), f"rule {rule}: {entry_name}.{name}.{bound}: {value!r} is not a value "
                                                    f"the parameter accepts: {err}") from None
            bounds.append((entry_name, name, _typed(limits.get("minimum"), parameter.type),
                           _typed(limits.get("maximum"), parameter.type)))
    return tuple(bounds)


def _typed(value: Any, kind: str) -> Any:
    return None if value is None else value if kind == "integer" else str(value)


def _entry_names(data: dict[str, Any], key: str, path: tuple[Any, ...], catalogue: Catalogue) -> list[str] | None:
    if key not in data:
        return None
    names = data[key]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise Invalid(path + (key,), f"{key} must be a list of catalogue entry names")
    for i, entry in enumerate(names):
        _entry(catalogue, entry, path + (key, i), f"{key}: ")
    return list(dict.fromkeys(names))


def _entry(catalogue: Catalogue, name: Any, path: tuple[Any, ...], context: str) -> Entry:
    """The catalogue's entry `name`, or Invalid naming the known ones."""
    if name not in catalogue:
        raise Invalid(path, f"{context}no catalogue entry {name!r}; known entries: {', '.join(catalogue.names())}")
    return catalogue[name]


def _selector(data: Any, path: tuple[Any, ...]) -> Selector:
    if data is None:
        return Selector()
    _mapping(data, path, "a selector must be a mapping with matchLabels and/or matchExpressions")
    _only(data, {"matchLabels", "matchExpressions"}, path)
    labels = data.get("matchLabels") or {}
    _mapping(labels, path + ("matchLabels",))
    if not all(isinstance(v, str) for v in labels.values()):
        raise Invalid(path + ("matchLabels",), "matchLabels values must be strings (quote numbers and booleans)")
    expressions = []
    for i, term in enumerate(data.get("matchExpressions") or []):
        where = path + ("matchExpressions", i)
        _mapping(term, where, "a matchExpressions term must be a mapping of key, operator and values")
        _only(term, {"key", "operator", "values"}, where)
        operator, values = term.get("operator"), term.get("values") or []
        if not isinstance(term.get("key"), str) or operator not in OPERATORS:
            raise Invalid(where, f"a term needs a key and an operator, one of {', '.join(OPERATORS)}")
        if not isinstance(values, list) or (operator in ("In", "NotIn")) != bool(values):
            raise Invalid(where, f"operator {operator} {'needs' if operator in ('In', 'NotIn') else 'takes no'} values")
        expressions.append((term["key"], operator, frozenset(str(v) for v in values)))
    return Selector(tuple(sorted(labels.items())), tuple(expressions))


def _resources(data: Any, path: tuple[Any, ...], rule: str) -> Resources:
    _mapping(data, path, f"rule {rule}: resources must be a mapping")
    _only(data, {"missingLimits", "defaults"}, path)
    mode = data.get("missingLimits")
    if mode not in MISSING_LIMITS:
        raise Invalid(path + ("missingLimits",), f"rule {rule}: missingLimits must be one of {', '.join(MISSING_LIMITS)}")
    defaults = data.get("defaults") or {}
    _mapping(defaults, path + ("defaults",))
    _only(defaults, {"requests", "limits"}, path + ("defaults",))
    result: dict[str, dict[str, str]] = {}
    for kind, quantities in defaults.items():
        _mapping(quantities, path + ("defaults", kind))
        for resource, quantity in quantities.items():
            try:
                parse_quantity(quantity)
            except ValueError:
                raise Invalid(path + ("defaults", kind, resource),
                               f"rule {rule}: {kind}.{resource}: {quantity!r} is not a Kubernetes quantity") from None
            result.setdefault(kind, {})[resource] = str(quantity)
    if mode == "default" and not all(r in result.get("limits", {}) for r in LIMITED):
        raise Invalid(path + ("defaults",), f"rule {rule}: missingLimits: default needs defaults.limits for cpu and memory")
    return Resources(mode, result)


def _where(path: tuple[Any, ...]) -> str:
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path).lstrip(".")


def _mapping(value: Any, path: tuple[Any, ...], message: str | None = None) -> None:
    if not isinstance(value, dict):
        raise Invalid(path, message or f"{_where(path)} must be a mapping")


def _only(data: dict[str, Any], allowed: set[str], path: tuple[Any, ...]) -> None:
    for key in data:
        if key not in allowed:
            where = _where(path) or "the top level"
            raise Invalid(path + (key,), f"unknown field {key!r} in {where}; allowed: {', '.join(sorted(allowed))}")

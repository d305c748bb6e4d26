"""Placeholders in catalogue templates, compiled once at load time and filled in per Pod.

`${params.NAME}` and `${pod.name}`, `${pod.namespace}`, `${pod.serviceAccountName}` are replaced inside
string values of the parsed YAML; `$$` is a literal `$`. This is data substitution only: a value can
never add keys, list items or YAML structure, and nothing is evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from webhook.core.parameters import Parameter, as_text

PLACEHOLDER = re.compile(r"\$\$|\$\{([^}]*)\}")
POD_FIELDS = ("name", "namespace", "serviceAccountName")


class TemplateError(ValueError):
    def __init__(self, path: tuple[Any, ...], message: str):
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Interpolation:
    """A string with placeholders. `parts` alternate literal text and references (is_ref, text)."""

    parts: tuple[tuple[bool, str], ...]
    typed: bool  # a lone placeholder in a number/boolean field keeps the parameter's type

    def render(self, values: dict[str, Any]) -> Any:
        if self.typed:
            return values[self.parts[0][1]]
        return "".join(as_text(values[text]) if is_ref else text for is_ref, text in self.parts)


class DynamicDict(dict):
    """A mapping with a placeholder somewhere below it; a plain dict in a compiled tree has none."""


class DynamicList(list):
    """A list with a placeholder somewhere below it."""


def render(node: Any, values: dict[str, Any]) -> Any:
    """The template with every placeholder filled from `values`.

    Only the paths that lead to a placeholder are rebuilt; subtrees without one are returned as they
    are, shared between renders, so the result must be treated as read-only (serialize it, or copy it
    before editing). Most of a template is constant; the engine renders through webhook.core.renders,
    which keeps the results per parameter values.
    """
    kind = type(node)
    if kind is DynamicDict:
        return {key: render(value, values) for key, value in node.items()}
    if kind is DynamicList:
        return [render(value, values) for value in node]
    if kind is Interpolation:
        return node.render(values)
    return node


def references(node: Any) -> set[str]:
    """The placeholders (`params.port`, `pod.name`…) a compiled tree uses."""
    kind = type(node)
    if kind is DynamicDict:
        return set().union(*(references(value) for value in node.values()))
    if kind is DynamicList:
        return set().union(*(references(value) for value in node))
    if kind is Interpolation:
        return {text for is_ref, text in node.parts if is_ref}
    return set()


def compile_tree(
    node: Any,
    parameters: dict[str, Parameter],
    field_type: Callable[[tuple[Any, ...]], str],
    path: tuple[Any, ...] = (),
) -> Any:
    """Replaces each string holding placeholders by an Interpolation, and marks the containers on the way
    to one as Dynamic; raises TemplateError."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if isinstance(key, str) and "$" in key and PLACEHOLDER.search(key):
                raise TemplateError(path + (key,), f"placeholders are not allowed in keys: {key!r}")
            out[key] = compile_tree(value, parameters, field_type, path + (key,))
        return DynamicDict(out) if any(_dynamic(v) for v in out.values()) else out
    if isinstance(node, list):
        return sequence([compile_tree(value, parameters, field_type, path + (i,)) for i, value in enumerate(node)])
    if isinstance(node, str) and "$" in node:
        return _compile_string(node, parameters, field_type(path), path)
    return node


def sequence(items: list[Any]) -> list[Any]:
    """A list of compiled trees, itself marked Dynamic when any item is."""
    return DynamicList(items) if any(_dynamic(item) for item in items) else items


def _dynamic(node: Any) -> bool:
    return type(node) in (DynamicDict, DynamicList, Interpolation)


def _compile_string(text: str, parameters: dict[str, Parameter], target: str, path: tuple[Any, ...]) -> Any:
    parts: list[tuple[bool, str]] = []
    at = 0
    for match in PLACEHOLDER.finditer(text):
        parts.append((False, text[at:match.start()]))
        if match.group(0) == "$$":
            parts.append((False, "$"))
        else:
            parts.append((True, _reference(match.group(1).strip(), parameters, path)))
        at = match.end()
    parts.append((False, text[at:]))
    parts = _merge_literals(parts)
    refs = [p for p in parts if p[0]]
    if not refs:
        return "".join(t for _, t in parts)
    whole = len(parts) == 1
    kind = _reference_type(refs[0][1], parameters) if whole else "string"
    if target in ("integer", "boolean"):
        if kind != target:
            raise TemplateError(
                path,
                f"this field takes {_an(target)}: it must be a lone placeholder of {_an(target)} parameter, not {text!r}",
            )
        return Interpolation(tuple(parts), typed=True)
    return Interpolation(tuple(parts), typed=whole and target == "int-or-string")


def _an(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _reference(ref: str, parameters: dict[str, Parameter], path: tuple[Any, ...]) -> str:
    scope, _, name = ref.partition(".")
    if scope == "params" and name in parameters:
        if not parameters[name].required and parameters[name].default is None:
            # Otherwise a Pod that leaves it out would leave a hole in the rendered container.
            raise TemplateError(path, f"${{{ref}}}: parameter {name} is optional without a default; give it a "
                                      "default or make it required")
        return ref
    if scope == "pod" and name in POD_FIELDS:
        return ref
    known = [f"params.{p}" for p in parameters] + [f"pod.{f}" for f in POD_FIELDS]
    raise TemplateError(path, f"unknown placeholder ${{{ref}}}; known: {', '.join(known)}")


def _reference_type(ref: str, parameters: dict[str, Parameter]) -> str:
    scope, _, name = ref.partition(".")
    return parameters[name].type if scope == "params" else "string"


def _merge_literals(parts: list[tuple[bool, str]]) -> list[tuple[bool, str]]:
    merged: list[tuple[bool, str]] = []
    for is_ref, text in parts:
        if not is_ref and not text:
            continue
        if merged and not is_ref and not merged[-1][0]:
            merged[-1] = (False, merged[-1][1] + text)
        else:
            merged.append((is_ref, text))
    return merged

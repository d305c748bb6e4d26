"""Typed parameters of a catalogue entry: their declaration and the parsing of annotation values."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kubernetes.utils import parse_quantity

TYPES = ("string", "integer", "boolean", "path", "hostPort", "quantity")
DECLARATION_FIELDS = {"name", "type", "required", "default", "description", "pattern", "enum", "minimum", "maximum",
                      "renderAs", "notUnder"}
NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9]*$")
# Values end up in container args and env: control characters (newlines above all) are never accepted,
# so no value can smuggle a second config line or argument into what a template renders. That includes
# the C1 controls and the Unicode line and paragraph separators: YAML and many config parsers break
# lines at NEL (U+0085), U+2028 and U+2029 too.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_LENGTH = 1024
INTEGER = re.compile(r"^[+-]?[0-9]{1,18}$")
# A `path` is a directory mounted into app containers and injected ones: absolute, normalized, plain
# characters, and never one the system needs, where an emptyDir mounted on top would hide the image's files.
PATH = re.compile(r"^(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$")
# A `hostPort` is where a container connects to: a DNS name (labels of 1-63 letters, digits and inner
# hyphens, no empty label, 253 characters at most) or an IPv4 address, then a port from 1 to 65535.
HOST_PORT = re.compile(r"^(?=[^:]{1,253}:)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
                       r":([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$")
# A `quantity` is a Kubernetes resource quantity as the apiserver writes it: a non-negative decimal and a binary
# (Ki…Ei) or decimal (m, k…E) suffix or an exponent; at most 64 characters (the apiserver's own parser refuses more).
QUANTITY = re.compile(r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
                "/sys", "/usr", "/var/lib", "/var/run")
SYSTEM_DIRECTORIES = ("/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var")


MAX_PARSED = 256  # annotation values kept parsed, per parameter


class ParameterError(ValueError):
    """A value (or a declaration) that the parameter does not accept."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str = "string"
    required: bool = False
    default: Any = None
    description: str = ""
    pattern: re.Pattern[str] | None = None
    enum: tuple[Any, ...] = ()
    minimum: int | str | None = None  # an int for integers, a quantity for quantities
    maximum: int | str | None = None
    # What a template gets for a value, where it differs from the value the user writes: an enum of names
    # a user knows (format: plain) standing for what the program wants (parser=universal).
    render_as: tuple[tuple[str, str], ...] = ()
    not_under: tuple[str, ...] = ()  # a path's own refused trees, e.g. where the injected image keeps its files
    # Annotation values already parsed: a cluster's Pods repeat a few (their upstreams, sizes); bounded.
    _parsed: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def declare(cls, spec: Any) -> "Parameter":
        """Builds a parameter from its catalogue declaration; raises ParameterError on a bad one."""
        if not isinstance(spec, dict):
            raise ParameterError("a parameter must be a mapping with at least a name")
        unknown = sorted(set(spec) - DECLARATION_FIELDS)
        if unknown:
            raise ParameterError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(DECLARATION_FIELDS))}")
        name = spec.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise ParameterError(f"parameter name {name!r} must be letters and digits, starting with a letter")
        kind = spec.get("type", "string")
        if kind not in TYPES:
            raise ParameterError(f"parameter {name}: type {kind!r} is not one of {', '.join(TYPES)}")
        try:
            pattern = re.compile(spec["pattern"]) if "pattern" in spec else None
        except (re.error, TypeError) as err:
            raise ParameterError(f"parameter {name}: pattern does not compile: {err}") from None
        if pattern is not None and kind != "string":
            raise ParameterError(f"parameter {name}: pattern applies to strings only")
        for bound in ("minimum", "maximum"):
            if bound not in spec:
                continue
            if kind == "quantity":
                if not isinstance(spec[bound], str) or not QUANTITY.match(spec[bound]):
                    raise ParameterError(f"parameter {name}: {bound} must be a quantity (e.g. 64Mi) on a quantity parameter")
            elif kind != "integer" or type(spec[bound]) is not int:
                raise ParameterError(f"parameter {name}: {bound} must be an integer on an integer parameter, "
                                     f"a quantity on a quantity parameter")
        enum = spec.get("enum", [])
        if not isinstance(enum, list):
            raise ParameterError(f"parameter {name}: enum must be a list")
        render_as = spec.get("renderAs", {})
        if not isinstance(render_as, dict) or not all(isinstance(v, str) for v in render_as.values()):
            raise ParameterError(f"parameter {name}: renderAs must map enum values to strings")
        if render_as and (kind != "string" or not set(render_as) <= set(enum)):
            raise ParameterError(f"parameter {name}: renderAs applies to a string enum, and maps only its values "
                                 f"({', '.join(map(str, enum)) or 'none declared'})")
        if any(CONTROL.search(v) for v in render_as.values()):
            raise ParameterError(f"parameter {name}: renderAs values must be printable, on one line")
        not_under = spec.get("notUnder", [])
        if not isinstance(not_under, list) or (not_under and kind != "path") or not all(
                isinstance(v, str) and PATH.match(v) for v in not_under):
            raise ParameterError(f"parameter {name}: notUnder applies to a path, and lists absolute directories")
        param = cls(
            name=name,
            type=kind,
            required=spec.get("required", False) is True,
            default=spec.get("default"),
            description=str(spec.get("description", "")),
            pattern=pattern,
            enum=tuple(enum),
            minimum=spec.get("minimum"),
            maximum=spec.get("maximum"),
            render_as=tuple(render_as.items()),
            not_under=tuple(not_under),
        )
        if param.required and param.default is not None:
            raise ParameterError(f"parameter {name}: a required parameter cannot have a default")
        for value in (*param.enum, *(() if param.default is None else (param.default,))):
            try:
                param.check(value)
            except ParameterError as err:
                raise ParameterError(f"parameter {name}: default/enum value {value!r}: {err}") from None
        return param

    def accepted(self) -> str:
        """What the parameter accepts, in words, for error messages."""
        if self.enum:
            return "one of " + ", ".join(_show(v) for v in self.enum)
        if self.type == "boolean":
            return '"true" or "false"'
        if self.type == "integer":
            low = "" if self.minimum is None else f" from {self.minimum}"
            high = "" if self.maximum is None else f" to {self.maximum}"
            return f"an integer{low}{high}"
        if self.type == "quantity":
            low = "" if self.minimum is None else f" from {self.minimum}"
            high = "" if self.maximum is None else f" to {self.maximum}"
            return f"a Kubernetes quantity (e.g. 128Mi, 250m){low}{high}"
        if self.type == "hostPort":
            return ("host:port, a DNS name (labels of 1-63 letters, digits and inner hyphens; no empty label; "
                    "253 characters at most) or an IPv4 address, and a port from 1 to 65535")
        if self.type == "path":
            return ("an absolute directory path of letters, digits, '.', '_' and '-' (no '..', no trailing '/'), "
                    f"not / nor {', '.join(SYSTEM_DIRECTORIES)}, and not in {', '.join(SYSTEM_TREES + self.not_under)}")
        if self.pattern is not None:
            return f"a string matching {self.pattern.pattern}"
        return f"a string of at most {MAX_LENGTH} printable characters"

    def parse(self, text: str) -> Any:
        """Turns an annotation value into a typed, checked value."""
        if text in self._parsed:
            return self._parsed[text]
        value = self._parse(text)
        if len(self._parsed) < MAX_PARSED:
            self._parsed[text] = value
        return value

    def _parse(self, text: str) -> Any:
        if self.type == "integer":
            if not INTEGER.match(text.strip()):
                raise ParameterError(f"expected {self.accepted()}")
            value: Any = int(text)
        elif self.type == "boolean":
            lowered = text.strip().lower()
            if lowered not in ("true", "false"):
                raise ParameterError(f"expected {self.accepted()}")
            value = lowered == "true"
        else:
            value = text
        return self.check(value)

    def check(self, value: Any) -> Any:
        expected = {"string": str, "integer": int, "boolean": bool, "path": str, "hostPort": str, "quantity": str}[self.type]
        if type(value) is not expected:
            raise ParameterError(f"expected {self.accepted()}")
        if self.enum and value not in self.enum:
            raise ParameterError(f"expected {self.accepted()}")
        if self.type == "integer":
            if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
                raise ParameterError(f"expected {self.accepted()}")
        if self.type == "quantity" and not _quantity_within(value, self.minimum, self.maximum):
            raise ParameterError(f"expected {self.accepted()}")
        if self.type == "path" and not _plain_directory(value, self.not_under):
            raise ParameterError(f"expected {self.accepted()}")
        if self.type == "hostPort" and not HOST_PORT.match(value):
            raise ParameterError(f"expected {self.accepted()}")
        if self.type in ("string", "path", "hostPort"):
            if len(value) > MAX_LENGTH or CONTROL.search(value):
                raise ParameterError(f"expected {self.accepted()}")
            if self.pattern is not None and not self.pattern.fullmatch(value):
                raise ParameterError(f"expected {self.accepted()}")
        return value

    def within(self, value: Any, minimum: Any, maximum: Any) -> bool:
        """Whether a checked value of an integer or quantity parameter is within other bounds (a policy rule's)."""
        if self.type == "quantity":
            return _quantity_within(value, minimum, maximum)
        return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)

    def rendered(self, value: Any) -> Any:
        """What a template's placeholder becomes for the (checked) value."""
        for shown, text in self.render_as:
            if shown == value:
                return text
        return value

    def sample(self) -> Any:
        """A value that passes `check`, for validating a template before any Pod supplies one."""
        if self.default is not None:
            return self.default
        if self.enum:
            return self.enum[0]
        return {"string": "sample", "path": "/sample", "hostPort": "sample:1",
                "integer": self.minimum if self.minimum is not None else 1,
                "quantity": self.minimum if self.minimum is not None else "1", "boolean": False}[self.type]


def _quantity_within(value: str, minimum: Any, maximum: Any) -> bool:
    if len(value) > 64 or not QUANTITY.match(value):
        return False
    amount = parse_quantity(value)
    return (minimum is None or amount >= parse_quantity(minimum)) and (maximum is None or amount <= parse_quantity(maximum))


def _plain_directory(path: str, not_under: tuple[str, ...]) -> bool:
    if not PATH.match(path) or path in SYSTEM_DIRECTORIES:  # PATH admits no "." or ".." segment
        return False
    return not any(path == tree or path.startswith(tree + "/") for tree in SYSTEM_TREES + not_under)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def as_text(value: Any) -> str:
    """How a typed value reads inside a string (booleans the Kubernetes way)."""
    return _show(value)

"""The annotation keys of the user contract, all derived from one configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PREFIX = "podpatterns.io"
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"


@dataclass(frozen=True)
class AnnotationKeys:
    prefix: str = DEFAULT_PREFIX
    inject: str = field(init=False)
    exclude: str = field(init=False)
    status: str = field(init=False)
    parameter_infix: str = field(init=False, repr=False)  # in every parameter's key

    def __post_init__(self) -> None:
        # Precomputed once: these strings are compared on every request.
        object.__setattr__(self, "inject", f"{self.prefix}/inject")
        object.__setattr__(self, "exclude", f"{self.prefix}/exclude")
        object.__setattr__(self, "status", f"{self.prefix}/status")
        object.__setattr__(self, "parameter_infix", f".{self.prefix}/")

    def parameter(self, entry: str, name: str) -> str:
        """The annotation that sets parameter `name` of catalogue entry `entry`."""
        return f"{entry}{self.parameter_infix}{name}"

    def split_parameter(self, key: str) -> tuple[str, str] | None:
        """(entry, parameter) for a key `<entry>.<prefix>/<parameter>`, else None."""
        at = key.find(self.parameter_infix)
        if at <= 0:
            return None
        return key[:at], key[at + len(self.parameter_infix):]


def pointer_token(key: str) -> str:
    """Escapes one JSON-Pointer reference token (RFC 6901): `~` first, then `/`."""
    return key.replace("~", "~0").replace("/", "~1")

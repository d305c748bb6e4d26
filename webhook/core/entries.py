"""Catalogue entries as the engine reads them: an entry's compiled templates and typed parameters.

The catalog layer builds them from PatternTemplate documents (webhook.catalog.catalogue).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webhook.core.parameters import Parameter
from webhook.core.combined import Combinations
from webhook.core.renders import RenderCache


@dataclass(frozen=True)
class Entry:
    name: str
    pattern: str
    description: str
    parameters: dict[str, Parameter]
    containers: list[Any]  # compiled templates (see webhook.core.template)
    volumes: list[Any]
    app_env: list[Any]
    app_mounts: list[Any]
    lifecycle: str
    digest: str
    origin: str
    warnings: tuple[str, ...] = ()
    annotations: dict[str, Any] = field(default_factory=dict)  # added to the Pod: key -> compiled template of the value
    image_pull_secrets: tuple[str, ...] = ()  # Secret names the Pod needs to pull the entry's images
    # Its renders for the values Pods use (webhook.core.renders); new with every load, so a reload starts afresh.
    renders: RenderCache = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    # What a render looks up per request, made once: each parameter's placeholder, and the parameters whose value a
    # template sees otherwise (renderAs).
    placeholders: dict[str, str] = field(init=False, compare=False, repr=False)
    render_as: dict[str, Parameter | None] = field(init=False, compare=False, repr=False)
    # What most Pods get, since they set none of the entry's parameters: each default with its origin, in the
    # parameters' order (shared and read-only), the placeholders' values for them, and the first required
    # parameter without a default, which such a Pod must set.
    defaults: dict[str, tuple[Any, str]] = field(init=False, compare=False, repr=False)
    default_placeholders: dict[str, Any] = field(init=False, compare=False, repr=False)
    required_unset: Parameter | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "placeholders", {name: f"params.{name}" for name in self.parameters})
        object.__setattr__(self, "render_as", {name: p if p.render_as else None for name, p in self.parameters.items()})
        defaults = {p.name: (p.default, "default") for p in self.parameters.values() if p.default is not None}
        object.__setattr__(self, "defaults", defaults)
        object.__setattr__(self, "default_placeholders", self._placeholders_of(defaults))
        object.__setattr__(self, "required_unset", next(
            (p for p in self.parameters.values() if p.default is None and p.required), None))
        if self.renders is None:
            object.__setattr__(self, "renders", RenderCache(self.containers, self.volumes, self.app_env, self.app_mounts, self.annotations))

    def placeholder_values(self, values: dict[str, tuple[Any, str]]) -> dict[str, Any]:
        """`params.NAME` -> what the template sees for each parameter's value (renderAs applied)."""
        return self.default_placeholders if values is self.defaults else self._placeholders_of(values)

    def _placeholders_of(self, values: dict[str, tuple[Any, str]]) -> dict[str, Any]:
        return {self.placeholders[name]: value if parameter is None else parameter.rendered(value)
                for name, (value, _) in values.items() for parameter in (self.render_as[name],)}


@dataclass(frozen=True)
class Catalogue:
    entries: dict[str, Entry] = field(default_factory=dict)
    # What combinations of its entries' renders add together (webhook.core.combined); a reload starts afresh.
    combinations: Combinations = field(default_factory=Combinations, compare=False, repr=False)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> Entry:
        return self.entries[name]

    def names(self) -> list[str]:
        return sorted(self.entries)

"""Catalogue entries as the engine reads them: an entry's compiled templates and typed parameters.

The catalog layer builds them from PatternTemplate documents (webhook.catalog.catalogue).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webhook.core.parameters import Parameter
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "placeholders", {name: f"params.{name}" for name in self.parameters})
        object.__setattr__(self, "render_as", {name: p if p.render_as else None for name, p in self.parameters.items()})
        if self.renders is None:
            object.__setattr__(self, "renders", RenderCache(self.containers, self.volumes, self.app_env, self.app_mounts, self.annotations))


@dataclass(frozen=True)
class Catalogue:
    entries: dict[str, Entry] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> Entry:
        return self.entries[name]

    def names(self) -> list[str]:
        return sorted(self.entries)

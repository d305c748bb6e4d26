"""Image references of injected containers: the registry rewrite for air-gapped clusters."""

from __future__ import annotations

DEFAULT_REGISTRY = "docker.io"


def registry_of(image: str) -> tuple[str, str]:
    """(registry, the rest) as the container runtime reads a reference: the first component is a registry when
    it has a '.' or ':' or is localhost; else the image is Docker Hub's (and a one-component name is in library/)."""
    first, slash, rest = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return DEFAULT_REGISTRY, image if slash else f"library/{image}"


def with_registry(image: str, registry: str | None) -> str:
    """`image` pulled from `registry` (a host, optionally with a path prefix: registry.internal/mirror) instead;
    repository, tag and digest kept. `cr.fluentbit.io/fluent/fluent-bit:3.2.10` ->
    `registry.internal/fluent/fluent-bit:3.2.10`."""
    if not registry:
        return image
    _, rest = registry_of(image)
    return f"{registry.rstrip('/')}/{rest}"

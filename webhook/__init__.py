"""podpatterns: a mutating admission webhook that injects sidecar, adapter and ambassador containers."""

__version__ = "0.1.0"

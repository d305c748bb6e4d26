"""The configuration the request path reads, replaced whole (never edited) when something reloads."""

from __future__ import annotations

from dataclasses import dataclass

from webhook.core.engine import Settings
from webhook.core.entries import Catalogue
from webhook.core.rules import EMPTY, Policy


@dataclass(frozen=True)
class Configuration:
    catalogue: Catalogue
    settings: Settings
    policy: Policy = EMPTY


class ConfigurationHolder:
    """One reference swapped atomically: a request sees the old or the new configuration, never a mix."""

    def __init__(self, configuration: Configuration):
        self.current = configuration

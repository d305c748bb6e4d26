"""A change to a PatternTemplate object, judged against the served configuration before the apiserver stores it.

CREATE and UPDATE load the object as the catalogue will (the loader's messages, field path and line) and check the
served policy against the catalogue with it applied; DELETE refuses to take away an entry the policy needs, unless
a built-in or a --catalog directory entry of that name remains to serve it. So what `kubectl apply` accepts is what
the next reload serves, never a catalogue the server would refuse and keep its last good one instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from webhook.catalog import catalogue, policy
from webhook.core.configuration import Configuration
from webhook.core.entries import Catalogue, Entry

# How a cluster object names its file (Entry.origin is `patterntemplate/NAME:1`), as catalogue.merge does.
OBJECT_FILE = "patterntemplate/{}"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    code: int = 200  # an HTTP status for a refusal: 400 the object is invalid, 403 the policy forbids the change
    message: str = ""
    warnings: tuple[str, ...] = ()


ALLOWED = Verdict(True)


def judge(operation: str, name: str, obj: Mapping[str, Any] | None, old: Mapping[str, Any] | None,
          served: Configuration, directories: Iterable[str | Path] = ()) -> Verdict:
    """What becomes of `operation` (CREATE, UPDATE, DELETE) on the PatternTemplate `name`; other operations pass."""
    if operation in ("CREATE", "UPDATE") and obj is not None:
        return applied(name, obj, old, served)
    if operation == "DELETE":
        return deleted(name, served, directories)
    return ALLOWED


def applied(name: str, obj: Mapping[str, Any], old: Mapping[str, Any] | None, served: Configuration) -> Verdict:
    # Only what the loader reads counts: a label, an annotation or a finalizer removed is never refused, even on
    # an object that was stored before this check existed.
    if old is not None and catalogue.object_text(old) == catalogue.object_text(obj):
        return ALLOWED
    try:
        (entry,) = catalogue.load_text(catalogue.object_text(obj), OBJECT_FILE.format(name))
    except catalogue.CatalogueError as err:
        return Verdict(False, 400, str(err))
    refused = _policy_refusal(Catalogue({**served.catalogue.entries, entry.name: entry}), served)
    if refused is not None:
        return refused
    # As `podpatterns catalog validate` says them; kubectl prints each as "Warning: …".
    return Verdict(True, warnings=tuple(f"{entry.name}: not Pod Security 'restricted': {w}" for w in entry.warnings))


def deleted(name: str, served: Configuration, directories: Iterable[str | Path]) -> Verdict:
    current = served.catalogue.entries.get(name)
    if current is None or not is_object(current):
        return ALLOWED  # the object does not serve `name` now (not loaded yet, or refused): nothing served changes
    entries = dict(served.catalogue.entries)
    del entries[name]
    remaining = _underneath(directories).get(name)
    if remaining is not None:
        entries[name] = remaining
    else:
        needing = [rule.name for rule in served.policy.rules if rule.mandatory and name in rule.inject]
        if needing:
            rules = ", ".join(needing)
            return Verdict(False, 403, f"{name} is mandatory by policy rule{'s' if len(needing) > 1 else ''} {rules} "
                                       f"({served.policy.origin}), and no built-in or --catalog entry {name} would "
                                       f"remain to serve it; take {name} out of the rule's inject first")
    return _policy_refusal(Catalogue(entries), served) or ALLOWED


def is_object(entry: Entry) -> bool:
    return entry.origin.startswith(OBJECT_FILE.format(""))


def _underneath(directories: Iterable[str | Path]) -> dict[str, Entry]:
    """The built-ins overlaid by the directories: what serves a name no cluster object has."""
    try:
        return catalogue.load(directories).entries
    except catalogue.CatalogueError:
        # Broken directories are refused by the reload too; only the built-ins can be counted on.
        return catalogue.builtin_entries()


def _policy_refusal(entries: Catalogue, served: Configuration) -> Verdict | None:
    """A refusal when the served policy would not load against `entries`: the reload would refuse the new catalogue."""
    if not served.policy.source:
        return None
    try:
        policy.load_text(served.policy.source, served.policy.origin, entries)
    except policy.PolicyError as err:
        return Verdict(False, 403, "the policy the server serves would no longer load with this change, so the "
                                   f"server would keep its last good catalogue; change the policy first:\n{err}")
    return None

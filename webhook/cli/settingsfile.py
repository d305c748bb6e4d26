"""The `serve` settings file: a YAML mapping whose keys are `podpatterns serve` flags without the dashes.

In a cluster it is a mounted ConfigMap (the Helm chart's `settings` value). It is turned into flags placed
before the command line's own, so a flag given on the command line wins over the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml


class SettingsError(ValueError):
    pass


def flags(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """The settings in `path` as command-line flags of `parser`; raises SettingsError naming file and key."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise SettingsError(f"settings file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise SettingsError(f"settings file {path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path}: expected a mapping of settings, got {type(data).__name__}")
    actions = {option[2:]: action for action in parser._actions for option in action.option_strings
               if option.startswith("--") and option not in ("--help", "--config")}
    result: list[str] = []
    for key, value in data.items():
        action = actions.get(str(key))
        if action is None:
            raise SettingsError(f"settings file {path}: unknown setting {key!r} (known: {', '.join(sorted(actions))})")
        result.extend(_as_flags(path, str(key), value, action))
    return result


def _as_flags(path: str, key: str, value: Any, action: argparse.Action) -> list[str]:
    option = f"--{key}"
    if value is None:  # a templated file may leave a setting empty: not set
        return []
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise SettingsError(f"settings file {path}: {key} must be true or false, got {value!r}")
        return [option] if value else []
    values = value if isinstance(action, argparse._AppendAction) and isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, (dict, list, bool)):
            raise SettingsError(f"settings file {path}: {key} must be a single value, got {item!r}")
        try:  # checked here too, so the error names the file rather than a flag the user never typed
            checked = action.type(str(item)) if action.type else str(item)
        except (TypeError, ValueError):
            raise SettingsError(f"settings file {path}: {key}: not a valid value: {item!r}") from None
        except argparse.ArgumentTypeError as err:
            raise SettingsError(f"settings file {path}: {key}: {err}") from None
        if action.choices and checked not in action.choices:
            raise SettingsError(f"settings file {path}: {key} must be one of {', '.join(action.choices)}, got {item!r}")
    return [token for item in values for token in (option, str(item))]

"""YAML documents that remember where each value came from, so load errors can name file and line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import yaml


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a loaded file, where it is."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


class Problems(Exception):
    """Everything wrong with a set of files, one `file:line: message` per line (a load is refused whole)."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class SourceError(ValueError):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Document:
    data: Any
    node: yaml.Node

    def line_of(self, path: Iterable[Any]) -> int:
        """1-based line of the deepest node along `path` (keys and list indexes)."""
        node = self.node
        for step in path:
            child = None
            if isinstance(node, yaml.MappingNode):
                child = next((v for k, v in node.value if k.value == step), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
                child = node.value[step]
            if child is None:
                break
            node = child
        return node.start_mark.line + 1


def load_documents(text: str) -> list[Document]:
    """All non-empty documents of `text`; raises SourceError on bad YAML or a duplicated key."""
    loader = yaml.SafeLoader(text)
    docs = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            _refuse_duplicate_keys(node)
            data = loader.construct_document(node)
            if data is not None:
                docs.append(Document(data, node))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise SourceError(mark.line + 1 if mark else 0, f"invalid YAML: {err.problem or err}") from None
    except yaml.YAMLError as err:
        raise SourceError(0, f"invalid YAML: {err}") from None
    finally:
        loader.dispose()
    return docs


def _refuse_duplicate_keys(node: yaml.Node) -> None:
    # PyYAML keeps the last of two equal keys silently; in a template that hides a typo.
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen = set()
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise SourceError(key.start_mark.line + 1, f"duplicate key {key.value!r}")
                    seen.add(key.value)
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)

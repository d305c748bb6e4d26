"""YAML documents that remember where each value came from, so load errors can name file and line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import yaml

MAX_DEPTH = 64
MAX_VALUES = 20_000  # values in a file with every alias expanded; the built-ins have a few hundred
PLAIN_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a loaded file, where it is: the line and, when known, the field."""

    file: str
    line: int
    message: str
    path: tuple[Any, ...] = ()  # keys and list indexes inside the document

    @property
    def field(self) -> str:
        """The path as Kubernetes writes it: spec.containers[0].image."""
        return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in self.path).lstrip(".")

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        # Many messages already name their field (spec.pattern 'x' must be…, unknown field spec.x): not said twice.
        named = not self.path or self.field in self.message
        return f"{where}: {self.message}" if named else f"{where}: {self.field}: {self.message}"


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


class Invalid(Exception):
    """A problem at `path` inside one document; the loader turns it into a Problem with the line."""

    def __init__(self, path: Iterable[Any], message: str):
        super().__init__(message)
        self.path = tuple(path)
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
    """All non-empty documents of `text`; raises SourceError on bad YAML, a duplicated key, a value JSON
    cannot hold, or a file too deep or too big once its aliases are expanded."""
    _bounded(text)
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
                _plain(docs[-1], data)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise SourceError(mark.line + 1 if mark else 0, f"invalid YAML: {err.problem or err}") from None
    except yaml.YAMLError as err:
        raise SourceError(0, f"invalid YAML: {err}") from None
    finally:
        loader.dispose()
    return docs


def _bounded(text: str) -> None:
    """Refuses, from the parser's events alone, YAML whose nesting is deeper than MAX_DEPTH, whose
    aliases refer to the collection they are in, or that expands to more than MAX_VALUES values."""
    sizes: dict[str, int] = {}  # anchor -> values under it, aliases expanded
    open_anchors: set[str] = set()
    stack: list[list[Any]] = []  # per open collection: [values so far, its anchor]
    total = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            line = event.start_mark.line + 1
            if isinstance(event, yaml.CollectionStartEvent):
                if len(stack) >= MAX_DEPTH:
                    raise SourceError(line, f"nested deeper than {MAX_DEPTH} levels")
                stack.append([1, event.anchor])
                if event.anchor:
                    open_anchors.add(event.anchor)
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                size, anchor = stack.pop()
                if anchor:
                    sizes[anchor] = size
                    open_anchors.discard(anchor)
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor in open_anchors:
                    raise SourceError(line, f"alias *{event.anchor} refers to the collection it is in")
                size = sizes.get(event.anchor, 1)  # an unknown anchor is reported by the loader
                total += size
            elif isinstance(event, yaml.ScalarEvent):
                size = 1
                total += 1
                if event.anchor:
                    sizes[event.anchor] = 1
            else:
                continue
            if stack:
                stack[-1][0] += size
            if total > MAX_VALUES:
                raise SourceError(line, f"more than {MAX_VALUES} values once YAML aliases are expanded; "
                                        "a catalogue entry or a policy needs far fewer (is this an alias bomb?)")
    except yaml.YAMLError:
        return  # load_documents reports it with its line


def _plain(doc: Document, data: Any, path: tuple[Any, ...] = ()) -> None:
    """Only what JSON can hold: a YAML tag that builds bytes, sets, dates or non-string keys is refused."""
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                raise SourceError(doc.line_of(path), f"key {key!r} must be a string (quote it)")
            _plain(doc, value, path + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _plain(doc, value, path + (i,))
    elif not isinstance(data, PLAIN_SCALARS):
        raise SourceError(doc.line_of(path), f"a value of YAML type {type(data).__name__} is not allowed: use a "
                                             "string, number, boolean, list or mapping (quote dates)")


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

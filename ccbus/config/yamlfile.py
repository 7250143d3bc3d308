"""YAML that remembers where every key and item came from.

Admins fix what they can find.  Every mapping and list loaded here carries
the line and column of each key and item, so that a schema error deep in a
config (``sources.cvp.options.hots``) or a rule can be reported as
``ccbus.yaml:14:7``.  Duplicate keys, which PyYAML silently overwrites, are
errors.

A file on disk is input like any other, and the running service reads it
again on SIGHUP and whenever a rule file is saved, so what one file may cost
is bounded *before* anything walks it: at most :data:`MAX_FILE_BYTES`, nesting
at most :data:`MAX_DEPTH` levels deep, and at most :data:`MAX_NODES` values
once every alias is counted as the values it repeats.  The last two are
counted while the file is composed, which costs time in proportion to the
file's bytes, so a 900-byte "billion laughs" file of nested aliases is refused
at the alias that crosses the limit (with its line) instead of being expanded
by whatever reads the tree later; and an alias used inside its own anchor (a
recursive structure, which every walker would follow forever) is refused too.
Python's recursion and memory errors are turned into a located
:class:`ConfigError` as a last line, so no file can stop the process.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ccbus.errors import ConfigError

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "LineDict",
    "LineList",
    "line_of",
    "load_yaml",
    "locate",
    "location",
]

#: The largest config or rule file read (a rule file this size is thousands of rules).
MAX_FILE_BYTES = 1024 * 1024
#: The deepest a value may sit in a file, counting every mapping and list around it.
#: Configs and rules use a handful of levels; the loaders after this one walk the
#: tree recursively, so this also keeps them far from Python's recursion limit.
MAX_DEPTH = 64
#: The most values (mappings, lists, scalars) a file may hold, an alias counting
#: as every value of the node it repeats.
MAX_NODES = 100_000


class LineDict(dict[Any, Any]):
    """A dict with ``key_lines[key] = (line, col)`` and its own ``line``/``col`` (1-based)."""

    line: int = 0
    col: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines: dict[Any, tuple[int, int]] = {}
        self.value_lines: dict[Any, tuple[int, int]] = {}


class LineList(list[Any]):
    """A list with ``item_lines[i] = (line, col)`` and its own ``line``/``col``."""

    line: int = 0
    col: int = 0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_lines: list[tuple[int, int]] = []


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _TooCostly(yaml.composer.ComposerError):
    """A file refused for what reading it would cost (depth, size once expanded, recursion)."""


class _LineLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0  # of the node being composed: 1 for the document's root
        self._deepest = 0  # the deepest level reached inside the current anchored node
        self._nodes = 0  # values so far, aliases expanded
        self._anchored: dict[str, tuple[int, int]] = {}  # anchor -> (values, height)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """PyYAML's, counting depth and expanded values as it goes (see the module doc)."""
        if self.check_event(yaml.AliasEvent):
            event: Any = self.peek_event()  # type: ignore[no-untyped-call]
            cost = self._anchored.get(event.anchor)
            if cost is None and event.anchor in self.anchors:
                raise _TooCostly(
                    None,
                    None,
                    f"alias *{event.anchor} is used inside its own anchor &{event.anchor}: "
                    "a recursive structure cannot be read",
                    event.start_mark,
                )
            if cost is not None:
                values, height = cost
                self._count(values, self._depth + height, event.start_mark)
            return super().compose_node(parent, index)
        event = self.peek_event()  # type: ignore[no-untyped-call]
        self._depth += 1
        self._count(1, self._depth, event.start_mark)
        before, outer_deepest = self._nodes - 1, self._deepest
        self._deepest = self._depth
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if event.anchor is not None:
            self._anchored[event.anchor] = (self._nodes - before, self._deepest - self._depth)
        self._deepest = max(self._deepest, outer_deepest)
        return node

    def _count(self, values: int, depth: int, mark: yaml.Mark) -> None:
        self._nodes += values
        self._deepest = max(self._deepest, depth)
        if depth > MAX_DEPTH:
            raise _TooCostly(
                None,
                None,
                f"nested more than {MAX_DEPTH} levels deep (lists and mappings inside "
                f"each other); a config or rule file may nest at most {MAX_DEPTH}",
                mark,
            )
        if self._nodes > MAX_NODES:
            raise _TooCostly(
                None,
                None,
                f"holds more than {MAX_NODES:,} values once its aliases are expanded "
                f"(each *alias counts as every value it repeats); a config or rule file "
                f"may hold at most {MAX_NODES:,}",
                mark,
            )

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:
        self.flatten_mapping(node)
        result = LineDict()
        result.line, result.col = _mark(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value", key_node.start_mark
                ) from None
            if key in result:
                first = result.key_lines[key][0]
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first defined on line {first})",
                    key_node.start_mark,
                )
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = _mark(key_node)
            result.value_lines[key] = _mark(value_node)
        return result

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> LineList:
        result = LineList()
        result.line, result.col = _mark(node)
        for child in node.value:
            result.append(self.construct_object(child, deep=True))
            result.item_lines.append(_mark(child))
        return result


# YAML 1.2 booleans only: in YAML 1.1 `on`, `off`, `yes` and `no` are booleans,
# which would turn a rule's `on:` key into True and an agent state "NO" into False.
_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_sequence)


#: What usually causes the parser's wording, said in the admin's terms (the parser's
#: own words stay first: they are what a search engine knows).
_YAML_HINTS = (
    ("character '\\t'", "YAML indents with spaces, never tabs"),
    ("expected <block end>", "a line is indented differently from the lines at its level: "
     "keys of one item line up, and '- ' items of one list line up"),
    ("mapping values are not allowed here", "a value holds ': ' or the line above it is "
     "indented wrongly; put a value with a colon in quotes"),
    ("could not find expected ':'", "a key line lacks its ':' or a quoted value is not closed"),
    ("expected ',' or ']'", "a [list] is not closed: add the ']'"),
    ("expected ',' or '}'", "a {mapping} is not closed: add the '}'"),
    ("found undefined alias", "'*name' refers to an anchor '&name' that is not defined above"),
)


def _yaml_hint(problem: str) -> str:
    """One line on what usually causes the parser's ``problem``, or nothing."""
    for wording, hint in _YAML_HINTS:
        if wording in problem:
            return "usually: " + hint
    return ""


def load_yaml(path: Path | str, text: str | None = None) -> Any:
    """Load one YAML document with line information; errors name file, line and column."""
    path = Path(path)
    if text is None:
        try:
            with path.open("rb") as handle:  # never more than the limit, whatever the file
                raw = handle.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            raise ConfigError(f"cannot read: {err.strerror or err}", str(path)) from None
        _check_size(len(raw), path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"not UTF-8 text: {err.reason}", str(path)) from None
    _check_size(len(text), path)
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except _TooCostly as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"refused: {err.problem}", where) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = err.problem or err.context or "invalid YAML"
        hint = _yaml_hint(problem)
        raise ConfigError(f"invalid YAML: {problem}" + (f" ({hint})" if hint else ""),
                          where) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML: {err}", str(path)) from None
    except (RecursionError, MemoryError) as err:  # a last line: the limits above come first
        reason = f"refused: too costly to read ({type(err).__name__})"
        raise ConfigError(reason, str(path)) from None


def _check_size(size: int, path: Path) -> None:
    if size > MAX_FILE_BYTES:
        raise ConfigError(
            f"refused: larger than {MAX_FILE_BYTES // 1024} KiB, the most a config or "
            "rule file may be (split the rules into several files)",
            str(path),
        )


def locate(root: Any, path: Sequence[Any]) -> tuple[int, int] | None:
    """The (line, col) of the deepest point of ``path`` that exists under ``root``.

    ``path`` is a key path as pydantic reports it (``("sources", "cvp",
    "options", "hots")``); a key that exists points at the key itself, a
    missing key at the mapping that should have held it.
    """
    best: tuple[int, int] | None = None
    node = root
    for step in path:
        if isinstance(node, LineDict):
            best = best or (node.line, node.col)
            if step in node:
                best = node.key_lines.get(step, best)
                node = node[step]
                continue
            return best
        if isinstance(node, LineList) and isinstance(step, int) and 0 <= step < len(node):
            best = node.item_lines[step]
            node = node[step]
            continue
        break
    if isinstance(node, LineDict | LineList) and best is None:
        return node.line, node.col
    return best


def line_of(root: Any, path: Sequence[Any] = ()) -> int:
    """The 1-based line of a key path, or 0 when it cannot be placed."""
    found = locate(root, path)
    return found[0] if found else 0


def location(file: Path | str, root: Any, path: Sequence[Any] = ()) -> str:
    """``file:line:col`` for a key path, or just ``file`` when it cannot be placed."""
    found = locate(root, path)
    return f"{file}:{found[0]}:{found[1]}" if found else str(file)

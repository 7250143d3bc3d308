"""YAML that remembers where every key and item came from.

Admins fix what they can find.  Every mapping and list loaded here carries
the line and column of each key and item, so that a schema error deep in a
config (``sources.cvp.options.hots``) or a rule can be reported as
``ccbus.yaml:14:7``.  Duplicate keys, which PyYAML silently overwrites, are
errors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ccbus.errors import ConfigError

__all__ = ["LineDict", "LineList", "line_of", "load_yaml", "locate", "location"]


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


class _LineLoader(yaml.SafeLoader):
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
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read: {err.strerror or err}", str(path)) from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"not UTF-8 text: {err.reason}", str(path)) from None
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = err.problem or err.context or "invalid YAML"
        hint = _yaml_hint(problem)
        raise ConfigError(f"invalid YAML: {problem}" + (f" ({hint})" if hint else ""),
                          where) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML: {err}", str(path)) from None


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

"""Reading rule files: YAML -> validated, compiled :class:`Rule` objects.

Each rule is validated on its own: a broken rule is reported with file,
line and a one-line reason and skipped, and the rest of the file still
loads.  A file too costly to read (too large, too deeply nested, an alias
bomb: see :mod:`ccbus.config.yamlfile`) is refused as a whole with the line
where reading stopped, like a file that is not YAML.  Nothing here connects
anywhere, so ``ccbus check`` and ``ccbus test`` run the same code as ``ccbus
run``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccbus.actions.api import ActionSpec
from ccbus.config.schema import validate
from ccbus.config.suggest import unknown_message
from ccbus.config.yamlfile import LineDict, LineList, line_of, load_yaml, location
from ccbus.errors import ConfigError, ExpressionSyntaxError, RuleError
from ccbus.rules.expressions import ExpressionCompiler
from ccbus.rules.model import PREVIOUS, ActionCall, Gate, Rule, RuleSpec

__all__ = ["RuleFile", "RuleSet", "load_rules", "rule_files"]

RULE_SUFFIXES = (".yaml", ".yml")


@dataclass(slots=True)
class RuleFile:
    """One rule file: its rules, its test cases (raw) and its problems."""

    path: Path
    rules: list[Rule] = field(default_factory=list)
    tests: list[Any] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)
    root: Any = None


@dataclass(slots=True)
class RuleSet:
    """Everything loaded from the rules directories."""

    files: list[RuleFile] = field(default_factory=list)

    @property
    def rules(self) -> list[Rule]:
        return [r for f in self.files for r in f.rules]

    @property
    def errors(self) -> list[ConfigError]:
        return [e for f in self.files for e in f.errors]


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """Rule files under ``paths`` (files or directories), sorted, hidden files skipped."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.suffix in RULE_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            found.append(path)
    return found


def load_rules(
    paths: Iterable[Path],
    *,
    actions: Mapping[str, ActionSpec],
    compiler: ExpressionCompiler,
) -> RuleSet:
    """Load every rule file under ``paths``; never raises for a bad rule or file."""
    ruleset = RuleSet()
    seen: dict[str, Rule] = {}
    files = rule_files(paths)
    for path in files:
        try:
            rule_file = _load_file(path, actions, compiler)
        except (RecursionError, MemoryError) as err:  # a last line: the YAML limits come first
            rule_file = RuleFile(
                path,
                errors=[ConfigError(f"refused: too costly to load ({type(err).__name__})",
                                    str(path))],
            )
        for rule in list(rule_file.rules):
            if rule.name in seen:
                rule_file.errors.append(
                    RuleError(
                        f"rule {rule.name!r} is already defined at {seen[rule.name].where}; "
                        "this one is skipped",
                        rule.where,
                    )
                )
                rule_file.rules.remove(rule)
            else:
                seen[rule.name] = rule
        ruleset.files.append(rule_file)
    for path in paths:
        if not path.exists():
            ruleset.files.append(
                RuleFile(path, errors=[ConfigError("no such file or directory", str(path))])
            )
    return ruleset


def _load_file(
    path: Path, actions: Mapping[str, ActionSpec], compiler: ExpressionCompiler
) -> RuleFile:
    result = RuleFile(path)
    try:
        root = load_yaml(path)
    except ConfigError as err:
        result.errors.append(err)
        return result
    result.root = root
    if root is None:
        return result
    if not isinstance(root, LineDict):
        result.errors.append(
            RuleError(
                "a rule file is a mapping with 'rules:' (and optionally 'tests:')",
                location(path, root),
            )
        )
        return result
    for key in root:
        if key not in ("rules", "tests"):
            result.errors.append(
                RuleError(
                    f"unknown top-level key {key!r} (a rule file has 'rules:' and 'tests:')",
                    location(path, root, (key,)),
                )
            )
    entries = root.get("rules") or []
    if not isinstance(entries, LineList):
        result.errors.append(RuleError("'rules' must be a list", location(path, root, ("rules",))))
        entries = LineList()
    for index, entry in enumerate(entries):
        try:
            rule = _compile_rule(path, root, index, entry, actions, compiler)
        except RuleError as err:
            result.errors.append(err)
            continue
        if rule is not None:
            result.rules.append(rule)
    tests = root.get("tests") or []
    if isinstance(tests, list):
        result.tests = tests
    else:
        result.errors.append(RuleError("'tests' must be a list", location(path, root, ("tests",))))
    return result


def _compile_rule(
    path: Path,
    root: Any,
    index: int,
    entry: Any,
    actions: Mapping[str, ActionSpec],
    compiler: ExpressionCompiler,
) -> Rule | None:
    at = ("rules", index)
    if not isinstance(entry, dict):
        raise RuleError("each rule is a mapping with name, on, if and do", location(path, root, at))
    spec, problems = validate(RuleSpec, entry, file=path, root=entry)
    if spec is None:
        name = entry.get("name") if isinstance(entry, dict) else None
        first = problems[0]
        label = f"rule {name!r}: " if name else ""
        raise RuleError(label + first.message, first.location)
    if not spec.enabled:
        return None

    def fail(message: str, *keys: Any, detail: str = "") -> RuleError:
        return RuleError(f"rule {spec.name!r}: {message}", location(path, root, at + keys),
                         detail=detail)

    def expression(text: str, *keys: Any) -> Any:
        try:
            return compiler.expression(text)
        except ExpressionSyntaxError as err:
            raise fail(str(err), *keys, detail=err.caret) from None

    condition = expression(spec.if_, "if") if spec.if_ is not None else None
    calls = tuple(
        _compile_action(item, i, entry, actions, compiler, fail, path, root, at)
        for i, item in enumerate(spec.do)
    )
    if spec.count and spec.for_:
        raise fail("'count' and 'for' cannot be combined; split it into two rules", "for")
    gate = None
    stateful = spec.count or spec.for_
    if stateful or spec.throttle:
        per_source = (stateful.per if stateful else None) or "event.subject"
        gate = Gate(
            kind="count" if spec.count else "for" if spec.for_ else None,
            key=expression(per_source, "count" if spec.count else "for"),
            threshold=spec.count.at_least if spec.count else 0,
            window=spec.count.within if spec.count else spec.for_.duration if spec.for_ else 0.0,
            throttle_max=spec.throttle.at_most if spec.throttle else 0,
            throttle_window=spec.throttle.every if spec.throttle else 0.0,
            throttle_key=expression(spec.throttle.per or per_source, "throttle")
            if spec.throttle
            else None,
        )
    patterns = (spec.on,) if isinstance(spec.on, str) else tuple(spec.on)
    return Rule(
        name=spec.name,
        file=path,
        line=line_of(root, at),
        patterns=tuple(p.strip() for p in patterns),
        condition=condition,
        actions=calls,
        gate=gate,
        description=spec.description,
    )


def _compile_action(
    item: Any,
    index: int,
    entry: Any,
    actions: Mapping[str, ActionSpec],
    compiler: ExpressionCompiler,
    fail: Any,
    path: Path,
    root: Any,
    at: tuple[Any, ...],
) -> ActionCall:
    keys = ("do", index)
    if not isinstance(item, dict) or len(item) != 1:
        raise fail(
            "each 'do' item is one action, e.g. '- log: \"text\"' or "
            "'- notify: {to: ops, body: ...}'",
            *keys,
        )
    name, raw = next(iter(item.items()))
    spec = actions.get(name)
    if spec is None:
        raise fail(unknown_message("action", str(name), dict(actions)), *keys)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        if spec.shorthand is None:
            raise fail(f"action {name!r} takes a mapping of parameters", *keys)
        raw = {spec.shorthand: raw}
    fields = {f.alias or n: f for n, f in spec.params.model_fields.items()}
    for key in raw:
        if key not in fields:
            raise fail(
                f"action {name!r}: " + unknown_message("parameter", str(key), fields),
                *keys,
                name,
                key,
            )
    for key, model_field in fields.items():
        if model_field.is_required() and key not in raw:
            raise fail(f"action {name!r}: missing required parameter {key!r}", *keys)
    try:
        params = compiler.structure(raw)
    except ExpressionSyntaxError as err:
        raise fail(f"action {name!r}: {err}", *keys, detail=err.caret) from None
    if index == 0 and PREVIOUS in params.names:
        raise fail(
            f"action {name!r}: '{PREVIOUS}' is the result of the action before; "
            "the first action of a rule has none",
            *keys,
        )
    checked = None
    if params.constant:  # nothing to fill in: the parameters can be checked completely now
        checked, problems = validate(
            spec.params, params.value, file=path, root=item, prefix=(name,)
        )
        if checked is None:
            raise RuleError(
                f"rule {entry.get('name')!r}: action {name!r}: {problems[0].message}",
                problems[0].location,
            )
    return ActionCall(
        name=name,
        spec=spec,
        params=params,
        line=line_of(root, at + keys),
        validated=checked,
        waits_for_previous=PREVIOUS in params.names,
        raw=raw,
    )

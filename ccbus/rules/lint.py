"""What ``ccbus check`` can tell about rules from what plugins declare, before any event.

A rule whose ``on:`` matches no event type that anything produces never fires, and
nothing at run time says so: "the check said valid, and the automation never ran".
The known types are the canonical catalogue, what plugins declare
(``register_event_types``), what the rules themselves ``emit`` and the config's
``event_types:``.  A pattern that matches none of them is an error, with
did-you-mean.  A field a condition or template reads that none of the matching
types carries is a warning only: vendor payloads carry fields no schema lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from ccbus.config.suggest import did_you_mean
from ccbus.config.yamlfile import location
from ccbus.errors import RuleError
from ccbus.rules.loader import RuleSet
from ccbus.rules.model import PREVIOUS, Rule

__all__ = ["emitted_types", "field_warnings", "unknown_patterns"]

Known = Mapping[str, frozenset[str] | None]

_WILD = "*?["


def emitted_types(ruleset: RuleSet) -> set[str]:
    """The literal ``type`` of every ``emit`` in the rules."""
    found = set()
    for rule in ruleset.rules:
        for call in rule.actions:
            raw = call.raw if isinstance(call.raw, Mapping) else {}
            kind = raw.get("type")
            if call.name == "emit" and isinstance(kind, str) and "{" not in kind:
                found.add(kind)
    return found


def _prefix(pattern: str) -> str:
    cut = min((pattern.find(c) for c in _WILD if c in pattern), default=len(pattern))
    return pattern[:cut]


def _overlap(pattern: str, known: str) -> bool:
    """Whether the rule's ``pattern`` and a declared type (maybe itself a glob) can meet."""
    if not any(c in known for c in _WILD):
        return fnmatchcase(known, pattern)
    if fnmatchcase(pattern, known):
        return True
    mine, theirs = _prefix(pattern), _prefix(known)
    return mine.startswith(theirs) or theirs.startswith(mine)


def matching(pattern: str, known: Iterable[str]) -> list[str]:
    return [name for name in known if _overlap(pattern, name)]


def unknown_patterns(ruleset: RuleSet, known: Known) -> list[RuleError]:
    """One error per ``on:`` pattern that matches no known event type."""
    problems = []
    literal = sorted(n for n in known if not any(c in n for c in _WILD))
    for rule_file in ruleset.files:
        for rule in rule_file.rules:
            for pattern in rule.patterns:
                if matching(pattern, known):
                    continue
                close = did_you_mean(pattern, literal)
                hint = f"did you mean {close!r}? " if close else ""
                problems.append(RuleError(
                    f"rule {rule.name!r}: on: {pattern!r} matches no event type a plugin, "
                    f"the catalogue or an emit produces ({hint}if a source produces it, "
                    "add it to event_types: in the config)",
                    _on_location(rule_file.root, rule) or rule.where,
                ))
    return problems


def field_warnings(ruleset: RuleSet, known: Known) -> list[str]:
    """A warning per field a rule reads that no type its ``on:`` matches carries."""
    warnings = []
    for rule in ruleset.rules:
        fields = _fields_of(rule, known)
        if fields is None:
            continue
        for name in sorted(_names_read(rule) - fields - {PREVIOUS}):
            close = did_you_mean(name, fields)
            hint = f" (did you mean {close!r}?)" if close else ""
            warnings.append(f"{rule.where}: rule {rule.name!r} reads {name!r}, a field none of "
                            f"its event types declares{hint}")
    return warnings


def _fields_of(rule: Rule, known: Known) -> frozenset[str] | None:
    """The fields of every type the rule matches, or None when any of them may vary."""
    fields: set[str] = set()
    matched = False
    for pattern in rule.patterns:
        for name in matching(pattern, known):
            declared = known[name]
            if declared is None or any(c in name for c in _WILD):
                return None
            fields |= declared
            matched = True
    return frozenset(fields) if matched else None


def _names_read(rule: Rule) -> set[str]:
    names: set[str] = set()
    if rule.condition is not None:
        names |= rule.condition.names
    for call in rule.actions:
        names |= call.params.names
    return names


def _on_location(root: Any, rule: Rule) -> str | None:
    """``file:line:col`` of the rule's ``on:`` key, found by the rule's name."""
    entries = root.get("rules") if isinstance(root, Mapping) else None
    for index, entry in enumerate(entries or ()):
        if isinstance(entry, Mapping) and entry.get("name") == rule.name:
            return location(rule.file, root, ("rules", index, "on"))
    return None

"""Which rules can match an event type: exact names in a dict, globs resolved once per type.

The router asks this for every event, so the answer for a type is cached;
the cache belongs to one index and a reload builds a new index, so it never
goes stale.  The cache is bounded because types come from outside (an
inbound webhook can send any type it likes).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from ccbus.rules.model import Rule

__all__ = ["RuleIndex"]

_MAX_CACHED_TYPES = 10_000


class RuleIndex:
    """Rules by event type, in load order (file order, then position in file)."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = tuple(rules)
        self._exact: dict[str, list[tuple[int, Rule]]] = {}
        self._globs: list[tuple[str, int, Rule]] = []
        for order, rule in enumerate(rules):
            for pattern in rule.patterns:
                if any(c in pattern for c in "*?["):
                    self._globs.append((pattern, order, rule))
                else:
                    self._exact.setdefault(pattern, []).append((order, rule))
        self._cache: dict[str, tuple[Rule, ...]] = {}

    def lookup(self, event_type: str) -> tuple[Rule, ...]:
        """The rules whose ``on`` matches ``event_type``, each once, in load order."""
        found = self._cache.get(event_type)
        if found is None:
            found = self._resolve(event_type)
            if len(self._cache) >= _MAX_CACHED_TYPES:
                self._cache.clear()
            self._cache[event_type] = found
        return found

    def _resolve(self, event_type: str) -> tuple[Rule, ...]:
        hits = dict(self._exact.get(event_type, ()))
        for pattern, order, rule in self._globs:
            if fnmatchcase(event_type, pattern):
                hits[order] = rule
        return tuple(rule for _, rule in sorted(hits.items()))

    def by_name(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

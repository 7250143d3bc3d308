"""A rule as written (the YAML schema) and as compiled (what the engine runs)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, PositiveInt, field_validator

from ccbus.actions.api import ActionSpec
from ccbus.config.schema import Duration, Options
from ccbus.rules.expressions import CompiledExpression, CompiledTemplate

__all__ = [
    "PREVIOUS",
    "ActionCall",
    "CountSpec",
    "ForSpec",
    "Rule",
    "RuleSpec",
    "ThrottleSpec",
]

#: The name under which an action's parameters see the result of the action before it.
PREVIOUS = "previous"

_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


# ---------------------------------------------------------------------------
# As written


class ThrottleSpec(Options):
    """``throttle: {per: hostname, at_most: 1, every: 10m}``: fire at most N times per window."""

    per: str | None = None
    at_most: PositiveInt = 1
    every: Duration


class CountSpec(Options):
    """``count: {per: queue, at_least: 5, within: 10m}``: fire on the Nth match in a window."""

    per: str | None = None
    at_least: PositiveInt
    within: Duration


class ForSpec(Options):
    """``for: {per: agentId, duration: 15m}``: fire when the condition has held this long."""

    per: str | None = None
    duration: Duration


class RuleSpec(Options):
    """One entry of a rule file's ``rules:`` list."""

    name: str
    description: str = ""
    on: str | list[str]
    if_: str | None = Field(default=None, alias="if")
    do: list[Any] = Field(min_length=1)
    throttle: ThrottleSpec | None = None
    count: CountSpec | None = None
    for_: ForSpec | None = Field(default=None, alias="for")
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _RULE_NAME.match(value):
            raise ValueError(
                "a rule name is letters, digits and - _ . : (no spaces), e.g. 'abandoned-to-crm'"
            )
        return value

    @field_validator("on")
    @classmethod
    def _on(cls, value: str | list[str]) -> str | list[str]:
        patterns = [value] if isinstance(value, str) else value
        if not patterns or any(not p.strip() for p in patterns):
            raise ValueError("'on' needs at least one event type or glob, e.g. 'cvp.call.*'")
        return value

    @field_validator("if_", mode="before", json_schema_input_type=str | bool | float | None)
    @classmethod
    def _condition_as_text(cls, value: Any) -> Any:
        # YAML turns `if: true` into a bool; accept it as the expression "True".
        return str(value) if isinstance(value, bool | int | float) else value


# ---------------------------------------------------------------------------
# As compiled


@dataclass(frozen=True, slots=True)
class ActionCall:
    """One entry of a rule's ``do:`` list, compiled."""

    name: str
    spec: ActionSpec
    #: The ``do:`` parameters compiled as one structure of templates.
    params: CompiledTemplate
    line: int
    #: The validated parameters when they have no holes: checked once, at load.
    validated: BaseModel | None = None
    #: True when the parameters read ``previous`` (the result of the action
    #: before): the call is rendered only once that one has succeeded.
    waits_for_previous: bool = False
    #: The parameters as written (a shorthand scalar expanded), for ``ccbus check``.
    raw: Any = None


@dataclass(frozen=True, slots=True)
class Gate:
    """The per-key state a rule keeps: exactly one of throttle-only, count or for.

    ``kind`` is ``"count"``, ``"for"`` or ``None`` (throttle only / stateless);
    ``throttle`` may accompany either.
    """

    kind: str | None
    key: CompiledExpression
    threshold: int = 0
    window: float = 0.0
    throttle_max: int = 0
    throttle_window: float = 0.0
    throttle_key: CompiledExpression | None = None

    @property
    def signature(self) -> tuple[Any, ...]:
        """What must stay equal across a reload for the rule's state to be kept."""
        return (
            self.kind,
            self.key.source,
            self.threshold,
            self.window,
            self.throttle_max,
            self.throttle_window,
            self.throttle_key.source if self.throttle_key else None,
        )


@dataclass(eq=False, slots=True)
class Rule:
    """A validated, compiled rule."""

    name: str
    file: Path
    line: int
    patterns: tuple[str, ...]
    condition: CompiledExpression | None
    actions: tuple[ActionCall, ...]
    gate: Gate | None = None
    description: str = ""
    source_text: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def feeds_next(self, index: int) -> bool:
        """Whether the action after ``index`` waits for its result (reads ``previous``)."""
        following = index + 1
        return following < len(self.actions) and self.actions[following].waits_for_previous

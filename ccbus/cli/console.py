"""What the console shows in the demo, ``ccbus try`` and ``ccbus replay``: matches and calls."""

from __future__ import annotations

from collections import Counter
from typing import Any

import click

from ccbus.config.secrets import SecretBook
from ccbus.events.envelope import Event
from ccbus.records import Invocation
from ccbus.rules.engine import Firing

__all__ = ["ConsoleReporter"]


def _event_line(event: Event) -> str:
    subject = f" [{event.subject}]" if event.subject else ""
    return (
        click.style(event.type, fg="cyan", bold=True)
        + subject
        + click.style(f"  from {event.source}", dim=True)
    )


class ConsoleReporter:
    """A pipeline observer that prints each matching event, its rules and rendered calls."""

    def __init__(
        self,
        *,
        quiet_unmatched: bool = True,
        executed: bool = False,
        secrets: SecretBook | None = None,
    ) -> None:
        """``secrets``: shown as the references the outbox records (``${secret:crm}``)."""
        self.secrets = secrets
        self.quiet_unmatched = quiet_unmatched
        self.executed = executed
        self.events = 0
        self.matched = 0
        self.rules: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()

    def __call__(self, event: Event, firings: list[Firing], made: list[Invocation]) -> None:
        self.events += 1
        if not firings:
            if not self.quiet_unmatched:
                click.echo(_event_line(event) + click.style("  (no rule)", dim=True))
            return
        self.matched += 1
        click.echo(_event_line(event))
        for firing in firings:
            self.rules[firing.rule.name] += 1
            click.echo(
                "  "
                + click.style("✔ " + firing.rule.name, fg="green")
                + click.style(f"  {firing.rule.where}", dim=True)
            )
            for invocation in made:
                if invocation.rule != firing.rule.name:
                    continue
                self.actions[invocation.action] += 1
                verb = "→" if self.executed or not invocation.spec.side_effects else "→ (dry run)"
                click.echo(f"      {verb} {invocation.describe(self.secrets)}")

    def summary(self, extra: dict[str, Any] | None = None) -> None:
        click.echo()
        click.echo(
            click.style("Summary", bold=True) + f": {self.events} events, "
            f"{self.matched} matched a rule, "
            f"{sum(self.actions.values())} action calls"
        )
        for name, count in self.rules.most_common():
            click.echo(f"  {count:4d}  {name}")
        for key, value in (extra or {}).items():
            click.echo(f"  {key}: {value}")

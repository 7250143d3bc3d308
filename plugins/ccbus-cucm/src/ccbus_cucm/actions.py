"""One action per connector command: ``cucm.login`` ... ``cucm.get_state``.

Each sends ``<Command>#<agent>`` through a running ``cucm`` source and waits
for the correlated answer (see :meth:`CucmSource.command`).  The outcome is
visible four ways:

- in the log, one line per answer (command, answer, correlation id, time);
- as the action's outcome: success, a retry (the guide says "send the
  request again", or no answer yet, or the connector is out of service) or a
  dead letter that names the error;
- as ``previous`` for the rule's next action (:meth:`CommandResult.as_result`),
  so one rule can dial and then hold the call it dialled::

      - name: dial-and-hold
        on: call.abandoned
        do:
          - cucm.make_call: {agent: "1001", number: "{caller}"}
          - cucm.hold_call: {agent: "1001", connection_id: "{previous.connectionId}"}

- as a ``cucm.CommandResult`` event on the bus, derived from the triggering
  event (``derivedfrom``/``derivedby``, like ``emit``), for other rules.

Errors answered to a command are also emitted (``outcome: error``), so a rule
can tell an agent why.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ccbus import ActionContext, ActionSpec, PermanentActionError, RetryableActionError

from .options import PARAMS, CommandParams
from .protocol import COMMANDS, CommandSpec
from .source import CommandResult, CucmSource, running_source

__all__ = ["actions", "run_command"]


def _source(name: str | None) -> CucmSource:
    try:
        return running_source(name)
    except LookupError as err:
        if name is None and "several" in str(err):
            raise PermanentActionError(str(err)) from None
        # not (yet) running: it may start (a reload, the first seconds of a run)
        raise RetryableActionError(str(err)) from None


async def run_command(
    spec: CommandSpec, params: CommandParams, ctx: ActionContext
) -> CommandResult:
    """Send ``spec``'s command once for this call, log and emit the outcome."""
    source = _source(params.source)
    # Login's body is the client destination (the guide's Login table)
    arguments = [source.client_topic] if spec.command == "Login" else params.arguments()
    try:
        result = await source.command(
            spec.command, params.agent, arguments, key=ctx.idempotency_key,
            wait_for=params.timeout,
        )
    except (RetryableActionError, PermanentActionError) as err:
        ctx.log.warning("%s (rule %s, attempt %d): %s", spec.action, ctx.rule, ctx.attempt, err)
        raise
    ctx.log.log(
        logging.INFO if result.outcome == "ok" else logging.WARNING,
        "%s (rule %s, attempt %d): %s in %.1f ms%s", spec.action, ctx.rule, ctx.attempt,
        result.describe(), result.elapsed_ms,
        " (answered to an earlier attempt: not sent again)" if result.replayed else "",
    )
    await source.emit_result(result, rule=ctx.rule, action=spec.action,
                             key=ctx.idempotency_key, event=ctx.event)
    return source.judge(result)


def _runner(spec: CommandSpec) -> Callable[[Any, ActionContext], Awaitable[Any]]:
    async def run(params: CommandParams, ctx: ActionContext) -> CommandResult:
        return await run_command(spec, params, ctx)

    run.__name__ = spec.action.replace(".", "_")
    run.__doc__ = spec.description
    return run


def _lane(params: Any) -> str:
    """One delivery lane per source: a stuck connector holds up only its own commands."""
    return f"cucm:{params.source or ''}"


def actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            name=spec.action,
            params=PARAMS[spec.args],
            run=_runner(spec),
            description=f"{spec.description} ({spec.command}#<agent>)",
            target=_lane,
        )
        for spec in COMMANDS
    ]

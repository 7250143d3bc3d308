"""Built-in action ``log``: write a line to the ccbus log (journald under systemd).

::

    do:
      - log: "call {callId} abandoned after {waitSeconds}s"
      - log: {message: "queue {queue} is filling up", level: warning}
"""

from __future__ import annotations

import logging
from typing import Literal

from ccbus.actions.api import ActionContext, ActionSpec
from ccbus.config.schema import Options
from ccbus.hookspecs import hookimpl

log = logging.getLogger("ccbus.action.log")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class LogParams(Options):
    message: str
    level: Literal["debug", "info", "warning", "error"] = "info"


async def run(params: LogParams, ctx: ActionContext) -> None:
    log.log(_LEVELS[params.level], "[%s] %s", ctx.rule, params.message)


@hookimpl
def register_actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            name="log",
            params=LogParams,
            run=run,
            shorthand="message",
            side_effects=False,
            description="Write a line to the ccbus log.",
        )
    ]

"""ccbus: an integration bus for contact centers.

The public API for plugin authors is re-exported here, and only here: the
first-party plugins under ``plugins/`` import nothing else from ccbus (a test
checks it), so a third party copying one copies only public names.  Everything
else is internal and may change between releases.

By role, in the order data flows:

* sources: :class:`SourceSpec`, :class:`Source`, :class:`SourceContext` (with
  ``emit``, ``convert`` and ``refuse``), :class:`Backoff`, :class:`DemoSource`;
  errors :class:`SourceNotReady`, :class:`SourceAuthFailed`, :class:`RefusedInput`;
* events: :class:`Event`, :data:`CANONICAL_EVENTS`, :func:`decode_json`,
  :func:`parse_timestamp`;
* actions: :class:`ActionSpec`, :class:`ActionContext`, and their errors;
* options and config: :class:`Options`, :data:`Duration`, :func:`parse_duration`,
  :func:`click_duration`, :func:`did_you_mean`, :class:`LoadedConfig` (what
  ``check_config`` receives) and :func:`load_config` (for a plugin's own commands);
* hooks: :data:`hookimpl`, and :class:`BusView` (what ``startup``/``shutdown`` receive);
* simulators: :func:`serve_asgi` (serve an ASGI app on a bound socket, as the
  listener does), :func:`simulator_control_routes` (the ``/_sim`` fault-injection
  endpoint), :func:`simulator_control` (its client) and :func:`simulator_command` (what
  an ``inject`` command does with it).
"""

from __future__ import annotations

from ccbus.actions.api import ActionContext, ActionSpec
from ccbus.config.durations import click_duration, parse_duration
from ccbus.config.file import LoadedConfig, load_config
from ccbus.config.schema import Duration, Options
from ccbus.config.suggest import did_you_mean
from ccbus.errors import (
    ActionError,
    CcbusError,
    ConfigError,
    EvaluationError,
    PermanentActionError,
    PluginError,
    RefusedInput,
    RetryableActionError,
    SourceAuthFailed,
    SourceError,
    SourceNotReady,
)
from ccbus.events.envelope import CANONICAL_EVENTS, Event, parse_timestamp
from ccbus.events.jsondecode import decode_json
from ccbus.hookspecs import hookimpl
from ccbus.observe.listener import serve_asgi
from ccbus.observe.view import BusView
from ccbus.sources.api import DemoSource, Source, SourceContext, SourceSpec
from ccbus.sources.backoff import Backoff
from ccbus.sources.simulator import (
    simulator_command,
    simulator_control,
    simulator_control_routes,
)
from ccbus.version import __version__

__all__ = [
    "CANONICAL_EVENTS",
    "ActionContext",
    "ActionError",
    "ActionSpec",
    "Backoff",
    "BusView",
    "CcbusError",
    "ConfigError",
    "DemoSource",
    "Duration",
    "EvaluationError",
    "Event",
    "LoadedConfig",
    "Options",
    "PermanentActionError",
    "PluginError",
    "RefusedInput",
    "RetryableActionError",
    "Source",
    "SourceAuthFailed",
    "SourceContext",
    "SourceError",
    "SourceNotReady",
    "SourceSpec",
    "__version__",
    "click_duration",
    "decode_json",
    "did_you_mean",
    "hookimpl",
    "load_config",
    "parse_duration",
    "parse_timestamp",
    "serve_asgi",
    "simulator_command",
    "simulator_control",
    "simulator_control_routes",
]

"""ccbus: an integration bus for contact centers.

The public API for plugin authors is re-exported here; everything else is
internal and may change between releases.
"""

from __future__ import annotations

from ccbus.actions.api import ActionContext, ActionSpec
from ccbus.config.schema import Duration, Options
from ccbus.errors import (
    ActionError,
    CcbusError,
    ConfigError,
    EvaluationError,
    PermanentActionError,
    PluginError,
    RetryableActionError,
)
from ccbus.events.envelope import CANONICAL_EVENTS, Event, parse_timestamp
from ccbus.events.jsondecode import decode_json
from ccbus.hookspecs import hookimpl
from ccbus.sources.api import DemoSource, SourceContext, SourceSpec
from ccbus.version import __version__

__all__ = [
    "CANONICAL_EVENTS",
    "ActionContext",
    "ActionError",
    "ActionSpec",
    "CcbusError",
    "ConfigError",
    "DemoSource",
    "Duration",
    "EvaluationError",
    "Event",
    "Options",
    "PermanentActionError",
    "PluginError",
    "RetryableActionError",
    "SourceContext",
    "SourceSpec",
    "__version__",
    "decode_json",
    "hookimpl",
    "parse_timestamp",
]

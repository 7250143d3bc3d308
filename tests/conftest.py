"""Shared fixtures: a plugin host with the built-ins, a compiler, file writers."""

from __future__ import annotations

import pytest

from ccbus.plugins import PluginHost
from ccbus.rules.expressions import ExpressionCompiler
from ccbus.rules.testing import ManualClock
from ccbus.runtime.bus import make_compiler


@pytest.fixture
def plugins() -> PluginHost:
    """Built-in plugins only: tests do not depend on what else is installed."""
    return PluginHost(autoload=False)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_767_600_000.0)  # 2026-01-05T08:00:00Z


@pytest.fixture
def compiler(plugins: PluginHost, clock: ManualClock) -> ExpressionCompiler:
    return make_compiler(plugins, clock)

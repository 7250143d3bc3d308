"""Every hook a ccbus plugin can implement.

A plugin is a module (or object) with functions decorated by
``@ccbus.hookimpl`` whose names match the specs below, published under the
entry-point group ``ccbus``::

    [project.entry-points.ccbus]
    myplugin = "ccbus_myplugin"

Hooks are called with keyword arguments, and an implementation may accept
any subset of a spec's arguments, so specs can gain arguments later without
breaking plugins.  ``register_*`` hooks return lists (or dicts) of things;
plain names are lifecycle points.  A hook may return a coroutine where its
docstring says so; the bus awaits it.

``ccbus new-plugin NAME`` writes a working plugin that implements several
of these.  ``tests/test_plugins.py`` keeps this module, the docs and the
tests in step: every hook needs a docstring, a place in the README and a
``## name(`` heading in ``docs/plugin-hooks.md``
(``test_every_hook_is_documented_in_its_spec_and_in_the_docs``), a test named
``test_hook_<name>`` that implements it (``test_every_hook_is_exercised_by_a_test``),
and only public types in its signature (``test_hook_signatures_use_public_types``).  A hook that
raises is a problem naming its plugin (``PluginHost.problems``), never a
crash of the whole CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    import click

    from ccbus.actions.api import ActionSpec
    from ccbus.config.file import LoadedConfig
    from ccbus.observe.view import BusView
    from ccbus.sources.api import DemoSource, SourceSpec

PROJECT = "ccbus"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["hookimpl", "hookspec"]


# ---------------------------------------------------------------------------
# Registration: what a plugin adds


@hookspec
def register_sources() -> list[SourceSpec]:
    """Source kinds this plugin provides.

    :return: a list of :class:`ccbus.SourceSpec`; each ``name`` is
        what configs write as ``plugin:``.  Names must be unique across
        plugins; a clash is reported by ``ccbus plugins`` and ``ccbus check``.
    """


@hookspec
def register_actions() -> list[ActionSpec]:
    """Actions this plugin provides, callable from a rule's ``do:`` list.

    :return: a list of :class:`ccbus.ActionSpec`.  Vendor actions use
        a dotted name (``enreach.subscribe``).
    """


@hookspec
def register_functions() -> dict[str, Callable[..., Any]]:
    """Functions rule expressions and templates may call.

    :return: ``{name: function}``.  Functions receive plain values and must
        not do I/O or return modules, classes or other callables: they run
        inside the expression sandbox on every matching event.  The first
        line of each docstring is shown by ``ccbus plugins --functions``.
    """


@hookspec
def register_simulators() -> list[click.Command]:
    """Simulators, run as ``ccbus simulate NAME``.

    :return: a list of ``click.Command``; the command's name is the
        simulator's name (usually the vendor: ``cvp``, ``enreach``).  A
        simulator plays the vendor's side of the protocol on this machine so
        an admin can try rules without a production contact center.
    """


@hookspec
def register_event_types() -> dict[str, list[str] | None]:
    """The event types this plugin's sources produce, each with its ``data`` fields.

    ``ccbus check`` refuses a rule whose ``on:`` matches no known type (a typo such
    as ``call.abandonned`` would never fire) and warns about a field a condition or
    template reads that none of the matching types carries.

    :return: ``{type: [field, ...]}``; ``None`` as the fields when they vary (the
        rule's fields are then not checked).  A glob (``mycrm.*``) declares types a
        source produces dynamically; the canonical types are declared by the core.
    """


@hookspec
def register_demo_sources() -> list[DemoSource]:
    """Sources ``ccbus demo`` runs live against their simulators, next to the replay.

    :return: a list of :class:`ccbus.DemoSource`; each brings its own
        simulator up on loopback for the demo's duration, so the demo shows the
        plugin's real protocol path without any vendor system.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands or command groups to the ``ccbus`` CLI.

    :param cli: the root ``ccbus`` group; call ``cli.add_command(...)``.
        Use a group named after the plugin (``ccbus enreach ...``).
    """


@hookspec
def check_config(config: LoadedConfig) -> list[str]:
    """Check the parts of the config this plugin cares about, without connecting.

    Called by ``ccbus check`` and by ``ccbus run`` before any source starts.

    :param config: the loaded :class:`ccbus.LoadedConfig` (``config.config``
        is the validated model, ``config.where("targets", name)`` gives ``file:line``).
    :return: problems, each one line naming file, line and key, never a secret.
    """


# ---------------------------------------------------------------------------
# Lifecycle


@hookspec
def startup(bus: BusView) -> Any:
    """Called once the bus is configured, before sources start.

    :param bus: the running bus, as the read-only :class:`ccbus.BusView` (its
        sources, rule names and statistics, counters).
    :return: nothing, or a coroutine the bus awaits.  An exception is logged
        with the plugin's name and the bus carries on.
    """


@hookspec
def shutdown(bus: BusView) -> Any:
    """Called when the bus stops, after sources stopped and actions drained.

    :param bus: the stopping bus, as a :class:`ccbus.BusView`.
    :return: nothing, or a coroutine the bus awaits.
    """

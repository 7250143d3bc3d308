"""Finding, loading and listing plugins.

Built-in plugins (``ccbus.builtin.*``) are registered first, then every
entry point in group ``ccbus``.  Each entry point is loaded on its own: one
that fails to import is recorded with its name and error and the others
still load (pluggy's ``load_setuptools_entrypoints`` would stop at the
first failure).  ``check_pending()`` then turns a misspelt hook
implementation into an error naming the plugin.

Switches: ``CCBUS_DISABLE_PLUGIN_AUTOLOAD=1`` loads built-ins only;
``CCBUS_DISABLE_PLUGINS=a,b`` skips named entry points.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .actions import ActionSpec
from .errors import PluginError
from .functions import Clock, build_library
from .sources import SourceSpec

__all__ = ["PluginFailure", "PluginHost", "PluginInfo", "await_me_maybe"]

log = logging.getLogger("ccbus.plugins")

#: Names of the built-in expression functions; plugins cannot replace them.
BUILTIN_FUNCTIONS = frozenset(build_library(Clock()))

BUILTIN_PLUGINS = (
    "ccbus.builtin.replay",
    "ccbus.builtin.webhook",
    "ccbus.builtin.log_action",
    "ccbus.builtin.emit_action",
    "ccbus.builtin.webhook_action",
    "ccbus.builtin.notify_action",
)


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    name: str
    error: str


@dataclass(slots=True)
class PluginInfo:
    """What ``ccbus plugins`` shows for one plugin."""

    name: str
    version: str
    module: str
    sources: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    simulators: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)


class PluginHost:
    """One plugin manager per application object (never a module global).

    Collects what plugins register into lookup tables, reporting clashes and
    broken registrations as :attr:`problems` instead of stopping.
    """

    def __init__(self, *, autoload: bool | None = None, extra: Iterable[Any] = ()) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.problems: list[str] = []
        self._versions: dict[str, str] = {}
        self._owners: dict[tuple[str, str], str] = {}
        for module_name in BUILTIN_PLUGINS:
            self.pm.register(importlib.import_module(module_name), name=module_name)
            self._versions[module_name] = "builtin"
        if autoload is None:
            autoload = os.environ.get("CCBUS_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")
        if autoload:
            self._load_entry_points()
        for plugin in extra:
            self.pm.register(plugin)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as err:
            self.failures.append(PluginFailure(self.pm.get_name(err.plugin) or "?", str(err)))
            self.pm.unregister(err.plugin)
        self.sources = self._collect_specs("register_sources", SourceSpec)
        self.actions = self._collect_specs("register_actions", ActionSpec)
        self.functions = self._collect_functions()

    def _load_entry_points(self) -> None:
        disabled = {n.strip() for n in os.environ.get("CCBUS_DISABLE_PLUGINS", "").split(",")}
        for ep in metadata.entry_points(group=hookspecs.PROJECT):
            if ep.name in disabled or self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as err:  # an import error of any kind is that plugin's problem
                self.failures.append(PluginFailure(ep.name, f"{type(err).__name__}: {err}"))
                continue
            dist = ep.dist
            self._versions[ep.name] = dist.version if dist else "?"

    def _collect_specs(self, hook_name: str, kind: type[Any]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        owners: dict[str, str] = {}
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            plugin = impl.plugin_name
            try:
                specs: Any = impl.function() or []
            except Exception as err:
                self.problems.append(f"plugin {plugin}: {hook_name}() failed: {err}")
                continue
            for spec in specs:
                if not isinstance(spec, kind):
                    self.problems.append(
                        f"plugin {plugin}: {hook_name}() returned {spec!r}, not a {kind.__name__}"
                    )
                elif spec.name in found:
                    self.problems.append(
                        f"plugin {plugin}: {kind.__name__} {spec.name!r} is already "
                        f"provided by {owners[spec.name]}; keeping the first"
                    )
                else:
                    found[spec.name] = spec
                    owners[spec.name] = plugin
        self._owners.update({(hook_name, k): v for k, v in owners.items()})
        return found

    def _collect_functions(self) -> dict[str, Callable[..., Any]]:
        found: dict[str, Callable[..., Any]] = {}
        for impl in self.pm.hook.register_functions.get_hookimpls():
            try:
                functions: Any = impl.function() or {}
            except Exception as err:
                self.problems.append(
                    f"plugin {impl.plugin_name}: register_functions() failed: {err}"
                )
                continue
            for name, func in functions.items():
                if not callable(func) or not str(name).isidentifier() or name.startswith("_"):
                    self.problems.append(
                        f"plugin {impl.plugin_name}: function {name!r} is not a callable "
                        "with an identifier name"
                    )
                    continue
                owner = self._owners.get(("register_functions", name))
                if name in BUILTIN_FUNCTIONS:
                    self.problems.append(
                        f"plugin {impl.plugin_name}: function {name!r} is a built-in "
                        "function name; the built-in is kept"
                    )
                elif owner is not None:
                    self.problems.append(
                        f"plugin {impl.plugin_name}: function {name!r} is already provided "
                        f"by {owner}; keeping the first"
                    )
                else:
                    found[name] = func
                    self._owners[("register_functions", name)] = impl.plugin_name
        return found

    def demo_sources(self) -> list[Any]:
        """Every :class:`~ccbus.sources.DemoSource` plugins offer to ``ccbus demo``."""
        found: list[Any] = []
        for impl in self.pm.hook.register_demo_sources.get_hookimpls():
            try:
                offered: Any = impl.function() or []
                found.extend(offered)
            except Exception as err:  # one plugin's demo must not stop the others'
                self.problems.append(f"plugin {impl.plugin_name}: register_demo_sources(): {err}")
        return found

    def simulators(self) -> list[Any]:
        """Every simulator command (``click.Command``) plugins register."""
        commands: list[Any] = []
        for result in self.pm.hook.register_simulators():
            commands.extend(result or [])
        return commands

    def info(self) -> list[PluginInfo]:
        """One entry per loaded plugin, with what it provides."""
        infos: dict[str, PluginInfo] = {}
        for name, plugin in self.pm.list_name_plugin():
            infos[name] = PluginInfo(
                name=name,
                version=self._versions.get(name, "?"),
                module=getattr(plugin, "__name__", type(plugin).__name__),
                hooks=sorted(h.name for h in self.pm.get_hookcallers(plugin) or []),
            )
        for (hook, thing), owner in self._owners.items():
            info = infos.get(owner)
            if info is None:
                continue
            {
                "register_sources": info.sources,
                "register_actions": info.actions,
                "register_functions": info.functions,
            }[hook].append(thing)
        for impl in self.pm.hook.register_simulators.get_hookimpls():
            info = infos.get(impl.plugin_name)
            if info is not None:
                try:
                    commands: Any = impl.function() or []
                    info.simulators.extend(c.name for c in commands)
                except Exception as err:
                    self.problems.append(f"plugin {impl.plugin_name}: register_simulators(): {err}")
        return list(infos.values())

    def check_config(self, loaded: Any) -> list[str]:
        """Every plugin's own checks of the config (``check_config`` hook), as problems."""
        problems: list[str] = []
        for impl in self.pm.hook.check_config.get_hookimpls():
            try:
                found: Any = impl.function(config=loaded) or []
                problems.extend(str(p) for p in found)
            except Exception as err:  # a plugin's check must not take `ccbus check` down
                problems.append(f"plugin {impl.plugin_name}: check_config failed: {err}")
        return problems

    async def call_each(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin, awaiting coroutines.

        Each implementation runs on its own, so one plugin's failure is
        logged with its name and the others still run.
        """
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            try:
                await await_me_maybe(
                    impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
                )
            except Exception as err:  # a plugin's lifecycle hook must not stop the bus
                log.error(
                    "plugin %s: %s hook failed: %s: %s",
                    impl.plugin_name,
                    hook_name,
                    type(err).__name__,
                    err,
                )

    def source(self, name: str) -> SourceSpec:
        try:
            return self.sources[name]  # type: ignore[no-any-return]
        except KeyError:
            raise PluginError(unknown_message("source plugin", name, self.sources)) from None


def unknown_message(kind: str, name: str, known: dict[str, Any]) -> str:
    """``unknown action 'notfy' (did you mean 'notify'?)``."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    hint = (
        f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known)) or 'none'}"
    )
    return f"unknown {kind} {name!r} ({hint})"


async def await_me_maybe(value: Any) -> Any:
    """Hooks may return a value, a callable or a coroutine: resolve any of them."""
    if callable(value):
        value = value()
    if inspect.isawaitable(value):
        value = await value
    return value

"""Finding, loading and listing plugins.

Built-in plugins (``ccbus.builtin.*``) are registered first, then every
entry point in group ``ccbus``.  Each entry point is loaded on its own: one
that fails to import is recorded with its name and error and the others
still load (pluggy's ``load_setuptools_entrypoints`` would stop at the
first failure).  ``check_pending()`` then turns a misspelt hook
implementation into an error naming the plugin.

What plugins register is collected one plugin at a time as well: a hook that
raises or answers with the wrong kind of value becomes a line in
:attr:`PluginHost.problems` naming the plugin, and everything the other
plugins provide is still there (``ccbus plugins`` and ``ccbus check`` show
the problem instead of a traceback).

Switches: ``CCBUS_DISABLE_PLUGIN_AUTOLOAD=1`` loads built-ins only;
``CCBUS_DISABLE_PLUGINS=a,b`` skips named entry points.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import click
import pluggy

from ccbus import hookspecs
from ccbus.actions.api import ActionSpec
from ccbus.config.file import LoadedConfig
from ccbus.config.schema import validate
from ccbus.config.suggest import unknown_message
from ccbus.errors import ConfigError, PluginError
from ccbus.events.envelope import CANONICAL_EVENTS
from ccbus.rules.functions import Clock, build_library
from ccbus.sources.api import DemoSource, SourceSpec

__all__ = ["PluginFailure", "PluginHost", "PluginInfo", "await_me_maybe"]

log = logging.getLogger("ccbus.plugins")

#: Names of the built-in expression functions; plugins cannot replace them.
BUILTIN_FUNCTIONS = frozenset(build_library(Clock()))

#: Which :class:`PluginInfo` list each registration hook fills.
_PROVIDES = {
    "register_sources": "sources",
    "register_actions": "actions",
    "register_functions": "functions",
    "register_simulators": "simulators",
    "register_commands": "commands",
    "register_demo_sources": "demo_sources",
}

BUILTIN_PLUGINS = (
    "ccbus.sources.replay",
    "ccbus.sources.webhook",
    "ccbus.actions.log",
    "ccbus.actions.emit",
    "ccbus.actions.webhook",
    "ccbus.actions.notify",
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
    #: Top-level ``ccbus`` commands it added (``register_commands``).
    commands: list[str] = field(default_factory=list)
    demo_sources: list[str] = field(default_factory=list)
    #: Every hook it implements, registration and lifecycle alike.
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
        self._simulators: dict[str, click.Command] | None = None
        self._demo_sources: dict[str, DemoSource] | None = None

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

    def _answers(self, hook_name: str, kind: type[Any]) -> Iterator[tuple[str, Any]]:
        """``(plugin name, answer)`` of each plugin implementing ``hook_name``, one at a time.

        Broken answers are recorded by :meth:`_ask` and skipped, so one
        broken plugin never hides the others.
        """
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            answer = self._ask(impl, hook_name, kind)
            if answer is not None:
                yield impl.plugin_name, answer

    def _ask(self, impl: pluggy.HookImpl, hook_name: str, kind: type[Any], **kwargs: Any) -> Any:
        """One plugin's answer to a hook, or ``None`` when it has nothing or fails.

        An exception, or an answer that is not a ``kind`` (``list``, ``dict``),
        becomes a line in :attr:`problems` naming the plugin and the error.
        """
        try:
            answer: Any = impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
        except Exception as err:  # a plugin's bug is its own problem, not every command's
            self.problems.append(
                f"plugin {impl.plugin_name}: {hook_name}() failed: {type(err).__name__}: {err}"
            )
            return None
        if kind is list and isinstance(answer, tuple):
            answer = list(answer)
        if answer is not None and not isinstance(answer, kind):
            self.problems.append(
                f"plugin {impl.plugin_name}: {hook_name}() returned a "
                f"{type(answer).__name__}, not a {kind.__name__}"
            )
            return None
        return answer

    def _collect_specs(self, hook_name: str, kind: type[Any]) -> dict[str, Any]:
        """Named things (``kind`` with a ``name``) from a ``register_*`` hook; first name wins."""
        found: dict[str, Any] = {}
        owners: dict[str, str] = {}
        for plugin, specs in self._answers(hook_name, list):
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
        for plugin, functions in self._answers("register_functions", dict):
            for name, func in functions.items():
                if not callable(func) or not str(name).isidentifier() or name.startswith("_"):
                    self.problems.append(
                        f"plugin {plugin}: function {name!r} is not a callable "
                        "with an identifier name"
                    )
                    continue
                owner = self._owners.get(("register_functions", name))
                if name in BUILTIN_FUNCTIONS:
                    self.problems.append(
                        f"plugin {plugin}: function {name!r} is a built-in "
                        "function name; the built-in is kept"
                    )
                elif owner is not None:
                    self.problems.append(
                        f"plugin {plugin}: function {name!r} is already provided "
                        f"by {owner}; keeping the first"
                    )
                else:
                    found[name] = func
                    self._owners[("register_functions", name)] = plugin
        return found

    def event_types(self) -> dict[str, frozenset[str] | None]:
        """Every event type plugins and the core declare, with its fields (None: they vary).

        The canonical catalogue comes first; a plugin's answer for a type the
        catalogue or another plugin declared widens its fields (vendors send more).
        """
        known: dict[str, frozenset[str] | None] = {
            name: frozenset(f.name for f in spec.fields)
            for name, spec in CANONICAL_EVENTS.items()
        }
        for plugin, declared in self._answers("register_event_types", dict):
            for name, fields in declared.items():
                listed = fields is None or isinstance(fields, list | tuple | set | frozenset)
                if not isinstance(name, str) or not listed:
                    self.problems.append(f"plugin {plugin}: register_event_types() returned "
                                         f"{name!r}: {fields!r}, not a type and its fields")
                    continue
                before = known.get(name, frozenset())
                known[name] = (None if fields is None or before is None
                               else before | frozenset(map(str, fields)))
        return known

    def demo_sources(self) -> list[DemoSource]:
        """Every :class:`~ccbus.sources.api.DemoSource` plugins offer to ``ccbus demo``.

        Collected on first use (demo modules may import a simulator), then kept.
        """
        if self._demo_sources is None:
            self._demo_sources = self._collect_specs("register_demo_sources", DemoSource)
        return list(self._demo_sources.values())

    def simulators(self) -> list[click.Command]:
        """Every simulator command plugins register (``ccbus simulate NAME``).

        Collected on first use and kept, so listing them again (``ccbus
        plugins`` after the CLI start-up) reports a broken plugin once.
        """
        if self._simulators is None:
            self._simulators = self._collect_specs("register_simulators", click.Command)
        return list(self._simulators.values())

    def add_commands(self, group: click.Group, *, protected: Iterable[str] = ()) -> None:
        """Let each plugin add its commands to ``group`` (``register_commands``).

        Remembers which plugin added which command for ``ccbus plugins``.  A
        plugin may not replace a ``protected`` command (ccbus's own): the
        original is put back and the attempt is a problem.
        """
        kept = {name: group.commands[name] for name in protected if name in group.commands}
        for impl in self.pm.hook.register_commands.get_hookimpls():
            before = dict(group.commands)
            self._ask(impl, "register_commands", object, cli=group)  # it adds to ``group``
            plugin = impl.plugin_name
            for name, command in list(group.commands.items()):
                if name in kept and command is not kept[name]:
                    group.commands[name] = kept[name]
                    self.problems.append(
                        f"plugin {plugin}: command {name!r} is ccbus's own; keeping it"
                    )
                elif before.get(name) is not command:
                    self._owners[("register_commands", name)] = plugin

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
        self.simulators()
        self.demo_sources()
        for (hook, thing), owner in self._owners.items():
            info = infos.get(owner)
            if info is not None:
                getattr(info, _PROVIDES[hook]).append(thing)
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

    def check_sources(self, loaded: LoadedConfig) -> list[ConfigError]:
        """Every configured source names a known plugin and has valid options."""
        problems: list[ConfigError] = []
        for name, source in loaded.config.sources.items():
            spec = self.sources.get(source.plugin)
            if spec is None:
                problems.append(
                    ConfigError(
                        f"sources.{name}: "
                        + unknown_message("source plugin", source.plugin, self.sources),
                        loaded.where("sources", name, "plugin"),
                    )
                )
                continue
            _, errors = validate(
                spec.options,
                source.options,
                file=loaded.path or "<config>",
                root=loaded.root,
                prefix=("sources", name, "options"),
            )
            problems.extend(errors)
        return problems

    def source_options(self, loaded: LoadedConfig, name: str) -> Any:
        """The validated options model of source ``name`` (call after :meth:`check_sources`)."""
        source = loaded.config.sources[name]
        return self.sources[source.plugin].options.model_validate(source.options)


async def await_me_maybe(value: Any) -> Any:
    """Hooks may return a value, a callable or a coroutine: resolve any of them."""
    if callable(value):
        value = value()
    if inspect.isawaitable(value):
        value = await value
    return value

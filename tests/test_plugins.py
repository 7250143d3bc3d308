"""Plugin discovery: entry points, broken plugins, clashes, and hooks kept in step with docs."""

from __future__ import annotations

import ast
import builtins
import collections.abc
import inspect
import re
import types
import typing
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from support import REPO, write

import ccbus
from ccbus import ActionSpec, DemoSource, Options, SourceSpec, hookimpl, hookspecs
from ccbus.cli.app import attach_plugins, cli
from ccbus.plugins import PluginHost


@pytest.fixture
def fake_distributions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two installed distributions on sys.path: one good plugin, one that fails to import."""
    write(tmp_path / "good_plugin.py", """
        import ccbus
        from ccbus import ActionSpec, Options

        class P(Options):
            x: int = 0

        async def run(params, ctx):
            pass

        @ccbus.hookimpl
        def register_actions():
            return [ActionSpec(name="good.act", params=P, run=run)]

        @ccbus.hookimpl
        def register_functions():
            return {"double": lambda v: v * 2}
    """)
    write(tmp_path / "broken_plugin.py", "import module_that_does_not_exist\n")
    write(tmp_path / "typo_plugin.py", """
        import ccbus

        @ccbus.hookimpl
        def register_actoins():
            return []
    """)
    for name, module in (("good", "good_plugin"), ("broken", "broken_plugin"),
                         ("typo", "typo_plugin")):
        dist = tmp_path / f"ccbus_{name}-1.2.3.dist-info"
        write(dist / "METADATA", f"Metadata-Version: 2.1\nName: ccbus-{name}\nVersion: 1.2.3\n")
        write(dist / "entry_points.txt", f"[ccbus]\n{name} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_entry_points_load_and_failures_are_reported_by_name(fake_distributions: Path) -> None:
    host = PluginHost()
    assert "good.act" in host.actions and "double" in host.functions
    failures = {f.name: f.error for f in host.failures}
    assert failures["broken"].startswith("ModuleNotFoundError: No module named "
                                         "'module_that_does_not_exist'")
    assert "register_actoins" in failures["typo"]  # a misspelt hook is an error, not ignored
    info = {i.name: i for i in host.info()}
    assert info["good"].version == "1.2.3" and info["good"].actions == ["good.act"]


def test_autoload_can_be_switched_off(fake_distributions: Path, monkeypatch) -> None:
    monkeypatch.setenv("CCBUS_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "good.act" not in PluginHost().actions
    monkeypatch.delenv("CCBUS_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("CCBUS_DISABLE_PLUGINS", "good,broken")
    host = PluginHost()
    assert "good.act" not in host.actions and "broken" not in {f.name for f in host.failures}


def test_name_clashes_keep_the_first_and_say_so() -> None:
    class Clash:
        @hookimpl
        def register_actions(self) -> list[ActionSpec]:
            async def run(params: Options, ctx: object) -> None:
                return None

            return [ActionSpec(name="log", params=Options, run=run), "not a spec"]  # type: ignore[list-item]

    host = PluginHost(autoload=False, extra=[Clash()])
    assert host.actions["log"].description.startswith("Write a line")
    assert any("'log' is already provided by ccbus.actions.log" in p for p in host.problems)
    assert any("not a ActionSpec" in p for p in host.problems)


HOOKS = sorted(name for name, obj in inspect.getmembers(hookspecs, inspect.isfunction)
               if hasattr(obj, "ccbus_spec"))
HOOKS_DOC = REPO / "docs" / "plugin-hooks.md"


def test_every_hook_is_documented_in_its_spec_and_in_the_docs() -> None:
    """Like datasette's: a docstring, a ``## name(args)`` heading per hook, and the README's list."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    docs = HOOKS_DOC.read_text(encoding="utf-8")
    headings = re.findall(r"^## (\w+)\((.*)\)$", docs, re.M)
    assert len(HOOKS) == 10
    assert sorted(name for name, _ in headings) == HOOKS, "one heading per hook, no others"
    for name, args in headings:
        params = list(inspect.signature(getattr(hookspecs, name)).parameters)
        assert args == ", ".join(params), f"docs/plugin-hooks.md: ## {name}({', '.join(params)})"
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 40, f"hook {name} needs a docstring that says what and why"
        assert f"`{name}`" in readme, f"hook {name} is missing from the README's plugin section"
    assert "](docs/plugin-hooks.md)" in readme


def test_every_hook_is_exercised_by_a_test() -> None:
    """Like datasette's: each hook has a ``test_hook_<name>`` (tests/test_hooks.py)."""
    tests = set()
    for path in (REPO / "tests").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        tests |= {node.name for node in ast.walk(tree)
                  if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    missing = [name for name in HOOKS if f"test_hook_{name}" not in tests]
    assert missing == [], f"no test_hook_<name> for {missing}"


#: Names a hook's signature may use besides ``ccbus.__all__``.
ALLOWED_TYPE_MODULES = (builtins, typing, collections.abc)


def test_hook_signatures_use_public_types() -> None:
    """Everything a hook receives or returns is importable from ``ccbus`` (or click, typing)."""
    for name in HOOKS:
        signature = inspect.signature(getattr(hookspecs, name))
        annotations = [p.annotation for p in signature.parameters.values()]
        annotations.append(signature.return_annotation)
        for annotation in annotations:
            assert isinstance(annotation, str), (name, annotation)  # from __future__ import
            for word in re.findall(r"[A-Za-z_][\w.]*", annotation):
                head, _, attr = word.partition(".")
                if head == "click":
                    assert hasattr(click, attr), (name, word)
                elif word != "None" and word not in ccbus.__all__:
                    assert any(hasattr(m, word) for m in ALLOWED_TYPE_MODULES), (
                        f"hook {name} names {word}, which is not in ccbus.__all__")


PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def test_hook_docs_examples_import_only_public_names_and_register_cleanly() -> None:
    """Each example in docs/plugin-hooks.md is a plugin: it loads with no problem."""
    blocks = PYTHON_BLOCK.findall(HOOKS_DOC.read_text(encoding="utf-8"))
    assert len(blocks) == len(HOOKS)
    for number, block in enumerate(blocks, 1):
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ccbus"):
                assert node.module == "ccbus", f"example {number} imports from {node.module}"
                assert {a.name for a in node.names} <= set(ccbus.__all__), number
        module = types.ModuleType(f"docs_example_{number}")
        exec(compile(tree, f"docs/plugin-hooks.md example {number}", "exec"), module.__dict__)
        host = PluginHost(autoload=False, extra=[module])
        host.simulators(), host.demo_sources()
        host.add_commands(click.Group())  # not ccbus's own: the examples stay out of it
        assert (host.failures, host.problems) == ([], []), number
        implemented = {h.name for h in host.pm.get_hookcallers(module) or []}
        assert len(implemented) == 1, (number, implemented)


def test_function_clashes_are_reported_and_builtins_win() -> None:
    class Funcs:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        @hookimpl
        def register_functions(self) -> dict[str, object]:
            return {"lower": str.upper, "shared": lambda: self.tag, "_hidden": len}

    first, second = Funcs("first"), Funcs("second")
    host = PluginHost(autoload=False, extra=[first, second])
    assert host.functions["shared"]() == "first"
    assert "lower" not in host.functions
    assert any("'lower' is a built-in function name" in p for p in host.problems)
    assert any("'shared' is already provided by" in p and "keeping the first" in p
               for p in host.problems)
    assert any("'_hidden' is not a callable with an identifier name" in p for p in host.problems)


class BrokenHooks:
    """Imports fine, then every registration hook fails in its own way."""

    @hookimpl
    def register_simulators(self) -> list[click.Command]:
        raise RuntimeError("simulator config missing")

    @hookimpl
    def register_demo_sources(self) -> list[DemoSource]:
        raise KeyError("demo")

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        raise ValueError("no commands today")

    @hookimpl
    def register_actions(self) -> int:
        return 42

    @hookimpl
    def register_functions(self) -> list[str]:
        return ["not", "a", "dict"]

    @hookimpl
    def register_sources(self) -> list[SourceSpec]:
        raise ImportError("vendor SDK missing")


class Provider:
    """A well-behaved plugin with one of everything, lifecycle hooks included."""

    @hookimpl
    def register_actions(self) -> list[ActionSpec]:
        async def run(params: Options, ctx: object) -> None:
            return None

        return [ActionSpec(name="prov.ping", params=Options, run=run)]

    @hookimpl
    def register_simulators(self) -> list[click.Command]:
        @click.command(name="prov-sim")
        def sim() -> None:
            click.echo("simulating")

        return [sim]

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.command(name="prov-tool")
        def tool() -> None:
            click.echo("prov tool ran")

        @cli.command(name="check")
        def hijack() -> None:
            click.echo("not the real check")

    @hookimpl
    def check_config(self, config: object) -> list[str]:
        return []

    @hookimpl
    def startup(self, bus: object) -> None:
        return None

    @hookimpl
    def shutdown(self, bus: object) -> None:
        return None


def test_a_plugin_whose_hooks_raise_is_a_problem_and_the_rest_load(tmp_path: Path) -> None:
    broken = BrokenHooks()
    host = PluginHost(autoload=False, extra=[broken, Provider()])
    attach_plugins(host)  # what `ccbus` does before any command: must not raise
    assert "prov.ping" in host.actions and "log" in host.actions
    assert [c.name for c in host.simulators()] == ["prov-sim"]
    assert host.demo_sources() == []
    name = host.pm.get_name(broken)
    expected = [
        f"plugin {name}: register_sources() failed: ImportError: vendor SDK missing",
        f"plugin {name}: register_actions() returned a int, not a list",
        f"plugin {name}: register_functions() returned a list, not a dict",
        f"plugin {name}: register_simulators() failed: RuntimeError: simulator config missing",
        f"plugin {name}: register_commands() failed: ValueError: no commands today",
    ]
    assert host.problems[:5] == expected
    assert any(p.endswith("command 'check' is ccbus's own; keeping it") for p in host.problems)
    host.simulators()  # asking again reports nothing twice
    assert host.demo_sources() == []
    assert sum("register_simulators" in p for p in host.problems) == 1
    assert f"plugin {name}: register_demo_sources() failed: KeyError: 'demo'" in host.problems

    runner = CliRunner()
    result = runner.invoke(cli, ["plugins"], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    assert f"problem: plugin {name}: register_simulators() failed" in result.output
    assert runner.invoke(cli, ["prov-tool"], obj={"plugins": host}).output == "prov tool ran\n"
    rules = write(tmp_path / "rules" / "r.yaml", "rules: [{name: r, on: a, do: [log: hi]}]\n")
    result = runner.invoke(cli, ["check", "--rules", str(rules.parent)], obj={"plugins": host})
    assert result.exit_code == 1, result.output  # a broken plugin fails the check, by name
    assert "not the real check" not in result.output
    assert f"plugin {name}: register_simulators() failed" in result.output


def test_ccbus_plugins_shows_commands_demo_sources_and_lifecycle_hooks() -> None:
    provider = Provider()
    host = PluginHost(autoload=False, extra=[provider])
    attach_plugins(host)
    info = {i.name: i for i in host.info()}[host.pm.get_name(provider)]
    assert info.commands == ["prov-tool"] and info.simulators == ["prov-sim"]
    result = CliRunner().invoke(cli, ["plugins"], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    section = result.output.split(f"{host.pm.get_name(provider)} ?", 1)[1].split("problem:")[0]
    assert "    actions: prov.ping\n" in section
    assert "    simulators: prov-sim\n" in section
    assert "    commands: ccbus prov-tool\n" in section
    assert "    hooks: check_config, shutdown, startup\n" in section

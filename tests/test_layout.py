"""The core's import graph: no cycles (type-checking imports included), and layers.

A reader should find the data path in the folder names (source -> envelope ->
rules -> outbox -> action), and a change to one stage should not reach back
into the stages that feed it.  This test walks every ``import`` in ``ccbus/``
with :mod:`ast`, so an import under ``if TYPE_CHECKING:`` counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "ccbus"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in CORE.rglob("*.py") if "templates" not in p.parts}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The core modules ``path`` imports (``from a.b import c`` is a.b.c when that is a module)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                     for alias in node.names]
        else:
            continue
        found.update(n for n in names if n in modules and n != me)
    return found


def graph() -> dict[str, set[str]]:
    modules = core_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_core_has_no_import_cycle() -> None:
    edges = graph()
    edges.pop("ccbus", None)  # the public facade re-exports; nothing inside may import it
    assert cycles(edges) == []


def test_no_core_module_imports_the_public_facade() -> None:
    """``ccbus/__init__`` re-exports the core; a core module importing it closes a loop."""
    offenders = sorted(name for name, targets in graph().items()
                       if name != "ccbus" and "ccbus" in targets)
    assert offenders == []


#: From the top (what an admin runs) to the bottom (what everything reads).  A module
#: may import modules of its own layer and of the layers below it, never above.
#: ``actions/`` and ``sources/`` hold both an API that the stages below use (the
#: ``api`` modules) and built-in plugins that use those stages, so they are split.
LAYERS: list[tuple[str, ...]] = [
    ("ccbus.cli", "ccbus.__main__"),
    ("ccbus.testing",),  # the pytest plugin for plugin authors runs a whole bus
    ("ccbus.runtime",),
    ("ccbus.plugins",),
    ("ccbus.actions.emit", "ccbus.actions.log", "ccbus.actions.notify", "ccbus.actions.webhook",
     "ccbus.sources.replay", "ccbus.sources.webhook"),
    ("ccbus.hookspecs",),
    ("ccbus.config.file",),  # the whole file: every section's schema, the delivery policy's too
    ("ccbus.rules.testing",),  # rule tests run rules through the pipeline
    ("ccbus.delivery",),
    ("ccbus.pipeline",),
    ("ccbus.rules",),
    ("ccbus.observe",),
    ("ccbus.records",),
    ("ccbus.actions", "ccbus.actions.api", "ccbus.actions.http_sessions", "ccbus.sources"),
    ("ccbus.config",),
    ("ccbus.events",),
    ("ccbus.errors", "ccbus.version"),
]


def layer_of(module: str) -> int:
    best, depth = -1, -1
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = number, len(prefix)
    return best


def test_every_core_module_has_a_layer() -> None:
    assert [m for m in core_modules() if m != "ccbus" and layer_of(m) < 0] == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = sorted(
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph().items() if module != "ccbus"
        for target in targets if layer_of(target) < layer_of(module)
    )
    assert upward == []


PLUGINS = CORE.parent / "plugins"


def test_first_party_plugins_import_only_the_public_api() -> None:
    """A third party copies a first-party plugin: it must copy public names only."""
    import ccbus

    public = set(ccbus.__all__)
    private = []
    for path in sorted(PLUGINS.glob("*/src/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "ccbus":
                    private += [f"{path.relative_to(PLUGINS)}: ccbus.{a.name}"
                                for a in node.names if a.name not in public]
                elif node.module.startswith("ccbus."):
                    private.append(f"{path.relative_to(PLUGINS)}: {node.module}")
            elif isinstance(node, ast.Import):
                private += [f"{path.relative_to(PLUGINS)}: {a.name}" for a in node.names
                            if a.name.startswith("ccbus.")]
    assert private == []


def test_every_public_name_exists() -> None:
    import ccbus

    assert [name for name in ccbus.__all__ if not hasattr(ccbus, name)] == []

"""``ccbus new-plugin``: the rendered project is a plugin a third party can ship.

The quick tests render into ``tmp_path`` and check names, placeholders and
refusals.  The slow one does what a plugin author does, in a fresh virtual
environment: install ccbus and the rendered plugin from their sources, then
``ccbus plugins``, ``ccbus test``, ``ccbus check``, ``ccbus replay`` and the
plugin's own pytest suite.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from click.testing import CliRunner

from ccbus import PermanentActionError
from ccbus.cli.app import cli
from ccbus.cli.scaffold import render_plugin
from ccbus.plugins import PluginHost

#: The ccbus source tree this test belongs to (installed into the fresh venv).
REPO = Path(__file__).resolve().parent.parent
CCBUS = Path(sys.executable).parent / "ccbus"
TIMEOUT = 600

#: Any placeholder-looking word left in a rendered file is a template typo.
LEFTOVER = re.compile(r"__[A-Z][A-Z_]*__")

RENDERED_FILES = {
    ".github/workflows/ci.yml",
    ".gitignore",
    "LICENSE",
    "README.md",
    "pyproject.toml",
    "rules/example.yaml",
    "src/ccbus_{pkg}/__init__.py",
    "src/ccbus_{pkg}/py.typed",
    "tests/test_plugin.py",
}


def files_under(root: Path) -> dict[str, str]:
    """``{relative path: text}`` of every file under ``root``."""
    return {
        p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def invoke_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), obj={"plugins": PluginHost(autoload=False)})
    return result.exit_code, result.output


# ---------------------------------------------------------------------------
# Quick: rendering and refusals


@pytest.mark.parametrize("name", ["Bad_Name", "1abc", "", "-abc", "abc-", "a--b", "ab c"])
def test_invalid_names_are_usage_errors(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid plugin name"):
        render_plugin(name, tmp_path)
    code, output = invoke_cli("new-plugin", "--dir", str(tmp_path), "--", name)
    assert code == 2, output
    assert "invalid plugin name" in output
    assert list(tmp_path.iterdir()) == []


def test_an_existing_target_is_never_overwritten(tmp_path: Path) -> None:
    target = render_plugin("demoplug", tmp_path)
    assert target == tmp_path / "ccbus-demoplug"
    (target / "README.md").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError, match="already exists"):
        render_plugin("demoplug", tmp_path)
    code, output = invoke_cli("new-plugin", "demoplug", "--dir", str(tmp_path))
    assert code == 2, output
    assert "already exists" in output
    assert (target / "README.md").read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ccbus-demoplug"]  # no leftovers


def test_rendered_project_has_real_names_everywhere(tmp_path: Path) -> None:
    code, output = invoke_cli("new-plugin", "acme-crm", "--dir", str(tmp_path / "new"))
    assert code == 0, output
    project = tmp_path / "new" / "ccbus-acme-crm"
    files = files_under(project)
    assert set(files) == {f.format(pkg="acme_crm") for f in RENDERED_FILES}
    for path, text in files.items():
        assert not LEFTOVER.search(text), f"{path}: {LEFTOVER.search(text)}"
        if path.endswith(".py"):
            compile(text, path, "exec")
    pyproject = tomllib.loads(files["pyproject.toml"])
    assert pyproject["project"]["name"] == "ccbus-acme-crm"
    assert pyproject["project"]["entry-points"]["ccbus"] == {"acme-crm": "ccbus_acme_crm"}
    assert any(d.startswith("ccbus>=") for d in pyproject["project"]["dependencies"])
    assert "acme-crm.greet" in yaml.safe_load(files["rules/example.yaml"])["rules"][0]["do"][0]


def import_rendered(project: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The rendered plugin module, imported from its source without installing it."""
    spec = importlib.util.spec_from_file_location(
        "ccbus_acme_crm", project / "src" / "ccbus_acme_crm" / "__init__.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ccbus_acme_crm", module)
    spec.loader.exec_module(module)
    return module


#: Two agents; only the one becoming available (the canonical state, docs/events.md) is
#: greeted by the rendered rule.
AGENT_EVENTS = (
    '{"type": "agent.state_changed", "data": {"agentId": "ada", "state": "available"}}\n'
    '{"type": "agent.state_changed", "data": {"agentId": "bob", "state": "not_ready"}}\n'
)


def test_rendered_rules_pass_with_the_rendered_plugin_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without installing anything: import the rendered module and run its rule tests."""
    project = render_plugin("acme-crm", tmp_path)
    module = import_rendered(project, monkeypatch)
    host = PluginHost(autoload=False, extra=[module])
    assert host.failures == [] and host.problems == []
    assert {"acme-crm.greet"} <= set(host.actions) and "acme-crm-ticker" in host.sources
    result = CliRunner().invoke(cli, ["test", str(project / "rules")], obj={"plugins": host})
    assert result.exit_code == 0, result.output
    assert "2 passed, 0 failed" in result.output


@pytest.mark.parametrize("fails", [False, True], ids=["delivered", "failed"])
def test_replay_summary_counts_the_rendered_action_delivered_or_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    """``ccbus replay`` reports how the calls ended, not only that they were rendered."""
    project = render_plugin("acme-crm", tmp_path)
    module = import_rendered(project, monkeypatch)
    if fails:
        async def refuse(params: object, ctx: object) -> None:
            raise PermanentActionError("the greeting service said 400")

        monkeypatch.setattr(module, "greet", refuse)  # what register_actions() hands ccbus
    events = tmp_path / "events.jsonl"
    events.write_text(AGENT_EVENTS, encoding="utf-8")
    host = PluginHost(autoload=False, extra=[module])
    result = CliRunner().invoke(
        cli, ["replay", str(events), "--rules", str(project / "rules")], obj={"plugins": host}
    )
    assert result.exit_code == 0, result.output
    assert "acme-crm.greet(who='ADA!')" in result.output  # rendered and shown either way
    if fails:
        assert "actions: 0 delivered, 1 failed" in result.output, result.output
        assert module.SENT == []
    else:
        assert "actions: 1 delivered, 0 failed" in result.output, result.output
        assert module.SENT == ["ADA!"]


def test_rendered_rule_tests_the_canonical_agent_state(tmp_path: Path) -> None:
    """The example rule must teach a value ``agent.state_changed`` really carries."""
    vocabulary = re.search(r"\| `state` \| str \| yes \| ([a-z_, ]+)\.",
                           (REPO / "docs" / "events.md").read_text(encoding="utf-8"))
    assert vocabulary is not None
    states = {s.strip() for s in vocabulary.group(1).split(",")}
    project = render_plugin("acme-crm", tmp_path)
    rule = yaml.safe_load((project / "rules" / "example.yaml").read_text(encoding="utf-8"))
    compared = re.findall(r'state == "(\w+)"', rule["rules"][0]["if"])
    assert compared and set(compared) <= states, (compared, states)


def test_rendered_project_has_a_license_and_passes_its_ci_lint_and_types(
    tmp_path: Path,
) -> None:
    """The CI workflow runs ruff, mypy and pytest; ruff and mypy pass as rendered."""
    project = render_plugin("acme-crm", tmp_path)
    license_text = (project / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License") and "Your Name" in license_text
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "MIT"
    assert pyproject["project"]["license-files"] == ["LICENSE"]
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text("utf-8"))
    runs = [step["run"] for job in workflow["jobs"].values() for step in job["steps"]
            if "run" in step]
    assert {"ruff check .", "mypy", "pytest"} <= set(runs), runs
    bin_dir = Path(sys.executable).parent
    for command in ("ruff check .", "mypy"):
        tool, *args = command.split()
        proc = subprocess.run([str(bin_dir / tool), *args], cwd=project, capture_output=True,
                              text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, f"{command}:\n{proc.stdout}{proc.stderr}"


# ---------------------------------------------------------------------------
# Slow: a fresh virtual environment, as a plugin author would have


def _clean_env(venv: Path) -> dict[str, str]:
    """This process's environment minus anything that would leak our venv or pytest run."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH"}
        and not k.startswith(("PYTEST_", "CCBUS_", "COV_CORE_"))
    }
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["NO_COLOR"] = "1"
    return env


def _run(
    cmd: list[str | Path], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> str:
    """Run ``cmd``; fail the test with its whole output unless it exits 0."""
    shown = " ".join(str(c) for c in cmd)
    print(f"$ {shown}")
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=TIMEOUT,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"{shown}\nexited {proc.returncode}:\n{output}", pytrace=False)
    return output


@pytest.mark.slow
def test_new_plugin_works_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    assert (REPO / "pyproject.toml").is_file() and (REPO / "ccbus").is_dir()
    out = _run([CCBUS, "new-plugin", "demoplug", "--dir", tmp_path])
    project = tmp_path / "ccbus-demoplug"
    assert f"Created {project}" in out

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    env = _clean_env(venv)
    python, ccbus = venv / "bin" / "python", venv / "bin" / "ccbus"
    _run([python, "-m", "pip", "install", "--quiet", REPO], env=env)
    # not editable: the wheel's packaging is part of what is tested
    _run([python, "-m", "pip", "install", "--quiet", f"{project}[test]"], env=env)

    # the installed ccbus wheel carries the template (not only the source tree)
    _run([ccbus, "new-plugin", "demoplug", "--dir", tmp_path / "from-wheel"], env=env)
    assert files_under(tmp_path / "from-wheel" / "ccbus-demoplug") == files_under(project)

    out = _run([ccbus, "plugins"], env=env)
    assert re.search(r"^demoplug 0\.1\.0\s+\(ccbus_demoplug\)", out, re.M), out
    assert "demoplug.greet" in out and "demoplug-ticker" in out, out
    assert "FAILED TO LOAD" not in out and "problem:" not in out, out

    out = _run([ccbus, "test", project / "rules"], env=env)
    assert "2 passed, 0 failed" in out, out

    out = _run([ccbus, "check", "--rules", project / "rules"], env=env)
    assert "OK:" in out, out

    out = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], env=env, cwd=project)
    assert re.search(r"\b5 passed\b", out), out
    # what the rendered CI workflow runs besides pytest, with the tools the test extra installs
    _run([venv / "bin" / "ruff", "check", "."], env=env, cwd=project)
    _run([venv / "bin" / "mypy"], env=env, cwd=project)

    events = tmp_path / "events.jsonl"
    events.write_text(AGENT_EVENTS, encoding="utf-8")
    out = _run([ccbus, "replay", events, "--rules", project / "rules"], env=env)
    assert "demoplug.greet(who='ADA!')" in out, out
    assert "actions: 1 delivered, 0 failed" in out, out  # the plugin's action ran and succeeded
    assert "BOB" not in out, out

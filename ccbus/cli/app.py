"""The ``ccbus`` command line.

Exit codes: 0 all good; 1 problems found (a failed check or rule test);
2 wrong usage.  Plugins add commands through the ``register_commands``
hook and simulators through ``register_simulators`` (``ccbus simulate``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import click

from ccbus.cli.cluster import cluster
from ccbus.cli.console import ConsoleReporter
from ccbus.cli.remote import listener_url as _listener_url
from ccbus.cli.schema import schema
from ccbus.cli.tail import tail
from ccbus.config.file import Config, ConfigErrors, LoadedConfig, load_config
from ccbus.config.secrets import SecretBook
from ccbus.delivery.store import StateDirError
from ccbus.errors import ConfigError, EvaluationError, MissingField
from ccbus.events.files import BadLine, read_events
from ccbus.events.jsondecode import decode_json
from ccbus.observe.admin import exposure_warning
from ccbus.observe.logs import Redactor, setup_logging
from ccbus.pipeline import Outcome, Pipeline
from ccbus.plugins import PluginHost
from ccbus.rules.engine import Engine
from ccbus.rules.expressions import EnvelopeView, ExpressionCompiler
from ccbus.rules.lint import emitted_types, field_warnings, unknown_patterns
from ccbus.rules.loader import RuleSet, load_rules
from ccbus.rules.testing import ManualClock, run_file_tests
from ccbus.runtime.bus import Bus, make_compiler
from ccbus.runtime.lock import StateDirLocked
from ccbus.runtime.systemd import Notifier
from ccbus.sources.api import DemoSource
from ccbus.version import __version__

__all__ = ["main"]

PACKAGE_DIR = Path(__file__).parent
#: ``ccbus demo --speed 1`` waits at most this long between two sample events
#: (the sample files were recorded hours apart).
DEMO_MAX_PAUSE = 5.0


def shipped_rules_dir() -> Path:
    """The example rules: inside the wheel, or at the top of a source checkout."""
    for candidate in (PACKAGE_DIR / "demo" / "rules", PACKAGE_DIR.parents[1] / "rules"):
        if candidate.is_dir():
            return candidate
    raise click.ClickException("the shipped rules are missing from this installation")


def _fail(lines: list[str]) -> None:
    for line in lines:
        click.echo(click.style("error: ", fg="red", bold=True) + line, err=True)


def _workspace(
    config: Path | None, rules: tuple[Path, ...], *, only: frozenset[str] | None = None
) -> LoadedConfig:
    """The config to work with: a file (or just its ``only`` keys), or rule directories."""
    if config is not None:
        try:
            loaded = load_config(config, only=only)
        except ConfigErrors as err:
            _fail([str(e) for e in err.errors])
            sys.exit(1)
        except ConfigError as err:
            _fail([str(err)])
            sys.exit(1)
        if rules:
            loaded.config = loaded.config.model_copy(update={"rules": [str(p) for p in rules]})
        return loaded
    chosen = [str(p) for p in rules] or ["rules"]
    state = tempfile.mkdtemp(prefix="ccbus-")
    return LoadedConfig(
        config=Config.model_validate(
            {"rules": chosen, "state_dir": state, "http": {"enabled": False}}
        ),
        path=None,
    )


config_option = click.option(
    "-c",
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The ccbus config file (YAML).",
)
rules_option = click.option(
    "--rules",
    "rules",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A rules directory or file (repeatable); overrides the config's.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ccbus")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """ccbus: contact-center events in, YAML rules, actions out."""
    ctx.ensure_object(dict)


cli.add_command(schema)


def _plugins(ctx: click.Context) -> PluginHost:
    host: PluginHost = ctx.obj["plugins"]
    return host


# ---------------------------------------------------------------------------


@cli.command()
@config_option
@rules_option
@click.pass_context
def check(ctx: click.Context, config: Path | None, rules: tuple[Path, ...]) -> None:
    """Check config, plugin options and rules without connecting anywhere."""
    if config is None and not rules:
        raise click.UsageError("give -c CONFIG or --rules DIR")
    plugins = _plugins(ctx)
    loaded = _workspace(config, rules)
    problems = [str(e) for e in loaded.path_problems()] if config else []
    problems += [str(e) for e in plugins.check_sources(loaded)] if config else []
    problems += plugins.check_config(loaded) if config else []
    for warning in loaded.exposure_warnings() if config else []:
        click.echo(click.style("warning: ", fg="yellow") + warning, err=True)
    if config and loaded.config.cluster is not None:  # the one check that connects
        unreachable: str | None
        try:
            from ccbus.runtime.group import check_database
        except ImportError as err:
            unreachable = f"{loaded.where('cluster')}: {err}"
        else:
            unreachable = check_database(loaded.config.cluster, loaded.where("cluster", "dsn"))
        problems += [unreachable] if unreachable else []
    problems += [
        f"plugin {f.name} failed to load: {f.error}"
        for f in plugins.failures
        if config is None or any(s.plugin == f.name for s in loaded.config.sources.values())
    ]
    problems += plugins.problems
    # a plugin's schema error may quote an option's value: an expanded secret is masked
    problems = [loaded.secret_book().redact(p) for p in problems]
    compiler = make_compiler(plugins, ManualClock(0))
    ruleset = load_rules(loaded.rule_paths, actions=plugins.actions, compiler=compiler)
    problems += [e.describe() for e in ruleset.errors]
    if config is not None:
        problems += _call_problems(ruleset, loaded)
    known = _known_event_types(plugins, ruleset, loaded)
    problems += [e.describe() for e in unknown_patterns(ruleset, known)]
    for warning in field_warnings(ruleset, known):
        click.echo(click.style("warning: ", fg="yellow") + warning, err=True)
    for failure in plugins.failures:
        click.echo(
            click.style("warning: ", fg="yellow")
            + f"plugin {failure.name} failed to load: {failure.error}",
            err=True,
        )
    if exposed := exposure_warning(loaded.config.http.host, loaded.config.http.admin_token):
        click.echo(click.style("warning: ", fg="yellow") + exposed, err=True)
    if problems:
        _fail(problems)
        click.echo(f"{len(problems)} problem(s) found.", err=True)
        sys.exit(1)
    click.echo(
        f"OK: {len(loaded.config.sources)} source(s), {len(ruleset.rules)} rule(s) in "
        f"{len(ruleset.files)} file(s)."
    )


def _known_event_types(
    plugins: PluginHost, ruleset: RuleSet, loaded: LoadedConfig
) -> dict[str, frozenset[str] | None]:
    """Plugins' and the catalogue's types, what the rules emit, the config's event_types."""
    known = plugins.event_types()
    for name in [*emitted_types(ruleset), *loaded.config.event_types]:
        known.setdefault(name, None)
    return known


def _call_problems(ruleset: RuleSet, loaded: LoadedConfig) -> list[str]:
    """What each action can tell from the config about its calls as written."""
    problems = []
    for rule in ruleset.rules:
        for call in rule.actions:
            if call.spec.check is not None:
                problems += [f"{rule.file}:{call.line}: rule {rule.name!r}: {problem}"
                             for problem in call.spec.check(call.raw or {}, loaded)]
    return problems


@cli.command()
@config_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Route and render, but run only side-effect-free actions (log, emit).",
)
@click.pass_context
def run(ctx: click.Context, config: Path | None, dry_run: bool) -> None:
    """Run the bus: connect the sources, route events through the rules, run actions."""
    if config is None:
        raise click.UsageError("give -c CONFIG")
    plugins = _plugins(ctx)
    loaded = _workspace(config, ())
    problems = [str(e) for e in loaded.path_problems()]
    problems += [str(e) for e in plugins.check_sources(loaded)] + plugins.check_config(loaded)
    if problems:  # an option's value quoted by its schema may be an expanded secret
        _fail([loaded.secret_book().redact(p) for p in problems])
        sys.exit(1)
    setup_logging(loaded.config.log_level, loaded.secrets, loaded.config.log_format)
    for warning in loaded.exposure_warnings():
        logging.getLogger("ccbus").warning("%s", warning)
    for failure in plugins.failures:
        logging.getLogger("ccbus").error(
            "plugin %s failed to load: %s", failure.name, failure.error
        )
    try:
        bus = Bus(loaded, plugins, dry_run=dry_run)
    except StateDirError as err:  # before any source connects
        _fail([str(err)])
        sys.exit(1)
    notifier = Notifier.from_environment()
    try:
        anyio.run(lambda: bus.run(handle_signals=True, notifier=notifier))
    except StateDirLocked as err:  # another ccbus runs there: before any source connects
        _fail([str(err)])
        sys.exit(1)


# ---------------------------------------------------------------------------


def _get_json(url: str) -> tuple[int, Any]:
    """GET a JSON document from a running instance (stdlib only: no client dependency)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - our own listener
            return int(answer.status), json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise click.ClickException(
            f"no ccbus answers at {url}: {reason} (is `ccbus run` running? give -c or --url)"
        ) from None


url_option = click.option(
    "--url", help="The running instance's listener, e.g. http://127.0.0.1:8787."
)


@cli.command()
@config_option
@url_option
def status(config: Path | None, url: str | None) -> None:
    """Show a running instance's sources, readiness, traffic and outbox."""
    _, doc = _get_json(_listener_url(config, url) + "/health")
    click.echo(f"status: {doc['status']}    rules: {doc['rules']}    "
               f"events in: {doc['events_in']:.0f}")
    if doc.get("reason"):
        click.echo(click.style("!! ", fg="red") + doc["reason"])
    actions = doc.get("actions", {})
    click.echo("actions: " + ", ".join(f"{k} {v:.0f}" for k, v in actions.items())
               + f"    outbox: {doc['outbox_depth']}    dead letters: {doc['dead_letters']}")
    for name, source in sorted(doc["sources"].items()):
        mark = click.style("ok ", fg="green") if source["ready"] else click.style("!! ", fg="red")
        line = (f"  {mark}{name} ({source['plugin']}): {source['state']}, "
                f"{source['reconnects']} reconnect(s)")
        if source["last_error"]:
            line += f"; last error: {source['last_error']}"
        click.echo(line)
    if doc["status"] not in ("ready", "degraded"):
        sys.exit(1)


@cli.command()
@click.argument("rule", required=False)
@config_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def traces(rule: str | None, config: Path | None, url: str | None, as_json: bool) -> None:
    """Show RULE's last runs in a running instance: event, condition, calls, outcomes.

    Without RULE, list the rules that have traces.
    """
    base = _listener_url(config, url)
    if rule is None:
        _, doc = _get_json(base + "/traces")
        click.echo("\n".join(doc["rules"]) or "no rules")
        return
    from urllib.parse import quote

    code, doc = _get_json(f"{base}/traces/{quote(rule, safe='')}")
    if code == 404:
        raise click.ClickException(doc.get("error", f"no rule named {rule!r}"))
    if as_json:
        click.echo(json.dumps(doc["runs"], indent=2))
        return
    runs = doc["runs"]
    if not runs:
        click.echo(f"{rule}: no runs yet (keeps the last {doc['limit']})")
        return
    click.echo(f"{rule}: last {len(runs)} run(s), oldest first")
    for run in runs:
        event = run["event"]
        when = time.strftime("%H:%M:%S", time.localtime(run["at"]))
        condition = {True: "true", False: "false", None: "(no condition)"}.get(
            run["condition"], run["condition"]
        )
        click.echo(f"{when}  {event['type']} id={event['id']} from {event['source']}")
        click.echo(f"    condition: {condition}    verdict: {run['verdict']}")
        for call in run["actions"]:
            params = json.dumps(call["params"], ensure_ascii=False) if call["params"] else ""
            outcome = call["outcome"] + (f" ({call['error']})" if call["error"] else "")
            click.echo(f"    -> {call['action']} {params}: {outcome}")


def _replay(
    ctx: click.Context,
    loaded: LoadedConfig,
    files: list[Path],
    *,
    speed: float,
    dry_run: bool,
    show_unmatched: bool,
    max_pause: float | None = None,
    live: list[DemoSource] | None = None,
    live_seconds: float = 0.0,
) -> ConsoleReporter:
    """Run a bus that replays ``files`` (and runs ``live`` sources); print matches."""
    plugins = _plugins(ctx)
    reporter = ConsoleReporter(quiet_unmatched=not show_unmatched, executed=not dry_run,
                               secrets=loaded.secret_book())

    async def main() -> Bus:
        sources: dict[str, Any] = {
            "replay": {
                "plugin": "replay",
                "options": {
                    "path": [str(f.resolve()) for f in files],
                    "speed": speed,
                    "max_pause": max_pause,
                },
            }
        }
        async with AsyncExitStack() as simulators:
            for demo_source in live or []:
                overrides = await simulators.enter_async_context(demo_source.simulator())
                sources[demo_source.name] = {
                    "plugin": demo_source.plugin,
                    "options": {**demo_source.options, **overrides},
                }
            loaded.config = loaded.config.model_copy(
                update={
                    "sources": Config.model_validate({"sources": sources}).sources,
                    "http": loaded.config.http.model_copy(update={"enabled": False}),
                }
            )
            bus = Bus(loaded, plugins, dry_run=dry_run, observer=reporter, persist_state=False)
            if not live:
                await bus.run(until_sources_finish=True, watch_rules=False)
                return bus
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: bus.run(watch_rules=False))
                await bus.started.wait()
                await bus.sources["replay"].finished.wait()
                await anyio.sleep(live_seconds)
                bus.stop()
        return bus

    try:
        bus = anyio.run(main)
    except* StateDirLocked as locked:  # a running ccbus owns that outbox: say so, no traceback
        raise click.ClickException(str(locked.exceptions[0])) from None
    runtime = bus.sources["replay"].source
    reporter.summary(
        {
            "bad lines": getattr(runtime, "bad_lines", 0),
            "duplicates dropped": bus.pipeline.duplicates,
            "actions": _action_outcomes(bus),
        }
    )
    return reporter


def _action_outcomes(bus: Bus) -> str:
    """``3 delivered, 1 failed``: how the calls shown above ended, not just that they rendered.

    ``failed`` are dead letters (see ``ccbus dead-letters``); calls still
    waiting for a retry when the replay ended are left in the outbox.
    """
    settled = {"ok": 0.0, "dead_letter": 0.0, "dry_run": 0.0}
    for name, labels, value in bus.counters.snapshot():
        if name == "actions" and labels.get("outcome") in settled:
            settled[labels["outcome"]] += value
    text = f"{settled['ok']:.0f} delivered, {settled['dead_letter']:.0f} failed"
    if settled["dry_run"]:
        text += f", {settled['dry_run']:.0f} shown but not run (dry run)"
    unfinished = bus.delivery_store.pending_count()
    if unfinished:
        text += f", {unfinished} unfinished (left in the outbox)"
    return text


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@config_option
@rules_option
@click.option(
    "--speed",
    default=0.0,
    show_default=True,
    help="Pace by the events' own times: 1 real time, 10 ten times faster, 0 no pauses.",
)
@click.option(
    "--max-pause",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --speed: wait at most this many seconds between two events.",
)
@click.option("--dry-run", is_flag=True, help="Run only side-effect-free actions (log, emit).")
@click.option("--all", "show_all", is_flag=True, help="Also list events no rule matched.")
@click.pass_context
def replay(
    ctx: click.Context,
    files: tuple[Path, ...],
    config: Path | None,
    rules: tuple[Path, ...],
    speed: float,
    max_pause: float | None,
    dry_run: bool,
    show_all: bool,
) -> None:
    """Replay JSON Lines event FILES through the rules (and their actions)."""
    setup_logging("warning")
    _replay(
        ctx,
        _workspace(config, rules),
        list(files),
        speed=speed,
        max_pause=max_pause,
        dry_run=dry_run,
        show_unmatched=show_all,
    )


@cli.command()
@click.option("--speed", default=0.0, show_default=True, help="Pace the replay (1 = real time).")
@click.option(
    "--live-seconds",
    default=6.0,
    show_default=True,
    help="How long plugins' live sources run against their simulators.",
)
@click.option("--all", "show_all", is_flag=True, help="Also list events no rule matched.")
@click.pass_context
def demo(ctx: click.Context, speed: float, live_seconds: float, show_all: bool) -> None:
    """Sample events of all five vendors, and plugins live against their simulators.

    Everything runs in this process on loopback; actions with side effects are
    shown, not run.
    """
    setup_logging("warning")
    logging.getLogger("ccbus.action.log").setLevel(logging.CRITICAL)  # the reporter shows calls
    events = sorted((PACKAGE_DIR / "demo" / "events").glob("*.jsonl"))
    live = _plugins(ctx).demo_sources()
    click.echo(
        click.style("ccbus demo", bold=True) + f": {len(events)} sample files "
        f"({', '.join(p.stem for p in events)}) through the rules in {shipped_rules_dir()}"
    )
    if live:
        click.echo(
            f"Live against simulators for {live_seconds:g}s: "
            + ", ".join(f"{d.name} ({d.plugin})" for d in live)
        )
    click.echo("Nothing leaves this machine: actions with side effects are shown, not run.\n")
    loaded = _workspace(None, (shipped_rules_dir(),))
    _replay(
        ctx,
        loaded,
        events,
        speed=speed,
        max_pause=DEMO_MAX_PAUSE,
        dry_run=True,
        show_unmatched=show_all,
        live=live,
        live_seconds=live_seconds,
    )


@cli.command(name="try")
@click.option(
    "--event",
    "event_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON event, or JSON Lines of events.",
)
@config_option
@rules_option
@click.pass_context
def try_(
    ctx: click.Context, event_file: Path, config: Path | None, rules: tuple[Path, ...]
) -> None:
    """Dry-run events through the rules: which rules match and what they would call.

    Events are taken in order on their own clock (their ``time``), so ``count``
    and ``throttle`` gates see the ones before them, and a ``for`` timer whose
    duration passes before the next event's time fires there; one still armed
    after the last event is listed with when it would fire.

    With ``-c``, rules see the config's ``secrets:`` (``secret("name")``) as
    they would in ``ccbus run``; a call shows each secret as the reference the
    outbox would record (``${secret:name}``), never its value.
    An event that cannot be read (not JSON, nested too deeply, not an event)
    is reported with its line and the exit status is 1, after the others ran.
    """
    plugins = _plugins(ctx)
    loaded = _workspace(config, rules)
    clock = ManualClock(0)
    compiler = make_compiler(plugins, clock, loaded.config.secrets)
    ruleset = load_rules(loaded.rule_paths, actions=plugins.actions, compiler=compiler)
    book = loaded.secret_book()
    redact = Redactor(book=book).text
    _fail([e.describe() for e in ruleset.errors])
    pipeline = Pipeline(Engine(ruleset.rules), observer=None)
    failures = len(ruleset.errors)
    for item in _events_in(event_file):
        if isinstance(item, BadLine):
            _fail([str(item)])
            failures += 1
            continue
        clock.current = item.time.timestamp()
        timers = pipeline.process_due(clock.current)
        for firing in timers.firings:
            click.echo(click.style(f"'for' timer of {firing.rule.name} fired", fg="green")
                       + f"  (its duration passed before {item.time.isoformat()})")
        failures += _show_calls(timers, redact, book)
        click.echo(
            click.style(item.type, fg="cyan", bold=True)
            + f"  id={item.id}"
            + (f" subject={item.subject}" if item.subject else "")
        )
        candidates = pipeline.engine.index.lookup(item.type)
        if not candidates:
            click.echo("  no rule listens to this type")
        for rule in candidates:
            verdict, failed = _condition(rule, item)
            click.echo(f"  {rule.name} ({rule.where}): {verdict}")
            failures += failed
        failures += _show_calls(pipeline.process(item, clock.current), redact, book)
    for deadline, rule_name, key in pipeline.engine.armed_timers():
        when = datetime.fromtimestamp(deadline, UTC).isoformat()
        click.echo(f"'for' timer of {rule_name} armed for {key!r}: would fire at {when} "
                   "unless a later event resets it")
    if failures:
        # so that `ccbus try` can gate CI: a rule that fails to evaluate or render fails it
        click.echo(f"{failures} failure(s): a rule did not load, evaluate or render, "
                   "or an event could not be read", err=True)
        sys.exit(1)


def _show_calls(outcome: Outcome, redact: Callable[[str], str], book: SecretBook) -> int:
    """The calls as the outbox would record them: secrets as references (``${secret:crm}``);
    returns how many failed to render."""
    for invocation in outcome.invocations:
        shown = redact(invocation.describe(book))
        click.echo(f"      would call {shown}  [rule {invocation.rule}]")
    for problem in outcome.render_errors:
        click.echo(click.style(f"      render error: {redact(str(problem))}", fg="red"))
    return len(outcome.render_errors)


def _events_in(path: Path) -> list[Any]:
    """The events of ``path``, a :class:`BadLine` for each that cannot be one.

    Decoded like the wire (:func:`decode_json`): a document nested too deeply is
    a bad line with a reason, not a ``RecursionError`` traceback.
    """
    text = path.read_text(encoding="utf-8")
    try:  # one pretty-printed JSON object is common for a single event
        doc = decode_json(text)
    except ValueError:  # JSON Lines, or not JSON: read line by line, each with its reason
        return list(read_events(path, source="try"))
    docs = doc if isinstance(doc, list) else [doc]
    from ccbus.events.envelope import Event

    out: list[Any] = []
    for index, item in enumerate(docs):
        try:
            out.append(Event.from_dict(item, default_source="try"))
        except ValueError as err:
            out.append(BadLine(path, index + 1, f"not an event: {err}"))
    return out


def _condition(rule: Any, event: Any) -> tuple[str, int]:
    """What the rule's condition says of ``event``, and 1 when it failed to evaluate (a
    missing field is "false", as in ``ccbus run``, not a failure)."""
    gate = ""
    if rule.gate is not None:
        kind = rule.gate.kind or "throttle"
        gate = f"; then its '{kind}' gate decides (state is per key, not shown here)"
    if rule.condition is None:
        return click.style("matches (no condition)" + gate, fg="green"), 0
    try:
        value = rule.condition.evaluate(event.data, EnvelopeView(event))
    except MissingField as err:
        return click.style(f"condition false: {err}", fg="yellow"), 0
    except EvaluationError as err:
        return click.style(f"condition failed: {err} (counts as false)", fg="red"), 1
    if value:
        return click.style("condition true" + gate, fg="green"), 0
    return click.style(f"condition false: if {rule.condition.source}", dim=True), 0


@cli.command(name="test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@config_option
@click.option("-v", "--verbose", is_flag=True, help="Show the calls of passing cases too.")
@click.pass_context
def test_rules(
    ctx: click.Context, paths: tuple[Path, ...], config: Path | None, verbose: bool
) -> None:
    """Run the test cases in rule files (offline: nothing is executed).

    PATHS default to ``rules``, or with ``-c`` to the config's ``rules:``.
    With ``-c``, rules see the config's ``secrets:`` (``secret("name")``) as in
    ``ccbus run``, and a case's ``secrets: {name: value}`` stands in for them;
    if the config's secrets cannot be read here (no ``$CREDENTIALS_DIRECTORY``
    in CI), cases must stand in the ones they use.  Secret values from the
    config are masked in what is shown.
    """
    plugins = _plugins(ctx)
    logging.getLogger("ccbus.rules").setLevel(logging.CRITICAL)  # failures are reported below
    secrets: dict[str, str] = {}
    rule_paths = list(paths) or [Path("rules")]
    if config is not None:
        loaded = _test_config(config)
        secrets = dict(loaded.config.secrets)
        rule_paths = list(paths) or loaded.rule_paths
    redact = Redactor({v for v in secrets.values() if v}).text
    clock = ManualClock(0)

    def compiler_for(stand_ins: Mapping[str, str]) -> ExpressionCompiler:
        return make_compiler(plugins, clock, {**secrets, **stand_ins})

    ruleset = load_rules(rule_paths, actions=plugins.actions, compiler=compiler_for({}))
    passed = failed = 0
    for rule_file in ruleset.files:
        for err in rule_file.errors:
            _fail([err.describe()])
            failed += 1
        for result in run_file_tests(
            rule_file, plugins.actions, clock, compiler_for=compiler_for
        ):
            label = f"{result.file}:{result.line} {result.name}"
            if result.passed:
                passed += 1
                click.echo(click.style("PASS ", fg="green") + label)
                if verbose:
                    for call in result.actual:
                        click.echo(f"      {redact(call)}")
            else:
                failed += 1
                click.echo(click.style("FAIL ", fg="red", bold=True) + label)
                for failure in result.failures:
                    click.echo(f"    {redact(failure)}")
    if passed + failed == 0:
        click.echo("no rule tests found (add 'tests:' to a rule file)", err=True)
        sys.exit(1)
    click.echo(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def _test_config(config: Path) -> LoadedConfig:
    """The config's ``rules:`` and ``secrets:`` for ``ccbus test``; its ``rules:`` alone
    (with a warning) when the secrets cannot be expanded on this machine."""
    try:
        return load_config(config, only=frozenset({"rules", "secrets"}))
    except ConfigErrors as err:
        if not any("secrets." in str(e) for e in err.errors):
            _fail([str(e) for e in err.errors])
            sys.exit(1)
        for problem in err.errors:
            click.echo(click.style("warning: ", fg="yellow") + str(problem), err=True)
        click.echo(
            click.style("warning: ", fg="yellow")
            + "the config's secrets are not available here: cases must stand in the ones "
            "their rules use ('secrets: {name: value}' in the case)",
            err=True,
        )
    except ConfigError as err:
        _fail([str(err)])
        sys.exit(1)
    return _workspace(config, (), only=frozenset({"rules"}))


@cli.command()
@click.option("--functions", is_flag=True, help="Also list expression functions.")
@click.pass_context
def plugins(ctx: click.Context, functions: bool) -> None:
    """List plugins: name, version and what each provides."""
    host = _plugins(ctx)
    for info in host.info():
        click.echo(click.style(info.name, bold=True) + f" {info.version}  ({info.module})")
        for label, things in (
            ("sources", info.sources),
            ("actions", info.actions),
            ("functions", info.functions),
            ("simulators", info.simulators),
            ("commands", [f"ccbus {name}" for name in info.commands]),
            ("demo sources", info.demo_sources),
            ("hooks", [h for h in info.hooks if not h.startswith("register_")]),
        ):
            if things:
                click.echo(f"    {label}: {', '.join(sorted(things))}")
    for failure in host.failures:
        click.echo(click.style(f"{failure.name}  FAILED TO LOAD: ", fg="red") + failure.error)
    for problem in host.problems:
        click.echo(click.style("problem: ", fg="yellow") + problem)
    if functions:
        from ccbus.rules.functions import build_library, describe

        library = dict(host.functions)
        library.update(build_library(ManualClock(0)))
        click.echo(click.style("\nexpression functions", bold=True))
        for name, line in describe(library).items():
            click.echo(f"    {name:12s} {line}")


@cli.command(name="new-plugin")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to create ccbus-NAME/.",
)
def new_plugin(name: str, directory: Path) -> None:
    """Create a working third-party plugin project ccbus-NAME from the template."""
    from ccbus.cli.scaffold import render_plugin

    try:
        target = render_plugin(name, directory)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    click.echo(
        f"Created {target}\n\nNext:\n  pip install -e {target}\n  ccbus plugins\n  pytest {target}"
    )


@cli.group()
def simulate() -> None:
    """Play a vendor's side of a protocol on this machine (from plugins)."""


def attach_plugins(host: PluginHost) -> None:
    """Add plugins' simulators (under ``simulate``) and commands to the CLI.

    A plugin whose hook fails is one of ``host.problems``; the CLI still starts.
    """
    for command in host.simulators():
        simulate.add_command(command)
    host.add_commands(cli, protected=CORE_COMMANDS)


def main() -> None:
    host = PluginHost()
    attach_plugins(host)
    cli(obj={"plugins": host})


# ---------------------------------------------------------------------------
# dead letters


def _delivery_store(config: Path | None, state_dir: Path | None) -> Any:
    from ccbus.delivery.store import SqliteDeliveryStore

    if config is None and state_dir is None:  # given to the group, before the subcommand
        config, state_dir = click.get_current_context().meta.get(
            "ccbus.dead_letters", (None, None))
    if state_dir is None:
        if config is None:
            raise click.UsageError("give -c CONFIG or --state-dir DIR")
        # state_dir alone: an admin's shell has no $CREDENTIALS_DIRECTORY for the rest
        state_dir = _workspace(config, (), only=frozenset({"state_dir"})).state_dir
    path = state_dir / "delivery.sqlite3"
    if not path.exists():
        raise click.ClickException(f"no delivery outbox at {path} (has ccbus run there yet?)")
    try:
        return SqliteDeliveryStore(path, probe=False)  # reads work on a full disk too
    except StateDirError as err:
        raise click.ClickException(str(err)) from None


state_dir_option = click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="The state directory (instead of reading it from -c).",
)


@cli.group(name="dead-letters")
@config_option
@state_dir_option
@click.pass_context
def dead_letters(ctx: click.Context, config: Path | None, state_dir: Path | None) -> None:
    """Calls that failed for good: list, show, retry or purge them.

    Works on the state directory's outbox whether ccbus is running or not;
    a running bus picks retried calls up within a second.  ``-c`` and
    ``--state-dir`` go before or after the subcommand:
    ``ccbus dead-letters -c FILE list`` is ``ccbus dead-letters list -c FILE``.
    """
    ctx.meta["ccbus.dead_letters"] = (config, state_dir)


@dead_letters.command(name="list")
@config_option
@state_dir_option
def dead_letters_list(config: Path | None, state_dir: Path | None) -> None:
    """One line per dead letter: id, when, rule, action, attempts, reason."""
    store = _delivery_store(config, state_dir)
    letters = store.dead_letters()
    mask = _legacy_mask(config)
    for letter in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.failed_at))
        _echo(mask(
            f"{letter.id:5d}  {when}  {letter.rule}  {letter.action}  "
            f"attempts={letter.attempts}  {letter.reason.splitlines()[0][:120]}"
        ))
    click.echo(f"{len(letters)} dead letter(s); {store.pending_count()} call(s) pending")


def _legacy_mask(config: Path | None) -> Callable[[str], str]:
    """Masks the config's secrets when the whole config loads (credentials at hand).

    Dead letters written by this version hold references, never values; this is for
    those an earlier version wrote.  Without the credentials (an admin's shell) the
    secret-looking parameter keys are still masked by :func:`_redacted`."""
    if config is None:
        return lambda text: text
    try:
        return load_config(config).secret_book().redact
    except (ConfigError, OSError):
        return lambda text: text


def _echo(text: str) -> None:
    """``click.echo``, with text that cannot be written as UTF-8 (a lone surrogate in
    what a peer once sent) escaped: no command may crash on what ccbus stored itself."""
    click.echo(text.encode("utf-8", "backslashreplace").decode("utf-8"))


_SECRET_KEY = re.compile(r"secret|token|password|passwd|authorization|api_?key", re.I)


def _redacted(value: Any) -> Any:
    """Parameters with secret-looking keys masked, for printing."""
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


@dead_letters.command(name="show")
@click.argument("ids", nargs=-1, type=int, required=True)
@config_option
@state_dir_option
def dead_letters_show(ids: tuple[int, ...], config: Path | None, state_dir: Path | None) -> None:
    """Everything about dead letters IDS: reason, parameters, the event."""
    store = _delivery_store(config, state_dir)
    letters = store.dead_letters(ids)
    if not letters:
        raise click.ClickException(f"no dead letter with id {', '.join(map(str, ids))}")
    mask = _legacy_mask(config)
    for letter in letters:
        _echo(mask(
            json.dumps(
                {
                    "id": letter.id,
                    "key": letter.key,
                    "rule": letter.rule,
                    "action": letter.action,
                    "action_index": letter.index,
                    "lane": letter.lane,
                    "attempts": letter.attempts,
                    "reason": letter.reason,
                    "params": _redacted(json.loads(letter.params)) if letter.params else None,
                    "event": json.loads(letter.event),
                },
                indent=2,
                ensure_ascii=False,
            )
        ))


@dead_letters.command(name="retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead letter.")
@config_option
@state_dir_option
def dead_letters_retry(
    ids: tuple[int, ...], retry_all: bool, config: Path | None, state_dir: Path | None
) -> None:
    """Put dead letters IDS (or --all) back in the outbox with fresh attempts."""
    if not ids and not retry_all:
        raise click.UsageError("give dead letter ids or --all")
    store = _delivery_store(config, state_dir)
    wanted = [d.id for d in store.dead_letters()] if retry_all else list(ids)
    moved = store.resurrect(wanted)
    for letter_id in sorted(set(wanted) - set(moved)):
        click.echo(
            f"dead letter {letter_id} not retried: no such id, or its parameters never "
            "rendered (fix the rule, then replay the event from `show`)",
            err=True,
        )
    click.echo(f"{len(moved)} call(s) back in the outbox")


@dead_letters.command(name="purge")
@click.argument("ids", nargs=-1, type=int)
@click.option("--older-than", help="Only those that failed longer ago than this (e.g. 7d).")
@click.option("--all", "purge_all", is_flag=True, help="Every dead letter.")
@config_option
@state_dir_option
def dead_letters_purge(
    ids: tuple[int, ...],
    older_than: str | None,
    purge_all: bool,
    config: Path | None,
    state_dir: Path | None,
) -> None:
    """Delete dead letters IDS, or --older-than AGE, or --all."""
    from ccbus.config.durations import parse_duration

    if not (ids or older_than or purge_all):
        raise click.UsageError("give dead letter ids, --older-than AGE or --all")
    store = _delivery_store(config, state_dir)
    if ids:
        removed = store.purge(ids=ids)
    else:
        cutoff = time.time() - parse_duration(older_than) if older_than else None
        removed = store.purge(older_than=cutoff)
    click.echo(f"{removed} dead letter(s) purged")


cli.add_command(tail)

#: ccbus's own top-level commands: a plugin's ``register_commands`` may not replace them.
cli.add_command(cluster)
CORE_COMMANDS = frozenset(cli.commands)

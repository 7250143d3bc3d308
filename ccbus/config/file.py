"""The one YAML config file: sources, notification targets, rules, state, HTTP.

::

    sources:
      cvp-prod:                      # instance name: the events' `source`
        plugin: cisco-cvp            # which source plugin
        options: {...}               # that plugin's options, checked by its schema
    targets:
      ops-slack: ${credential:slack-url}
    secrets:                         # for rules: secret("crm-hmac")
      crm-hmac: ${credential:crm-hmac}
    rules: [rules]                   # directories or files, relative to this file
    state_dir: /var/lib/ccbus
    http: {listen: "127.0.0.1:8787"}  # health, metrics, traces, live console, webhooks
                                     # (admin_token: the console's retry/purge need it)
    log_format: text                 # or json: one JSON object per line
    cluster: {backend: postgres, dsn: ..., group: site-a, instance: ${HOSTNAME}}
    traces: 20                       # runs each rule keeps for `ccbus traces` (0: off)

Strings may use ``${NAME}`` (environment), ``${NAME:-default}`` and
``${credential:NAME}`` (the file ``$CREDENTIALS_DIRECTORY/NAME`` that systemd's
``LoadCredential=`` provides).  Values that came from a credential are
remembered as secrets, by name (``credential:NAME``, ``env:NAME``, and
``secret:NAME`` for the ``secrets:`` entries), so that stored calls refer to
them instead of holding them and everything shown masks them (see
:mod:`ccbus.config.secrets`).  Every error names file, line and key, and
never quotes an expanded secret: a value pydantic would quote is masked.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ccbus.config.cluster import ClusterConfig
from ccbus.config.schema import Duration, Options, validate
from ccbus.config.secrets import SecretBook
from ccbus.config.yamlfile import LineDict, LineList, load_yaml, location
from ccbus.delivery.policy import DeliveryConfig
from ccbus.errors import ConfigError

__all__ = ["Config", "LoadedConfig", "load_config"]

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
#: Expanded values at least this long are treated as secrets and redacted from logs.
MIN_SECRET_LENGTH = 8


class SourceConfig(Options):
    plugin: str
    options: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class HttpConfig(Options):
    listen: str = "127.0.0.1:8787"
    enabled: bool = True
    #: A client that sends nothing (or a request body too slowly) for this long is cut off.
    client_timeout: Duration = 10.0
    #: The live console's retry and purge need it in ``X-Ccbus-Token`` when set, and
    #: are refused without it off loopback (``${credential:NAME}`` keeps it out of the file).
    admin_token: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("'listen' is host:port, e.g. 127.0.0.1:8787")
        if int(port) > 65535:
            raise ValueError(f"port {port} is out of range (0-65535)")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class Config(Options):
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    targets: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)
    rules: list[str] = Field(default_factory=lambda: ["rules"])
    state_dir: str = "state"
    http: HttpConfig = Field(default_factory=HttpConfig)
    dedup_window: Duration = 600.0
    #: What one event's rules, templates and emitted events may cost in all, in time
    #: (see :mod:`ccbus.rules.budget`): past it a rule counts as not matching.
    event_budget: Duration = Field(default=0.05, gt=0, le=10)
    max_keys_per_rule: int = Field(default=100_000, gt=0)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    #: How many recent runs each rule keeps for ``ccbus traces`` and the live view.
    traces: int = Field(default=20, ge=0, le=10_000)
    #: Event types your sources produce that no plugin declares (what a CRM posts to
    #: the ``webhook`` source, a third-party source's dynamic types); globs allowed.
    #: ``ccbus check`` refuses a rule whose ``on:`` matches no known type.
    event_types: list[str] = Field(default_factory=list)
    #: Member of an active/standby group on PostgreSQL (docs/operations.md, "Running a group").
    cluster: ClusterConfig | None = None

    @field_validator("rules", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _rules_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


@dataclass(slots=True)
class LoadedConfig:
    """A validated config with what it takes to report on it and resolve its paths."""

    config: Config
    path: Path | None
    root: Any = None
    secrets: set[str] = field(default_factory=set)
    #: The same values by reference name: ``secret:NAME``, ``credential:NAME``, ``env:NAME``.
    named_secrets: dict[str, str] = field(default_factory=dict)

    def secret_book(self) -> SecretBook:
        """The secrets as a :class:`SecretBook`: references for the outbox, masks for output."""
        return SecretBook(self.named_secrets, self.secrets)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    @property
    def rule_paths(self) -> list[Path]:
        return [self.resolve(p) for p in self.config.rules]

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.config.state_dir)

    def where(self, *keys: Any) -> str:
        return location(self.path or "<config>", self.root, keys)

    def path_problems(self) -> list[ConfigError]:
        """What is wrong with the paths the config names, found without creating
        anything (``ccbus check`` and ``ccbus run`` before anything starts)."""
        state = self.state_dir
        if state.exists() and not state.is_dir():
            return [ConfigError(f"state_dir: {state} is a file, not a directory",
                                self.where("state_dir"))]
        return []

    def exposure_warnings(self) -> list[str]:
        """Settings that are valid but expose more than the defaults do: the listener
        bound beyond loopback serves metrics, traces, the live view and health to
        anyone who can reach it, without asking for credentials."""
        http = self.config.http
        if not http.enabled or _is_loopback(http.host):
            return []
        return [f"{self.where('http', 'listen')}: http.listen {http.listen} binds beyond "
                "loopback: /metrics, /health, /traces and /live (event data) are served "
                "without credentials to anyone who can reach this port; bind 127.0.0.1 "
                "and put an authenticating proxy in front to expose them"]


def _is_loopback(host: str) -> bool:
    """``localhost`` and loopback addresses; anything else (``0.0.0.0``, ``::``, a
    hostname, an interface's address) may be reachable from elsewhere."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(
    path: Path, *, environ: dict[str, str] | None = None, only: Collection[str] | None = None
) -> LoadedConfig:
    """Read, expand and validate a config file.

    ``only`` keeps just those top-level keys (the others take their defaults):
    an admin command that needs one setting, such as ``ccbus dead-letters``
    needing ``state_dir``, then neither expands nor checks the rest, so it
    works in a shell without the service's ``$CREDENTIALS_DIRECTORY``.

    Raises :class:`ConfigErrors` listing every problem found, not just the first.
    A file too costly to read (see :mod:`ccbus.config.yamlfile`) is one such
    problem, and so, as a last line, is Python running out of recursion or
    memory anywhere in here: SIGHUP reads this file in the running service.
    """
    try:
        return _load_config(path, environ, only)
    except (RecursionError, MemoryError) as err:
        raise ConfigErrors(
            [ConfigError(f"refused: too costly to load ({type(err).__name__})", str(path))]
        ) from None


def _load_config(
    path: Path, environ: dict[str, str] | None, only: Collection[str] | None
) -> LoadedConfig:
    environ = dict(os.environ) if environ is None else environ
    root = load_yaml(path)
    if root is None:
        root = LineDict()
    if not isinstance(root, LineDict):
        raise ConfigErrors([ConfigError("the config must be a YAML mapping", location(path, root))])
    if only is not None:
        for key in set(root) - set(only):
            del root[key]
    named: dict[str, str] = {}
    problems: list[ConfigError] = []
    _expand(root, (), path, root, environ, named, problems)
    if problems:
        raise ConfigErrors(problems)
    secrets = set(named.values())
    config, problems = validate(Config, root, file=path, root=root)
    if config is None:
        # pydantic quotes the input of some errors: an expanded secret must not show
        book = SecretBook(named)
        raise ConfigErrors([_masked(problem, book) for problem in problems])
    for name, value in config.secrets.items():
        if value:  # always redacted, however short
            named[f"secret:{name}"] = value
            secrets.add(value)
    return LoadedConfig(
        config=config, path=path, root=root, secrets=secrets, named_secrets=named
    )


def _masked(problem: ConfigError, book: SecretBook) -> ConfigError:
    """``problem`` with any expanded secret in its message masked."""
    shown = book.redact(problem.message)
    if shown == problem.message:
        return problem
    return ConfigError(shown, problem.location)


class ConfigErrors(ConfigError):
    """Several config problems at once (each is a located :class:`ConfigError`)."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def _expand(
    node: Any,
    keys: tuple[Any, ...],
    path: Path,
    root: Any,
    environ: dict[str, str],
    secrets: dict[str, str],
    problems: list[ConfigError],
) -> None:
    """Replace ``${...}`` in every string of the tree, in place, keeping line information."""
    items: Any = (
        node.items()
        if isinstance(node, LineDict)
        else (enumerate(node) if isinstance(node, LineList) else ())
    )
    for key, value in list(items):
        if isinstance(value, str) and "${" in value:
            try:
                node[key] = _VARIABLE.sub(lambda m: _lookup(m.group(1), environ, secrets), value)
            except LookupError as err:
                dotted = ".".join(str(k) for k in keys + (key,))
                problems.append(
                    ConfigError(f"{dotted}: {err.args[0]}", location(path, root, keys + (key,)))
                )
        elif isinstance(value, LineDict | LineList):
            _expand(value, keys + (key,), path, root, environ, secrets, problems)


def _lookup(expression: str, environ: dict[str, str], secrets: dict[str, str]) -> str:
    if expression.startswith("credential:"):
        name = expression.split(":", 1)[1]
        directory = environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise LookupError(
                f"${{credential:{name}}} needs $CREDENTIALS_DIRECTORY "
                "(set by systemd's LoadCredential=)"
            )
        if "/" in name or name.startswith("."):
            raise LookupError(f"credential name {name!r} must be a plain file name")
        try:
            value = (Path(directory) / name).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise LookupError(f"cannot read credential {name!r}: {err.strerror}") from None
        secrets[f"credential:{name}"] = value
        return value
    name, sep, default = expression.partition(":-")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise LookupError(
            f"${{{expression}}} is not ${{NAME}}, ${{NAME:-default}} or ${{credential:NAME}}"
        )
    if name in environ:
        value = environ[name]
        if len(value) >= MIN_SECRET_LENGTH:  # tokens, passwords, URLs with keys
            secrets[f"env:{name}"] = value
        return value
    if sep:
        return default
    raise LookupError(
        f"environment variable {name} is not set (use ${{{name}:-default}} for an optional one)"
    )

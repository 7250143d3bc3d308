"""Where a running ccbus listens, for the commands that talk to it (status, traces, tail).

Read from the config's ``http.listen`` alone, unexpanded: an admin's shell
has no ``$CREDENTIALS_DIRECTORY`` for the rest of the file.
"""

from __future__ import annotations

from pathlib import Path

import click

from ccbus.config.yamlfile import load_yaml
from ccbus.errors import ConfigError

__all__ = ["listener_url"]


def listener_url(config: Path | None, url: str | None) -> str:
    """Where a running instance listens: ``--url``, else the config's ``http.listen``."""
    if url:
        return url.rstrip("/")
    listen = "127.0.0.1:8787"
    if config is not None:
        # only http.listen, unexpanded: an admin's shell has no $CREDENTIALS_DIRECTORY
        try:
            root = load_yaml(config)
        except ConfigError as err:
            raise click.ClickException(str(err)) from None
        http = root.get("http") if isinstance(root, dict) else None
        value = http.get("listen") if isinstance(http, dict) else None
        if isinstance(value, str) and "${" in value:
            raise click.UsageError(f"{config}: http.listen uses a variable; give --url")
        if isinstance(value, str):
            listen = value
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

"""``ccbus tail``: the live feed in the terminal, for the admin who wants to see what a
vendor really sends.

It reads the running bus's ``/live/stream`` (the Server-Sent Events the live
console reads) over HTTP, so it shows what the bus received, after decoding,
without touching the bus's configuration or state: one line per event
(time, source, type, subject, data abridged to the terminal), or with
``--json`` each event's whole envelope as one JSON line, for ``jq``.
Like ``tail -f``: the last few events first, then follows; when the bus
restarts it reconnects by itself.  What the listener serves is redacted,
so neither form shows a configured secret.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import click

from ccbus.cli.remote import listener_url

__all__ = ["tail"]

#: No byte for this long (the listener sends a heartbeat every 15 s): reconnect.
READ_TIMEOUT = 60.0
#: Pause before reconnecting to a bus that went away.
RECONNECT_DELAY = 2.0


def sse_records(lines: Iterator[bytes]) -> Iterator[tuple[str, Any]]:
    """``(kind, payload)`` for each Server-Sent Event in ``lines`` (comments skipped)."""
    kind, data = "message", list[str]()
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)


def event_line(record: dict[str, Any], width: int) -> str:
    """One terminal line: local time, source, type, subject, data abridged to ``width``."""
    stamp = str(record.get("time", ""))
    try:
        when = datetime.fromisoformat(stamp).astimezone()
        stamp = when.strftime("%H:%M:%S.") + f"{when.microsecond // 1000:03d}"
    except ValueError:
        pass
    head = (f"{stamp}  {record.get('source', '')}  {record.get('type', '')}  "
            f"{record.get('subject') or '-'}  ")
    data = record.get("envelope", {}).get("data", record.get("data"))
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False,
                                                         separators=(",", ":"), default=str)
    room = max(20, width - len(head))
    return head + (text if len(text) <= room else text[: room - 1] + "…")


def _matches(record: dict[str, Any], type_glob: str | None, source: str | None) -> bool:
    return ((type_glob is None or fnmatchcase(str(record.get("type", "")), type_glob))
            and (source is None or fnmatchcase(str(record.get("source", "")), source)))


@click.command()
@click.option("-c", "--config", type=click.Path(path_type=Path, dir_okay=False),
              help="The ccbus config file: its http.listen says where the bus listens.")
@click.option("--url", help="The running instance's listener, e.g. http://127.0.0.1:8787.")
@click.option("--type", "type_glob", metavar="GLOB", help="Only event types matching GLOB.")
@click.option("--source", metavar="NAME", help="Only events from source NAME (a glob).")
@click.option("--json", "as_json", is_flag=True,
              help="Each event's whole envelope as one JSON line (for jq).")
@click.option("-n", "--lines", default=10, show_default=True,
              help="Recent events to show first (the bus keeps the last hundred or so).")
def tail(config: Path | None, url: str | None, type_glob: str | None, source: str | None,
         as_json: bool, lines: int) -> None:
    """Follow the events a running bus receives, one line each (Ctrl-C stops)."""
    stream = listener_url(config, url) + "/live/stream"
    width = shutil.get_terminal_size((160, 24)).columns
    recent = lines
    while True:
        try:
            with urllib.request.urlopen(stream, timeout=READ_TIMEOUT) as answer:  # noqa: S310 - our own listener
                backlog: list[dict[str, Any]] = []
                following = False
                for kind, record in sse_records(answer):
                    if kind == "live":  # the backlog is over: its last few, then follow
                        for old in backlog[-recent:] if recent > 0 else []:
                            _show(old, as_json, width)
                        backlog, following, recent = [], True, 0  # a reconnect: new only
                    elif kind == "event" and _matches(record, type_glob, source):
                        if following:
                            _show(record, as_json, width)
                        else:
                            backlog.append(record)
        except KeyboardInterrupt:
            return
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            click.echo(f"ccbus tail: {stream}: {reason}; retrying", err=True)
        else:
            click.echo(f"ccbus tail: {stream} closed (ccbus stopping?); retrying", err=True)
        try:
            time.sleep(RECONNECT_DELAY)
        except KeyboardInterrupt:
            return


def _show(record: dict[str, Any], as_json: bool, width: int) -> None:
    if as_json:
        text = json.dumps(record.get("envelope", record), ensure_ascii=False, default=str)
    else:
        text = event_line(record, width)
    click.echo(text.encode("utf-8", "backslashreplace").decode("utf-8"))
    sys.stdout.flush()

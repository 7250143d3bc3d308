"""``ccbus cluster status -c CONFIG``: the group, its leader, epoch, lease and members."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ccbus.config.file import load_config

__all__ = ["cluster"]


@click.group()
def cluster() -> None:
    """Inspect the active/standby group this config belongs to (``cluster:``)."""


@cluster.command()
@click.option("-c", "--config", "config", type=click.Path(path_type=Path, exists=True),
              required=True, help="The config file (its cluster: section).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(config: Path, as_json: bool) -> None:
    """Print the group, its leader, epoch and lease expiry, and every member seen recently.

    Reads the database only (the lease and member rows): it works from any
    host that can reach it, whether this instance runs or not.
    """
    loaded = load_config(config, only={"cluster"})
    settings = loaded.config.cluster
    if settings is None:
        raise click.ClickException(f"{config} has no cluster: section (not a group member)")
    from ccbus.runtime.group import group_status  # psycopg: only for groups

    try:
        doc = group_status(settings)
    except Exception as err:  # noqa: BLE001 - psycopg or socket errors, said plainly
        raise click.ClickException(
            f"cannot reach the group's database {settings.shown_dsn}: {err}") from None
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    leader = doc["leader"] or "nobody (lease expired)"
    click.echo(f"group {doc['group']}: leader {leader}, epoch {doc['epoch']}, "
               f"lease expires {doc['lease_expires'] or '-'} "
               f"(in {doc['lease_remaining']:.1f}s)")
    for member in doc["members"]:
        differs = "  (config or rules differ)" if member["differs"] else ""
        click.echo(f"  {member['instance']:<24} {member['role']:<8} epoch {member['epoch']:<6} "
                   f"seen {member['seen_ago']:.1f}s ago  config {member['digest'] or '-'}"
                   f"{differs}")

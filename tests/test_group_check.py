"""``ccbus check`` on a group config: the database is reached, CVP subscribes as one client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import postgres

pg_dsn = postgres.pg_dsn  # the fixture: a private database per test


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "ccbus.yaml").write_text(text)
    return subprocess.run([sys.executable, "-m", "ccbus", "check", "-c",
                           str(tmp_path / "ccbus.yaml")], capture_output=True, text=True,
                          timeout=120)


def test_a_reachable_database_passes(tmp_path: Path, pg_dsn: str) -> None:
    done = check(tmp_path, f"cluster:\n  dsn: {pg_dsn}\n  group: site-a\n  instance: a\n")
    assert done.returncode == 0, done.stderr


def test_an_unreachable_database_is_named_without_its_password(tmp_path: Path) -> None:
    done = check(tmp_path, "sources: {}\ncluster:\n  dsn: postgresql://ccbus:s3cret@127.0.0.1:1/x\n"
                           "  group: site-a\n  instance: a\n")
    assert done.returncode == 1
    assert "ccbus.yaml:3" in done.stderr
    assert "cannot reach the group's database postgresql://ccbus:***@127.0.0.1:1/x" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout


def test_a_cvp_source_needs_one_fixed_client_id_in_a_group(tmp_path: Path, pg_dsn: str) -> None:
    done = check(tmp_path, f"""\
cluster:
  dsn: {pg_dsn}
  group: site-a
  instance: host-1
sources:
  cvp:
    plugin: cisco-cvp
    options:
      broker:
        url: stomp://127.0.0.1:61613
        client_id: ccbus-host-1
""")
    assert done.returncode == 1
    assert "ccbus.yaml:11" in done.stderr, done.stderr
    assert "contains this instance's name 'host-1'" in done.stderr
    assert "the same on every instance of group site-a (e.g. ccbus-site-a-cvp)" in done.stderr


def test_renewal_must_fit_the_lease_several_times(tmp_path: Path) -> None:
    done = check(tmp_path, "cluster:\n  dsn: postgresql://x/y\n  group: g\n  instance: a\n"
                           "  lease_ttl: 6s\n  renew_every: 3s\n")
    assert done.returncode == 1
    assert "renew_every (3s) must be at most a third of lease_ttl (6s)" in done.stderr


def test_cluster_status_shows_leader_epoch_and_members_that_differ(tmp_path: Path,
                                                                   pg_dsn: str) -> None:
    from ccbus.config.cluster import ClusterConfig
    from ccbus.runtime.group import GroupMember

    def config(name: str) -> ClusterConfig:
        return ClusterConfig(dsn=pg_dsn, group="site-a", instance=name)

    GroupMember(config("host-1"), digest="aaaa").round(0)
    GroupMember(config("host-2"), digest="bbbb").round(0)
    (tmp_path / "ccbus.yaml").write_text(
        f"cluster:\n  dsn: {pg_dsn}\n  group: site-a\n  instance: host-3\n")
    done = subprocess.run([sys.executable, "-m", "ccbus", "cluster", "status", "-c",
                           str(tmp_path / "ccbus.yaml")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("group site-a: leader host-1, epoch 1, lease expires 20")
    assert lines[1].split()[:4] == ["host-1", "leader", "epoch", "1"]
    assert lines[2].split()[:2] == ["host-2", "standby"]
    assert all("(config or rules differ)" in line for line in lines[1:])

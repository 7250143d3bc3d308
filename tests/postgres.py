"""A private PostgreSQL database per test, on the server the machine runs (never a mock).

``CCBUS_TEST_PG`` names the server (default ``postgresql://postgres@127.0.0.1:5432``);
``scripts/install-prereqs.sh`` installs and starts one where it is missing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

SERVER = os.environ.get("CCBUS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """The DSN of a fresh database, dropped (with its sessions) after the test."""
    name = f"ccbus_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        yield f"{SERVER}/{name}"
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


class PrivateServer:
    """A PostgreSQL server of our own (initdb in a temporary directory), to stop and start.

    Tests that take the database away from a group cannot do that to the shared
    server.  Debian's binaries (``/usr/lib/postgresql/<version>/bin``); as root,
    the server runs as user ``postgres`` (initdb refuses root).
    """

    def __init__(self, port: int) -> None:
        import glob
        import shutil
        import tempfile

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        initdb = found[-1] if found else shutil.which("initdb")
        if initdb is None:
            raise RuntimeError("no initdb: install Debian's postgresql (scripts/install-prereqs.sh)")
        self.bin = os.path.dirname(initdb)
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="ccbus-pg-")
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", self.dir, "-A", "trust", "-U", "postgres", "--no-sync")
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        import subprocess

        command = [os.path.join(self.bin, tool), *args]
        if os.getuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.dir, "-w", "-l", os.path.join(self.dir, "log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c wal_writer_delay=10s",  # an unflushed commit stays unflushed: lost on a crash
                  "start")

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", self.dir, "-w", "-m", mode, "stop")

    def remove(self) -> None:
        import shutil

        try:
            self.stop("immediate")
        except Exception:  # noqa: BLE001 - already stopped
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

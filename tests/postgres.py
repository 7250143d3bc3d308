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

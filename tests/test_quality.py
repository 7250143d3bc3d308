"""Lint and types are part of the suite, so `make test` keeps them true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import REPO

BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=False)


def test_ruff_is_clean() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean_on_the_core_and_every_plugin() -> None:
    result = run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_api_is_complete() -> None:
    import ccbus

    exported = set(ccbus.__all__)
    for name in ("Event", "Options", "Duration", "ActionSpec", "SourceSpec", "ActionContext",
                 "SourceContext", "hookimpl", "RetryableActionError", "PermanentActionError"):
        assert name in exported and hasattr(ccbus, name)

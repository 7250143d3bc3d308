"""Fixtures of the ccbus-enreach tests; the helpers live in ``enreach_testkit``.

This directory goes on ``sys.path`` so the test modules can import
``enreach_testkit`` by name in both of pytest's import modes (the
repository-wide run uses importlib mode, which adds nothing to the path).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from enreach_testkit import anyio_backend, bus_with  # noqa: E402

__all__ = ["anyio_backend", "bus_with"]

"""Fixtures of the ccbus-genesys tests; the helpers live in ``genesys_testkit``.

This directory goes on ``sys.path`` so the test modules can import
``genesys_testkit`` by name in both of pytest's import modes (the
repository-wide run uses importlib mode, which adds nothing to the path).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from genesys_testkit import anyio_backend, kafka, real_broker, test_broker  # noqa: E402

__all__ = ["anyio_backend", "kafka", "real_broker", "test_broker"]

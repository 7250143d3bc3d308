"""The installed ccbus version (``ccbus --version``, the webhook User-Agent, scaffolds)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("ccbus")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

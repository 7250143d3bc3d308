"""Did-you-mean: the nearest known name to a misspelt one, for every "unknown ..." message.

One helper for the core and for plugins (it is public as :func:`ccbus.did_you_mean`),
so that an unknown action, parameter, config key, target or event name is
answered the same way everywhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean", "unknown_message"]


def did_you_mean(name: str, known: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The known name closest to ``name``, or None when none is close enough."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return close[0] if close else None


def unknown_message(kind: str, name: str, known: Iterable[str]) -> str:
    """``unknown action 'notfy' (did you mean 'notify'?)``, or the known names."""
    names = sorted(known)
    close = did_you_mean(name, names)
    hint = f"did you mean {close!r}?" if close else f"known: {', '.join(names) or 'none'}"
    return f"unknown {kind} {name!r} ({hint})"

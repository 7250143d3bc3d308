"""The ``cluster:`` section: run this instance as a member of an active/standby group.

::

    cluster:
      backend: postgres
      dsn: "postgresql://ccbus@pg1,pg2/ccbus?target_session_attrs=read-write"
      group: site-a          # the same on every instance of the group
      instance: "${HOSTNAME}"
      lease_ttl: 15s
      renew_every: 3s

Without the section ccbus is one process on SQLite, exactly as before.  The
checks here are the ones that make a group unsafe when wrong: a lease that the
leader cannot renew several times within its TTL would pass to another
instance at the first slow round trip.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import field_validator, model_validator

from ccbus.config.schema import Duration, Options

__all__ = ["ClusterConfig", "redact_dsn"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")


class ClusterConfig(Options):
    backend: Literal["postgres"] = "postgres"
    #: A libpq connection string or URI (several hosts and ``target_session_attrs`` work).
    dsn: str
    group: str
    instance: str
    lease_ttl: Duration = 15.0
    renew_every: Duration = 3.0

    @field_validator("group", "instance")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                "must be 1-100 letters, digits, '_', '.', ':' or '-' (e.g. site-a, ${HOSTNAME})"
            )
        return value

    @model_validator(mode="after")
    def _timing(self) -> ClusterConfig:
        if self.lease_ttl < 2.0:
            raise ValueError("lease_ttl must be at least 2s")
        if self.renew_every * 3 > self.lease_ttl:
            raise ValueError(
                f"renew_every ({self.renew_every:g}s) must be at most a third of lease_ttl "
                f"({self.lease_ttl:g}s), so that a slow renewal or two does not cost the lease"
            )
        return self

    @property
    def shown_dsn(self) -> str:
        """The DSN as logs and messages show it: never its password."""
        return redact_dsn(self.dsn)


def redact_dsn(dsn: str) -> str:
    """``dsn`` without a password, whether it is a URI or ``key=value`` words."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hosts = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hosts}" if ":" in userinfo else f"{user}@{hosts}"
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return re.sub(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)



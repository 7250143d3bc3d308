"""Per partition, on disk: up to which offset this source's records are recorded in the outbox.

Kafka's committed offset trails what the source has recorded by up to one
poll: the source commits after a poll, not after every record (a broker round
trip per record would cost more than the record).  After a ``kill -9`` the
records between the committed offset and the last recorded one are read
again, and their calls, long delivered and forgotten by the outbox, would be
recorded and made a second time.  So after each record the source notes here
"recorded up to offset R" (``note``), and after each commit "committed C"
(``committed``); when a partition is read again, the records in ``[C, R)``
are recognised as already recorded and their events are not emitted again.

Each partition has a 16-byte file ``<topic>.<partition>`` in a directory per
consumer group: two little-endian int64, the last commit ``C`` and the
recorded mark ``R``.  An 8-byte ``pwrite`` into the page cache survives the
process being killed and costs one system call per record; no fsync, which
is as durable as the outbox itself with ``delivery.synchronous: normal``.

A mark is used only when the partition is read again from where this source
left it: the first offset read for the partition after an assignment must
lie in ``[C, R]``.  A group reset to an earlier offset (to replay on
purpose), a new group, or a mark left from before a topic was recreated
starts below ``C`` or above ``R``, and then the mark is dropped and nothing is
skipped.  A stale mark can only cause repeats, never a skipped record that
was not recorded.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

__all__ = ["RecordedOffsets"]

_MARK = struct.Struct("<qq")  # committed C, recorded R
_INT64 = struct.Struct("<q")
_RECORDED_AT = _INT64.size


class Partition(Protocol):
    """An aiokafka ``Partition`` (hashable, as every named tuple)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...


class _Mark:
    """One partition's file, and what it says."""

    __slots__ = ("committed", "fd", "recorded")

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        raw = os.pread(self.fd, _MARK.size, 0)
        marks: tuple[int, int] = _MARK.unpack(raw) if len(raw) == _MARK.size else (-1, -1)
        self.committed, self.recorded = marks

    def reset(self, offset: int) -> None:
        """Start afresh at ``offset``: nothing before it is known to be recorded here."""
        self.committed = self.recorded = offset
        os.pwrite(self.fd, _MARK.pack(offset, offset), 0)


class RecordedOffsets:
    """The marks of one source's partitions (one consumer group); see the module docstring."""

    def __init__(self, directory: Path, group_id: str) -> None:
        self.directory = directory / quote(group_id, safe="")
        #: partitions read since their assignment: their mark, checked against the first offset
        self._marks: dict[Partition, _Mark] = {}

    def covers(self, tp: Partition, offset: int) -> bool:
        """True when the record at ``offset`` was recorded before: do not emit it again.

        The first call for a partition after its assignment decides whether the
        mark on disk applies (see the module docstring).
        """
        mark = self._marks.get(tp)
        if mark is None:
            mark = self._open(tp, offset)
        return offset < mark.recorded

    def note(self, tp: Partition, next_offset: int) -> None:
        """The record before ``next_offset`` is recorded (its ``emit`` calls returned)."""
        mark = self._marks.get(tp)
        if mark is not None and next_offset > mark.recorded:
            mark.recorded = next_offset
            os.pwrite(mark.fd, _INT64.pack(next_offset), _RECORDED_AT)

    def committed(self, tp: Partition, offset: int) -> None:
        """The group accepted ``offset`` as the partition's next offset to read."""
        mark = self._marks.get(tp)
        if mark is not None and offset > mark.committed:
            mark.committed = offset
            os.pwrite(mark.fd, _INT64.pack(offset), 0)

    def release(self, partitions: set[Partition]) -> None:
        """Partitions given up (revoked, or the consumer stopped): check again when read next."""
        for tp in partitions & self._marks.keys():
            os.close(self._marks.pop(tp).fd)

    def close(self) -> None:
        self.release(set(self._marks))

    def _open(self, tp: Partition, first: int) -> _Mark:
        self.directory.mkdir(parents=True, exist_ok=True)
        mark = _Mark(self.directory / f"{tp.topic}.{tp.partition}")
        if not mark.committed <= first <= mark.recorded:
            mark.reset(first)  # not where this source left it: use nothing
        self._marks[tp] = mark
        return mark

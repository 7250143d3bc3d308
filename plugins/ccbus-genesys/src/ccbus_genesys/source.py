"""The ``genesys`` source: a Kafka consumer group on the agent-state and call-thread topics.

At-least-once, as the core promises: an offset is committed only for
records whose events have been handed to ``ctx.emit`` *and* for which
``emit`` returned, i.e. whose actions are recorded in the outbox.  So::

    getmany()  ->  for each record: ctx.convert(decode, map), then
                                    await emit(...) for each event,
                                    done[tp] = offset + 1
               ->  commit(done)      (after every poll)

A kill at any point loses nothing: what was not committed is read again by
whoever owns the partition next.  What was recorded is not recorded twice:
after each record the source notes on disk, per partition, the offset up to
which it is recorded (:mod:`.recorded`), and a record read again below that
mark is mapped (so the call-thread memory stays as it was) but its events
are not emitted again.  The bus's in-memory duplicate window is empty after
a restart, and the outbox forgets delivered calls, so neither could drop
them.  What remains after a kill is the core's: calls the outbox still held
(running, or delivered and not yet forgotten) run again, with the same
idempotency key.

Rebalances: aiokafka calls the listener from its coordinator task while
this loop may be in the middle of a record.  ``on_partitions_revoked``
stops the loop from starting another record of the old assignment, waits
for the record in flight to be recorded, and commits exactly what is done
(the group accepts commits while it prepares the rebalance).  Records of the
old poll that were not processed are dropped and read again from the
committed offset.  Nothing is committed twice, and nothing past what was
recorded is ever committed.

Bad records never stop a partition: each record is decoded and mapped inside
``ctx.convert`` (:mod:`ccbus.sources.refused`), so an undecodable value, a
payload that is not a JSON object, one without an event name, or anything
else that raises while decoding or mapping it, is refused: counted in
``ccbus_source_bad_input_total{source,reason}``, logged with
topic/partition/offset, written to the dead-letter file and committed past.
A refused record counts as dealt with: its offset is marked like a recorded
one, so read again after a kill it is not dead-lettered a second time.
``emit`` stays outside ``convert``: a failure to record events is the bus's
and is never committed past.  aiokafka's own deserializers are not used at
all, because an exception in one re-raises forever for the same record
(aiokafka #744).

The connection itself is aiokafka's: it reconnects to brokers on its own.
A failure of the whole consumer (cannot bootstrap, authentication refused)
ends the attempt; the source waits with :class:`ccbus.sources.backoff.Backoff` and
starts a new consumer, forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import anyio
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.helpers import create_ssl_context

from ccbus import Backoff, RefusedInput, SourceContext, decode_json

from .mapping import Key, Mapped, Mapper, NativeRecord, parse_key, valid_event_name
from .options import GenesysOptions
from .recorded import RecordedOffsets

__all__ = ["GenesysSource"]

LOG_FIRST = 10
LOG_EVERY = 1000
#: How long stopping may spend committing and leaving the group.
STOP_TIMEOUT = 10.0
POLL_TIMEOUT_MS = 1000

RETRYABLE = (KafkaError, OSError, ssl.SSLError, TimeoutError)
#: Said when the consumer starts: an admin trying a test topic learns why nothing old arrives.
_START = {
    "latest": "its end: records already there are not read (auto_offset_reset: latest)",
    "earliest": "its oldest retained record (auto_offset_reset: earliest)",
}


class GenesysSource:
    """One ``genesys`` source instance (see the module docstring for the guarantees)."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.options: GenesysOptions = ctx.options
        self.log = ctx.log
        self.topics = self.options.topics()
        self.tenants = frozenset(self.options.tenants)
        self.mapper = Mapper(ctx.name, max_calls=self.options.max_tracked_calls)
        self.recorded = RecordedOffsets(ctx.state_dir / "recorded", self.options.group_id)
        self.backoff = Backoff(initial=self.options.backoff_initial, cap=self.options.backoff_cap)
        self.consumer: AIOKafkaConsumer | None = None
        #: records read, events emitted, unknown names, failures; refused records are
        #: counted by reason in ``ctx.refusals.counts`` (and on /metrics)
        self.records = 0
        self.emitted = 0
        self.unknown: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        #: per partition: the next offset to commit (everything before it is recorded)
        self.done: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.owned: set[TopicPartition] = set()
        self._epoch = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except RETRYABLE as err:
                self.counts["failures"] += 1
                self.ctx.set_state("reconnecting")
                delay = self.backoff.next_delay()
                self.log.warning(
                    "genesys %s: %s; starting a new consumer in %.1fs",
                    self.ctx.name, _describe(err), delay,
                )
                await anyio.sleep(delay)

    async def _session(self) -> None:
        """One consumer, from start to failure or cancellation."""
        self.ctx.set_state("connecting")
        consumer = self._consumer()
        self.consumer = consumer
        try:
            consumer.subscribe(list(self.topics), listener=_Listener(self))
            await consumer.start()
            self.backoff.started()
            self.ctx.set_state("connected")
            self.log.info(
                "genesys %s: consuming %s as group %r from %s (a partition the group has "
                "no committed offset for starts at %s)",
                self.ctx.name, ", ".join(self.topics), self.options.group_id,
                ",".join(self.options.bootstrap_servers), _START[self.options.auto_offset_reset],
            )
            while True:
                batch = await consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=self.options.max_poll_records
                )
                if batch:
                    await self._process(batch)
                    await self._commit(self.owned)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_TIMEOUT):
                try:
                    await self._commit(self.owned)
                finally:
                    await consumer.stop()
            self.recorded.close()
            self.consumer = None
            self.owned = set()
            self.done.clear()
            self.committed.clear()

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        epoch = self._epoch
        # busy for the whole batch: a revocation bumps the epoch first, so this
        # stops after the record in flight and only then reports idle
        self._idle.clear()
        try:
            for tp, records in batch.items():
                for record in records:
                    if self._epoch != epoch or tp not in self.owned:
                        break  # revoked meanwhile: the new owner reads the rest again
                    again = self.recorded.covers(tp, record.offset)
                    await self._handle(record, again=again)
                    # recorded, filtered or refused: dealt with either way
                    self.done[tp] = record.offset + 1
                    self.recorded.note(tp, record.offset + 1)
        finally:
            self._idle.set()

    async def _commit(self, partitions: set[TopicPartition]) -> None:
        """Commit ``done`` for ``partitions`` where it moved; a failure is logged and counted."""
        consumer = self.consumer
        offsets = {
            tp: off for tp in partitions
            if (off := self.done.get(tp)) is not None and off > self.committed.get(tp, -1)
        }
        if consumer is None or not offsets:
            return
        try:
            await consumer.commit(offsets)
        except CommitFailedError as err:
            # the group moved on (a rebalance): these records will be read again
            self.counts["commit_failed_rebalance"] += 1
            self.log.info("genesys %s: commit refused by the group (%s); the records will "
                          "be read again", self.ctx.name, err)
            return
        except KafkaError as err:
            self.counts["commit_errors"] += 1
            self.ctx.set_state("degraded")
            self.log.warning("genesys %s: commit failed: %s; retrying after the next poll",
                             self.ctx.name, _describe(err))
            return
        self.committed.update(offsets)
        for tp, offset in offsets.items():
            self.recorded.committed(tp, offset)
        self.counts["commits"] += 1
        self.ctx.set_state("connected")

    # -- one record -------------------------------------------------------------------

    async def _handle(self, record: Any, *, again: bool = False) -> None:
        """Decode, filter, map and emit one record; or refuse it (a dead letter).

        ``again``: the record was dealt with before a crash (its events recorded, or
        the record refused and dead-lettered); it is still mapped, so that the
        call-thread memory is what it would have been, but nothing is emitted and
        nothing is refused a second time.
        """
        self.records += 1
        key = parse_key(record.key)  # total: a key that does not parse is a Key all the same
        if self.tenants and key.tenant not in self.tenants:
            self.counts["filtered"] += 1
            return
        if not key.ok:
            self.counts["bad_keys"] += 1
            if self._should_log(self.counts["bad_keys"]):
                self.log.warning(
                    "genesys %s: record %s/%d@%d has key %r, not {tenant_id}:{id}; "
                    "passing it on with the raw key as subject [%d bad keys so far]",
                    self.ctx.name, record.topic, record.partition, record.offset,
                    key.raw, self.counts["bad_keys"],
                )
        if again:
            # refused the first time if this raises: dead-lettered then, not now
            with contextlib.suppress(Exception):
                self._convert(record, key)
            self.counts["already_recorded"] += 1
            return
        converted = await self.ctx.convert(
            record.value, lambda: self._convert(record, key), **_where(record)
        )
        if converted is None:
            return  # refused: counted, logged and dead-lettered by ctx.convert
        name, mapped = converted
        if not mapped.known:
            self.unknown[name] += 1
            if self._should_log(self.unknown[name]):
                self.log.warning(
                    "genesys %s: unknown event %r on %s (record %d@%d); passed on as "
                    "genesys.%s [%d so far]",
                    self.ctx.name, name, record.topic, record.partition, record.offset,
                    name, self.unknown[name],
                )
        emit = self.ctx.emit
        for event in mapped.events:
            await emit(event)
        self.emitted += len(mapped.events)

    def _convert(self, record: Any, key: Key) -> tuple[str, Mapped]:
        """The event name and the events of one record's value.

        Raises :class:`RefusedInput` (with the reason counted on /metrics) when the
        value cannot be used; anything else it raises refuses the record too.
        """
        value = record.value
        if value is None:
            raise RefusedInput("empty_value", "the record has no value (a tombstone)")
        try:
            doc = decode_json(value)
        except ValueError as err:  # includes UnicodeDecodeError and nesting too deep
            raise RefusedInput("invalid_json", str(err)) from None
        if not isinstance(doc, dict):
            raise RefusedInput("not_an_object", f"the value is a JSON {_kind(doc)}")
        name = doc.get(self.options.event_field)
        if not valid_event_name(name):
            raise RefusedInput(
                "no_event_name",
                f"field {self.options.event_field!r} is {_show(name)}, not an event name",
            )
        where = NativeRecord(
            topic=record.topic,
            kind=self.topics[record.topic],
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            key=key,
        )
        return name, self.mapper.map(name, doc, where, datetime.now(UTC))

    @staticmethod
    def _should_log(count: int) -> bool:
        return count <= LOG_FIRST or count % LOG_EVERY == 0

    # -- the consumer ---------------------------------------------------------------------

    def _consumer(self) -> AIOKafkaConsumer:
        o = self.options
        kwargs: dict[str, Any] = {}
        if o.uses_tls():
            base = self.ctx.config_dir
            context = create_ssl_context(
                cafile=o.resolve(o.ssl_cafile, base),
                certfile=o.resolve(o.ssl_certfile, base),
                keyfile=o.resolve(o.ssl_keyfile, base),
                password=o.ssl_password,
            )
            context.check_hostname = o.ssl_check_hostname
            kwargs["ssl_context"] = context
        if o.sasl_mechanism:
            kwargs.update(
                sasl_mechanism=o.sasl_mechanism,
                sasl_plain_username=o.sasl_username,
                sasl_plain_password=o.sasl_password,
            )
        return AIOKafkaConsumer(
            bootstrap_servers=o.bootstrap_servers,
            client_id=o.client_id,
            group_id=o.group_id,
            enable_auto_commit=False,
            auto_offset_reset=o.auto_offset_reset,
            session_timeout_ms=int(o.session_timeout * 1000),
            heartbeat_interval_ms=int(o.heartbeat_interval * 1000),
            max_poll_interval_ms=int(o.max_poll_interval * 1000),
            max_poll_records=o.max_poll_records,
            fetch_max_wait_ms=int(o.fetch_max_wait * 1000),
            request_timeout_ms=int(o.request_timeout * 1000),
            security_protocol=o.security_protocol,
            **kwargs,
        )

    # -- rebalances -----------------------------------------------------------------------

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        self._epoch += 1
        self.owned -= revoked
        started = time.monotonic()
        await self._idle.wait()  # the record in flight is recorded (or fails) first
        await self._commit(revoked)
        for tp in revoked:
            self.done.pop(tp, None)
            self.committed.pop(tp, None)
        self.recorded.release(revoked)
        self.counts["revocations"] += 1
        self.log.info(
            "genesys %s: rebalance: gave up %d partition(s) after committing what was "
            "recorded (%.0f ms)",
            self.ctx.name, len(revoked), (time.monotonic() - started) * 1000,
        )

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        self.owned = set(assigned)
        self.counts["assignments"] += 1
        self.log.info(
            "genesys %s: assigned %s", self.ctx.name,
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(assigned)) or "nothing",
        )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance callbacks, handed to the source."""

    def __init__(self, source: GenesysSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.source._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.source._assigned(set(assigned))


def _where(record: Any) -> dict[str, Any]:
    """Where a record came from, for its dead letter: enough to fetch it from the broker."""
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": None if record.key is None else record.key.decode("utf-8", "replace"),
        "timestamp": record.timestamp,
    }


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _show(value: Any) -> str:
    return "missing" if value is None else repr(value)[:60]

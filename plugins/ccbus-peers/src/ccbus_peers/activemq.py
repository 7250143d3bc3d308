"""Real peers for STOMP tests: a private ActiveMQ broker and a Java JMS peer.

:class:`ActiveMQBroker`
    A private broker (Debian's ``activemq`` package) on free loopback ports,
    with ``stomp://``, ``stomp+ssl://`` (a self-signed certificate made with
    ``keytool``; :attr:`ActiveMQBroker.ca_file` verifies it) and OpenWire
    ``tcp://`` connectors, persistence on (KahaDB in its directory).  It can be
    stopped, killed and restarted, for fault tests.
:func:`shared_broker`
    One broker for the whole process (a test session), however many
    ``conftest.py`` files ask for it: starting one takes several seconds, so
    tests share it and use their own destinations (:func:`unique_name`).
:class:`BrokerFactory`
    ``start(users={"ccbus": "secret"}, tls=False)`` starts a private broker,
    stopped when the factory closes: for one test that stops, kills or
    restarts it, or needs credentials.
:class:`JmsPeer` (:func:`open_jms_peer`)
    ``async with open_jms_peer(broker) as peer:`` runs ``JmsPeer.java``, a JMS
    1.1 application compiled with ``javac`` against the jars Debian ships
    (cached under ``$XDG_CACHE_HOME/ccbus-peers``): it publishes to topics and
    queues and consumes a queue, reporting each message's class (TextMessage or
    BytesMessage), JMSType, JMSCorrelationID, JMSReplyTo and JMSExpiration, and
    can answer to JMSReplyTo.

Nothing here is a mock: the broker is the real one, and the peer speaks JMS
through ActiveMQ's own client, which is what CVP and the CUCM Connector do.

This module does not import pytest (``ccbus simulate cvp --start-broker``
starts a broker in an installation without it); the plugins' ``conftest.py``
files wrap these in fixtures, and :func:`require_activemq` imports pytest only
when it is called.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import anyio
from anyio.abc import ObjectReceiveStream, Process

__all__ = [
    "ACTIVEMQ_HOME",
    "ActiveMQBroker",
    "BrokerFactory",
    "JmsMessage",
    "JmsPeer",
    "activemq_available",
    "compile_jms_peer",
    "free_port",
    "open_jms_peer",
    "require_activemq",
    "shared_broker",
    "unique_name",
]

ACTIVEMQ_HOME = Path("/usr/share/activemq")
ACTIVEMQ_JAR = ACTIVEMQ_HOME / "bin" / "activemq.jar"
#: Where Debian puts the ActiveMQ client and JMS API jars.
CLIENT_JARS = ("activemq-client.jar", "geronimo-jms_1.1_spec.jar", "hawtbuf.jar",
               "slf4j-api.jar", "geronimo-j2ee-management-1.1-spec.jar")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
KEYSTORE_PASSWORD = "ccbus-test"


def activemq_available() -> str | None:
    """Why a broker cannot be started here, or None if it can."""
    if not ACTIVEMQ_JAR.exists():
        return f"{ACTIVEMQ_JAR} is missing: apt-get install activemq"
    if shutil.which("java") is None:
        return "java is missing: apt-get install default-jre-headless"
    return None


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unique_name(prefix: str = "test") -> str:
    """A destination name no other test uses (the session broker is shared)."""
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


@dataclass
class ActiveMQBroker:
    """A private ActiveMQ 5.17 broker in ``base``, listening on loopback only.

    The configuration is written from scratch (the Debian instance's
    ``activemq.xml`` with more connectors), so the test never touches
    ``/etc/activemq`` or a system broker.  Ports are chosen once and kept
    across :meth:`restart`, and so is the KahaDB store: persistent messages and
    durable subscriptions survive a restart, as they do in production.
    """

    base: Path
    #: username -> password; when set, every connection must log in.
    users: dict[str, str] = field(default_factory=dict)
    tls: bool = True
    stomp_port: int = field(default_factory=free_port)
    openwire_port: int = field(default_factory=free_port)
    stomp_ssl_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    #: How many times the broker was started (restarts included).
    starts: int = 0

    @property
    def stomp_url(self) -> str:
        return f"stomp://127.0.0.1:{self.stomp_port}"

    @property
    def stomp_ssl_url(self) -> str:
        return f"stomp+ssl://127.0.0.1:{self.stomp_ssl_port}"

    @property
    def openwire_url(self) -> str:
        return f"tcp://127.0.0.1:{self.openwire_port}"

    @property
    def ca_file(self) -> Path:
        """The broker's self-signed certificate (PEM), to verify ``stomp+ssl``."""
        return self.base / "conf" / "broker.pem"

    @property
    def log_file(self) -> Path:
        return self.base / "broker.log"

    def start(self) -> ActiveMQBroker:
        """Start the broker and wait until its connectors accept connections."""
        reason = activemq_available()
        if reason:
            raise RuntimeError(reason)
        if self.process is not None and self.process.poll() is None:
            return self
        conf = self.base / "conf"
        data = self.base / "data"
        conf.mkdir(parents=True, exist_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        if self.tls and not (conf / "broker.p12").exists():
            self._make_keystore(conf)
        (conf / "activemq.xml").write_text(self._config(), encoding="utf-8")
        (conf / "log4j.properties").write_text(_LOG4J, encoding="utf-8")
        command = [
            shutil.which("java") or "java",
            "-Xms64m",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            f"-Dactivemq.home={ACTIVEMQ_HOME}",
            f"-Dactivemq.base={self.base}",
            f"-Dactivemq.conf={conf}",
            f"-Dactivemq.data={data}",
            f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}",
            "-jar",
            str(ACTIVEMQ_JAR),
            "start",
            f"xbean:file:{conf / 'activemq.xml'}",
        ]
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - fixed command
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.base, start_new_session=True,
        )
        log.close()
        self.starts += 1
        ports = [self.stomp_port, self.openwire_port] + ([self.stomp_ssl_port] if self.tls else [])
        deadline = time.monotonic() + START_TIMEOUT
        while not all(_listening(p) for p in ports):
            if self.process.poll() is not None:
                raise RuntimeError(f"ActiveMQ exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"ActiveMQ did not listen within {START_TIMEOUT}s:\n{self.log()}"
                )
            time.sleep(0.2)
        return self

    def stop(self, *, kill: bool = False) -> None:
        """Stop the broker (SIGTERM, a clean shutdown; ``kill=True``: SIGKILL, a crash)."""
        process = self.process
        if process is None or process.poll() is not None:
            self.process = None
            return
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)
        self.process = None
        deadline = time.monotonic() + STOP_TIMEOUT
        while _listening(self.stomp_port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _make_keystore(self, conf: Path) -> None:
        keytool = shutil.which("keytool") or "keytool"
        store = conf / "broker.p12"
        subprocess.run(  # noqa: S603 - fixed command
            [keytool, "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
             "-validity", "3650", "-dname", "CN=localhost",
             "-ext", "SAN=ip:127.0.0.1,dns:localhost",
             "-keystore", str(store), "-storetype", "PKCS12",
             "-storepass", KEYSTORE_PASSWORD, "-keypass", KEYSTORE_PASSWORD],
            check=True, capture_output=True, timeout=120,
        )
        subprocess.run(  # noqa: S603 - fixed command
            [keytool, "-exportcert", "-rfc", "-alias", "broker", "-keystore", str(store),
             "-storetype", "PKCS12", "-storepass", KEYSTORE_PASSWORD,
             "-file", str(conf / "broker.pem")],
            check=True, capture_output=True, timeout=120,
        )

    def _config(self) -> str:
        plugins = ""
        if self.users:
            users = "\n".join(
                f"          <authenticationUser username={quoteattr(u)} password={quoteattr(p)}"
                ' groups="users,admins"/>'
                for u, p in self.users.items()
            )
            plugins = (
                "    <plugins>\n"
                '      <simpleAuthenticationPlugin anonymousAccessAllowed="false">\n'
                f"        <users>\n{users}\n        </users>\n"
                "      </simpleAuthenticationPlugin>\n    </plugins>\n"
            )
        ssl_context = ""
        ssl_connector = ""
        if self.tls:
            ssl_context = (
                "    <sslContext>\n      <sslContext keyStore="
                f"{quoteattr('file:' + str(self.base / 'conf' / 'broker.p12'))}"
                f' keyStorePassword="{KEYSTORE_PASSWORD}" keyStoreType="PKCS12"/>\n'
                "    </sslContext>\n"
            )
            ssl_connector = (
                '      <transportConnector name="stomp+ssl" '
                f'uri="stomp+ssl://127.0.0.1:{self.stomp_ssl_port}?transport.closeAsync=false"/>\n'
            )
        return _BROKER_XML.format(
            data=self.base / "data",
            plugins=plugins,
            ssl_context=ssl_context,
            openwire=self.openwire_port,
            stomp=self.stomp_port,
            ssl_connector=ssl_connector,
        )


_BROKER_XML = """<beans
  xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" brokerName="ccbus-test"
          dataDirectory="{data}" schedulerSupport="false">
    <persistenceAdapter>
      <kahaDB directory="{data}/kahadb"/>
    </persistenceAdapter>
{plugins}{ssl_context}    <systemUsage>
      <systemUsage>
        <memoryUsage><memoryUsage limit="128 mb"/></memoryUsage>
        <storeUsage><storeUsage limit="1 gb"/></storeUsage>
        <tempUsage><tempUsage limit="512 mb"/></tempUsage>
      </systemUsage>
    </systemUsage>
    <transportConnectors>
      <transportConnector name="openwire" uri="tcp://127.0.0.1:{openwire}"/>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:{stomp}?transport.closeAsync=false"/>
{ssl_connector}    </transportConnectors>
  </broker>
</beans>
"""

#: The broker's logging (log4j 1, as Debian's 5.17 runs it) to stdout, i.e. broker.log.
_LOG4J = """log4j.rootLogger=INFO, out
log4j.logger.org.springframework=WARN
log4j.logger.org.apache.xbean=WARN
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=%d | %-5p | %m | %c | %t%n
"""


# ---------------------------------------------------------------------------
# The JMS peer


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "ccbus-peers"


def client_classpath() -> list[str]:
    """The ActiveMQ client and JMS API jars Debian ships."""
    lib = ACTIVEMQ_HOME / "lib"
    jars = [str(lib / name) for name in CLIENT_JARS if (lib / name).exists()]
    nop = Path("/usr/share/java/slf4j-nop.jar")
    if nop.exists():
        jars.append(str(nop))  # keep the client's logging off the peer's stdout
    return jars


def compile_jms_peer() -> Path:
    """Compile ``JmsPeer.java`` once per source version; the directory holding the class."""
    source = Path(__file__).with_name("JmsPeer.java")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    out = _cache_dir() / f"jms-peer-{digest}"
    if (out / "JmsPeer.class").exists():
        return out
    javac = shutil.which("javac")
    if javac is None:
        raise RuntimeError("javac is missing: apt-get install openjdk-17-jdk-headless")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(  # noqa: S603 - fixed command
        [javac, "-nowarn", "-d", str(tmp), "-cp", ":".join(client_classpath()), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"javac failed:\n{result.stdout}{result.stderr}")
    try:
        tmp.rename(out)
    except OSError:  # another process won the race: its build is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


@dataclass(frozen=True, slots=True)
class JmsMessage:
    """A message the peer consumed, as the JMS API saw it."""

    index: int
    #: ``TextMessage`` or ``BytesMessage``
    message_class: str
    type: str | None
    correlation_id: str | None
    reply_to: str | None
    #: JMSExpiration in epoch milliseconds (0: never)
    expiration: int
    delivery_mode: str
    destination: str
    message_id: str
    body: str | None


class JmsPeer:
    """A running Java JMS peer process; use :func:`JmsPeer.open` (or :func:`open_jms_peer`)."""

    def __init__(self, process: Process, messages: ObjectReceiveStream[JmsMessage],
                 answers: ObjectReceiveStream[dict[str, Any]]) -> None:
        self.process = process
        self.messages = messages
        self._answers = answers
        self._lock = anyio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, *, username: str | None = None, password: str | None = None,
        within: float = 60.0,
    ) -> AsyncIterator[JmsPeer]:
        """Start the peer against the OpenWire ``url`` and wait until it is connected."""
        classes = await anyio.to_thread.run_sync(compile_jms_peer)
        classpath = ":".join([str(classes), *client_classpath()])
        args = [shutil.which("java") or "java", "-Xmx128m", "-XX:+UseSerialGC",
                "-cp", classpath, "JmsPeer", url]
        if username is not None:
            args += [username, password or ""]
        process = await anyio.open_process(args, stderr=subprocess.STDOUT)
        send_msg, messages = anyio.create_memory_object_stream[JmsMessage](10_000_000)
        send_ans, answers = anyio.create_memory_object_stream[dict[str, Any]](1000)
        peer = cls(process, messages, answers)
        async with anyio.create_task_group() as tg:
            tg.start_soon(peer._read, send_msg, send_ans)
            try:
                ready = await peer._answer(within)
                if ready.get("event") != "ready":
                    raise RuntimeError(f"JMS peer did not start: {ready}")
                yield peer
            finally:
                with anyio.CancelScope(shield=True):
                    if process.returncode is None:
                        try:
                            await process.stdin.send(b"quit\n")  # type: ignore[union-attr]
                            with anyio.move_on_after(10):
                                await process.wait()
                        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                            pass
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
                tg.cancel_scope.cancel()

    async def _read(self, messages: Any, answers: Any) -> None:
        buffer = b""
        assert self.process.stdout is not None
        async with messages, answers:
            try:
                async for chunk in self.process.stdout:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        await self._dispatch(line, messages, answers)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    async def _dispatch(self, line: bytes, messages: Any, answers: Any) -> None:
        try:
            doc = json.loads(line)
        except ValueError:
            await answers.send({"event": "output", "text": line.decode("utf-8", "replace")})
            return
        if doc.get("event") == "message":
            await messages.send(
                JmsMessage(
                    index=doc["index"], message_class=doc["class"], type=doc["type"],
                    correlation_id=doc["correlationId"], reply_to=doc["replyTo"],
                    expiration=doc["expiration"], delivery_mode=doc["deliveryMode"],
                    destination=doc["destination"], message_id=doc["messageId"],
                    body=doc["body"],
                )
            )
        else:
            await answers.send(doc)

    async def _answer(self, within: float) -> dict[str, Any]:
        with anyio.fail_after(within):
            while True:
                try:
                    doc = await self._answers.receive()
                except anyio.EndOfStream:
                    raise RuntimeError("the JMS peer exited") from None
                if doc.get("event") != "output":  # stray JVM output is not an answer
                    return doc

    async def _command(self, fields: list[str], within: float = 60.0) -> dict[str, Any]:
        async with self._lock:
            assert self.process.stdin is not None
            await self.process.stdin.send(("\t".join(fields) + "\n").encode("utf-8"))
            answer = await self._answer(within)
        if answer.get("event") == "error":
            raise RuntimeError(f"JMS peer: {answer.get('message')}")
        return answer

    async def send(
        self, destination: str, body: str, *, type: str | None = None,  # noqa: A002
        correlation_id: str | None = None, ttl_ms: int = 0, persistent: bool = True,
        as_bytes: bool = False,
    ) -> str:
        """Send one message to ``queue:NAME`` or ``topic:NAME``; its JMSMessageID."""
        answer = await self._command([
            "send", destination, _b64(body), _b64(type) if type else "-",
            _b64(correlation_id) if correlation_id else "-", str(ttl_ms),
            "1" if persistent else "0", "1" if as_bytes else "0",
        ])
        return str(answer["messageId"])

    async def bulk(self, destination: str, body: str, count: int, *,
                   persistent: bool = False, within: float = 600.0) -> float:
        """Send ``count`` TextMessages flat out (``%d`` in ``body`` is the sequence); seconds."""
        answer = await self._command(
            ["bulk", destination, str(count), _b64(body), "1" if persistent else "0"], within
        )
        return float(answer["seconds"])

    async def consume(self, destination: str) -> None:
        """Start consuming ``destination``; messages arrive on :meth:`next_message`."""
        await self._command(["consume", destination])

    async def next_message(self, within: float = 30.0) -> JmsMessage:
        with anyio.fail_after(within):
            return await self.messages.receive()

    async def reply(
        self, request: JmsMessage, body: str, *, type: str | None = None,  # noqa: A002
        correlation_id: str | None = "=",
    ) -> str:
        """Answer ``request`` on its JMSReplyTo (``correlation_id="="`` copies the request's)."""
        corr = "=" if correlation_id == "=" else (_b64(correlation_id) if correlation_id else "-")
        answer = await self._command([
            "reply", str(request.index), _b64(body), _b64(type) if type else "-", corr,
        ])
        return str(answer["messageId"])


# ---------------------------------------------------------------------------
# What the tests' fixtures are made of (the fixtures are in each plugin's conftest.py)


def require_activemq() -> None:
    """Fail the calling test (not skip) when no broker can be started here.

    CI installs the package (.ci/run), so a missing broker is a failure.
    pytest is imported here, not at module level: only tests call this.
    """
    reason = activemq_available()
    if reason:
        import pytest

        pytest.fail(reason, pytrace=False)


_shared: ActiveMQBroker | None = None
_shared_users = 0


@contextmanager
def shared_broker(make_dir: Callable[[], Path]) -> Iterator[ActiveMQBroker]:
    """The process's one shared broker, started by the first user in ``make_dir()``.

    Every ``conftest.py`` whose session fixture enters this gets the same
    broker; the last one to leave stops it.
    """
    global _shared, _shared_users  # noqa: PLW0603 - one broker per process, by design
    if _shared is None:
        broker = ActiveMQBroker(make_dir())
        broker.start()
        _shared = broker
    _shared_users += 1
    try:
        yield _shared
    finally:
        _shared_users -= 1
        if _shared_users == 0:
            _shared.stop()
            _shared = None


class BrokerFactory:
    """``factory.start(users=..., tls=...)``: a started private broker; ``close()`` stops them."""

    def __init__(self, make_dir: Callable[[], Path]) -> None:
        self.make_dir = make_dir
        self.brokers: list[ActiveMQBroker] = []

    def start(self, **kwargs: Any) -> ActiveMQBroker:
        broker = ActiveMQBroker(self.make_dir(), **kwargs)
        self.brokers.append(broker)
        return broker.start()

    __call__ = start

    def close(self) -> None:
        for broker in self.brokers:
            broker.stop()

    def __enter__(self) -> BrokerFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_jms_peer(broker: ActiveMQBroker, **kwargs: Any) -> AbstractAsyncContextManager[JmsPeer]:
    """``async with open_jms_peer(broker) as peer``: a JMS peer on ``broker``'s OpenWire port.

    It logs in as the broker's first user when the broker has users and
    ``username`` is not given.
    """
    if broker.users and "username" not in kwargs:
        username, password = next(iter(broker.users.items()))
        kwargs.update(username=username, password=password)
    return JmsPeer.open(broker.openwire_url, **kwargs)

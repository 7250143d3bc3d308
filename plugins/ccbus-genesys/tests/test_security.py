"""TLS and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) between the source and a broker.

The certificates are made by the ``openssl`` command for this test run (a
CA and a server certificate for 127.0.0.1); the broker is the test peer
with a TLS listener and SASL users, so the whole handshake (TLS, then
SaslHandshake v1 and SaslAuthenticate with RFC 5802 SCRAM) runs for real
with aiokafka's own authenticators.
"""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.helpers import create_ssl_context
from ccbus_genesys.scenarios import TENANT, agent_step
from ccbus_peers.kafka import KafkaTestBroker

from ccbus.testing import Collected, wait_until

pytestmark = pytest.mark.anyio

#: ``genesys_source(options)`` (conftest): a ``genesys`` source named ``gen``, no bus.
SourceFactory = Callable[..., AbstractAsyncContextManager[Collected]]

USERS = {"ccbus": "s3cret-pass"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for IP 127.0.0.1, made with openssl."""
    d = tmp_path_factory.mktemp("certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=ccbus test CA")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    return d


@pytest.fixture
async def secure_broker(certs: Path) -> AsyncIterator[KafkaTestBroker]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    async with KafkaTestBroker(ssl_context=context, users=USERS,
                               topics={"voice-agentstate": 1, "voice-callthread": 1}) as broker:
        yield broker


async def produce(broker: KafkaTestBroker, certs: Path, count: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, security_protocol="SASL_SSL",
        ssl_context=create_ssl_context(cafile=str(certs / "ca.pem")),
        sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="ccbus",
        sasl_plain_password=USERS["ccbus"],
    )
    await producer.start()
    try:
        for n in range(count):
            step = agent_step(n)
            await producer.send_and_wait("voice-agentstate", json.dumps(step.payload).encode(),
                                         key=step.key.encode())
    finally:
        await producer.stop()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_over_tls(
    secure_broker: KafkaTestBroker, certs: Path, mechanism: str,
    fast: dict[str, Any], genesys_source: SourceFactory,
) -> None:
    await produce(secure_broker, certs, 5)
    options = {
        **fast, "bootstrap_servers": [secure_broker.bootstrap], "group_id": "secure",
        "security_protocol": "SASL_SSL", "ssl_cafile": str(certs / "ca.pem"),
        "sasl_mechanism": mechanism, "sasl_username": "ccbus", "sasl_password": USERS["ccbus"],
    }
    async with genesys_source(options) as run:
        await wait_until(lambda: run.source.records == 5, timeout=20)
    assert [e.subject for e in run.events if e.type == "genesys.EventAgentReady"] == [
        f"a{n}" for n in range(5)]
    assert {e.extensions["tenant"] for e in run.events} == {TENANT}
    assert secure_broker.auth[f"ok:{mechanism}"] >= 1


async def test_a_wrong_password_is_reported_and_retried(
    secure_broker: KafkaTestBroker, certs: Path, caplog: pytest.LogCaptureFixture,
    fast: dict[str, Any], genesys_source: SourceFactory,
) -> None:
    options = {
        **fast, "bootstrap_servers": [secure_broker.bootstrap], "group_id": "secure",
        "security_protocol": "SASL_SSL", "ssl_cafile": str(certs / "ca.pem"),
        "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "ccbus", "sasl_password": "wrong",
    }
    async with genesys_source(options) as run:
        await wait_until(lambda: run.source.counts["failures"] >= 2, timeout=20)
        assert "reconnecting" in run.states
    assert run.events == []
    assert secure_broker.auth["failed"] >= 2
    assert "starting a new consumer in" in caplog.text


async def test_an_untrusted_certificate_is_refused(
    secure_broker: KafkaTestBroker, caplog: pytest.LogCaptureFixture,
    fast: dict[str, Any], genesys_source: SourceFactory,
) -> None:
    options = {
        **fast, "bootstrap_servers": [secure_broker.bootstrap], "group_id": "secure",
        "security_protocol": "SASL_SSL",  # the system CAs do not know the test CA
        "sasl_mechanism": "PLAIN", "sasl_username": "ccbus", "sasl_password": USERS["ccbus"],
    }
    async with genesys_source(options) as run:
        await wait_until(lambda: run.source.counts["failures"] >= 1, timeout=20)
    assert run.events == []
    assert secure_broker.auth["ok:PLAIN"] == 0

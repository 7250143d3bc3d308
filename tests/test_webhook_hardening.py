"""The inbound webhook source and the listener against hostile requests (issue #18, "Also").

One real ``ccbus run`` process for the module, with two webhook sources: ``signed``
(HMAC only, so a body must be read before the sender is proven) and ``tok`` (a
bearer token, proven by the headers alone).  Every shape is fired over real
sockets; each must get a 4xx (or the documented 503), a counter on ``/metrics``,
and leave the process answering with its memory bounded.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import answers, free_port, start_ccbus, wait_until, write

from ccbus.sources.webhook import sign

SECRET = "hardening-hmac-secret"
TOKEN = "hardening-bearer-token"
MIB = 1024 * 1024


class Ccbus:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.base = f"http://127.0.0.1:{port}"

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.base}/metrics", timeout=30).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    def bad_input(self, source: str, reason: str) -> float:
        key = ("ccbus_source_bad_input_total", (("reason", reason), ("source", source)))
        return self.metrics().get(key, 0.0)

    def refused(self, reason: str) -> float:
        key = ("ccbus_http_refused_requests_total", (("reason", reason),))
        return self.metrics().get(key, 0.0)

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)


@pytest.fixture(scope="module")
def ccbus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ccbus]:
    tmp = tmp_path_factory.mktemp("hardening")
    port = free_port()
    log = tmp / "ccbus.log"
    write(tmp / "rules" / "r.yaml", "rules: [{name: r, on: ok.*, do: [log: '{event.id}']}]\n")
    config = write(tmp / "ccbus.yaml", f"""
        sources:
          signed:
            plugin: webhook
            options: {{hmac_secret: {SECRET}, read_timeout: 30s, max_unverified_reads: 2}}
          tok:
            plugin: webhook
            options: {{token: {TOKEN}, read_timeout: 30s}}
        rules: [rules]
        state_dir: state
        http: {{listen: "127.0.0.1:{port}", client_timeout: 2s}}
    """)
    proc = start_ccbus(config, log)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), 60, "ccbus ready", log)
        yield Ccbus(proc, port, log)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]


def signed(body: bytes, stamp: str | None = None) -> dict[str, str]:
    stamp = stamp or str(int(time.time()))
    return {"X-Ccbus-Timestamp": stamp, "X-Ccbus-Signature": sign(SECRET, stamp, body),
            "Content-Type": "application/json"}


def exchange(port: int, data: bytes, *, timeout: float = 20) -> bytes:
    """Send bytes (maybe only a request's head) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def head(path: str, headers: dict[str, str], length: int) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {length}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- authentication before the body --------------------------------------------------


def test_a_wrong_token_is_refused_before_the_body_is_sent(ccbus: Ccbus) -> None:
    before = ccbus.bad_input("tok", "unauthorized")
    started = time.monotonic()
    # the head of a 1,000,000-byte request and no body: waiting for it would take read_timeout
    reply = exchange(ccbus.port, head("/events/tok", {"Authorization": "Bearer wrong"}, 1_000_000))
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert b"connection: close" in reply.lower()
    assert time.monotonic() - started < 15
    assert ccbus.bad_input("tok", "unauthorized") == before + 1


def test_hmac_headers_are_checked_before_the_body(ccbus: Ccbus) -> None:
    before = ccbus.bad_input("signed", "unauthorized")
    for headers in ({}, {"X-Ccbus-Timestamp": "1000000000",
                         "X-Ccbus-Signature": "sha256=" + "0" * 64}):
        reply = exchange(ccbus.port, head("/events/signed", headers, 1_000_000))
        assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert ccbus.bad_input("signed", "unauthorized") == before + 2


@pytest.mark.parametrize("stamp", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_a_timestamp_that_is_not_a_finite_number_is_refused(ccbus: Ccbus, stamp: str) -> None:
    before = ccbus.bad_input("signed", "unauthorized")
    body = b'{"type": "ok.nan"}'
    answer = httpx.post(f"{ccbus.base}/events/signed", content=body,
                        headers=signed(body, stamp), timeout=30)
    assert answer.status_code == 401, answer.text
    assert ccbus.bad_input("signed", "unauthorized") == before + 1


def test_the_same_signed_request_is_accepted_once(ccbus: Ccbus) -> None:
    before = ccbus.bad_input("signed", "replayed")
    body = b'{"type": "ok.replay", "id": "replay-1"}'
    headers = signed(body)
    url = f"{ccbus.base}/events/signed"
    assert httpx.post(url, content=body, headers=headers, timeout=30).status_code == 202
    for _ in range(2):
        answer = httpx.post(url, content=body, headers=headers, timeout=30)
        assert answer.status_code == 409, answer.text
    assert ccbus.bad_input("signed", "replayed") == before + 2
    # a new signature (a new timestamp) for the same body is a new request
    later = signed(body, str(int(time.time()) + 1))
    assert httpx.post(url, content=body, headers=later, timeout=30).status_code == 202


def test_unsigned_bodies_read_at_once_are_bounded(ccbus: Ccbus) -> None:
    """Two bodies (max_unverified_reads) may be on their way; the third waits for none."""
    before = ccbus.bad_input("signed", "busy")
    stamp = str(int(time.time()))
    looks_signed = {"X-Ccbus-Timestamp": stamp, "X-Ccbus-Signature": "sha256=" + "a" * 64}
    slow = []
    try:
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", ccbus.port), timeout=20)
            sock.sendall(head("/events/signed", looks_signed, 1000) + b'{"type":')
            slow.append(sock)
        time.sleep(1.0)  # both are being read
        reply = exchange(ccbus.port, head("/events/signed", looks_signed, 1000))
        assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
        assert b"retry-after: 1" in reply.lower()
        assert ccbus.bad_input("signed", "busy") == before + 1
    finally:
        for sock in slow:
            sock.close()


def test_a_flood_of_unauthenticated_megabyte_bodies_keeps_memory_bounded(ccbus: Ccbus) -> None:
    """200 requests of 1 MiB with forged signatures, all at once: RSS grows by far less
    than the 200 MiB the bodies would take if each were read."""
    rss_before = ccbus.rss()
    body = b"x" * (MIB - 100)
    stamp = str(int(time.time()))
    forged = {"X-Ccbus-Timestamp": stamp, "X-Ccbus-Signature": "sha256=" + "b" * 64}
    limits = httpx.Limits(max_connections=200)
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=60, limits=limits) as client:
        from concurrent.futures import ThreadPoolExecutor

        def post(_: int) -> int:
            try:
                return client.post(f"{ccbus.base}/events/signed", content=body,
                                   headers=forged).status_code
            except httpx.HTTPError:
                return 0  # the server answered 503 and closed before the body was sent

        with ThreadPoolExecutor(200) as pool:
            for status in pool.map(post, range(200)):
                statuses[status] = statuses.get(status, 0) + 1
    assert set(statuses) <= {401, 503, 0}, statuses
    assert statuses.get(401, 0) >= 1
    assert answers(f"{ccbus.base}/healthz")
    growth = ccbus.rss() - rss_before
    assert growth < 60 * MIB, f"RSS grew by {growth / MIB:.0f} MiB: {statuses}"


# -- shapes ----------------------------------------------------------------------------


def token_post(ccbus: Ccbus, body: bytes) -> httpx.Response:
    return httpx.post(f"{ccbus.base}/events/tok", content=body, timeout=60,
                      headers={"Authorization": f"Bearer {TOKEN}",
                               "Content-Type": "application/json"})


def test_request_smuggling_shapes_are_refused(ccbus: Ccbus) -> None:
    def refused() -> float:
        return ccbus.refused("ambiguous_length") + ccbus.refused("protocol_400")

    before, ambiguous = refused(), ccbus.refused("ambiguous_length")
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    both = (b"POST /events/tok HTTP/1.1\r\nHost: x\r\n" + auth +
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nPOST /events/tok HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    reply = exchange(ccbus.port, both)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert reply.count(b"HTTP/1.1") == 1  # the request hidden in the body never ran
    assert ccbus.refused("ambiguous_length") == ambiguous + 1
    assert "both Content-Length and Transfer-Encoding" in ccbus.log.read_text()
    # two Content-Lengths that disagree (two equal ones are one length: RFC 9112, 6.3)
    reply = exchange(ccbus.port, b"POST /events/tok HTTP/1.1\r\nHost: x\r\n" + auth +
                     b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}")
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert refused() == before + 2


def test_ten_thousand_headers_are_refused(ccbus: Ccbus) -> None:
    before = ccbus.refused("protocol_431")
    many = "".join(f"X-H{i}: v\r\n" for i in range(10_000)).encode()
    reply = exchange(ccbus.port, b"POST /events/tok HTTP/1.1\r\nHost: x\r\n" + many +
                     b"Content-Length: 2\r\n\r\n{}")
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    assert ccbus.refused("protocol_431") == before + 1
    assert "request headers too large" in ccbus.log.read_text()


def test_invalid_utf8_is_a_400(ccbus: Ccbus) -> None:
    before = ccbus.bad_input("tok", "invalid_json")
    answer = token_post(ccbus, b'{"type": "ok.\xff\xfe"}')
    assert answer.status_code == 400 and "invalid JSON" in answer.json()["error"]
    assert ccbus.bad_input("tok", "invalid_json") == before + 1


def test_json_nested_ten_thousand_levels_is_a_400_logged_and_counted(ccbus: Ccbus) -> None:
    before = ccbus.bad_input("tok", "too_deep")
    answer = token_post(ccbus, b'{"type": "ok.deep", "data": ' + b"[" * 10_000 + b"]" * 10_000
                        + b"}")
    assert answer.status_code == 400, answer.text
    assert "nested too deeply" in answer.json()["error"]
    assert ccbus.bad_input("tok", "too_deep") == before + 1
    wait_until(lambda: "nested too deeply" in ccbus.log.read_text(), 10, "the log line")


def test_a_million_keys_is_refused_and_memory_stays_bounded(ccbus: Ccbus) -> None:
    rss_before = ccbus.rss()
    before = ccbus.bad_input("tok", "too_large")
    doc = {"type": "ok.wide", "data": {f"k{i}": i for i in range(1_000_000)}}
    answer = token_post(ccbus, json.dumps(doc).encode())
    assert answer.status_code == 413, answer.text
    assert ccbus.bad_input("tok", "too_large") == before + 1
    assert ccbus.rss() - rss_before < 100 * MIB


def test_a_thousand_idle_connections_are_closed_and_do_not_block(ccbus: Ccbus) -> None:
    rss_before = ccbus.rss()
    server = psutil.Process(ccbus.proc.pid)
    idle = [socket.create_connection(("127.0.0.1", ccbus.port), timeout=30)
            for _ in range(1000)]
    try:
        started = time.monotonic()
        assert httpx.get(f"{ccbus.base}/healthz", timeout=30).status_code == 200
        assert time.monotonic() - started < 10
        # client_timeout (2 s) closes every one of them: each recv sees the end
        deadline = time.monotonic() + 60
        for sock in idle:
            sock.settimeout(max(deadline - time.monotonic(), 0.1))
            assert sock.recv(1) == b""
        wait_until(lambda: len(server.net_connections("tcp")) < 50, 30,
                   "the server to close the idle connections", ccbus.log)
    finally:
        for sock in idle:
            sock.close()
    assert ccbus.rss() - rss_before < 100 * MIB


# -- label cardinality -----------------------------------------------------------------


def test_event_types_past_the_label_limit_are_folded_into_other(ccbus: Ccbus) -> None:
    """3,000 distinct event types: at most 1,000 type labels, the rest counted as
    ``other`` and as folded; nothing lost from the total."""
    def events_in() -> dict[str, float]:
        return {dict(labels)["type"]: v for (name, labels), v in ccbus.metrics().items()
                if name == "ccbus_events_in_total" and dict(labels)["source"] == "tok"}

    before = sum(events_in().values())
    for batch in range(3):
        docs = [{"type": f"ok.kind{batch}-{i}", "id": f"fold-{batch}-{i}"} for i in range(1000)]
        answer = token_post(ccbus, json.dumps(docs).encode())
        assert answer.status_code == 202, answer.text
    counts = events_in()
    assert sum(counts.values()) == before + 3000
    assert len(counts) <= 1001 and counts["other"] >= 2000
    folded = ("ccbus_metrics_labels_folded_total", (("label", "type"), ("metric", "events_in")))
    assert ccbus.metrics()[folded] == counts["other"]
    assert len(httpx.get(f"{ccbus.base}/metrics", timeout=30).content) < 400_000

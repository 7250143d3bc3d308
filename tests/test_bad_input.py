"""Bad input at every port the core listens on: refused with the right status, counted,
and the process unaffected.

One real ``ccbus run`` process; its listener carries the inbound ``webhook``
source (HMAC) next to health, metrics and the live view.  Each kind of bad
request is fired at it over real sockets, then ``/metrics`` must show each
refusal counted by reason and status, and a good request must still pass.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import answers, free_port, start_ccbus, wait_until, write

from ccbus.sources.webhook import sign

SECRET = "bad-input-hmac-secret"
MAX_BODY = 4096


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {"X-Ccbus-Timestamp": stamp, "X-Ccbus-Signature": sign(secret, stamp, body),
            "Content-Type": "application/json"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send bytes and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
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


@pytest.mark.slow
def test_bad_requests_are_refused_counted_and_harmless(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "ccbus.log"
    write(tmp_path / "rules" / "r.yaml", "rules: [{name: r, on: ok.*, do: [log: '{event.id}']}]\n")
    config = write(tmp_path / "ccbus.yaml", f"""
        sources:
          in:
            plugin: webhook
            options: {{hmac_secret: {SECRET}, max_body: {MAX_BODY}, read_timeout: 1s}}
        rules: [rules]
        state_dir: state
        http: {{listen: "127.0.0.1:{port}", client_timeout: 1s}}
    """)
    proc = start_ccbus(config, log)
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/events/in"
    try:
        wait_until(lambda: answers(f"{base}/readyz"), 30, "ccbus to be ready", log)
        with httpx.Client(timeout=30) as client:
            bad_json = b'{"type": "x", '
            answer = client.post(url, content=bad_json, headers=signed(bad_json))
            assert answer.status_code == 400 and "invalid JSON" in answer.json()["error"]

            not_event = b'{"data": {}}'
            answer = client.post(url, content=not_event, headers=signed(not_event))
            assert answer.status_code == 400

            body = b'{"type": "ok.forged", "id": "forged"}'
            assert client.post(url, content=body, headers=signed(body, "wrong")).status_code == 401
            assert client.post(url, content=body).status_code == 401  # no signature at all
            stale = {**signed(body), "X-Ccbus-Timestamp": "1000000000"}
            assert client.post(url, content=body, headers=stale).status_code == 401

            # the listener's own routes
            assert client.get(f"{base}/no-such-page").status_code == 404
            assert client.post(f"{base}/metrics").status_code == 405
            assert client.get(url).status_code == 405

        # declared too large: refused from the headers alone, before any body byte is sent;
        # the connection (its body unread) is not offered for another request.  The
        # signature headers are well formed (the signature needs the body to be checked)
        stamped = (f"X-Ccbus-Timestamp: {int(time.time())}\r\n"
                   f"X-Ccbus-Signature: sha256={'0' * 64}\r\n").encode()
        reply = raw_exchange(port, b"POST /events/in HTTP/1.1\r\nHost: x\r\n" + stamped +
                                   b"Content-Length: 1000000000\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"connection: close" in reply.lower()

        # too large, chunked (no Content-Length): refused once past the limit.  Raw bytes,
        # all sent before the answer is read, so the refusal is not lost to a reset
        chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
        reply = raw_exchange(port, b"POST /events/in HTTP/1.1\r\nHost: x\r\n" + stamped +
                                   b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 5)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"connection: close" in reply.lower()

        # slow clients: a body that trickles in gets 408 ...
        head = (b"POST /events/in HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + stamped + b"Content-Length: 100\r\n\r\n")
        reply = raw_exchange(port, head + b'{"type":')  # and then nothing more
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        # ... and one that never finishes its request line is disconnected
        started = time.monotonic()
        reply = raw_exchange(port, b"GET /hea")
        assert reply == b"" and time.monotonic() - started < 20
        # meanwhile nothing else waited: a good request passes at once
        good = b'{"type": "ok.real", "id": "good-1"}'
        answer = httpx.post(url, content=good, headers=signed(good), timeout=10)
        assert answer.status_code == 202, answer.text

        m = samples(httpx.get(f"{base}/metrics", timeout=10).text)
        bad = {dict(labels)["reason"]: v for (name, labels), v in m.items()
               if name == "ccbus_source_bad_input_total"}
        assert bad == {"too_large": 2, "invalid_json": 1, "invalid_event": 1,
                       "unauthorized": 3, "slow_body": 1}
        status = {labels[0][1]: v for (name, labels), v in m.items()
                  if name == "ccbus_http_responses_total"}
        # 400: two bodies, and the request line never finished (Hypercorn's own answer,
        # counted as a protocol error)
        assert status["413"] == 2 and status["400"] == 3 and status["401"] == 3
        refused = ("ccbus_http_refused_requests_total", (("reason", "protocol_400"),))
        assert m[refused] == 1
        assert status["404"] == 1 and status["405"] == 2 and status["408"] == 1
        assert m[("ccbus_events_in_total", (("source", "in"), ("type", "ok.real")))] == 1
        assert proc.poll() is None
        text = log.read_text()
        assert "refused a request from 127.0.0.1 with 401: signature does not match" in text
        assert "Traceback" not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]

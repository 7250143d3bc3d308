"""Bad input at the syslog ports of a running ``ccbus run``: refused, counted, harmless.

One real process with a syslog-only ``cisco-cvp`` source (UDP and TCP) and the
HTTP listener for ``/metrics``.  Over real sockets it gets oversized frames
(octet-counted and newline-framed), broken framing, garbage, a sender that
trickles one message byte by byte, connections beyond ``max_connections`` and
connections that go quiet; then ``/metrics`` must show each refusal under its
reason in ``ccbus_source_bad_input_total``, the dead-letter file must hold them,
and good messages sent afterwards (and in between) must still arrive.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

CCBUS = str(Path(sys.executable).parent / "ccbus")
LOGGER = shutil.which("logger") or "logger"
MAX_BYTES = 1024
READ_TIMEOUT = 1.0
IDLE_TIMEOUT = 3.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; ccbus log:\n{log.read_text()[-3000:]}")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except OSError:
        return 0, ""


def metrics(http: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    _, text = get(f"http://127.0.0.1:{http}/metrics")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def bad_input(http: int) -> dict[str, float]:
    return {dict(labels)["reason"]: value for (name, labels), value in metrics(http).items()
            if name == "ccbus_source_bad_input_total" and dict(labels)["source"] == "cvp"}


def syslog_events(http: int) -> float:
    key = ("ccbus_events_in_total", frozenset({("source", "cvp"), ("type", "cvp.syslog")}))
    return metrics(http).get(key, 0.0)


def closed_by_server(sock: socket.socket, within: float) -> float:
    """Seconds until the server closed ``sock`` (EOF or reset); fails after ``within``."""
    started = time.monotonic()
    sock.settimeout(within)
    try:
        while sock.recv(4096):  # syslog never answers: anything but EOF is a failure below
            raise AssertionError("the syslog listener sent data")
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the connection was still open after {within}s") from None
    return time.monotonic() - started


def send_and_expect_close(tcp: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", tcp), timeout=10) as sock:
        sock.sendall(data)
        closed_by_server(sock, 10)


def trickle_until_closed(tcp: int, message: bytes, every: float) -> float:
    """Send ``message`` a byte every ``every`` seconds; seconds until the server hung up."""
    with socket.create_connection(("127.0.0.1", tcp), timeout=10) as sock:
        started = time.monotonic()
        for byte in message:
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            readable, _, _ = select.select([sock], [], [], every)
            if readable:  # EOF: the server closed it
                break
        else:
            raise AssertionError("the whole message trickled in without a disconnect")
        closed_by_server(sock, 10)
        return time.monotonic() - started


def test_bad_syslog_input_is_refused_counted_and_good_messages_still_arrive(
    tmp_path: Path,
) -> None:
    http, tcp, udp = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "log.yaml").write_text(
        "rules: [{name: show, on: cvp.syslog, do: [log: 'syslog says {message}']}]\n")
    (tmp_path / "ccbus.yaml").write_text(textwrap.dedent(f"""\
        sources:
          cvp:
            plugin: cisco-cvp
            options:
              syslog:
                udp: "127.0.0.1:{udp}"
                tcp: "127.0.0.1:{tcp}"
                max_message_bytes: {MAX_BYTES}
                max_connections: 2
                read_timeout: {READ_TIMEOUT}s
                idle_timeout: {IDLE_TIMEOUT}s
        rules: [rules]
        state_dir: state
        http: {{listen: "127.0.0.1:{http}"}}
        """))
    log = tmp_path / "ccbus.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([CCBUS, "run", "-c", str(tmp_path / "ccbus.yaml")],
                                stdout=out, stderr=out, env=dict(os.environ))
    try:
        wait_until(lambda: get(f"http://127.0.0.1:{http}/readyz")[0] == 200, 60, "ready", log)
        # ready means running; the listeners are bound a moment later (the source says so)
        wait_until(lambda: f"syslog on tcp 127.0.0.1:{tcp}" in log.read_text(), 30,
                   "the TCP listener", log)
        good = 0

        # UDP: garbage datagrams
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"\xff\xfe not syslog at all", ("127.0.0.1", udp))
            sock.sendto(b"<999>1 - - - - - -", ("127.0.0.1", udp))

        # TCP: oversized frames, octet-counted (refused from the count) and newline-framed
        send_and_expect_close(tcp, b"%d <13>" % (MAX_BYTES + 1) + b"x" * 100)
        send_and_expect_close(tcp, b"<13>" + b"y" * (MAX_BYTES + 10))
        # TCP: a broken octet count: the stream is out of step and closed
        send_and_expect_close(tcp, b"12ab <13>hello\n")

        # TCP: a well-framed message that is not syslog is refused; the connection goes on
        with socket.create_connection(("127.0.0.1", tcp), timeout=10) as sock:
            sock.sendall(b"\x00\x01junk\n<13>after the junk\n")
            good += 1
            wait_until(lambda: syslog_events(http) == good, 20, "the message after junk", log)

        # TCP: a sender that trickles a message in is cut off by read_timeout, although
        # bytes keep coming (a per-read timeout alone would never fire)
        took = trickle_until_closed(tcp, b"<13>" + b"z" * 200 + b"\n", every=0.2)
        assert READ_TIMEOUT - 0.1 <= took < READ_TIMEOUT + 5, took

        # TCP: max_connections. Two senders hold both slots (each has delivered one message)
        a = socket.create_connection(("127.0.0.1", tcp), timeout=10)
        b = socket.create_connection(("127.0.0.1", tcp), timeout=10)
        with a, b:
            a.sendall(b"<13>slot a\n")
            b.sendall(b"<13>slot b\n")
            good += 2
            wait_until(lambda: syslog_events(http) == good, 20, "slots a and b", log)
            quiet_since = time.monotonic()
            with socket.create_connection(("127.0.0.1", tcp), timeout=10) as third:
                # refused at once, long before the other two go idle
                assert closed_by_server(third, IDLE_TIMEOUT - 1) < IDLE_TIMEOUT - 1
            # the two quiet ones are closed after idle_timeout, freeing their slots
            closed_by_server(a, IDLE_TIMEOUT + 10)
            closed_by_server(b, IDLE_TIMEOUT + 10)
            assert time.monotonic() - quiet_since >= IDLE_TIMEOUT - 1

        # after all that: good messages from util-linux's logger, over TCP and UDP
        for transport in ("-T", "-d"):
            port = str(tcp if transport == "-T" else udp)
            subprocess.run([LOGGER, transport, "-n", "127.0.0.1", "-P", port, "--rfc5424",
                            "-t", "CVP", f"still fine over {transport}"], check=True)
            good += 1
        wait_until(lambda: syslog_events(http) == good, 20, "the logger messages", log)

        expected = {"no_priority": 2, "bad_priority": 1, "too_long": 2, "bad_framing": 1,
                    "slow_message": 1, "too_many_connections": 1}
        wait_until(lambda: bad_input(http) == expected, 20, f"bad input {expected}", log)
        assert proc.poll() is None

        letters = (tmp_path / "state" / "sources" / "cvp" / "dead-letters.jsonl").read_text()
        reasons = [json.loads(line)["reason"] for line in letters.splitlines()]
        assert sorted(reasons) == sorted(r for r, n in expected.items() for _ in range(int(n)))
        text = log.read_text()
        assert "refused a message (slow_message) from peer tcp 127.0.0.1:" in text
        assert "TCP message not complete within 1s" in text
        assert "refused a message (too_many_connections)" in text
        assert "nothing sent for 3s" in text
        for message in ("after the junk", "slot a", "slot b", "still fine over -T",
                        "still fine over -d"):
            assert f"syslog says {message}" in text, message
        assert "Traceback" not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]

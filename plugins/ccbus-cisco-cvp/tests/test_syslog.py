"""The syslog channel: parsing, and real datagrams and streams from util-linux's ``logger``."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from ccbus_cisco_cvp.scenarios import contact_center, syslog_lines
from ccbus_cisco_cvp.syslog import SyslogError, TcpFramer, parse

from ccbus.testing import wait_until

LOGGER = shutil.which("logger") or "logger"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def logger(*args: str) -> None:
    """Run util-linux's logger; it must succeed."""
    result = await anyio.run_process([LOGGER, *args], check=False)
    assert result.returncode == 0, result.stderr


# -- parsing ------------------------------------------------------------------------------


def test_rfc5424_with_structured_data_and_escapes() -> None:
    fields = parse(
        b'<165>1 2026-11-22T09:00:00.123456Z cvp-cs-01 CVP 4242 THRESHOLD '
        b'[cvp@9 metric="cpu_usage" note="a \\"quoted\\" \\] bracket"][origin ip="10.0.0.5"] '
        b"\xef\xbb\xbfCPU at 97%"
    )
    assert fields == {
        "facility": "local4", "facilityCode": 20, "severity": "notice", "severityCode": 5,
        "format": "rfc5424", "timestamp": "2026-11-22T09:00:00.123456Z", "host": "cvp-cs-01",
        "app": "CVP", "procid": "4242", "msgid": "THRESHOLD", "message": "CPU at 97%",
        "structuredData": {"cvp@9": {"metric": "cpu_usage", "note": 'a "quoted" ] bracket'},
                           "origin": {"ip": "10.0.0.5"}},
    }


def test_rfc5424_nil_values_and_no_message() -> None:
    fields = parse(b"<14>1 - - - - - -")
    assert fields["host"] is None and fields["app"] is None and fields["message"] == ""
    assert "structuredData" not in fields


def test_rfc3164_with_and_without_hostname() -> None:
    fields = parse(b"<187>Nov  5 09:01:02 cvp-cs-02 CVP[77]: %CVP_12_6_ICM-3-CALL_ERROR: x\n")
    assert (fields["facility"], fields["severity"]) == ("local7", "err")
    assert (fields["host"], fields["app"], fields["procid"]) == ("cvp-cs-02", "CVP", "77")
    assert fields["timestamp"] == "Nov  5 09:01:02"
    assert fields["message"] == "%CVP_12_6_ICM-3-CALL_ERROR: x"
    bare = parse(b"<13>Nov 22 10:00:00 CVP: no host here")
    assert (bare["host"], bare["app"], bare["message"]) == (None, "CVP", "no host here")
    untimed = parse(b"<13>just text")
    assert untimed["message"] == "just text" and untimed["timestamp"] is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"hello", "no_priority"),
        (b"<999>1 - - - - - -", "bad_priority"),
        (b"<14>1 2026-11-22T09:00:00Z host", "bad_header"),
        (b"<14>1 2026-11-22T09:00:00Z host app - - [broken", "bad_structured_data"),
        (b"<14>1 2026-11-22T09:00:00Z host app - - {x}", "bad_structured_data"),
    ],
)
def test_not_syslog_says_why(raw: bytes, reason: str) -> None:
    with pytest.raises(SyslogError) as err:
        parse(raw)
    assert err.value.reason == reason


def test_tcp_framing_octet_counted_and_newline_mixed_and_split() -> None:
    framer = TcpFramer(1000)
    stream = b"11 <13>hello 1" + b"<13>line two\n" + b"9 <13>three"
    assert framer.feed(stream[:5]) == []
    assert framer.feed(stream[5:]) == [b"<13>hello 1", b"<13>line two", b"<13>three"]
    with pytest.raises(SyslogError) as err:
        TcpFramer(10).feed(b"99 <13>long")
    assert err.value.reason == "too_long"
    with pytest.raises(SyslogError) as err:
        TcpFramer(10).feed(b"<13>no newline and far too long")
    assert err.value.reason == "too_long"
    # a newline in the same chunk does not let a long line through
    with pytest.raises(SyslogError) as err:
        TcpFramer(10).feed(b"<13>far too long, with its newline\n")
    assert err.value.reason == "too_long"
    assert TcpFramer(10).feed(b"<13>short\n") == [b"<13>short"]


@pytest.mark.parametrize("stream", [b"12ab <13>hello\n", b"12345678901", b"1-2 <13>x"])
def test_a_broken_octet_count_is_bad_framing(stream: bytes) -> None:
    with pytest.raises(SyslogError) as err:
        TcpFramer(1000).feed(stream)
    assert err.value.reason == "bad_framing"


# -- real senders -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_logger_udp_rfc5424_and_rfc3164_reach_the_source(
    tmp_path: Path, cvp_source: Any
) -> None:
    port = free_udp_port()
    async with cvp_source({"syslog": {"udp": f"127.0.0.1:{port}"}}) as c:
        assert c.source.udp_port == port
        assert c.states == ["binding", "listening"]  # not ready until bound
        await logger("-d", "-n", "127.0.0.1", "-P", str(port), "--rfc5424", "-t", "CVP",
                     "-p", "local4.err", "--msgid", "CALL_ERROR", "--sd-id", "cvp@9",
                     "--sd-param", 'callGuid="ABC123"', "--sd-param", 'errorCode="CVP-7"',
                     "ICM did not answer")
        await logger("-d", "-n", "127.0.0.1", "-P", str(port), "--rfc3164", "-t", "VXML",
                     "-p", "local3.warning", "disk 91% on vxml-02")
        await wait_until(lambda: len(c.events) == 2, timeout=30)
    first, second = c.events
    assert first.type == second.type == "cvp.syslog"
    assert first.data["format"] == "rfc5424"
    assert (first.data["facility"], first.data["severity"]) == ("local4", "err")
    assert (first.data["app"], first.data["msgid"]) == ("CVP", "CALL_ERROR")
    assert first.data["message"] == "ICM did not answer"
    assert first.data["structuredData"]["cvp@9"] == {"callGuid": "ABC123", "errorCode": "CVP-7"}
    assert first.data["host"] == socket.gethostname() == first.subject
    assert second.data["format"] == "rfc3164"
    assert (second.data["facility"], second.data["severity"]) == ("local3", "warning")
    assert (second.data["app"], second.data["message"]) == ("VXML", "disk 91% on vxml-02")
    assert first.vendor == "cvp"


@pytest.mark.anyio
async def test_logger_tcp_newline_and_octet_counted(tmp_path: Path, cvp_source: Any) -> None:
    port = free_tcp_port()
    async with cvp_source({"syslog": {"udp": None, "tcp": f"127.0.0.1:{port}"}}) as c:
        await logger("-T", "-n", "127.0.0.1", "-P", str(port), "--rfc5424", "-t", "CVP",
                     "-p", "local4.notice", "--sd-id", "cvp@9", "--sd-param", 'metric="cpu"',
                     "plain framing")
        await logger("-T", "--octet-count", "-n", "127.0.0.1", "-P", str(port), "--rfc3164",
                     "-t", "CVP", "-p", "local4.info", "octet counted")
        await wait_until(lambda: len(c.events) == 2, timeout=30)
    assert [e.data["message"] for e in c.events] == ["plain framing", "octet counted"]
    # logger adds its own timeQuality element next to ours
    assert c.events[0].data["structuredData"]["cvp@9"] == {"metric": "cpu"}
    assert "tzKnown" in c.events[0].data["structuredData"]["timeQuality"]
    assert c.events[0].data["peer"].startswith("tcp 127.0.0.1:")


@pytest.mark.anyio
async def test_tcp_last_message_without_newline_is_delivered_on_close(
    cvp_source: Any
) -> None:
    """A real TCP client sends two messages, the last without its newline, and closes:
    both arrive.  An octet-counted frame cut short by the close is refused, counted."""
    port = free_tcp_port()
    async with cvp_source({"syslog": {"udp": None, "tcp": f"127.0.0.1:{port}"}}) as c:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"<14>first line\n<14>last line, no newline")
        await wait_until(lambda: len(c.events) == 2, timeout=30)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"<14>whole\n")
            sock.sendall(b"100 <14>cut short")
        await wait_until(lambda: c.source.rejected.get("truncated_frame") == 1, timeout=30)
        await wait_until(lambda: len(c.events) == 3, timeout=30)
    assert [e.data["message"] for e in c.events] == ["first line", "last line, no newline",
                                                     "whole"]


@pytest.mark.anyio
async def test_garbage_datagrams_are_counted_logged_kept_and_the_listener_goes_on(
    tmp_path: Path, cvp_source: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "ccbus.source.cvp")
    port = free_udp_port()
    async with cvp_source({"syslog": {"udp": f"127.0.0.1:{port}"}}) as c:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"\x00\x01binary junk", ("127.0.0.1", port))
            sock.sendto(b"<14>1 2026-11-22T09:00:00Z h a - - [oops", ("127.0.0.1", port))
        await logger("-d", "-n", "127.0.0.1", "-P", str(port), "still alive")
        await wait_until(lambda: len(c.events) == 1, timeout=30)
        await wait_until(lambda: c.source.dead_letters.written == 2, timeout=30)
    assert c.source.rejected == {"no_priority": 1, "bad_structured_data": 1}
    assert c.events[0].data["message"] == "still alive"
    assert "source cvp: refused a message (no_priority) from peer udp 127.0.0.1:" in caplog.text
    letters = c.source.dead_letters.read()
    assert [r["reason"] for r in letters] == ["no_priority", "bad_structured_data"]
    assert letters[0]["peer"].startswith("udp 127.0.0.1:")


@pytest.mark.anyio
async def test_udp_overflow_is_dropped_and_counted_not_silently(
    tmp_path: Path, cvp_source: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "ccbus.source.cvp")
    release = anyio.Event()

    async def slow_bus(event: Any) -> None:
        await release.wait()

    port = free_udp_port()
    options = {"syslog": {"udp": f"127.0.0.1:{port}", "queue_size": 5}}
    async with cvp_source(options, emit=slow_bus) as c:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for n in range(40):
                sock.sendto(b"<14>message %d" % n, ("127.0.0.1", port))
        # at most one is held by the stuck emit and five wait in the queue: the rest are dropped
        await wait_until(lambda: c.source.syslog_dropped >= 34, timeout=30)
        assert "syslog queue full (5): dropped a datagram from 127.0.0.1" in caplog.text
        release.set()
        # none lost silently: every datagram was either emitted or counted as dropped
        await wait_until(lambda: len(c.events) + c.source.syslog_dropped == 40, timeout=30)
        assert c.source.received["syslog"] == len(c.events)


@pytest.mark.anyio
async def test_datagrams_the_kernel_drops_are_counted_on_metrics(
    cvp_bus: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop is kept from reading while 2,000 datagrams arrive at a small receive
    buffer: the kernel drops most of them, and ``/metrics`` says how many, the
    same number as the kernel's own count."""
    from ccbus.observe.metrics import families, render

    caplog.set_level(logging.WARNING, "ccbus.source.cvp")
    port = free_udp_port()
    options = {"syslog": {"udp": f"127.0.0.1:{port}", "receive_buffer": 4096}}
    async with cvp_bus(options) as harness:
        source = harness.source()
        with anyio.fail_after(30):
            await source.listening.wait()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for n in range(2000):  # synchronous: the event loop reads none of them meanwhile
                sock.sendto(b"<14>flood %d" % n, ("127.0.0.1", port))
        await wait_until(lambda: source.syslog_kernel_dropped > 0, timeout=30)
        await anyio.sleep(1.5)  # one more reading of the kernel's count: all of it counted
        text = render(families(harness.bus, *await harness.bus.outbox_counts()))
        line = next(line for line in text.splitlines()
                    if line.startswith("ccbus_source_bad_input_total")
                    and 'reason="kernel_drop"' in line)
        counted = float(line.rsplit(" ", 1)[1])
        assert counted == source.syslog_kernel_dropped > 1000
        assert source.received["syslog"] + counted == 2000
        assert "the kernel dropped" in caplog.text and "syslog.receive_buffer" in caplog.text


def test_kernel_drops_reads_the_sockets_line_of_proc_net_udp(tmp_path: Path) -> None:
    from ccbus_cisco_cvp.syslog import kernel_drops

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        assert kernel_drops(sock) == 0  # the real /proc/net/udp
        assert kernel_drops(sock, tmp_path) is None  # no such file: not Linux


@pytest.mark.anyio
async def test_the_simulators_syslog_lines_parse(tmp_path: Path, cvp_source: Any) -> None:
    lines = syslog_lines(contact_center(8, seed=3))
    assert len(lines) >= 6
    port = free_tcp_port()
    async with cvp_source({"syslog": {"udp": None, "tcp": f"127.0.0.1:{port}"}}) as c:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            for line in lines:
                await stream.send(b"%d %s" % (len(line), line))
        await wait_until(lambda: len(c.events) == len(lines), timeout=30)
    assert c.source.rejected == {}
    formats = {e.data["format"] for e in c.events}
    assert formats == {"rfc5424", "rfc3164"}
    assert any("cvp@9" in e.data.get("structuredData", {}) for e in c.events)


def test_logger_is_util_linux() -> None:
    out = subprocess.run([LOGGER, "--version"], capture_output=True, text=True, check=True)
    assert "util-linux" in out.stdout


def test_a_syslog_error_is_the_cores_refused_input() -> None:
    """Raised inside ``ctx.convert``, it is a dead letter with its own reason (issue #16)."""
    from ccbus_cisco_cvp.errors import SyslogError as Error

    from ccbus import RefusedInput

    assert Error is SyslogError and issubclass(SyslogError, RefusedInput)
    with pytest.raises(RefusedInput) as err:
        parse(b"no priority")
    assert (err.value.reason, err.value.detail) == (
        "no_priority", "syslog message does not start with <PRI>")

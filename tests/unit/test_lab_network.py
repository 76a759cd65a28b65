"""The lab's stand-ins for the network's costs, on loopback: the receivers' per-address connection cap
(421 4.7.0 above it, a slot freed when a connection closes) and the delay relay (each direction held for
its delay, order kept, TLS-agnostic bytes, 0 ms forwards at once)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailhost.lab import delayrelay, receiver, tlsstats


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Loop:
    """An event loop on a thread, so the tests can talk to its servers with plain blocking sockets."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def start(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def stop(self) -> None:
        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0.05)  # the transports' close callbacks

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.stop()


def connect(port: int, timeout: float = 5) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def line(sock: socket.socket) -> bytes:
    """One whole SMTP reply, however TCP cuts or joins it: read until the last line is a final one
    (`NNN ` rather than `NNN-`). A busy machine joins EHLO's lines into one segment, so reading to the
    first CRLF is not enough."""
    data = b""
    while True:
        chunk = sock.recv(1024)
        if not chunk:
            return data
        data += chunk
        if data.endswith(b"\r\n") and data.split(b"\r\n")[-2][3:4] != b"-":
            return data


def test_the_cap_refuses_with_421_above_the_limit_and_frees_a_slot_on_close(loop: Loop, tmp_path: Path) -> None:
    port = free_port()
    handler = receiver.Handler(["example.net"], tmp_path / "mx.jsonl", None, judge=False)  # type: ignore[arg-type]
    loop.start(receiver.serve(["127.0.0.1"], port, "mx.example.net", handler, tmp_path / "conns.jsonl",
                              tlsstats.ConnectionCap(2)))
    first, second = connect(port), connect(port)
    assert line(first).startswith(b"220 ") and line(second).startswith(b"220 ")
    third = connect(port)
    assert line(third) == tlsstats.ConnectionCap.REPLY
    assert third.recv(10) == b"", "and the connection is closed"
    first.sendall(b"QUIT\r\n")
    assert line(first).startswith(b"221")
    first.close()
    time.sleep(0.3)
    fourth = connect(port)
    assert line(fourth).startswith(b"220 "), "a closed connection frees its slot"
    for sock in (second, third, fourth):
        sock.close()
    time.sleep(0.3)
    entries = [json.loads(x) for x in (tmp_path / "conns.jsonl").read_text().splitlines()]
    stats = tlsstats.summary(entries)
    assert stats["refused_421"] == 1 and stats["connections"] == len(entries) - 1


def test_the_delay_relay_holds_each_direction_and_keeps_the_order(loop: Loop) -> None:
    echo_port, relay_port = free_port(), free_port()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def start_echo() -> None:
        server = await asyncio.start_server(echo, "127.0.0.1", echo_port)
        await server.serve_forever()

    loop.start(start_echo())
    loop.start(delayrelay.serve(["127.0.0.1"], relay_port, ("127.0.0.1", echo_port), 0.1))
    sock = connect(relay_port)
    started = time.monotonic()
    sock.sendall(b"one ")
    sock.sendall(b"two ")
    sock.sendall(b"three")
    got = b""
    while len(got) < len(b"one two three"):
        got += sock.recv(1024)
    elapsed = time.monotonic() - started
    assert got == b"one two three"
    # The floor is the promise (twice the one-way 100 ms); the ceiling only says it did not hang, so that a
    # busy machine (the mutation gate beside CI) cannot fail it.
    assert 0.2 <= elapsed < 10, f"{elapsed:.3f}s: a round trip through it costs twice the one-way 100 ms"
    sock.shutdown(socket.SHUT_WR)
    assert sock.recv(10) == b"", "a half-close passes through"
    sock.close()

    zero = free_port()
    loop.start(delayrelay.serve(["127.0.0.1"], zero, ("127.0.0.1", echo_port), 0.0))
    sock = connect(zero)
    started = time.monotonic()
    sock.sendall(b"ping")
    assert sock.recv(10) == b"ping" and time.monotonic() - started < 0.2, "0 ms holds nothing back"
    sock.close()


def test_a_connection_that_starts_tls_is_counted_once_and_keeps_its_slot(loop: Loop, tmp_path: Path) -> None:
    """aiosmtpd calls connection_made again for the TLS layer after STARTTLS: that is the same connection,
    neither a second one under the cap nor a refusal of the first."""
    import ssl

    port = free_port()
    handler = receiver.Handler(["example.net"], tmp_path / "mx.jsonl", None, judge=False)  # type: ignore[arg-type]
    loop.start(receiver.serve(["127.0.0.1"], port, "mx.example.net", handler, tmp_path / "conns.jsonl",
                              tlsstats.ConnectionCap(1)))
    plain = connect(port)
    assert line(plain).startswith(b"220 ")
    plain.sendall(b"EHLO jira.example.com\r\n")
    ehlo = line(plain).split(b"\r\n")[:-1]
    assert all(x.startswith(b"250-") for x in ehlo[:-1]) and ehlo[-1].startswith(b"250 "), ehlo
    assert b"250-STARTTLS" in ehlo, ehlo
    plain.sendall(b"STARTTLS\r\n")
    assert line(plain).startswith(b"220 ")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    secure = context.wrap_socket(plain, server_hostname="mx.example.net")
    secure.sendall(b"EHLO jira.example.com\r\n")
    assert line(secure).startswith(b"250"), "the TLS layer is not refused by the cap"
    other = connect(port)
    assert line(other) == tlsstats.ConnectionCap.REPLY, "the TLS connection still holds the only slot"
    other.close()
    secure.sendall(b"QUIT\r\n")
    line(secure)
    secure.close()
    time.sleep(0.3)
    after = connect(port)
    assert line(after).startswith(b"220 "), "and gives it back once, when it closes"
    after.close()


def test_the_stripping_relay_hides_starttls_and_nothing_else(loop: Loop, tmp_path: Path) -> None:
    """The lab's attacker on the path: the receiver offers STARTTLS, the client behind the relay never
    sees the offer (the line keeps its length), every other line and the session itself pass unchanged."""
    port, strip = free_port(), free_port()
    handler = receiver.Handler(["example.net"], tmp_path / "mx.jsonl", None, judge=False)  # type: ignore[arg-type]
    loop.start(receiver.serve(["127.0.0.1"], port, "mx.example.net", handler, tmp_path / "conns.jsonl"))
    loop.start(delayrelay.serve(["127.0.0.1"], strip, ("127.0.0.1", port), 0.0, strip_starttls=True))
    replies = []
    for target in (port, strip):
        sock = connect(target)
        assert line(sock).startswith(b"220 ")
        sock.sendall(b"EHLO jira.example.com\r\n")
        replies.append(line(sock))
        sock.sendall(b"MAIL FROM:<jira@example.com>\r\n")
        assert line(sock).startswith(b"250 "), "the session goes on in clear"
        sock.sendall(b"QUIT\r\n")
        line(sock)
        sock.close()
    direct, stripped = replies
    assert b"250-STARTTLS\r\n" in direct and b"STARTTLS" not in stripped.upper()
    assert stripped == direct.replace(b"250-STARTTLS\r\n", b"250-XXXXXXXA\r\n")


def test_the_stripper_rewrites_whole_lines_however_reads_cut_them() -> None:
    stripper = delayrelay.Stripper()
    out = [stripper(b"250-mx.example.net\r\n250-STAR"), stripper(b"TTLS\r\n250 SMTPUTF8\r\n"), stripper(b"")]
    assert b"".join(out) == b"250-mx.example.net\r\n250-XXXXXXXA\r\n250 SMTPUTF8\r\n"
    assert stripper(b"250 starttls\n") == b"250 XXXXXXXA\n", "the last line, any case, bare LF"
    assert stripper(b"220 mx STARTTLS ready\r\n354 STARTTLS\r\n") == b"220 mx STARTTLS ready\r\n354 STARTTLS\r\n", \
        "only an EHLO offer line, never the words elsewhere"

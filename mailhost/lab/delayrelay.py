"""A TCP relay that adds a one-way delay to every segment in both directions: round trips in userspace.

The lab's namespaces answer each other in microseconds and this kernel has no `sch_netem`, so
nothing in the lab costs what a real round trip costs.  This relay sits in front of a receiver
(it takes the receiver's address and port; the receiver moves to another port) and holds every
chunk it reads for `--delay-ms` before passing it on, keeping the order, in each direction: a
round trip through it costs twice the delay.  TLS passes through untouched (it only moves bytes).
With `--delay-ms 0` it forwards at once, which shows what the relay itself costs.

With `--strip-starttls` it is also the attacker on the path (or a firewall's "SMTP inspection"): it
rewrites the receiver's `250-STARTTLS` line to `250-XXXXXXXA`, keeping every other byte, so the
client sees a server without TLS and, unless its policy requires TLS, talks in clear.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re

CHUNK = 64 * 1024
# An EHLO reply line offering STARTTLS; the rewrite keeps its length, as the classic strippers do.
_STARTTLS = re.compile(rb"^(250[ -])STARTTLS(\r?\n)", re.IGNORECASE | re.MULTILINE)


class Stripper:
    """Rewrites whole lines only: a line cut between two reads waits for its end."""

    def __init__(self) -> None:
        self.partial = b""

    def __call__(self, data: bytes) -> bytes:
        data, self.partial = self.partial + data, b""
        if not data:
            return data
        cut = data.rfind(b"\n") + 1
        data, self.partial = data[:cut], data[cut:]
        return _STARTTLS.sub(rb"\1XXXXXXXA\2", data)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float,
               rewrite: Stripper | None = None) -> None:
    """Forward every chunk `delay` seconds after it arrived, in order; then half-close."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        while data := await reader.read(CHUNK):
            if rewrite is not None and not (data := rewrite(data)):
                continue
            queue.put_nowait((loop.time() + delay, data))
        if rewrite is not None and rewrite.partial:
            queue.put_nowait((loop.time() + delay, rewrite.partial))
        queue.put_nowait((loop.time() + delay, b""))

    reading = asyncio.create_task(read())
    try:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
    finally:
        reading.cancel()


async def serve(listen: list[str], port: int, target: tuple[str, int], delay: float,
                strip_starttls: bool = False) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(pipe(client_reader, server_writer, delay),
                                 pipe(server_reader, client_writer, delay, Stripper() if strip_starttls else None))
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()

    servers = [await asyncio.start_server(handle, host, port, limit=CHUNK) for host in listen]
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--to", required=True, help="HOST:PORT of the receiver behind it")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay (a round trip costs twice)")
    parser.add_argument("--strip-starttls", action="store_true", help="hide the receiver's STARTTLS offer")
    args = parser.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    asyncio.run(serve(args.listen, args.port, (host.strip("[]"), int(port)), args.delay_ms / 1000,
                      args.strip_starttls))


if __name__ == "__main__":
    main()

"""A UDP DNS relay that adds a fixed round-trip time: loopback made to look like a network.

On loopback a lookup costs ~0.1 ms, so timing verify there measures only Python CPU.  Real
resolvers and authoritative servers are 5-100 ms away; this relay (its own process, so its
work does not share the verifier's CPU time slice) forwards each query to the upstream server
and each answer back, half the RTT each way.  UDP only: a truncated answer fails loudly.
Usage: python bench/dns_delay.py LISTEN_PORT UPSTREAM_PORT RTT_MS
"""

from __future__ import annotations

import asyncio
import itertools
import sys


class Relay(asyncio.DatagramProtocol):
    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.delay = delay
        self.pending: dict[int, tuple[tuple[str, int], bytes]] = {}
        self.ids = itertools.cycle(range(1, 65536))
        self.transport: asyncio.DatagramTransport | None = None
        self.up: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
        if addr == self.upstream:
            entry = self.pending.pop(int.from_bytes(data[:2], "big"), None)
            if entry is not None:
                client, original_id = entry
                self._later(original_id + data[2:], client)
            return
        new_id = next(self.ids)
        self.pending[new_id] = (addr, data[:2])
        self._later(new_id.to_bytes(2, "big") + data[2:], self.upstream)

    def _later(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        asyncio.get_running_loop().call_later(self.delay, self.transport.sendto, data, to)


async def main(listen: int, upstream: int, rtt_ms: float) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(
        lambda: Relay(upstream, rtt_ms / 2000), local_addr=("127.0.0.1", listen)
    )
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))

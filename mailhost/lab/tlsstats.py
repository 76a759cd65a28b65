"""Connections and TLS handshakes as a receiver counts them: one JSON line per SMTP connection.

The lab's MX and smarthost count at their end, not from the sender's log: each connection
gets a number, notes whether it completed STARTTLS (one handshake) and how many messages it
carried, and is written out when it closes.  `summary` turns that into what the TLS-reuse
benchmark prints: handshakes, messages per handshake, longest and median reuse chain.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Session

_numbers = itertools.count(1)


def count_message(session: Session) -> None:
    """Called by a handler for each message it accepted on this connection."""
    session.lab_messages = getattr(session, "lab_messages", 0) + 1  # type: ignore[attr-defined]


class ConnectionCap:
    """Concurrent connections per client address, as Gmail and Microsoft cap them: above `limit` a new
    connection is answered `421 4.7.0` at once and closed (the sender defers and retries)."""

    REPLY = b"421 4.7.0 Too many concurrent SMTP connections from this IP address; try again later\r\n"

    def __init__(self, limit: int):
        self.limit = limit
        self.open: collections.Counter[str] = collections.Counter()

    def admit(self, ip: str) -> bool:
        if self.open[ip] >= self.limit:
            return False
        self.open[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.open[ip] -= 1


class CountingSMTP(SMTP):
    """aiosmtpd's SMTP writing one line per connection to `conn_log` when the connection closes."""

    def __init__(self, *args: Any, conn_log: Path | None = None, cap: ConnectionCap | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.conn_log = conn_log
        self.conn_number = next(_numbers)
        self.opened = time.time()
        self.handshakes = 0
        self.cap = cap
        self.capped_ip: str | None = None  # admitted under the cap: released when it closes
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.capped_ip is not None:  # called again for the TLS layer after STARTTLS: the same connection
            super().connection_made(transport)
            return
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if self.cap is not None and not self.cap.admit(ip):
            self.refused = True
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(ConnectionCap.REPLY)
            transport.close()
            if self.conn_log is not None:
                line = {"conn": self.conn_number, "peer": ip, "tls": False, "handshakes": 0, "messages": 0,
                        "opened": self.opened, "closed": time.time(), "refused": "421 4.7.0"}
                with self.conn_log.open("a") as out:
                    out.write(json.dumps(line) + "\n")
            return
        self.capped_ip = ip if self.cap is not None else None
        super().connection_made(transport)

    async def smtp_STARTTLS(self, arg: str) -> None:
        await super().smtp_STARTTLS(arg)
        if self.session is not None and self.session.ssl is not None:
            self.handshakes += 1

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return
        if self.cap is not None and self.capped_ip is not None:
            self.cap.release(self.capped_ip)
            self.capped_ip = None
        session = self.session
        if self.conn_log is not None:
            peer = session.peer if session is not None else None
            line = {"conn": self.conn_number, "peer": str(peer[0]) if isinstance(peer, tuple) else str(peer),
                    "tls": self.handshakes > 0, "handshakes": self.handshakes,
                    "messages": getattr(session, "lab_messages", 0), "opened": self.opened, "closed": time.time()}
            with self.conn_log.open("a") as out:
                out.write(json.dumps(line) + "\n")
        super().connection_lost(error)


def read(path: Path, since: float = 0.0) -> list[dict[str, Any]]:
    """Connections closed after `since` (one entry each: a STARTTLS layer may report its close too)."""
    if not path.exists():
        return []
    by_conn: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            if entry["closed"] >= since:
                by_conn[entry["conn"]] = entry
    return list(by_conn.values())


def summary(connections: list[dict[str, Any]]) -> dict[str, Any]:
    """Handshakes, messages over TLS, messages per handshake, longest and median chain (messages per TLS
    connection); connections that carried no message still cost their handshake.  Connections the
    receiver's cap turned away (421 4.7.0 at the greeting) are counted apart."""
    refused = [c for c in connections if c.get("refused")]
    connections = [c for c in connections if not c.get("refused")]
    tls = [c for c in connections if c["tls"]]
    chains = sorted(c["messages"] for c in tls)
    handshakes = sum(c["handshakes"] for c in tls)
    messages = sum(chains)
    return {
        "connections": len(connections),
        "handshakes": handshakes,
        "tls_messages": messages,
        "plain_messages": sum(c["messages"] for c in connections if not c["tls"]),
        "per_handshake": round(messages / handshakes, 1) if handshakes else 0.0,
        "longest_chain": chains[-1] if chains else 0,
        "median_chain": statistics.median(chains) if chains else 0,
        "refused_421": len(refused),
    }

"""The lab's smarthost for relay mode: submission on 587, STARTTLS then SASL AUTH, relays to the MX.

Mail is accepted only after it has been handed to the recipient domain's MX (found in
the lab DNS), so a refusal or outage shows up as a 4xx on the sender's side and the
mail stays in its queue: count in = count out.  With --store-and-forward it answers 250 once
the message is stored and relays afterwards (FORWARDERS at a time, retried), as real relays
do: the sender's drain then ends at the relay, not at the MX.  The password is read from a file the
lab keeps private (never the command line).  Killing the process is how the lab
"stops" it for the queued-mail test.

It presents the certificate it is given (--cert/--key: the lab CA's, or a rogue one a
test swaps in) and records, per session, what a man in the middle would have learnt
(--events): connections, STARTTLS, every AUTH attempt, and whether any bytes the
client sent contained the password (plain or base64, as AUTH PLAIN/LOGIN carry it).
The events never contain the bytes themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import hmac
import json
import smtplib
import ssl
import time
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import dns.exception
import dns.resolver
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailhost.lab import tlsstats, verdicts
from mailhost.lab.tlscert import context_from_files

FORWARDERS = 4  # relayed at once in store-and-forward mode
FORWARD_RETRY_SECONDS = 2.0
FORWARD_GIVE_UP_SECONDS = 300.0  # a real relay retries for days; the lab's tests wait minutes at most


class Authenticator:
    """Accepts exactly one user/password pair; compares in constant time."""

    def __init__(self, username: str, password: str):
        self.username = username.encode()
        self.password = password.encode()

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = hmac.compare_digest(data.login, self.username) and hmac.compare_digest(data.password, self.password)
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


class Relay:
    """aiosmtpd handler: hand each message to the MX of its recipients' domain before saying 250."""

    def __init__(self, hostname: str, source: str, res: dns.resolver.Resolver, log: Path,
                 limit: int = 0, window: float = 60.0, store_and_forward: bool = False):
        self.hostname = hostname
        self.source = source
        self.res = res
        self.log = log
        self.limit = limit  # messages per window, as Microsoft 365 limits a mailbox (0: no limit)
        self.window = window
        self.taken: collections.deque[float] = collections.deque()
        # As real relays do: answer 250 once the message is stored, relay it afterwards (retrying)
        self.store_and_forward = store_and_forward
        self.stored: asyncio.Queue[tuple[dict[str, Any], str, list[str], bytes]] | None = None
        self.forwarders: list[asyncio.Task[None]] = []  # held: the loop keeps only weak references

    def over_limit(self, now: float) -> bool:
        """A sliding window of the messages taken: one more now would pass the limit."""
        while self.taken and now - self.taken[0] >= self.window:
            self.taken.popleft()
        if self.limit and len(self.taken) >= self.limit:
            return True
        self.taken.append(now)
        return False

    def mx_address(self, domain: str) -> str:
        answer = self.res.resolve(domain, "MX")
        best = min(answer, key=lambda r: r.preference)
        return str(next(iter(self.res.resolve(str(best.exchange), "A"))))

    def deliver(self, mail_from: str, rcpts: list[str], content: bytes) -> None:
        by_domain: dict[str, list[str]] = {}
        for rcpt in rcpts:
            by_domain.setdefault(verdicts.domain_of(rcpt), []).append(rcpt)
        client_tls = ssl.create_default_context()
        client_tls.check_hostname = False
        client_tls.verify_mode = ssl.CERT_NONE  # lab MX certificates are self-signed
        for domain, group in by_domain.items():
            with smtplib.SMTP(self.mx_address(domain), 25, local_hostname=self.hostname,
                              source_address=(self.source, 0), timeout=60) as smtp:
                smtp.starttls(context=client_tls)
                smtp.ehlo(self.hostname)
                smtp.sendmail(mail_from, group, content)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        user = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        headers = BytesHeaderParser().parsebytes(content)
        entry: dict[str, Any] = {"time": time.time(), "mail_from": envelope.mail_from,
                                 "rcpt_to": list(envelope.rcpt_tos), "size": len(content), "user": user,
                                 "tls": session.ssl is not None, "message_id": str(headers.get("Message-ID", "")),
                                 "burst": str(headers.get("X-Lab-Burst", ""))}
        if self.over_limit(time.monotonic()):
            entry.update(relayed=False, rate_limited=True)
            self.write(entry)
            return "421 4.4.2 Message submission rate for this client has exceeded the configured limit"
        if self.store_and_forward:
            if self.stored is None:
                self.stored = asyncio.Queue()
                self.forwarders = [loop.create_task(self.forward()) for _ in range(FORWARDERS)]
            self.stored.put_nowait((entry, envelope.mail_from or "", list(envelope.rcpt_tos), content))
            tlsstats.count_message(session)
            return "250 2.0.0 OK: queued"
        try:
            await loop.run_in_executor(None, self.deliver, envelope.mail_from or "", list(envelope.rcpt_tos), content)
        except (OSError, smtplib.SMTPException, dns.exception.DNSException) as error:
            entry["relayed"] = False
            entry["error"] = str(error)[:300]
            self.write(entry)
            return "451 4.4.1 relay to the MX failed, try again later"
        entry["relayed"] = True
        self.write(entry)
        tlsstats.count_message(session)
        return "250 2.0.0 OK: relayed"

    async def forward(self) -> None:
        """One of the relay's delivery workers: each stored message to its MX, retried as a relay retries;
        its log entry (written when it leaves, `accepted` when it was stored) says whether it got there."""
        assert self.stored is not None
        loop = asyncio.get_running_loop()
        while True:
            entry, mail_from, rcpts, content = await self.stored.get()
            give_up = time.monotonic() + FORWARD_GIVE_UP_SECONDS
            entry["relayed"] = False
            while not entry["relayed"]:
                try:
                    await loop.run_in_executor(None, self.deliver, mail_from, rcpts, content)
                except (OSError, smtplib.SMTPException, dns.exception.DNSException) as error:
                    entry["error"] = str(error)[:300]
                    if time.monotonic() > give_up:
                        break
                    await asyncio.sleep(FORWARD_RETRY_SECONDS)
                    continue
                entry.pop("error", None)
                entry["relayed"] = True
            entry.update(accepted=entry["time"], time=time.time())
            self.write(entry)

    def write(self, entry: dict[str, Any]) -> None:
        with self.log.open("a") as out:
            out.write(json.dumps(entry, sort_keys=True) + "\n")


class Events:
    """Append-only JSON lines about sessions, for tests that must prove the password never left the host."""

    def __init__(self, path: Path, password: str):
        self.path = path
        self.password = password.encode()

    def write(self, event: str, peer: Any, **fields: Any) -> None:
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        with self.path.open("a") as out:
            out.write(json.dumps({"time": time.time(), "event": event, "peer": host, **fields}) + "\n")

    def holds_password(self, line: bytes) -> bool:
        """The password in a line, as sent or inside any base64 token of it (AUTH PLAIN/LOGIN)."""
        if self.password in line:
            return True
        for token in line.split():
            try:
                decoded = base64.b64decode(token, validate=True)
            except (binascii.Error, ValueError):
                continue
            if self.password in decoded:
                return True
        return False


class WatchedSMTP(tlsstats.CountingSMTP):
    """aiosmtpd's SMTP, reporting each session's STARTTLS, AUTH and password bytes to `Events`."""

    def __init__(self, *args: Any, events: Events, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.events = events
        self._partial = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:  # the TCP connection, not the switch to TLS
            self.events.write("connect", transport.get_extra_info("peername"))
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-4096:]
        if any(self.events.holds_password(line) for line in lines):
            self.events.write("password-received", self.session.peer if self.session else None)
        super().data_received(data)

    async def smtp_STARTTLS(self, arg: str) -> None:
        peer = self.session.peer if self.session else None
        self.events.write("starttls", peer)
        try:
            await super().smtp_STARTTLS(arg)
        except Exception:
            self.events.write("tls-failed", peer)
            raise
        self.events.write("tls-established", peer)

    async def smtp_AUTH(self, arg: str) -> None:
        self.events.write("auth", self.session.peer if self.session else None, mechanism=arg.split()[0] if arg else "")
        await super().smtp_AUTH(arg)


async def serve(addresses: list[str], port: int, hostname: str, handler: Relay, auth: Authenticator,
                context: ssl.SSLContext, events: Events, conn_log: Path | None = None) -> None:
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(
            lambda: WatchedSMTP(handler, hostname=hostname, tls_context=context, require_starttls=True,
                                auth_required=True, auth_require_tls=True, authenticator=auth,
                                data_size_limit=64 * 1024 * 1024, events=events, conn_log=conn_log),
            host=address, port=port)
        for address in addresses
    ]
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--port", type=int, default=587)
    parser.add_argument("--hostname", required=True)
    parser.add_argument("--source", required=True, help="own IPv4 address to relay from")
    parser.add_argument("--dns", required=True)
    parser.add_argument("--dns-port", type=int, default=53)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password-file", type=Path, required=True, help="file holding the SASL password (0600)")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True, help="certificate (PEM) to present")
    parser.add_argument("--key", type=Path, required=True, help="its private key (PEM, 0600)")
    parser.add_argument("--events", type=Path, required=True, help="session events (JSON lines)")
    parser.add_argument("--conn-log", type=Path, help="one JSON line per connection (tlsstats)")
    parser.add_argument("--max-per-window", type=int, default=0, help="answer 421 4.4.2 above this many messages")
    parser.add_argument("--window", type=float, default=60.0, help="... per this many seconds (sliding)")
    parser.add_argument("--store-and-forward", action="store_true",
                        help="answer 250 once stored and relay afterwards, as real relays do")
    args = parser.parse_args(argv)
    password = args.password_file.read_text().strip()
    res = verdicts.resolver_for(args.dns, args.dns_port)
    relay = Relay(args.hostname, args.source, res, args.log, args.max_per_window, args.window,
                  args.store_and_forward)
    asyncio.run(serve(args.listen, args.port, args.hostname, relay, Authenticator(args.username, password),
                      context_from_files(args.cert, args.key), Events(args.events, password), args.conn_log))


if __name__ == "__main__":
    main()

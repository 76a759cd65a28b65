"""The lab's MX for the recipient domain: accepts mail and records what a strict receiver sees.

Runs inside the receiver namespace on port 25 over IPv4 and IPv6, offers STARTTLS with
a certificate made at start, and writes one JSON line per accepted message: who
connected (address, family, HELO), TLS, envelope, headers, size and the verdicts of
`mailhost.lab.verdicts` against the lab DNS.  Recipients outside its domains are
refused like any MX refuses to relay.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import email
import email.policy
import ipaddress
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dns.resolver
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailhost.lab import imapd, tlsstats, verdicts
from mailhost.lab.tlscert import context_from_files, server_context

UNJUDGED = verdicts.Verdicts("unjudged", "unjudged", "unjudged", None, "unjudged", None, "unjudged", None, False)


def peer_ip(session: Session) -> str:
    peer = session.peer
    ip = str(peer[0]) if isinstance(peer, tuple) else str(peer)
    return str(ipaddress.ip_address(ip.removeprefix("::ffff:")))


class Handler:
    """aiosmtpd handler: refuse foreign recipients, evaluate each message, append a record.

    Mail to a strict domain is judged the way Gmail, Yahoo and Microsoft judge it, with their
    replies: a mailbox that is gone (5.1.1) or full (5.2.2), too many messages from one address
    (421 4.7.28), an IPv6 sender without PTR (550 5.7.25), unauthenticated or DMARC-failing
    mail (550 5.7.26).  Other domains accept everything and only record the verdicts."""

    def __init__(self, domains: list[str], log: Path, res: dns.resolver.Resolver, strict: Sequence[str] = (),
                 rate: tuple[int, float] = (20, 10.0), judge: bool = True, hostname: str = "mx",
                 maildirs: Path | None = None, mailboxes: Sequence[str] = (), discard: Sequence[str] = ()):
        self.strict = [d.lower() for d in strict]
        self.domains = [d.lower() for d in domains] + self.strict
        self.log = log
        self.res = res
        self.rate_count, self.rate_seconds = rate
        self.judge = judge  # False: store without the SPF/DKIM/DMARC/FCrDNS verdicts (benchmarks of the sender)
        self.recent: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self.hostname = hostname
        self.maildirs = maildirs  # mail to `mailboxes` is filed here for Dovecot (imapd.py), as a receiver does
        self.mailboxes = {m.lower() for m in mailboxes} if maildirs else set()
        self.discard = {m.lower() for m in discard}

    def _over_rate(self, ip: str) -> bool:
        now = time.monotonic()
        seen = self.recent[ip]
        while seen and seen[0] < now - self.rate_seconds:
            seen.popleft()
        if len(seen) >= self.rate_count:
            return True
        seen.append(now)
        return False

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        domain = verdicts.domain_of(address)
        if domain not in self.domains:
            return "550 5.7.1 relaying denied: not a domain of this MX"
        if domain in self.strict:
            local = address.rpartition("@")[0].lower()
            if local.startswith("gone"):
                return f"550 5.1.1 <{address}>: the email account that you tried to reach does not exist"
            if local.startswith("full"):
                return f"552 5.2.2 <{address}>: the mailbox is full (over quota)"
            if self._over_rate(peer_ip(session)):
                return (f"421 4.7.28 [{peer_ip(session)}] unusual rate of mail from your IP address: "
                        "rate limited, try again later")
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    def strict_refusal(self, envelope: Envelope, ip: str, result: verdicts.Verdicts) -> str | None:
        """The big receivers' answer to an accepted envelope, or None to accept the message."""
        if not any(verdicts.domain_of(r) in self.strict for r in envelope.rcpt_tos):
            return None
        if ipaddress.ip_address(ip).version == 6 and result.fcrdns != "pass":
            return (f"550 5.7.25 [{ip}] the IP address sending this message does not have a PTR record, "
                    "or the PTR does not resolve back to it")
        if result.dmarc == "fail" or (result.spf != "pass" and result.dkim != "pass"):
            return ("550 5.7.26 unauthenticated email is not accepted: it fails the From domain's DMARC policy "
                    "or has neither a passing SPF nor a passing DKIM result")
        return None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        ip = peer_ip(session)
        helo = session.host_name or ""
        mail_from = envelope.mail_from or ""
        if not self.judge:
            self.write(self.record(session, envelope, content, ip, helo, UNJUDGED))
            tlsstats.count_message(session)
            return "250 2.0.0 OK: stored"
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(None, verdicts.evaluate, ip, helo, mail_from, content, self.res)
        refusal = self.strict_refusal(envelope, ip, result)
        if refusal:
            return refusal
        self.write(self.record(session, envelope, content, ip, helo, result))
        self.file(session, envelope, content, ip, helo, result)
        tlsstats.count_message(session)
        return "250 2.0.0 OK: evaluated and stored"

    def file(self, session: Session, envelope: Envelope, content: bytes, ip: str, helo: str,
             result: verdicts.Verdicts) -> None:
        """Into each lab mailbox among the recipients: Junk when DMARC fails under p=quarantine or reject."""
        local = [r for r in envelope.rcpt_tos if r.lower() in self.mailboxes]
        if not local or self.maildirs is None:
            return
        data = imapd.stamped(content, self.hostname, result.as_dict(), ip, helo, session.ssl is not None,
                             envelope.mail_from or "")
        for rcpt in local:
            if rcpt.lower() in self.discard:
                continue  # accepted and dropped, as a receiver's silent quarantine does
            imapd.deliver(self.maildirs, rcpt.lower(), imapd.junk(result.dmarc, result.dmarc_policy, result.dkim),
                          data)

    def record(
        self, session: Session, envelope: Envelope, content: bytes, ip: str, helo: str, result: verdicts.Verdicts
    ) -> dict[str, Any]:
        headers = email.message_from_bytes(content, policy=email.policy.compat32)
        tls = session.ssl
        return {
            "time": time.time(),
            "ip": ip,
            "family": ipaddress.ip_address(ip).version,
            "helo": helo,
            "tls": tls is not None,
            "tls_version": (tls or {}).get("cipher", (None, None))[1] if tls else None,
            "mail_from": envelope.mail_from,
            "rcpt_to": list(envelope.rcpt_tos),
            "header_from": str(headers.get("From", "")),
            "header_to": str(headers.get("To", "")),
            "subject": str(headers.get("Subject", "")),
            "message_id": str(headers.get("Message-ID", "")).strip(),
            "burst": str(headers.get("X-Lab-Burst", "")),
            "size": len(content),
            **result.as_dict(),
        }

    def write(self, record: dict[str, Any]) -> None:
        with self.log.open("a") as out:
            out.write(json.dumps(record, sort_keys=True) + "\n")


async def serve(addresses: list[str], port: int, hostname: str, handler: Handler, conn_log: Path | None = None,
                cap: tlsstats.ConnectionCap | None = None, cert: tuple[Path, Path] | None = None) -> None:
    context = context_from_files(*cert) if cert else server_context(hostname)
    loop = asyncio.get_running_loop()
    servers = []
    for address in addresses:
        servers.append(
            await loop.create_server(
                lambda: tlsstats.CountingSMTP(handler, hostname=hostname, tls_context=context,
                                              data_size_limit=64 * 1024 * 1024, conn_log=conn_log, cap=cap),
                host=address,
                port=port,
            )
        )
    await asyncio.gather(*(s.serve_forever() for s in servers))


def read_records(log: Path) -> list[dict[str, Any]]:
    """All records so far (for the lab and tests)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", action="append", required=True, help="address to listen on (repeat)")
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--hostname", required=True)
    parser.add_argument("--domain", action="append", required=True, help="recipient domain accepted (repeat)")
    parser.add_argument("--strict-domain", action="append", default=[],
                        help="recipient domain judged like Gmail/Yahoo/Microsoft do (repeat)")
    parser.add_argument("--strict-rate", default="20/10", help="COUNT/SECONDS per sending address, strict domains")
    parser.add_argument("--no-verdicts", action="store_true",
                        help="store without judging (a real MX's checks do not run on the sender's CPU)")
    parser.add_argument("--dns", required=True, help="the lab nameserver to evaluate against")
    parser.add_argument("--dns-port", type=int, default=53)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--conn-log", type=Path, help="one JSON line per connection (tlsstats)")
    parser.add_argument("--maildirs", type=Path, help="root of the lab mailboxes' Maildirs (imapd.py)")
    parser.add_argument("--mailbox", action="append", default=[], help="a lab mailbox filed into --maildirs (repeat)")
    parser.add_argument("--discard", action="append", default=[], help="accept mail for this mailbox, file nothing")
    parser.add_argument("--max-conns-per-ip", type=int, default=0,
                        help="answer 421 4.7.0 to a client address above this many connections at once (0: no cap)")
    parser.add_argument("--cert", type=Path,
                        help="certificate PEM (the lab publishes its TLSA); default: a fresh self-signed one")
    parser.add_argument("--key", type=Path, help="the key of --cert")
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    res = verdicts.resolver_for(args.dns, args.dns_port)
    count, _, seconds = args.strict_rate.partition("/")
    handler = Handler(args.domain, args.log, res, args.strict_domain, (int(count), float(seconds)),
                      judge=not args.no_verdicts, hostname=args.hostname, maildirs=args.maildirs,
                      mailboxes=args.mailbox, discard=args.discard)
    cap = tlsstats.ConnectionCap(args.max_conns_per_ip) if args.max_conns_per_ip > 0 else None
    asyncio.run(serve(args.listen, args.port, args.hostname, handler, args.conn_log, cap,
                      (args.cert, args.key) if args.cert else None))


if __name__ == "__main__":
    main()

"""Jira-like notification mail for the lab, and submission to the host's Postfix as Jira does it.

Jira sends bursts: one issue event fans out to every watcher, as multipart/alternative
text + HTML with the issue key in the subject, sometimes with attachments.  `burst`
makes such a set (a few messages carry an attachment that brings them near the size
limit); `submit` hands them to an SMTP server over one connection, like Jira's mail
queue flushing, and reports per message what the server said.

Run as `python -m mailhost.lab.mail` inside the jira host's namespace, where Postfix
listens on 127.0.0.1:25; it prints one JSON summary.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import random
import smtplib
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid

PROJECTS = ("OPS", "WEB", "PAY", "HR", "DATA")
EVENTS = ("created", "updated", "commented on", "assigned", "resolved")
PEOPLE = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Ken Thompson")
# base64 grows data by 4/3 plus line ends; headers and the two bodies add a few KB.
_B64 = 1.37
_OVERHEAD = 8 * 1024


@dataclass
class Submitted:
    message_id: str
    size: int
    recipients: list[str]
    accepted: bool
    code: int | None = None
    error: str | None = None
    retry: str | None = None  # a refused message itself (base64), when asked for: Jira retries the same message
    latency: float = 0.0  # seconds from MAIL FROM to the server's answer after DATA, as Jira waits for it
    accepted_at: float = 0.0  # Unix time of that answer: where a message's delivery latency starts


@dataclass
class Summary:
    burst: str
    sent: int
    refused: int
    seconds: float
    results: list[Submitted] = field(default_factory=list)
    started_at: float = 0.0  # Unix time of the first submission (the burst is built before it)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def notification(
    number: int, sender: str, recipient: str, burst: str, rng: random.Random, attachment_bytes: int = 0,
    domain: str = "example.com",
) -> EmailMessage:
    """One Jira issue notification; with attachment_bytes an attachment of that many raw bytes."""
    project = rng.choice(PROJECTS)
    key = f"{project}-{rng.randint(1, 9999)}"
    actor = rng.choice(PEOPLE)
    event = rng.choice(EVENTS)
    summary = rng.choice(("Login fails after upgrade", "Nightly export is slow", "Invoice PDF has wrong VAT",
                          "Add SSO for contractors", "Disk full on build agent"))
    msg = EmailMessage()
    msg["From"] = f"{actor} (Jira) <{sender}>"
    msg["To"] = recipient
    msg["Subject"] = f"[JIRA] ({key}) {summary}"
    msg["Date"] = format_datetime(datetime.datetime.now(datetime.UTC))
    msg["Message-ID"] = make_msgid(idstring=f"JIRA.{number}.{burst}", domain=domain)
    msg["In-Reply-To"] = f"<JIRA.{key}@{domain}>"
    msg["X-JIRA-FingerPrint"] = uuid.UUID(int=rng.getrandbits(128)).hex
    msg["Auto-Submitted"] = "auto-generated"
    msg["Precedence"] = "bulk"
    msg["X-Lab-Burst"] = burst
    text = (f"{actor} {event} {key}\n\n{summary}\n\n"
            + "\n".join(f"> comment line {i}: {rng.random():.6f}" for i in range(rng.randint(3, 30)))
            + f"\n\nView it: https://jira.{domain}/browse/{key}\n")
    html_rows = "".join(f"<tr><td>{i}</td><td>{rng.random():.6f}</td></tr>" for i in range(rng.randint(5, 60)))
    html = (f"<html><body><p><b>{actor}</b> {event} <a href='https://jira.{domain}/browse/{key}'>{key}</a></p>"
            f"<h3>{summary}</h3><table>{html_rows}</table></body></html>")
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    if attachment_bytes:
        data = rng.randbytes(attachment_bytes)
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=f"{key}-logs.bin")
    return msg


def attachment_for(total_bytes: int) -> int:
    """Raw attachment size that makes the whole message about total_bytes on the wire."""
    return max(0, int((total_bytes - _OVERHEAD) / _B64))


def burst(
    count: int, sender: str, recipients: list[str], size_limit: int, *, big_every: int = 25, big_fill: float = 0.9,
    size_kb: int = 0, seed: int = 1, domain: str = "example.com",
) -> tuple[str, list[EmailMessage]]:
    """count notifications round-robin over recipients; every big_every-th carries an attachment
    filling big_fill of size_limit; size_kb > 0 gives every other message an attachment of that size."""
    rng = random.Random(seed)
    name = f"b{uuid.uuid4().hex[:10]}"
    out = []
    for i in range(count):
        extra = 0
        if size_kb:
            extra = attachment_for(size_kb * 1024)
        elif big_every and i % big_every == big_every - 1:
            extra = attachment_for(int(size_limit * big_fill))
        out.append(notification(i, sender, recipients[i % len(recipients)], name, rng, extra, domain))
    return name, out


def headers(data: bytes) -> dict[str, str]:
    """A message's top-level headers, unfolded (so a Message-ID reads the same however it was folded)."""
    return {k: " ".join(str(v).split()) for k, v in BytesHeaderParser().parsebytes(data).items()}


def submit(
    messages: Sequence[EmailMessage | bytes], host: str = "127.0.0.1", port: int = 25, helo: str = "jira-app",
    keep_refused: bool = False,
) -> list[Submitted]:
    """Send each message over one SMTP session (reconnecting after a refusal that drops it);
    with keep_refused, each refused message comes back in its result, to be retried byte for byte."""
    results: list[Submitted] = []
    smtp: smtplib.SMTP | None = None
    for msg in messages:
        data = msg if isinstance(msg, bytes) else msg.as_bytes()
        head = headers(data)
        rcpts = [head["To"]]
        mid = head["Message-ID"]
        started = time.monotonic()
        try:
            if smtp is None:  # a refused connection is a refusal of this message, as Jira sees it
                smtp = smtplib.SMTP(host, port, local_hostname=helo, timeout=120)
                started = time.monotonic()
            refused = smtp.sendmail(head["From"].split("<")[-1].rstrip(">"), rcpts, data)
            results.append(Submitted(mid, len(data), rcpts, not refused, 250 if not refused else None,
                                     json.dumps(refused) if refused else None))
        except smtplib.SMTPResponseException as error:
            results.append(Submitted(mid, len(data), rcpts, False, error.smtp_code,
                                     error.smtp_error.decode(errors="replace") if isinstance(error.smtp_error, bytes)
                                     else str(error.smtp_error)))
            if smtp is not None:
                try:
                    smtp.rset()
                except (smtplib.SMTPException, OSError):
                    smtp.close()
                    smtp = None
        except smtplib.SMTPRecipientsRefused as error:
            results.append(Submitted(mid, len(data), rcpts, False, None, str(error.recipients)))
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            results.append(Submitted(mid, len(data), rcpts, False, None, f"connection lost: {error}"))
            if smtp is not None:
                smtp.close()
            smtp = None
        results[-1].latency = round(time.monotonic() - started, 5)
        results[-1].accepted_at = round(time.time(), 4)
        if keep_refused and not results[-1].accepted:
            results[-1].retry = base64.b64encode(data).decode()
    if smtp is not None:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--sender", default="jira@example.com")
    parser.add_argument("--to", action="append", default=[], help="recipient (repeat; round-robin)")
    parser.add_argument("--size-limit", type=int, default=0, help="the stack's messageSizeLimit in bytes")
    parser.add_argument("--size-kb", type=int, default=0, help="give each message an attachment of about K KB")
    parser.add_argument("--big-every", type=int, default=25)
    parser.add_argument("--oversize", type=int, default=0, help="also submit N messages just over the limit")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-refused", action="store_true", help="return refused messages, to retry them")
    parser.add_argument("--retry", action="store_true",
                        help="submit the messages on stdin (a JSON list of base64, from --keep-refused) instead")
    args = parser.parse_args(argv)
    if not args.retry and not (args.to and args.size_limit):
        parser.error("a burst needs --to and --size-limit")
    messages: list[EmailMessage | bytes]
    if args.retry:  # kept by --keep-refused: the same bytes, so the same Message-ID and burst
        kept = [base64.b64decode(text) for text in json.load(sys.stdin)]
        name = ",".join(sorted({headers(m)["X-Lab-Burst"] for m in kept}))
        messages = list(kept)
    else:
        domain = args.sender.rpartition("@")[2]
        name, fresh = burst(args.count, args.sender, args.to, args.size_limit, big_every=args.big_every,
                            size_kb=args.size_kb, seed=args.seed, domain=domain)
        rng = random.Random(args.seed + 1)
        for i in range(args.oversize):
            extra = attachment_for(args.size_limit + 64 * 1024)
            fresh.insert(len(fresh) // 2, notification(10_000 + i, args.sender, args.to[0], name, rng, extra, domain))
        messages = list(fresh)
    started, started_at = time.monotonic(), time.time()
    results = submit(messages, args.host, args.port, keep_refused=args.keep_refused)
    seconds = time.monotonic() - started
    refused = sum(1 for r in results if not r.accepted)
    print(Summary(name, len(results) - refused, refused, round(seconds, 3), results, started_at).to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())

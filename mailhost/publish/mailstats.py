"""What happens to a host's outgoing mail, read on the host itself: queue, config drift, deliveries.

This one file is the collector.  The push installs it on the host (a systemd timer writes
node_exporter textfile metrics every few minutes), and `mailhost status` sends the very
same file over SSH and runs it once with --json.  So it uses the Python standard library
only (the host has python3 and nothing of ours), runs on Python 3.9+, and reads only:
`postqueue -j`, the mail log, the push's manifest in /var/lib/jira-mailhost, and the
managed files' contents (hashed, never printed).  It changes nothing except the one
metrics file it is asked to write.

CAUSES is the maintained table from a receiver's enhanced status code and reply text to
the requirement behind it and the fix; the metrics, `status` and the README use it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import pwd
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

STATE = "/var/lib/jira-mailhost"
OPENDKIM_CONF = "/etc/opendkim.conf"
MANIFEST = "manifest"  # the last successful push's MANIFEST (path mode owner group postmap sha256)
DEFAULT_LOG = "/var/log/mail.log"
DAY = 86400  # seconds: the relay's daily cap counts a rolling day
SETTINGS_MAX = 1 << 20  # characters; a pushed settings.env stays far below (500 TLS policy domains: ~130 KB)
_DAILY_CAP = re.compile(r"^RELAY_MAX_PER_DAY=([1-9][0-9]{0,7})$", re.MULTILINE)
QUEUES = ("active", "deferred", "hold", "incoming", "maildrop")
STUCK_SHOWN = 20  # queued messages listed one by one; the rest are counted
METRIC_PREFIX = "jira_mailhost"


@dataclass(frozen=True)
class Cause:
    """One reason a receiver gives, the sender requirement behind it and what to change."""

    id: str
    codes: tuple[str, ...]  # enhanced status codes (RFC 3463) that mean it, exactly
    text: str  # regex on the reply text (case-insensitive); "" = codes only
    requirement: str
    fix: str


# First match wins: a code match beats a text match, so keep the specific entries first.
CAUSES: tuple[Cause, ...] = (
    Cause("ptr", ("5.7.25", "4.7.25"), r"\bPTR\b|reverse DNS|rDNS|reverse (?:lookup|hostname)",
          "every address Postfix sends from has a PTR whose name resolves back to it (FCrDNS); "
          "Gmail refuses IPv6 senders without one",
          "publish the PTR for that address (reverseZones, or the Elastic IP's reverse DNS) and check with "
          "`mailhost verify`; the program sends over IPv6 only where a PTR is published: see the host's "
          "inet_protocols in `mailhost render`"),
    Cause("auth", ("5.7.26", "5.7.27", "5.7.515", "5.7.509", "5.7.23", "5.7.24"),
          r"unauthenticated|DMARC|\bSPF\b|DKIM|authentication (?:level|check)",
          "SPF and DKIM pass, and DMARC aligns them with the From domain (Gmail, Yahoo, Microsoft)",
          "run `mailhost verify`; make Jira's From address a mailbox of `domain` (the stack's `sender`), "
          "so the DKIM signature and SPF align with it"),
    Cause("relay_daily_cap", ("5.1.90", "5.4.5"),
          r"daily (?:user )?(?:sending )?(?:limit|quota)|reached your daily",
          "the relay's daily cap: Microsoft 365 takes 10,000 recipients a day per mailbox (550 5.1.90, then "
          "refuses for 24 h); Google's SMTP relay answers 5.4.5",
          "wait for the relay's 24 h to pass (the refused mail bounced: Jira users miss it), then spread the "
          "load: fewer notification schemes, batched notifications, or a second relay account; set "
          "delivery.relay.maxPerDay so `status` warns before the cap"),
    Cause("relay_rate", (), r"submission rate|rate for this client|exceeded the configured limit|"
          r"sending (?:rate|limit) (?:exceeded|reached)|message rate (?:limit )?exceeded",
          "the relay's sending limit: Microsoft 365 takes 30 messages a minute per mailbox (421 4.4.2)",
          "nothing is lost (Postfix retries); set delivery.relay.maxPerMinute to the relay's limit (30 for "
          "Microsoft 365) and run `pulumi up`: Postfix then paces delivery to the relay"),
    # Before rate_limit: its "try again later" ends many of these replies too.
    Cause("connection_cap", (), r"too many (?:concurrent |simultaneous )?(?:SMTP )?connections|"
          r"concurrent (?:SMTP )?connections|connection (?:limit|count) (?:exceeded|reached)",
          "few connections at once from one address: big receivers refuse a sender above a handful "
          "(421 4.7.0 at the greeting), and Postfix then defers the rest of the burst for its backoff",
          "nothing is lost (Postfix retries after its backoff); lower delivery.maxConnections (default 5) to "
          "what the receiver takes and run `pulumi up`: Postfix then never opens more at once"),
    Cause("rate_limit", ("4.7.28", "4.7.650", "4.7.500", "4.7.501", "4.7.502", "4.7.503", "4.7.504"),
          r"rate.?limit|too many (?:messages|recipients)|unusual rate|TSS0\d|try again later",
          "a steady sender: few connections, reused, and no sudden bursts from a new address",
          "nothing is lost (Postfix retries); if it persists, lower delivery.maxConnections and keep TLS "
          "connection reuse on"),
    Cause("user_unknown", ("5.1.1", "5.1.10", "5.1.0", "5.1.6"),
          r"user unknown|no such user|does not exist|RecipientNotFound|mailbox unavailable",
          "the recipient address exists",
          "a Jira user whose mailbox is gone (someone who left?): fix their email address or deactivate them"),
    Cause("mailbox_full", ("5.2.2", "4.2.2"), r"mailbox (?:is )?full|over ?quota|quota exceeded",
          "the recipient's mailbox has room", "nothing to change here: tell the user their mailbox is full"),
    # Our own refusal, never a receiver's (Postfix writes it, dsn 4.7.4): a delivery.tlsPolicy 'encrypt'
    # domain whose MX did not offer STARTTLS, or whose offer something on the path removed. Once one message
    # met it, qmgr defers that destination's others with the same words (after its own prefix, see _SUSPENDED).
    Cause("tls_required", (), r"^TLS is required, but ",
          "mail to this domain goes only over TLS (delivery.tlsPolicy: encrypt); nothing is sent in clear",
          "the mail waits in the queue, nothing is lost. Check from another network whether the MX offers "
          "STARTTLS (`openssl s_client -starttls smtp -connect MX:25`): if it does, something on this host's "
          "path strips it (a firewall's SMTP inspection: switch it off); if it does not, the receiver must "
          "enable TLS, or you accept clear text with delivery.tlsPolicy: {DOMAIN: may} and `pulumi up`"),
    # Also Postfix's own words (dsn 4.7.5), never a receiver's: the certificate is not one the level vouches for.
    # Direct mode with outboundTls: dane, a receiver whose signed TLSA records name no key of its certificate;
    # relay mode, a smarthost certificate from no trusted CA or with another fingerprint.  Read by its words:
    # 4.7.5 is no longer one of `tls`'s codes, so that its own words decide.
    Cause("cert_unverified", (), r"^Server certificate not verified",
          "the receiver presents a certificate we can vouch for: with delivery.outboundTls: dane, one whose key "
          "its DNSSEC-signed TLSA records name; with dane+mta-sts and an MTA-STS policy in enforce mode, one "
          "from a trusted CA for an MX name the policy lists; in relay mode, the smarthost's (a trusted CA or "
          "relay.tlsFingerprint)",
          "the mail waits in the queue, nothing is lost or sent unchecked. Direct mode (DANE): the receiver's TLSA "
          "records name no key its certificate has. Usually the receiver renewed its certificate without its "
          "TLSA records (their side: tell their postmaster; `posttls-finger -c -l dane DOMAIN` on this host "
          "shows both), else something on the path presents its own certificate. MTA-STS: the receiver's policy "
          "lists MX names its certificate does not carry (their side; `mta-sts-query DOMAIN` on this host shows "
          "the policy). To deliver meanwhile with "
          "TLS but no check: delivery.tlsPolicy: {DOMAIN: encrypt} and `pulumi up`. Relay mode: the "
          "smarthost's certificate changed: update relay.tlsFingerprint, or check its CA"),
    Cause("tls", ("5.7.10", "5.7.5", "5.7.11"),
          r"\bTLS\b|STARTTLS|certificate|handshake",
          "the connection is encrypted with a certificate the sender accepts",
          "check the receiver's certificate and our smtp_tls_security_level / CA bundle; in relay mode the "
          "smarthost's certificate (relay.tlsFingerprint for a private CA)"),
    Cause("dnsbl", ("5.7.606", "5.7.511"),
          r"block ?list|black ?list|spamhaus|\bRBL\b|DNSBL|listed (?:at|on|in)|banned sending IP|poor reputation",
          "the sending address is on no blocklist",
          "look the address up (`mailhost verify --dnsbl ZONE`), find what sent spam from it, then ask "
          "for delisting"),
    Cause("policy", ("5.7.1", "5.7.0", "5.7.7", "5.7.750"), r"policy|not allowed|rejected|denied",
          "the receiver's own policy accepts the message",
          "read the receiver's text and its postmaster page; `mailhost verify` first"),
    Cause("connect", ("4.4.1", "4.4.2", "4.4.7", "4.4.3", "5.4.4", "4.4.0"),
          r"connection refused|timed out|no route to host|network is unreachable|lost connection|"
          r"Host not found|Name service error",
          "the host can reach receivers on TCP port 25 (or the smarthost on 587)",
          "AWS blocks outgoing port 25 on EC2 until you ask for its removal: ask, or use delivery.mode relay; "
          "check the security group's egress and the host's DNS resolver"),
)
# Mail that waits, rather than go with less protection than its domain asks for (the queue's tls_held).
TLS_HELD = ("tls_required", "cert_unverified")
OTHER = Cause("other", (), "", "", "read the receiver's text in the mail log")
OK = Cause("ok", (), "", "", "")
_BY_ID = {c.id: c for c in (*CAUSES, OTHER, OK)}


def cause(cause_id: str) -> Cause:
    """The cause of that id (KeyError for an id no table row has: a programming error, not input)."""
    return _BY_ID[cause_id]


# A receiver's reply as Postfix logs it: "host NAME[ADDRESS] said: 550-5.7.26 words ...".  The enhanced code
# is read only right after the 3-digit code at the start of the reply: an address in brackets (5.9.12.3) or
# a code quoted later in the words never counts.
_REPLY = re.compile(r"host \S{1,300} (?:said|refused to talk to me): (?P<code>[245]\d\d)"
                    r"(?:[ -](?P<enhanced>[245]\.\d{1,3}\.\d{1,3})(?![\w.]))?(?P<words>.*)", re.DOTALL)
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
# Once a destination failed, qmgr defers its other messages without a connection, repeating the first
# failure's text after this prefix: the text after it is read as if it stood alone.
_SUSPENDED = "delivery temporarily suspended: "
_COMPILED = [(c, re.compile(c.text, re.IGNORECASE) if c.text else None) for c in CAUSES]


# Codes receivers use for many reasons (5.7.1 covers blocklists and content filters alike): the words decide.
# 4.4.2 ("bad connection") is also what Microsoft 365 answers to a submission rate above its limit.
GENERIC_CODES = frozenset({"5.7.1", "5.7.0", "4.7.0", "4.7.1", "5.0.0", "4.0.0", "4.4.2"})


def _unsuspended(text: str) -> str:
    """The failure's own text: without qmgr's suspension prefix (once; the rest is the failure's)."""
    return text[len(_SUSPENDED):] if text.startswith(_SUSPENDED) else text


def reply_code(text: str) -> str | None:
    """The receiver's enhanced status code, from its place in the reply; None when the reply has none."""
    reply = _REPLY.match(_unsuspended(text))
    return reply.group("enhanced") if reply else None


def reply_words(text: str) -> str:
    """What the receiver said after its codes (the whole text when Postfix wrote it, not a receiver)."""
    text = _unsuspended(text)
    reply = _REPLY.match(text)
    return reply.group("words") if reply else text


def classify(dsn: str | None, text: str) -> Cause:
    """The cause of one deferral or bounce: a specific enhanced code, else the words of the reply, else
    a generic code.  `dsn` is the code best_dsn chose (None: there is none); a code that no cause lists,
    whatever its shape, decides nothing."""
    for cause in CAUSES:
        if dsn in cause.codes and dsn not in GENERIC_CODES:
            return cause
    words = reply_words(text)
    for cause, pattern in _COMPILED:
        if pattern is not None and pattern.search(words):
            return cause
    for cause in CAUSES:
        if dsn in cause.codes:
            return cause
    return OTHER


def code_class(dsn: str) -> str:
    """'5.7.26' → '5.7' (the class and subject of RFC 3463), 'none' for anything not of that shape."""
    if not _ENHANCED.fullmatch(dsn):
        return "none"
    parts = dsn.split(".")
    return f"{parts[0]}.{parts[1]}"


def best_dsn(dsn: str, text: str) -> str:
    """The most specific code: the receiver's own, in its reply (550-5.7.26 ...), else Postfix's dsn=."""
    return reply_code(text) or dsn


# -- the mail log --------------------------------------------------------------------------------
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), start=1)}
_BSD_TIME = re.compile(r"([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.\d{1,9})? ")
_ISO_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d{1,9})?(Z|[+-]\d\d:?\d\d)? ")
MAX_LINE = 16384  # characters; a longer line is not Postfix's (its own limit is far below) and is skipped
# After the stamp: the host name, then the program tag of a delivery agent, then its message.  Each line is
# read at these positions only, so text a receiver wrote (the last field) can never pose as another line.
_TAG = re.compile(r"[^\s\x00-\x1f]{1,255} (?P<prog>postfix[\w.-]{0,64}/(?:smtp|lmtp|local|virtual|pipe|error|"
                  r"discard|relay))\[(?P<pid>\d{1,10})\]: (?P<message>.*)", re.DOTALL)
_DELIVERY = re.compile(
    r"(?P<qid>[0-9A-Za-z]{1,32}): to=<(?P<rcpt>.{0,1024}?)>, (?:orig_to=<.{0,1024}?>, )?relay=\S{1,512}, "
    r"(?:conn_use=\d{1,9}, )?delay=[\d.]{1,16}, delays=[\d./]{1,64}, dsn=(?P<dsn>[245]\.\d{1,3}\.\d{1,3}), "
    r"status=(?P<status>sent|deferred|bounced|expired|undeliverable) \((?P<text>.*)\)\s*", re.DOTALL
)
_TLS = re.compile(r"(?:(?P<trust>Trusted|Verified|Untrusted|Anonymous) )?TLS connection (?P<use>established|reused) "
                  r"to \S{1,512}: .*", re.DOTALL)
# How far Postfix trusted the receiver's certificate for a sent delivery, as its TLS line says (postfix_exporter's
# smtp_tls_connections_total{trust}): Verified (name matched: DANE, secure), Trusted (CA-signed), Untrusted,
# Anonymous (no certificate), unknown (a TLS line without the word), none (in clear).
TRUST_LEVELS = ("verified", "trusted", "untrusted", "anonymous", "unknown", "none")


class BadLine(ValueError):
    """A line that claims to be Postfix's but cannot be read (an impossible date, a monstrous length)."""


def line_time(line: str, now: float) -> float | None:
    """Seconds since the epoch of a syslog (BSD or RFC 3339) or Postfix maillog_file line."""
    try:
        stamped = _stamp(line, now)
    except BadLine:
        return None
    return stamped[0] if stamped else None


def _stamp(line: str, now: float) -> tuple[float, int] | None:
    """(time, where the stamp ends); None without a stamp; BadLine for a stamp no clock can show."""
    iso = _ISO_TIME.match(line)
    if iso:
        year, month, day, hour, minute, second = (int(iso.group(i)) for i in range(1, 7))
        zone = iso.group(7) or "Z"
        offset = 0 if zone == "Z" else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 60 + int(zone[-2:]))
        try:
            tz = dt.timezone(dt.timedelta(minutes=offset))
            return dt.datetime(year, month, day, hour, minute, second, tzinfo=tz).timestamp(), iso.end()
        except (ValueError, OverflowError) as error:
            raise BadLine(f"impossible time: {error}") from None
    bsd = _BSD_TIME.match(line)
    if not bsd or bsd.group(1) not in _MONTHS:
        return None
    today = dt.datetime.fromtimestamp(now)  # BSD stamps are local time, without a year
    month, day = _MONTHS[bsd.group(1)], int(bsd.group(2))
    hour, minute, second = (int(bsd.group(i)) for i in (3, 4, 5))
    for year in (today.year, today.year - 1):  # a December line read in January
        try:
            when = dt.datetime(year, month, day, hour, minute, second).timestamp()
        except ValueError:  # 29 February of the wrong year, or no such day or time at all
            continue
        if when <= now + 300:
            return when, bsd.end()
    if day > 31 or hour > 23 or minute > 59 or second > 60:
        raise BadLine("impossible time")
    return None


@dataclass
class Delivery:
    time: float
    qid: str
    domain: str
    status: str  # sent | deferred | bounced
    dsn: str
    text: str
    tls: bool
    trust: str = "none"  # one of TRUST_LEVELS


def parse_log(lines: Iterable[str], since: float, now: float) -> tuple[list[Delivery], int]:
    """Deliveries logged since `since`, and the TLS handshakes (new connections, not reused ones)."""
    deliveries, handshakes, _ = read_log(lines, since, now)
    return deliveries, handshakes


def read_log(lines: Iterable[str], since: float, now: float) -> tuple[list[Delivery], int, int]:
    """parse_log, and how many lines that claimed to be Postfix's were skipped as unreadable."""
    deliveries: list[Delivery] = []
    handshakes = skipped = 0
    tls_pending: dict[str, str] = {}  # pid → the trust of the TLS session the next delivery of this process runs over
    tls_qid: dict[str, tuple[str, str]] = {}  # pid → its last delivery's message and that delivery's trust
    for line in lines:
        if "postfix" not in line:
            continue
        if len(line) > MAX_LINE:
            skipped += 1
            continue
        try:
            stamped = _stamp(line, now)
        except BadLine:
            skipped += 1
            continue
        if stamped is None or stamped[0] < since:
            continue
        when, end = stamped
        tagged = _TAG.fullmatch(line, end)
        if not tagged:
            continue
        pid, message = tagged.group("pid"), tagged.group("message")
        tls = _TLS.fullmatch(message)
        if tls:
            tls_pending[pid] = (tls.group("trust") or "unknown").lower()
            handshakes += tls.group("use") == "established"
            continue
        hit = _DELIVERY.fullmatch(message)
        if not hit:
            continue
        qid = hit.group("qid")
        trust = tls_pending.pop(pid, None)
        if trust is None:  # no TLS line just before: the session of this message's earlier recipient, or clear
            last = tls_qid.get(pid)
            trust = last[1] if last is not None and last[0] == qid else "none"
        tls_qid[pid] = (qid, trust)
        status = {"expired": "bounced", "undeliverable": "bounced"}.get(hit.group("status"), hit.group("status"))
        domain = hit.group("rcpt").rpartition("@")[2].lower() or "(local)"
        deliveries.append(Delivery(when, qid, domain[:253], status, hit.group("dsn"), hit.group("text")[:1000],
                                   trust != "none", trust))
    return deliveries, handshakes, skipped


def read_lines(path: str, since: float, now: float, rotated: bool = True) -> Iterator[str]:
    """The log and, when the window reaches back past its start, its first rotation (.1)."""
    older = path + ".1"
    if rotated and os.path.exists(older) and os.path.getmtime(older) >= since:
        yield from _lines(older)
    yield from _lines(path)


def _lines(path: str) -> Iterator[str]:
    # Lines end at "\n" only: a receiver's text may hold "\r", U+2028 or U+0085, which must not split one.
    with open(path, encoding="utf-8", errors="replace", newline="\n") as handle:
        yield from handle


# -- the journal: hosts where no syslog daemon writes a mail log (Debian's cloud images) ------------
JOURNALCTL = ("journalctl",)
JOURNAL_TIMEOUT = 120  # seconds: a hung journalctl ends as a problem in the report, not as a hung collector
MAX_JOURNAL_ENTRY = 65536  # bytes of one JSON entry; Postfix's own lines are far shorter
_JOURNAL_NUMBER = re.compile(r"[0-9]{1,20}")


_AGENT = re.compile(r"postfix[\w.-]{0,64}/(?:smtp|lmtp|local|virtual|pipe|error|discard|relay)")
FORGED = "forged"


@dataclass
class Journal:
    lines: list[str] | None  # None: no journal to read
    skipped: int = 0  # unreadable entries
    forged: int = 0  # a delivery agent's name from another user's process
    problem: str | None = None


def read_journal(since: float, now: float, trusted_uids: frozenset[str],
                 journalctl: Sequence[str] = JOURNALCTL, timeout: float = JOURNAL_TIMEOUT) -> Journal:
    """journald's mail-facility entries in the window as RFC 3339 syslog lines, which read_log parses as it
    parses a file. An entry naming a delivery agent (postfix/smtp...) counts only when journald saw it come
    from a process of a trusted user (root, Postfix's mail_owner): anyone may log as "postfix/smtp", nobody
    can fake _UID."""
    argv = [*journalctl, "--quiet", "--no-pager", "--output=json", f"--since=@{int(since)}",
            f"--until=@{int(now) + 1}", "SYSLOG_FACILITY=2"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Journal(None, problem=f"journalctl: {error}"[:300])
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines() or ["failed"]
        return Journal(None, problem=f"journalctl: {reason[-1]}"[:300])
    lines: list[str] = []
    skipped = forged = 0
    for raw in done.stdout.split(b"\n"):
        if not raw:
            continue
        line = _journal_line(raw, trusted_uids) if len(raw) <= MAX_JOURNAL_ENTRY else None
        if line is None:
            skipped += 1
        elif line == FORGED:
            forged += 1
        elif line:
            lines.append(line)
    return Journal(lines, skipped, forged)


def _journal_line(raw: bytes, trusted_uids: frozenset[str]) -> str | None:
    """One entry as `<RFC 3339 time> <host> <identifier>[<pid>]: <message>`; "" for one read_log has no use for
    (OpenDKIM logs to the mail facility too; postdrop runs as the submitting user); FORGED for a delivery
    agent's name from an untrusted process; None for one that cannot be read."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    uid, stamp, pid = entry.get("_UID"), entry.get("__REALTIME_TIMESTAMP"), entry.get("_PID")
    ident, message = entry.get("SYSLOG_IDENTIFIER"), entry.get("MESSAGE")
    if not isinstance(ident, str) or not _AGENT.fullmatch(ident):
        return ""
    if uid not in trusted_uids:
        return FORGED
    if not (isinstance(stamp, str) and isinstance(pid, str)
            and _JOURNAL_NUMBER.fullmatch(stamp) and _JOURNAL_NUMBER.fullmatch(pid)):
        return None
    if isinstance(message, list) and all(isinstance(b, int) and 0 <= b < 256 for b in message):
        message = bytes(message).decode("utf-8", "replace")  # journald's form of a message that is not UTF-8
    if not isinstance(message, str):
        return None
    try:
        when = dt.datetime.fromtimestamp(int(stamp) / 1e6, dt.timezone(dt.timedelta(0)))  # any python3
    except (OverflowError, ValueError, OSError):
        return None
    return f"{when.strftime('%Y-%m-%dT%H:%M:%S')}Z journal {ident}[{pid}]: {message}"


def trusted_uids(owner: str | None) -> frozenset[str]:
    """root and Postfix's mail_owner: the users Postfix's daemons run as."""
    try:
        return frozenset({"0", str(pwd.getpwnam(owner or "postfix").pw_uid)})
    except KeyError:
        return frozenset({"0"})


# -- the queue, services and config ---------------------------------------------------------------
POSTQUEUE_TIMEOUT = 60.0  # seconds: a queue of 100,000 messages lists in a few
_QUEUE_ID = re.compile(r"[0-9A-Za-z]{1,32}")  # short (hex) and long (enable_long_queue_ids) queue IDs


@dataclass(frozen=True)
class Queued:
    """One message of `postqueue -j`, read at its known keys: waiting is (address, delay reason) per recipient."""

    queue: str
    queue_id: str
    arrival_time: int
    waiting: list[tuple[str, str]]


def parse_queued(raw: str) -> Queued | None:
    """One `postqueue -j` line, or None when a key is missing or of another shape than Postfix writes
    (counted as unreadable, never guessed at: an unknown queue name would otherwise become a new key)."""
    try:
        item = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(item, dict):
        return None
    queue, queue_id, arrival, recipients = (item.get(k) for k in ("queue_name", "queue_id", "arrival_time",
                                                                   "recipients"))
    if queue not in QUEUES or not isinstance(queue_id, str) or not _QUEUE_ID.fullmatch(queue_id):
        return None
    if type(arrival) is not int or arrival < 0 or not isinstance(recipients, list):
        return None
    waiting = []
    for rcpt in recipients:
        address = rcpt.get("address") if isinstance(rcpt, dict) else None
        reason = rcpt.get("delay_reason", "") if isinstance(rcpt, dict) else None
        if not isinstance(address, str) or not isinstance(reason, str):
            return None
        waiting.append((address, reason))
    return Queued(queue, queue_id, arrival, waiting)


def read_queue(now: float, postqueue: Sequence[str] = ("postqueue", "-j"),
               timeout: float = POSTQUEUE_TIMEOUT) -> dict[str, Any]:
    """Counts per queue, the oldest message's age and the stuck ones with their cause."""
    counts = dict.fromkeys(QUEUES, 0)
    out: dict[str, Any] = {"problem": None}
    try:
        done = subprocess.run(list(postqueue), capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {**counts, "oldest_age_seconds": 0, "stuck": [], "more_stuck": 0, "unreadable": 0,
                "tls_held": 0, "tls_held_oldest_age_seconds": 0, "problem": str(error)}
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        out["problem"] = (said or ["postqueue failed"])[-1][:300]
    oldest = tls_oldest = 0.0
    unreadable = tls_held = 0
    stuck: list[dict[str, Any]] = []
    # One JSON object per "\n": a delay reason may hold U+2028 or U+0085, which str.splitlines would split at.
    for raw in done.stdout.decode(errors="replace").split("\n"):
        if not raw.strip():
            continue
        item = parse_queued(raw)
        if item is None:
            unreadable += 1
            continue
        counts[item.queue] += 1
        age = max(0.0, now - item.arrival_time)  # a clock set back makes no negative ages
        oldest = max(oldest, age)
        causes = []
        for address, reason in item.waiting:
            cause = classify(reply_code(reason), reason).id if reason else "waiting"  # a queue reason has no dsn=
            causes.append(cause)
            stuck.append({"queue_id": item.queue_id, "queue": item.queue, "age_seconds": round(age),
                          "domain": address.rpartition("@")[2].lower()[:253], "cause": cause,
                          "reason": reason[:300]})
        if any(c in TLS_HELD for c in causes):
            tls_held += 1
            tls_oldest = max(tls_oldest, age)
    stuck.sort(key=lambda s: -s["age_seconds"])
    out.update(counts)
    out.update({"oldest_age_seconds": round(oldest), "stuck": stuck[:STUCK_SHOWN],
                "more_stuck": max(0, len(stuck) - STUCK_SHOWN), "unreadable": unreadable,
                "tls_held": tls_held, "tls_held_oldest_age_seconds": round(tls_oldest)})
    return out


def _pid_alive(pidfile: str) -> bool:
    try:
        with open(pidfile) as handle:
            pid = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return os.path.exists(f"/proc/{pid}")


def _conf_value(path: str, key: str) -> str | None:
    try:
        with open(path) as handle:
            values = [line.split(None, 1)[1].strip() for line in handle
                      if line.split(None, 1)[:1] == [key] and len(line.split(None, 1)) == 2]
    except OSError:
        return None
    return values[-1] if values else None


def services(manifest_paths: Sequence[str]) -> dict[str, bool | None]:
    """Is each daemon running?  OpenDKIM is None (not ours to watch) when the push does not manage it."""
    spool = _postconf_value("queue_directory") or "/var/spool/postfix"
    postfix = _pid_alive(os.path.join(spool, "pid", "master.pid"))
    opendkim: bool | None = None
    if OPENDKIM_CONF in manifest_paths or not manifest_paths:
        pidfile = _conf_value(OPENDKIM_CONF, "PidFile") or "/run/opendkim/opendkim.pid"
        opendkim = _pid_alive(pidfile) if os.path.exists(OPENDKIM_CONF) else None
    return {"postfix": postfix, "opendkim": opendkim}


def _postconf_value(name: str, postconf: Sequence[str] = ("postconf",)) -> str | None:
    """A main.cf parameter as Postfix sees it (its default when unset); None when Postfix cannot say."""
    try:
        done = subprocess.run([*postconf, "-h", name], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


def _owner(path: str) -> str:
    import grp
    import pwd

    st = os.stat(path)
    try:
        user, group = pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        user, group = str(st.st_uid), str(st.st_gid)
    return f"{st.st_mode & 0o7777:04o} {user} {group}"


def read_manifest(state: str = STATE) -> list[tuple[str, str, str]]:
    """(path, "mode owner group", sha256) of every file the last successful push installed."""
    try:
        with open(os.path.join(state, MANIFEST)) as handle:
            rows = [line.split() for line in handle if line.strip()]
    except OSError:
        return []
    return [(r[0], f"{int(r[1], 8):04o} {r[2]} {r[3]}", r[5]) for r in rows if len(r) == 6]


def drift(manifest: Sequence[tuple[str, str, str]], expected: dict[str, str]) -> dict[str, Any]:
    """Which live files differ from the last push (hand edits), and which differ from the stack now."""
    changed, missing = [], []
    for path, meta, digest in manifest:
        live = _sha256(path)
        if live is None:
            missing.append(path)
        elif live != digest or _owner(path) != meta:
            changed.append(path)
    stack_changed = [path for path, digest in sorted(expected.items()) if _sha256(path) != digest]
    return {"pushed": bool(manifest), "files": len(manifest), "changed": changed, "missing": missing,
            "stack_changed": stack_changed, "stack_checked": len(expected)}


# -- the report -----------------------------------------------------------------------------------
def summarize(deliveries: Sequence[Delivery], handshakes: int) -> dict[str, Any]:
    """Counts by status, by destination domain and by cause; the TLS share and reuse."""
    totals = Counter(d.status for d in deliveries)
    by_domain: dict[str, Counter[str]] = defaultdict(Counter)
    groups: dict[tuple[str, str, str], list[Delivery]] = defaultdict(list)
    for d in deliveries:
        by_domain[d.domain][d.status] += 1
        if d.status != "sent":
            code = best_dsn(d.dsn, d.text)
            groups[(d.status, classify(code, d.text).id, code)].append(d)
    causes = []
    for (status, cause_id, code), items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        row = cause(cause_id)
        causes.append({"status": status, "cause": cause_id, "code": code, "code_class": code_class(code),
                       "count": len(items), "domains": sorted({d.domain for d in items})[:10],
                       "example": items[-1].text[:300], "requirement": row.requirement, "fix": row.fix})
    sent = [d for d in deliveries if d.status == "sent"]
    tls_sent = sum(d.tls for d in sent)
    trust = Counter(d.trust for d in sent)
    return {
        "deliveries": {s: totals.get(s, 0) for s in ("sent", "deferred", "bounced")},
        "by_domain": {dom: {s: c.get(s, 0) for s in ("sent", "deferred", "bounced")}
                      for dom, c in sorted(by_domain.items())},
        "causes": causes,
        "tls": {"sent_over_tls": tls_sent, "ratio": round(tls_sent / len(sent), 4) if sent else None,
                "handshakes": handshakes,
                "messages_per_handshake": round(tls_sent / handshakes, 2) if handshakes else None,
                "sent_by_trust": {level: trust.get(level, 0) for level in TRUST_LEVELS}},
    }


def read_deliveries(since: float, now: float, log_path: str | None) -> tuple[list[Delivery], int, dict[str, Any]]:
    """Deliveries and TLS handshakes since `since`, from the mail log file or else journald, and where from."""
    configured = log_path or _postconf_value("maillog_file")
    path = configured or DEFAULT_LOG
    found = os.path.exists(path)
    # No syslog daemon writes a mail log: journald has Postfix's lines, unless a file was asked for.
    journal = Journal(None) if found or configured else read_journal(
        since, now, trusted_uids(_postconf_value("mail_owner")), JOURNALCTL)
    if found:
        deliveries, handshakes, skipped = read_log(read_lines(path, since, now), since, now)
        where = {"path": path, "problem": None, "skipped_lines": skipped, "forged_lines": 0}
    elif journal.lines is not None:
        deliveries, handshakes, skipped = read_log(journal.lines, since, now)
        where = {"path": "journald", "problem": None, "skipped_lines": skipped + journal.skipped,
                 "forged_lines": journal.forged}
    else:
        deliveries, handshakes = [], 0
        why = f" and {journal.problem}" if journal.problem else ""
        where = {"path": path, "problem": f"no mail log at {path}{why}: set maillogFile (e.g. "
                 "/var/log/postfix.log) so deliveries can be counted", "skipped_lines": 0, "forged_lines": 0}
    return deliveries, handshakes, where


def read_daily_cap(state: str = STATE) -> int | None:
    """delivery.relay.maxPerDay as the last push wrote it into settings.env; None when unset or unreadable
    (root's own file, but read as the grammar allows: one `RELAY_MAX_PER_DAY=N` line, N of 1-8 digits)."""
    try:
        with open(os.path.join(state, "settings.env"), encoding="utf-8", errors="replace") as handle:
            text = handle.read(SETTINGS_MAX + 1)
    except OSError:
        return None
    if len(text) > SETTINGS_MAX:  # not one the push wrote: a cut could leave half a number
        return None
    found = _DAILY_CAP.findall(text)
    return int(found[0]) if len(found) == 1 else None


def collect(hours: float, log_path: str | None, expected: dict[str, str], now: float | None = None,
            state: str = STATE) -> dict[str, Any]:
    """Everything `status` and the metrics need, as one JSON-able dict."""
    now = time.time() if now is None else now
    since = now - hours * 3600
    manifest = read_manifest(state)
    report: dict[str, Any] = {"host": os.uname().nodename, "collected_at": round(now), "window_seconds":
                              round(hours * 3600), "services": services([m[0] for m in manifest]),
                              "queue": read_queue(now), "config": drift(manifest, expected)}
    deliveries, handshakes, report["log"] = read_deliveries(since, now, log_path)
    cap = read_daily_cap(state)
    if cap is None:
        report["relay_day"] = None
    else:
        day = deliveries if hours >= 24 else read_deliveries(now - DAY, now, log_path)[0]
        report["relay_day"] = {"cap": cap, "sent": sum(d.status == "sent" and d.time >= now - DAY for d in day)}
    report.update(summarize(deliveries, handshakes))
    return report


# -- Prometheus textfile --------------------------------------------------------------------------
def _labels(**labels: str) -> str:
    if not labels:
        return ""
    quoted = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + quoted + "}"


def _number(value: float) -> str:
    """Exact: a Unix time printed with %g (1.8e+09) would be off by days and fire the staleness alert."""
    return str(int(value)) if value == int(value) else repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics(report: dict[str, Any]) -> str:
    """node_exporter textfile format: HELP and TYPE once per family, gauges only (a window, not counters)."""
    out: list[str] = []

    def family(name: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
        full = f"{METRIC_PREFIX}_{name}"
        out.append(f"# HELP {full} {help_text}")
        out.append(f"# TYPE {full} gauge")
        for labels, value in samples:
            out.append(f"{full}{_labels(**labels)} {_number(value)}")

    svc = report["services"]
    family("up", "1 when the daemon runs, 0 when it does not (only daemons the push manages).",
           [({"service": name}, float(bool(up))) for name, up in sorted(svc.items()) if up is not None])
    queue = report["queue"]
    family("queue_messages", "Messages in each Postfix queue.", [({"queue": q}, float(queue[q])) for q in QUEUES])
    family("queue_oldest_age_seconds", "Age of the oldest queued message, 0 when the queue is empty.",
           [({}, float(queue["oldest_age_seconds"]))])
    family("queue_tls_held_messages", "Queued messages waiting because their domain requires TLS and got none.",
           [({}, float(queue["tls_held"]))])
    family("queue_tls_held_oldest_age_seconds", "Age of the oldest message waiting for TLS, 0 when none does.",
           [({}, float(queue["tls_held_oldest_age_seconds"]))])
    samples: list[tuple[dict[str, str], float]] = [
        ({"status": "sent", "cause": "ok", "code_class": "2.0"}, float(report["deliveries"]["sent"]))]
    grouped: Counter[tuple[str, str, str]] = Counter()
    for c in report["causes"]:
        grouped[(c["status"], c["cause"], c["code_class"])] += c["count"]
    samples += [({"status": s, "cause": cause, "code_class": cls}, float(n))
                for (s, cause, cls), n in sorted(grouped.items())]
    family("recent_deliveries", "Delivery attempts logged in the last window, by status and cause.", samples)
    family("recent_window_seconds", "Length of the window the recent_* metrics count.",
           [({}, float(report["window_seconds"]))])
    family("log_readable", "1 when the mail log was read, 0 when there is none (recent_* are then empty).",
           [({}, float(not report["log"]["problem"]))])
    tls = report["tls"]
    family("tls_delivery_ratio", "Share of sent deliveries that went over TLS in the window.",
           [({}, float(tls["ratio"] if tls["ratio"] is not None else 1.0))])
    family("tls_messages_per_handshake", "Messages sent per TLS handshake in the window (connection reuse).",
           [({}, float(tls["messages_per_handshake"] or 0.0))])
    family("recent_sent_by_tls_trust", "Sent deliveries in the window by TLS trust (none: in clear).",
           [({"trust": level}, float(tls["sent_by_trust"][level])) for level in TRUST_LEVELS])
    day = report.get("relay_day")
    if day:  # only with delivery.relay.maxPerDay: a 0 cap would read as "always over"
        family("relay_daily_cap", "delivery.relay.maxPerDay: recipients the relay takes in 24 h.",
               [({}, float(day["cap"]))])
        family("relay_sent_last_day", "Recipients sent through the relay in the last 24 h.",
               [({}, float(day["sent"]))])
    config = report["config"]
    differs = len(config["changed"]) + len(config["missing"])
    family("config_digest_match", "1 when every file the last push installed is unchanged, 0 on drift.",
           [({}, float(config["pushed"] and differs == 0))])
    family("config_files_changed", "Files changed or missing since the last push.", [({}, float(differs))])
    family("collector_last_run_timestamp_seconds", "When this file was written (Unix time).",
           [({}, float(report["collected_at"]))])
    return "\n".join(out) + "\n"


def write_atomic(path: str, text: str) -> None:
    """node_exporter must never read half a file: write beside it, then rename (mode 0644)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".jira_mailhost.", suffix=".tmp")
    try:
        # The mode is set on the descriptor: a chmod by path would follow a symlink swapped in meanwhile
        # by whoever can write the directory, and root would make that file world-readable.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _expected(values: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        path, sep, digest = value.rpartition("=")
        if not sep or not path.startswith("/") or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise SystemExit(f"--expect wants PATH=SHA256, not {value!r}")
        pairs[path] = digest
    return pairs


def own_source() -> str:
    """This file's text: what the push installs on a host and what `mailhost status` runs there."""
    with open(__file__, encoding="utf-8") as handle:
        return handle.read()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="window of the mail log to read")
    parser.add_argument("--log", help="the mail log (default: Postfix's maillog_file, else /var/log/mail.log)")
    parser.add_argument("--expect", action="append", default=[], help="PATH=SHA256 the stack would push")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--textfile", help="write node_exporter textfile metrics here (atomically)")
    parser.add_argument("--state", default=STATE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    report = collect(args.hours, args.log, _expected(args.expect), state=args.state)
    if args.textfile:
        write_atomic(args.textfile, metrics(report))
    if args.json or not args.textfile:
        json.dump(report, sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

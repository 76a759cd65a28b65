"""What the receiver wrote on the probe: its Authentication-Results and the Received line of the hop from
our host, read at their known places and checked word by word before anything is shown.

The Authentication-Results header is parsed by `authres` (RFC 8601's grammar), never by pattern: the
topmost one that parses is the receiver's own (each receiver adds its header on top).  A Received line
is only used to see whether the hop from one of our addresses ran over TLS and when it arrived.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_HEADERS = 256 * 1024
MAX_FIELD = 8 * 1024
WORD = re.compile(r"[a-z]{1,20}")
NAME = re.compile(r"@?([A-Za-z0-9](?:[A-Za-z0-9._-]{0,252}))")
SELECTOR = re.compile(r"[A-Za-z0-9._-]{1,63}")
METHODS = ("spf", "dkim", "dmarc", "arc")
NO_AUTHSERV = re.compile(r"(?:spf|dkim|dmarc|arc)=", re.IGNORECASE)  # the header opens with a result
UNNAMED = "unnamed.invalid"
# The protocol of a Received line's `with` clause (RFC 3848): a trailing S (or SA) means TLS.
WITH = re.compile(r"\bwith\s+(E?SMTPS?A?|UTF8SMTPS?A?|LMTPS?A?|ESMTP|SMTP|Microsoft SMTP Server\s*\(version=TLS)",
                  re.IGNORECASE)


@dataclass(frozen=True)
class Verdicts:
    results: dict[str, str]  # method → result word (pass, fail, none, …), only the methods present
    dkim_domain: str | None
    dkim_selector: str | None
    authserv: str | None
    tls: bool | None  # None: no Received line names one of our addresses
    received_at: float | None


def _word(value: object) -> str | None:
    text = str(value or "").lower()
    return text if WORD.fullmatch(text) else None


def _first_results(values: Iterable[str]) -> tuple[str | None, list[object]]:
    import authres

    for value in values:
        text = " ".join(value[:MAX_FIELD].split())
        # Microsoft 365 and Outlook.com write no authserv-id (RFC 8601 requires one): read theirs under "unnamed",
        # first (authres would take a leading `spf=fail` for the authserv-id and drop that failing verdict)
        for candidate in (f"{UNNAMED}; {text}", text) if NO_AUTHSERV.match(text) else (text,):
            try:
                parsed = authres.AuthenticationResultsHeader.parse_value(candidate)
            except Exception:  # authres raises its own SyntaxError and others on odd input: try the next one
                continue
            serv = str(parsed.authserv_id or "")
            return (serv if NAME.fullmatch(serv) else None), list(parsed.results)
    return None, []


def _dkim_identity(result: object) -> tuple[str | None, str | None]:
    domain = selector = None
    for prop in getattr(result, "properties", []):
        name, value = f"{prop.type}.{prop.name}", str(prop.value or "")
        if name in ("header.d", "header.i") and domain is None and (m := NAME.fullmatch(value)):
            domain = m.group(1).lower()
        if name == "header.s" and SELECTOR.fullmatch(value):
            selector = value
    return domain, selector


def _hop(received: Iterable[str], ours: Iterable[str]) -> tuple[bool | None, float | None]:
    needles = [re.compile(rf"[\[( ]{re.escape(ip)}[\]) ]", re.IGNORECASE) for ip in ours]
    for line in received:
        text = " ".join(line[:MAX_FIELD].split())
        head, _, stamp = text.rpartition(";")
        if not any(n.search(f" {head} ") for n in needles):
            continue
        found = WITH.search(head)
        protocol = found.group(1).upper() if found else ""
        tls = protocol.startswith("MICROSOFT") or protocol.endswith(("S", "SA"))
        try:
            when = email.utils.parsedate_to_datetime(stamp.strip()).timestamp() if stamp else None
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
        return tls, when
    return None, None


def read(raw_headers: bytes, our_addresses: Iterable[str]) -> Verdicts:
    message = email.message_from_bytes(raw_headers[:MAX_HEADERS], policy=email.policy.compat32)
    authserv, results = _first_results(str(v) for v in message.get_all("Authentication-Results") or [])
    words: dict[str, str] = {}
    dkim_domain = dkim_selector = None
    for result in results:
        method, word = _word(getattr(result, "method", "")), _word(getattr(result, "result", ""))
        if method not in METHODS or word is None:
            continue
        if method == "dkim" and (words.get("dkim") != "pass"):  # several signatures: a passing one counts
            words["dkim"] = word
            dkim_domain, dkim_selector = _dkim_identity(result)
        words.setdefault(method, word)
    tls, received_at = _hop((str(v) for v in message.get_all("Received") or []), our_addresses)
    return Verdicts(words, dkim_domain, dkim_selector, authserv, tls, received_at)

"""IMAP with the server's certificate verified, for the report mailbox and the canary's mailboxes.

imaplib (stdlib) speaks the protocol; this module adds what a careful client needs on top: TLS that
verifies the name, a login by password or by OAuth2 (XOAUTH2, the only way into Microsoft 365), and a
size bound on every message fetched, since the mailbox holds whatever strangers sent.
"""

from __future__ import annotations

import imaplib
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

MAX_MESSAGE = 10 * 1024 * 1024
FETCH_SIZE = re.compile(rb"\d+ \((?:UID \d+ RFC822\.SIZE (\d+)|RFC822\.SIZE (\d+) UID \d+)\)")  # either order


class MailboxError(RuntimeError):
    """The mailbox could not be read; the message says which setting or what the server refused."""


@dataclass(frozen=True)
class Account:
    host: str
    port: int
    user: str
    folder: str = "INBOX"
    oauth2: bool = False  # the secret is an OAuth2 access token, not a password
    cafile: Path | None = None  # a private CA (the lab); None: the system's trust store


def tls_context(cafile: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def connect(account: Account, secret: str, timeout: float = 30) -> imaplib.IMAP4_SSL:
    where = f"{account.user}@{account.host}:{account.port}"
    try:
        imap = imaplib.IMAP4_SSL(account.host, account.port, ssl_context=tls_context(account.cafile),
                                 timeout=timeout)
    except ssl.SSLCertVerificationError as error:
        raise MailboxError(f"{where}: the server's certificate does not verify ({error.verify_message})") from None
    except OSError as error:
        raise MailboxError(f"{where}: cannot connect ({error.strerror or type(error).__name__})") from None
    try:
        if account.oauth2:
            token = f"user={account.user}\x01auth=Bearer {secret}\x01\x01".encode()
            imap.authenticate("XOAUTH2", lambda _challenge: token)
        else:
            imap.login(account.user, secret)
    except imaplib.IMAP4.error:
        imap.shutdown()
        how = "the OAuth2 token" if account.oauth2 else "the password"
        raise MailboxError(f"{where}: the server refused {how}") from None
    return imap


def uids(imap: imaplib.IMAP4_SSL, folder: str) -> tuple[int, list[int]]:
    """(UIDVALIDITY, every UID) of a folder opened read-only: reading reports never changes the mailbox."""
    status, _ = imap.select(_quoted(folder), readonly=True)
    if status != "OK":
        raise MailboxError(f"folder {folder!r} cannot be opened")
    validity = imap.response("UIDVALIDITY")[1]
    status, data = imap.uid("SEARCH", "ALL")
    if status != "OK":
        raise MailboxError(f"folder {folder!r} cannot be searched")
    found = [int(n) for n in (data[0] or b"").split() if n.isdigit()]
    return int(validity[0]) if validity and validity[0] and validity[0].isdigit() else 0, found


def fetch(imap: imaplib.IMAP4_SSL, uid: int) -> bytes | None:
    """One message, or None when it is larger than MAX_MESSAGE (its size is asked first)."""
    status, data = imap.uid("FETCH", str(uid), "(UID RFC822.SIZE)")
    first = data[0] if status == "OK" and data else None
    match = FETCH_SIZE.fullmatch(first) if isinstance(first, bytes) else None
    if match is None or int(match.group(1) or match.group(2)) > MAX_MESSAGE:
        return None
    status, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
    for part in data if status == "OK" else []:
        if isinstance(part, tuple) and isinstance(part[1], bytes) and len(part[1]) <= MAX_MESSAGE:
            return part[1]
    return None


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'

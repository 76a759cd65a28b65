"""Finding a probe in a real mailbox: INBOX, then the Junk folder the server names (RFC 6154 \\Junk) or,
failing that, the common names; its headers fetched with a bound; deleting it afterwards."""

from __future__ import annotations

import imaplib
import re
from dataclasses import dataclass

from mailhost.canary.probe import SUBJECT_PREFIX, TOKEN

JUNK_NAMES = ("Junk", "Spam", "[Gmail]/Spam", "Junk Email", "Junk E-mail", "INBOX.Junk", "INBOX/Junk", "Bulk Mail")
LIST_LINE = re.compile(rb'\((?P<flags>[^()]*)\) (?:"(?:[^"\\]|\\.)"|NIL) (?P<name>"(?:[^"\\]|\\.)*"|[^\s"()]+)')
UID_LIST = re.compile(rb"(?:\d+(?: \d+)*)?")
MAX_HEADERS = 256 * 1024


@dataclass(frozen=True)
class Found:
    folder: str
    uid: int


def _unquote(name: bytes) -> str:
    if name.startswith(b'"'):
        name = re.sub(rb"\\(.)", rb"\1", name[1:-1])
    return name.decode("ascii", "replace")


def junk_folder(imap: imaplib.IMAP4, configured: str | None = None) -> str | None:
    """The folder the server files spam into: the setting, the one flagged \\Junk, or a usual name."""
    if configured:
        return configured
    status, lines = imap.list()
    names: list[str] = []
    for line in lines if status == "OK" else []:
        match = LIST_LINE.fullmatch(line) if isinstance(line, bytes) else None
        if match is None:
            continue  # a name sent as a literal: not one of the ASCII names looked for
        name = _unquote(match.group("name"))
        if b"\\junk" in match.group("flags").lower().split():
            return name
        names.append(name)
    lowered = {n.lower(): n for n in names}
    return next((lowered[c.lower()] for c in JUNK_NAMES if c.lower() in lowered), None)


def quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def search(imap: imaplib.IMAP4, folder: str, tokens: list[str]) -> dict[str, int]:
    """token → UID of each probe in the folder (opened read-only)."""
    if imap.select(quoted(folder), readonly=True)[0] != "OK":
        return {}
    found = {}
    for token in tokens:
        assert TOKEN.fullmatch(token)  # our own, and so safe inside the SEARCH command
        status, data = imap.uid("SEARCH", "SUBJECT", f'"{SUBJECT_PREFIX} {token}"')
        hits = data[0] if status == "OK" and data and isinstance(data[0], bytes) else b""
        if UID_LIST.fullmatch(hits.strip()) and hits.split():
            found[token] = int(hits.split()[-1])
    return found


def headers(imap: imaplib.IMAP4, folder: str, uid: int) -> bytes:
    if imap.select(quoted(folder), readonly=True)[0] != "OK":
        return b""
    status, data = imap.uid("FETCH", str(uid), f"(BODY.PEEK[HEADER]<0.{MAX_HEADERS}>)")
    for part in data if status == "OK" else []:
        if isinstance(part, tuple) and isinstance(part[1], bytes):
            return part[1][:MAX_HEADERS]
    return b""


def delete(imap: imaplib.IMAP4, folder: str, uid: int) -> bool:
    """Remove one probe; with UIDPLUS only that message is expunged, never another the user marked deleted."""
    if imap.select(quoted(folder))[0] != "OK":
        return False
    if imap.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")[0] != "OK":
        return False
    if has_capability(imap, "UIDPLUS"):
        return imap.uid("EXPUNGE", str(uid))[0] == "OK"
    return True  # flagged \Deleted; the server (or the mail client) expunges it


def has_capability(imap: imaplib.IMAP4, name: str) -> bool:
    """Asked after login: servers announce more then (imaplib keeps only the greeting's list)."""
    status, data = imap.capability()
    words = data[0].upper().split() if status == "OK" and data and isinstance(data[0], bytes) else []
    return name.encode() in words

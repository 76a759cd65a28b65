"""Read reports from a directory or a mailbox into the store, one at a time, each refusal kept apart."""

from __future__ import annotations

import imaplib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from mailhost.ops.status import shown
from mailhost.reports import mailbox, parse, store, unpack

BATCH = 200  # reports per commit: a crash loses at most this much progress, never a half report


@dataclass
class Outcome:
    read: int = 0
    new: int = 0
    duplicate: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (what, why), both safe to print


def take(db: sqlite3.Connection, what: str, data: bytes | None, domain: str, now: float, outcome: Outcome) -> None:
    """One report: stored, counted as a duplicate, or refused with its reason; never raises for its content."""
    outcome.read += 1
    try:
        if data is None:
            raise unpack.Refused(f"larger than {mailbox.MAX_MESSAGE // (1024 * 1024)} MiB or unreadable")
        report = parse.parse(unpack.report_xml(data), domain, now)
    except unpack.Refused as error:
        outcome.refused.append((what, str(error)))
        return
    except RecursionError:
        outcome.refused.append((what, "nested too deeply to be a report"))
        return
    if store.add(db, report):
        outcome.new += 1
    else:
        outcome.duplicate += 1


def from_directory(db: sqlite3.Connection, directory: Path, domain: str, now: float) -> Outcome:
    """Every regular file directly in the directory, in name order; nothing is followed outside it."""
    outcome = Outcome()
    for path in sorted(p for p in directory.iterdir() if p.is_file() and not p.is_symlink()):
        what = shown(path.name)[:120]
        try:
            with path.open("rb") as handle:
                data = handle.read(unpack.MAX_INPUT + 1)
        except OSError as error:
            outcome.read += 1
            outcome.refused.append((what, f"cannot be read ({error.strerror})"))
            continue
        take(db, what, data, domain, now, outcome)
        if outcome.read % BATCH == 0:
            store.commit(db)
    store.commit(db)
    return outcome


def from_mailbox(db: sqlite3.Connection, imap: imaplib.IMAP4_SSL, account: mailbox.Account, domain: str,
                 now: float) -> Outcome:
    """New messages of the folder (by UID); each is marked read in the store, refused or not."""
    outcome = Outcome()
    key = f"{account.user}@{account.host}:{account.port}/{account.folder}"
    validity, found = mailbox.uids(imap, account.folder)
    skip = store.seen_uids(db, key, validity)
    for uid in found:
        if uid in skip:
            continue
        take(db, f"message UID {uid}", mailbox.fetch(imap, uid), domain, now, outcome)
        store.mark_seen(db, key, validity, uid)
        if outcome.read % BATCH == 0:
            store.commit(db)
    store.commit(db)
    return outcome

"""Parsed reports in one SQLite file: history across runs, each report counted once.

A report is keyed by (reporter, report id), the pair RFC 7489 makes unique, so reading the same
mailbox or directory again adds nothing.  A report and its rows go in one transaction: a run that
stops half way leaves the database as it was before that report.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailhost.reports.parse import Report, Row

SCHEMA = """
CREATE TABLE IF NOT EXISTS report (
    org TEXT NOT NULL, report_id TEXT NOT NULL, domain TEXT NOT NULL,
    begin INTEGER NOT NULL, end INTEGER NOT NULL,
    PRIMARY KEY (org, report_id));
CREATE TABLE IF NOT EXISTS row (
    org TEXT NOT NULL, report_id TEXT NOT NULL, source_ip TEXT NOT NULL, count INTEGER NOT NULL,
    spf_aligned INTEGER NOT NULL, dkim_aligned INTEGER NOT NULL, dmarc_pass INTEGER NOT NULL,
    disposition TEXT NOT NULL,
    FOREIGN KEY (org, report_id) REFERENCES report (org, report_id));
CREATE INDEX IF NOT EXISTS report_end ON report (end);
CREATE TABLE IF NOT EXISTS seen (
    mailbox TEXT NOT NULL, validity INTEGER NOT NULL, uid INTEGER NOT NULL,
    PRIMARY KEY (mailbox, validity, uid));
"""


def default_db() -> Path:
    """Per user, beside other tools' state: $XDG_STATE_HOME or ~/.local/state."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "jira-mailhost" / "dmarc-reports.sqlite"


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating it, readable by its owner only) and make sure the tables exist."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    return db


def add(db: sqlite3.Connection, report: Report) -> bool:
    """True when the report is new; a report already stored is left as it is.  The report and its rows go
    in together or not at all (a savepoint); the caller commits (`commit`), every few hundred reports."""
    if not db.in_transaction:
        db.execute("BEGIN")  # else the savepoint would be the transaction, and releasing it a commit
    db.execute("SAVEPOINT report")
    try:
        cursor = db.execute("INSERT OR IGNORE INTO report VALUES (?, ?, ?, ?, ?)",
                            (report.org, report.report_id, report.domain, report.begin, report.end))
        if cursor.rowcount:
            db.executemany("INSERT INTO row VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [(report.org, report.report_id, r.source_ip, r.count, r.spf_aligned, r.dkim_aligned,
                             r.dmarc_pass, r.disposition) for r in report.rows])
    except BaseException:
        db.execute("ROLLBACK TO report")
        db.execute("RELEASE report")
        raise
    db.execute("RELEASE report")
    return bool(cursor.rowcount)


def commit(db: sqlite3.Connection) -> None:
    """Make what was added durable (one fsync for many reports, not one each)."""
    db.commit()


@dataclass(frozen=True)
class Counted(Row):
    """One stored row with its report's reporter and interval."""

    org: str
    begin: int
    end: int


def rows_since(db: sqlite3.Connection, since: float) -> Iterator[Counted]:
    """Rows of every report whose interval ends at or after `since`."""
    query = ("SELECT r.org, r.begin, r.end, w.source_ip, w.count, w.spf_aligned, w.dkim_aligned, w.dmarc_pass, "
             "w.disposition FROM report r JOIN row w USING (org, report_id) WHERE r.end >= ? ORDER BY r.end")
    for org, begin, end, ip, count, spf, dkim, dmarc, disposition in db.execute(query, (int(since),)):
        yield Counted(ip, count, bool(spf), bool(dkim), bool(dmarc), disposition, org, begin, end)


def seen_uids(db: sqlite3.Connection, mailbox: str, validity: int) -> set[int]:
    """Messages of this mailbox already read (UIDs hold only while UIDVALIDITY stays the same)."""
    query = "SELECT uid FROM seen WHERE mailbox = ? AND validity = ?"
    return {uid for (uid,) in db.execute(query, (mailbox, validity))}


def mark_seen(db: sqlite3.Connection, mailbox: str, validity: int, uid: int) -> None:
    """In the caller's transaction, with the report the message held: both are committed together."""
    if not db.in_transaction:
        db.execute("BEGIN")
    db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)", (mailbox, validity, uid))


def report_count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM report").fetchone()[0])

"""The two lines `mailhost status` adds when a report database is there: unknown senders and the ramp."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from mailhost.records.expected import Expected
from mailhost.reports import judge, store
from mailhost.reports.sources import summarize
from mailhost.verify.dnsquery import ResolverSpec

DAYS = 14


def brief(db_path: Path, expected: Expected, spec: ResolverSpec, days: float = DAYS,
          now: float | None = None) -> dict[str, Any] | None:
    """None without a database; it is opened read-only, so status never creates or changes one."""
    if not db_path.is_file():
        return None
    now = time.time() if now is None else now
    since = now - days * 86400
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = list(store.rows_since(db, since))
    except sqlite3.Error as error:
        return {"problem": f"the report database {db_path} cannot be read ({error})"}
    finally:
        db.close()
    summary = summarize(rows, expected, spec, since, now)
    unknown = [(ip, n) for ip, kind, n in summary.flagged() if kind == judge.UNKNOWN]
    return {"days": days, "database": str(db_path), "unknown_sources": len(unknown),
            "unknown_source_messages": sum(n for _ip, n in unknown), "ramp": summary.ramp.line(),
            "ramp_ready": summary.ramp.ready}


def lines(data: dict[str, Any]) -> list[str]:
    if "problem" in data:
        return [f"DMARC reports: {data['problem']}"]
    return [f"DMARC reports (last {data['days']:g} days, {data['database']}): {data['unknown_sources']} unknown "
            f"source(s) sent {data['unknown_source_messages']} message(s) as the domain"
            + (": see `mailhost reports`" if data["unknown_sources"] else ""), data["ramp"]]

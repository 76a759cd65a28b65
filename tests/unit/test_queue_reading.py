"""`postqueue -j` as the collector reads it: each line at its known keys, bounded, never guessed at."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from mailhost.publish import mailstats

NOW = 1_800_000_000
GOOD: dict[str, Any] = {"queue_name": "deferred", "queue_id": "4XyZ12abCd", "arrival_time": NOW - 60,
                        "recipients": [{"address": "a@example.org", "delay_reason": "connect to x: Connection refused"},
                                       {"address": "b@example.org"}]}


def postqueue(tmp_path: Path, stdout: bytes, rc: int = 0, stderr: bytes = b"", sleep: float = 0) -> list[str]:
    """A stand-in postqueue that writes these bytes (what real Postfix writes is judged in tests/real)."""
    (tmp_path / "out").write_bytes(stdout)
    (tmp_path / "err").write_bytes(stderr)
    script = tmp_path / "postqueue.py"
    script.write_text("import sys, time\n"
                      f"time.sleep({sleep})\n"
                      f"sys.stdout.buffer.write(open({str(tmp_path / 'out')!r}, 'rb').read())\n"
                      f"sys.stderr.buffer.write(open({str(tmp_path / 'err')!r}, 'rb').read())\n"
                      f"sys.exit({rc})\n")
    return [sys.executable, str(script)]


def line(**changes: Any) -> str:
    item = {**GOOD, **changes}
    return json.dumps({k: v for k, v in item.items() if v is not ...})


def test_a_line_as_postfix_writes_it_is_read_whole() -> None:
    assert mailstats.parse_queued(line()) == mailstats.Queued(
        "deferred", "4XyZ12abCd", NOW - 60,
        [("a@example.org", "connect to x: Connection refused"), ("b@example.org", "")])
    assert mailstats.parse_queued(line(queue_id="A" * 32, recipients=[])) is not None, "32 characters fit"
    assert mailstats.parse_queued(line(arrival_time=0)) is not None, "a clock at the epoch: old, not unreadable"
    for queue in mailstats.QUEUES:
        assert mailstats.parse_queued(line(queue_name=queue)) is not None, queue


@pytest.mark.parametrize("raw", [
    line(queue_name=...), line(queue_name="corrupt"), line(queue_name=["deferred"]), line(queue_id=...),
    line(queue_id="A B"), line(queue_id="A" * 33), line(queue_id=""), line(queue_id=12),
    line(arrival_time=...), line(arrival_time=float(NOW)), line(arrival_time=str(NOW)), line(arrival_time=True),
    line(arrival_time=-1), line(recipients=...), line(recipients={"address": "a@b"}), line(recipients=["a@b"]),
    line(recipients=[{"delay_reason": "x"}]), line(recipients=[{"address": 7}]),
    line(recipients=[{"address": "a@b", "delay_reason": ["x"]}]), json.dumps([GOOD]), "{broken", '"text"',
])
def test_a_line_of_another_shape_is_unreadable_not_guessed_at(raw: str) -> None:
    assert mailstats.parse_queued(raw) is None


def test_blank_and_unreadable_lines_are_skipped_and_each_counted(tmp_path: Path) -> None:
    raw = f"\n{line(queue_id='A1')}\n   \nnot json\n{line(queue_name='corrupt')}\n\n{line(queue_id='B2')}\n"
    queue = mailstats.read_queue(NOW, postqueue(tmp_path, raw.encode()))
    assert (queue["deferred"], queue["unreadable"], queue["problem"]) == (2, 2, None)
    assert sorted({s["queue_id"] for s in queue["stuck"]}) == ["A1", "B2"]


def test_a_message_from_the_future_is_zero_seconds_old(tmp_path: Path) -> None:
    """A clock set back after the message arrived: no negative age, and no made-up second either."""
    queue = mailstats.read_queue(NOW, postqueue(tmp_path, line(arrival_time=NOW + 3600).encode()))
    assert queue["oldest_age_seconds"] == 0 and [s["age_seconds"] for s in queue["stuck"]] == [0, 0]


def test_the_domain_is_after_the_last_at_sign_and_reasons_are_cut(tmp_path: Path) -> None:
    long_reason = "host mx[198.51.100.7] said: 450 4.7.28 " + "x" * 400
    raw = line(recipients=[{"address": '"a@b"@Example.ORG', "delay_reason": long_reason}])
    [stuck] = mailstats.read_queue(NOW, postqueue(tmp_path, raw.encode()))["stuck"]
    assert stuck["domain"] == "example.org"
    assert stuck["reason"] == long_reason[:300]
    assert stuck["cause"] == "rate_limit", "the reply's enhanced code decides (its words alone say nothing)"


def test_bytes_that_are_not_utf8_are_replaced_not_fatal(tmp_path: Path) -> None:
    raw = line(recipients=[{"address": "a@x.org", "delay_reason": "host mx said: 450 busy ZZ"}]).encode()
    queue = mailstats.read_queue(NOW, postqueue(tmp_path, raw.replace(b"ZZ", b"\xff\xfe"), 1,
                                                b"postqueue: warning: \xff odd\n"))
    assert queue["stuck"][0]["reason"] == "host mx said: 450 busy \ufffd\ufffd"
    assert queue["problem"] == "postqueue: warning: \ufffd odd"


def test_what_postqueue_says_on_failure_is_its_last_line_cut_at_300(tmp_path: Path) -> None:
    said = b"postqueue: warning: first\npostqueue: fatal: " + b"y" * 400 + b"\n"
    assert mailstats.read_queue(NOW, postqueue(tmp_path, b"", 75, said))["problem"] == \
        ("postqueue: fatal: " + "y" * 400)[:300]
    assert mailstats.read_queue(NOW, postqueue(tmp_path, b"", 1))["problem"] == "postqueue failed"


def test_a_postqueue_that_cannot_run_or_hangs_is_a_problem_with_nothing_counted(tmp_path: Path) -> None:
    empty = {**dict.fromkeys(mailstats.QUEUES, 0), "oldest_age_seconds": 0, "stuck": [], "more_stuck": 0,
             "unreadable": 0, "tls_held": 0, "tls_held_oldest_age_seconds": 0}
    missing = mailstats.read_queue(NOW, [str(tmp_path / "no-postqueue")])
    assert {k: v for k, v in missing.items() if k != "problem"} == empty
    assert "no-postqueue" in missing["problem"]
    hung = mailstats.read_queue(NOW, postqueue(tmp_path, line().encode(), sleep=30), timeout=0.5)
    assert {k: v for k, v in hung.items() if k != "problem"} == empty
    assert "timed out after 0.5 seconds" in hung["problem"]

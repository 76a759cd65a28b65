"""delivery.relay.maxPerMinute against a relay that limits its rate, as Microsoft 365 does (30 a minute per
mailbox, `421 4.4.2 Message submission rate ... exceeded` above it).

The lab's smarthost takes LIMIT messages per WINDOW seconds (30 a minute) and answers 421 4.4.2 above.
Without the setting a Jira burst runs into that limit: deferrals, `status` names the relay's rate limit
with the fix, and everything arrives in the end.  With maxPerMinute 30 Postfix paces its deliveries: no
421 at all, and the smarthost's own timestamps show the spacing.  Last, the smarthost in store-and-forward
mode (250 once stored, relayed afterwards, as real relays work) holds a burst while the MX is down.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailhost.lab import jirahost, ops
from mailhost.lab import lab as labmod
from mailhost.lab.lab import Lab
from tests.real.conftest import lab_in_tmp, until
from tests.real.test_status_lab import host_report, status

pytestmark = [pytest.mark.real]
LIMIT, WINDOW = 10, 20.0  # 10 per 20 s: 30 a minute


@pytest.fixture(scope="module")
def lab(jm_lab_lock: None) -> Iterator[Lab]:
    with lab_in_tmp("pacing", mode="relay") as the_lab:
        the_lab.stop_smarthost()
        the_lab.start_smarthost(extra=["--max-per-window", str(LIMIT), "--window", str(WINDOW)])
        yield the_lab


def limited(lab: Lab, burst: str) -> list[dict[str, Any]]:
    return [e for e in ops.relayed(lab, burst) if e.get("rate_limited")]


def test_without_pacing_a_burst_meets_the_relays_limit_and_status_names_it(lab: Lab) -> None:
    burst = ops.send(lab, 16, big_every=0)
    assert burst.sent == 16
    until(lambda: len(limited(lab, burst.name)) >= 16 - LIMIT, 60, "the relay's 421 4.4.2 answers")
    host = status(lab)[1]["hosts"]["jira"]
    causes = {(c["cause"], c["code"]): c for c in host["report"]["causes"]}
    assert ("relay_rate", "4.4.2") in causes, sorted(causes)
    assert causes[("relay_rate", "4.4.2")]["status"] == "deferred"
    findings = " ".join(f.get("fix", "") for f in host["findings"])
    assert "delivery.relay.maxPerMinute" in findings, findings
    time.sleep(WINDOW)  # the relay's window passes; Postfix would retry on its own after its backoff
    assert jirahost.run(lab.info(), ["postqueue", "-f"]).returncode == 0
    got, _ = ops.wait_delivered(lab, burst, timeout=120)
    assert len({r["message_id"] for r in got}) == 16, "nothing lost"


def test_with_max_per_minute_postfix_paces_and_the_relay_never_refuses(lab: Lab) -> None:
    ops.write_stack(lab, "relay", {"delivery": {"relay": {"maxPerMinute": 30}}})
    ops.deploy(lab)
    assert jirahost.run(lab.info(), ["postconf", "-h", "smtp_destination_rate_delay"]).stdout.strip() == "2s"
    time.sleep(WINDOW)  # an empty window at the relay
    burst = ops.send(lab, 14, big_every=0)
    got, seconds = ops.wait_delivered(lab, burst, timeout=180)
    assert len({r["message_id"] for r in got}) == 14
    entries = ops.relayed(lab, burst.name)
    assert not limited(lab, burst.name) and len([e for e in entries if e["relayed"]]) == 14, entries
    times = sorted(e["time"] for e in entries)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1.9, gaps  # 2 s between deliveries, counted from the end of the one before
    assert seconds >= 13 * 2, seconds


def cap_findings(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["level"], f["what"]) for f in host_report(data)["findings"] if "delivery.relay.maxPerDay" in f["fix"]]


def test_max_per_day_is_pushed_and_status_counts_the_last_day_against_it(lab: Lab) -> None:
    """The collector on the host reads the cap the push wrote and counts the real log's sent deliveries of the
    last 24 h, also when status's own window is an hour; 80 % warns, the cap is critical."""
    time.sleep(WINDOW)  # an empty window at the relay: the 5 go through without a 421 (paced or not)
    burst = ops.send(lab, 5, big_every=0)
    assert len({r["message_id"] for r in ops.wait_delivered(lab, burst, timeout=120)[0]}) == 5
    assert ops.queue(lab) == [], "nothing waits: the counts below cannot move between two status runs"

    def push(cap: int) -> None:
        ops.write_stack(lab, "relay", {"delivery": {"relay": {"maxPerMinute": 30, "maxPerDay": cap}}})
        ops.deploy(lab)
        env = jirahost.run(lab.info(), ["cat", "/var/lib/jira-mailhost/settings.env"]).stdout
        assert f"\nRELAY_MAX_PER_DAY={cap}\n" in env

    push(10_000)
    day = host_report(status(lab, "--hours", "24")[1])["report"]
    sent = day["deliveries"]["sent"]
    assert sent >= 5 and day["relay_day"] == {"cap": 10_000, "sent": sent}
    code, data = status(lab)  # an hour's window: the day is read on its own
    assert host_report(data)["report"]["relay_day"] == {"cap": 10_000, "sent": sent}
    assert cap_findings(data) == []

    near = sent + max(1, sent // 8)  # sent is 80-99 % of it
    push(near)
    code, data = status(lab)
    assert cap_findings(data) == [("warning", f"{sent} of the relay's {near} recipients a day used in the last 24 h "
                                              f"({sent * 100 // near} %): past the cap it refuses Jira's mail for up "
                                              "to a day")]
    push(sent)
    code, data = status(lab)
    assert code == 2 and [level for level, _ in cap_findings(data)] == ["critical"], cap_findings(data)


def test_a_store_and_forward_relay_takes_a_burst_while_the_mx_is_down_and_delivers_it_later(lab: Lab) -> None:
    """--store-and-forward, as real relays work: 250 once stored.  With the MX down Postfix's queue still
    empties (the relay holds the mail) and nothing reaches the MX; with the MX back, the relay's retries
    deliver every message once, each logged with when it was taken and when it left."""
    lab.stop_smarthost()
    lab.start_smarthost(extra=["--store-and-forward"])
    info = lab.info()
    labmod._kill(info.pids.pop("receiver"))
    lab.save(info)
    burst = ops.send(lab, 6, big_every=0)
    until(lambda: ops.queue(lab) == [], 60, "Postfix handing the whole burst to the relay")
    assert ops.records(lab, burst.name) == [] and ops.relayed(lab, burst.name) == [], "stored, not yet relayed"
    lab.start_receiver()
    got, _ = ops.wait_delivered(lab, burst, timeout=120)
    assert len({r["message_id"] for r in got}) == len(got) == 6
    entries = ops.relayed(lab, burst.name)
    assert len(entries) == 6 and all(e["relayed"] and e["accepted"] < e["time"] for e in entries), entries

"""delivery.maxConnections against a receiver that caps concurrent connections, as Gmail and Microsoft do.

The lab MX (example.net and the three domains that share it) sits behind a 50 ms round trip and answers
`421 4.7.0` at the greeting above 5 connections from one address.  A Jira burst to the four domains:
  - with Postfix's own limits (maxConnections 100: up to 20 connections per domain) the MX refuses
    connections and Postfix defers the mail they were for; `status` names the cause with the
    maxConnections fix, and nothing is lost once the limit is back;
  - with the default (5) and `outboundTls: opportunistic` the MX refuses nothing, every message arrives, and
    its own connection log never shows more than 5 connections open at once from one address (IPv4 and IPv6
    count apart, as at a real receiver: mailhost.lab.wan puts one relay per family in front of it);
  - with direct mode's default `dane+mta-sts` the MX (it publishes TLSA records) gets one cached connection per
    recipient domain, the cost README "Outbound TLS" states: whatever it refuses waits in the queue, and a
    flush delivers every message, once, all of them over TLS.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailhost.lab import jirahost, ops, tlsstats, wan, zones
from mailhost.lab.lab import Lab
from mailhost.settings.config import MAX_CONNECTIONS
from tests.real.conftest import lab_in_tmp, until
from tests.real.test_status_lab import status

pytestmark = [pytest.mark.real]
CAP = 5
COUNT = 60
OPPORTUNISTIC = {"delivery": {"outboundTls": "opportunistic"}}
RECIPIENTS = [f"{user}@{domain}" for domain in (zones.RECIPIENT_DOMAIN, *zones.SAME_MX_DOMAINS)
              for user in ("alice", "bob", "carol")]


@pytest.fixture(scope="module")
def lab(jm_lab_lock: None) -> Iterator[Lab]:
    with lab_in_tmp("capped", mode="direct") as the_lab:
        wan.receivers(the_lab, rtt_ms=50, cap=CAP, extra=("--no-verdicts",))
        yield the_lab


def connections(lab: Lab, since: float) -> list[dict[str, Any]]:
    """The MX's connections since `since`, once Postfix has closed its cached ones (a line is written at close)."""
    jirahost.run(lab.info(), ["postfix", "reload"])
    time.sleep(2)
    return tlsstats.read(lab.receiver_connections, since=since)


def most_open(conns: list[dict[str, Any]]) -> int:
    """The most connections the MX held open at one moment from one address, as its cap counts them (a
    close before an open at the same instant)."""
    most = 0
    for peer in {c["peer"] for c in conns}:
        mine = [c for c in conns if c["peer"] == peer]
        events = sorted(itertools.chain(((c["opened"], 1) for c in mine), ((c["closed"], -1) for c in mine)))
        most = max(most, *itertools.accumulate(step for _, step in events))
    return most


def connection_cap(lab: Lab) -> dict[str, Any] | None:
    """The host's status report once it counts deferrals for the receiver's connection cap."""
    host: dict[str, Any] = status(lab)[1]["hosts"]["jira"]
    return host if any(c["cause"] == "connection_cap" and c["status"] == "deferred"
                       for c in host["report"]["causes"]) else None


def test_the_cap_is_what_the_max_open_count_measures() -> None:
    a, b = "198.51.100.25", "2001:db8:5100::25"
    conns = [{"peer": a, "opened": 0.0, "closed": 2.0}, {"peer": a, "opened": 1.0, "closed": 3.0},
             {"peer": a, "opened": 2.0, "closed": 4.0}, {"peer": b, "opened": 1.5, "closed": 2.5}]
    assert most_open(conns) == 2 and most_open(conns[3:]) == 1 and most_open([]) == 0


def test_postfixs_own_limits_run_into_the_cap_and_lose_nothing(lab: Lab) -> None:
    # Connections shared by all four domains (opportunistic); the DANE default's own cost is the last test
    ops.write_stack(lab, "direct", {"delivery": {"maxConnections": 100, "outboundTls": "opportunistic"}})
    ops.deploy(lab)
    start = time.time()
    burst = ops.send(lab, COUNT, big_every=0, recipients=RECIPIENTS)
    until(lambda: any(c.get("refused") for c in tlsstats.read(lab.receiver_connections, since=start)), 60,
          "the MX's 421 4.7.0 at the greeting")
    host = until(lambda: connection_cap(lab), 60, "`status` naming the receiver's connection cap")
    assert "delivery.maxConnections" in " ".join(f.get("fix", "") for f in host["findings"]), host["findings"]
    ops.write_stack(lab, "direct", OPPORTUNISTIC)  # the default limit again; the deferred mail goes out under it
    ops.deploy(lab)
    assert jirahost.run(lab.info(), ["postqueue", "-f"]).returncode == 0
    got, _ = ops.wait_delivered(lab, burst, timeout=180)
    assert len({r["message_id"] for r in got}) == burst.sent == COUNT, "nothing lost"


def test_the_default_limit_stays_under_the_cap_and_delivers_the_burst(lab: Lab) -> None:
    assert MAX_CONNECTIONS == CAP
    ops.write_stack(lab, "direct", OPPORTUNISTIC)  # as the test above left it
    ops.deploy(lab)
    connections(lab, 0.0)  # the connections Postfix cached for the flush above are closed and counted
    start = time.time()
    burst = ops.send(lab, COUNT, big_every=0, recipients=RECIPIENTS)
    got, _ = ops.wait_delivered(lab, burst, timeout=120)
    assert len({r["message_id"] for r in got}) == burst.sent == COUNT
    conns = connections(lab, start)
    assert not [c for c in conns if c.get("refused")], "the MX refused a connection"
    assert 1 <= most_open(conns) <= CAP, conns
    assert sum(c["messages"] for c in conns) == COUNT, "each message on a connection the MX counted"


def test_under_the_dane_default_what_the_cap_refuses_waits_and_a_flush_delivers_all_over_tls(lab: Lab) -> None:
    ops.write_stack(lab, "direct")  # direct mode's default: dane+mta-sts
    ops.deploy(lab)
    level = jirahost.run(lab.info(), ["postconf", "-h", "smtp_tls_security_level"]).stdout.strip()
    assert level == "dane", level
    connections(lab, 0.0)
    start = time.time()
    burst = ops.send(lab, COUNT, big_every=0, recipients=RECIPIENTS)
    got, _ = ops.wait_delivered(lab, burst, timeout=20)
    deadline = time.monotonic() + 180
    while len({r["message_id"] for r in got}) < COUNT and time.monotonic() < deadline:
        # what the cap refused waits in the queue for Postfix's backoff; a flush retries it now
        assert jirahost.run(lab.info(), ["postqueue", "-f"]).returncode == 0
        got, _ = ops.wait_delivered(lab, burst, timeout=20)
    ids = [r["message_id"] for r in got]
    assert len(set(ids)) == burst.sent == COUNT, "nothing lost"
    assert len(ids) == COUNT, "nothing twice"
    assert all(r["tls"] for r in got), "every message over TLS"
    conns = connections(lab, start)
    assert not [c for c in conns if c["messages"] and not c["tls"]], "none in clear"

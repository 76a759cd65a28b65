"""delivery.tlsPolicy against an attacker on the path: STARTTLS stripped, and nothing goes in clear.

mx2 (the MX of partner.example.net and vendor.example.net) sits behind mailhost.lab.delayrelay with
--strip-starttls, which rewrites mx2's STARTTLS offer as a firewall's "SMTP inspection" or a downgrade
attacker does.  The stack says partner.example.net: encrypt, and nothing about vendor.example.net:
  - vendor's burst is delivered in clear (today's opportunistic `may`), and counted as clear;
  - partner's burst waits in the queue, not one message reaches mx2, and `status` names the cause, the
    messages held for TLS and the fix (the first message sent alone, so that qmgr holds back the rest with
    its "delivery temporarily suspended:" words, which status must count too);
  - with the path clean again, one `postqueue -f` delivers every held message over TLS: 0 lost, 0 twice.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailhost.lab import jirahost, ops, receiver, zones
from mailhost.lab import lab as labmod
from mailhost.lab.lab import Lab
from mailhost.publish import render
from tests.real.conftest import lab_in_tmp, until
from tests.real.test_status_lab import status

pytestmark = [pytest.mark.real]
PARTNER, VENDOR = zones.SECOND_MX_DOMAINS
COUNT = 12


def path_to_mx2(lab: Lab, strip: bool) -> None:
    """mx2 on port 2525; on its port 25 a relay that strips STARTTLS (or, clean, only forwards)."""
    info = lab.info()
    pid = info.pids.pop("path-mx2", None)
    if pid:
        labmod._kill(pid)
    lab.save(info)
    sh = lab.world.smarthost
    argv = [sys.executable, "-m", "mailhost.lab.delayrelay", "--listen", sh.v4, "--listen", sh.v6, "--port", "25",
            "--to", f"{sh.v4}:2525", "--delay-ms", "0", *(["--strip-starttls"] if strip else [])]
    info.pids["path-mx2"] = lab.host("smarthost").spawn(argv, log=lab.state_dir / "path-mx2.log").pid
    lab.save(info)
    labmod.wait_port(sh.v4, 25, what="the path to mx2", log=lab.state_dir / "path-mx2.log")


@pytest.fixture(scope="module")
def lab(jm_lab_lock: None) -> Iterator[Lab]:
    with lab_in_tmp("tlspolicy", mode=None) as the_lab:
        # tlsPolicy alone (opportunistic for the rest); test_lab_mta_sts.py strips STARTTLS under the DANE modes
        ops.up(the_lab, "direct", {"delivery": {"tlsPolicy": {PARTNER: "encrypt"}, "outboundTls": "opportunistic"}})
        path_to_mx2(the_lab, strip=True)  # first: start_second_mx waits for port 25, which the relay holds
        the_lab.start_second_mx(extra=["--port", "2525"])
        labmod.wait_port(the_lab.world.smarthost.v4, 2525, what="mx2")
        yield the_lab


def at_mx2(lab: Lab, burst: str) -> list[dict[str, Any]]:
    return [r for r in receiver.read_records(lab.second_mx_log) if r.get("burst") == burst]


def held_for_tls(lab: Lab) -> list[dict[str, Any]]:
    """Queued for TLS: the first message's reason, or qmgr's "delivery temporarily suspended: " and the same
    words for the messages it then holds back without trying."""
    return [m for m in ops.queue(lab) for r in m.get("recipients", [])
            if "TLS is required, but was not offered by host mx2." in str(r.get("delay_reason", ""))]


def test_the_policy_is_what_postfix_looks_up(lab: Lab) -> None:
    table = f"texthash:{render.TLS_POLICY_MAP}"
    assert jirahost.run(lab.info(), ["postconf", "-h", "smtp_tls_policy_maps"]).stdout.strip() == table
    looked_up = {d: jirahost.run(lab.info(), ["postmap", "-q", d, table]).stdout.strip() for d in (PARTNER, VENDOR)}
    assert looked_up == {PARTNER: "encrypt", VENDOR: ""}


def test_stripped_starttls_sends_nothing_in_clear_to_a_domain_that_requires_tls(lab: Lab) -> None:
    vendor = ops.send(lab, COUNT, big_every=0, recipients=[f"erin@{VENDOR}"])
    first = ops.send(lab, 1, big_every=0, recipients=[f"alice@{PARTNER}"])
    until(lambda: held_for_tls(lab), 90, "the first partner message held for TLS")
    # The destination is now suspended: qmgr holds the others back with its own words before the same reason.
    rest = ops.send(lab, COUNT - 1, big_every=0, recipients=[f"alice@{PARTNER}"])
    assert vendor.sent == COUNT and first.sent + rest.sent == COUNT
    plain = until(lambda: len(got := at_mx2(lab, vendor.name)) >= COUNT and got, 90, "the vendor burst at mx2")
    assert not any(r["tls"] for r in plain), "no policy: delivered, in clear (the stripper worked)"
    until(lambda: len(held_for_tls(lab)) >= COUNT, 90, "the partner burst held for TLS")
    reasons = {str(r["delay_reason"]).partition("TLS is required")[0] for m in held_for_tls(lab)
               for r in m["recipients"]}
    # Postfix's own words, bare or after qmgr's suspension prefix (which qmgr uses only while it still holds the
    # destination as dead: on a slow machine it may have let it go): status counts both (tls_held below).
    assert "" in reasons and reasons <= {"", "delivery temporarily suspended: "}, reasons
    assert at_mx2(lab, first.name) == at_mx2(lab, rest.name) == [], "nothing to the encrypt domain went in clear"

    rc, data = status(lab)
    host = data["hosts"]["jira"]
    queue = host["report"]["queue"]
    assert queue["tls_held"] == COUNT and queue["tls_held_oldest_age_seconds"] >= 0
    causes = {(c["cause"], c["status"]) for c in host["report"]["causes"]}
    assert ("tls_required", "deferred") in causes, causes
    held = [f for f in host["findings"] if "requires TLS" in f["what"]]
    assert held and "nothing is lost" in held[0]["fix"] and "strips" in held[0]["fix"], host["findings"]
    assert rc >= 1, "a held queue is at least a warning"
    assert host["report"]["tls"]["sent_by_trust"]["none"] == COUNT, "status counts vendor's mail as sent in clear"


def test_with_the_path_clean_a_flush_delivers_every_held_message_over_tls(lab: Lab) -> None:
    earlier = {r.get("burst") for r in receiver.read_records(lab.second_mx_log)}

    def new_at_mx2() -> list[dict[str, Any]]:
        return [r for r in receiver.read_records(lab.second_mx_log) if r.get("burst") not in earlier]

    path_to_mx2(lab, strip=False)
    assert jirahost.run(lab.info(), ["postqueue", "-f"]).returncode == 0
    until(lambda: len(new_at_mx2()) >= COUNT and not held_for_tls(lab), 90, "the held messages at mx2")
    time.sleep(1)  # anything arriving twice would show up now
    delivered = new_at_mx2()
    ids = [r["message_id"] for r in delivered]
    assert len(ids) == COUNT and len(set(ids)) == COUNT, "0 lost, 0 twice"
    assert all(r["tls"] and r["rcpt_to"] == [f"alice@{PARTNER}"] for r in delivered), delivered
    trust = status(lab)[1]["hosts"]["jira"]["report"]["tls"]["sent_by_trust"]
    assert trust["none"] == COUNT and sum(trust.values()) - trust["none"] >= COUNT, trust

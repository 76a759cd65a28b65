"""Relay mode gives the SASL password only to a smarthost whose certificate it verified.

The jira host trusts the lab CA (as a Debian host trusts a public CA); the smarthost
records every session's STARTTLS, AUTH and any bytes that carry the password.  A man in
the middle is played by the smarthost itself presenting another certificate: one not
from a trusted CA, one from the trusted CA for another name, one that does not match a
pinned fingerprint.  Each time the mail must stay queued, the log must say why, and the
smarthost must have seen no AUTH and no byte of the password; once the right
certificate is back, every queued message is delivered (count in = count out).
With `smtp_tls_security_level = encrypt` the untrusted-certificate test fails: the
password (and the mail) go to whoever answers.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mailhost.lab.lab as lab_module
from mailhost.lab import jirahost, ops, tlscert, zones
from mailhost.lab.lab import SMARTHOST_NAME, Lab
from tests.real.conftest import lab_in_tmp

pytestmark = [pytest.mark.real, pytest.mark.lab, pytest.mark.usefixtures("jm_lab_lock")]
COUNT = 5
DEFERRED = "dsn=4.7.5, status=deferred (Server certificate not verified)"


@pytest.fixture(scope="module")
def lab(jm_lab_lock: None) -> Iterator[Lab]:
    with lab_in_tmp("relaytls", "relay") as the_lab:
        # the men in the middle: the right name from an untrusted issuer, a trusted issuer for another name
        tlscert.self_signed(SMARTHOST_NAME).write(*the_lab.cert_paths("self-signed"))
        the_lab.lab_ca().issue(f"other.{zones.RECIPIENT_DOMAIN}").write(*the_lab.cert_paths("other-name"))
        yield the_lab


class Marks:
    """Where the smarthost's events and the jira host's mail log stood, to read only what came after."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.events = len(_events(lab))
        self.log = len(_maillog(lab))

    def new_events(self) -> list[dict[str, Any]]:
        return _events(self.lab)[self.events:]

    def new_log(self) -> str:
        return _maillog(self.lab)[self.log:]


def _events(lab: Lab) -> list[dict[str, Any]]:
    path = lab.smarthost_events
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1]]  # a line still being written is not read


def _maillog(lab: Lab) -> str:
    return jirahost.run(lab.info(), ["cat", ops.MAILLOG]).stdout


def present(lab: Lab, cert: str) -> None:
    """Restart the smarthost with another certificate (cached TLS sessions and connections die with it)."""
    lab.stop_smarthost()
    lab.start_smarthost(cert=cert)


def flush(lab: Lab) -> None:
    assert jirahost.run(lab.info(), ["postqueue", "-f"]).returncode == 0


def wait_deferred(lab: Lab, burst: ops.Burst, mark: Marks, timeout: float = 60) -> list[dict[str, Any]]:
    """Until the burst sits in the deferred queue after a new attempt to reach the smarthost;
    fails at once if the smarthost got an AUTH or the password, or the mail got through."""
    jira = lab.host("jira")
    deadline = time.monotonic() + timeout
    while True:
        events = mark.new_events()
        leaked = [e for e in events if e["event"] in ("auth", "password-received")]
        assert not leaked, f"the smarthost got the password over an unverified TLS session: {leaked}"
        assert not ops.records(lab, burst.name), "mail went through a smarthost the host could not verify"
        queued = ops.queue(lab)
        tried = [e for e in events if e["event"] == "connect" and e["peer"] in (jira.ipv4, jira.ipv6)]
        if (len(queued) == burst.sent and all(q["queue_name"] == "deferred" for q in queued) and tried
                and "status=deferred" in mark.new_log()):
            return queued
        if time.monotonic() > deadline:
            raise AssertionError(f"not {burst.sent} deferred after {timeout}s: {queued}\n{mark.new_log()[-2000:]}")
        time.sleep(0.25)


def assert_refused_without_password(lab: Lab, burst: ops.Burst, mark: Marks, *reasons: str) -> list[dict[str, Any]]:
    """Queued, logged, and the smarthost learnt nothing: no AUTH, no byte of the password."""
    queued = wait_deferred(lab, burst, mark)
    events = mark.new_events()
    kinds = [e["event"] for e in events]
    assert "starttls" in kinds, events  # the host did reach this smarthost: the refusal is about its certificate
    assert "auth" not in kinds and "password-received" not in kinds, events
    log = mark.new_log()
    missing = [reason for reason in (*reasons, DEFERRED) if reason not in log]
    assert not missing, f"{missing} not in the mail log:\n{log[-3000:]}"
    why = {r.get("delay_reason", "") for q in queued for r in q["recipients"]}  # "delivery temporarily suspended: …"
    assert all(w.endswith("Server certificate not verified") for w in why), why  # when qmgr skips a dead relay
    assert ops.records(lab, burst.name) == [] and ops.relayed(lab, burst.name) == []
    return events


def deliver_after_fix(lab: Lab, burst: ops.Burst) -> list[dict[str, Any]]:
    """The queued burst goes out once the smarthost is trusted again: count in = count out."""
    flush(lab)
    recs, _ = ops.wait_delivered(lab, burst, timeout=60)
    assert len({r["message_id"] for r in recs}) == burst.sent == len(recs)
    assert ops.queue(lab) == []
    return recs


def test_the_lab_lock_is_held_while_the_lab_runs(lab: Lab) -> None:
    """Another run of a jm lab module would wait here instead of tearing this lab down."""
    probe = subprocess.run(["flock", "--nonblock", "--conflict-exit-code", "75", lab_module.__file__, "true"],
                           timeout=10)
    assert probe.returncode == 75


def test_only_the_jira_host_trusts_the_lab_ca(lab: Lab) -> None:
    """Trusted through the jira host's own /etc/ssl/certs (hash link and bundle), never the machine's."""
    cert = str(lab.cert_paths("smarthost")[0])
    inside = jirahost.run(lab.info(), ["openssl", "verify", "-CApath", "/etc/ssl/certs", cert])
    assert inside.returncode == 0 and inside.stdout.strip().endswith(": OK"), inside
    bundle = jirahost.run(lab.info(), ["openssl", "verify", "-CAfile", "/etc/ssl/certs/ca-certificates.crt", cert])
    assert bundle.returncode == 0, bundle
    subject_hash = subprocess.run(["openssl", "x509", "-noout", "-subject_hash", "-in", str(lab.ca_cert)],
                                  capture_output=True, text=True, check=True).stdout.strip()
    link = jirahost.run(lab.info(), ["readlink", f"/etc/ssl/certs/{subject_hash}.0"]).stdout.strip()
    assert link == jirahost.CA_FILE
    outside = subprocess.run(["openssl", "verify", "-CApath", "/etc/ssl/certs", cert], capture_output=True, text=True)
    assert outside.returncode != 0, "the machine itself must not trust the lab CA"
    assert lab.ca_cert.read_bytes() not in Path("/etc/ssl/certs/ca-certificates.crt").read_bytes()
    assert not Path("/etc/ssl/certs", jirahost.CA_FILE).exists()


def test_verified_relay_gets_the_password_and_the_mail(lab: Lab) -> None:
    """The positive control: with the lab CA's certificate, Postfix verifies, authenticates, delivers;
    the smarthost's instrumentation does see AUTH and the password (so its silence below means something)."""
    main_cf = jirahost.run(lab.info(), ["postconf", "-h", "smtp_tls_security_level", "smtp_tls_secure_cert_match"])
    assert main_cf.stdout.split() == ["secure", "nexthop"]
    mark = Marks(lab)
    burst = ops.send(lab, COUNT, big_every=0)
    recs, _ = ops.wait_delivered(lab, burst, timeout=60)
    assert len({r["message_id"] for r in recs}) == COUNT
    kinds = [e["event"] for e in mark.new_events()]
    assert "auth" in kinds and "password-received" in kinds
    assert f"Verified TLS connection established to {SMARTHOST_NAME}" in mark.new_log()


def test_untrusted_or_misnamed_certificate_gets_neither_password_nor_mail(lab: Lab) -> None:
    present(lab, "self-signed")
    mark = Marks(lab)
    burst = ops.send(lab, COUNT, big_every=0)
    assert burst.sent == COUNT
    untrusted = assert_refused_without_password(
        lab, burst, mark, f"certificate verification failed for {SMARTHOST_NAME}[", ": self-signed certificate")

    present(lab, "other-name")  # a certificate the trusted CA did sign, for a name that is not the relay's
    mark = Marks(lab)
    flush(lab)
    misnamed = assert_refused_without_password(
        lab, burst, mark, f"server certificate verification failed for {SMARTHOST_NAME}[", ":hostname mismatch")

    present(lab, "smarthost")
    mark = Marks(lab)
    recs = deliver_after_fix(lab, burst)
    assert "auth" in [e["event"] for e in mark.new_events()]
    print(f"\nRELAY-TLS refused: untrusted issuer ({len(untrusted)} smarthost events, 0 AUTH), "
          f"other name ({len(misnamed)} events, 0 AUTH); {COUNT} queued in, {len(recs)} delivered after the fix")


def test_pinned_fingerprint_trusts_exactly_that_certificate(lab: Lab) -> None:
    self_signed = lab.cert_paths("self-signed")[0].read_bytes()
    right = tlscert.fingerprint(self_signed)
    wrong = tlscert.fingerprint(lab.cert_paths("smarthost")[0].read_bytes())  # a real certificate, not this one
    present(lab, "self-signed")

    deployed = ops.up(lab, "relay", {"delivery": {"relay": {"tlsFingerprint": right}}})
    assert deployed["remote_commands"] == ["jira-push"]
    level = jirahost.run(lab.info(), ["postconf", "-h", "smtp_tls_security_level", "smtp_tls_fingerprint_cert_match"])
    assert level.stdout.split() == ["fingerprint", right]
    mark = Marks(lab)
    burst = ops.send(lab, COUNT, big_every=0)
    recs, _ = ops.wait_delivered(lab, burst, timeout=60)
    assert len({r["message_id"] for r in recs}) == COUNT, "a pinned self-signed certificate is enough"
    assert "auth" in [e["event"] for e in mark.new_events()]
    assert f"Verified TLS connection established to {SMARTHOST_NAME}" in mark.new_log()

    ops.up(lab, "relay", {"delivery": {"relay": {"tlsFingerprint": wrong.lower().replace(":", "")}}})
    mark = Marks(lab)
    burst = ops.send(lab, COUNT, big_every=0)
    events = assert_refused_without_password(  # Postfix matches fingerprints through its DANE code
        lab, burst, mark, f"server certificate verification failed for {SMARTHOST_NAME}[", ":no matching DANE TLSA")

    ops.up(lab, "relay", {"delivery": {"relay": {"tlsFingerprint": right}}})
    recs = deliver_after_fix(lab, burst)
    print(f"\nRELAY-TLS pinned: right fingerprint {COUNT}/{COUNT} delivered; wrong fingerprint refused "
          f"({len(events)} smarthost events, 0 AUTH), {len(recs)} delivered once pinned right")

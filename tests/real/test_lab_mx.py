"""The lab's receiving side on its own: real Knot, the MX receiver and the smarthost in namespaces.

Mail is sent from the root namespace (lab address .1 / ::1) with records published by
RFC 2136 updates, so each verdict can be driven to pass and to fail.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Iterator
from email.message import EmailMessage

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailhost.lab import dnsupdate, mail, receiver, zones
from mailhost.lab.lab import RELAY_USER, Lab

pytestmark = [pytest.mark.real, pytest.mark.lab, pytest.mark.usefixtures("jm_lab_lock")]
DNS = "198.51.100.53"
MX4, MX6 = "198.51.100.25", "2001:db8:5100::19"
ROOT4, ROOT6 = "198.51.100.1", "2001:db8:5100::1"
SMART = "198.51.100.87"


@pytest.fixture(scope="module")
def lab(jm_lab_lock: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    the_lab = Lab(tmp_path_factory.mktemp("mx") / "state")
    try:
        the_lab.build(with_jira=False)
        yield the_lab
    finally:
        the_lab.teardown()
    assert the_lab.leftovers() == []


@pytest.fixture(scope="module")
def dkim_key(lab: Lab) -> bytes:
    """Publish sender records for the root namespace: SPF (IPv4 only), DKIM, DMARC, PTR + A."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64

    p = base64.b64encode(der).decode()
    value = f"v=DKIM1; k=rsa; p={p}"
    chunks = '""'.join(value[i:i + 255] for i in range(0, len(value), 255))
    dom = zones.SENDER_DOMAIN
    dnsupdate.upsert(DNS, dom, dom, "TXT", 60, [f"v=spf1 ip4:{ROOT4} ip4:{SMART} -all"])
    dnsupdate.upsert(DNS, dom, f"lab._domainkey.{dom}", "TXT", 60, [chunks])
    dnsupdate.upsert(DNS, dom, f"_dmarc.{dom}", "TXT", 60, ["v=DMARC1; p=reject; adkim=r; aspf=r"])
    dnsupdate.upsert(DNS, dom, f"root.{dom}", "A", 60, [ROOT4])
    dnsupdate.upsert(DNS, lab.world.reverse4, "1.100.51.198.in-addr.arpa", "PTR", 60, [f"root.{dom}."])
    return pem


def signed(pem: bytes, subject: str, to: str = "alice@example.net") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jira <jira@example.com>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '.')}@example.com>"
    msg.set_content("body\n")
    data = msg.as_bytes()
    sig = dkim.sign(data, b"lab", b"example.com", pem, include_headers=[b"from", b"to", b"subject"])
    return sig + data


def no_verify() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def records_for(lab: Lab, subject: str, timeout: float = 20) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in receiver.read_records(lab.receiver_log) if r["subject"] == subject]
        if found:
            return found
        time.sleep(0.2)
    return []


def test_strict_receiver_passes_good_mail_over_tls(lab: Lab, dkim_key: bytes) -> None:
    with smtplib.SMTP(MX4, 25, local_hostname=f"root.{zones.SENDER_DOMAIN}", source_address=(ROOT4, 0)) as s:
        s.starttls(context=no_verify())
        s.ehlo(f"root.{zones.SENDER_DOMAIN}")
        s.sendmail("jira@example.com", ["alice@example.net"], signed(dkim_key, "good one"))
    (rec,) = records_for(lab, "good one")
    assert (rec["spf"], rec["dkim"], rec["dmarc"], rec["fcrdns"]) == ("pass", "pass", "pass", "pass")
    assert rec["helo_matches_ptr"] is True and rec["tls"] is True and rec["family"] == 4
    assert rec["dkim_domain"] == "example.com" and rec["dmarc_policy"] == "reject"


def test_strict_receiver_fails_what_is_wrong(lab: Lab, dkim_key: bytes) -> None:
    data = signed(dkim_key, "tampered").replace(b"body", b"BODY")
    with smtplib.SMTP(MX6, 25, local_hostname="nobody.example.com", source_address=(ROOT6, 0)) as s:
        s.sendmail("jira@example.com", ["alice@example.net"], data)
    (rec,) = records_for(lab, "tampered")
    assert rec["family"] == 6 and rec["tls"] is False
    assert rec["spf"] == "fail"  # ::1 is not in the SPF record
    assert rec["dkim"] == "fail" and rec["dmarc"] == "fail"
    assert rec["fcrdns"] == "none" and rec["helo_matches_ptr"] is False


def test_receiver_refuses_to_relay(lab: Lab) -> None:
    with smtplib.SMTP(MX4, 25, source_address=(ROOT4, 0)) as s, pytest.raises(smtplib.SMTPRecipientsRefused):
        s.sendmail("jira@example.com", ["bob@example.org"], b"Subject: x\r\n\r\nx\r\n")


def test_smarthost_needs_tls_and_auth_then_relays(lab: Lab, dkim_key: bytes) -> None:
    password = lab.relay_password()
    with smtplib.SMTP(SMART, 587, source_address=(ROOT4, 0)) as s:
        with pytest.raises(smtplib.SMTPException):
            s.login(RELAY_USER, password)  # no AUTH offered before STARTTLS
        s.starttls(context=no_verify())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login(RELAY_USER, password + "x")
        s.login(RELAY_USER, password)
        s.sendmail("jira@example.com", ["carol@example.net"], signed(dkim_key, "via smarthost", "carol@example.net"))
    (rec,) = records_for(lab, "via smarthost")
    (entry,) = [e for e in receiver.read_records(lab.smarthost_log) if e["rcpt_to"] == ["carol@example.net"]]
    assert entry["relayed"] is True and entry["user"] == RELAY_USER
    assert rec["ip"] == SMART and rec["helo"] == f"smtp.{zones.RECIPIENT_DOMAIN}"
    assert (rec["spf"], rec["dkim"], rec["dmarc"], rec["fcrdns"]) == ("pass", "pass", "pass", "pass")
    assert rec["tls"] is True


def test_smarthost_stop_and_start(lab: Lab) -> None:
    lab.stop_smarthost()
    with pytest.raises(OSError):
        smtplib.SMTP(SMART, 587, source_address=(ROOT4, 0), timeout=3)
    lab.start_smarthost()
    with smtplib.SMTP(SMART, 587, source_address=(ROOT4, 0), timeout=5) as s:
        assert s.ehlo()[0] == 250


def test_burst_is_jira_like_and_sized_to_the_limit() -> None:
    limit = 2 * 1024 * 1024
    name, messages = mail.burst(50, "jira@example.com", ["a@example.net", "b@example.net"], limit, big_every=25)
    sizes = [len(m.as_bytes()) for m in messages]
    big = [s for s in sizes if s > limit // 2]
    assert len(big) == 2 and all(0.8 * limit < s < limit for s in big), sizes
    first = messages[0]
    assert first.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in first.iter_parts()] == ["text/plain", "text/html"]
    assert first["Subject"].startswith("[JIRA] (") and first["X-Lab-Burst"] == name
    assert messages[24].get_content_type() == "multipart/mixed"
    over = mail.notification(1, "jira@example.com", "a@example.net", name, __import__("random").Random(1),
                             mail.attachment_for(limit + 64 * 1024))
    assert len(over.as_bytes()) > limit


"""`mailhost canary` in the lab: the probe goes from the deployed jira host (SSH with the pinned key, then
SMTP to Postfix on 127.0.0.1 as Jira submits) through real Postfix and OpenDKIM to the lab MX, which
stamps Authentication-Results and files it like a big receiver; Dovecot serves the mailbox over IMAPS.

- a healthy stack: inbox, every verdict pass, TLS on the hop, the probe deleted, exit 0;
- the DKIM record changed behind the program's back: Junk with dkim=fail, exit 2, the fix names verify;
- a receiver that drops the probe: missing, exit 2, the fix names status;
- bad input (no mailboxes, a failing password command, a CA that does not sign the server) exits 3
  before or without sending, naming the setting;
- the mailbox password is in no output.
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailhost.lab import dnsupdate, imapd, ops, zones
from mailhost.lab.lab import REPO, Lab
from mailhost.lab.secretscan import Secret, scan_text
from tests.real.conftest import lab_in_tmp

pytestmark = [pytest.mark.real, pytest.mark.lab, pytest.mark.usefixtures("jm_lab_lock")]
OUTPUTS: list[str] = []


@pytest.fixture(scope="module")
def lab(jm_lab_lock: None) -> Iterator[Lab]:
    with lab_in_tmp("canary") as the_lab:
        yield the_lab


def canary(lab: Lab, timeout: float = 60, *extra: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(ops.canary_argv(lab, timeout, True, *extra), capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    OUTPUTS.append(done.stdout + done.stderr)
    data = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, data, done.stderr


def maildir_files(lab: Lab) -> list[Path]:
    root = imapd.maildir(lab.maildirs, imapd.CANARY)
    return [p for folder in (root, root / f".{imapd.JUNK}") for sub in ("new", "cur") for p in (folder / sub).glob("*")]


def outputs(lab: Lab) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((lab.state_dir / "stack-outputs.json").read_text())
    return data


def test_a_healthy_stack_lands_in_the_inbox_with_every_verdict_passing(lab: Lab, tmp_path: Path) -> None:
    code, data, err = canary(lab, 60, "--metrics", str(tmp_path / "canary.prom"))
    (result,) = data["results"]
    assert code == 0, (err, result)
    host = outputs(lab)["hosts"]["jira"]
    assert result["placement"] == "inbox" and result["folder"] == "INBOX"
    assert {k: result["verdicts"][k] for k in ("spf", "dkim", "dmarc")} == {"spf": "pass", "dkim": "pass",
                                                                            "dmarc": "pass"}
    assert result["verdicts"]["dkim_domain"] == zones.SENDER_DOMAIN
    assert result["verdicts"]["dkim_selector"] == host["dkimSelector"]
    assert result["verdicts"]["tls"] is True, "the hop from the jira host ran over STARTTLS"
    assert result["causes"] == [] and result["queue_id"], result
    assert 0 <= result["delay_seconds"] < 60
    assert result["deleted"] is True and maildir_files(lab) == [], "the probe is gone from the mailbox"
    metrics = (tmp_path / "canary.prom").read_text()
    assert f'jira_mailhost_canary_placement{{host="jira",mailbox="{imapd.CANARY}",folder="inbox"}} 1' in metrics
    assert "jira_mailhost_canary_last_success_timestamp_seconds{" in metrics


def test_a_dkim_record_changed_behind_the_programs_back_lands_in_junk_with_the_fix(lab: Lab) -> None:
    host = outputs(lab)["hosts"]["jira"]
    name = f"{host['dkimSelector']}._domainkey.{zones.SENDER_DOMAIN}"
    published = subprocess.run(["kdig", f"@{lab.world.dns.v4}", "+short", "TXT", name], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    assert published.startswith('"v=DKIM1'), published
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    p = base64.b64encode(other).decode()
    wrong = " ".join(f'"{chunk}"' for chunk in ["v=DKIM1; k=rsa; p=" + p[:200], p[200:]])
    dnsupdate.upsert(lab.world.dns.v4, zones.SENDER_DOMAIN, name, "TXT", 60, [wrong])
    try:
        code, data, _ = canary(lab, 60, "--keep")
    finally:
        dnsupdate.upsert(lab.world.dns.v4, zones.SENDER_DOMAIN, name, "TXT", 60, [published])
    (result,) = data["results"]
    assert code == 2
    assert result["placement"] == "junk" and result["folder"] == imapd.JUNK
    assert result["verdicts"]["dkim"] == "fail" and result["verdicts"]["dmarc"] == "pass", "SPF still aligns"
    assert any("run `mailhost verify --only dkim`" in c["fix"] for c in result["causes"]), result["causes"]
    assert result["deleted"] is False and len(maildir_files(lab)) == 1, "--keep leaves the probe"
    for path in maildir_files(lab):
        path.unlink()


def test_a_probe_the_receiver_drops_is_missing(lab: Lab) -> None:
    lab.restart_receivers(["--discard", imapd.CANARY])
    try:
        code, data, _ = canary(lab, 10)
    finally:
        lab.restart_receivers([])
    (result,) = data["results"]
    assert code == 2
    assert result["placement"] == "missing" and result["delay_seconds"] is None
    assert [c["fix"] for c in result["causes"]] == [
        "run `mailhost status` (queue, bounces and their causes) on the host"]
    delivered = [r for r in ops.records(lab) if imapd.CANARY in r["rcpt_to"]]
    assert delivered, "the MX did accept it: dropped after, as a silent quarantine does"


@pytest.mark.parametrize(("mailboxes", "words"), [
    ([], "the stack has no canary.mailboxes"),
    ([{"passwordCommand": "false"}], "canary.mailboxes[0].passwordCommand: the command exited 1"),
    ([{"passwordCommand": "echo x"}], "the server's certificate does not verify"),  # no caFile: system CAs
])
def test_bad_input_exits_3_naming_what_to_fix(lab: Lab, mailboxes: list[dict[str, str]], words: str) -> None:
    box = {"address": imapd.CANARY, "imapHost": lab.world.mx.v4, "user": imapd.CANARY}
    ops.write_stack(lab, "direct", {"canary": {"mailboxes": [box | m for m in mailboxes]}})
    try:
        code, data, err = canary(lab, 10)
    finally:
        ops.write_stack(lab, "direct")
    assert code == 3
    assert words in err + json.dumps(data), (err, data)


def test_the_mailbox_password_is_in_no_output(lab: Lab) -> None:
    secret = Secret.of("canary mailbox password", lab.imap_password_file(imapd.CANARY).read_text(),
                       user=imapd.CANARY)
    assert OUTPUTS, "the tests above ran the canary"
    assert scan_text("every output of mailhost canary", "\n".join(OUTPUTS), [secret]) == []
    assert shlex.quote(lab.imap_password_file(imapd.CANARY).read_text().strip()) not in \
        " ".join(ops.canary_argv(lab, 10)), "nor in its command line"

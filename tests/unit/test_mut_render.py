"""README: `mailhost render` shows "every file that would be pushed"; apply.sh installs each with the
mode, owner and postmap flag the bundle's MANIFEST gives, and secret files are never shown.

Every rendered file of three stacks (direct on EC2, relay with reroute, direct on an adopted host)
is compared with the reviewed copy in tests/unit/rendered_files.json: content and metadata (found
necessary by mutation testing: a wrong milter socket, key path or file mode passed the spot checks).
After changing a template on purpose, regenerate with `UPDATE_GOLDEN=1 .venv/bin/python -m pytest
tests/unit/test_mut_render.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mailhost.publish import render
from mailhost.publish.stack import parse_settings
from tests.unit.test_config import SECRETS, base, existing

RENDERED = Path(__file__).with_name("rendered_files.json")
KEY = "-----BEGIN PRIVATE KEY-----\nTESTKEY\n-----END PRIVATE KEY-----\n\n"
PASSWORD = "s3cr3t-Relay-Pa55word"
EC2 = {"subnetId": "subnet-0123abcd", "sshCidrs": ["203.0.113.0/24"]}

STACKS: dict[str, dict[str, Any]] = {
    "direct ec2 production": base(hosts=[{"name": "jira", "ec2": EC2}], reverseZones={"ipv6": "ZREV6"},
                                  messageSizeLimit=52_428_800, drainSeconds=30),
    "relay staging": base(environment="staging", rerouteTo="qa@example.com", maillogFile="/var/log/mail.log",
                          hosts=[existing(ipv4Ptr=None)], dkimSelector="k2",
                          delivery={"mode": "relay", "relay": {"host": "smtp.relay.example.net", "port": 2525,
                                                               "username": "jira@example.com",
                                                               "maxPerDay": 10000}}),
    "direct adopted qa": base(environment="qa", rerouteOptOut=True, hosts=[
        {**existing(ipv6="2001:db8::20", ipv6Ptr="none"), "fqdn": "mail.example.com"}],
        delivery={"tlsPolicy": {"Partner.Example.": "encrypt", "legacy.example": "may"}}),
    "direct dane staging": base(environment="staging", rerouteTo="qa@example.com", hosts=[existing()],
                                delivery={"outboundTls": "dane", "dnssecBogusName": "bogus.dnssec.example",
                                          "tlsPolicy": {"legacy.example": "encrypt"}}),
}

def rendered(values: dict[str, Any]) -> list[dict[str, Any]]:
    settings = parse_settings(values, SECRETS)
    files = render.render_host(settings, settings.hosts[0], render.HostSecrets(KEY, PASSWORD))
    return [{"path": f.path, "mode": oct(f.mode), "owner": f.owner, "group": f.group, "secret": f.secret,
             "postmap": f.postmap, "code": f.code,
             # our own code (the collector, the DANE-first map) is tested on its own: here only that it is
             # shipped unchanged (under mutmut its file holds the mutants, so its text is not compared)
             "content": ([own_code()[f.content]] if f.code and f.content in own_code() else f.content.splitlines())}
            for f in files]


def own_code() -> dict[str, str]:
    return {render.mailstats.own_source(): "<mailhost/publish/mailstats.py>",
            render.danefirst.own_source(): "<mailhost/publish/danefirst.py>"}


def test_every_rendered_file_is_the_reviewed_one() -> None:
    got = {label: rendered(values) for label, values in STACKS.items()}
    if os.environ.get("UPDATE_GOLDEN"):
        RENDERED.write_text(json.dumps(got, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    want = json.loads(RENDERED.read_text())
    assert set(got) == set(want), "stacks added or removed: regenerate the reviewed files"
    for label in got:
        assert [f["path"] for f in got[label]] == [f["path"] for f in want[label]], label
        for mine, theirs in zip(got[label], want[label], strict=True):
            assert mine == theirs, f"{label}: {mine['path']} differs from the reviewed copy"


def test_secret_files_are_private_and_marked_secret() -> None:
    files = {f["path"]: f for f in rendered(STACKS["relay staging"])}
    key = files["/etc/opendkim/keys/k2-jira.private"]
    assert (key["mode"], key["owner"], key["group"], key["secret"]) == ("0o600", "opendkim", "opendkim", True)
    assert key["content"] == KEY.strip().splitlines(), "one trailing newline, nothing else"
    sasl = files["/etc/postfix/sasl_passwd"]
    assert (sasl["mode"], sasl["owner"], sasl["secret"], sasl["postmap"]) == ("0o600", "root", True, True)
    assert sasl["content"] == [f"[smtp.relay.example.net]:2525 jira@example.com:{PASSWORD}"]
    assert [p for p, f in files.items() if f["secret"]] == ["/etc/opendkim/keys/k2-jira.private",
                                                             "/etc/postfix/sasl_passwd"]


def test_an_unusable_relay_password_is_refused_without_showing_it() -> None:
    settings = parse_settings(STACKS["relay staging"], SECRETS)
    with pytest.raises(ValueError) as caught:
        render.render_host(settings, settings.hosts[0], render.HostSecrets(KEY, "two\nlines"))
    assert str(caught.value) == ("jira-mailhost:relayPassword: must be printable ASCII on one line; set it again "
                                 "with `pulumi config set --secret relayPassword`")


def test_relay_mode_without_a_password_is_refused() -> None:
    settings = parse_settings(STACKS["relay staging"], SECRETS)
    with pytest.raises(ValueError, match=r"^jira-mailhost:relayPassword: is empty; "):
        render.render_host(settings, settings.hosts[0], render.HostSecrets(KEY, None))


def test_the_templates_are_found_in_a_checkout_and_else_in_the_installed_data_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailhost.publish import render

    beside = Path(render.__file__).resolve().parents[2] / "files"
    assert render.files_dir() == beside and (beside / "templates" / "main.cf.j2").is_file()
    installed = tmp_path / "site-packages" / "mailhost"  # no files/ beside it: the data package answers
    installed.mkdir(parents=True)
    found = render.files_dir(installed)  # the editable install maps the data package to the checkout's files/
    assert found != installed.parent / "files" and (found / "templates" / "main.cf.j2").is_file()
    monkeypatch.setattr(render.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"^the templates are missing: reinstall jira-mailhost \(files/ or "
                                           r"mailhost_files\)$"):
        render.files_dir(installed)

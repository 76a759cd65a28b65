"""`mailhost render`: what an admin reads before any deploy, from the shipped stack files."""

from __future__ import annotations

from pathlib import Path

import dns.rdatatype
import dns.rrset
from typer.testing import CliRunner

from mailhost.cli.app import _register, app
from mailhost.publish import render

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
_register()


def rendered(stack: str, out: Path) -> list[str]:
    result = runner.invoke(app, ["render", "--stack", stack, "--out", str(out), "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    return result.output.split()


def test_staging_render_writes_every_pushed_file_with_secrets_as_placeholders(tmp_path: Path) -> None:
    written = rendered("staging", tmp_path)
    host = tmp_path / "jira"
    for path in ("etc/postfix/main.cf", "etc/postfix/master.cf", "etc/opendkim.conf", "etc/postfix/sasl_passwd",
                 "etc/postfix/jira-mailhost-reroute", "etc/opendkim/keys/jm1-jira.private", "scripts/apply.sh",
                 "scripts/teardown.sh"):
        assert str(host / path) in written, path
    assert (host / "etc/postfix/sasl_passwd").read_text().endswith(":<secret: relayPassword>\n")
    assert (host / "etc/postfix/sasl_passwd").stat().st_mode & 0o077 == 0
    assert "relayhost = [smtp.relay.example.net]:587" in (host / "etc/postfix/main.cf").read_text()
    assert (host / "scripts/apply.sh").read_text() == render.script("apply.sh")


def test_rendered_zone_parses_and_has_one_spf_and_dmarc_per_name(tmp_path: Path) -> None:
    rendered("production", tmp_path)
    lines = [line for line in (tmp_path / "dns.zone").read_text().splitlines() if line and not line.startswith(";")]
    rrsets = [dns.rrset.from_text(*line.split(" ", 4)) for line in lines]  # type: ignore[arg-type]
    spf_names = [str(r.name) for r in rrsets if r.rdtype == dns.rdatatype.TXT and "v=spf1" in r.to_text()]
    assert sorted(spf_names) == sorted(set(spf_names)), "never two SPF records at one name"
    assert "jira.example.com." in spf_names
    dkim = next(r for r in rrsets if str(r.name) == "jm1-jira._domainkey.jira.example.com.")
    assert all(len(s) <= 255 for rd in dkim for s in rd.strings)  # type: ignore[attr-defined]
    assert any(r.rdtype == dns.rdatatype.PTR and "ip6.arpa" in str(r.name) for r in rrsets)
    assert not any(r.rdtype == dns.rdatatype.PTR and "in-addr.arpa" in str(r.name) for r in rrsets), \
        "EC2 IPv4 PTRs are set on the Elastic IP, not in a zone"


def test_render_of_a_broken_stack_names_the_key(tmp_path: Path) -> None:
    stack = tmp_path / "Pulumi.broken.yaml"
    stack.write_text("config:\n  jira-mailhost:domain: example.com\n  jira-mailhost:environment: staging\n"
                     "  jira-mailhost:hosts: [{name: jira, existing: {ipv4: 198.51.100.9}}]\n")
    result = runner.invoke(app, ["render", "--stack", str(stack), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "jira-mailhost:hosts[0].existing.hostKey: is required; pin the host key" in result.output
    assert not (tmp_path / "out").exists()


def render_into(out: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["render", "--stack", "staging", "--out", str(out), "--project-dir", str(ROOT)])
    return result.exit_code, result.output


def test_render_refuses_a_symlinked_out_and_writes_nothing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "out").symlink_to(victim)
    code, output = render_into(tmp_path / "out")
    assert code == 2 and "symbolic link" in output
    assert list(victim.iterdir()) == []


def test_render_refuses_a_directory_that_holds_other_things(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, output = render_into(tmp_path)
    assert code == 2 and "holds no earlier render" in output
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_render_replaces_an_earlier_render_whole_without_following_links(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("untouched")
    assert render_into(out)[0] == 0
    (out / "stale-from-an-old-stack").write_text("old")
    (out / "jira" / "link").symlink_to(outside)
    (out / "jira" / "etc" / "postfix" / "main.cf").unlink()
    (out / "jira" / "etc" / "postfix" / "main.cf").symlink_to(outside / "keep")
    assert render_into(out)[0] == 0
    assert not (out / "stale-from-an-old-stack").exists() and not (out / "jira" / "link").exists()
    main_cf = out / "jira" / "etc" / "postfix" / "main.cf"
    assert not main_cf.is_symlink() and "relayhost" in main_cf.read_text()
    assert (outside / "keep").read_text() == "untouched"

"""Renaming a host in the lab, through the runner (Pulumi's step order: deletes last) and real Knot.

Each record's resource is named after its record set, so a plain rename of an adopted host goes through:
the address's PTR is re-pointed in place, the new name's records are created before the old name's are
deleted (last), and the old push's teardown leaves the host to the new push.  With `hosts[].previousName`
the host's resources are found under the old names and updated in place: the push re-applies on the same
machine (no teardown), and the records named after the old host go last.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from mailhost.lab import jirahost, ops, runner, zones
from mailhost.lab.lab import Lab
from tests.real.conftest import lab_in_tmp

pytestmark = [pytest.mark.real]


@pytest.fixture(scope="module")
def lab(jm_lab_lock: None) -> Iterator[Lab]:
    with lab_in_tmp("rename") as the_lab:
        yield the_lab


def write_renamed(lab: Lab, **host: Any) -> None:
    values, secrets = ops.lab_values(lab, "direct")
    values["hosts"][0].update(host)
    runner.write_stack(lab.state_dir, ops.with_lab_bogus_name(values), secrets)


def dig(lab: Lab, rtype: str, name: str) -> str:
    return subprocess.run(["kdig", f"@{lab.world.dns.v4}", "+short", rtype, name], capture_output=True,
                          text=True, timeout=10, check=True).stdout.strip()


def reverse(address: str) -> str:
    return ".".join(reversed(address.split("."))) + ".in-addr.arpa"


def in_host(lab: Lab, *argv: str) -> str:
    """A command on the lab's Jira host (its own mount namespace: its /etc/postfix)."""
    clean = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    return jirahost.run(lab.info(), [*clean, *argv], timeout=30).stdout.strip()


def test_a_plain_rename_repoints_the_ptr_in_place_and_deletes_the_old_names_last(lab: Lab) -> None:
    address = lab.host("jira").ipv4
    assert dig(lab, "PTR", reverse(address)) == f"jira.{zones.SENDER_DOMAIN}."
    write_renamed(lab, name="jira1")
    result = ops.deploy(lab)
    done = [tuple(d) for d in result["done"]]
    assert ("update", f"{address}-ptr") in done and ("create", "jira1-push") in done, done
    assert ("delete", "jira-push") in done and ("delete", f"jira.{zones.SENDER_DOMAIN}-a") in done, done
    deletes = [i for i, (action, _) in enumerate(done) if action == "delete"]
    assert min(deletes) > max(i for i, (action, _) in enumerate(done) if action != "delete"), done
    assert dig(lab, "PTR", reverse(address)) == f"jira1.{zones.SENDER_DOMAIN}."
    assert dig(lab, "A", f"jira1.{zones.SENDER_DOMAIN}") == address
    assert dig(lab, "A", f"jira.{zones.SENDER_DOMAIN}") == ""
    # The old push's teardown ran last and found the config is the new push's: Postfix keeps it.
    assert in_host(lab, "postconf", "-h", "myhostname") == f"jira1.{zones.SENDER_DOMAIN}"
    assert "to create" not in ops.preview(lab) and "to update" not in ops.preview(lab)


def test_a_rename_with_previous_name_updates_in_place_and_deletes_last(lab: Lab) -> None:
    address = lab.host("jira").ipv4
    write_renamed(lab, name="jira2", previousName="jira1")
    result = ops.deploy(lab)
    done = [tuple(d) for d in result["done"]]
    assert ("update", "jira2-push") in done and ("update", f"{address}-ptr") in done, done
    assert not any(name.endswith("-push") for action, name in done if action in ("create", "delete")), done
    deletes = [i for i, (action, _) in enumerate(done) if action == "delete"]
    assert deletes and min(deletes) > max(i for i, (action, _) in enumerate(done) if action != "delete"), done
    assert result["remote_commands"] == ["jira2-push"], "one apply, no teardown"
    assert dig(lab, "PTR", reverse(address)) == f"jira2.{zones.SENDER_DOMAIN}."
    assert dig(lab, "A", f"jira2.{zones.SENDER_DOMAIN}") == address
    assert dig(lab, "A", f"jira1.{zones.SENDER_DOMAIN}") == "", "the old name's records go at the end"
    assert in_host(lab, "postconf", "-h", "myhostname") == f"jira2.{zones.SENDER_DOMAIN}"
    assert "to create" not in ops.preview(lab) and "to update" not in ops.preview(lab)

"""Renaming a host in the lab, through the runner (Pulumi's step order: deletes last) and real Knot.

A plain rename is a removal plus a new host: the new PTR's CREATE meets the old PTR, which is deleted only
at the end of the `up`, and Route53 (here Knot) refuses it; nothing of the old host is touched.  With
`hosts[].previousName` the host's resources are found under the old names and updated in place: the PTR is
re-pointed, the push re-applies on the same machine (no teardown), and the records named after the old
host go last.
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
    runner.write_stack(lab.state_dir, values, secrets)


def dig(lab: Lab, rtype: str, name: str) -> str:
    return subprocess.run(["kdig", f"@{lab.world.dns.v4}", "+short", rtype, name], capture_output=True,
                          text=True, timeout=10, check=True).stdout.strip()


def reverse(address: str) -> str:
    return ".".join(reversed(address.split("."))) + ".in-addr.arpa"


def in_host(lab: Lab, *argv: str) -> str:
    """A command on the lab's Jira host (its own mount namespace: its /etc/postfix)."""
    clean = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    return jirahost.run(lab.info(), [*clean, *argv], timeout=30).stdout.strip()


def test_a_plain_rename_stops_at_the_ptr_before_anything_is_deleted(lab: Lab) -> None:
    address = lab.host("jira").ipv4
    assert dig(lab, "PTR", reverse(address)) == f"jira.{zones.SENDER_DOMAIN}."
    write_renamed(lab, name="jira2")
    with pytest.raises(ops.DeployError, match=r"type='PTR'\] but it already exists"):
        ops.deploy(lab)
    assert dig(lab, "PTR", reverse(address)) == f"jira.{zones.SENDER_DOMAIN}.", "the old PTR stays"
    assert dig(lab, "A", f"jira.{zones.SENDER_DOMAIN}") == address, "no delete ran"
    assert in_host(lab, "postconf", "-h", "myhostname") == f"jira.{zones.SENDER_DOMAIN}", "the old push stays"


def test_a_rename_with_previous_name_updates_in_place_and_deletes_last(lab: Lab) -> None:
    address = lab.host("jira").ipv4
    write_renamed(lab, name="jira2", previousName="jira")
    result = ops.deploy(lab)
    done = [tuple(d) for d in result["done"]]
    assert ("update", "jira2-push") in done and ("update", "jira2-ptr4") in done, done
    assert not any(name.endswith("-push") for action, name in done if action in ("create", "delete")), done
    deletes = [i for i, (action, _) in enumerate(done) if action == "delete"]
    assert deletes and min(deletes) > max(i for i, (action, _) in enumerate(done) if action != "delete"), done
    assert result["remote_commands"] == ["jira2-push"], "one apply, no teardown"
    assert dig(lab, "PTR", reverse(address)) == f"jira2.{zones.SENDER_DOMAIN}."
    assert dig(lab, "A", f"jira2.{zones.SENDER_DOMAIN}") == address
    assert dig(lab, "A", f"jira.{zones.SENDER_DOMAIN}") == "", "the old name's records go at the end"
    assert in_host(lab, "postconf", "-h", "myhostname") == f"jira2.{zones.SENDER_DOMAIN}"
    assert "to create" not in ops.preview(lab) and "to update" not in ops.preview(lab)

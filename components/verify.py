"""Post-deploy DNS verification: `mailhost verify` run locally after the records and pushes.

It is a resource (pulumi-command local.Command), so it runs on `pulumi up` and never on
preview, appears in the plan with its dependencies, and a failure fails the update
with the same report an administrator gets from the command.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import pulumi
import pulumi_command as command

from mailhost.records.expected import Expected
from mailhost.settings.config import Settings

EXPECTED_ENV = "MAILHOST_EXPECTED"


def interpreter() -> str:
    """The interpreter running this program (Pulumi's project venv), never whatever python3 is on PATH.

    Pulumi runs the program and the provider runs local commands in the project directory, so a venv
    inside it is named relative to it: the same stack run from another checkout, or a moved project,
    then plans no update of the commands.  A venv elsewhere can only be named by its absolute path."""
    executable = Path(sys.executable)  # the venv's own path, not the interpreter it links to
    try:
        return "./" + executable.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return executable.as_posix()


def verify_command(settings: Settings, only: str | None = None) -> str:
    parts = [shlex.quote(interpreter()), "-m", "mailhost", "verify", "--expected-env", EXPECTED_ENV,
             "--wait", str(settings.verify.wait_seconds)]
    if only:
        parts += ["--only", only]
    if settings.verify.nameserver:
        parts += ["--nameserver", settings.verify.nameserver]
    elif settings.verify.authoritative:
        parts.append("--authoritative")
    return " ".join(parts)


class DnsVerification(pulumi.ComponentResource):
    def __init__(self, settings: Settings, expected: pulumi.Output[Expected],
                 after: Sequence[pulumi.Resource], pushed: Sequence[pulumi.Output[str]],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("jira-mailhost:index:Verify", settings.domain, None, opts)
        expected_json = expected.apply(lambda e: e.to_json())
        self.check = command.local.Command(
            "verify-dns",
            create=verify_command(settings),
            environment={EXPECTED_ENV: expected_json},
            # Re-verify whenever what should be published, or what was pushed, changes.
            triggers=[expected_json, *pushed],
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)),
        )
        self.register_outputs({"report": self.check.stdout})


class DkimGate(pulumi.ComponentResource):
    """`mailhost verify --only dkim` between the DKIM records and the pushes: Postfix starts signing with a
    new key generation only after its record is visible where verification looks, so no mail goes out
    signed with a key receivers cannot find yet.  It runs again when a key or selector changes (its
    environment is the expected state; pulumi-command updates in place by running `create` again)."""

    def __init__(self, settings: Settings, expected: pulumi.Output[Expected], records: Sequence[pulumi.Resource]):
        super().__init__("jira-mailhost:index:DkimGate", settings.domain)
        dkim_only = expected.apply(lambda e: e.dkim_only().to_json())
        self.check = command.local.Command(
            "dkim-published",
            create=verify_command(settings, only="dkim"),
            environment={EXPECTED_ENV: dkim_only},
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(records)),
        )
        self.register_outputs({})

"""One canary run: a probe from each host to each mailbox, every mailbox read until its probes are found
or the wait is over, each result judged (causes.py), the probes deleted unless kept."""

from __future__ import annotations

import contextlib
import imaplib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailhost.canary import causes, probe, readback, verdicts
from mailhost.ops import sshexec
from mailhost.ops.status import Target, shown
from mailhost.reports.credential import CredentialError
from mailhost.reports.mailbox import Account, MailboxError, connect
from mailhost.settings.config import CanaryMailbox

POLL_SECONDS = (1.0, 1.0, 2.0, 3.0, 5.0)  # quick first looks (the lab: under a second), then every 5 s


@dataclass
class Result:
    host: str
    mailbox: str
    token: str = ""
    placement: str = causes.MISSING
    folder: str | None = None
    delay: float | None = None
    verdicts: verdicts.Verdicts | None = None
    problem: str | None = None  # set when the host or the mailbox could not be reached: exit 3
    queue_id: str | None = None
    sent_at: float | None = None
    deleted: bool = False
    found: readback.Found | None = field(default=None, repr=False)

    def code(self, late_after: float) -> int:
        if self.problem:
            return causes.UNREACHABLE
        late = self.delay is not None and self.delay > late_after
        return causes.exit_code(self.placement, self.verdicts, late)


def account_of(box: CanaryMailbox) -> Account:
    return Account(box.imap_host, box.imap_port, box.user, "INBOX", box.token_command is not None,
                   Path(box.ca_file) if box.ca_file else None)


def send(target: Target, key: str | None, sender: str, domain: str, box: CanaryMailbox, result: Result) -> None:
    made = probe.probe(target.name, sender, box.address, domain)
    result.token = made.token
    try:
        done = sshexec.run(target.address, target.port, target.user, key, target.host_key,
                           probe.submit_command(sender, box.address), stdin=made.message.decode("ascii"),
                           timeout=120)
    except (sshexec.HostKeyMismatch, FileNotFoundError) as error:
        result.problem = f"host {target.name}: {shown(str(error))[:300]}"
        return
    if done.rc == 255:
        result.problem = f"host {target.name}: SSH failed: {shown(done.stderr.strip())[-300:]}"
        return
    submitted = probe.read_reply(done.rc, done.stdout)
    if not submitted.ok:
        result.problem = f"host {target.name}: {shown(submitted.detail)}"
        return
    result.queue_id = submitted.queue_id
    result.sent_at = made.sent_at


def read_box(box: CanaryMailbox, secret: str, pending: list[Result], addresses: dict[str, list[str]],
             deadline: float, keep: bool, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
    """Poll one mailbox until every probe sent to it is found (INBOX or Junk) or the deadline passes."""
    try:
        imap = connect(account_of(box), secret)
    except MailboxError as error:
        for result in pending:
            result.problem = f"mailbox {box.address}: {error}"
        return
    try:
        junk = readback.junk_folder(imap, box.junk_folder)
        folders = [("INBOX", causes.INBOX)] + ([(junk, causes.JUNK)] if junk else [])
        waiting = {r.token: r for r in pending}
        rounds = 0
        while waiting:
            for folder, placement in folders:
                for token, uid in readback.search(imap, folder, list(waiting)).items():
                    result = waiting.pop(token)
                    result.placement, result.folder = placement, folder
                    result.found = readback.Found(folder, uid)
                    raw = readback.headers(imap, folder, uid)
                    result.verdicts = verdicts.read(raw, addresses.get(result.host, []))
                    arrived = result.verdicts.received_at or clock()  # the receiver's own time when it says
                    result.delay = max(0.0, arrived - (result.sent_at or arrived))
            if not waiting or clock() >= deadline:
                break
            sleep(min(POLL_SECONDS[min(rounds, len(POLL_SECONDS) - 1)], max(deadline - clock(), 0.0)))
            rounds += 1
        if not keep:
            for result in pending:
                if result.found is not None:
                    result.deleted = readback.delete(imap, result.found.folder, result.found.uid)
    except (imaplib.IMAP4.error, OSError) as error:
        for result in pending:
            if result.found is None:
                result.problem = f"mailbox {box.address}: the server broke off ({type(error).__name__})"
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            imap.logout()


def run(targets: list[Target], addresses: dict[str, list[str]], boxes: list[CanaryMailbox], sender: str,
        domain: str, key: str | None, secret_for: Callable[[CanaryMailbox], str], wait: float, keep: bool,
        clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> list[Result]:
    results: list[Result] = []
    secrets: dict[str, str] = {}
    for box in boxes:
        try:
            secrets[box.address] = secret_for(box)
        except CredentialError as error:
            results += [Result(t.name, box.address, problem=f"mailbox {box.address}: {error}") for t in targets]
    for box in boxes:
        if box.address not in secrets:
            continue
        for target in targets:
            result = Result(target.name, box.address)
            send(target, key, sender, domain, box, result)
            results.append(result)
    deadline = clock() + wait
    for box in boxes:
        pending = [r for r in results if r.mailbox == box.address and r.problem is None and r.token]
        if pending:
            read_box(box, secrets[box.address], pending, addresses, deadline, keep, clock, sleep)
    return results

"""The probe: a message like a Jira notification, carrying a unique token, submitted on the host to
Postfix on 127.0.0.1:25 over SMTP exactly as Jira submits, through the push's pinned SSH."""

from __future__ import annotations

import email.utils
import json
import re
import secrets
import shlex
import time
from dataclasses import dataclass
from email.message import EmailMessage

TOKEN = re.compile(r"jmc-[0-9a-f]{24}")
SUBJECT_PREFIX = "jira-mailhost canary"
# Runs on the host with its own python3 (the collector needs it too); sender and recipient are argv, the
# message stdin.  It prints one JSON line: the reply to DATA, whose queue id ties the probe to the log.
SUBMIT = """
import json, smtplib, sys
s = smtplib.SMTP("127.0.0.1", 25, timeout=60)
s.ehlo("jira-mailhost-canary")
for step, (code, reply) in (("mail", s.mail(sys.argv[1])), ("rcpt", s.rcpt(sys.argv[2]))):
    if code != 250:
        print(json.dumps({"step": step, "code": code, "reply": reply.decode("ascii", "replace")[:300]}))
        sys.exit(2)
code, reply = s.data(sys.stdin.buffer.read())
print(json.dumps({"step": "data", "code": code, "reply": reply.decode("ascii", "replace")[:300]}))
s.quit()
"""
QUEUED = re.compile(r"2\.0\.0 Ok: queued as ([0-9A-Za-z]{5,20})")


@dataclass(frozen=True)
class Probe:
    token: str
    host: str
    mailbox: str
    sender: str
    message: bytes
    sent_at: float


def new_token() -> str:
    return f"jmc-{secrets.token_hex(12)}"


def probe(host: str, sender: str, mailbox: str, domain: str, now: float | None = None) -> Probe:
    token = new_token()
    sent_at = time.time() if now is None else now
    message = EmailMessage()
    message["From"] = f"Jira <{sender}>"
    message["To"] = mailbox
    message["Subject"] = f"{SUBJECT_PREFIX} {token}"
    message["Date"] = email.utils.formatdate(sent_at, localtime=False)
    message["Message-ID"] = f"<{token}@{domain}>"
    message.set_content(f"A test notification from jira-mailhost on {host}, to see whether Jira's mail reaches "
                        "this mailbox's inbox. It is deleted automatically; nothing needs doing.\n")
    return Probe(token, host, mailbox, sender, message.as_bytes(), sent_at)


def submit_command(sender: str, mailbox: str) -> str:
    """The remote command: both addresses passed the settings' grammar, and are quoted all the same."""
    return shlex.join(["/usr/bin/python3", "-I", "-c", SUBMIT, sender, mailbox])


@dataclass(frozen=True)
class Submitted:
    ok: bool
    queue_id: str | None
    detail: str  # what Postfix answered, shown escaped


def read_reply(rc: int, stdout: str) -> Submitted:
    """Postfix's answer as the remote script printed it: its last line, a JSON object, checked field by field."""
    lines = stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1][:2000]) if lines else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("code"), int) or not isinstance(data.get("reply"), str):
        return Submitted(False, None, f"the host did not run the submission (exit {rc})")
    reply = data["reply"][:300]
    found = QUEUED.search(reply)
    if rc == 0 and data.get("step") == "data" and data["code"] == 250:
        return Submitted(True, found.group(1) if found else None, reply)
    return Submitted(False, None, f"Postfix refused at {str(data.get('step'))[:8]}: {data['code']} {reply}")

"""The lab's mailboxes: Dovecot (Debian's dovecot-imapd) serving IMAPS in the MX's namespace.

The MX files each message for a lab mailbox into its Maildir (INBOX or Junk, see receiver.py);
Dovecot serves those Maildirs on port 993 with a certificate from the lab CA that names the MX's
addresses, so a client connecting by address verifies it.  Everything (config, runtime directory,
state, log, password file) lives in the lab's state directory: nothing under /etc or /var is read
or written, and the machine's own Dovecot, if any, is untouched.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import secrets
from collections.abc import Iterable
from pathlib import Path

REPORTS = "dmarc-reports@example.com"  # the lab's DMARC report mailbox (the sender domain's own)
CANARY = "canary@example.net"  # a recipient's mailbox the canary reads
MAILBOXES = (REPORTS, CANARY)
PORT = 993
OAUTH_PORT = 8089  # the lab's token introspection endpoint (oauth.py), in the MX's namespace
MAIL_USER = "mail"  # Debian's mail user (uid 8) owns the Maildirs; Dovecot never serves mail as root
JUNK = "Junk"
AUTH_USER = "dovecot"  # Dovecot's default_internal_user, made by the package


def password_hash(password: str) -> str:
    """{SSHA256}: salted SHA-256, a scheme Dovecot's passwd-file reads (no doveadm, no /etc/dovecot)."""
    salt = secrets.token_bytes(8)
    return "{SSHA256}" + base64.b64encode(hashlib.sha256(password.encode() + salt).digest() + salt).decode()


def mail_ids() -> tuple[int, int]:
    entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid


def maildir(root: Path, address: str) -> Path:
    return root / address / "Maildir"


def config(state: Path, root: Path, listen: list[str], cert: Path, key: Path, passwd: Path) -> str:
    uid, _gid = mail_ids()
    oauth = state / "oauth2.conf.ext"
    oauth.write_text("\n".join([
        "introspection_mode = get",
        f"introspection_url = http://{listen[0]}:{OAUTH_PORT}/introspect?access_token=",
        "username_attribute = email",
        "active_attribute = active",
        "active_value = true",
        "",
    ]))
    return "\n".join([
        "protocols = imap",
        f"listen = {', '.join(listen)}",
        f"base_dir = {state / 'run'}",
        f"state_dir = {state / 'lib'}",
        "instance_name = jm-lab-imap",
        f"log_path = {state / 'dovecot.log'}",
        "ssl = required",
        f"ssl_cert = <{cert}",
        f"ssl_key = <{key}",
        "ssl_min_protocol = TLSv1.2",
        "disable_plaintext_auth = yes",
        "auth_mechanisms = plain xoauth2",
        f"first_valid_uid = {uid}",
        f"mail_location = maildir:{root}/%u/Maildir",
        "passdb {", "  driver = passwd-file", "  mechanisms = plain", f"  args = {passwd}", "}",
        "passdb {", "  driver = oauth2", "  mechanisms = xoauth2", f"  args = {oauth}", "}",
        "userdb {", "  driver = static", f"  args = uid={MAIL_USER} gid={MAIL_USER} home={root}/%u", "}",
        "service imap-login {",
        "  inet_listener imap {", "    port = 0", "  }",
        "  inet_listener imaps {", f"    port = {PORT}", "    ssl = yes", "  }",
        "}",
        "namespace inbox {", "  inbox = yes", "  separator = /",
        f"  mailbox {JUNK} {{", "    special_use = \\Junk", "    auto = create", "  }",
        "}",
        "",
    ])


def prepare(state: Path, root: Path, listen: list[str], cert: Path, key: Path, passwords: dict[str, str]) -> Path:
    """Write the config, the password file (0600) and each mailbox's Maildir; return the config's path."""
    for sub in ("run", "lib"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    passwd = state / "passwd"
    fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{address}:{password_hash(secret)}\n" for address, secret in passwords.items())
    auth = pwd.getpwnam(AUTH_USER)
    os.chown(passwd, auth.pw_uid, auth.pw_gid)  # Dovecot's auth worker reads it as its own user
    make_maildirs(root, passwords)
    conf = state / "dovecot.conf"
    conf.write_text(config(state, root, listen, cert, key, passwd))
    return conf


def make_maildirs(root: Path, addresses: Iterable[str]) -> None:
    """INBOX and Junk of each mailbox, owned by the mail user (the MX files into them as root)."""
    uid, gid = mail_ids()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    for address in addresses:
        for folder in ("", f".{JUNK}"):
            for sub in ("new", "cur", "tmp"):
                (maildir(root, address) / folder / sub).mkdir(parents=True, exist_ok=True)
        for path in [root / address, *(root / address).rglob("*")]:
            os.chown(path, uid, gid)


def argv(conf: Path) -> list[str]:
    return ["dovecot", "-F", "-c", str(conf)]


def junk(verdict_dmarc: str, policy: str | None, verdict_dkim: str) -> bool:
    """Where a big receiver files a message: Junk when DMARC fails under a policy that asks for it, or when
    a DKIM signature is there but fails (a broken signature is a strong spam signal at every big receiver,
    even when SPF alone carries DMARC)."""
    return (verdict_dmarc == "fail" and policy in ("quarantine", "reject")) or verdict_dkim == "fail"


def stamped(content: bytes, authserv: str, verdicts: dict[str, object], ip: str, helo: str, tls: bool,
            mail_from: str) -> bytes:
    """The message as a receiver stores it: its Authentication-Results and Received lines on top."""
    import email.utils

    import authres
    import authres.dmarc

    def text(key: str) -> str:
        value = verdicts.get(key)
        return str(value) if value else ""

    header_from = email.utils.parseaddr(
        email.message_from_bytes(content).get("From") or "")[1].rpartition("@")[2].lower()
    results = [authres.SPFAuthenticationResult(result=text("spf") or "none",
                                               smtp_mailfrom=mail_from.rpartition("@")[2] or helo)]
    dkim = authres.DKIMAuthenticationResult(result=text("dkim") or "none", header_d=text("dkim_domain") or None,
                                            header_s=text("dkim_selector") or None)
    results += [dkim, authres.dmarc.DMARCAuthenticationResult(result=text("dmarc") or "none",
                                                              header_from=header_from or None)]
    header = str(authres.AuthenticationResultsHeader(authserv_id=authserv, results=results))
    received = (f"Received: from {helo} ([{ip}]) by {authserv} with {'ESMTPS' if tls else 'ESMTP'}; "
                f"{email.utils.formatdate()}")
    return f"{header}\r\n{received}\r\n".encode() + content


def deliver(root: Path, address: str, in_junk: bool, data: bytes) -> Path:
    """Maildir delivery: write in tmp/, then rename into new/ (readers never see half a message)."""
    uid, gid = mail_ids()
    folder = maildir(root, address) / (f".{JUNK}" if in_junk else "")
    name = f"{secrets.token_hex(8)}.{os.getpid()}.lab"
    tmp = folder / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chown(tmp, uid, gid)
    final = folder / "new" / name
    os.rename(tmp, final)
    return final

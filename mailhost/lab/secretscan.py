"""Look for the lab's secrets where they must never be: text, logs, loose files, command lines.

A secret is searched in every form it is likely to leak in: as given, base64-encoded (a
password in AUTH PLAIN, a config blob), and for a PEM/OpenSSH key its base64 body as
wrapped lines and without line breaks, also in text whose line breaks were escaped
(JSON) or re-wrapped.  Body lines that also occur in public text are not searched on
their own: those lying inside the public key (same base64 alignment as in its SPKI or
OpenSSH form: DKIM's TXT record holds it) and the constant header of the format.
A file may hold a secret only when it is a private file: a regular file of mode 0600
owned by root, or by the account that must read that secret anyway (OpenDKIM its key);
a log never may.  Findings name the place and the secret, never its value.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

MAX_FILE = 64 * 1024 * 1024
MIN_LINE = 40  # shorter PEM lines (the last one) are too weak a needle on their own
_SPACE = re.compile(rb"\s+|\\[nr]")


@dataclass(frozen=True)
class Secret:
    name: str
    needles: tuple[bytes, ...]  # searched as they are
    joined: bytes = b""  # a key body without line breaks, also searched in whitespace-stripped text
    readers: frozenset[int] = frozenset({0})  # uids that may own a file holding it

    @classmethod
    def of(cls, name: str, value: str, user: str | None = None, readers: Iterable[int] = (0,)) -> Secret:
        """The forms of a password (`user` adds its AUTH PLAIN form) or of a PEM/OpenSSH private key."""
        text = value.strip()
        if text.startswith("-----BEGIN"):
            body = [line.strip() for line in text.splitlines()[1:-1] if line.strip() and ":" not in line]
            joined = "".join(body).encode()
            public = _lookalikes(text)
            lines = tuple(line.encode() for line in body
                          if len(line) >= MIN_LINE and not any(line.encode() in p for p in public))
            return cls(name, (joined, *lines), joined, frozenset(readers))
        raw = text.encode()
        forms = [raw, base64.b64encode(raw)]
        if user is not None:
            forms.append(base64.b64encode(b"\0" + user.encode() + b"\0" + raw))
        return cls(name, tuple(forms), readers=frozenset(readers))

    def found_in(self, data: bytes, stripped: bytes | None = None) -> bool:
        if any(needle in data for needle in self.needles):
            return True
        if self.joined:
            return self.joined in (stripped if stripped is not None else _SPACE.sub(b"", data))
        return False


def _lookalikes(pem: str) -> list[bytes]:
    """Public text sharing lines with this key's body (whitespace removed): the public key's encodings,
    and another key of the same type in the same format (its constant header).  [] if not parseable."""
    data = pem.encode()
    header = pem.splitlines()[0]
    try:
        key = (serialization.load_ssh_private_key(data, None) if "OPENSSH" in header
               else serialization.load_pem_private_key(data, None))
    except (ValueError, TypeError):
        return []
    fmt = (serialization.PrivateFormat.OpenSSH if "OPENSSH" in header
           else serialization.PrivateFormat.PKCS8 if header == "-----BEGIN PRIVATE KEY-----"
           else serialization.PrivateFormat.TraditionalOpenSSL)
    twin: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | None = None
    if isinstance(key, rsa.RSAPrivateKey):
        twin = rsa.generate_private_key(public_exponent=65537, key_size=key.key_size)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        twin = ec.generate_private_key(key.curve)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        twin = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key()
    texts = [public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
             public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)]
    if isinstance(public, rsa.RSAPublicKey):
        texts.append(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1))
    if twin is not None:
        texts.append(twin.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    return [_SPACE.sub(b"", t) for t in texts]


@dataclass(frozen=True)
class Finding:
    where: str
    secret: str
    why: str

    def __str__(self) -> str:
        return f"{self.secret} in {self.where}: {self.why}"


def search(data: bytes, secrets: Iterable[Secret]) -> list[str]:
    """Names of the secrets found in data."""
    stripped = _SPACE.sub(b"", data)
    return [s.name for s in secrets if s.found_in(data, stripped)]


def scan_text(where: str, text: str | bytes, secrets: Iterable[Secret], why: str = "must never hold a secret"
              ) -> list[Finding]:
    data = text.encode(errors="surrogateescape") if isinstance(text, str) else text
    return [Finding(where, name, why) for name in search(data, secrets)]


def is_log(path: Path) -> bool:
    """Log files: never a place for a secret, whatever their mode."""
    return path.suffix in (".log", ".jsonl") or "log" in path.parts


@dataclass
class TreeScan:
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    private_with_secret: list[str] = field(default_factory=list)  # allowed: 0600 files of the right owner
    logs: list[str] = field(default_factory=list)  # log files scanned
    skipped: list[str] = field(default_factory=list)


def scan_tree(root: Path, secrets: list[Secret], into: TreeScan | None = None,
              skip: Callable[[Path], bool] = lambda _: False) -> TreeScan:
    """Every regular file under root (symlinks not followed): a secret outside a private file is a finding."""
    result = into if into is not None else TreeScan()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not skip(Path(dirpath) / d)]
        for name in filenames:
            path = Path(dirpath) / name
            if skip(path):
                continue
            scan_file(path, secrets, result)
    return result


def scan_file(path: Path, secrets: list[Secret], result: TreeScan) -> None:
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            return
        if info.st_size > MAX_FILE:
            result.skipped.append(f"{path} ({info.st_size} bytes)")
            return
        data = path.read_bytes()
    except FileNotFoundError:
        return  # removed while we walked (a process that is still running)
    except OSError as error:
        result.skipped.append(f"{path} ({error.strerror})")
        return
    result.files += 1
    if is_log(path):
        result.logs.append(str(path))
    stripped = _SPACE.sub(b"", data)
    mode = stat.S_IMODE(info.st_mode)
    for secret in secrets:
        if not secret.found_in(data, stripped):
            continue
        if is_log(path):
            result.findings.append(Finding(str(path), secret.name, "a log file"))
        elif mode != 0o600 or info.st_uid not in secret.readers:
            result.findings.append(Finding(str(path), secret.name, f"mode {mode:04o}, owner uid {info.st_uid}: "
                                           "a file holding a secret must be 0600 and root's"))
        else:
            result.private_with_secret.append(f"{path} ({secret.name})")


class CmdlineSampler(threading.Thread):
    """Reads every process's /proc/PID/cmdline every `interval` seconds (world-readable on Linux:
    what any local user could see); keeps each distinct command line once."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True, name="cmdline-sampler")
        self.interval = interval
        self.seen: dict[bytes, int] = {}  # cmdline → a pid that had it
        self.samples = 0
        self.pids: set[int] = set()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                        cmdline = handle.read()
                except OSError:
                    continue
                self.pids.add(int(entry.name))
                self.seen.setdefault(cmdline, int(entry.name))
            self.samples += 1
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def findings(self, secrets: list[Secret]) -> list[Finding]:
        def program(cmd: bytes) -> str:  # argv[0] only: the rest may be the very secret
            return cmd.split(b"\0")[0].decode(errors="replace")

        return [Finding(f"cmdline of pid {pid} ({program(cmd)} …)", name, "command lines are readable by every "
                        "local user") for cmd, pid in self.seen.items() for name in search(cmd, secrets)]

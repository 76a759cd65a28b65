"""The payload pushed to a host: rendered files packed into one deterministic archive.

It travels on the remote command's stdin (never its command line) as base64 of a
gzipped tar.  Same files → same bytes, so an unchanged config gives Pulumi no diff
and runs no remote command.  files/scripts/apply.sh unpacks it; MANIFEST tells it
what to install where, with which owner and mode, and which maps to postmap.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class RenderedFile:
    path: str  # absolute path on the host, e.g. /etc/postfix/main.cf
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    secret: bool = False  # never shown in diffs, outputs or `mailhost render` without --show-secrets
    postmap: bool = False  # build the lookup table with postmap after installing
    code: bool = False  # our own program, not configuration: previews name it by digest instead of showing it

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


def manifest(files: Iterable[RenderedFile]) -> str:
    """One line per file: path mode owner group postmap sha256 (paths never contain spaces)."""
    lines = []
    for f in sorted(files, key=lambda f: f.path):
        if " " in f.path or not f.path.startswith("/"):
            raise ValueError(f"bad target path {f.path!r}")
        lines.append(f"{f.path} {f.mode:04o} {f.owner} {f.group} {int(f.postmap)} {f.digest}")
    return "\n".join(lines) + "\n"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def pack(files: Iterable[RenderedFile]) -> str:
    """Base64 of a reproducible tar.gz holding MANIFEST and files/<path>."""
    files = sorted(files, key=lambda f: f.path)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "MANIFEST", manifest(files).encode(), 0o600)
        for f in files:
            _add(tar, "files" + f.path, f.content.encode(), 0o600)
    packed = gzip.compress(raw.getvalue(), mtime=0)
    return base64.b64encode(packed).decode() + "\n"


def unpack(payload: str) -> dict[str, bytes]:
    """Inverse of pack, for tests and `mailhost render`: member name → bytes."""
    data = gzip.decompress(base64.b64decode(payload))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        out = {}
        for member in tar.getmembers():
            extracted = tar.extractfile(member)
            assert extracted is not None
            out[member.name] = extracted.read()
        return out


def public_digest(files: Iterable[RenderedFile]) -> str:
    """Hash of the non-secret files only: safe to show as a trigger in `pulumi preview`."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        if not f.secret:
            h.update(f"{f.path} {f.mode:o} {f.owner} {f.digest}\n".encode())
    return h.hexdigest()

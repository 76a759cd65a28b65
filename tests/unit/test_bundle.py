"""The pushed payload: same files give the same bytes (no Pulumi diff), and it unpacks to what apply.sh checks."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
import time

import pytest

from mailhost.publish import bundle
from mailhost.publish.bundle import RenderedFile

FILES = [
    RenderedFile("/etc/postfix/main.cf", "myhostname = jira.example.com\n"),
    RenderedFile("/etc/postfix/sasl_passwd", "[smtp.example.net]:587 jira:pw\n", mode=0o600, secret=True,
                 postmap=True),
    RenderedFile("/etc/opendkim/keys/jm1-jira.private", "-----BEGIN PRIVATE KEY-----\nx\n", mode=0o600,
                 owner="opendkim", group="opendkim", secret=True),
]


def test_pack_is_byte_identical_regardless_of_order_and_time() -> None:
    first = bundle.pack(FILES)
    time.sleep(1.1)  # gzip and tar would record a new mtime if pack let them
    assert bundle.pack(list(reversed(FILES))) == first
    assert first.endswith("\n") and "\n" not in first[:-1]


def test_any_content_change_changes_the_payload() -> None:
    changed = [FILES[0], FILES[1], RenderedFile(FILES[2].path, FILES[2].content + "y\n", 0o600, "opendkim",
                                                "opendkim", secret=True)]
    assert bundle.pack(changed) != bundle.pack(FILES)


def test_unpack_gives_manifest_and_files_that_match_it() -> None:
    members = bundle.unpack(bundle.pack(FILES))
    assert set(members) == {"MANIFEST", *(f"files{f.path}" for f in FILES)}
    lines = members["MANIFEST"].decode().splitlines()
    assert [line.split()[0] for line in lines] == sorted(f.path for f in FILES)
    for line in lines:
        path, mode, owner, group, postmap, digest = line.split()
        original = next(f for f in FILES if f.path == path)
        assert (int(mode, 8), owner, group, postmap == "1") == (original.mode, original.owner, original.group,
                                                                 original.postmap)
        assert hashlib.sha256(members[f"files{path}"]).hexdigest() == digest == original.digest


def test_archive_members_are_plain_root_files_without_dates() -> None:
    raw = gzip.decompress(base64.b64decode(bundle.pack(FILES)))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for member in tar.getmembers():
            assert member.isfile()
            assert (member.uid, member.gid, member.mtime, member.mode) == (0, 0, 0, 0o600)
            assert ".." not in member.name.split("/")


@pytest.mark.parametrize("path", ["etc/postfix/main.cf", "/etc/postfix/main file.cf"])
def test_manifest_refuses_paths_apply_sh_could_not_place(path: str) -> None:
    with pytest.raises(ValueError, match="bad target path"):
        bundle.manifest([RenderedFile(path, "x")])


def test_public_digest_ignores_secret_content_but_not_public_content() -> None:
    base = bundle.public_digest(FILES)
    new_secret = [FILES[0], RenderedFile(FILES[1].path, "other password\n", 0o600, secret=True, postmap=True),
                  FILES[2]]
    assert bundle.public_digest(new_secret) == base
    new_public = [RenderedFile(FILES[0].path, "myhostname = other.example.com\n"), *FILES[1:]]
    assert bundle.public_digest(new_public) != base

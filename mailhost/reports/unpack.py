"""From what arrives (a mail, a gzip, a zip or bare XML) to one bounded XML text.

Every byte here comes from whoever can send mail to the report address, so each layer is bounded
before it is read: the input's size, the inflated size and the inflation ratio (a gzip or zip bomb
fails on its first megabytes, never after filling memory), and a zip must hold exactly one file.
"""

from __future__ import annotations

import email
import email.policy
import io
import zipfile
import zlib
from email.message import EmailMessage

MAX_INPUT = 10 * 1024 * 1024  # a report mail or file; Google's largest for busy domains are a few MB
MAX_XML = 32 * 1024 * 1024  # inflated; 10,000 source rows are about 6 MB of XML
MAX_RATIO = 200  # real reports inflate 10-40x; a bomb inflates ~1000x
CHUNK = 64 * 1024

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"


class Refused(ValueError):
    """This report is skipped; the message says why, in words safe to print."""


def _bounded(total_in: int, total_out: int) -> None:
    if total_out > MAX_XML:
        raise Refused(f"inflates beyond {MAX_XML // (1024 * 1024)} MiB (a decompression bomb or not a report)")
    if total_out > max(total_in, 1) * MAX_RATIO and total_out > 1024 * 1024:
        raise Refused(f"inflates more than {MAX_RATIO}x (a decompression bomb)")


def gunzip(data: bytes) -> bytes:
    """Inflate a gzip stream chunk by chunk, stopping as soon as a bound is crossed."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    pending = data
    while pending:
        try:
            out += inflater.decompress(pending, CHUNK)
        except zlib.error as error:
            raise Refused(f"not a valid gzip file ({error})") from None
        _bounded(len(data), len(out))
        pending = inflater.unconsumed_tail
        if inflater.eof:
            break
    if not inflater.eof:
        raise Refused("a truncated gzip file")
    return bytes(out)


def unzip(data: bytes) -> bytes:
    """The single file of a zip, read in chunks against the same bounds (its declared size may lie)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) != 1:
            raise Refused(f"a zip with {len(members)} files; a report zip holds exactly one")
        out = bytearray()
        with archive.open(members[0]) as handle:
            while chunk := handle.read(CHUNK):
                out += chunk
                _bounded(len(data), len(out))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError,
            zlib.error) as error:
        raise Refused(f"not a readable zip file ({type(error).__name__})") from None
    return bytes(out)


def looks_like_mail(data: bytes) -> bool:
    """A whole mail (a header on its first line), not a bare report (XML, gzip or zip)."""
    head = data[:2048].lstrip()
    return not head.startswith(b"<") and b":" in head.partition(b"\n")[0]


def attachment(data: bytes) -> bytes:
    """The report inside a receiver's mail: the first part that is gzip, zip or XML by content."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes) and payload[:4].startswith((GZIP_MAGIC, ZIP_MAGIC)):
            return payload
        if isinstance(payload, bytes) and payload.lstrip()[:5] in (b"<?xml", b"<feed"):
            return payload
    raise Refused("a mail without a report attachment (gzip, zip or XML)")


def report_xml(data: bytes) -> str:
    """One report's XML text from any of the shapes receivers send."""
    if len(data) > MAX_INPUT:
        raise Refused(f"larger than {MAX_INPUT // (1024 * 1024)} MiB")
    if looks_like_mail(data):
        data = attachment(data)
    if data.startswith(GZIP_MAGIC):
        data = gunzip(data)
    elif data.startswith(ZIP_MAGIC):
        data = unzip(data)
    if len(data) > MAX_XML:
        raise Refused(f"larger than {MAX_XML // (1024 * 1024)} MiB of XML")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("not UTF-8 XML") from None

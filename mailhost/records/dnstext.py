"""TXT record text: one logical string, split into DNS character-strings of at most 255 bytes.

A 2048-bit DKIM key is longer than one character-string; it must become several
strings of ONE record.  Route53 (through Pulumi/Terraform) takes that as a single
value with the strings joined by `""`; a zone file writes them space-separated.
"""

from __future__ import annotations

MAX_STRING = 255


def split_txt(text: str, limit: int = MAX_STRING) -> list[str]:
    """Chunks of at most `limit` bytes; TXT values here are ASCII (keys, mechanisms)."""
    if not text.isascii():
        raise ValueError("TXT values must be ASCII")
    if '"' in text or "\\" in text:
        raise ValueError("TXT values must not contain quotes or backslashes")
    return [text[i : i + limit] for i in range(0, len(text), limit)] or [""]


def route53_value(text: str) -> str:
    """The one `records` entry Route53 needs for a TXT record of any length."""
    return '""'.join(split_txt(text))


def zone_value(text: str) -> str:
    """RDATA as written in a zone file: quoted strings separated by spaces."""
    return " ".join(f'"{chunk}"' for chunk in split_txt(text))


def route53_to_zone(value: str) -> str:
    """Inverse of route53_value: a Route53 TXT entry (strings joined by "") as zone-file RDATA.

    Tolerates the outer quotes some tools add, and escapes what a zone file would misread."""
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        value = value[1:-1]
    return " ".join('"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in value.split('""'))


def join_strings(strings: list[str] | tuple[str, ...]) -> str:
    """What a receiver does with a multi-string TXT record: concatenate without separators."""
    return "".join(strings)

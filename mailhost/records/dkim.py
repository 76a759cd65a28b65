"""DKIM key material → the public TXT record, derived from the one key the host signs with."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _public(pem: str) -> rsa.RSAPublicKey:
    data = pem.encode()
    key = (
        serialization.load_pem_public_key(data)
        if b"PUBLIC KEY" in data
        else serialization.load_pem_private_key(data, password=None).public_key()
    )
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("DKIM keys must be RSA (ed25519 DKIM is not verified by major receivers)")
    return key


def public_key_b64(pem: str) -> str:
    """The p= value: base64 DER SubjectPublicKeyInfo, from a private or public PEM."""
    der = _public(pem).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def key_bits(p_value: str) -> int:
    key = serialization.load_der_public_key(base64.b64decode(p_value))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA key")
    return key.key_size


def txt_value(p_value: str) -> str:
    return f"v=DKIM1; h=sha256; k=rsa; p={p_value}"


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"

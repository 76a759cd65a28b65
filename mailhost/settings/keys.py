"""Reading a private key the admin gave us, in OpenSSH or PEM form, without a passphrase."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization


def load_private_key(text: str) -> Any:
    """The key object; ValueError (with the reason) when it is not a usable unencrypted private key."""
    data = text.strip().encode() + b"\n"
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            return serialization.load_ssh_private_key(data, password=None)
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(str(error)) from None

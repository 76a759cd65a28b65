"""SSH key helpers: the public half of the admin key, and cloud-init that pins an EC2 host key."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from mailhost.publish.render import _template
from mailhost.settings.keys import load_private_key


def public_openssh(private_key: str) -> str:
    """`ssh-ed25519 AAAA...` for a private key in OpenSSH or PEM form (no passphrase)."""
    try:
        key = load_private_key(private_key)
    except ValueError as error:
        raise ValueError(
            f"jira-mailhost:sshPrivateKey: not a readable private key without passphrase ({error}); "
            "set it with `pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`"
        ) from None
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode()


def cloud_init(host_private_openssh: str, host_public_openssh: str, admin_public: str) -> str:
    """User data that installs our generated ed25519 host key, so the SSH pin is known before boot."""
    return _template(
        "cloud-init.yaml.j2",
        host_private=host_private_openssh.strip().splitlines(),
        host_public=host_public_openssh.strip(),
        admin_public=admin_public.strip(),
    )

"""SSH helpers: the public half of the admin key, cloud-init that pins an EC2 host key and sets up sshd's
port and login, and the check that a later change of either does not lock SSH out."""

from __future__ import annotations

import re

from cryptography.hazmat.primitives import serialization

from mailhost.publish.render import _template
from mailhost.records import grammar
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


IMAGE_USER = "admin"  # the login Debian's cloud images give the key from the instance's key pair or cloud-init
IMAGE_LOGIN = f"{IMAGE_USER}@22"  # what every EC2 host had before the login tag existed
SSHD_DROPIN = "/etc/ssh/sshd_config.d/50-jira-mailhost.conf"  # Debian's sshd_config includes sshd_config.d/*.conf
LOGIN_TAG = "jira-mailhost:ssh-login"  # on the instance: the login cloud-init set up, kept from its creation
_LOGIN = re.compile(rf"({grammar.SSH_USER.pattern})@([1-9][0-9]{{0,4}})")  # sshUser's own grammar, then a port


def cloud_init(host_private_openssh: str, host_public_openssh: str, admin_public: str, user: str = IMAGE_USER,
               port: int = 22) -> str:
    """User data that installs our generated ed25519 host key (so the SSH pin is known before boot), lets the
    admin key in as `user` and makes sshd listen on `port`: all at first boot, which is the only time
    cloud-init reads it."""
    return _template(
        "cloud-init.yaml.j2",
        host_private=host_private_openssh.strip().splitlines(),
        host_public=host_public_openssh.strip(),
        admin_public=admin_public.strip(),
        user=user, port=port, default_user=IMAGE_USER, sshd_dropin=SSHD_DROPIN,
    )


def login(user: str, port: int) -> str:
    """The login tag's value: `admin@22`."""
    return f"{user}@{port}"


class LoginChanged(ValueError):
    """sshUser/sshPort of an EC2 host differ from the login its first boot set up (raised at preview)."""


def check_login(stored: str | None, user: str, port: int, where: str) -> None:
    """Refuse an EC2 host whose sshUser/sshPort (`where` names the host's settings) differ from what cloud-init
    set up at its first boot (`stored`, the instance's login tag; None on hosts older than the tag).

    Nothing on the host would follow the change: the security group would open only the new port, and the
    push would log in as a user that does not exist, so SSH would be locked out."""
    stored = IMAGE_LOGIN if stored is None else stored
    if len(stored) > 40 or not (found := _LOGIN.fullmatch(stored)) or int(found.group(2)) > 65535:
        raise LoginChanged(f"{where}: the instance's tag {LOGIN_TAG} holds {stored[:40]!r}, not user@port; set it "
                         f"to the login sshd has (e.g. `aws ec2 create-tags --tags Key={LOGIN_TAG},"
                         f"Value={IMAGE_LOGIN}`), set {where}.ec2.sshMovedByHand: true and run `pulumi up`")
    old_user, old_port = found.group(1), int(found.group(2))
    if (old_user, old_port) == (user, port):
        return
    steps, locks = [], []
    if old_port != port:
        steps.append(f"on the host, put `Port {old_port}` and `Port {port}` in {SSHD_DROPIN} and run "
                     "`systemctl restart ssh`")
        locks.append(f"the security group would open only port {port}")
    if old_user != user:
        steps.append(f"on the host, create {user!r} with the admin key in ~{user}/.ssh/authorized_keys and "
                     "passwordless sudo")
        locks.append(f"the push would log in as {user!r}, whom the host lacks")
    raise LoginChanged(
        f"{where}.sshUser/sshPort: this EC2 host's sshd was last set up for {old_user}@{old_port} (by cloud-init at "
        f"first boot, the only time it runs, or by hand with sshMovedByHand); the stack now says {user}@{port}, "
        "and nothing on the host would follow ("
        + " and ".join(locks) + f": SSH locked out). Either set them back to {old_user} and {old_port}, "
        "or move the host by hand first: " + "; ".join(f"({n}) {s}" for n, s in enumerate(steps, 1))
        + f"; ({len(steps) + 1}) set {where}.ec2.sshMovedByHand: true and run `pulumi up` (the security group "
        f"and the tag follow); ({len(steps) + 2}) remove sshMovedByHand, and the old port or user on the host")

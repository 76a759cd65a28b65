"""A mailbox secret from the admin's own tool (`pass show …`, a keyring, a cloud CLI's access token).

The command is split like a shell would (no shell runs it), its output is read from a pipe and held
only in memory: the secret never enters an argument list, an environment, a log line or a file.
"""

from __future__ import annotations

import shlex
import subprocess

MAX_SECRET = 16 * 1024  # an OAuth2 access token is a few KB


class CredentialError(RuntimeError):
    """The command could not give a secret; the message names the setting, never the output."""


def secret_from(command: str, setting: str, timeout: float = 60) -> str:
    try:
        argv = shlex.split(command)
    except ValueError as error:
        raise CredentialError(f"{setting}: not a command line ({error})") from None
    if not argv:
        raise CredentialError(f"{setting} is empty: give a command that prints the secret, e.g. `pass show mail/dmarc`")
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise CredentialError(f"{setting}: {shlex.quote(argv[0])} is not installed or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise CredentialError(f"{setting}: the command did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise CredentialError(f"{setting}: the command exited {done.returncode}; run it by hand to see why")
    lines = done.stdout[:MAX_SECRET + 1].decode("utf-8", "replace").splitlines()
    secret = lines[0].strip() if lines else ""
    if not secret or len(secret) > MAX_SECRET:
        raise CredentialError(f"{setting}: the command printed no secret on its first line")
    return secret

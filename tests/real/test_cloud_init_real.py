"""The user data of every EC2 shape, as the program renders it, read by the tools that will read it on the
host: `cloud-init schema` (Debian's cloud-init) and, for the sshd drop-in it writes, `sshd -T`."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailhost.lab.engine import matrix
from mailhost.lab.engine.program import unwrap
from mailhost.lab.engine.simulate import Simulator
from mailhost.publish import sshkeys

pytestmark = pytest.mark.real

# (sshUser, sshPort) on the production shape's first host; None keeps the shape's default (admin, 22).
LOGINS: dict[str, tuple[str | None, int | None]] = {
    "default": (None, None), "user-and-port": ("deploy", 2222), "root": ("root", None), "root-port": ("root", 2200)}


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    package = "cloud-init" if name == "cloud-init" else "openssh-server"
    assert found, f"{name} is missing: run ./setup.sh (Debian's {package} package)"
    return found


def user_data(login: str) -> dict[str, str]:
    """Each EC2 host's user data after a first `up` of the production shape with that login."""
    values, secrets, stack = matrix.shape("production")
    user, port = LOGINS[login]
    if user:
        values["hosts"][0]["sshUser"] = user
    if port:
        values["hosts"][0]["sshPort"] = port
    sim = Simulator(stack=stack)
    sim.run(values, secrets, stack, preview=False)
    return {d.name: unwrap(d.inputs)["userData"] for d in sim.state.values()
            if d.type == "aws:ec2/instance:Instance"}


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="jm-cloud-init-") as name:  # 0700: the data holds a host's private key
        yield Path(name)


@pytest.mark.parametrize("login", list(LOGINS))
def test_cloud_init_schema_accepts_the_user_data_of_every_ec2_host(login: str, workdir: Path) -> None:
    data = user_data(login)
    assert set(data) == {"jira", "confluence"}
    for name, text in data.items():
        path = workdir / f"{name}.yaml"
        path.write_text(text)
        done = subprocess.run([tool("cloud-init"), "schema", "--config-file", str(path)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "Valid cloud-config" in done.stdout, (login, name, done.stdout + done.stderr)


def test_cloud_init_schema_is_a_real_check(workdir: Path) -> None:
    """What the first version of the template had: an empty ssh_genkeytypes, which the schema refuses."""
    text = user_data("default")["jira"].replace("ssh_genkeytypes: [ed25519]", "ssh_genkeytypes: []")
    path = workdir / "bad.yaml"
    path.write_text(text)
    done = subprocess.run([tool("cloud-init"), "schema", "--config-file", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "ssh_genkeytypes" in done.stdout + done.stderr


def sshd_settings(doc: dict[str, Any], workdir: Path) -> dict[str, str]:
    """`sshd -T` of an sshd_config that includes the drop-in the user data writes, with the host key it installs."""
    key = workdir / "ssh_host_ed25519_key"
    key.write_text(doc["ssh_keys"]["ed25519_private"])
    key.chmod(0o600)
    include = ""
    for item in doc.get("write_files", []):
        assert item["path"] == sshkeys.SSHD_DROPIN
        dropin = workdir / "dropin.conf"
        dropin.write_text(item["content"])
        include = f"Include {dropin}\n"
    config = workdir / "sshd_config"
    config.write_text(f"{include}HostKey {key}\n")
    # sshd wants /run/sshd: a private mount namespace gives it one without touching this machine's /run.
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                           'mount -t tmpfs jm-sshd-run /run && mkdir -m 0755 /run/sshd && exec "$0" -T -f "$1"',
                           tool("sshd"), str(config)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    out: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.partition(" ")
        out[name] = value if name not in out else f"{out[name]} {value}"
    return out


@pytest.mark.parametrize("login", list(LOGINS))
def test_sshd_listens_on_the_port_and_the_admin_key_logs_in_as_the_user(login: str, workdir: Path) -> None:
    user, port = LOGINS[login]
    user, port = user or sshkeys.IMAGE_USER, port or 22
    admin = sshkeys.public_openssh(matrix.shape("production")[1]["sshPrivateKey"])
    doc = yaml.safe_load(user_data(login)["jira"])
    assert sshd_settings(doc, workdir)["port"] == str(port)
    assert doc["ssh_deletekeys"] is True and doc["ssh_genkeytypes"] == ["ed25519"]
    if user == "root":
        assert doc["disable_root"] is False and doc["ssh_authorized_keys"] == [admin]
    elif user == sshkeys.IMAGE_USER:
        assert "users" not in doc and "disable_root" not in doc and doc["ssh_authorized_keys"] == [admin]
    else:
        assert "ssh_authorized_keys" not in doc and "disable_root" not in doc
        assert doc["users"] == [{"name": user, "shell": "/bin/bash", "lock_passwd": True,
                                 "sudo": "ALL=(ALL) NOPASSWD:ALL", "ssh_authorized_keys": [admin]}]
    assert ("runcmd" in doc) == (port != 22), "sshd restarts only for a port it must move to"

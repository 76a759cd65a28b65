"""No secret of a relay-mode deploy shows up anywhere but in root-only 0600 files.

The lab is deployed in relay mode (`mailhost lab up`), a change is pushed (the runner
run directly, so all it prints is captured), and the lab is removed (`mailhost lab
down`), while every process's command line is sampled every 20 ms.  The secrets (SASL
password, DKIM private key, admin SSH key, the jira host's SSH host key, and the lab's
own CA and smarthost keys) are then looked for in: the stack outputs, the plain fields
of the lab state, all the CLI and runner output, the sampled command lines, every log,
and every file under the lab state dir, the jira host's private tree, Knot's dir, /tmp
(what appeared during the run) and the repo.  The first tests prove the scanner finds
what it is meant to find.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from mailhost.lab import ops, runner
from mailhost.lab.cli import lab_app
from mailhost.lab.lab import RELAY_USER, REPO, Lab
from mailhost.lab.secretscan import CmdlineSampler, Finding, Secret, TreeScan, scan_file, scan_text, scan_tree
from mailhost.ops.sshexec import HOST_ALIAS
from tests.real.conftest import lab_in_tmp

cli = CliRunner(env={"COLUMNS": "240"})
REPO_SKIP = {REPO / ".venv", REPO / ".git"}  # installed packages and compressed objects: nothing the lab writes


def _planted() -> tuple[Secret, Secret, str, str, str]:
    """A fresh RSA key (and its public half) and password, made like the lab's (never the lab's own)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    password = secrets.token_urlsafe(18)
    return Secret.of("planted key", pem), Secret.of("planted password", password, "someone"), pem, public, password


def _write(path: Path, data: str | bytes, mode: int) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


def test_the_scanner_finds_planted_secrets_outside_private_files() -> None:
    key, password, pem, public, plain = _planted()
    lines = pem.strip().splitlines()[1:-1]
    body = "".join(lines)
    auth_plain = base64.b64encode(f"\0someone\0{plain}".encode()).decode()
    with tempfile.TemporaryDirectory(prefix="mailhost-scan-") as tmp:
        root = Path(tmp)
        _write(root / "loose.pem", pem, 0o644)  # readable by everyone
        _write(root / "group.txt", f"key={body}\n", 0o640)  # without line breaks, group-readable
        _write(root / "state.json", json.dumps({"pem": pem}), 0o604)  # JSON-escaped line breaks
        _write(root / "rewrapped.txt", "\n".join(body[i:i + 76] for i in range(0, len(body), 76)), 0o644)
        _write(root / "private", pem, 0o600)  # root's 0600: allowed
        (root / "log").mkdir()
        _write(root / "log" / "mail.log", f"AUTH PLAIN {auth_plain}\n", 0o600)  # a log: never allowed
        _write(root / "tail.txt", f"...\n{lines[-2]}\n", 0o644)  # one line of the private part is a leak
        _write(root / "clean.txt", "nothing to see\n", 0o644)
        _write(root / "public.pem", public, 0o644)  # shares base64 with the private key, but is public
        result = scan_tree(root, [key, password])
    where = {(Path(f.where).name, f.secret) for f in result.findings}
    assert where == {("loose.pem", "planted key"), ("group.txt", "planted key"), ("state.json", "planted key"),
                     ("rewrapped.txt", "planted key"), ("mail.log", "planted password"),
                     ("tail.txt", "planted key")}, result.findings
    assert [Path(p.split(" (")[0]).name for p in result.private_with_secret] == ["private"]
    assert result.files == 9
    assert all(plain not in str(f) and body[:64] not in str(f) for f in result.findings), "findings never quote"
    assert scan_text("output", f"password: {plain}", [password]) and not scan_text("output", "no", [password])


def test_the_sampler_sees_a_secret_on_a_command_line() -> None:
    _, password, _, _, plain = _planted()
    sampler = CmdlineSampler()
    sampler.start()
    try:
        proc = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3)", plain], timeout=10)
        assert proc.returncode == 0
    finally:
        sampler.stop()
    found = sampler.findings([password])
    assert len(found) == 1 and found[0].secret == "planted password" and plain not in str(found[0])
    print(f"\nSECRET-SCAN sampler self-check: {sampler.samples} samples, {len(sampler.seen)} distinct command lines")


# -- the lab run -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab(jm_lab_lock: None) -> Iterator[Lab]:
    with lab_in_tmp("secretscan", None) as the_lab:
        yield the_lab


def invoke(*args: str) -> str:
    result = cli.invoke(lab_app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def lab_secrets(lab: Lab) -> list[Secret]:
    """Every secret of the deployed lab, read from where the lab keeps it."""
    info = lab.info()
    state = json.loads((lab.state_dir / "runner-state.json").read_text())
    keys = [e for e in state.values() if e["type"] == runner.PRIVATE_KEY]
    assert keys, "the program made no DKIM key?"
    # OpenDKIM reads its key after dropping root, so the key file (and apply.sh's copies) may be its own.
    opendkim = int(subprocess.run(["id", "-u", "opendkim"], capture_output=True, text=True, check=True).stdout)
    found = [Secret.of("relay password", lab.relay_password(), RELAY_USER),
             Secret.of("admin SSH private key", Path(info.jira["client_key_path"]).read_text()),
             Secret.of("jira SSH host private key", (Path(info.jira["workdir"]) / "ssh_host_ed25519_key").read_text()),
             Secret.of("lab CA key", lab.ca_key.read_text()),
             Secret.of("smarthost TLS key", lab.cert_paths("smarthost")[1].read_text())]
    for entry in keys:
        for form in ("privateKeyPem", "privateKeyPemPkcs8", "privateKeyOpenssh"):
            found.append(Secret.of(f"DKIM key {entry['name']} ({form})", entry["outputs"][form], readers=(0, opendkim)))
    return found


def plain_state(lab: Lab) -> dict[str, str]:
    """What the lab keeps in clear: the stack file (secrets as `secure` markers), lab.json, the run summary,
    the stack outputs, and each resource's inputs/outputs the program did not mark secret."""
    state = {k: runner.Entry(**v) for k, v in json.loads((lab.state_dir / "runner-state.json").read_text()).items()}
    texts = {name: (lab.state_dir / name).read_text()
             for name in ("Pulumi.lab.yaml", "lab.json", "runner-last.json", "stack-outputs.json")}
    texts.update({f"runner-state {key} (plain fields)": json.dumps(entry.plain()) for key, entry in state.items()})
    return texts


def scan_files(roots: list[Path], found: list[Secret], into: TreeScan) -> None:
    """Each root once (nested ones dropped), the repo without .venv/.git."""
    unique = sorted({r.resolve() for r in roots if r.exists()})
    unique = [r for r in unique if not any(r != o and r.is_relative_to(o) for o in unique)]
    for root in unique:
        if root.is_file():
            scan_file(root, found, into)
        else:
            scan_tree(root, found, into, skip=lambda p: p in REPO_SKIP)


def new_tmp_entries(before: set[str]) -> list[Path]:
    return [Path("/tmp") / name for name in set(os.listdir("/tmp")) - before]


@pytest.mark.real
@pytest.mark.lab
def test_no_secret_leaks_from_up_push_and_down(lab: Lab) -> None:
    tmp_before = set(os.listdir("/tmp"))
    started = time.monotonic()
    sampler = CmdlineSampler(interval=0.02)
    sampler.start()
    texts: dict[str, str] = {}
    files = TreeScan()
    try:
        texts["`lab up --mode relay` output"] = invoke("up", "--mode", "relay", "--count", "20",
                                                       "--state", str(lab.state_dir))
        assert ops.current_values(lab)["delivery"]["mode"] == "relay"
        # the change: the runner run directly, so everything it prints (events, errors) is captured
        ops.write_stack(lab, "relay", {"messageSizeLimit": 3 * 1024 * 1024})
        push = subprocess.run([sys.executable, "-m", "mailhost.lab.runner", "up", "--state", str(lab.state_dir)],
                              capture_output=True, text=True, cwd=REPO, timeout=600)
        assert push.returncode == 0, push.stdout[-2000:] + push.stderr[-2000:]
        assert '"remote-command"' in push.stdout and "jira-push" in push.stdout
        texts["runner stdout (push of a change)"] = push.stdout
        texts["runner stderr (push of a change)"] = push.stderr
        found = lab_secrets(lab)
        texts.update(plain_state(lab))
        info = lab.info()
        jira_dir = Path(info.jira["workdir"])
        assert info.knot_dir
        scan_files([lab.state_dir, jira_dir, Path(info.knot_dir), *new_tmp_entries(tmp_before), REPO], found, files)
        scanned_before_down = files.files
        texts["`lab down` output"] = invoke("down", "--state", str(lab.state_dir))
    finally:
        sampler.stop()
    scan_files([*new_tmp_entries(tmp_before), REPO], found, files)  # whatever `down` left behind
    findings: list[Finding] = [*files.findings, *sampler.findings(found)]
    for where, text in texts.items():
        findings += scan_text(where, text, found)
    print(f"\nSECRET-SCAN: {len(findings)} findings; {len(found)} secret forms; {files.files} files "
          f"({scanned_before_down} before down), {len(texts)} texts, {sampler.samples} cmdline samples "
          f"({len(sampler.pids)} processes, {len(sampler.seen)} distinct command lines) in "
          f"{time.monotonic() - started:.1f}s; {len(files.logs)} logs; secrets in private files: "
          f"{len(files.private_with_secret)}; "
          f"skipped: {len(files.skipped)}")
    for finding in findings:
        print(f"  FINDING {finding}")
    for path in files.private_with_secret:
        print(f"  ok (0600, right owner): {path}")
    assert findings == []
    # The scan looked where the secrets are: each one was found in its private file(s), and the sampler
    # ran while the push's ssh was running.
    private = " ".join(files.private_with_secret)
    for where in ("secrets.json", "runner-state.json", "/etc/postfix/sasl_passwd", "opendkim/keys/",
                  "client_key", "ssh_host_ed25519_key", "lab-ca.key", "smarthost.key"):
        assert where.replace("/etc/", "/_etc/upper/", 1) in private or where in private, where
    assert any(HOST_ALIAS.encode() in cmd for cmd in sampler.seen), "the sampler missed the push's ssh"
    logs = " ".join(files.logs)
    for log in ("/_var/upper/log/mail.log", "knotd.log", "smarthost.log", "receiver.log", "sshd.log",
                "smarthost-events.jsonl"):
        assert log in logs, f"{log} was not scanned"

"""What `mailhost lab` does, as functions the CLI and the tests share.

up = build the lab if needed, write the lab stack, run the program through the runner;
send = a Jira burst submitted inside the jira host, then wait for the MX to see it;
down = the program's delete path first (so teardown.sh drains the queue), then the lab.
"""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mailhost.lab import imapd, jirahost, receiver, runner, zones
from mailhost.lab.lab import REPO, Lab, LabError
from mailhost.lab.stack import DEFAULT_LIMIT, MAILLOG, lab_stack
from mailhost.settings.config import DANE_MODES, default_outbound_tls

__all__ = ["DEFAULT_LIMIT", "MAILLOG", "lab_stack"]  # also used from here by the CLI, tests and benches

Progress = Callable[[str], None]
REROUTE_TO = f"qa@{zones.RECIPIENT_DOMAIN}"
USERS = [f"{n}@{zones.RECIPIENT_DOMAIN}" for n in ("alice", "bob", "carol", "dave", "erin", "frank")]


class DeployError(RuntimeError):
    pass


def _quiet(_: str) -> None:
    return None


def lab_values(lab: Lab, mode: str = "direct") -> tuple[dict[str, Any], dict[str, str]]:
    """The lab stack: the jira namespace as an existing host, lab zone ids, lab DNS for verification."""
    info = lab.info()
    jira = info.jira
    host = lab.host("jira")
    sh = lab.world.smarthost
    values = lab_stack(mode, host.ipv4, host.ipv6, jira["host_key"], jira.get("user", "root"),
                       int(jira.get("port", 22)), lab.world.dns.v4, (sh.v4, sh.v6))
    # The canary's mailbox at the lab MX (Dovecot: lab.start_imap), its password from a command as an admin's is.
    values["canary"] = {"mailboxes": [{
        "address": imapd.CANARY, "imapHost": lab.world.mx.v4, "user": imapd.CANARY, "caFile": str(lab.ca_cert),
        "passwordCommand": shlex.join(["cat", str(lab.imap_password_file(imapd.CANARY))])}]}
    secrets = {"sshPrivateKey": Path(jira["client_key_path"]).read_text()}
    if mode == "relay":
        secrets["relayPassword"] = lab.relay_password()
    return values, secrets


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge stack overrides: dicts merge, lists of named items merge by name, other values replace,
    None removes a key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif _named_list(value) and _named_list(out.get(key)):  # hosts: merge by name
            mine = {item["name"]: item for item in out[key]}
            out[key] = [merge(mine.get(item["name"], {}), item) for item in value]
        else:
            out[key] = copy.deepcopy(value)
    return out


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) and "name" in i for i in value)


def overrides_from_file(path: Path) -> dict[str, Any]:
    """`--stack FILE`: a Pulumi.<stack>.yaml whose jira-mailhost keys are laid over the lab stack."""
    document = yaml.safe_load(path.read_text()) or {}
    out = {}
    for key, value in (document.get("config") or {}).items():
        namespace, _, name = str(key).partition(":")
        if namespace == runner.PROJECT and not (isinstance(value, dict) and set(value) == {"secure"}):
            out[name] = value
    return out


def write_stack(lab: Lab, mode: str = "direct", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    values, secrets = lab_values(lab, mode)
    values = merge(values, overrides or {})
    if values.get("delivery", {}).get("mode") != "relay":
        secrets.pop("relayPassword", None)
    values = with_lab_bogus_name(values)
    runner.write_stack(lab.state_dir, values, secrets)
    return values


def with_lab_bogus_name(values: dict[str, Any]) -> dict[str, Any]:
    """The values with the lab's broken-DNSSEC zone as delivery.dnssecBogusName whenever they push a DANE mode
    (direct mode's default included): the push checks the host's resolver refuses that name, and the real
    dnssec-failed.org is not under the lab root.  Every stack a lab test writes goes through here."""
    delivery = values.get("delivery", {})
    mode = delivery.get("mode", "direct")
    if delivery.get("outboundTls", default_outbound_tls(mode)) not in DANE_MODES or mode != "direct":
        return values
    return {**values, "delivery": {**delivery, "dnssecBogusName": delivery.get("dnssecBogusName", zones.BOGUS_ZONE)}}


def current_values(lab: Lab) -> dict[str, Any]:
    document = yaml.safe_load(runner.stack_path(lab.state_dir).read_text()) or {}
    return {k.partition(":")[2]: v for k, v in (document.get("config") or {}).items()
            if not (isinstance(v, dict) and set(v) == {"secure"})}


def deploy(lab: Lab, progress: Progress = _quiet, action: str = "up", skip_unreachable: bool = False,
           program: Path = REPO / "__main__.py", unprotect: bool = False) -> dict[str, Any]:
    """Run the program (or its deletes) through the runner in its own process; stream its events.
    Holds the lab (Lab.exclusive) throughout: a second up/down meanwhile is refused (LabBusy)."""
    with lab.exclusive(action):
        return _deploy(lab, progress, action, skip_unreachable, program, unprotect)


def _deploy(lab: Lab, progress: Progress, action: str, skip_unreachable: bool, program: Path,
            unprotect: bool) -> dict[str, Any]:
    argv = [sys.executable, "-m", "mailhost.lab.runner", action, "--state", str(lab.state_dir),
            "--program", str(program)]
    if skip_unreachable:
        argv.append("--skip-unreachable")
    if unprotect:
        argv.append("--unprotect")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    result: dict[str, Any] | None = None
    failure: str | None = None
    plans: list[str] = []
    steps: list[dict[str, str]] = []
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = event.get("event")
        if kind == "resource" and not event["action"].endswith("-start") and event["action"] != "same":
            progress(f"{event['action']}: {event['name']}")
        elif kind == "plan":
            plans.append(event["text"])
            steps = event.get("steps", [])
            progress("plan:\n" + event["text"])
        elif kind == "done":
            result = event
        elif kind == "failed":
            failure = event["message"]
    stderr = proc.stderr.read()
    proc.wait()
    if proc.returncode != 0 or result is None:
        raise DeployError(failure or stderr.strip()[-3000:] or f"runner exited {proc.returncode}")
    return {**result, "plan": plans[0] if plans else "", "steps": steps}


# -- mail ------------------------------------------------------------------------------------
@dataclass
class Burst:
    name: str
    sent: int
    refused: list[dict[str, Any]]
    seconds: float
    message_ids: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)  # per submitted message, as Jira waited
    started_at: float = 0.0  # Unix time of the first submission
    accepted_at: dict[str, float] = field(default_factory=dict)  # Message-ID → when Postfix took it (Unix time)


def send(lab: Lab, count: int, size_kb: int = 0, recipients: list[str] | None = None, oversize: int = 0,
         big_every: int = 25, keep_refused: bool = False, sender: str = f"jira@{zones.SENDER_DOMAIN}") -> Burst:
    """Submit a Jira burst to Postfix on 127.0.0.1:25 from inside the jira host, as Jira does.
    keep_refused: each refused message comes back in `refused` (key `retry`), for `retry`.
    sender: Jira's From address (another domain's = a misconfigured Jira)."""
    limit = int(current_values(lab).get("messageSizeLimit", DEFAULT_LIMIT))
    argv = ["--count", str(count), "--size-limit", str(limit), "--size-kb", str(size_kb), "--oversize", str(oversize),
            "--big-every", str(big_every), "--sender", sender, "--seed", str(int(time.time()))]
    for rcpt in recipients or USERS:
        argv += ["--to", rcpt]
    return _submit(lab, argv + (["--keep-refused"] if keep_refused else []))


def retry(lab: Lab, refused: list[dict[str, Any]]) -> Burst:
    """Submit refused messages again, unchanged (same Message-ID), as Jira's mail queue retries them;
    `refused` comes from a send(..., keep_refused=True); what is refused again comes back the same way."""
    stdin = json.dumps([r["retry"] for r in refused])
    return _submit(lab, ["--retry", "--keep-refused"], stdin)


def _submit(lab: Lab, args: list[str], stdin: str | None = None) -> Burst:
    argv = [sys.executable, "-m", "mailhost.lab.mail", *args]
    proc = subprocess.run(jirahost.nsenter(lab.info(), argv), capture_output=True, text=True, timeout=3600, cwd=REPO,
                          input=stdin)
    if proc.returncode != 0:
        raise LabError(f"submitting mail failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]!r}, "
                       f"its output ended {proc.stdout.strip()[-500:]!r}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    refused = [r for r in data["results"] if not r["accepted"]]
    ids = {r["message_id"] for r in data["results"] if r["accepted"]}
    return Burst(data["burst"], data["sent"], refused, data["seconds"], ids,
                 [r.get("latency", 0.0) for r in data["results"]], data.get("started_at", 0.0),
                 {r["message_id"]: r.get("accepted_at", 0.0) for r in data["results"] if r["accepted"]})


def records(lab: Lab, burst: str | None = None) -> list[dict[str, Any]]:
    found = receiver.read_records(lab.receiver_log)
    return [r for r in found if burst is None or r.get("burst") == burst]


def relayed(lab: Lab, burst: str) -> list[dict[str, Any]]:
    """The smarthost's log entries of one burst (relay mode)."""
    return [e for e in receiver.read_records(lab.smarthost_log) if e.get("burst") == burst]


def wait_delivered(
    lab: Lab, burst: Burst, timeout: float = 180, settle: float = 1.0
) -> tuple[list[dict[str, Any]], float]:
    """Wait until the MX has every accepted message of the burst (or time runs out); return records, seconds."""
    started = time.monotonic()
    while True:
        got = records(lab, burst.name)
        if len({r["message_id"] for r in got}) >= burst.sent or time.monotonic() - started > timeout:
            break
        time.sleep(0.25)
    seconds = time.monotonic() - started
    time.sleep(settle)  # anything arriving twice would show up now
    return records(lab, burst.name), seconds


def queue(lab: Lab) -> list[dict[str, Any]]:
    """Postfix's queue on the jira host (postqueue -j), [] when Postfix is not there yet."""
    result = jirahost.run(lab.info(), ["postqueue", "-j"])
    if result.returncode != 0:
        return []
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def verdict_table(recs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per check: how many messages got each verdict."""
    table: dict[str, dict[str, int]] = {}
    for rec in recs:
        for check in ("spf", "spf_helo", "dkim", "dmarc", "fcrdns", "helo_matches_ptr", "tls", "family"):
            value = str(rec.get(check))
            table.setdefault(check, {})
            table[check][value] = table[check].get(value, 0) + 1
    return table


def all_pass(recs: list[dict[str, Any]]) -> bool:
    return bool(recs) and all(
        (r["spf"], r["dkim"], r["dmarc"], r["fcrdns"]) == ("pass", "pass", "pass", "pass")
        and r["helo_matches_ptr"] and r["tls"]
        for r in recs
    )


# -- up / down -------------------------------------------------------------------------------
def up(lab: Lab, mode: str = "direct", overrides: dict[str, Any] | None = None,
       progress: Progress = _quiet) -> dict[str, Any]:
    """Build the lab unless it is running, write the stack, deploy the program into it; all of it
    while holding the lab, so a second up or down at the same time is refused (LabBusy), not interleaved."""
    with lab.exclusive("up"):
        if not lab.exists():
            lab.build(progress)
        write_stack(lab, mode, overrides)
        progress("deploying the program")
        return deploy(lab, progress)


def preview(lab: Lab, mode: str | None = None, overrides: dict[str, Any] | None = None) -> str:
    """`pulumi preview --diff` of the lab: the plan against what the lab has deployed; runs nothing remote.
    With a mode or overrides the lab stack is rewritten first (as `pulumi config set` would), then previewed.
    Raises DeployError with the plan and the engine's refusal when it would replace a protected resource."""
    with lab.exclusive("preview"):
        if mode is not None or overrides:
            write_stack(lab, mode or "direct", overrides)
        return str(deploy(lab, action="preview")["plan"])


def down(lab: Lab, progress: Progress = _quiet, force: bool = False, unprotect: bool = False) -> dict[str, Any] | None:
    """The program's deletes (teardown drains the queue; a refusal stops here), then the whole lab;
    holding the lab throughout, like up."""
    with lab.exclusive("down"):
        return _down(lab, progress, force, unprotect)


def _down(lab: Lab, progress: Progress, force: bool, unprotect: bool) -> dict[str, Any] | None:
    result = None
    if (lab.state_dir / "runner-state.json").exists():
        reachable = lab.exists() and lab.info().jira.get("pid") is not None and _alive(lab.info().jira["pid"])
        progress("running the program's delete path")
        try:
            result = deploy(lab, progress, action="down", skip_unreachable=force or not reachable,
                            unprotect=unprotect or force)
        except DeployError:
            if not force:
                raise
    progress("removing the lab")
    lab.teardown(progress)
    return result


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


# -- report ----------------------------------------------------------------------------------
@dataclass
class Row:
    check: str
    result: str
    ok: bool


def assess(values: dict[str, Any], burst: Burst, recs: list[dict[str, Any]], seconds: float,
           expect_refused: int = 0, relayed: list[dict[str, Any]] | None = None) -> list[Row]:
    """The table `lab up` and `lab send` print: each line says what the MX saw and whether it is right."""
    n = len(recs)
    unique = len({r["message_id"] for r in recs})

    def count(pred: Callable[[dict[str, Any]], bool]) -> int:
        return sum(1 for r in recs if pred(r))

    total = burst.seconds + seconds
    rows = [Row("delivered", f"{unique}/{burst.sent}: submitted in {burst.seconds:.1f}s, at the MX {seconds:.1f}s"
                f" later ({burst.sent / total:.1f} msg/s)", unique == burst.sent and n == burst.sent)]
    for check, label in (("spf", "SPF"), ("dkim", "DKIM"), ("dmarc", "DMARC"), ("fcrdns", "FCrDNS (PTR ↔ A/AAAA)")):
        passed = count(lambda r, c=check: r[c] == "pass")  # type: ignore[misc]
        others = sorted({r[check] for r in recs} - {"pass"})
        rows.append(Row(label, f"pass {passed}/{n}" + (f" (also: {', '.join(others)})" if others else ""),
                        n > 0 and passed == n))
    helo_spf = {v: count(lambda r, v=v: r["spf_helo"] == v) for v in sorted({r["spf_helo"] for r in recs})}  # type: ignore[misc]
    rows.append(Row("SPF for the HELO name", ", ".join(f"{k} {v}" for k, v in helo_spf.items()) or "-",
                    not set(helo_spf) & {"fail", "softfail", "permerror", "temperror"}))
    helo = count(lambda r: bool(r["helo_matches_ptr"]))
    helos = sorted({r["helo"] for r in recs})
    rows.append(Row("HELO = PTR name", f"{helo}/{n} ({', '.join(helos)})", n > 0 and helo == n))
    tls = count(lambda r: bool(r["tls"]))
    versions = sorted({str(r.get("tls_version")) for r in recs if r["tls"]})
    rows.append(Row("TLS to the MX", f"{tls}/{n} ({', '.join(versions)})", n > 0 and tls == n))
    if relayed is not None:  # relay mode: what the smarthost saw of the jira host's sessions
        auth = sum(1 for e in relayed if e.get("tls") and e.get("user"))
        rows.append(Row("host → smarthost", f"{auth}/{len(relayed)} over STARTTLS with SASL AUTH as "
                        f"{', '.join(sorted({str(e.get('user')) for e in relayed}))}",
                        auth == len(relayed) == burst.sent))
    v4, v6 = count(lambda r: r["family"] == 4), count(lambda r: r["family"] == 6)
    ips = sorted({r["ip"] for r in recs})
    rows.append(Row("connections from", f"IPv4 {v4}, IPv6 {v6} ({', '.join(ips)})", True))
    reroute = values.get("rerouteTo")
    rcpts = sorted({rcpt for r in recs for rcpt in r["rcpt_to"]})
    if reroute:
        rows.append(Row("rerouting", f"on → {reroute}; MX saw {', '.join(rcpts)}", rcpts == [reroute]))
    else:
        rows.append(Row("rerouting", f"off; MX saw {len(rcpts)} recipients", True))
    errors = sorted({f"{r['code']} {r['error']}"[:100] for r in burst.refused})
    rows.append(Row("refused at submission", f"{len(burst.refused)}" + (f": {'; '.join(errors)}" if errors else ""),
                    len(burst.refused) == expect_refused))
    return rows


def mail_dmarc_report(lab: Lab, since: float, domain: str = zones.SENDER_DOMAIN, policy: str | None = None,
                      schema: str = "7489") -> dict[str, Any]:
    """The MX reports what it judged about `domain` since `since` to the lab's report mailbox
    (reporting.py); returns the report id, its interval and the messages counted per source."""
    policy = policy or str(current_values(lab).get("dmarc", {}).get("policy", "quarantine"))
    argv = [sys.executable, "-m", "mailhost.lab.reporting", "--log", str(lab.receiver_log), "--mx",
            lab.world.mx.v4, "--domain", domain, "--policy", policy, "--since", repr(since), "--schema", schema]
    done = subprocess.run(lab.host("mx").argv(argv), capture_output=True, text=True, timeout=120, cwd=REPO)
    if done.returncode != 0:
        raise LabError(f"the lab MX could not mail its DMARC report: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def canary_argv(lab: Lab, timeout: float, as_json: bool = True, *extra: str) -> list[str]:
    """`mailhost canary` as an admin runs it on the lab: the lab stack, its outputs and the admin key."""
    return [sys.executable, "-m", "mailhost", "canary", "--stack", str(runner.stack_path(lab.state_dir)),
            "--outputs", str(lab.state_dir / "stack-outputs.json"), "--key", lab.info().jira["client_key_path"],
            "--timeout", repr(timeout), *(["--json"] if as_json else []), *extra]

"""Run the real Pulumi program against the lab instead of AWS: Pulumi's mocks, applied for real.

A lab tool, not part of the program: `__main__.py` runs unchanged under
`pulumi.runtime.set_mocks`, and each resource it registers is applied to lab software:

- tls PrivateKey → a real key made with `cryptography`;
- route53 Record → an RFC 2136 update of the lab's Knot (zone ids map to lab zones);
- command remote.Command → run over real SSH (mailhost.ops.sshexec) with the pinned host key;
- command local.Command → run here, for real (the post-deploy `mailhost verify`);
- components → pass through.

Like the Pulumi engine, a state file (0600) remembers each resource's inputs and outputs,
and which of them the program marked secret (as Pulumi's checkpoint would encrypt them),
so a second `up` without changes runs nothing; changed inputs run `update` (or replace:
create, then the old delete); resources gone from the program, and everything on
`down`, are deleted in reverse creation order.  Progress goes to stdout as JSON lines;
the stack outputs go to `stack-outputs.json`, secret ones shown as `[secret]` like
`pulumi stack output --json` does.
Run as `python -m mailhost.lab.runner up|down --state DIR`, one process per run,
because the Pulumi SDK keeps global state.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mailhost.lab import dnsupdate
from mailhost.lab.engine import plan, show
from mailhost.lab.engine import program as engine_program
from mailhost.lab.engine.program import SECRET_SIG, holds_secret, unwrap  # noqa: F401  (used by tests, secretscan)
from mailhost.lab.engine.simulate import tls_outputs
from mailhost.lab.lab import REPO, Lab, private_file

PROJECT = "jira-mailhost"
STACK = "lab"
REMOTE = "command:remote:Command"
LOCAL = "command:local:Command"
RECORD = "aws:route53/record:Record"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
EIP_PTR = "aws:ec2/eipDomainName:EipDomainName"


class RunnerError(RuntimeError):
    pass


def fingerprint(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


_emit_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """One progress line for the CLI; never carries inputs (they may hold secrets).  Resources register on
    worker threads: one write per line under a lock, or two lines could interleave (print writes the
    text and the newline separately) and the reader would lose both."""
    line = json.dumps({"event": event, **fields}) + "\n"
    with _emit_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


# -- stack file ------------------------------------------------------------------------------
def stack_path(state_dir: Path) -> Path:
    return state_dir / f"Pulumi.{STACK}.yaml"


def secrets_path(state_dir: Path) -> Path:
    return state_dir / "secrets.json"


def write_stack(state_dir: Path, values: dict[str, Any], secrets: dict[str, str]) -> Path:
    """Pulumi.lab.yaml with plain values and `secure` markers; the secrets themselves go to a 0600 file."""
    config: dict[str, Any] = {f"{PROJECT}:{k}": v for k, v in values.items()}
    for key in secrets:
        config[f"{PROJECT}:{key}"] = {"secure": "lab-secret (see secrets.json, mode 0600)"}
    path = stack_path(state_dir)
    path.write_text(yaml.safe_dump({"config": config}, sort_keys=True))
    private_file(secrets_path(state_dir), json.dumps(secrets))
    return path


def read_stack(state_dir: Path) -> tuple[dict[str, str], list[str]]:
    """Config for pulumi.runtime.set_all_config: full keys, values as Pulumi passes them (JSON text)."""
    document = yaml.safe_load(stack_path(state_dir).read_text()) or {}
    secrets = json.loads(secrets_path(state_dir).read_text())
    config: dict[str, str] = {}
    for key, value in (document.get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            continue
        config[key] = value if isinstance(value, str) else json.dumps(value)
    secret_keys = []
    for key, value in secrets.items():
        config[f"{PROJECT}:{key}"] = value
        secret_keys.append(f"{PROJECT}:{key}")
    return config, secret_keys


# -- state -----------------------------------------------------------------------------------
@dataclass
class Entry:
    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    id: str
    seq: int
    urn: str = ""
    deps: list[str] = field(default_factory=list)  # URNs this resource depends on
    protect: bool = False
    delete_before_replace: bool = False
    secret_inputs: list[str] = field(default_factory=list)  # top-level inputs holding a secret
    secret_outputs: list[str] = field(default_factory=list)  # additionalSecretOutputs
    retain_on_delete: bool = False
    condemned: bool = False  # replaced (create-before-delete): deleted with the other deletes, at the end

    def deployed(self) -> plan.Deployed:
        return plan.Deployed(self.urn, self.type, self.name, self.inputs, self.outputs, self.protect,
                             self.retain_on_delete, tuple(self.deps), tuple(self.secret_inputs))

    def plain(self) -> dict[str, Any]:
        """What Pulumi's checkpoint would hold in clear text: inputs and outputs not marked secret
        (an output is secret when the input of that name was, or the resource lists it)."""
        hidden = {*self.secret_inputs, *self.secret_outputs}
        return {"inputs": {k: v for k, v in self.inputs.items() if k not in self.secret_inputs},
                "outputs": {k: v for k, v in self.outputs.items() if k not in hidden}}


class State:
    """The runner's memory of what exists in the lab (a tiny Pulumi checkpoint); thread-safe."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.RLock()
        self.entries: dict[str, Entry] = {}
        if path.exists():
            for key, raw in json.loads(path.read_text()).items():
                self.entries[key] = Entry(**raw)

    def next_seq(self) -> int:
        return max((e.seq for e in self.entries.values()), default=0) + 1

    def put(self, key: str, entry: Entry) -> None:
        with self.lock:
            self.entries[key] = entry
            self.save()

    def drop(self, key: str) -> None:
        with self.lock:
            self.entries.pop(key, None)
            self.save()

    def save(self) -> None:
        text = json.dumps({k: e.__dict__ for k, e in self.entries.items()}, sort_keys=True, indent=1)
        tmp = self.path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        private_file(tmp, text)
        tmp.replace(self.path)


# -- appliers --------------------------------------------------------------------------------
class Applier:
    """Plans each registration as the engine would (engine/plan.py) and, unless previewing, applies
    the step to the lab; keeps the steps for the plan shown before `up` and by `lab preview`."""

    def __init__(self, lab: Lab, state: State, skip_unreachable: bool = False, preview: bool = False):
        self.lab = lab
        self.state = state
        self.dns = lab.world.dns.v4
        self.zone_ids = lab.world.zone_ids
        self.seen: set[str] = set()
        self.actions: list[dict[str, str]] = []
        self.skip_unreachable = skip_unreachable
        self.preview = preview
        self.steps: list[plan.Step] = []
        self.registrations: dict[str, plan.Registration] = {}

    def note(self, action: str, typ: str, name: str, **extra: Any) -> None:
        with self.state.lock:
            self.actions.append({"action": action, "type": typ, "name": name})
        if not self.preview:
            emit("resource", action=action, type=typ, name=name, **extra)

    def deployed(self) -> dict[str, plan.Deployed]:
        with self.state.lock:  # a replaced entry waiting for its delete keeps its URN; Pulumi marks it so too
            return {e.urn + ("#condemned" if e.condemned else ""): e.deployed() for e in self.state.entries.values()}

    # The Mocks entry point (worker threads).
    def register(self, request: engine_program.Request) -> tuple[str, dict[str, Any]]:
        reg, typ, name, custom = request.registration, request.type, request.name, request.custom
        key = f"{typ}::{name}"
        with self.state.lock:
            self.seen.add(key)
            old = self.state.entries.get(key)
            for alias in reg.aliases if old is None else ():  # a renamed resource keeps its state
                alias_key = "::".join(alias.split("::")[-2:]).split("$")[-1]
                if alias_key in self.state.entries:
                    old = self.state.entries.pop(alias_key)
                    self.state.entries[key] = old
                    self.seen.add(alias_key)
                    break
        deployed = old.deployed() if old is not None else None
        reg = plan.as_sent(reg, deployed)
        inputs = dict(reg.inputs)
        secret = {"secret_inputs": list(reg.secret_inputs), "secret_outputs": list(request.secret_outputs)}
        step = plan.plan_one(reg, deployed)
        with self.state.lock:
            self.steps.append(step)
            self.registrations[reg.urn] = reg
        component = not custom or typ.startswith("jira-mailhost:")
        if self.preview:
            if component:
                return f"{name}-component", {}
            return (old.id if old else ""), plan.preview_outputs(step, reg, old.outputs if old else None)
        entry_opts: dict[str, Any] = {"urn": reg.urn, "deps": list(reg.dependencies), "protect": reg.protect,
                      "delete_before_replace": reg.delete_before_replace, "retain_on_delete": reg.retain_on_delete,
                      **secret}
        if component:  # in the state like any resource (a preview shows it unchanged); no provider acts on it
            with self.state.lock:
                seq = old.seq if old is not None else self.state.next_seq()
                self.state.put(key, Entry(typ, name, inputs, {}, f"{name}-component", seq, **entry_opts))
            return f"{name}-component", {}
        if step.op == "same" and old is not None:
            with self.state.lock:  # options change the state only, like `pulumi up` with only protect changed
                self.state.put(key, Entry(typ, name, old.inputs, old.outputs, old.id, old.seq, **entry_opts))
            self.note("same", typ, name)
            return old.id, old.outputs
        if old is not None and step.op == "replace":
            problems = plan.protect_problems([step], {step.urn: old.deployed()})
            if problems:  # the preview pass refuses first; this guards a plan that changed meanwhile
                raise RunnerError(problems[0])
        handler = self.handlers().get(typ)
        if handler is None:
            raise RunnerError(f"the lab cannot apply {typ} ({name}); it has no such thing")
        self.note(f"{step.op}-start", typ, name, changed=list(step.changed))  # paths only, never values
        started = time.monotonic()
        if old is not None and step.op == "replace" and not step.delete_first:
            # Pulumi's step executor deletes what a create-before-delete replace condemned at the end of the
            # `up`, with the removed resources: until then the old one (its record set, its host) still exists.
            with self.state.lock:
                self.state.put(f"{key}#condemned-{old.seq}", dataclasses.replace(old, condemned=True))
        rid, outputs = handler(name, reg, old, step)
        with self.state.lock:  # creation order = dependency order: what depends on a resource waits for it
            seq = old.seq if old is not None and step.op == "update" else self.state.next_seq()
            self.state.put(key, Entry(typ, name, inputs, outputs, rid, seq, **entry_opts))
        self.note(step.op, typ, name, seconds=round(time.monotonic() - started, 2))
        return rid, outputs

    def handlers(self) -> dict[str, Callable[[str, plan.Registration, Entry | None, plan.Step],
                                             tuple[str, dict[str, Any]]]]:
        return {PRIVATE_KEY: self.private_key, RECORD: self.record, REMOTE: self.remote, LOCAL: self.local,
                EIP_PTR: self.eip_ptr}

    # tls:PrivateKey
    def private_key(self, name: str, reg: plan.Registration, old: Entry | None,
                    step: plan.Step) -> tuple[str, dict[str, Any]]:
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

        inputs = dict(reg.inputs)
        algorithm = inputs.get("algorithm", "RSA")
        if algorithm == "RSA":
            key: Any = rsa.generate_private_key(public_exponent=65537, key_size=int(inputs.get("rsaBits", 2048)))
        elif algorithm == "ED25519":
            key = ed25519.Ed25519PrivateKey.generate()
        else:
            raise RunnerError(f"{name}: the lab makes RSA and ED25519 keys, not {algorithm}")
        outputs = tls_outputs(key)
        return outputs.pop("_id"), {**inputs, **outputs}

    # route53:Record
    def _zone(self, zone_id: str) -> str:
        try:
            return self.zone_ids[zone_id]
        except KeyError:
            raise RunnerError(f"zone id {zone_id!r} is not a lab zone ({', '.join(self.zone_ids)})") from None

    def record(self, name: str, reg: plan.Registration, old: Entry | None,
               step: plan.Step) -> tuple[str, dict[str, Any]]:
        """Route53 as the provider does it: a create with allowOverwrite false is a CREATE change, which
        fails when the record set exists; an update is an UPSERT; a replace creates, then deletes the old."""
        inputs = dict(reg.inputs)
        zone = self._zone(inputs["zoneId"])
        fqdn = str(inputs["name"]).rstrip(".")
        rtype = inputs["type"]
        ttl, records = int(inputs.get("ttl") or 300), list(inputs.get("records") or [])
        moved = old is not None and (old.inputs["name"], old.inputs["type"], old.inputs["zoneId"]) != (
            inputs["name"], rtype, inputs["zoneId"])
        if step.op == "update" and not moved:
            dnsupdate.upsert(self.dns, zone, fqdn, rtype, ttl, records)
        elif plan.creates_only(inputs):
            dnsupdate.create(self.dns, zone, fqdn, rtype, ttl, records)
        else:
            dnsupdate.upsert(self.dns, zone, fqdn, rtype, ttl, records)
        if old is not None and moved and step.op == "update":  # a type change: DELETE+CREATE in one batch
            self._delete_record(old)
        return f"{inputs['zoneId']}_{fqdn}_{rtype}", {**inputs, "fqdn": fqdn}

    def _delete_record(self, entry: Entry) -> None:
        dnsupdate.delete(self.dns, self._zone(entry.inputs["zoneId"]), str(entry.inputs["name"]), entry.inputs["type"])

    def eip_ptr(self, name: str, reg: plan.Registration, old: Entry | None,
                step: plan.Step) -> tuple[str, dict[str, Any]]:
        raise RunnerError(f"{name}: the lab's host is an existing host with reverse zones; EIP PTRs need AWS")

    # command:remote:Command
    def remote(self, name: str, reg: plan.Registration, old: Entry | None,
               step: plan.Step) -> tuple[str, dict[str, Any]]:
        """create runs `create`; update runs `update` (or `create` when it is empty) with the new inputs,
        so on the new host when the connection changed; replace runs the old `delete` with the old
        inputs before (deleteBeforeReplace) or after the new `create`."""
        inputs = dict(reg.inputs)
        return command_step(name, inputs, old.inputs if old else None, step,
                            lambda i, script, stdin: self._ssh(name, i, script, stdin))

    def _ssh(self, name: str, inputs: dict[str, Any], script: str | None, stdin: str | None) -> tuple[str, str]:
        from mailhost.ops import sshexec

        if not script:
            return "", ""
        conn = inputs.get("connection") or {}
        if inputs.get("environment"):
            raise RunnerError(f"{name}: remote environment variables are not supported by the lab runner")
        self.note("remote-command", REMOTE, name)
        result = sshexec.run(
            host=str(conn["host"]), port=int(conn.get("port") or 22), user=str(conn.get("user") or "root"),
            private_key=str(conn["privateKey"]), host_key=str(conn.get("hostKey") or ""), command=script,
            stdin=stdin, timeout=900, attempts=int(conn.get("dialErrorLimit") or 10),
        )
        if not result.ok:
            raise RunnerError(f"{name}: remote command failed (exit {result.rc}):\n{_tail(result.stdout)}"
                              f"\n{_tail(result.stderr)}")
        return result.stdout, result.stderr

    # command:local:Command
    def local(self, name: str, reg: plan.Registration, old: Entry | None,
              step: plan.Step) -> tuple[str, dict[str, Any]]:
        return command_step(name, dict(reg.inputs), old.inputs if old else None, step,
                            lambda i, script, stdin: self._local(name, {**i, "stdin": stdin}, script))

    def _local(self, name: str, inputs: dict[str, Any], script: str | None) -> tuple[str, str]:
        if not script:
            return "", ""
        env = {**os.environ, **{k: str(v) for k, v in (inputs.get("environment") or {}).items()}}
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        self.note("local-command", LOCAL, name)
        interpreter = inputs.get("interpreter") or ["/bin/sh", "-c"]
        proc = subprocess.run([*interpreter, script], input=inputs.get("stdin"), capture_output=True, text=True,
                              env=env, cwd=inputs.get("dir") or str(REPO), timeout=900)
        if proc.returncode != 0:
            raise RunnerError(f"{name}: local command failed (exit {proc.returncode}):\n{_tail(proc.stdout)}"
                              f"\n{_tail(proc.stderr)}")
        return proc.stdout, proc.stderr

    # deletes
    def delete(self, key: str, entry: Entry) -> None:
        self.note("delete-start", entry.type, entry.name)
        try:
            if entry.retain_on_delete:
                pass  # retainOnDelete: the engine forgets it, the provider's delete never runs
            elif entry.type == RECORD:
                self._delete_record(entry)
            elif entry.type == REMOTE and entry.inputs.get("delete"):
                self._ssh(entry.name, entry.inputs, entry.inputs["delete"], None)
            elif entry.type == LOCAL and entry.inputs.get("delete"):
                self._local(entry.name, entry.inputs, entry.inputs["delete"])
        except (RunnerError, dnsupdate.DnsUpdateError, OSError) as error:
            if not (self.skip_unreachable and _unreachable(error)):
                raise
            self.note("delete-skipped", entry.type, entry.name, reason=str(error).splitlines()[0][:200])
        self.state.drop(key)
        self.note("delete", entry.type, entry.name)

    def delete_all(self, keys: list[str], unprotect: bool = False) -> None:
        """Delete dependents before what they depend on (ties: newest first); refuse protected ones first,
        as `pulumi destroy` does, unless unprotect (the lab's `pulumi state unprotect`)."""
        protected = [self.state.entries[k].name for k in keys if self.state.entries[k].protect]
        if protected and not unprotect:
            raise RunnerError(f"{', '.join(sorted(protected))}: protected (production stack), so the program "
                              "refuses to delete them; unprotect first (`mailhost lab down --unprotect`)")
        left = set(keys)
        while left:
            needed = {dep for k in left for dep in self.state.entries[k].deps}
            free = [k for k in left if self.state.entries[k].urn not in needed] or list(left)
            key = max(free, key=lambda k: self.state.entries[k].seq)
            self.delete(key, self.state.entries[key])
            left.discard(key)


def command_step(name: str, inputs: dict[str, Any], old_inputs: dict[str, Any] | None, step: plan.Step,
                 run: Callable[[dict[str, Any], str | None, str | None], tuple[str, str]],
                 ) -> tuple[str, dict[str, Any]]:
    """One pulumi-command step as the provider runs it: create runs `create`; update runs `update` (or
    `create` when empty) with the new inputs, so on the new host when the connection changed; a replace
    runs the old `delete` with the old stored inputs (so on the old host), before the new `create` when
    deleteBeforeReplace; else the engine deletes the old one at the end of the `up` (Applier.register)."""
    script = inputs.get("update") or inputs.get("create") if step.op == "update" else inputs.get("create")
    old_delete = old_inputs.get("delete") if step.op == "replace" and old_inputs is not None else None
    if old_inputs is not None and old_delete and step.delete_first:
        run(old_inputs, old_delete, None)
    stdout, stderr = run(inputs, script, inputs.get("stdin"))
    return f"{name}-{fingerprint(inputs)[:12]}", {"stdout": stdout, "stderr": stderr}


def _unreachable(error: Exception) -> bool:
    text = str(error)
    return any(s in text for s in ("exit 255", "timed out", "No route", "refused", "unreachable"))


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_program(applier: Applier, config: dict[str, str], secret_keys: list[str], program: Path) -> dict[str, Any]:
    """Run the program under the lab's mocks; return its stack outputs, secret ones as `[secret]`."""

    def call(token: str, args: dict[str, Any]) -> dict[str, Any]:
        if token == "aws:route53/getZone:getZone":
            wanted = str(args.get("name") or "").rstrip(".")
            for zone_id, zone in applier.zone_ids.items():
                if zone == wanted or zone_id == args.get("zoneId"):
                    return {"id": zone_id, "zoneId": zone_id, "name": zone}
            raise RunnerError(f"no lab zone named {wanted!r}")
        raise RunnerError(f"the lab cannot answer {token}")

    def register(request: engine_program.Request) -> tuple[str, dict[str, Any]]:
        try:
            return applier.register(request)
        except Exception as error:
            emit("error", type=request.type, name=request.name, message=str(error))
            raise

    return engine_program.run(program, PROJECT, STACK, config, secret_keys, register, call, preview=applier.preview)


def preview(lab: Lab, program: Path) -> tuple[plan.Plan, str]:
    """The plan `pulumi preview --diff` would show against the lab's state; runs nothing remote.
    Raises plan.ProtectedError (with the engine's words) when it replaces or deletes a protected resource."""
    state = State(lab.state_dir / "runner-state.json")
    applier = Applier(lab, state, preview=True)
    config, secret_keys = read_stack(lab.state_dir)
    run_program(applier, config, secret_keys, program)
    deployed = applier.deployed()
    steps = [*applier.steps, *plan.deletions(deployed, plan.claimed(applier.registrations.values(), deployed))]
    result = plan.Plan(tuple(steps))
    problems = plan.protect_problems(result.steps, deployed)
    text = show.render(result, applier.registrations, deployed, STACK)
    if problems:
        raise plan.ProtectedError(text + "\nerror: " + "\nerror: ".join(problems))
    return result, text


def up(lab: Lab, program: Path) -> dict[str, Any]:
    """Like `pulumi up`: the preview first (printed; a protect refusal stops here, before any step), then apply."""
    planned, text = preview(lab, program)
    emit("plan", text=text, counts=planned.counts(), steps=_steps(planned))
    state = State(lab.state_dir / "runner-state.json")
    applier = Applier(lab, state)
    config, secret_keys = read_stack(lab.state_dir)
    started = time.monotonic()
    outputs = run_program(applier, config, secret_keys, program)
    (lab.state_dir / "stack-outputs.json").write_text(json.dumps(outputs, indent=2, sort_keys=True, default=str))
    gone = [k for k in state.entries if k not in applier.seen]
    applier.delete_all(gone)
    return summary(applier, started)


def _steps(planned: plan.Plan) -> list[dict[str, str]]:
    """The plan's provider steps for tests and tools: op, type, name (no inputs: they may hold secrets)."""
    return [{"op": s.op, "type": s.type, "name": s.name} for s in planned.steps
            if not s.type.startswith("jira-mailhost:")]


def down(lab: Lab, skip_unreachable: bool, unprotect: bool = False) -> dict[str, Any]:
    state = State(lab.state_dir / "runner-state.json")
    applier = Applier(lab, state, skip_unreachable=skip_unreachable)
    started = time.monotonic()
    applier.delete_all(list(state.entries), unprotect=unprotect)
    return summary(applier, started)


def summary(applier: Applier, started: float) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for action in applier.actions:
        counts[action["action"]] = counts.get(action["action"], 0) + 1
    remote = [a["name"] for a in applier.actions if a["action"] == "remote-command"]
    steps = ("create", "update", "replace", "delete")
    done = [[a["action"], a["name"]] for a in applier.actions if a["action"] in steps]  # in the order they ran
    return {"counts": counts, "remote_commands": remote, "seconds": round(time.monotonic() - started, 2),
            "resources": len(applier.state.entries), "done": done}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["up", "down", "preview"])
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--program", type=Path, default=REPO / "__main__.py")
    parser.add_argument("--skip-unreachable", action="store_true",
                        help="down: forget resources whose host or DNS is gone (after a crash)")
    parser.add_argument("--unprotect", action="store_true", help="down: delete protected resources too")
    args = parser.parse_args(argv)
    lab = Lab(args.state)
    try:
        if args.action == "preview":
            planned, text = preview(lab, args.program)
            emit("plan", text=text, counts=planned.counts(), steps=_steps(planned))
            emit("done", counts=planned.counts(), remote_commands=[], seconds=0, resources=len(planned.steps))
            return 0
        result = (up(lab, args.program) if args.action == "up"
                  else down(lab, args.skip_unreachable, args.unprotect))
    except BaseException as error:  # the SDK re-raises whatever a resource raised
        message = str(error) or type(error).__name__
        if not isinstance(error, RunnerError | dnsupdate.DnsUpdateError):
            message += "\n" + "".join(traceback.format_exception_only(type(error), error)).strip()
        emit("failed", message=message)
        return 1
    (args.state / "runner-last.json").write_text(json.dumps(result))
    emit("done", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

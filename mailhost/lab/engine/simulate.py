"""The engine without a cloud: `up` and `preview` of the program against a state held in memory.

`up` plans each registration (plan.py), keeps the new state and answers with plausible outputs
for what a provider computes (keys are real, addresses from the documentation ranges);
`preview` answers as the engine does at preview (plan.preview_outputs) and changes nothing.
The change matrix (matrix.py) and the program tests use it; the lab runner applies the same
plans to real software instead.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from mailhost.lab.engine import plan
from mailhost.lab.engine import program as engine_program
from mailhost.lab.engine.providers import UNKNOWN
from mailhost.publish import previewed

REPO = Path(__file__).resolve().parents[3]
AMI = {"id": "ami-0123456789abcdef0", "name": "debian-12-amd64-20261101"}


@cache
def _key(name: str, algorithm: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if algorithm == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


def computed_outputs(type_: str, name: str, inputs: dict[str, Any], generation: int) -> dict[str, Any]:
    """What the provider adds on create (generation counts replacements, so a new instance differs)."""
    n = int(hashlib.sha256(f"{name}/{generation}".encode()).hexdigest()[:4], 16) % 200 + 20
    if type_ == "tls:index/privateKey:PrivateKey":
        out = tls_outputs(_key(f"{name}/{generation}", str(inputs.get("algorithm"))))
        out["id"] = out.pop("_id")
        return out
    if type_ == "aws:ec2/instance:Instance":
        return {"id": f"i-{n:017x}", "privateIp": f"10.0.0.{n}",
                "ipv6Addresses": [f"2001:db8:a::{n:x}"] if inputs.get("ipv6AddressCount") else []}
    if type_ == "aws:ec2/eip:Eip":
        return {"id": f"eipalloc-{n:017x}", "allocationId": f"eipalloc-{n:017x}", "publicIp": f"203.0.113.{n}"}
    if type_ == "aws:ec2/securityGroup:SecurityGroup":
        return {"id": f"sg-{n:017x}"}
    if type_ == "aws:route53/record:Record":
        return {"fqdn": str(inputs.get("name", "")).rstrip(".")}
    if type_ == "aws:ec2/eipDomainName:EipDomainName":
        return {"ptrRecord": f"{inputs.get('domainName', '')}."}
    if type_.startswith("command:"):
        return {"stdout": f"ran {name} #{generation}", "stderr": ""}
    return {}


def tls_outputs(key: Any) -> dict[str, str]:
    """The outputs pulumi_tls's PrivateKey has, for an RSA or Ed25519 key (plus `_id`, its id)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    none = serialization.NoEncryption()
    pem_format = (serialization.PrivateFormat.TraditionalOpenSSL if isinstance(key, rsa.RSAPrivateKey)
                  else serialization.PrivateFormat.PKCS8)
    public = key.public_key()
    openssh_pub = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        "_id": hashlib.sha1(der).hexdigest(),
        "privateKeyPem": key.private_bytes(serialization.Encoding.PEM, pem_format, none).decode(),
        "privateKeyOpenssh": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                               none).decode(),
        "privateKeyPemPkcs8": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                none).decode(),
        "publicKeyPem": public.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
        "publicKeyOpenssh": openssh_pub + "\n",
        "publicKeyFingerprintSha256": "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode(),
    }


@dataclass
class Simulator:
    state: dict[str, plan.Deployed] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)
    ami: dict[str, str] = field(default_factory=lambda: dict(AMI))  # what getAmi answers today
    stack: str = "dev"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, values: dict[str, Any], secrets: dict[str, str], stack: str, preview: bool,
            program: Path = REPO / "__main__.py", skip_preview: bool = False,
            ) -> tuple[plan.Plan, dict[str, plan.Registration], dict[str, Any]]:
        """One `pulumi preview` or `pulumi up` (after its preview): (the plan, the registrations by URN, the
        stack outputs).  Raises plan.ProtectedError before changing the state when the plan is refused.

        skip_preview: `pulumi up --skip-preview` (or the Automation API's up): no preview ran, so a protected
        replace fails at its own step and a protected delete in the delete phase, as plan.StepFailed, with
        the steps before it done and kept in the state."""

        steps: list[plan.Step] = []
        regs: dict[str, plan.Registration] = {}
        before = dict(self.state)
        new_state: dict[str, plan.Deployed] = {}
        # Route53 record sets and who holds them: every one in the state until the deletes at the end.
        held = {key: urn for urn, d in before.items() if (key := plan.record_set(d.type, d.inputs)) is not None}
        collisions: dict[str, str] = {}
        failed: list[plan.StepFailed] = []

        def register(request: engine_program.Request) -> tuple[str, dict[str, Any]]:
            reg = request.registration
            old = plan.find_old(reg, before)
            reg = plan.as_sent(reg, old)
            step = plan.plan_one(reg, old)
            with self.lock:
                steps.append(step)
                regs[reg.urn] = reg
                if old is not None and old.urn != reg.urn and not preview:  # an alias: the state moves over
                    self.generations.setdefault(reg.urn, self.generations.get(old.urn, 1))
            if preview:
                return reg.urn, plan.preview_outputs(step, reg, old.outputs if old else None)
            with self.lock:  # Route53 refuses a CREATE for a set another resource holds (judged in _run_waves)
                key = plan.record_set(reg.type, reg.inputs) if step.op in ("create", "replace") else None
                if key is not None and plan.creates_only(reg.inputs) and held.get(key, reg.urn) != reg.urn:
                    collisions[reg.urn] = plan.record_exists_message(key)
                elif key is not None:
                    held[key] = reg.urn
            outputs = dict(old.outputs) if old is not None else {}
            if step.op in ("create", "replace"):
                with self.lock:
                    generation = self.generations[reg.urn] = self.generations.get(reg.urn, 0) + 1
                outputs = {**reg.inputs, **computed_outputs(reg.type, reg.name, dict(reg.inputs), generation)}
            elif step.op == "update":
                outputs = {**outputs, **reg.inputs}
                if reg.type.startswith("command:"):
                    outputs.update(computed_outputs(reg.type, reg.name, dict(reg.inputs), self.generations[reg.urn]))
            with self.lock:
                new_state[reg.urn] = plan.Deployed(reg.urn, reg.type, reg.name, reg.inputs, outputs, reg.protect,
                                                   reg.retain_on_delete, reg.dependencies, reg.secret_inputs)
            return reg.urn, outputs

        def call(token: str, args: dict[str, Any]) -> dict[str, Any]:
            if token == "aws:ec2/getAmi:getAmi":
                return dict(self.ami)
            if token == "aws:ec2/getSubnet:getSubnet":
                return {"id": args["id"], "vpcId": "vpc-0123456789abcdef0"}
            if token == "aws:route53/getZone:getZone":
                return {"id": "ZLOOKEDUP", "zoneId": "ZLOOKEDUP", "name": args["name"]}
            raise RuntimeError(f"the simulator cannot answer {token}")

        config, secret_keys = engine_program.stack_config("jira-mailhost", values, secrets)
        if not preview and not skip_preview:  # what `pulumi up`'s preview leaves for its update (previewed.py)
            previewed.note_preview(previewed.config_digest("jira-mailhost", stack, config))
        outputs = engine_program.run(program, "jira-mailhost", stack, config, secret_keys, register, call, preview)
        deletes = plan.deletions(before, plan.claimed(regs.values(), before))
        steps += deletes
        result = plan.Plan(tuple(steps))
        if not preview:  # the steps in the engine's order: a refused one stops the up; the program ran to its end
            def protected(step: plan.Step) -> str | None:
                problems = plan.protect_problems([step], before) if skip_preview else []
                return problems[0] if problems else None

            changes = [s for s in steps[:len(steps) - len(deletes)] if s.op != "same"]
            waves = plan.step_waves(changes, {urn: reg.dependencies for urn, reg in regs.items()})
            done = self._run_waves(waves, lambda step: collisions.get(step.urn) or protected(step), [], failed)
            ran = {s.urn for s in done} | {s.urn for s in steps if s.op == "same"}
            new_state = {urn: d for urn, d in new_state.items() if urn in ran}
            if not failed:
                self._run_waves(plan.delete_waves(deletes, before), protected, done, failed)
        problems = [] if skip_preview else plan.protect_problems(result.steps, before)
        if problems:
            raise plan.ProtectedError("\n".join(problems))
        if failed:  # what ran stays: the old entries (less what was deleted), the new ones written before it
            gone = {s.urn for s in failed[0].done if s.op == "delete"}
            kept = {urn: d for urn, d in before.items() if urn not in new_state and urn not in gone}
            self.state = {**kept, **new_state}
            raise failed[0]
        if not preview:
            self.state = new_state
        return result, regs, outputs


    @staticmethod
    def _run_waves(waves: list[list[plan.Step]], refusal: Callable[[plan.Step], str | None], done: list[plan.Step],
                   failed: list[plan.StepFailed]) -> list[plan.Step]:
        """One phase (updates, then deletes) wave by wave: a step the provider refuses (a Route53 CREATE
        for a held set; without a preview, a protected replace, or a protected delete at DeleteStep.Apply)
        fails, the rest of its wave still runs, and no later wave starts.  Returns `done` with what ran."""
        for wave in waves:
            refused = [(step, refusal(step)) for step in wave]
            done = [*done, *(step for step, why in refused if why is None)]
            for step, why in refused:
                if why is not None:
                    failed.append(plan.StepFailed(step, why, tuple(done)))
                    return done
        return done

def unknown(value: Any) -> bool:
    return value == UNKNOWN

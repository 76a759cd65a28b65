"""Runs __main__.py under Pulumi's mocks and records what the engine would be asked to do.

The mocks answer like the engine and providers: plausible outputs on `up`, and on a
preview no outputs for what a provider only knows after creating (addresses, keys), so
an `apply` over those never runs.  Every registration is recorded with its options
(protect, dependencies, parent) straight from the request the engine would get.
"""

from __future__ import annotations

import contextlib
import runpy
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pulumi.runtime import mocks as pulumi_mocks

from mailhost.lab.engine import simulate
from mailhost.lab.engine.program import alias_urns, stack_config, usable_event_loop
from mailhost.lab.engine.providers import UNKNOWN
from mailhost.lab.runner import SECRET_SIG, unwrap
from mailhost.publish import previewed

ROOT = Path(__file__).resolve().parents[2]


@cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ed_key(name: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def admin_key_openssh() -> str:
    return ed_key("admin").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


def tls_outputs(name: str, algorithm: str) -> dict[str, str]:
    """What pulumi_tls returns, from the lab runner's own helper, for a key cached by name."""
    outputs = simulate.tls_outputs(rsa_key(name) if algorithm == "RSA" else ed_key(name))
    outputs.pop("_id")
    return outputs


@dataclass
class Registration:
    type: str
    name: str
    inputs: dict[str, Any]
    urn: str = ""
    protect: bool = False
    parent: str = ""
    dependencies: list[str] = field(default_factory=list)
    delete_before_replace: bool = False
    secret_outputs: list[str] = field(default_factory=list)
    ignore_changes: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)


class EngineMocks(pulumi.runtime.Mocks):
    def __init__(self, preview: bool):
        self.preview = preview
        self.lock = threading.Lock()
        self.created: dict[str, dict[str, Any]] = {}
        self.eips = 0

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = unwrap(args.inputs)
        outputs = dict(inputs)
        if args.typ == "tls:index/privateKey:PrivateKey":
            if not self.preview:
                outputs.update(tls_outputs(args.name, inputs["algorithm"]))
        elif args.typ == "aws:ec2/instance:Instance":
            if not self.preview:
                outputs["ipv6Addresses"] = ["2001:db8:a::10"] if inputs.get("ipv6AddressCount") else []
                outputs["privateIp"] = "10.0.0.10"
        elif args.typ == "aws:ec2/eip:Eip":
            if not self.preview:
                with self.lock:
                    self.eips += 1
                    n = self.eips
                outputs.update(publicIp=f"203.0.113.{100 + n}", allocationId=f"eipalloc-{n:017x}")
        elif (args.typ == "command:remote:Command" or args.typ == "command:local:Command") and not self.preview:
            outputs.update(stdout=f"applied {args.name}", stderr="")
        with self.lock:
            self.created[args.name] = outputs
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        if args.token == "aws:ec2/getAmi:getAmi":
            return {"id": "ami-0123456789abcdef0", "name": "debian-12-amd64-20261101"}
        if args.token == "aws:ec2/getSubnet:getSubnet":
            return {"id": args.args["id"], "vpcId": "vpc-0123456789abcdef0"}
        if args.token == "aws:route53/getZone:getZone":
            return {"id": "ZLOOKEDUP", "zoneId": "ZLOOKEDUP", "name": args.args["name"]}
        return {}


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock engine, also keeping the options each registration asked for."""

    def __init__(self, mocks: EngineMocks):
        super().__init__(mocks)
        self.lock = threading.Lock()
        self.registrations: list[Registration] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = pulumi.runtime.rpc.deserialize_properties(request.object, keep_unknowns=True)
            with self.lock:
                self.registrations.append(Registration(
                    type=request.type, name=request.name, inputs=raw, urn=response.urn,
                    protect=bool(request.protect), parent=request.parent,
                    dependencies=list(request.dependencies),
                    delete_before_replace=bool(request.deleteBeforeReplace),
                    secret_outputs=list(request.additionalSecretOutputs),
                    ignore_changes=list(request.ignoreChanges),
                    aliases=alias_urns(request, self.make_urn),
                ))
        return response


def has_unknown(value: Any) -> bool:
    """Whether a value (as the engine got it) holds something only known after `up`."""
    if isinstance(value, dict):
        return any(has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(has_unknown(v) for v in value)
    return value == UNKNOWN or type(value).__name__ == "Unknown"


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and SECRET_SIG in value


@dataclass
class Run:
    monitor: RecordingMonitor
    mocks: EngineMocks
    program: dict[str, Any]

    def all(self, type_: str) -> list[Registration]:
        return [r for r in self.monitor.registrations if r.type == type_]

    def one(self, name: str) -> Registration:
        """The provider resource of that name (components share names with their children)."""
        found = [r for r in self.monitor.registrations if r.name == name and not r.type.startswith("jira-mailhost:")]
        assert len(found) == 1, f"{name}: {[r.name for r in self.monitor.registrations]}"
        return found[0]

    def urn(self, name: str) -> str:
        return self.one(name).urn


def configure(values: dict[str, Any], secrets: dict[str, str], preview: bool, stack: str = "staging",
              skip_preview: bool = False) -> Run:
    """Install fresh mocks and the stack config; do this before entering @pulumi.runtime.test.
    An update (preview False) is `pulumi up`'s, after its preview, unless skip_preview."""
    mocks = EngineMocks(preview)
    monitor = RecordingMonitor(mocks)
    usable_event_loop()
    pulumi.runtime.set_mocks(mocks, project="jira-mailhost", stack=stack, preview=preview, monitor=monitor)
    config, secret_keys = stack_config("jira-mailhost", values, secrets)
    pulumi.runtime.set_all_config(config, secret_keys)
    if not preview and not skip_preview:
        note_up_preview(stack, config)
    return Run(monitor, mocks, {})


def note_up_preview(stack: str, config: dict[str, str]) -> None:
    """What `pulumi up`'s own preview run of the program leaves (publish/previewed.py)."""
    previewed.note_preview(previewed.config_digest("jira-mailhost", stack, config))


def execute(run: Run) -> Run:
    """Execute __main__.py in the configured runtime; call inside @pulumi.runtime.test."""
    with contextlib.chdir(ROOT):  # Pulumi runs the program in the project directory
        run.program.update(runpy.run_path(str(ROOT / "__main__.py"), run_name="jira_mailhost_program"))
    return run


def run_program(values: dict[str, Any], secrets: dict[str, str] | None = None, preview: bool = False,
                stack: str = "staging", skip_preview: bool = False) -> Run:
    """Run the whole program to completion (all registrations done) and return the record."""
    secrets = {"sshPrivateKey": admin_key_openssh()} if secrets is None else secrets
    run = configure(values, secrets, preview, stack, skip_preview)

    @pulumi.runtime.test
    def program() -> None:
        execute(run)

    program()
    return run

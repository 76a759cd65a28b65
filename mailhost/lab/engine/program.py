"""Run the Pulumi program under the SDK's mocks and hand each registration, with the options the
engine would read from its request, to a callback that decides (and maybe applies) it.

The mocks API gives `new_resource` only type, name and inputs; the engine also reads protect,
deleteBeforeReplace, replaceOnChanges, ignoreChanges, retainOnDelete, dependencies and
additionalSecretOutputs, so a monitor subclass reads them from the RegisterResource request.
At preview (`preview=True`) inputs still unknown arrive as the engine's UNKNOWN marker, and
outputs the callback leaves out stay unknown to the program, as the engine does.
One program run per `run` call; the SDK's global state is reset by `set_mocks` each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import runpy
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailhost.lab.engine.plan import Registration
from mailhost.lab.engine.providers import UNKNOWN

SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's wire marker of a secret value


def unwrap(value: Any) -> Any:
    """Drop Pulumi's secret wrappers (anywhere in the tree); the values stay in memory only."""
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return unwrap(value.get("value"))
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def holds_secret(value: Any) -> bool:
    """Whether a raw input (as the engine gets it) is, or contains, a Pulumi secret."""
    if isinstance(value, dict):
        return SECRET_SIG in value or any(holds_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_secret(v) for v in value)
    return False


def with_unknowns(value: Any) -> Any:
    """The SDK's Unknown object (keep_unknowns) as the engine's marker string, so inputs stay JSON."""
    if isinstance(value, dict):
        return {k: with_unknowns(v) for k, v in value.items()}
    if isinstance(value, list):
        return [with_unknowns(v) for v in value]
    return UNKNOWN if type(value).__name__ == "Unknown" else value


@dataclass(frozen=True)
class Request:
    registration: Registration
    custom: bool
    secret_outputs: tuple[str, ...] = field(default=())

    @property
    def type(self) -> str:
        return self.registration.type

    @property
    def name(self) -> str:
        return self.registration.name


def alias_urns(request: Any, make_urn: Callable[[str, str, str], str]) -> list[str]:
    """A RegisterResource request's alias URNs as the engine derives them: a spec's name, type and parent
    default to the resource's own."""
    out = list(request.aliasURNs)
    for alias in request.aliases:
        if alias.urn:
            out.append(alias.urn)
            continue
        spec = alias.spec
        parent = "" if spec.noParent else (spec.parentUrn or request.parent)
        out.append(make_urn(parent, spec.type or request.type, spec.name or request.name))
    return out


def stack_config(project: str, values: dict[str, Any], secrets: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Settings and secrets as `pulumi.runtime.set_all_config` takes them: full keys, non-string values as
    JSON text (as Pulumi passes structured config), and which keys are secret."""
    import json

    config = {f"{project}:{k}": (v if isinstance(v, str) else json.dumps(v)) for k, v in values.items()}
    config.update({f"{project}:{k}": v for k, v in secrets.items()})
    return config, [f"{project}:{k}" for k in secrets]


Register = Callable[[Request], tuple[str, dict[str, Any]]]
Call = Callable[[str, dict[str, Any]], dict[str, Any]]


def run(program: Path, project: str, stack: str, config: dict[str, str], secret_keys: list[str],
        register: Register, call: Call, preview: bool) -> dict[str, Any]:
    """Run `program`; return its stack outputs (secret ones as `[secret]`, unknown ones as UNKNOWN)."""
    import pulumi
    import pulumi.runtime
    from pulumi.runtime import rpc
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
            raise AssertionError("Monitor.RegisterResource answers every registration")

        def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
            return call(args.token, dict(args.args)), []

    class Monitor(MockMonitor):
        def RegisterResource(self, request: Any) -> Any:
            from pulumi.runtime.proto import resource_pb2

            urn = self.make_urn(request.parent, request.type, request.name)
            if request.type == "pulumi:pulumi:Stack":
                return resource_pb2.RegisterResourceResponse(urn=urn)
            raw = rpc.deserialize_properties(request.object, keep_unknowns=True)
            registration = Registration(
                urn=urn, type=request.type, name=request.name, inputs=with_unknowns(unwrap(raw)),
                protect=bool(request.protect), delete_before_replace=bool(request.deleteBeforeReplace),
                replace_on_changes=tuple(request.replaceOnChanges), ignore_changes=tuple(request.ignoreChanges),
                retain_on_delete=bool(request.retainOnDelete), dependencies=tuple(request.dependencies),
                secret_inputs=tuple(sorted(k for k, v in raw.items() if holds_secret(v))),
                aliases=tuple(alias_urns(request, self.make_urn)),
            )
            rid, outputs = register(Request(registration, bool(request.custom),
                                            tuple(request.additionalSecretOutputs)))
            obj = _sync_await(rpc.serialize_properties(outputs, {}))
            self.resources[urn] = MockMonitor.ResourceRegistration(urn, rid, outputs)
            return resource_pb2.RegisterResourceResponse(urn=urn, id=rid, object=obj)

    mocks = Mocks()
    usable_event_loop()
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=preview, monitor=Monitor(mocks))
    pulumi.runtime.set_all_config(config, secret_keys)
    if str(program.parent) not in sys.path:
        sys.path.insert(0, str(program.parent))
    exported: dict[str, Any] = {}

    def program_run() -> None:
        runpy.run_path(str(program), run_name="__main__")
        root = pulumi.runtime.settings.get_root_resource()
        outputs = dict(getattr(root, "outputs", None) or {})
        names = sorted(outputs)
        values = [pulumi.Output.from_input(outputs[n]) for n in names]
        exported.update(dict.fromkeys(names, UNKNOWN))  # what never resolves (preview unknowns) stays so

        def keep(resolved: list[Any]) -> None:
            plain, secret = resolved[:len(names)], resolved[len(names):]
            exported.update({n: "[secret]" if s else v for n, v, s in zip(names, plain, secret, strict=True)})

        pulumi.Output.all(*values, *[v.is_secret() for v in values]).apply(keep)

    with contextlib.chdir(program.parent):  # as Pulumi's language host runs it: in the project directory
        _sync_await(run_pulumi_func(program_run))
    return exported


def usable_event_loop() -> None:
    """Pulumi's runtime makes its futures on the current event loop.  An earlier asyncio.run() in the same
    process (verify's lookups, a lab tool) ends by setting none, and Python 3.11 then refuses to make one:
    "There is no current event loop".  The Pulumi CLI starts each program in a fresh process; here, a fresh
    loop stands in for that.  Call it before pulumi.runtime.set_mocks."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        loop = None
    if loop is None or loop.is_closed():
        asyncio.set_event_loop(asyncio.new_event_loop())

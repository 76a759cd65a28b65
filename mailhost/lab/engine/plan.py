"""Plan a deployment the way the Pulumi engine does: same, create, update, replace or delete.

Pure: (what the last `up` left, what the program registers now with its options) → steps.
The rules follow the engine's step generator and the providers' Diff (see providers.py for
the facts and their sources):

- ignoreChanges puts the old value back at those paths before anything is compared;
- a changed input listed as force-new by the provider, or matched by replaceOnChanges, makes
  a replace (create the new one first, then delete the old, unless deleteBeforeReplace);
  at preview an input that is still unknown counts as changed, so an unknown force-new input
  plans a replace too;
- any other change is an update, naming its inputs (and whether the provider restarts for it);
- what the state holds and the program no longer registers is deleted, dependents first;
- a replace or delete of a resource marked protect stops the whole `up` before any step.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from mailhost.lab.engine.providers import UNKNOWN, facts_for

Op = Literal["same", "create", "update", "replace", "delete"]


@dataclass(frozen=True)
class Registration:
    """One resource as the program asks for it (inputs unwrapped of secrets; unknowns as UNKNOWN)."""

    urn: str
    type: str
    name: str
    inputs: Mapping[str, Any]
    protect: bool = False
    delete_before_replace: bool = False
    replace_on_changes: tuple[str, ...] = ()
    ignore_changes: tuple[str, ...] = ()
    retain_on_delete: bool = False
    dependencies: tuple[str, ...] = ()
    secret_inputs: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # URNs this resource had before (the engine moves their state to it)


@dataclass(frozen=True)
class Deployed:
    """One resource as the state remembers it."""

    urn: str
    type: str
    name: str
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any] = field(default_factory=dict)
    protect: bool = False
    retain_on_delete: bool = False
    dependencies: tuple[str, ...] = ()
    secret_inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    op: Op
    urn: str
    type: str
    name: str
    changed: tuple[str, ...] = ()  # input paths that differ (update, replace)
    replace_because: tuple[str, ...] = ()  # the paths that forced the replace
    delete_first: bool = False  # replace: delete the old one before creating the new one
    restarts: bool = False  # update: the provider stops and starts the resource for it
    protect: bool = False
    retain: bool = False  # delete: the provider's delete is skipped (retainOnDelete)
    previous_urn: str = ""  # found under an alias: the URN its state had (protect is judged on that state)


class ProtectedError(RuntimeError):
    """The engine's refusal: it stops the whole `up` (and the preview) before any step runs."""


class StepFailed(RuntimeError):
    """A provider refused one step of an `up`: the engine stops there, and what ran before stays done
    (creates and updates are in the state; no delete ran, as deletes come last)."""

    def __init__(self, step: Step, message: str, done: tuple[Step, ...]):
        super().__init__(message)
        self.step = step
        self.done = done


RECORD = "aws:route53/record:Record"


def record_set(type_: str, inputs: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """The Route53 record set a Record resource holds, (zone id, name, type): Route53 keys record sets so,
    case-insensitively; the provider stores the name without its final dot.  None when not a record or
    not known yet."""
    if type_ != RECORD:
        return None
    zone, name, rtype = inputs.get("zoneId"), inputs.get("name"), inputs.get("type")
    if not all(isinstance(v, str) and v and v != UNKNOWN for v in (zone, name, rtype)):
        return None
    return str(zone), str(name).rstrip(".").lower(), str(rtype)


def creates_only(inputs: Mapping[str, Any]) -> bool:
    """A new record is a Route53 CREATE, refused when its set exists, unless allowOverwrite is true (then an
    UPSERT): terraform-provider-aws record.go, allow_overwrite defaults to false."""
    return inputs.get("allowOverwrite") is not True


def record_exists_message(key: tuple[str, str, str]) -> str:
    """Route53's refusal, as the provider reports it."""
    _, name, rtype = key
    return (f"creating Route53 Record: InvalidChangeBatch: [Tried to create resource record set "
            f"[name='{name}.', type='{rtype}'] but it already exists]")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Property paths as the engine writes them (`a.b[0].c`) to leaf values; an empty container is a leaf."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for index, inner in enumerate(value):
            out.update(flatten(inner, f"{prefix}[{index}]"))
        return out
    return {prefix: value}


def path_matches(path: str, pattern: str) -> bool:
    """`pattern` names `path` or a container of it; `[*]` and `*` match any index or key."""
    glob = pattern.replace("[*]", "[[]*[]]")
    return any(fnmatch.fnmatchcase(candidate, glob) for candidate in _prefixes(path)) or pattern == "*"


def _prefixes(path: str) -> Iterable[str]:
    """`a.b[0].c` → a, a.b, a.b[0], a.b[0].c."""
    for index, char in enumerate(path):
        if char in ".[" and index:
            yield path[:index]
    yield path


_MAP_KEY = re.compile(r'(?P<top>[A-Za-z_][A-Za-z0-9_]*)\["(?P<key>[^"\\]+)"\]')


def with_ignored_kept(new: Mapping[str, Any], old: Mapping[str, Any], ignore: Iterable[str]) -> dict[str, Any]:
    """The engine's ignoreChanges (PropertyPath.Reset): the old value stands at each ignored path, and a path
    the old inputs lack is deleted from the new ones. Paths are a top-level input or one map key in it
    (`tags["k"]`); deeper paths are kept whole at their top-level input, which ignores more, never less."""
    out = dict(new)
    for pattern in ignore:
        keyed = _MAP_KEY.fullmatch(pattern)
        if keyed and isinstance(out.get(keyed["top"]), Mapping):
            top, key = keyed["top"], keyed["key"]
            inner = dict(out[top])
            before = old.get(top)
            if isinstance(before, Mapping) and key in before:
                inner[key] = before[key]
            else:
                inner.pop(key, None)
            out[top] = inner
            continue
        top = pattern.split(".")[0].split("[")[0]
        if top in old:
            out[top] = old[top]
        else:
            out.pop(top, None)
    return out


def changed_paths(new: Mapping[str, Any], old: Mapping[str, Any]) -> tuple[str, ...]:
    """Every leaf path whose value differs, or is unknown now (the engine cannot know it stays)."""
    flat_new, flat_old = flatten(dict(new)), flatten(dict(old))
    paths = set()
    for path in {*flat_new, *flat_old}:
        value = flat_new.get(path)
        if value == UNKNOWN or _canonical(value) != _canonical(flat_old.get(path)):
            paths.add(path)
    return tuple(sorted(paths))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def as_sent(reg: Registration, old: Deployed | None) -> Registration:
    """The registration with ignoreChanges applied, as the engine hands it to the provider (and so to the state
    and the preview's outputs); unchanged for a create, where ignoreChanges does not apply."""
    return reg if old is None else replace(reg, inputs=with_ignored_kept(reg.inputs, old.inputs, reg.ignore_changes))


def plan_one(reg: Registration, old: Deployed | None) -> Step:
    """The step for one registered resource."""
    base = Step("create", reg.urn, reg.type, reg.name, protect=reg.protect)
    if old is None:
        return base
    if old.urn != reg.urn:
        base = replace(base, previous_urn=old.urn)
    facts = facts_for(reg.type)
    inputs = with_ignored_kept(reg.inputs, old.inputs, reg.ignore_changes)
    changed = changed_paths(inputs, old.inputs)
    if not changed:
        return replace(base, op="same")
    forced = tuple(p for p in changed if any(path_matches(p, f) for f in facts.force_new)
                   or any(path_matches(p, r) for r in reg.replace_on_changes))
    if forced:
        return replace(base, op="replace", changed=changed, replace_because=forced,
                       delete_first=reg.delete_before_replace or facts.delete_before_replace)
    restarts = any(path_matches(p, r) for p in changed for r in facts.restart_on)
    return replace(base, op="update", changed=changed, restarts=restarts)


def protect_problems(steps: Iterable[Step], state: Mapping[str, Deployed]) -> list[str]:
    """The engine's refusals, in its words (pulumi v3.259 step_generator.go continueStepsFromDiff, step.go
    DeleteStep.Apply): a replace is refused when both the state and the program mark the resource protect
    (so dropping `protect` in the program allows it in the same run); a delete when the state does.
    Both fail the preview too, so a `pulumi up`, which previews first, stops before any step."""
    problems = []
    for step in steps:
        old = state.get(step.urn) or (state.get(step.previous_urn) if step.previous_urn else None)
        if old is None or not old.protect:
            continue
        if step.op == "replace" and step.protect:
            problems.append(f"unable to replace resource \"{step.urn}\"\nas it is currently marked for protection. "
                            "To unprotect the resource, remove the `protect` flag from the resource in your "
                            "Pulumi program and run `pulumi up`")
        elif step.op == "delete":  # checked before retainOnDelete is looked at
            problems.append(f"resource \"{step.urn}\" cannot be deleted\nbecause it is protected. To unprotect the "
                            "resource, either remove the `protect` flag from the resource in your Pulumi program "
                            f"and run `pulumi up`, or use the command:\n`pulumi state unprotect '{step.urn}'`")
    return problems


def _waves(steps: Iterable[Step], first: Callable[[str], Iterable[str]]) -> list[list[Step]]:
    """Steps in waves: each after every step `first(urn)` names; one wave's steps in URN order (the engine
    runs them in parallel; the model gives one answer, not a race)."""
    by_urn = {step.urn: step for step in steps}
    level: dict[str, int] = {}

    def depth(urn: str, seen: frozenset[str]) -> int:
        if urn not in level:
            before = [u for u in first(urn) if u in by_urn and u not in seen]
            level[urn] = 1 + max((depth(u, seen | {urn}) for u in before), default=-1)
        return level[urn]

    waves: dict[int, list[Step]] = {}
    for urn in sorted(by_urn):
        waves.setdefault(depth(urn, frozenset()), []).append(by_urn[urn])
    return [waves[k] for k in sorted(waves)]


def step_waves(steps: Iterable[Step], dependencies: Mapping[str, Iterable[str]]) -> list[list[Step]]:
    """Creates and updates as the engine can run them: a step after every step it depends on."""
    return _waves(steps, lambda urn: dependencies.get(urn, ()))


def delete_waves(deletes: Iterable[Step], state: Mapping[str, Deployed]) -> list[list[Step]]:
    """The engine's delete phase: dependents first; after a failed step no later wave starts (pulumi
    step_executor: ExecuteParallel over the delete antichains)."""
    deletes = list(deletes)
    return _waves(deletes, lambda urn: [d.urn for d in deletes if urn in state[d.urn].dependencies])


def find_old(reg: Registration, state: Mapping[str, Deployed]) -> Deployed | None:
    """The state of this resource: under its URN, or under one of its aliases (a rename without a replace)."""
    if reg.urn in state:
        return state[reg.urn]
    return next((state[alias] for alias in reg.aliases if alias in state), None)


def claimed(regs: Iterable[Registration], state: Mapping[str, Deployed]) -> set[str]:
    """Every state URN some registration takes over: its own, or the alias it was found under."""
    out = set()
    for reg in regs:
        old = find_old(reg, state)
        out.add(reg.urn)
        if old is not None:
            out.add(old.urn)
    return out


def deletions(state: Mapping[str, Deployed], registered: Iterable[str]) -> list[Step]:
    """Delete steps for what the program no longer registers: a resource after everything that depends on it."""
    gone = {urn: entry for urn, entry in state.items() if urn not in set(registered)}
    order: list[Step] = []
    left = dict(gone)
    while left:
        needed = {dep for entry in left.values() for dep in entry.dependencies}
        free = [urn for urn in left if urn not in needed] or list(left)
        urn = sorted(free)[0]
        entry = left.pop(urn)
        order.append(Step("delete", urn, entry.type, entry.name, protect=entry.protect,
                          retain=entry.retain_on_delete))
    return order


def preview_outputs(step: Step, reg: Registration, old_outputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the engine hands the program at preview: the stored outputs of an unchanged resource; for
    an update the stored outputs with the new known inputs over them, less what the provider recomputes
    on update; for a create or replace only the known inputs (all it computes stays unknown)."""
    known = {k: v for k, v in reg.inputs.items() if not _holds_unknown(v)}
    if old_outputs is None or step.op in ("create", "replace"):
        return known
    if step.op == "same":
        return dict(old_outputs)
    recomputed = set(facts_for(reg.type).unknown_after_update)
    kept = {k: v for k, v in old_outputs.items() if k not in recomputed and k not in reg.inputs}
    return {**kept, **known}


def _holds_unknown(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_holds_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_unknown(v) for v in value)
    return bool(value == UNKNOWN)


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for step in self.steps:
            out[step.op] = out.get(step.op, 0) + 1
        return out

    def step(self, name: str, type_prefix: str = "") -> Step:
        found = [s for s in self.steps if s.name == name and s.type.startswith(type_prefix)]
        if len(found) != 1:
            raise KeyError(f"{name}: {len(found)} steps")
        return found[0]

    def changes(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.op != "same")


def plan(registrations: Iterable[Registration], state: Mapping[str, Deployed]) -> Plan:
    """Every step, in registration order then deletes; raises ProtectedError as the engine would."""
    regs = list(registrations)
    steps = [plan_one(reg, find_old(reg, state)) for reg in regs]
    steps += deletions(state, claimed(regs, state))
    problems = protect_problems(steps, state)
    if problems:
        raise ProtectedError("\n".join(problems))
    return Plan(tuple(steps))

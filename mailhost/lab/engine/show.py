"""A plan as `pulumi preview --diff` prints it: one line per resource, then the changed inputs.

Secret inputs are shown as [secret]; the push's readable config (the comment lines of its
`update` script) is shown as a line diff, because that is what an administrator reviews.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

from mailhost.lab.engine.plan import Deployed, Plan, Registration, Step, flatten

SYMBOL = {"same": " ", "create": "+", "update": "~", "replace": "+-", "delete": "-"}
TEXT_INPUTS = {"create", "update", "delete"}  # command scripts: shown as a line diff
SECRET = "[secret]"


def render(plan: Plan, registrations: Mapping[str, Registration], state: Mapping[str, Deployed],
           stack: str, show_same: bool = False) -> str:
    lines = [f"Previewing update ({stack}):", ""]
    for step in plan.steps:
        if step.op == "same" and not show_same:
            continue
        lines.append(f"{SYMBOL[step.op]:<3}{step.type:<42} {step.name:<32} {step.op}{_info(step)}")
    for step in plan.changes():
        detail = _detail(step, registrations.get(step.urn), state.get(step.urn))
        if detail:
            lines += ["", f"{SYMBOL[step.op]} {step.type}: ({step.op}) {step.name}", *detail]
    counts = plan.counts()
    lines += ["", "Resources:"]
    for op in ("create", "update", "replace", "delete", "same"):
        if counts.get(op):
            label = {"same": "unchanged", "create": "to create", "update": "to update", "replace": "to replace",
                     "delete": "to delete"}[op]
            lines.append(f"    {SYMBOL[op]} {counts[op]} {label}")
    return "\n".join(lines) + "\n"


def _info(step: Step) -> str:
    if step.op == "replace":
        order = "delete-before-replace" if step.delete_first else "create-before-delete"
        return f"  [diff: {_keys(step.changed)}; replaced because of {_keys(step.replace_because)}; {order}]"
    if step.op == "update":
        return f"  [diff: {_keys(step.changed)}{'; stops and starts it' if step.restarts else ''}]"
    if step.op == "delete" and step.retain:
        return "  [retain: only forgotten]"
    return ""


def _keys(paths: tuple[str, ...]) -> str:
    tops = sorted({p.split(".")[0].split("[")[0] for p in paths})
    return ", ".join(f"~{t}" for t in tops)


def _detail(step: Step, reg: Registration | None, old: Deployed | None) -> list[str]:
    if step.op in ("create", "delete") or reg is None or old is None:
        return []
    out = []
    secret = {*reg.secret_inputs, *old.secret_inputs}
    for top in sorted({p.split(".")[0].split("[")[0] for p in step.changed}):
        if top in secret:
            out.append(f"    ~ {top}: {SECRET} => {SECRET}")
        elif top in TEXT_INPUTS and isinstance(reg.inputs.get(top), str) and isinstance(old.inputs.get(top), str):
            out.append(f"    ~ {top}: (config lines)")
            out += [f"        {line}" for line in _text_diff(str(old.inputs[top]), str(reg.inputs[top]))]
        else:
            for path in [p for p in step.changed if p.split(".")[0].split("[")[0] == top]:
                before, after = flatten(dict(old.inputs)).get(path), flatten(dict(reg.inputs)).get(path)
                out.append(f"    ~ {path}: {_value(before)} => {_value(after)}")
    return out


def _text_diff(before: str, after: str) -> list[str]:
    """Only the comment lines (the readable config); the script body itself is the same for every push."""
    def readable(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("#")]

    diff = difflib.unified_diff(readable(before), readable(after), lineterm="", n=1)
    return [line for line in diff if not line.startswith(("---", "+++"))]


def _value(value: Any) -> str:
    from mailhost.lab.engine.providers import UNKNOWN

    if value == UNKNOWN:
        return "output<string>"
    return json.dumps(value) if value is not None else "(none)"

"""The layout promise of the README ("Who may import whom"): every import, lazy and type-checking ones
included, goes from a stage to one the list allows, and no modules import each other in a circle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("records", "settings", "verify", "publish", "ops", "reports", "canary", "components", "lab", "cli")
PROGRAM = "__main__.py (the Pulumi program)"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path, here: str | None = None) -> set[str]:
    """Every module name an import in the file names: top level, inside functions, under TYPE_CHECKING,
    relative ones resolved, and `importlib.import_module("...")` with a literal name."""
    tree = ast.parse(path.read_text(), str(path))
    here = here or module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(str(node.args[0].value))
    return found


def project_modules() -> dict[str, Path]:
    files = [*ROOT.joinpath("mailhost").rglob("*.py"), *ROOT.joinpath("components").rglob("*.py"),
             ROOT / "__main__.py"]
    return {module_name(path): path for path in files}


def stage_of(module: str) -> str:
    """The stage a module belongs to: its package under mailhost/, components, or the Pulumi program."""
    parts = module.split(".")
    if parts == ["__main__"]:
        return PROGRAM
    if parts[0] == "components":
        return "components"
    if parts[0] == "mailhost" and len(parts) > 1:
        return parts[1] if parts[1] != "__main__" else "mailhost"
    return "mailhost"


def edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module → the project modules it imports (a package's __init__ counts as the package)."""
    out = {}
    for name, path in modules.items():
        out[name] = {target for target in imported(path) if target in modules and target != name}
    return out


def readme_rules() -> dict[str, set[str]]:
    text = ROOT.joinpath("README.md").read_text()
    block = text.split("<!-- layout:begin -->", 1)[1].split("<!-- layout:end -->", 1)[0]
    rules = {}
    for line in block.strip().splitlines():
        match = re.fullmatch(r"- `([^`]+)`(?P<rest> \(the Pulumi program\))?: (?P<allowed>.+)", line.strip())
        assert match, f"README layout line not in the form '- `stage`: a, b': {line!r}"
        stage = PROGRAM if match["rest"] else match[1]
        allowed = match["allowed"]
        rules[stage] = set() if allowed == "nothing of the project" else set(allowed.split(", "))
    return rules


def violations(graph: dict[str, set[str]], rules: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in sorted(graph.items()):
        here = stage_of(source)
        for target in sorted(targets):
            there = stage_of(target)
            if there == here or (here == "mailhost" and there == "cli"):  # python -m mailhost runs the CLI
                continue
            if there not in rules.get(here, set()):
                bad.append(f"{source} ({here}) imports {target} ({there})")
    return bad


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module imports without a package's own __init__ as a target (importing `mailhost.verify.checks`
    also names `mailhost.verify`, whose __init__ holds only a docstring)."""
    inits = {name for name, path in project_modules().items() if path.name == "__init__.py"}
    return {source: targets - inits for source, targets in graph.items()}


def test_the_readme_lists_every_stage_once() -> None:
    assert set(readme_rules()) == {*STAGES, PROGRAM}


def test_every_import_goes_where_the_readme_allows() -> None:
    assert violations(edges(project_modules()), readme_rules()) == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert circles(package_graph(edges(project_modules()))) == []


def test_every_stage_package_says_its_stage_in_one_line() -> None:
    for stage in (*STAGES[:7], "cli", "lab"):
        init = ROOT / "mailhost" / stage / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "\n" not in doc, f"{init}: a one-line docstring naming the stage"
    assert ast.get_docstring(ast.parse(ROOT.joinpath("mailhost", "lab", "engine", "__init__.py").read_text()))


@pytest.mark.parametrize(("source", "target", "why"), [
    ("mailhost.settings.config", "mailhost.publish.preflight", "the model reaching up into rendering"),
    ("mailhost.verify.run", "mailhost.publish.plan", "verify building its expectations with the plan"),
    ("mailhost.publish.render", "mailhost.ops.status", "publish reaching up into ops"),
    ("mailhost.lab.lab", "mailhost.cli.status", "the lab using the CLI"),
])
def test_an_upward_import_is_caught(source: str, target: str, why: str) -> None:
    graph = edges(project_modules())
    graph[source] = {*graph[source], target}
    assert violations(graph, readme_rules()) == [f"{source} ({stage_of(source)}) imports {target} "
                                                 f"({stage_of(target)})"], why


def test_a_circle_is_caught_and_imports_are_read_wherever_they_are(tmp_path: Path) -> None:
    graph = package_graph(edges(project_modules()))
    graph["mailhost.lab.jirahost"] = {*graph["mailhost.lab.jirahost"], "mailhost.lab.lab"}
    assert ["mailhost.lab.jirahost", "mailhost.lab.lab"] in circles(graph)
    sample = tmp_path / "sample.py"
    sample.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mailhost.publish import plan\n"
                      "def f():\n    from mailhost.ops.status import Target\n"
                      "    return importlib.import_module('mailhost.cli.verify')\n")
    found = imported(sample, "sample")
    assert {"mailhost.publish.plan", "mailhost.ops.status", "mailhost.cli.verify"} <= found


"""`mailhost lab`: run the program against real mail software in network namespaces, no AWS needed.

Exit status: 0 when everything the receiver saw is right, 1 when anything is wrong
(a deploy error, a lost message, a failed verdict, a refused teardown).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mailhost.lab import jirahost, ops
from mailhost.lab.lab import DEFAULT_STATE, Lab, LabBusy, LabError
from mailhost.ops import hosts as host_status

lab_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help="A lab of real Postfix, OpenDKIM, Knot, sshd and a strict MX.")
console = Console()
StateOpt = Annotated[Path, typer.Option("--state", help="lab state directory")]


def _progress() -> tuple[Any, Any]:
    status = console.status("starting")

    def update(message: str) -> None:
        # markup off: a plan's "[diff: ~update]" and "[secret]" are text, not rich's style tags
        console.print(f"  {message}", highlight=False, markup=False)
        status.update(message.splitlines()[0] if message else message)

    return status, update


def _table(title: str, rows: list[ops.Row]) -> Table:
    table = Table(title=title)
    table.add_column("check")
    table.add_column("result")
    table.add_column("", justify="center")
    for row in rows:
        table.add_row(row.check, row.result, "[green]ok[/]" if row.ok else "[red]WRONG[/]")
    return table


def _burst(lab: Lab, count: int, size_kb: int, oversize: int, title: str) -> bool:
    values = ops.current_values(lab)
    recipients = [*ops.USERS, "someone@example.org"] if values.get("rerouteTo") else None
    with console.status(f"sending {count} Jira notifications"):
        burst = ops.send(lab, count, size_kb=size_kb, oversize=oversize, recipients=recipients)
        recs, seconds = ops.wait_delivered(lab, burst)
    relay = values.get("delivery", {}).get("mode") == "relay"
    rows = ops.assess(values, burst, recs, seconds, expect_refused=oversize,
                      relayed=ops.relayed(lab, burst.name) if relay else None)
    console.print(_table(title, rows))
    return all(row.ok for row in rows)


@lab_app.command()
def up(
    mode: Annotated[str, typer.Option(help="direct (host → MX) or relay (via the smarthost)")] = "direct",
    stack: Annotated[Path | None, typer.Option(help="Pulumi.<stack>.yaml whose settings override the lab's")] = None,
    count: Annotated[int, typer.Option(help="messages in the test burst")] = 200,
    state: StateOpt = DEFAULT_STATE,
) -> None:
    """Build the lab, deploy the program into it, send a Jira burst, show what the MX saw."""
    lab = Lab(state)
    overrides = ops.overrides_from_file(stack) if stack else None
    status, progress = _progress()
    try:
        with status:
            result = ops.up(lab, mode, overrides, progress)
    except LabBusy as error:
        console.print(f"[red]refused:[/] {error}")
        raise typer.Exit(1) from None
    except (ops.DeployError, LabError) as error:
        console.print(f"[red]deploy failed:[/] {error}")
        console.print("the lab is still up for inspection: `mailhost lab status`, `mailhost lab down`")
        raise typer.Exit(1) from None
    console.print(f"deployed in {result['seconds']}s; remote commands run: {len(result['remote_commands'])}")
    if count and not _burst(lab, count, 0, 0, f"Jira burst, {mode} mode"):
        raise typer.Exit(1)


@lab_app.command()
def send(
    count: Annotated[int, typer.Option(help="messages to send")] = 20,
    size_kb: Annotated[int, typer.Option("--size-kb", help="attachment of about K KB on each message")] = 0,
    oversize: Annotated[int, typer.Option(help="also send N messages over messageSizeLimit (must be refused)")] = 0,
    state: StateOpt = DEFAULT_STATE,
) -> None:
    """Send more Jira mail through the deployed host and show what the MX saw."""
    lab = Lab(state)
    if not lab.exists():
        console.print("[red]no lab is running[/]; start it with `mailhost lab up`")
        raise typer.Exit(1)
    if not _burst(lab, count, size_kb, oversize, "Jira mail"):
        raise typer.Exit(1)


@lab_app.command()
def preview(
    stack: Annotated[Path | None, typer.Option(help="Pulumi.<stack>.yaml: laid over the lab stack (or, with no "
                                                    "lab running, planned as a first deploy)")] = None,
    mode: Annotated[str | None, typer.Option(help="direct or relay: rewrite the lab stack first")] = None,
    state: StateOpt = DEFAULT_STATE,
) -> None:
    """What `pulumi preview --diff` would show: each resource's operation, changed inputs, why something is
    replaced, the push's config diff; secrets as [secret]. Runs nothing on the hosts."""
    lab = Lab(state)
    try:
        if not lab.exists():
            if stack is None:
                console.print("[red]no lab is running[/]: start one with `mailhost lab up`, or give --stack FILE "
                              "to plan a first deploy of that stack file")
                raise typer.Exit(1)
            from mailhost.lab.engine.matrix import preview_file

            print(preview_file(stack), end="")
            return
        text = ops.preview(lab, mode, ops.overrides_from_file(stack) if stack else None)
    except LabBusy as error:
        console.print(f"[red]refused:[/] {error}")
        raise typer.Exit(1) from None
    except (ops.DeployError, LabError) as error:
        console.print(f"[red]preview failed:[/] {error}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    print(text, end="")


@lab_app.command()
def status(state: StateOpt = DEFAULT_STATE) -> None:
    """Hosts, addresses, processes, the jira host's mail queue and the records the program published."""
    lab = Lab(state)
    if not lab.exists():
        console.print("no lab is running")
        raise typer.Exit(1)
    info = lab.info()
    hosts = Table(title="lab hosts")
    for column in ("host", "namespace", "IPv4", "IPv6", "process"):
        hosts.add_column(column)
    pids = {"dns": info.pids.get("knot"), "mx": info.pids.get("receiver"), "smarthost": info.pids.get("smarthost"),
            "jira": info.jira.get("pid")}
    for name, data in info.hosts.items():
        pid = pids.get(name)
        alive = pid is not None and Path(f"/proc/{pid}").exists()
        hosts.add_row(name, data["netns"], data["ipv4"], data["ipv6"], f"{pid} {'up' if alive else 'DOWN'}")
    console.print(hosts)
    queue = ops.queue(lab)
    console.print(f"jira host mail queue: {len(queue)} message(s)"
                  + "".join(f"\n  {q.get('queue_id')} {q.get('queue_name')} {q.get('sender')}" for q in queue[:10]))
    records = Table(title="records published by the program (as the lab DNS answers now)")
    for column in ("name", "type", "answer"):
        records.add_column(column)
    state_file = state / "runner-state.json"
    entries = json.loads(state_file.read_text()) if state_file.exists() else {}
    for entry in entries.values():
        if entry["type"] != "aws:route53/record:Record":
            continue
        name, rtype = entry["inputs"]["name"], entry["inputs"]["type"]
        answer = subprocess.run(["kdig", f"@{lab.world.dns.v4}", "+short", rtype, name],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        records.add_row(name, rtype, answer if len(answer) < 90 else answer[:87] + "...")
    console.print(records)
    log = jirahost.run(info, ["tail", "-n", "8", ops.MAILLOG]).stdout.strip()
    console.print(f"last lines of the jira host's {ops.MAILLOG}:\n{log or '(empty)'}", markup=False, highlight=False)
    outputs = state / "stack-outputs.json"
    if outputs.exists():  # what `mailhost status` says of the deployed host, as on a real one
        console.print("\nmailhost status (last hour):")
        found = host_status.targets(host_status.read_outputs(outputs), None, "lab")
        level = host_status.run_status(found, Path(info.jira["client_key_path"]).read_text(), 1.0, False,
                                      lambda line: console.print(line, markup=False, highlight=False))
        raise typer.Exit(level)


@lab_app.command()
def canary(
    timeout: Annotated[float, typer.Option(min=5, max=3600, help="seconds to wait for the probe")] = 60,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
    state: StateOpt = DEFAULT_STATE,
) -> None:
    """`mailhost canary` against the lab: a probe from the jira host to the MX's canary mailbox, read over IMAPS."""
    lab = Lab(state)
    if not lab.exists() or not (state / "stack-outputs.json").exists():
        console.print("no deployed lab: run `mailhost lab up` first")
        raise typer.Exit(3)
    done = subprocess.run(ops.canary_argv(lab, timeout, as_json), check=False)
    raise typer.Exit(done.returncode)


@lab_app.command()
def down(
    force: Annotated[bool, typer.Option(help="remove the lab even if the program's delete path refuses")] = False,
    unprotect: Annotated[bool, typer.Option(help="also delete protected (production) resources")] = False,
    state: StateOpt = DEFAULT_STATE,
) -> None:
    """Delete through the program (teardown drains the queue first), then remove the whole lab."""
    lab = Lab(state)
    status, progress = _progress()
    try:
        with status:
            ops.down(lab, progress, force=force, unprotect=unprotect)
    except LabBusy as error:
        console.print(f"[red]refused:[/] {error}")
        raise typer.Exit(1) from None
    except ops.DeployError as error:
        console.print(f"[red]teardown refused:[/] {error}")
        console.print("the lab is kept; fix the cause (let the queue drain; --unprotect for a production stack)"
                      " and run `mailhost lab down` again, or `--force` to drop it anyway")
        raise typer.Exit(1) from None
    left = lab.leftovers()
    if left:
        console.print("[red]left behind:[/] " + ", ".join(left))
        raise typer.Exit(1)
    console.print("lab removed: no namespace, link, process, mount or file left")

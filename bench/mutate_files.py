"""Mutation testing of what mutmut cannot reach: the templates and the pushed scripts.

Each mutant is one hand-written edit that breaks a promise the README makes; it is applied to a
copy of the checkout and the real tests that guard the promise run against it.  A mutant is
killed when those tests fail.  Prints one row per mutant and the score; exits 1 below 90 %.

    .venv/bin/python bench/mutate_files.py [--only SUBSTRING]

Needs root and the Debian packages (the tests it runs are `real` ones; the push tests use the
`jmp` namespaces, so do not run it beside another run of the real suite).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RENDER = "tests/real/test_render_real.py"
SNAPSHOT = "tests/unit/test_mut_render.py"
PUSH = "tests/real/test_push_scripts.py"
DRILLS = "tests/real/test_push_drills.py"
RELAY = "tests/real/test_open_relay.py"
DRILLS_LAB = "tests/real/test_lab_drills.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: files or node ids, -k expressions


MUTANTS = (
    Mutant("relay TLS unverified", "files/templates/main.cf.j2", "smtp_tls_security_level = secure",
           "smtp_tls_security_level = encrypt", (RENDER,)),
    Mutant("smtpd on every interface", "files/templates/main.cf.j2", "inet_interfaces = loopback-only",
           "inet_interfaces = all", (RENDER,)),
    Mutant("unsigned mail when the milter is down", "files/templates/main.cf.j2",
           "milter_default_action = tempfail", "milter_default_action = accept", (DRILLS_LAB, "-k", "opendkim")),
    Mutant("relay for anyone", "files/templates/main.cf.j2", "smtpd_recipient_restrictions = permit_mynetworks, reject",
           "smtpd_recipient_restrictions = permit", (RELAY, "-k", "listening_everywhere")),
    Mutant("postmaster DATA accepted from outside", "files/templates/main.cf.j2",
           "smtpd_data_restrictions = permit_mynetworks, reject", "smtpd_data_restrictions = permit",
           (RELAY, "-k", "listening_everywhere")),
    Mutant("no TLS connection reuse", "files/templates/main.cf.j2", "smtp_tls_connection_reuse = yes",
           "smtp_tls_connection_reuse = no", (RENDER,)),
    Mutant("tlsproxy missing", "files/templates/master.cf.j2", "tlsproxy   unix  -       -      n      -      0",
           "#tlsproxy  unix  -       -      n      -      0", (RENDER,)),
    Mutant("reroute misses addresses", "files/templates/reroute.j2", "/@/    {{ reroute_to }}",
           "/^qa@/    {{ reroute_to }}", (RENDER,)),
    Mutant("From not oversigned", "files/templates/opendkim.conf.j2", "OversignHeaders         From",
           "OversignHeaders         To", (SNAPSHOT,)),
    Mutant("host never probes the reroute", "files/templates/settings.env.j2", "REROUTE_TO={{ reroute_to }}",
           "REROUTE_TO=", (PUSH, "-k", "reroute")),
    Mutant("host accepts extra parameters", "files/scripts/apply.sh",
           '''if ! cmp -s "$WORK/params.live" "$WORK/params.want"; then''', "if false; then",
           (PUSH, "-k", "templates")),
    Mutant("a dropped session kills the rollback", "files/scripts/apply.sh", "trap '' HUP PIPE", ": no trap",
           (DRILLS, "-k", "failing_switch")),
    Mutant("no journal replay", "files/scripts/apply.sh", 'if [ -f "$JOURNAL" ]; then', "if false; then",
           (DRILLS, "-k", "killed_mid_switch")),
    Mutant("teardown goes ahead with mail queued", "files/scripts/teardown.sh",
           '[ "$count" -gt 0 ] && refuse "$count"', ': no refusal', (PUSH, "-k", "teardown_keeps_queued_mail")),
)


def copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.split(b"\0")
    for raw in files:
        if raw:
            src = ROOT / raw.decode()
            if src.is_file():
                target = dest / raw.decode()
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)


def run(mutant: Mutant) -> tuple[bool, float]:
    with tempfile.TemporaryDirectory(prefix="mailhost-mutate-") as tmp:
        work = Path(tmp)
        copy_checkout(work)
        target = work / mutant.path
        text = target.read_text()
        if text.count(mutant.old) != 1:
            raise SystemExit(f"{mutant.name}: {mutant.old!r} is not in {mutant.path} exactly once")
        target.write_text(text.replace(mutant.old, mutant.new))
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                               *mutant.tests], cwd=work, capture_output=True, text=True)
        return done.returncode != 0, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the mutants whose name contains this")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.only in m.name]
    control = Mutant("control", "files/templates/main.cf.j2", "# Satellite-style input", "# Satellite style input",
                     (RENDER,))
    if run(control)[0]:
        print("the tests fail on an unmutated copy (only a comment changed): fix that first")
        return 2
    killed = 0
    for mutant in chosen:
        dead, seconds = run(mutant)
        killed += dead
        print(f"{'killed ' if dead else 'SURVIVED'}  {seconds:6.1f} s  {mutant.path}: {mutant.name}", flush=True)
    score = 100.0 * killed / max(len(chosen), 1)
    print(f"templates and scripts: {killed}/{len(chosen)} mutants killed = {score:.1f} %")
    return 0 if score >= 90 else 1


if __name__ == "__main__":
    sys.exit(main())

"""How verify scales: seconds for 1 host and for 100 hosts checked concurrently, and the ratio.

Runs a real Knot on 127.0.0.1 (free port) serving 100 hosts' forward and reverse records,
then times `mailhost.verify.run` (recursive mode, then authoritative mode) for the first host
alone and for all 100.  Best of several runs each, so one scheduler hiccup does not decide.
Twice: straight to Knot (about 0.1 ms per lookup: measures Python CPU only) and through
bench/dns_delay.py, which adds a network-like round-trip time (--rtt-ms, default 20 and 50).
Usage: .venv/bin/python bench/verify_scale.py [--hosts 100] [--runs 5] [--rtt-ms 20 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailhost.lab.knot import Knot, free_port
from mailhost.verify.dnsquery import ResolverSpec
from mailhost.verify.run import VerifyOptions, verify_once
from tests.fixtures.zones.verify_world import World, lab_host


def _key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def _time(expected, options: VerifyOptions, runs: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        report = asyncio.run(verify_once(expected, options))
        best = min(best, time.perf_counter() - started)
        if not report.ok:
            bad = [c.id for c in report.failures]
            raise SystemExit(f"verification failed, the benchmark zone is wrong: {bad[:5]}")
    return best, len(report.checks)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rtt-ms", type=float, action="append", help="relay RTTs to try (default 20 and 50)")
    args = parser.parse_args()
    # One SPF record listing 200 single addresses would be ~5 KB; a fleet lists its networks.
    world = World([lab_host(i) for i in range(1, args.hosts + 1)], _key(), spf_ranges=True)
    with Knot(zones=world.zones()) as knot:
        full = world.expected()
        one = dataclasses.replace(full, hosts=full.hosts[:1])
        print(f"loopback, no relay: {_measure(one, full, knot.port, args.runs)}", flush=True)
        for rtt in args.rtt_ms or [20.0, 50.0]:
            relay_port = free_port()
            relay = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("dns_delay.py")), str(relay_port), str(knot.port),
                 str(rtt)],
                stdout=subprocess.PIPE, text=True,
            )
            try:
                assert relay.stdout is not None and relay.stdout.readline().strip() == "ready"
                print(f"relay with RTT {rtt:g} ms: {_measure(one, full, relay_port, args.runs)}", flush=True)
            finally:
                relay.terminate()
                relay.wait(timeout=10)


def _measure(one, full, port: int, runs: int) -> str:  # type: ignore[no-untyped-def]
    lines = []
    for authoritative in (False, True):
        options = VerifyOptions(ResolverSpec(("127.0.0.1",), port, authoritative, 5.0))
        t1, n1 = _time(one, options, runs)
        tn, nn = _time(full, options, runs)
        mode = "authoritative" if authoritative else "recursive"
        lines.append(f"\n  {mode:13}: 1 host {t1:.3f}s ({n1} checks); {len(full.hosts)} hosts {tn:.3f}s "
                     f"({nn} checks); ratio {tn / t1:.2f}")
    return "".join(lines)

if __name__ == "__main__":
    main()

"""The receivers as a sender meets them across the Internet: behind round trips, and capping connections.

Each receiver (the MX and mx2) moves to port 2525 and a `delayrelay` takes its port 25, holding every
segment for half the round trip in each direction; the receivers can also answer `421 4.7.0` above a cap
of concurrent connections per client address, as Gmail and Microsoft do.  Used by bench/tls_reuse.py and
by the capped-receiver lab tests, so both measure the same path.
"""

from __future__ import annotations

import sys

from mailhost.lab import lab as labmod
from mailhost.lab.lab import Lab

RELAYS = ("relay-mx", "relay-mx-6", "relay-mx2", "relay-mx2-6")


def receivers(lab: Lab, rtt_ms: float | None, cap: int = 0, extra: tuple[str, ...] = ()) -> None:
    """The receivers on port 25 (rtt_ms None), or on 2525 behind delay relays; with the cap (0: none).
    mx2 runs only if it ran before.  Behind the relays a receiver sees the relay's address of the family the
    sender used, so the cap counts the sender's IPv4 and IPv6 connections apart, as a real receiver does."""
    info = lab.info()
    for name in RELAYS:
        pid = info.pids.pop(name, None)
        if pid:
            labmod._kill(pid)
    lab.save(info)
    extra = (*extra, *(("--max-conns-per-ip", str(cap)) if cap else ()))
    if rtt_ms is None:
        lab.restart_receivers(extra)
        return
    second = "mx2" in info.pids
    for name in ("receiver", "mx2"):  # their port 25 goes to the relays
        pid = info.pids.pop(name, None)
        if pid:
            labmod._kill(pid)
    lab.save(info)
    behind = [("relay-mx", "mx", lab.world.mx)] + ([("relay-mx2", "smarthost", lab.world.smarthost)] if second else [])
    for name, host, addr in behind:
        # One relay per address family, each forwarding to the receiver's address of that family: a real
        # receiver counts the sender's IPv4 and IPv6 connections apart, and so does the cap here.
        for suffix, listen, target in (("", addr.v4, f"{addr.v4}:2525"), ("-6", addr.v6, f"[{addr.v6}]:2525")):
            info.pids[name + suffix] = lab.host(host).spawn(
                [sys.executable, "-m", "mailhost.lab.delayrelay", "--listen", listen, "--port", "25", "--to", target,
                 "--delay-ms", repr(rtt_ms / 2)],
                log=lab.state_dir / f"{name}{suffix}.log").pid
            lab.save(info)
        labmod.wait_port(addr.v4, 25, what=name, log=lab.state_dir / f"{name}.log")
    lab.start_receiver(info, [*extra, "--port", "2525"])
    if second:
        lab.start_second_mx(info, [*extra, "--port", "2525"])
    for _, _, addr in behind:
        labmod.wait_port(addr.v4, 2525, what="receiver behind the delay relay")

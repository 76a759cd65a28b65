"""TLS connection reuse under a Jira burst: handshakes counted at the receivers, three configs side by side.

    .venv/bin/python bench/tls_reuse.py [--count 17000] [--modes direct,relay] [--keep]
    .venv/bin/python bench/tls_reuse.py --modes direct --rtt-ms 0,50 --cap 5 --count 2000 --judge no
    .venv/bin/python bench/tls_reuse.py --modes direct --configs ours --outbound-tls dane+mta-sts --count 2000

Builds a lab (its own state directory), deploys the program, and for each mode sends the same
Jira-like burst through three Postfix configs on the jira host:
  (a) stock   Debian's stock main.cf (Internet Site, or Satellite with SASL for relay) + OpenDKIM
  (b) seed    (a) plus only the seed's two settings: smtp_tls_connection_reuse = yes (tlsproxy)
  (c) ours    the main.cf the program renders and pushes, and its smtp process limit (maxConnections)
master.cf is the pushed one in all three (Debian's, chroot off for the lab; it has tlsproxy), with the
smtp service's process limit put back to Debian's `-` (100) for (a) and (b).
Direct mode spreads recipients over the lab MX's domains and a second MX's; relay mode goes
over STARTTLS + SASL to the lab smarthost.  The receivers count connections, STARTTLS handshakes
and messages per connection at their end (mailhost.lab.tlsstats).  Prints one table; numbers
are this machine's, not a promise.

--rtt-ms puts each receiver behind mailhost.lab.delayrelay (the receiver moves to port 2525, the relay
takes port 25 and holds every segment for half the round trip in each direction); `none` (the default)
runs without it.  --cap N makes the receivers answer 421 4.7.0 above N connections from one address,
as Gmail and Microsoft do.  Delivery latency is per message, from Postfix's 250 to Jira until the
receiver stored it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailhost.lab import jirahost, ops, receiver, tlsstats, wan, zones
from mailhost.lab import lab as labmod
from mailhost.lab.lab import Lab

USERS = ("alice", "bob", "carol", "dave", "erin", "frank")
DOMAINS = (zones.RECIPIENT_DOMAIN, *zones.SAME_MX_DOMAINS, *zones.SECOND_MX_DOMAINS)
CONFIGS = ("stock", "seed", "ours")
SEED_SETTINGS = {"smtp_tls_connection_reuse": "yes"}
SMTP_LIMIT = "smtp/unix/process_limit"
# What every config needs to run in the lab at all (not tuning): the host's name, the milter socket,
# the log file (no syslog in the namespace), and the lab's size limit.
CARRIED = ("myhostname", "smtpd_milters", "non_smtpd_milters", "milter_protocol", "maillog_file",
           "message_size_limit", "inet_protocols", "smtp_tls_CApath")


def stock_main_cf(ours: dict[str, str], mode: str) -> dict[str, str]:
    """Debian's postinst result for Internet Site (or Satellite + SASL for relay), with OpenDKIM added
    the way Debian's opendkim README does (milter_default_action = accept)."""
    conf = {
        "smtpd_banner": "$myhostname ESMTP $mail_name (Debian/GNU)", "biff": "no", "append_dot_mydomain": "no",
        "readme_directory": "no", "compatibility_level": "3.6",
        "smtp_tls_security_level": "may", "smtp_tls_session_cache_database": "btree:${data_directory}/smtp_scache",
        "smtpd_relay_restrictions": "permit_mynetworks permit_sasl_authenticated defer_unauth_destination",
        "alias_maps": "", "alias_database": "", "mydestination": "$myhostname, localhost", "relayhost": "",
        "mynetworks": "127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128", "mailbox_size_limit": "0",
        "recipient_delimiter": "+", "inet_interfaces": "loopback-only", "milter_default_action": "accept",
    }
    conf.update({k: ours[k] for k in CARRIED if k in ours})
    if mode == "relay":
        conf.update({"relayhost": ours["relayhost"], "smtp_sasl_auth_enable": "yes",
                     "smtp_sasl_password_maps": ours["smtp_sasl_password_maps"],
                     "smtp_sasl_security_options": "noanonymous", "smtp_tls_security_level": "encrypt"})
    return conf


def postconf_n(info: labmod.LabInfo) -> dict[str, str]:
    out = jirahost.run(info, ["postconf", "-n"]).stdout
    conf: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" =")
        conf[key.strip()] = value.strip()
    return conf


def smtp_process_limit(info: labmod.LabInfo) -> str:
    """The pushed master.cf's limit on outgoing connections (delivery.maxConnections)."""
    out = jirahost.run(info, ["postconf", "-F", SMTP_LIMIT]).stdout
    return out.partition(" = ")[2].strip()


def install(info: labmod.LabInfo, conf: dict[str, str], process_limit: str) -> None:
    """main.cf, and the smtp service's process limit in master.cf (stock: `-`, Postfix's default of 100)."""
    text = "".join(f"{k} = {v}\n" for k, v in conf.items())
    script = f"cat > /etc/postfix/main.cf && postconf -F '{SMTP_LIMIT}={process_limit}' && postfix reload"
    subprocess.run(jirahost.nsenter(info, ["sh", "-c", script]),
                   input=text, text=True, check=True, capture_output=True, timeout=60)
    time.sleep(1)


def cpu_seconds(info: labmod.LabInfo) -> float:
    """Postfix (master, its children alive or reaped) + tlsproxy + OpenDKIM, user + system."""
    tick = 100.0
    master = int(jirahost.run(info, ["cat", "/var/spool/postfix/pid/master.pid"]).stdout.split()[0])
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            fields = text.rsplit(")", 1)[1].split()
            name = text.split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, IndexError):
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        if pid == master:
            total += (utime + stime + cutime + cstime) / tick
        elif ppid == master or name == "opendkim":
            total += (utime + stime) / tick
    return total


def proc_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / 100.0


def run_one(lab: Lab, mode: str, config: str, count: int, rtt_ms: float | None = None, cap: int = 0,
            wait: float | None = None) -> dict[str, Any]:
    info = lab.info()
    relay_cpu0 = sum(proc_cpu(info.pids.get(name)) for name in wan.RELAYS)
    conn_logs = [lab.smarthost_connections] if mode == "relay" else [lab.receiver_connections,
                                                                     lab.second_mx_connections]
    records_from = [lab.receiver_log, lab.second_mx_log]
    cpu0 = cpu_seconds(info)
    start = time.time()
    recipients = [f"{u}@{d}" for d in DOMAINS for u in USERS]
    burst = ops.send(lab, count, recipients=recipients, big_every=0)
    deadline = time.time() + (wait if wait is not None else max(600, count / 5))
    delivered: list[dict[str, Any]] = []
    while time.time() < deadline:
        delivered = [r for log in records_from for r in receiver.read_records(log) if r.get("burst") == burst.name]
        if len(delivered) >= burst.sent:
            break
        time.sleep(1)
    # The definition: from the first submission (not from building the burst, ~30 s at 17,000).
    drain = (max(r["time"] for r in delivered) - burst.started_at) if delivered else float("nan")
    # A connection's line is written when it closes, and Postfix keeps cached ones open while idle (10 s in
    # the rendered config): a reload ends them now; then wait until the lines account for every message.
    jirahost.run(info, ["postfix", "reload"])
    wait_until = time.time() + 20
    while True:
        conns = [c for log in conn_logs for c in tlsstats.read(log, since=start)]
        if sum(c["messages"] for c in conns) >= len(delivered) or time.time() > wait_until:
            break
        time.sleep(0.5)
    cpu = cpu_seconds(info) - cpu0
    relay_cpu = sum(proc_cpu(info.pids.get(name)) for name in wan.RELAYS) - relay_cpu0
    stats = tlsstats.summary(conns)
    lat = sorted(burst.latencies)
    firsts: dict[str, float] = {}
    for record in delivered:
        firsts[record["message_id"]] = min(record["time"], firsts.get(record["message_id"], record["time"]))
    deliv = sorted(t - burst.accepted_at[m] for m, t in firsts.items() if burst.accepted_at.get(m))
    return {"mode": mode, "rtt_ms": "none" if rtt_ms is None else f"{rtt_ms:g}", "cap": cap or "none",
            "config": config, "sent": burst.sent, "delivered": len(delivered),
            # submit_s: how long "Jira" took to hand the burst over; no config can drain faster than that
            "submit_s": round(burst.seconds, 1), "drain_s": round(drain, 1),
            "msg_per_s": round(len(delivered) / drain, 1) if delivered else 0,
            **stats, "cpu_s": round(cpu, 1),
            "cpu_ms_per_msg": round(1000 * cpu / len(delivered), 2) if delivered else 0,
            "relay_cpu_s": round(relay_cpu, 1),
            "lat_p50_ms": round(1000 * statistics.median(lat), 1) if lat else 0,
            "lat_p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 1) if lat else 0,
            "deliv_p50_ms": round(1000 * statistics.median(deliv)) if deliv else 0,
            "deliv_p99_ms": round(1000 * deliv[int(0.99 * (len(deliv) - 1))]) if deliv else 0}


COLUMNS = ("mode", "rtt_ms", "cap", "config", "sent", "delivered", "submit_s", "drain_s", "msg_per_s", "handshakes",
           "per_handshake", "longest_chain", "median_chain", "refused_421", "cpu_s", "cpu_ms_per_msg",
           "relay_cpu_s", "lat_p50_ms", "lat_p99_ms", "deliv_p50_ms", "deliv_p99_ms")


def dkim_floor_ms(rounds: int = 200) -> float:
    """One RSA-2048 signature (what OpenDKIM spends per message at least), on this machine's CPU."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    started = time.process_time()
    for i in range(rounds):
        key.sign(f"header hash {i}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return 1000 * (time.process_time() - started) / rounds


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=17000)
    parser.add_argument("--modes", default="direct,relay")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--keep", action="store_true", help="leave the lab running (state dir printed)")
    parser.add_argument("--judge", choices=("yes", "no"), default="yes",
                        help="no: the receivers store without SPF/DKIM/DMARC checks, so their Python does not eat "
                             "the sender's CPU (the MX of a real receiver runs elsewhere)")
    parser.add_argument("--try", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="exploring: lay this main.cf setting over (c) (repeatable)")
    parser.add_argument("--rtt-ms", default="none",
                        help="round trips to the receivers, comma-separated (none: no delay relay at all)")
    parser.add_argument("--cap", type=int, default=0, help="receivers' concurrent connections per address (0: none)")
    parser.add_argument("--store-and-forward", action="store_true",
                        help="relay mode: the smarthost answers 250 once stored and relays afterwards, as real "
                             "relays do (default: it relays before it answers)")
    parser.add_argument("--wait", type=float, help="give up on a run after this many seconds (default: 600 or more)")
    parser.add_argument("--outbound-tls", choices=("opportunistic", "dane", "dane+mta-sts"),
                        help="direct mode: push with this delivery.outboundTls (default: the stack's default)")
    args = parser.parse_args(argv)
    rtts = [None if r == "none" else float(r) for r in args.rtt_ms.split(",")]
    state = Path(tempfile.mkdtemp(prefix="mailhost-tlsbench-")) / "state"
    lab = Lab(state)
    rows: list[dict[str, Any]] = []
    try:
        for mode in args.modes.split(","):
            direct_tls = {"delivery": {"outboundTls": args.outbound_tls}} if args.outbound_tls else {}
            ops.up(lab, mode, direct_tls if mode == "direct" else {})
            info = lab.info()
            if "mx2" not in info.pids:
                lab.start_second_mx(info)
            ours = postconf_n(lab.info())
            ours_limit = smtp_process_limit(lab.info())
            if mode == "relay" and args.store_and_forward:
                lab.stop_smarthost()
                lab.start_smarthost(extra=["--store-and-forward"])
            for rtt in rtts:
                if rtt is not None or args.cap or args.judge == "no":
                    wan.receivers(lab, rtt, args.cap, ("--no-verdicts",) if args.judge == "no" else ())
                for config in args.configs.split(","):
                    conf = dict(ours) if config == "ours" else stock_main_cf(ours, mode)
                    if config == "ours":
                        conf.update(dict(item.split("=", 1) for item in args.extra))
                    if config == "seed":
                        conf.update(SEED_SETTINGS)
                    install(lab.info(), conf, ours_limit if config == "ours" else "-")
                    row = run_one(lab, mode, config, args.count, rtt, args.cap, args.wait)
                    rows.append(row)
                    print(f"{mode} {config}: {row}", flush=True)
            install(lab.info(), ours, ours_limit)
    finally:
        if args.keep:
            print(f"lab kept: {state}")
        else:
            lab.teardown()
            shutil.rmtree(state.parent, ignore_errors=True)
    print()
    print(f"floor: one RSA-2048 DKIM signature costs {dkim_floor_ms():.2f} ms of CPU here")
    print(table(rows))
    lost = [r for r in rows if r["delivered"] != r["sent"]]
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())

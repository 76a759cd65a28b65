"""What mutation testing found unguarded in the DMARC report export and the DANE-first socketmap.

The export is judged by the whole Prometheus text and the whole JSON document it writes; the socketmap by
the netstring replies Postfix reads and by the DNS queries a loopback DNS server (UDP and TCP on one port,
as a validating resolver listens) receives from it.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from mailhost.publish import danefirst
from mailhost.publish.danefirst import Answer
from mailhost.reports import export
from mailhost.reports.judge import Ramp, Summary, Tally
from tests.unit.test_dane_first import lookups  # the fake resolver table its decisions are judged with

# --- export: the node_exporter textfile and `mailhost reports --json` ----------------------------------

NOW = 1_796_600_000
DAY = 86400
OURS, RELAY, STRANGER = "203.0.113.10", "203.0.113.200", "198.51.100.99"


def sample_summary() -> Summary:
    ours = Tally(3, 2, 3, 1, Counter({"none": 2, "quarantine": 1}))  # 1 of 3 pass: a ratio with 7+ digits
    stranger = Tally(56, 0, 0, 0, Counter({"quarantine": 56}))
    return Summary(
        since=NOW - 14 * DAY + 0.75, until=NOW + 0.5,
        reporters={"outlook.com": Tally(29, 1, 2, 1, Counter({"quarantine": 29})),
                   "google.com": Tally(30, 1, 1, 0, Counter({"none": 2, "quarantine": 28}))},
        sources={STRANGER: stranger, OURS: ours},
        source_class={STRANGER: "unknown", OURS: "ours"},
        classes={"ours": ours, "authorized": Tally(), "unknown": stranger},
        days=13,
        ramp=Ramp("none", "quarantine", ("13 of 14 days of reports",)),
    )


def test_the_metrics_file_is_exactly_the_six_families_with_their_help_and_samples() -> None:
    assert export.metrics(sample_summary(), refused=2, now=NOW + 0.9) == "\n".join([
        "# HELP jira_mailhost_dmarc_messages Messages the DMARC reports of the window count, by source class.",
        "# TYPE jira_mailhost_dmarc_messages gauge",
        'jira_mailhost_dmarc_messages{class="ours"} 3',
        'jira_mailhost_dmarc_messages{class="authorized"} 0',
        'jira_mailhost_dmarc_messages{class="unknown"} 56',
        "# HELP jira_mailhost_dmarc_pass_ratio Share of those messages that passed DMARC, by source class "
        "(1 when there were none).",
        "# TYPE jira_mailhost_dmarc_pass_ratio gauge",
        'jira_mailhost_dmarc_pass_ratio{class="ours"} 0.333333',  # six decimals, not 0.3333333
        'jira_mailhost_dmarc_pass_ratio{class="authorized"} 1',
        'jira_mailhost_dmarc_pass_ratio{class="unknown"} 0',
        "# HELP jira_mailhost_dmarc_unknown_source_messages Messages sent as the domain from sources neither "
        "ours nor in SPF.",
        "# TYPE jira_mailhost_dmarc_unknown_source_messages gauge",
        "jira_mailhost_dmarc_unknown_source_messages 56",
        "# HELP jira_mailhost_dmarc_ramp_ready 1 when the reports allow the next dmarc.policy step.",
        "# TYPE jira_mailhost_dmarc_ramp_ready gauge",
        "jira_mailhost_dmarc_ramp_ready 0",
        "# HELP jira_mailhost_dmarc_reports_refused Reports this run refused (malformed, hostile or for another "
        "domain).",
        "# TYPE jira_mailhost_dmarc_reports_refused gauge",
        "jira_mailhost_dmarc_reports_refused 2",
        "# HELP jira_mailhost_dmarc_collector_last_run_timestamp_seconds When this file was written (Unix time).",
        "# TYPE jira_mailhost_dmarc_collector_last_run_timestamp_seconds gauge",
        f"jira_mailhost_dmarc_collector_last_run_timestamp_seconds {NOW}",  # whole seconds
    ]) + "\n"


@pytest.mark.parametrize(("passed", "messages", "shown"), [
    (1, 3, "0.333333"), (2, 3, "0.666667"), (1, 7, "0.142857"), (994, 1000, "0.994"), (0, 5, "0"), (4, 4, "1")])
def test_a_pass_ratio_is_written_with_six_decimals(passed: int, messages: int, shown: str) -> None:
    summary = sample_summary()
    summary.classes["ours"] = Tally(messages=messages, dmarc_pass=passed)
    ratios = [line for line in export.metrics(summary, refused=0, now=NOW).splitlines()
              if line.startswith('jira_mailhost_dmarc_pass_ratio{class="ours"}')]
    assert ratios == [f'jira_mailhost_dmarc_pass_ratio{{class="ours"}} {shown}']


def test_without_a_time_given_the_file_is_stamped_with_the_current_second() -> None:
    before = int(time.time())
    text = export.metrics(sample_summary(), refused=0)
    after = int(time.time())
    stamp = text.splitlines()[-1]
    name, value = stamp.split(" ")
    assert name == "jira_mailhost_dmarc_collector_last_run_timestamp_seconds"
    assert value.isdigit() and before <= int(value) <= after


def test_the_json_document_has_every_key_it_promises() -> None:
    assert export.as_data(sample_summary()) == {
        "since": NOW - 14 * DAY, "until": NOW, "days_with_reports": 13,
        "reporters": {
            "google.com": {"messages": 30, "spf_aligned": 1, "dkim_aligned": 1, "dmarc_pass": 0,
                           "dispositions": {"none": 2, "quarantine": 28}},
            "outlook.com": {"messages": 29, "spf_aligned": 1, "dkim_aligned": 2, "dmarc_pass": 1,
                            "dispositions": {"quarantine": 29}},
        },
        "sources": {
            STRANGER: {"class": "unknown", "messages": 56, "spf_aligned": 0, "dkim_aligned": 0, "dmarc_pass": 0,
                       "dispositions": {"quarantine": 56}},
            OURS: {"class": "ours", "messages": 3, "spf_aligned": 2, "dkim_aligned": 3, "dmarc_pass": 1,
                   "dispositions": {"none": 2, "quarantine": 1}},
        },
        "classes": {
            "ours": {"messages": 3, "spf_aligned": 2, "dkim_aligned": 3, "dmarc_pass": 1,
                     "dispositions": {"none": 2, "quarantine": 1}},
            "authorized": {"messages": 0, "spf_aligned": 0, "dkim_aligned": 0, "dmarc_pass": 0, "dispositions": {}},
            "unknown": {"messages": 56, "spf_aligned": 0, "dkim_aligned": 0, "dmarc_pass": 0,
                        "dispositions": {"quarantine": 56}},
        },
        "flagged": [{"source_ip": STRANGER, "class": "unknown", "messages": 56},
                    {"source_ip": OURS, "class": "ours", "messages": 2}],
        "ramp": {"policy": "none", "next": "quarantine", "ready": False, "blockers": ["13 of 14 days of reports"],
                 "line": "DMARC ramp: not yet dmarc.policy from none to quarantine: 13 of 14 days of reports"},
    }


# --- danefirst: the decisions Postfix reads --------------------------------------------------------------

DANE_TLSA = Answer("NOERROR", True, ("3 1 1 ab",))


def test_a_null_mx_beside_real_mx_records_is_still_a_null_mx_and_no_tlsa_is_asked() -> None:
    lookup, asked = lookups({("example.net", "MX"): Answer("NOERROR", True, ("10 mx1.example.net.", "0 .")),
                             ("_25._tcp.mx1.example.net", "TLSA"): DANE_TLSA})
    assert danefirst.reply(b"dane example.net", lookup) == b"NOTFOUND "
    assert asked == [("example.net", "MX")]


def test_a_malformed_mx_record_is_skipped_and_the_records_after_it_are_read() -> None:
    lookup, asked = lookups({("example.net", "MX"): Answer("NOERROR", True, ("x y.", "10", "10 mx1.example.net.")),
                             ("_25._tcp.mx1.example.net", "TLSA"): DANE_TLSA,
                             ("_25._tcp.example.net", "TLSA"): Answer("NXDOMAIN", True)})
    assert danefirst.reply(b"dane example.net", lookup) == b"OK dane"
    assert asked == [("example.net", "MX"), ("_25._tcp.mx1.example.net", "TLSA")]


def test_mx_host_names_lose_only_their_trailing_dot() -> None:
    answer = Answer("NOERROR", True, ("10 MX.Example.NET.", "20 mxx.example.net", "30 mx2.example.netx."))
    assert danefirst.mx_hosts("example.net", answer) == ["mx.example.net", "mxx.example.net", "mx2.example.netx"]


def serve(data: bytes) -> bytes:
    lookup, _ = lookups({})
    out = io.BytesIO()
    danefirst.serve(io.BytesIO(data), out, lookup)
    return out.getvalue()


def test_a_request_of_exactly_max_request_bytes_is_read_and_one_byte_more_ends_the_connection() -> None:
    assert danefirst.MAX_REQUEST == 1024
    request = b"dane " + b"a" * 1019  # read whole, then refused by the request grammar (a key is <= 300)
    assert serve(b"1024:" + request + b"," + b"16:dane example.net,") == (
        b"22:PERM malformed request,9:NOTFOUND ,")
    assert serve(b"1025:" + request + b"a," + b"16:dane example.net,") == b""


def test_a_length_of_more_than_four_digits_ends_the_connection_even_with_leading_zeros() -> None:
    assert serve(b"0016:dane example.net,") == b"9:NOTFOUND ,"
    assert serve(b"00016:dane example.net,16:dane example.net,") == b""
    assert serve(b"000016:dane example.net,") == b""


def test_the_pushed_program_is_plain_ascii() -> None:
    """Whatever the locale of the host that reads it, the pushed text is the same (see own_source)."""
    assert Path(danefirst.__file__).read_bytes().isascii()
    assert danefirst.own_source().encode("ascii") == Path(danefirst.__file__).read_bytes()


# --- danefirst: its DNS, against a loopback resolver on UDP and TCP ------------------------------------------

@dataclass
class Resolver:
    """A DNS server on 127.0.0.1 (UDP and TCP on one port) answering from a table, recording every query.

    table: "name. TYPE" -> (rcode, vouched, records).  Names starting "big." are truncated over UDP (TC,
    no records) and answered whole over TCP; names starting "stuck." too, but TCP never answers them.
    The AD flag is set only when the query asked with DO and AD (RFC 6840 5.7) and recursion was desired.
    """

    address: tuple[str, int]
    table: dict[str, tuple[int, bool, list[str]]] = field(default_factory=dict)
    queries: list[tuple[str, str, int, int]] = field(default_factory=list)  # (transport, "name TYPE", flags, ednsflags)

    def answer(self, transport: str, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        key = f"{question.name.to_text()} {dns.rdatatype.to_text(question.rdtype)}"
        self.queries.append((transport, key, query.flags, query.ednsflags))
        response = dns.message.make_response(query)
        if not query.flags & dns.flags.RD:  # a validating resolver answers non-recursive queries from cache only
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        if key.startswith("stuck.") and transport == "tcp":
            return None
        if key.startswith(("big.", "stuck.")) and transport == "udp":
            response.flags |= dns.flags.TC
            return response.to_wire()
        rcode, ad, records = self.table.get(key, (dns.rcode.NXDOMAIN, False, []))
        response.set_rcode(dns.rcode.Rcode(rcode))
        if ad and query.flags & dns.flags.AD and query.ednsflags & dns.flags.DO:
            response.flags |= dns.flags.AD
        if records:
            response.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", question.rdtype, records))
        return response.to_wire()


def bound_pair() -> tuple[socket.socket, socket.socket]:
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(udp.getsockname())
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(8)
        return udp, tcp
    raise RuntimeError("no free port for both UDP and TCP on 127.0.0.1")


def read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


@pytest.fixture
def resolver() -> Iterator[Resolver]:
    udp, tcp = bound_pair()
    udp.settimeout(0.1)
    tcp.settimeout(0.1)
    server = Resolver(udp.getsockname())
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve_udp() -> None:
        while not stop.is_set():
            try:
                data, peer = udp.recvfrom(4096)
            except TimeoutError:
                continue
            wire = server.answer("udp", data)
            if wire is not None:
                udp.sendto(wire, peer)

    def serve_tcp() -> None:
        while not stop.is_set():
            try:
                conn, _ = tcp.accept()
            except TimeoutError:
                continue
            held.append(conn)
            conn.settimeout(2)
            try:
                (size,) = struct.unpack("!H", read_exactly(conn, 2))
                wire = server.answer("tcp", read_exactly(conn, size))
                if wire is not None:
                    conn.sendall(struct.pack("!H", len(wire)) + wire)
            except (OSError, EOFError):
                pass

    threads = [threading.Thread(target=serve_udp, daemon=True), threading.Thread(target=serve_tcp, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        yield server
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for conn in held:
            conn.close()
        udp.close()
        tcp.close()


def test_queries_go_with_recursion_desired_the_ad_and_the_do_bit(resolver: Resolver) -> None:
    resolver.table["example.net. MX"] = (dns.rcode.NOERROR, True, ["10 mx1.example.net."])
    assert danefirst.dns_lookup("example.net", "MX", resolver.address) == Answer(
        "NOERROR", True, ("10 mx1.example.net.",))
    assert resolver.queries == [("udp", "example.net. MX", dns.flags.RD | dns.flags.AD, dns.flags.DO)]


def test_a_truncated_answer_is_asked_again_over_tcp_of_the_same_resolver(resolver: Resolver) -> None:
    records = [f"3 1 1 {i:064x}" for i in range(3)]
    resolver.table["big.example.net. TLSA"] = (dns.rcode.NOERROR, True, records)
    answer = danefirst.dns_lookup("big.example.net", "TLSA", resolver.address)
    assert (answer.rcode, answer.ad, sorted(answer.records)) == ("NOERROR", True, records)  # a set: any order
    flags = dns.flags.RD | dns.flags.AD
    assert resolver.queries == [("udp", "big.example.net. TLSA", flags, dns.flags.DO),
                                ("tcp", "big.example.net. TLSA", flags, dns.flags.DO)]


def test_a_tcp_retry_that_is_never_answered_is_a_timeout_within_the_lookup_timeout(
        resolver: Resolver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(danefirst, "LOOKUP_TIMEOUT", 1.0)  # UDP answers well within it
    result: list[object] = []

    def ask() -> None:
        try:
            result.append(danefirst.dns_lookup("stuck.example.net", "TLSA", resolver.address))
        except BaseException as error:  # reported by the assertion below
            result.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(8)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), "the TCP query waited past its timeout"
    assert result == [Answer("TIMEOUT", False)]
    assert 0.9 <= elapsed < 4
    assert [(transport, key) for transport, key, _, _ in resolver.queries] == [
        ("udp", "stuck.example.net. TLSA"), ("tcp", "stuck.example.net. TLSA")]

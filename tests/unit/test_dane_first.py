"""The DANE-first socketmap (outboundTls: dane+mta-sts) without Postfix: its decisions, its framing, its DNS.

Its DNS half is judged against a small DNS server on loopback that answers as a validating resolver does
(the AD flag when it vouched); the lab (tests/real/test_lab_mta_sts.py) runs it under Postfix against unbound.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from mailhost.publish import danefirst
from mailhost.publish.danefirst import Answer

SIGNED_MX = Answer("NOERROR", True, ("20 mx2.example.net.", "10 mx1.example.net."))


def lookups(table: dict[tuple[str, str], Answer]) -> tuple[danefirst.Lookup, list[tuple[str, str]]]:
    asked: list[tuple[str, str]] = []

    def lookup(name: str, rdtype: str) -> Answer:
        asked.append((name, rdtype))
        return table.get((name, rdtype), Answer("NXDOMAIN", True))

    return lookup, asked


def test_a_signed_mx_with_a_validated_tlsa_is_dane_and_the_hosts_are_asked_by_preference() -> None:
    lookup, asked = lookups({("example.net", "MX"): SIGNED_MX,
                             ("_25._tcp.mx1.example.net", "TLSA"): Answer("NOERROR", True, ()),
                             ("_25._tcp.mx2.example.net", "TLSA"): Answer("NOERROR", True, ("3 1 1 ab",))})
    assert danefirst.decide("example.net", lookup) == "OK dane"
    assert asked == [("example.net", "MX"), ("_25._tcp.mx1.example.net", "TLSA"),
                     ("_25._tcp.mx2.example.net", "TLSA")]


@pytest.mark.parametrize(("mx", "tlsa", "reply"), [
    (Answer("NOERROR", False, ("10 mx1.example.net.",)), Answer("NOERROR", True, ("3 1 1 ab",)), "NOTFOUND "),
    (SIGNED_MX, Answer("NOERROR", False, ("3 1 1 ab",)), "NOTFOUND "),  # the MX host's zone is unsigned
    (SIGNED_MX, Answer("NXDOMAIN", True), "NOTFOUND "),  # proven: no TLSA
    (SIGNED_MX, Answer("SERVFAIL", False), "OK dane"),  # Postfix's own DANE decides that host (and defers)
    (SIGNED_MX, Answer("TIMEOUT", False), "OK dane"),
    (Answer("NXDOMAIN", True), Answer("NOERROR", True, ("3 1 1 ab",)), "NOTFOUND "),
    (Answer("NOERROR", True, ("0 .",)), Answer("NOERROR", True, ("3 1 1 ab",)), "NOTFOUND "),  # null MX
])
def test_what_each_answer_decides(mx: Answer, tlsa: Answer, reply: str) -> None:
    table = {("example.net", "MX"): mx}
    for host in ("mx1.example.net", "mx2.example.net", "example.net"):
        table[(f"_25._tcp.{host}", "TLSA")] = tlsa
    assert danefirst.decide("example.net", lookups(table)[0]) == reply


def test_a_domain_without_mx_records_is_its_own_mx() -> None:
    lookup, asked = lookups({("example.net", "MX"): Answer("NOERROR", True, ()),
                             ("_25._tcp.example.net", "TLSA"): Answer("NOERROR", True, ("3 1 1 ab",))})
    assert danefirst.decide("example.net", lookup) == "OK dane"
    assert asked[-1] == ("_25._tcp.example.net", "TLSA")


@pytest.mark.parametrize("rcode", ["SERVFAIL", "TIMEOUT", "REFUSED"])
def test_a_resolver_that_cannot_answer_holds_the_mail(rcode: str) -> None:
    lookup, _ = lookups({("example.net", "MX"): Answer(rcode, False)})
    assert danefirst.decide("example.net", lookup) == (
        f"TEMP the validating resolver gave no answer for example.net MX ({rcode}); the mail waits")


@pytest.mark.parametrize("key", [".example.net", "[198.51.100.1]", "198.51.100.1", "localhost", "a..b.net",
                                 "-a.example.net", "a-.example.net", "x" * 64 + ".net", ("a" * 60 + ".") * 5 + "net",
                                 "exa mple.net", "example.net.", "ex_ample.net"])
def test_a_key_that_is_no_domain_is_not_looked_up(key: str) -> None:
    lookup, asked = lookups({})
    assert danefirst.decide(key, lookup) == "NOTFOUND " and asked == []


def test_at_most_ten_mx_hosts_are_asked_and_bad_names_are_skipped() -> None:
    records = (*(f"{i} mx{i}.example.net." for i in range(30)), "1 bad_name.example.net.", "x y.", "5")
    lookup, asked = lookups({("example.net", "MX"): Answer("NOERROR", True, records)})
    assert danefirst.decide("example.net", lookup) == "NOTFOUND "
    # by preference, then name: mx0, bad_name (1, skipped), mx1 (1), mx2 ... mx8 are the first ten
    assert [name for name, _ in asked[1:]] == [f"_25._tcp.mx{i}.example.net" for i in range(9)]


def test_requests_are_parsed_whole_and_the_key_lowercased() -> None:
    lookup, asked = lookups({("example.net", "MX"): Answer("NOERROR", False)})
    assert danefirst.reply(b"dane Example.NET", lookup) == b"NOTFOUND "
    assert asked == [("example.net", "MX")]
    for bad in (b"dane", b"dane  example.net", b"dane example.net extra", b"Dane example.net", b"dane ex\x00ample",
                b"dane " + b"a" * 301, b""):
        assert danefirst.reply(bad, lookup) == b"PERM malformed request"


def test_serve_answers_each_netstring_in_order_and_stops_at_anything_else() -> None:
    lookup, _ = lookups({})
    out = io.BytesIO()
    danefirst.serve(io.BytesIO(b"16:dane example.net,13:dane .example,3:abc,x:"), out, lookup)
    assert out.getvalue() == b"9:NOTFOUND ,9:NOTFOUND ,22:PERM malformed request,"
    for broken in (b"5:abc,", b"4:dane;", b"12345:", b"2000:" + b"a" * 2000 + b",", b":,", b"-1:"):
        out = io.BytesIO()
        danefirst.serve(io.BytesIO(broken + b"16:dane example.net,"), out, lookup)
        assert out.getvalue() == b"", broken


@pytest.fixture
def resolver() -> Iterator[tuple[tuple[str, int], dict[str, tuple[int, bool, list[str]]]]]:
    """A DNS server on 127.0.0.1 that answers from a table: name/type -> (rcode, AD, records)."""
    table: dict[str, tuple[int, bool, list[str]]] = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            question = query.question[0]
            key = f"{question.name.to_text()} {dns.rdatatype.to_text(question.rdtype)}"
            if key.startswith("silent."):
                continue
            rcode, ad, records = table.get(key, (dns.rcode.NXDOMAIN, False, []))
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.Rcode(rcode))
            if ad and query.flags & dns.flags.AD and query.ednsflags & dns.flags.DO:
                response.flags |= dns.flags.AD
            if records:
                response.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", question.rdtype, records))
            sock.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname(), table
    finally:
        stop.set()
        thread.join()
        sock.close()


def test_the_dns_half_reads_rcode_ad_and_records(
        resolver: tuple[tuple[str, int], dict[str, tuple[int, bool, list[str]]]]) -> None:
    address, table = resolver
    table["example.net. MX"] = (dns.rcode.NOERROR, True, ["10 mx1.example.net."])
    table["insecure.example. MX"] = (dns.rcode.NOERROR, False, ["10 mx.insecure.example."])
    table["bogus.example. MX"] = (dns.rcode.SERVFAIL, False, [])
    assert danefirst.dns_lookup("example.net", "MX", address) == Answer("NOERROR", True, ("10 mx1.example.net.",))
    assert danefirst.dns_lookup("insecure.example", "MX", address) == Answer(
        "NOERROR", False, ("10 mx.insecure.example.",))
    assert danefirst.dns_lookup("bogus.example", "MX", address) == Answer("SERVFAIL", False, ())
    assert danefirst.dns_lookup("nosuch.example", "MX", address) == Answer("NXDOMAIN", False, ())
    # records of another type in the answer are not this type's
    table["cname.example. TLSA"] = (dns.rcode.NOERROR, True, [])
    assert danefirst.dns_lookup("cname.example", "TLSA", address).records == ()


def test_a_resolver_that_does_not_answer_is_a_timeout(
        resolver: tuple[tuple[str, int], dict[str, tuple[int, bool, list[str]]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(danefirst, "LOOKUP_TIMEOUT", 0.3)
    assert danefirst.dns_lookup("silent.example", "MX", resolver[0]) == Answer("TIMEOUT", False)


def test_the_pushed_program_is_this_file() -> None:
    assert danefirst.own_source() == Path(danefirst.__file__).read_text(encoding="utf-8")
    assert danefirst.own_source().startswith("#!/usr/bin/python3\n")


def test_an_mx_host_whose_tlsa_name_cannot_exist_is_passed_over_not_a_crash() -> None:
    """A signed zone may name an MX host of up to 253 characters; `_25._tcp.` makes its TLSA name longer than
    DNS allows, so DANE cannot apply to that host: the next one decides (dnspython would raise on the name)."""
    long_host = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 45, "example"])  # 245 characters
    assert len(long_host) == 245 and len(f"_25._tcp.{long_host}") == danefirst.MAX_NAME + 1
    edge_host = long_host[1:]  # 244: its TLSA name is exactly 253 characters, and is asked
    mx = Answer("NOERROR", True, (f"10 {long_host}.", "20 mx2.example.net."))
    lookup, asked = lookups({("example.net", "MX"): mx,
                             ("_25._tcp.mx2.example.net", "TLSA"): Answer("NOERROR", True, ("3 1 1 ab",))})
    assert danefirst.decide("example.net", lookup) == "OK dane"
    assert asked == [("example.net", "MX"), ("_25._tcp.mx2.example.net", "TLSA")]
    lookup, asked = lookups({("example.net", "MX"): Answer("NOERROR", True, (f"10 {edge_host}.",))})
    assert danefirst.decide("example.net", lookup) == "NOTFOUND "
    assert asked == [("example.net", "MX"), (f"_25._tcp.{edge_host}", "TLSA")]


def test_a_name_dns_refuses_is_no_answer_not_an_exception() -> None:
    too_long = "_25._tcp." + ".".join(["a" * 63] * 4)
    assert danefirst.dns_lookup(too_long, "TLSA", ("127.0.0.1", 9)) == Answer("TIMEOUT", False)

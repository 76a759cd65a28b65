"""The hand-built query wire that the multiplexed lookups send: dnspython must read it as meant."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rdatatype
import pytest

from mailhost.dnsquery import _query_wire, _question


@pytest.mark.parametrize("recursion", [True, False])
@pytest.mark.parametrize("name, rdtype", [("jira.example.com", "A"), ("10.100.51.198.in-addr.arpa.", "PTR"),
                                          ("jm1-jira._domainkey.example.com", "TXT")])
def test_query_wire_parses_back(name: str, rdtype: str, recursion: bool) -> None:
    message = dns.message.from_wire(b"\x12\x34" + _query_wire(_question(name, rdtype), recursion))
    assert message.id == 0x1234
    assert len(message.question) == 1
    question = message.question[0]
    assert question.name.to_text(omit_final_dot=True) == name.rstrip(".")
    assert question.rdtype == dns.rdatatype.from_text(rdtype)
    assert bool(message.flags & dns.flags.RD) is recursion
    assert message.edns == 0 and message.payload == 1232


def test_invalid_names_are_refused_before_sending() -> None:
    with pytest.raises(ValueError):
        _question("a" * 64 + ".example.com", "A")
    with pytest.raises(ValueError):
        _question("a..example.com", "A")

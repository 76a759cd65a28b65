"""Where a probe landed and what each failing verdict means, with the fix: the canary's judgement."""

from __future__ import annotations

from dataclasses import dataclass

from mailhost.canary.verdicts import Verdicts

INBOX, JUNK, MISSING = "inbox", "junk", "missing"
OK, LATE, BAD, UNREACHABLE = 0, 1, 2, 3


@dataclass(frozen=True)
class Cause:
    what: str
    fix: str


# One row per verdict a receiver may write: (method, result) → cause and fix.
VERDICT_CAUSES: dict[tuple[str, str], Cause] = {
    ("spf", "fail"): Cause("SPF fail: the receiver saw mail from an address the domain's SPF does not list",
                           "run `mailhost verify --only spf`; if a relay sends, add it to spfExtra"),
    ("spf", "softfail"): Cause("SPF softfail: the sending address is not in the domain's SPF (~all)",
                               "run `mailhost verify --only spf`; if a relay sends, add it to spfExtra"),
    ("spf", "none"): Cause("no SPF record for the envelope sender's domain", "run `mailhost verify --only spf`"),
    ("spf", "temperror"): Cause("the receiver could not look up SPF (a DNS error at the time)",
                                "run `mailhost verify --only spf`; repeat the canary"),
    ("spf", "permerror"): Cause("the SPF record is broken (syntax, or more than 10 lookups)",
                                "run `mailhost verify --only spf`"),
    ("dkim", "fail"): Cause("DKIM fail: the published key differs from the signing key, or the message was "
                            "changed on the way", "run `mailhost verify --only dkim`; then `mailhost status` for "
                            "a hand-edited OpenDKIM key (drift)"),
    ("dkim", "none"): Cause("no DKIM signature: OpenDKIM did not sign the probe",
                            "run `mailhost status` (is opendkim up?) and `mailhost verify --only dkim`"),
    ("dkim", "temperror"): Cause("the receiver could not fetch the DKIM key (a DNS error at the time)",
                                 "run `mailhost verify --only dkim`; repeat the canary"),
    ("dkim", "permerror"): Cause("the DKIM record cannot be read", "run `mailhost verify --only dkim`"),
    ("dmarc", "fail"): Cause("DMARC fail: neither SPF nor DKIM passed for the From domain",
                             "check that fromAddress is in `domain`, then `mailhost verify`"),
    ("dmarc", "none"): Cause("no DMARC record was found", "run `mailhost verify --only dmarc`"),
    ("arc", "fail"): Cause("an ARC chain on the probe failed (a forwarder in between changed it)",
                           "send the canary to the mailbox itself, not through a forwarding address"),
}
REPUTATION = Cause("in Junk although every check passed: the receiver judged the sender's reputation or the content",
                   "check the blocklists (`mailhost verify --dnsbl zen.spamhaus.org`) and the DMARC reports "
                   "(`mailhost reports`); a new address needs a few weeks of steady, wanted mail")
MISSING_CAUSE = Cause("not in the inbox nor in Junk within the wait: refused, still queued, or held by the "
                      "receiver", "run `mailhost status` (queue, bounces and their causes) on the host")
NO_TLS = Cause("the hop from our host to the receiver was not encrypted",
               "run `mailhost status` (TLS ratio); the receiver offered no STARTTLS or the handshake failed")
UNALIGNED = Cause("DKIM passed for another domain than the From domain", "check fromAddress and dkimSelector; "
                  "run `mailhost verify --only dkim`")


def causes(placement: str, verdicts: Verdicts | None, domain: str) -> list[Cause]:
    if placement == MISSING or verdicts is None:
        return [MISSING_CAUSE]
    found = [VERDICT_CAUSES[(m, r)] for m, r in sorted(verdicts.results.items()) if (m, r) in VERDICT_CAUSES]
    dkim_domain = verdicts.dkim_domain
    if verdicts.results.get("dkim") == "pass" and dkim_domain and not (
            dkim_domain == domain or dkim_domain.endswith("." + domain) or domain.endswith("." + dkim_domain)):
        found.append(UNALIGNED)
    if verdicts.tls is False:
        found.append(NO_TLS)
    if placement == JUNK and not found:
        found.append(REPUTATION)
    return found


def failing(verdicts: Verdicts) -> bool:
    """An authentication failure the receiver wrote (any method not pass, none for ARC aside)."""
    return any(result != "pass" for method, result in verdicts.results.items() if method != "arc") or \
        verdicts.results.get("arc") == "fail"


def exit_code(placement: str, verdicts: Verdicts | None, late: bool) -> int:
    if placement != INBOX or verdicts is None or failing(verdicts):  # as causes(): no headers read, not judged
        return BAD
    return LATE if late else OK

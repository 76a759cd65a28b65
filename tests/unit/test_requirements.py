"""The receivers' sender requirements, marked from check results alone (no DNS)."""

from __future__ import annotations

import io
import json

from rich.console import Console

from mailhost.cli.verify import print_report
from mailhost.verify import requirements as rq
from mailhost.verify.checks import CheckResult
from mailhost.verify.run import Report

IP4, IP6 = "198.51.100.10", "2001:db8::10"


def good() -> list[CheckResult]:
    ids = ["spf:count", "spf:syntax", "spf:lookups", "spf:voids", f"spf:eval:{IP4}", f"spf:eval:{IP6}",
           "dkim:jm1-jira", "dmarc", "dmarc:tags", f"ptr:{IP4}", f"fcrdns:{IP4}", f"helo:{IP4}", "mx"]
    return [CheckResult(i, "pass", "ok") for i in ids] + [CheckResult("dnssec", "info", "not signed")]


def with_(checks: list[CheckResult], check_id: str, status: str, lookup_error: bool = False) -> list[CheckResult]:
    return [CheckResult(c.id, status, "x", "fix it", lookup_error) if c.id == check_id else c  # type: ignore[arg-type]
            for c in checks]


def marks(checks: list[CheckResult]) -> dict[str, str]:
    return {j.requirement.text: j.mark for j in rq.evaluate(checks)}


def tiers(checks: list[CheckResult]) -> dict[tuple[str, str], str]:
    return {(r.provider, r.tier): r.mark for r in rq.receivers(rq.evaluate(checks))}


SPF_OR_DKIM, SPF, DKIM, PTR = "SPF or DKIM passes", "SPF passes", "DKIM passes", \
    "PTR for each sending IP, forward-confirmed"
DMARC, ALIGNED = "DMARC published (p=none or stricter)", "From domain aligned with SPF or DKIM (DMARC passes)"


def test_a_clean_report_passes_every_checkable_requirement() -> None:
    got = marks(good())
    assert got == {SPF_OR_DKIM: "pass", SPF: "pass", DKIM: "pass", PTR: "pass", DMARC: "pass", ALIGNED: "pass",
                   "TLS in transit": "not checkable from DNS",
                   "spam complaint rate under 0.3%": "not checkable from DNS",
                   "RFC 5322 message format": "not checkable from DNS",
                   "one-click unsubscribe (RFC 8058) on marketing mail": "not checkable from DNS"}
    assert set(tiers(good()).values()) == {"pass"}
    assert set(tiers(good())) == {("Gmail", "all"), ("Gmail", "bulk"), ("Yahoo", "all"), ("Yahoo", "bulk"),
                                  ("Microsoft", "bulk")}, "Microsoft publishes nothing below 5,000 a day"


def test_spf_failing_fails_the_bulk_tiers_but_dkim_still_carries_all_senders() -> None:
    checks = with_(good(), f"spf:eval:{IP4}", "fail")
    got = marks(checks)
    assert (got[SPF_OR_DKIM], got[SPF], got[DKIM], got[ALIGNED]) == ("pass", "fail", "pass", "pass")
    assert tiers(checks) == {("Gmail", "all"): "pass", ("Gmail", "bulk"): "fail", ("Yahoo", "all"): "pass",
                             ("Yahoo", "bulk"): "fail", ("Microsoft", "bulk"): "fail"}
    for limit in ("spf:lookups", "spf:voids", "spf:count", "spf:syntax"):
        assert marks(with_(good(), limit, "fail"))[SPF] == "fail", limit


def test_neither_spf_nor_dkim_fails_everything_that_rests_on_them() -> None:
    checks = with_(with_(good(), f"spf:eval:{IP6}", "fail"), "dkim:jm1-jira", "fail")
    got = marks(checks)
    assert (got[SPF_OR_DKIM], got[ALIGNED], got[DMARC]) == ("fail", "fail", "pass")
    assert set(tiers(checks).values()) == {"fail"}


def test_warnings_pass_and_softened_paths_do_not_count() -> None:
    checks = with_(with_(good(), "dmarc", "warn"), f"spf:eval:{IP6}", "warn")  # p=none; IPv6 not used to send
    got = marks(checks)
    assert (got[SPF], got[DMARC], got[ALIGNED]) == ("pass", "pass", "pass")


def test_reverse_dns_and_dmarc_each_fail_their_own_rows() -> None:
    no_ptr = with_(good(), f"fcrdns:{IP4}", "fail")
    assert marks(no_ptr)[PTR] == "fail" and tiers(no_ptr)[("Gmail", "all")] == "fail"
    assert tiers(no_ptr)[("Gmail", "bulk")] == "fail", "a bulk sender must meet the all-senders rules too"
    assert tiers(no_ptr)[("Yahoo", "bulk")] == "pass"
    no_dmarc = with_(good(), "dmarc", "fail")
    assert (marks(no_dmarc)[DMARC], marks(no_dmarc)[ALIGNED]) == ("fail", "fail")
    assert tiers(no_dmarc)[("Gmail", "all")] == "pass" and tiers(no_dmarc)[("Microsoft", "bulk")] == "fail"


def test_what_did_not_run_or_did_not_answer_is_not_checked_never_pass_or_fail() -> None:
    unanswered = with_(good(), "dkim:jm1-jira", "fail", lookup_error=True)
    got = marks(unanswered)
    assert (got[DKIM], got[SPF_OR_DKIM], got[ALIGNED]) == ("not checked", "pass", "pass")
    assert tiers(unanswered)[("Gmail", "bulk")] == "not checked"
    only_dkim = [CheckResult("dkim:jm1-jira", "pass", "ok")]
    assert marks(only_dkim)[SPF] == "not checked" and marks(only_dkim)[SPF_OR_DKIM] == "pass"
    assert marks(only_dkim)[PTR] == "not checked" and marks(only_dkim)[DMARC] == "not checked"
    unknown_key = [c for c in good() if not c.id.startswith("dkim:")] + [CheckResult("dkim", "warn", "no selector")]
    assert marks(unknown_key)[DKIM] == "not checked"
    spf_down = with_(with_(good(), f"spf:eval:{IP4}", "fail", lookup_error=True), "dkim:jm1-jira", "fail")
    assert marks(spf_down)[SPF_OR_DKIM] == "not checked", "SPF might have passed"


def test_json_shape_and_report_integration() -> None:
    report = Report(good())
    data = json.loads(report.to_json())
    assert set(data) == {"ok", "checks", "requirements", "receivers"}
    first = data["requirements"][0]
    assert first == {"requirement": SPF_OR_DKIM, "status": "pass",
                     "required_by": {"gmail": "all", "yahoo": "all", "microsoft": None},
                     "checks": [f"spf:eval:{IP4}", f"spf:eval:{IP6}", "spf:count", "spf:syntax", "spf:lookups",
                                "spf:voids", "dkim:jm1-jira"]}
    assert data["receivers"][-1] == {"provider": "microsoft", "tier": "bulk", "status": "pass",
                                     "not_checkable_from_dns": []}
    quiet = Report(good(), summary=False)  # --only: most checks did not run, so no verdicts on requirements
    assert quiet.to_dict()["requirements"] == [] and quiet.to_dict()["receivers"] == []


def test_printed_table_on_a_terminal_and_in_logs() -> None:
    for terminal in (True, False):
        out = io.StringIO()
        print_report(Report(with_(good(), f"ptr:{IP4}", "fail")), Console(file=out, force_terminal=terminal,
                                                                           width=200, color_system=None))
        text = out.getvalue()
        assert "receiver requirements (from the checks above; bulk: 5,000+ messages a day)" in text
        assert "Gmail all senders: fail · Gmail bulk: fail · Yahoo all senders: pass" in text
        assert "12 pass, 0 warn, 1 fail, 1 info" in text
    assert "  FAIL                   PTR for each sending IP, forward-confirmed [Gmail all senders]\n" in text
    quiet = io.StringIO()
    print_report(Report(good(), summary=False), Console(file=quiet, force_terminal=False, width=200))
    assert "receiver requirements" not in quiet.getvalue()


def test_the_readme_table_lists_exactly_these_requirements_and_tiers() -> None:
    from pathlib import Path

    readme = Path(__file__).resolve().parents[2].joinpath("README.md").read_text()
    heading = "| requirement (`REQUIREMENTS` in `mailhost/verify/requirements.py`)"
    table = readme.split(heading, 1)[1].split("\n\n", 1)[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table.splitlines()[2:]]
    documented = {row[0]: {p: row[2 + i] for i, p in enumerate(rq.PROVIDERS)} for row in rows}
    assert documented == {r.text: {p: r.tiers.get(p, "–") for p in rq.PROVIDERS} for r in rq.REQUIREMENTS}
    uncheckable = {row[0] for row in rows if row[1] == "not checkable from DNS"}
    assert uncheckable == {r.text for r in rq.REQUIREMENTS if r.judge is None}

"""The Prometheus alerting rules (files/prometheus/jira-mailhost.rules.yml) load in real promtool, pass
their unit tests (tests/fixtures/prometheus/jira-mailhost.rules.test.yml: each alert fires when it
should and not for its near misses), and use only the metrics the collector writes into
`jira_mailhost.prom`. promtool comes from Debian's `prometheus` package (setup.sh); missing, it fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "files" / "prometheus" / "jira-mailhost.rules.yml"
RULE_TESTS = ROOT / "tests" / "fixtures" / "prometheus" / "jira-mailhost.rules.test.yml"

# Every metric the collector (mailhost/publish/mailstats.py) writes; the README's metrics table lists the same.
METRICS = frozenset({
    "jira_mailhost_up",
    "jira_mailhost_queue_messages",
    "jira_mailhost_queue_oldest_age_seconds",
    "jira_mailhost_queue_tls_held_messages",
    "jira_mailhost_queue_tls_held_oldest_age_seconds",
    "jira_mailhost_recent_deliveries",
    "jira_mailhost_recent_window_seconds",
    "jira_mailhost_log_readable",
    "jira_mailhost_tls_delivery_ratio",
    "jira_mailhost_tls_messages_per_handshake",
    "jira_mailhost_recent_sent_by_tls_trust",
    "jira_mailhost_relay_daily_cap",  # only with delivery.relay.maxPerDay
    "jira_mailhost_relay_sent_last_day",
    "jira_mailhost_config_digest_match",
    "jira_mailhost_config_files_changed",
    "jira_mailhost_collector_last_run_timestamp_seconds",
}) | {  # `mailhost canary --metrics` (mailhost/canary/export.py)
    "jira_mailhost_canary_reachable",
    "jira_mailhost_canary_placement",
    "jira_mailhost_canary_delay_seconds",
    "jira_mailhost_canary_auth_failures",
    "jira_mailhost_canary_last_success_timestamp_seconds",
    "jira_mailhost_canary_last_run_timestamp_seconds",
} | {  # `mailhost reports --metrics` (mailhost/reports/export.py)
    "jira_mailhost_dmarc_messages",
    "jira_mailhost_dmarc_pass_ratio",
    "jira_mailhost_dmarc_unknown_source_messages",
    "jira_mailhost_dmarc_ramp_ready",
    "jira_mailhost_dmarc_reports_refused",
    "jira_mailhost_dmarc_collector_last_run_timestamp_seconds",
}

# PromQL words that look like metric names but are not (operators and modifiers; functions and
# aggregations are recognised by the `(` after them).
_PROMQL_WORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                           "offset", "bool", "inf", "nan", "atan2"})


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (enough PromQL for alert rules, not a full parser)."""
    text = re.sub(r"#[^\n]*", "", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if match.group().lower() in _PROMQL_WORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(match.group())
    return names


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    assert [g["name"] for g in doc["groups"]] == ["jira-mailhost"], doc["groups"]
    rules: list[dict[str, Any]] = doc["groups"][0]["rules"]
    return rules


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run ./setup.sh (it installs Debian's `prometheus` package, which ships it)")
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules_accepts_every_rule() -> None:
    run = _promtool("check", "rules", str(RULES), cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in run.stdout, run.stdout


def test_promtool_unit_tests_pass() -> None:
    # The test file names the rules relative to itself; run from elsewhere to show that holds.
    suite = yaml.safe_load(RULE_TESTS.read_text())
    assert [(RULE_TESTS.parent / f).resolve() for f in suite["rule_files"]] == [RULES]
    run = _promtool("test", "rules", str(RULE_TESTS), cwd=ROOT / "tests")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout and "FAILED" not in run.stdout, run.stdout


def test_every_alert_has_a_firing_case_and_the_cases_name_only_real_alerts() -> None:
    suite = yaml.safe_load(RULE_TESTS.read_text())
    cases = [case for test in suite["tests"] for case in test["alert_rule_test"]]
    alerts = {rule["alert"] for rule in _rules()}
    assert {case["alertname"] for case in cases} == alerts
    assert {case["alertname"] for case in cases if case.get("exp_alerts")} == alerts


def test_each_rule_has_for_severity_and_text() -> None:
    rules = _rules()
    assert len(rules) == 15, [r.get("alert") for r in rules]
    for rule in rules:
        assert "alert" in rule and rule.get("for"), rule
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), rule


def test_rules_use_only_the_collectors_metrics() -> None:
    for rule in _rules():
        used = metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert used <= METRICS, f"{rule['alert']}: unknown metrics {sorted(used - METRICS)}"
        # annotation templates may query metrics too
        for text in rule["annotations"].values():
            queried = set(re.findall(r"\bjira_mailhost_\w+", text))
            assert queried <= METRICS, f"{rule['alert']}: unknown metrics {sorted(queried - METRICS)}"


def test_the_metric_list_is_what_the_three_writers_write() -> None:
    """The list above against the families the collector, the canary and the reports actually write."""
    from mailhost.canary import causes
    from mailhost.canary import export as canary_export
    from mailhost.canary.run import Result
    from mailhost.canary.verdicts import Verdicts
    from mailhost.publish import mailstats
    from mailhost.reports import export as reports_export
    from mailhost.reports.judge import summarize

    report = {"services": {"postfix": True}, "queue": mailstats.read_queue(0, ["/nonexistent/postqueue"]),
              "causes": [], "deliveries": {"sent": 0}, "window_seconds": 60, "log": {"problem": None},
              "tls": mailstats.summarize([], 0)["tls"], "config": {"changed": [], "missing": [],
                                                                                 "pushed": True},
              "collected_at": 0, "relay_day": {"cap": 10, "sent": 1}}
    found = Result("jira", "a@example.org", "t", causes.INBOX, "INBOX", 1.0, Verdicts({}, None, None, None, True, 1))
    texts = [mailstats.metrics(report), canary_export.metrics([found], 60, 0, {}),
             reports_export.metrics(summarize([], 0, 1, "none", lambda ip: "unknown"), 0, 0)]
    written = {line.split()[2] for text in texts for line in text.splitlines() if line.startswith("# TYPE ")}
    assert written == METRICS


def test_metric_names_finds_what_an_expression_selects() -> None:
    expr = ('sum by (instance) (rate(node_textfile_mtime_seconds{file="jira_mailhost.prom"}[5m])) > 1e3\n'
            "  unless on (instance, job) jira_mailhost_up offset 5m  # up_comment\n"
            "  and ignoring (queue) time() - jira_mailhost_upp > bool 0x1F")
    assert metric_names(expr) == {"node_textfile_mtime_seconds", "jira_mailhost_up", "jira_mailhost_upp"}


def test_the_readme_tables_list_the_metrics_and_the_alerts() -> None:
    section = (ROOT / "README.md").read_text().split("### Metrics and alerts", 1)[1].split("\n## ", 1)[0]
    section += (ROOT / "README.md").read_text().split("## Does the mail reach the inbox?", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_A-Z]+)` \|", section, re.MULTILINE)
    assert {r for r in rows if r.startswith("jira_mailhost_")} == METRICS
    assert {r for r in rows if r.startswith("JiraMail")} == {rule["alert"] for rule in _rules()}

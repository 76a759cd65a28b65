"""`mailhost verify --outputs`: the stack's `verification` output read back, or refused with the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mailhost.publish import previewed
from mailhost.records.expected import Expected, ExpectedError, ExpectedHost, expected_from_outputs

EXPECTED = Expected(domain="example.com", hosts=(ExpectedHost("jira.example.com", ipv4="198.51.100.20"),),
                    spf_includes=("include:_spf.example.net",), dmarc_policy="reject")


def test_the_verification_output_is_read_as_text_or_as_an_object() -> None:
    text = EXPECTED.to_json()
    assert expected_from_outputs({"verification": text}) == EXPECTED
    assert expected_from_outputs({"verification": json.loads(text)}) == EXPECTED


@pytest.mark.parametrize(("outputs", "message"), [
    ({}, "the outputs have no 'verification' key"),
    ({"verification": "[secret]"}, "run `pulumi stack output --json --show-secrets`"),
    ({"verification": "{not json"}, "'verification' is not an expected-state object"),
])
def test_outputs_without_a_readable_verification_are_refused_with_the_fix(outputs: dict[str, str],
                                                                          message: str) -> None:
    with pytest.raises(ExpectedError, match=re.escape(message)):
        expected_from_outputs(outputs)


def test_preview_notes_live_in_the_users_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert previewed.notes_dir() == tmp_path / ".cache" / "jira-mailhost" / "previewed"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert previewed.notes_dir() == tmp_path / "xdg" / "jira-mailhost" / "previewed"

"""Issue #14 (A.6): the redaction safety net masks registered secrets only as whole tokens and only when
long enough to be secrets, so it never garbles paths or words."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from collector.service import logsetup
from collector.service.logsetup import MASK, MIN_SECRET_LEN, add_secrets, redact


@pytest.fixture(autouse=True)
def _clean_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(logsetup, "_secrets", set())
    monkeypatch.setattr(logsetup, "_secrets_re", None)
    yield


def test_short_secrets_are_not_masked_inside_paths() -> None:
    assert MIN_SECRET_LEN >= 6
    add_secrets(["demo", "var", "12345"])
    line = "db open path=var/demo/collector.db calls=12345"
    assert redact(line) == line


def test_secrets_are_masked_as_whole_tokens_only() -> None:
    add_secrets(["s3cr3t-key", "abcdef"])
    assert redact("hash of s3cr3t-key failed") == f"hash of {MASK} failed"
    assert redact("url /x?k=s3cr3t-key&y=1") == f"url /x?k={MASK}&y=1"
    assert redact("('abcdef',)") == f"('{MASK}',)"
    assert redact("xabcdefx abcdefg 1abcdef") == "xabcdefx abcdefg 1abcdef"  # inside longer tokens
    assert redact("path=/srv/abcdef/x.db") == f"path=/srv/{MASK}/x.db"  # a whole path element is one

"""``[api] jwt_secret`` / ``jwt_lifetime``: read, validated (one line naming the key), masked, documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.service.config import ConfigError, HttpSettings, parse_settings

SECRET = "0123456789abcdef0123456789abcdef"  # 32 bytes


def _http(text: str) -> HttpSettings:
    return parse_settings("[api]\n" + text, source="c.ini").http


def test_defaults() -> None:
    http = _http("")
    assert (http.jwt_secret, http.jwt_lifetime) == (None, 900)


def test_values_are_read_and_the_secret_is_masked() -> None:
    http = _http(f"jwt_secret = {SECRET}\njwt_lifetime = 3600\n")
    assert http.jwt_secret == SECRET and http.jwt_lifetime == 3600
    assert SECRET not in repr(http)
    assert _http("jwt_secret =\n").jwt_secret is None  # empty: generated key file


@pytest.mark.parametrize(("line", "where"), [
    ("jwt_secret = short", "c.ini: [api] jwt_secret: too short: at least 32 bytes"),
    (f"jwt_secret = {SECRET[:-1]}", "c.ini: [api] jwt_secret: too short: at least 32 bytes"),
    ("jwt_lifetime = 9", "c.ini: [api] jwt_lifetime: 9 out of range 10..604800"),
    ("jwt_lifetime = 604801", "c.ini: [api] jwt_lifetime: 604801 out of range 10..604800"),
    ("jwt_lifetime = 15m", "c.ini: [api] jwt_lifetime: not an integer: '15m'"),
    ("jwt_lifetim = 60", "c.ini: [api] jwt_lifetim: unknown key (did you mean 'jwt_lifetime'?)"),
])
def test_bad_values_name_the_key(line: str, where: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _http(line + "\n")
    assert str(exc.value).startswith(where) and "\n" not in str(exc.value)
    assert "0123456789abcdef0123456789abcde" not in str(exc.value)


def test_the_example_documents_both_keys_with_their_defaults() -> None:
    example = (Path(__file__).parent.parent / "config.example.ini").read_text()
    api_section = example.split("[api]", 1)[1].split("\n[", 1)[0]
    lines = [ln.strip() for ln in api_section.splitlines()]
    assert "jwt_secret =" in lines and "jwt_lifetime = 900" in lines
    assert parse_settings(example, source="config.example.ini").http == HttpSettings()

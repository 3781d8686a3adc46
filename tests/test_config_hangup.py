"""``[hangup]``: off by default, every key validated with one line naming it, unknown keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.auth import Principal, Role
from collector.refdata.model import User
from collector.service.config import ConfigError, load_settings, parse_settings
from collector.service.hangup import HangupSettings

BASE = "[database]\npath = c.db\n"


def principal(role: str) -> Principal:
    return Principal(Role(role), User(id=7, username="x", usertype=role, owner_id=0))


def test_off_by_default_and_safe() -> None:
    s = parse_settings(BASE)
    assert s.hangup == HangupSettings()
    assert (s.hangup.enabled, s.hangup.users_may_hang_up, s.hangup.rate_per_server, s.hangup.confirm_timeout) == (
        False, False, 20.0, 5.0)
    policy = s.hangup.policy()
    assert not any(policy.may_hang_up(principal(r)) for r in ("admin", "reseller", "user", "accountant"))


def test_every_key() -> None:
    s = parse_settings(BASE + "[hangup]\nenabled = yes\nusers_may_hang_up = yes\nrate_per_server = 2.5\n"
                              "confirm_timeout = 0.5\n")
    assert s.hangup == HangupSettings(enabled=True, users_may_hang_up=True, rate_per_server=2.5, confirm_timeout=0.5)
    policy = s.hangup.policy()
    assert [policy.may_hang_up(principal(r)) for r in ("admin", "reseller", "user", "accountant")] == [
        True, True, True, False]
    users_off = parse_settings(BASE + "[hangup]\nenabled = yes\n").hangup.policy()
    assert [users_off.may_hang_up(principal(r)) for r in ("admin", "reseller", "user", "accountant")] == [
        True, True, False, False]


@pytest.mark.parametrize(("line", "message"), [
    ("enabled = maybe", "[hangup] enabled: not a boolean (yes/no): 'maybe'"),
    ("users_may_hang_up = 2", "[hangup] users_may_hang_up: not a boolean (yes/no): '2'"),
    ("rate_per_server = 0", "[hangup] rate_per_server: 0.0 out of range 0.01..10000.0"),
    ("rate_per_server = fast", "[hangup] rate_per_server: not a number: 'fast'"),
    ("confirm_timeout = -1", "[hangup] confirm_timeout: -1.0 out of range 0.01..600.0"),
    ("confirm_timout = 3", "[hangup] confirm_timout: unknown key (did you mean 'confirm_timeout'?)"),
])
def test_bad_values_name_their_key(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(BASE + f"[hangup]\n{line}\n", source="c.ini")
    assert str(err.value) == f"c.ini: {message}"


def test_settings_refuse_nonsense_directly() -> None:
    with pytest.raises(ValueError):
        HangupSettings(rate_per_server=0)
    with pytest.raises(ValueError):
        HangupSettings(confirm_timeout=0)


def test_load_settings_keeps_it_and_conf_d_overrides(tmp_path: Path) -> None:
    (tmp_path / "c.ini").write_text(BASE + "[hangup]\nenabled = yes\n")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "h.ini").write_text("[hangup]\nrate_per_server = 3\n")
    s = load_settings(tmp_path / "c.ini")
    assert s.hangup == HangupSettings(enabled=True, rate_per_server=3.0)


def test_the_example_documents_every_key_with_its_default() -> None:
    example = (Path(__file__).parent.parent / "config.example.ini").read_text()
    section = example.split("\n[hangup]", 1)[1].split("\n[", 1)[0]
    pairs = {k.strip().lstrip("; "): v.strip() for k, _, v in (ln.partition("=") for ln in section.splitlines())
             if _ and not k.lstrip().startswith("; ") and " " not in k.strip().lstrip(";")}
    assert set(pairs) == set(HangupSettings.__dataclass_fields__)
    d = HangupSettings()
    assert pairs == {"enabled": "no", "users_may_hang_up": "no", "rate_per_server": f"{d.rate_per_server:g}",
                     "confirm_timeout": f"{d.confirm_timeout:g}"}
    assert parse_settings(example, source="config.example.ini").hangup == d

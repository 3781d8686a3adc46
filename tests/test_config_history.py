"""``[history]``: defaults, each key read, bad values named by section and key, the example's values."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.live.history import HistorySettings
from collector.service.config import ConfigError, load_settings, parse_settings


def test_defaults_without_a_section() -> None:
    h = parse_settings("", source="c.ini").history
    assert h == HistorySettings(enabled=True, retention_days=30, per_user=True)


def test_keys_are_read() -> None:
    h = parse_settings("[history]\nenabled = no\nretention_days = 7\nper_user = no\n", source="c.ini").history
    assert h == HistorySettings(enabled=False, retention_days=7, per_user=False)


@pytest.mark.parametrize(("line", "where"), [
    ("retention_days = 0", "c.ini: [history] retention_days: 0 out of range 1..3650"),
    ("retention_days = 3651", "c.ini: [history] retention_days: 3651 out of range 1..3650"),
    ("retention_days = a month", "c.ini: [history] retention_days: not an integer"),
    ("enabled = maybe", "c.ini: [history] enabled: not a boolean (yes/no)"),
    ("per_user = 2", "c.ini: [history] per_user: not a boolean (yes/no)"),
    ("retention = 5", "c.ini: [history] retention: unknown key (did you mean 'retention_days'?)"),
])
def test_bad_values_name_section_and_key(line: str, where: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings(f"[history]\n{line}\n", source="c.ini")
    assert str(exc.value).startswith(where)


def test_example_documents_every_key_with_its_default() -> None:
    example = (Path(__file__).parent.parent / "config.example.ini").read_text()
    section = example.split("\n[history]", 1)[1].split("\n[", 1)[0]
    keys = {line.split("=", 1)[0].strip() for line in section.splitlines() if "=" in line and not line.startswith(";")}
    assert keys == set(HistorySettings.__dataclass_fields__)
    assert parse_settings(example, source="config.example.ini").history == HistorySettings()


def test_load_settings_keeps_history(tmp_path: Path) -> None:
    path = tmp_path / "c.ini"
    path.write_text("[history]\nretention_days = 2\n")
    assert load_settings(path).history.retention_days == 2

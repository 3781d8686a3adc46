"""Issue #14 (A.6): unknown sections and keys are errors (one line: file, section, key, a suggestion;
exit 2), and the known keys are exactly the ones the parser reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.service.cli import main
from collector.service.config import ConfigError, load_settings, parse_settings
from tests.test_config import GOOD


@pytest.mark.parametrize(("text", "where"), [
    (GOOD.replace("port = 8081", "prot = 8081"), "c.ini: [api] prot: unknown key (did you mean 'port'?)"),
    (GOOD.replace("[api]", "[api]\nmax_bdy = 10"), "c.ini: [api] max_bdy: unknown key (did you mean 'max_body'?)"),
    (GOOD.replace("secret = topsecret", "secert = topsecret"),
     "c.ini: [server:pbx1] secert: unknown key (did you mean 'secret'?)"),
    (GOOD + "[collector]\nreconcile_intervall = 5\n",
     "[collector] reconcile_intervall: unknown key (did you mean 'reconcile_interval'?)"),
    (GOOD + "[collector]\nfrobnicate = 1\n", "c.ini: [collector] frobnicate: unknown key"),
    (GOOD.replace("[database]", "[databse]"), "c.ini: [databse]: unknown section (did you mean [database]?)"),
    (GOOD + "[zzz]\na = 1\n", "c.ini: [zzz]: unknown section (expected "),
])
def test_unknown_sections_and_keys_are_errors_with_a_suggestion(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings(text, source="c.ini")
    msg = str(exc.value)
    assert where in msg and "\n" not in msg and "topsecret" not in msg


def test_known_keys_are_what_the_parser_reads() -> None:
    """Every key of the example config is read; no separate table to keep in step."""
    example = Path(__file__).resolve().parents[1] / "config.example.ini"
    parse_settings(example.read_text(), source="config.example.ini")  # no unknown key in the example


def test_unknown_key_in_a_drop_in_names_that_file_and_exits_2(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.ini"
    cfg.write_text(GOOD)
    (tmp_path / "conf.d").mkdir()
    drop = tmp_path / "conf.d" / "10-local.ini"
    drop.write_text("[api]\nallow_gett = yes\n")
    with pytest.raises(ConfigError, match=r"10-local\.ini: \[api\] allow_gett: unknown key "
                                          r"\(did you mean 'allow_get'\?\)"):
        load_settings(cfg)
    for command in ("check-config", "run"):
        assert main([command, "--config", str(cfg)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "10-local.ini: [api] allow_gett: unknown key" in err, err

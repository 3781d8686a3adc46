"""Config validation: one line naming section and key, exit status 2, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.service.cli import main
from collector.service.config import ConfigError, Secret, load_settings, parse_settings

GOOD = """
[api]
port = 8081
[database]
path = db/c.db
[server:pbx1]
host = 10.0.0.1
username = collector
secret = topsecret
server_id = 3
"""


def test_good_config_and_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "c.ini"
    cfg.write_text(GOOD)
    s = load_settings(cfg)
    assert s.api.port == 8081 and s.api.listen == "127.0.0.1" and not s.api.allow_get
    assert s.database == tmp_path / "db/c.db"
    [srv] = s.servers
    assert (srv.host, srv.port, srv.server_id, srv.events, srv.enabled) == ("10.0.0.1", 5038, 3, "call,system", True)
    assert "topsecret" not in repr(s) and str(srv.secret) == "topsecret"


def test_conf_d_overrides(tmp_path: Path) -> None:
    (tmp_path / "c.ini").write_text(GOOD)
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-local.ini").write_text("[server:pbx1]\nsecret = other\n[collector]\nlog_level = debug\n")
    s = load_settings(tmp_path / "c.ini")
    assert s.servers[0].secret == "other" and s.collector.log_level == "DEBUG"


@pytest.mark.parametrize(("text", "where"), [
    (GOOD.replace("host = 10.0.0.1\n", ""), "[server:pbx1] host: missing"),
    (GOOD.replace("server_id = 3", "server_id = three"), "[server:pbx1] server_id: not an integer"),
    (GOOD.replace("port = 8081", "port = 99999"), "[api] port: 99999 out of range"),
    (GOOD + "[collector]\nping_interval = -1\n", "[collector] ping_interval"),
    (GOOD + "[collector]\nlog_level = LOUD\n", "[collector] log_level"),
    (GOOD.replace("[api]", "[api]\nallow_get = maybe"), "[api] allow_get: not a boolean"),
    (GOOD + "[api]\n", "section 'api' already exists"),
    (GOOD + "[sever:typo]\nhost=x\n", "[sever:typo]"),
    (GOOD + "[server:pbx2]\nhost=x\nusername=u\nsecret=s\nserver_id=3\n", "[server:pbx2] server_id: 3 already used"),
    (GOOD.replace("[api]", "[api]\ntimezone = Mars/Olympus"), "[api] timezone"),
    (GOOD + "[server:pbx1b]\nhost=x\nusername=u\nsecret=s\nserver_id=4\nevents=call;system\n", "[server:pbx1b] events"),
])
def test_bad_values_name_section_and_key(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings(text, source="c.ini")
    assert where in str(exc.value) and "\n" not in str(exc.value)
    assert "topsecret" not in str(exc.value)


def test_cli_exit_status_2_and_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.ini"
    cfg.write_text(GOOD.replace("username = collector\n", ""))
    assert main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "[server:pbx1] username: missing" in err
    assert main(["run", "--config", str(tmp_path / "missing.ini")]) == 2


def test_secret_repr_is_masked() -> None:
    assert repr(Secret("abc")) == "Secret('********')" and Secret("abc") == "abc"

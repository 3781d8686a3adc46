"""Config validation: one line naming section and key, exit status 2, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import ApiSettings
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
    assert s.http.port == 8081 and s.http.listen == "127.0.0.1" and not s.api.allow_get
    assert s.api == ApiSettings()  # every API default comes from ApiSettings itself
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


def _api(lines: str) -> ApiSettings:
    return parse_settings(GOOD.replace("[api]\n", "[api]\n" + lines), source="c.ini").api


@pytest.mark.parametrize(("line", "field", "value"), [
    ("max_param_len = 64", "max_param_len", 64),
    ("max_params = 20", "max_params", 20),
    ("max_body = 1048576", "max_body", 1048576),
    ("body_timeout = 2.5", "body_timeout", 2.5),
    ("hide_older_than_hours = 24", "hide_older_than_hours", 24.0),
    ("hide_older_than_hours = off", "hide_older_than_hours", None),
    ("hide_older_than_hours =", "hide_older_than_hours", None),
    ("prerender_interval = 2", "prerender_interval", 2.0),
    ("prerender_interval = off", "prerender_interval", None),
    ("prerender_interval =", "prerender_interval", 0.5),
    ("paths = /mor/api/active_calls_get", "paths", ("/mor/api/active_calls_get",)),
    ("paths = /a/active_calls_get, /b/active_calls_get", "paths", ("/a/active_calls_get", "/b/active_calls_get")),
    ("enabled = no", "enabled", False),
    ("disable_hash_check = yes", "disable_hash_check", True),
    ("accept_secret_only_hash = yes", "accept_secret_only_hash", True),
    ("timezone = Europe/Vilnius", "timezone", "Europe/Vilnius"),
])
def test_api_key_is_read(line: str, field: str, value: object) -> None:
    api = _api(line + "\n")
    assert getattr(api, field) == value
    others = {f: getattr(api, f) for f in ApiSettings.__dataclass_fields__ if f != field}
    assert others == {f: getattr(ApiSettings(), f) for f in others}  # nothing else moved


@pytest.mark.parametrize(("line", "where"), [
    ("max_param_len = 0", "[api] max_param_len: 0 out of range"),
    ("max_param_len = long", "[api] max_param_len: not an integer"),
    ("max_params = -5", "[api] max_params: -5 out of range"),
    ("max_body = 64k", "[api] max_body: not an integer"),
    ("max_body = 0", "[api] max_body: 0 out of range"),
    ("body_timeout = 0", "[api] body_timeout: 0.0 out of range"),
    ("body_timeout = soon", "[api] body_timeout: not a number"),
    ("hide_older_than_hours = -1", "[api] hide_older_than_hours: -1.0 out of range"),
    ("hide_older_than_hours = a day", "[api] hide_older_than_hours: not a number"),
    ("prerender_interval = 0", "[api] prerender_interval: 0.0 out of range"),
    ("prerender_interval = nan", "[api] prerender_interval: nan out of range"),
    ("paths = billing/api/active_calls_get", "[api] paths: not an absolute URL path"),
    ("paths = /a, /a", "[api] paths: a path is listed twice"),
])
def test_bad_api_value_names_key(line: str, where: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _api(line + "\n")
    assert str(exc.value).startswith("c.ini: ") and where in str(exc.value) and "\n" not in str(exc.value)


def test_every_api_setting_is_documented_in_the_example() -> None:
    """Each ApiSettings field is an ``[api]`` key: the example lists it (so the reader cannot lag behind)."""
    example = (Path(__file__).parent.parent / "config.example.ini").read_text()
    api_section = example.split("[api]", 1)[1].split("\n[", 1)[0]
    keys = {line.split("=", 1)[0].strip().lstrip("; ") for line in api_section.splitlines() if "=" in line}
    assert set(ApiSettings.__dataclass_fields__) <= keys


def test_example_config_parses_to_the_defaults() -> None:
    example = (Path(__file__).parent.parent / "config.example.ini").read_text()
    s = parse_settings(example, source="config.example.ini")
    assert s.api == ApiSettings() and s.http.port == 8080

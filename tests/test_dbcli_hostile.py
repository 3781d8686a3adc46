"""Issue #14 (A.6): ``db export`` masks secrets unless ``--with-secrets`` (never onto a terminal), and the
``db`` commands find the database of ``-c FILE``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from collector.refdata.store import export_db
from collector.service.cli import main
from collector.service.logsetup import MASK

DEMO_SECRETS = ("demo-admin-secret", "demo-reseller-secret")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_export_masks_secrets_unless_asked_and_never_to_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "c.db")
    assert main(["db", "demo", "--db", db]) == 0
    capsys.readouterr()
    assert main(["db", "export", "--db", db]) == 0
    out = capsys.readouterr().out
    assert not any(s in out for s in DEMO_SECRETS)
    users = json.loads(out)["users"]
    assert {u["api_secret_key"] for u in users} <= {MASK, ""} and MASK in {u["api_secret_key"] for u in users}
    masked = tmp_path / "masked.json"
    assert main(["db", "export", "--db", db, "--out", str(masked)]) == 0
    assert not any(s in masked.read_text() for s in DEMO_SECRETS)

    tty = _Tty()
    monkeypatch.setattr("sys.stdout", tty)
    assert main(["db", "export", "--db", db, "--with-secrets"]) == 2
    assert tty.getvalue() == ""
    assert "refusing to write secrets to a terminal" in capsys.readouterr().err
    full = tmp_path / "full.json"
    assert main(["db", "export", "--db", db, "--with-secrets", "--out", str(full)]) == 0  # a file is fine
    assert json.loads(full.read_text()) == export_db(db)
    assert full.stat().st_mode & 0o077 == 0  # not readable by others


def test_db_commands_take_the_database_of_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    etc = tmp_path / "etc"
    etc.mkdir()
    cfg = etc / "c.ini"
    cfg.write_text("[database]\npath = data/ref.db\n")
    assert main(["db", "demo", "-c", str(cfg)]) == 0
    assert (etc / "data" / "ref.db").is_file() and not (tmp_path / "var").exists()
    assert str(etc / "data" / "ref.db") in capsys.readouterr().out
    assert main(["db", "export", "-c", str(cfg)]) == 0
    assert json.loads(capsys.readouterr().out)["users"]
    assert main(["db", "init", "--db", str(tmp_path / "x.db"), "-c", str(cfg)]) == 2
    assert "either --db PATH or -c FILE" in capsys.readouterr().err
    cfg.write_text("[database]\npaht = x.db\n")
    assert main(["db", "init", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "[database] paht: unknown key" in err

"""Issue 13, beyond MOR: ``phase`` and ``stale`` in JSON rows only; MOR's XML row is unchanged."""

from __future__ import annotations

from api.jsonout import row_object, rows_json
from api.rows import RowFields
from api.xml import RowRenderer
from tests.api_support import NOW, ROWS


def test_phase_and_stale_in_json_only() -> None:
    answered = next(r for r in ROWS if r.call.answer_time is not None)
    row = answered._replace(call=answered.call._replace(phase="transferring"))
    fields = RowFields(None, disconnected=lambda: {row.call.server_id})
    obj = row_object(fields, row, NOW)
    assert obj["status"] == "Answered" and obj["phase"] == "transferring" and obj["stale"] is True
    assert list(obj)[-9:] == ["server_id", "server_name", "start_time", "start_epoch", "answer_epoch", "did", "dst",
                              "phase", "stale"]  # the fixed JSON-only keys, then the conditional ones
    plain = row_object(RowFields(None), answered, NOW)
    assert "phase" not in plain and "stale" not in plain
    assert b'"stale":true' in rows_json(fields, [row], NOW)
    xml = RowRenderer(fields).render_calls([row], NOW)
    assert b"<status>Answered</status>" in xml and b"phase" not in xml and b"stale" not in xml

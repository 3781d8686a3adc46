"""Small builders for AMI messages and trace paths shared by the tests."""

from __future__ import annotations

from pathlib import Path

TRACES = Path(__file__).parent / "traces"

ALL_SCENARIOS = (
    "basic_outbound", "no_answer_cancel", "busy_and_congestion", "inbound_did", "local_internal",
    "concurrent_load", "ami_reconnect", "dev_failover", "dev_originate_ivr", "dev_transfers", "dev_queue",
    "dev_load_drop",
)


def _one(pattern: str) -> list[Path]:
    return sorted(TRACES.glob(pattern))


def trace_paths(name: str) -> list[Path]:
    """The session files of a scenario in order (``NAME.ami[.gz]`` then ``NAME.part2.ami[.gz]``)."""
    paths = _one(f"{name}.ami") + _one(f"{name}.ami.gz") + _one(f"{name}.part2.ami") + _one(f"{name}.part2.ami.gz")
    assert paths, f"no trace for {name} in {TRACES}"
    return paths


def truth_path(name: str) -> Path:
    found = _one(f"{name}.truth.jsonl") + _one(f"{name}.truth.jsonl.gz")
    assert found, name
    return found[0]


def chan(event: str, uid: str, linkedid: str | None = None, channel: str = "SIP/101-00000001",
         state: int = 4, ts: float = 100.0, **extra: str) -> dict[str, str]:
    msg = {
        "Event": event, "Privilege": "call,all", "Timestamp": f"{ts:.6f}", "Channel": channel,
        "ChannelState": str(state), "ChannelStateDesc": "x", "CallerIDNum": "101", "CallerIDName": "Alice",
        "ConnectedLineNum": "<unknown>", "ConnectedLineName": "<unknown>", "Language": "en",
        "AccountCode": "", "Context": "from-internal", "Exten": "0063727007886", "Priority": "1",
        "Uniqueid": uid, "Linkedid": linkedid or uid,
    }
    msg.update(extra)
    return msg

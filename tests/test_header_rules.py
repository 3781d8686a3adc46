"""One owner for the AMI header rules (collector/ami/framing.py): ``parse_block``, ``parse_action`` and
``parse_hms`` give exactly what the copies they replaced gave (frozen here as references), on every block of
every bundled trace and on edge cases; run it with and without ``COLLECTOR_NO_EXTENSIONS=1``."""

from __future__ import annotations

import pytest

from collector.ami import framing
from collector.ami.framing import AmiFramer, parse_action, parse_block, parse_hms
from collector.tools import replay
from collector.tools.traces import read_trace
from tests.helpers import ALL_SCENARIOS, trace_paths

EDGE_BLOCKS = [
    b"Event: UserEvent\r\nEvent: again\r\nNo colon here\r\nKey:tight\r\nName: \xff\r\n\r\n",
    b"Event: X\r\nA: \xe2\x82\r\xac\r\nB:: c\r\n: empty key\r\n k : v \r\n\r\n",  # a CR inside invalid UTF-8
    b"\r\n\r\nEvent: Lead\nLF: only\n\n", b"", b"\r\n", b"Response: Success\r\nMessage:\r\n\r\n",
]


def ref_replay_parse_block(raw: bytes) -> dict[str, str]:
    """collector/tools/replay/server.py ``parse_block`` before the split."""
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").replace("\r", "").split("\n"):
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
            if not sep:
                continue
        if key not in out:
            out[key] = value
    return out


def ref_framer_headers(raw: bytes) -> dict[str, str]:
    """The framer's ``_decode_one`` header step before the split (``_parse_lines`` of the CR-free block)."""
    out: dict[str, str] = {}
    for line in raw.replace(b"\r", b"").decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
            if not sep:
                continue
        if key not in out:
            out[key] = value
    return out


def ref_replay_action(text: str) -> dict[str, str]:
    """replay's ``_parse_action`` (on the block decoded with ``errors="replace"``)."""
    out: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.partition(":")
        if not sep:
            continue
        k = key.strip().lower()
        if k and k not in out:
            out[k] = value.strip()
    return out


def ref_bench_action(block: bytes) -> dict[str, str]:
    """bench/ingest.py ``serve_blast``'s action parser."""
    hdr = {}
    for line in block.decode().split("\n"):
        k, _, v = line.partition(":")
        hdr[k.strip().lower()] = v.strip()
    return hdr


def ref_replay_duration(value: str) -> float:
    try:
        h, m, s = (int(x) for x in value.split(":"))
    except ValueError:
        return 0.0
    return float(h * 3600 + m * 60 + s)


def ref_tracker_duration(value: str) -> float:
    try:
        h, m, s = value.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        return 0.0


def _trace_blocks() -> list[bytes]:
    out: list[bytes] = []
    for name in ALL_SCENARIOS:
        for path in trace_paths(name):
            out.extend(replay.trace._iter_blocks(read_trace(path)))
    return out


def test_parse_block_equals_both_former_copies_on_every_bundled_trace_block() -> None:
    blocks = _trace_blocks()
    assert len(blocks) > 20_000
    for raw in blocks + EDGE_BLOCKS:
        assert replay.parse_block(raw) == ref_replay_parse_block(raw), raw
        assert parse_block(raw) == ref_framer_headers(raw), raw
        assert list(replay.parse_block(raw)) == list(ref_replay_parse_block(raw))  # key order too


@pytest.mark.parametrize("accelerate", [True, False])
def test_the_framer_still_gives_the_former_headers_on_every_bundled_trace_block(accelerate: bool) -> None:
    """The framer (C decoder when built and ``accelerate``, else Python) on each block alone."""
    n = 0
    for raw in _trace_blocks() + EDGE_BLOCKS:
        body = raw.lstrip(b"\r\n")
        if body.startswith(b"Asterisk Call Manager/"):
            body = body.partition(b"\n")[2]
        want = ref_framer_headers(body)
        if not body.strip(b"\r\n") or ("Event" not in want and "Response" not in want):
            continue
        got = AmiFramer(accelerate=accelerate).feed(body + b"\r\n\r\n")
        assert got == [want], raw
        assert list(got[0]) == list(want)
        n += 1
    assert n > 20_000


def test_the_two_block_rules_differ_only_in_the_cr_order() -> None:
    raw = EDGE_BLOCKS[1]
    assert parse_block(raw)["A"] == "\u20ac"  # CR dropped first: the euro sign is whole again
    assert parse_block(raw, decode_then_strip_cr=True)["A"] == "\ufffd\ufffd"
    for raw in _trace_blocks()[:2000]:
        assert parse_block(raw) == parse_block(raw, decode_then_strip_cr=True)


ACTIONS = [b"Action: Login\nUsername: u\nSecret: s\nEvents: off", b"action:ping\nActionID: 1\nACTIONID: 2",
           b"Action: Filter\nOperation: Add\nFilter: !Event: VarSet", b"no colon\n: v\nAction: Ping\n",
           b"Action: Logoff\naction", b"", b"\n", b"Action: Events\nEventMask: call, system"]


def test_parse_action_equals_the_replay_and_bench_parsers() -> None:
    for block in ACTIONS + [b"Action: Ping\nX: \xff\xfe"]:
        assert parse_action(block) == ref_replay_action(block.decode("utf-8", "replace"))
    for block in ACTIONS:
        got = parse_action(block, errors="strict", first_wins=False, bare_lines=True)
        assert got == ref_bench_action(block) and list(got) == list(ref_bench_action(block))
    with pytest.raises(UnicodeDecodeError):
        parse_action(b"Action: Ping\nX: \xff", errors="strict", first_wins=False, bare_lines=True)


DURATIONS = ["00:00:00", "01:02:03", "1:2:3", "100:00:01", "00:00:01.5", " 1: 2: 3 ", "1_0:0:0", "-1:0:0",
             "0:0:inf", "0:0:nan", "0:0:1e3", "", "abc", "1:2", "1:2:3:4", "a:b:c", "::"]


def test_parse_hms_equals_the_replay_and_tracker_copies() -> None:
    for value in DURATIONS:
        r, t = ref_replay_duration(value), ref_tracker_duration(value)
        got_r, got_t = parse_hms(value, fractional=False), parse_hms(value)
        assert (got_r == r or (got_r != got_r and r != r)) and type(got_r) is type(r), value
        assert (got_t == t or (got_t != got_t and t != t)) and type(got_t) is type(t), value
    assert parse_hms("00:00:01.5") == 1.5 and parse_hms("00:00:01.5", fractional=False) == 0.0


def test_the_c_decoder_state_is_what_the_environment_asks() -> None:
    import os
    assert framing.ACCELERATED is not bool(os.environ.get("COLLECTOR_NO_EXTENSIONS"))

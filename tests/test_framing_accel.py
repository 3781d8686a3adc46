"""The C decoder (collector/ami/_fast.c) gives exactly what the pure-Python framer gives: on every bundled
trace in random splits, on hostile byte soup, with and without a skip list and a key projection."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.ami import framing as ami_framing
from collector.ami.framing import AmiFramer, AmiMessage, block_decoder
from collector.ami.session import NOISE_EVENTS, SESSION_KEYS
from collector.tools.replay import parse_block, parse_blocks, split_sessions
from collector.tools.traces import read_trace
from collector.tracking.tracker import TRACKER_KEYS
from tests.helpers import ALL_SCENARIOS, trace_paths

FRAGMENTS = [b"Event: ", b"Response: ", b"Event: VarSet\r\n", b"Event: Newstate\r\n", b": ", b":", b"\r\n", b"\n",
             b"\r\n\r\n", b"\n\n", b"Uniqueid", b"Channel", b"Linkedid", b"1.2", b"SIP/1-0", b"\xc3\xa9", b"\xc3",
             b"\xff", b"\x00", b"\t", b"\x0c", b"Asterisk Call Manager/9.0.0\r\n", b"ActionID: resync-1\r\n", b"x",
             b"Event: Hangup\r\nUniqueid: 1.1\r\n"]
KEEP = frozenset(("Uniqueid", "Channel", "ActionID"))


def _all_traces() -> list[Path]:
    return [p for name in ALL_SCENARIOS for p in trace_paths(name)]


def _feed(framer: AmiFramer, data: bytes, cuts: list[int]) -> list[AmiMessage]:
    out: list[AmiMessage] = []
    prev = 0
    for cut in sorted(cuts) + [len(data)]:
        out.extend(framer.feed(data[prev:cut]))
        prev = cut
    out.extend(framer.feed(b"\r\n\r\n"))
    return out


def _assert_projection(fast: list[AmiMessage], slow: list[AmiMessage], keep: frozenset[str] | None) -> None:
    """``keep_keys`` contract: every kept key is there with the Python value; nothing else is invented."""
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow, strict=False):
        if keep is None:
            assert f == s
            continue
        assert all(k in s and s[k] == v for k, v in f.items())
        assert all(k in f for k in s if k in keep or k in ("Event", "Response"))


def test_the_c_decoder_is_built_unless_disabled() -> None:
    # CI installs with a compiler: a silent fall back to pure Python would halve ingest speed unnoticed
    assert ami_framing.ACCELERATED is not bool(os.environ.get("COLLECTOR_NO_EXTENSIONS"))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=60), st.lists(st.integers(0, 400), max_size=6),
       st.booleans(), st.sampled_from([None, KEEP]))
def test_hostile_bytes_decode_identically(pieces: list[bytes], cuts: list[int], skip: bool,
                                          keep: frozenset[str] | None) -> None:
    data = b"".join(pieces)
    cuts = [c for c in cuts if c < len(data)]
    skip_events = ("VarSet",) if skip else ()
    fast = AmiFramer(skip_events, keep)
    slow = AmiFramer(skip_events, keep, accelerate=False)
    _assert_projection(_feed(fast, data, cuts), _feed(slow, data, cuts), keep)
    assert fast.stats == slow.stats


def test_every_bundled_trace_decodes_identically_in_random_splits() -> None:
    rng = random.Random(11)
    total = 0
    for path in _all_traces():
        data = read_trace(path)
        cuts = rng.sample(range(1, len(data)), min(len(data) - 1, 500))
        for skip, keep in (((), None), (NOISE_EVENTS, SESSION_KEYS | TRACKER_KEYS)):
            fast, slow = AmiFramer(skip, keep), AmiFramer(skip, keep, accelerate=False)
            got, want = _feed(fast, data, cuts), _feed(slow, data, cuts)
            _assert_projection(got, want, keep)
            assert fast.stats == slow.stats
            total += len(want)
    assert total > 20_000


def test_replay_batch_parser_equals_parse_block() -> None:
    assert block_decoder() is not None or not ami_framing.ACCELERATED
    raws = [it for path in _all_traces() for s in split_sessions(read_trace(path)) for it in s.items
            if isinstance(it, bytes)]
    raws.append(b"Event: UserEvent\r\nEvent: again\r\nNo colon here\r\nKey:tight\r\nName: \xff\r\n\r\n")
    assert len(raws) > 20_000
    assert parse_blocks(raws, block_decoder()) == [parse_block(r) for r in raws]


def test_the_c_decoder_refuses_misuse_instead_of_crashing() -> None:
    decoder = block_decoder()
    if decoder is None:  # the pure-Python CI pass: nothing to misuse
        assert not ami_framing.ACCELERATED
        return
    decoder_type: Any = type(decoder)  # the C extension's type: untyped
    bare = decoder_type.__new__(decoder_type)  # never initialised
    with pytest.raises(RuntimeError):
        bare.feed(b"Event: X\r\n\r\n", [], lambda raw, out: None)
    with pytest.raises(TypeError):
        decoder.feed("not bytes", [], lambda raw, out: None)
    with pytest.raises(TypeError):
        type(decoder)(("Event: X\n",), None, 10)  # skip prefixes must be bytes
    # an exception raised by the Python fallback propagates, and the decoder stays usable
    with pytest.raises(ZeroDivisionError):
        decoder.feed(b"no colon here\r\n\r\n", [], lambda raw, out: 1 / 0)
    out: list[dict[str, str]] = []
    data = b"Event: Y\r\nA: 1\r\n\r\n"
    assert decoder.feed(data, out, lambda raw, o: None) == (len(data), 1, 0)  # (consumed, messages, skipped)
    assert out == [{"Event": "Y", "A": "1"}]

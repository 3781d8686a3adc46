"""AmiFramer: whole-message decoding in any split, banner, stray LF framing, caps, first-header-wins."""

from __future__ import annotations

import random

import pytest

from collector.ami.framing import BANNER_KEY, MAX_MESSAGE_BYTES, AmiFramer, iter_messages
from collector.tools.traces import read_trace
from tests.helpers import trace_paths

SAMPLE = (b"Asterisk Call Manager/9.0.0\r\nResponse: Success\r\nMessage: Authentication accepted\r\n\r\n"
          b"Event: Newchannel\r\nChannel: SIP/101-00000001\r\nCallerIDName: Jos\xc3\xa9 M\xc3\xbcller\r\n"
          b"Uniqueid: 1.1\r\n\r\n")


def _feed_in_pieces(data: bytes, cuts: list[int]) -> list[dict[str, str]]:
    framer = AmiFramer()
    out = []
    prev = 0
    for cut in sorted(cuts) + [len(data)]:
        out.extend(framer.feed(data[prev:cut]))
        prev = cut
    return out


def test_banner_is_its_own_message_and_login_reply_follows() -> None:
    msgs = iter_messages(SAMPLE)
    assert msgs[0] == {BANNER_KEY: "9.0.0"}
    assert msgs[1] == {"Response": "Success", "Message": "Authentication accepted"}
    assert msgs[2]["CallerIDName"] == "José Müller"


@pytest.mark.parametrize("cut", range(1, len(SAMPLE)))
def test_any_single_split_gives_the_same_messages(cut: int) -> None:
    # panoramisk 1.4 drops a UTF-8 character split across reads ("José" → "Jos"); we must not
    assert _feed_in_pieces(SAMPLE, [cut]) == iter_messages(SAMPLE)[:3]


def test_one_byte_at_a_time_equals_whole() -> None:
    assert _feed_in_pieces(SAMPLE, list(range(1, len(SAMPLE)))) == iter_messages(SAMPLE)[:3]


def test_real_trace_random_splits_equal_whole() -> None:
    data = read_trace(trace_paths("local_internal")[0])
    whole = iter_messages(data)
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, len(data)), 3000))
    pieces = _feed_in_pieces(data, cuts)
    assert pieces == whole[:len(pieces)]
    assert len(whole) - len(pieces) <= 1  # at most the unterminated last block, flushed by iter_messages
    assert len(whole) > 500


def test_repeated_event_header_keeps_the_first() -> None:
    # dialplan UserEvent(foo,Event: bar) repeats Event:; panoramisk 1.4 crashes the connection on it
    msgs = iter_messages(b"Event: UserEvent\r\nUserEvent: foo\r\nEvent: bar\r\n\r\n")
    assert msgs == [{"Event": "UserEvent", "UserEvent": "foo"}]


def test_stray_lf_only_framing_is_accepted() -> None:
    # asterisk#761: CoreShowChannelMap ended with \r\n\n
    msgs = iter_messages(b"Event: A\r\nX: 1\r\n\nEvent: B\r\n\r\n")
    assert [m["Event"] for m in msgs] == ["A", "B"]


def test_garbage_is_skipped_and_stream_recovers() -> None:
    framer = AmiFramer()
    out = framer.feed(b"\x00\xff garbage without colon\r\n\r\nEvent: Hangup\r\nUniqueid: 1\r\n\r\n")
    assert out == [{"Event": "Hangup", "Uniqueid": "1"}]
    assert framer.stats.garbage == 1


def test_one_mebibyte_line_is_discarded_and_next_message_survives() -> None:
    framer = AmiFramer()
    big = b"Event: Big\r\nX: " + b"a" * (1024 * 1024)
    out = []
    for i in range(0, len(big), 65536):
        out += framer.feed(big[i:i + 65536])
    out += framer.feed(b"\r\n\r\nEvent: Newstate\r\nUniqueid: 9\r\n\r\n")
    assert out == [{"Event": "Newstate", "Uniqueid": "9"}]
    assert framer.stats.oversized == 1
    assert len(big) > MAX_MESSAGE_BYTES


def test_skip_events_drops_by_prefix_before_decoding() -> None:
    framer = AmiFramer(skip_events=("VarSet",))
    out = framer.feed(b"Event: VarSet\r\nVariable: x\r\n\r\nEvent: Hangup\r\nUniqueid: 1\r\n\r\n")
    assert [m["Event"] for m in out] == ["Hangup"]
    assert framer.stats.skipped == 1


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    out = iter_messages(b"Event: Newchannel\r\nCallerIDName: \xff\xfe\r\nUniqueid: 1\r\n\r\n")
    assert out[0]["CallerIDName"] == "\ufffd\ufffd"

"""A replay AMI server: recorded Asterisk traffic served as a live Asterisk (see :mod:`.server` for the model)."""

from collector.tools.replay.server import (
    DEFAULT_BANNER,
    SNAPSHOT_FIELDS,
    ChannelRecord,
    ChannelTable,
    EventMask,
    PassRewriter,
    ReplayEvent,
    ReplayServer,
    TraceSeed,
    TraceSession,
    load_sessions,
    parse_block,
    parse_blocks,
    serve,
    split_sessions,
)

__all__ = [
    "ChannelRecord", "ChannelTable", "DEFAULT_BANNER", "EventMask", "PassRewriter", "ReplayEvent", "ReplayServer",
    "SNAPSHOT_FIELDS", "TraceSeed", "TraceSession", "load_sessions", "parse_block", "parse_blocks", "serve",
    "split_sessions",
]

"""A replay AMI server: recorded Asterisk traffic served as a live Asterisk (see :mod:`.server` for the model)."""

from collector.tools.replay.channels import SNAPSHOT_FIELDS, ChannelRecord, ChannelTable
from collector.tools.replay.clients import EventMask
from collector.tools.replay.options import ReplayOptions
from collector.tools.replay.rewrite import PassRewriter
from collector.tools.replay.server import ReplayEvent, ReplayServer, serve
from collector.tools.replay.trace import (
                                          DEFAULT_BANNER,
                                          TraceSeed,
                                          TraceSession,
                                          load_sessions,
                                          parse_block,
                                          parse_blocks,
                                          split_sessions,
)

__all__ = [
    "ChannelRecord", "ChannelTable", "DEFAULT_BANNER", "EventMask", "PassRewriter", "ReplayEvent", "ReplayOptions",
    "ReplayServer", "SNAPSHOT_FIELDS", "TraceSeed", "TraceSession", "load_sessions", "parse_block", "parse_blocks",
    "serve", "split_sessions",
]

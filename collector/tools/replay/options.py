"""How a replay behaves, apart from where it listens: one frozen value, so a test or a bench can change the
behaviour of a running server in one assignment (``server.options = replace(server.options, secret=...)``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReplayOptions"]


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """``speed``: trace time runs this many times faster than the wall clock; ``fast``: ignore time, send as
    fast as the slowest client reads. ``loop_forever``: start again after the last session, each pass shifted
    to look like new calls. ``username``/``secret``: the only Login accepted (``username=None``: any; ``secret``
    None: any secret). ``pause_when_idle``: the stream only advances while a client is logged in, so a client
    never misses events by connecting late; False lets it run on (events lost, as with a real Asterisk).
    ``write_timeout``: a client that does not read for that long is disconnected, like Asterisk's
    ``writetimeout`` (generous for tests). ``wall_clock``: stamp events with the wall clock, as a live Asterisk
    would (answer times and durations then make sense to a daemon); None: the server settles it when made, True
    when timed, False with ``fast`` (tests compare the trace's own times)."""

    speed: float = 1.0
    fast: bool = False
    loop_forever: bool = False
    username: str | None = None
    secret: str | None = None
    pause_when_idle: bool = True
    write_timeout: float = 10.0
    wall_clock: bool | None = None

    def __post_init__(self) -> None:
        if self.speed <= 0 and not self.fast:
            raise ValueError("speed must be > 0")

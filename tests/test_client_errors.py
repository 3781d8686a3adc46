"""Issue #14 (A.4): 1,000 malformed requests → a bounded number of short log lines, zero tracebacks."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from api.clienterrors import ClientErrorLimiter
from tests.api_support import make_app

BAD = [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
       b"GET /\x00 HTTP/1.1\r\n\r\n", b"POST /billing/api/active_calls_get HTTP/1.1\r\nHost: x\r\n" + b"X" * 9000]


async def _send(port: int, data: bytes) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    await w.drain()
    await r.read()
    w.close()


async def test_thousand_malformed_requests_log_bounded_short_lines(caplog: pytest.LogCaptureFixture) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    caplog.set_level(logging.DEBUG)
    try:
        sem = asyncio.Semaphore(50)

        async def one(i: int) -> None:
            async with sem:
                await _send(port, BAD[i % len(BAD)])

        await asyncio.gather(*(one(i) for i in range(1000)))
    finally:
        await runner.cleanup()
    server = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert 1 <= len(server) <= 30, len(server)
    assert not any(r.exc_info for r in server)
    text = caplog.text
    assert "Traceback" not in text
    for r in server:
        line = r.getMessage()
        assert "\n" not in line and len(line) < 300 and line.startswith("api client error"), line


def test_limiter_summarises_what_it_suppressed() -> None:
    now = [0.0]
    lim = ClientErrorLimiter(limit=2, window=10.0, clock=lambda: now[0])
    from aiohttp.http_exceptions import BadHttpMessage

    def rec() -> logging.LogRecord:
        exc = BadHttpMessage("Invalid method encountered:\n\n  b'GARBAGE'")
        return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                                 ("1.2.3.4",), (type(exc), exc, None))

    passed = [lim.filter(rec()) for _ in range(5)]
    assert passed == [True, True, False, False, False]
    now[0] = 11.0
    r = rec()
    assert lim.filter(r) and "suppressed=3" in r.getMessage() and r.exc_info is None

"""Capture a raw AMI stream to a file, byte for byte (``collector record``).

Why: bug reports and new test traces need exactly what Asterisk sent — banner, Login response, every block
verbatim with its CRLFs — in the ``.ami`` format of ``tests/traces`` (see its README). This is deliberately plain
asyncio streams, independent of the daemon's session code, so a capture cannot be skewed by the code under test.

The reader never waits on the disk: received chunks go through a queue to a writer task that appends them
(in a worker thread) and flushes after every batch.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

__all__ = ["AmiLoginError", "record"]

log = logging.getLogger(__name__)

_CHUNK = 65536
#: After Logoff, how long to keep reading for data Asterisk still had in flight.
_LOGOFF_GRACE = 5.0


class AmiLoginError(ConnectionError):
    """Asterisk refused the Login (the refusal is still written to the capture)."""


@dataclass(slots=True)
class _FileSink:
    """Appends chunks to ``out`` from a background task; ``written`` counts bytes on disk."""

    fh: BinaryIO
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    written: int = 0

    def put(self, data: bytes) -> None:
        self.queue.put_nowait(data)

    async def run(self) -> None:
        while True:
            first = await self.queue.get()
            batch = [first]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            done = None in batch
            data = b"".join(b for b in batch if b)
            if data:
                await asyncio.to_thread(self._write, data)
            if done:
                return

    def _write(self, data: bytes) -> None:
        self.fh.write(data)
        self.fh.flush()
        self.written += len(data)

    def flush_pending(self) -> None:
        """Synchronous last resort (cancellation): write whatever is still queued."""
        chunks = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item:
                chunks.append(item)
        if chunks:
            self._write(b"".join(chunks))


def _login_action(username: str, secret: str, events: str) -> bytes:
    # no ActionID: the Login response then looks exactly like the one in the bundled traces
    return (f"Action: Login\r\nUsername: {username}\r\nSecret: {secret}\r\nEvents: {events}\r\n\r\n").encode()


def _login_result(stream: bytes) -> bool | None:
    """True/False once the first ``Response:`` block (the Login reply) is complete in ``stream``; else None."""
    start = stream.find(b"Response: ")
    if start < 0:
        return None
    end = stream.find(b"\n\n", start)
    end_crlf = stream.find(b"\r\n\r\n", start)
    if end < 0 and end_crlf < 0:
        return None
    return stream.startswith(b"Response: Success", start)


async def record(host: str, port: int, username: str, secret: str, out: Path, events: str = "on",
                 stop: asyncio.Event | None = None) -> int:
    """Connect, log in, and write everything received to ``out`` until ``stop`` is set or the peer closes.

    The Login is sent right after connecting, so the capture starts banner → Login response → events, as in
    ``tests/traces``. On ``stop`` an ``Action: Logoff`` is sent and the stream is read to its end (at most
    a few seconds) so nothing already sent is lost. Returns the number of bytes written; raises
    :class:`AmiLoginError` when the Login is refused. Cancellation still leaves a complete file."""
    reader, writer = await asyncio.open_connection(host, port)
    out = Path(out)
    log.info("recording AMI %s:%d as %r (events=%s) to %s", host, port, username, events, out)
    with out.open("wb") as fh:
        sink = _FileSink(fh)
        sink_task = asyncio.create_task(sink.run(), name="record-writer")
        stop_task: asyncio.Task[bool] | None = asyncio.create_task(stop.wait()) if stop is not None else None
        head = b""  # the start of the stream, until the Login reply is seen
        login_ok: bool | None = None
        read_task: asyncio.Task[bytes] | None = None
        try:
            writer.write(_login_action(username, secret, events))
            await writer.drain()
            loop = asyncio.get_running_loop()
            deadline: float | None = None
            while True:
                if read_task is None:
                    read_task = asyncio.create_task(reader.read(_CHUNK))
                wait_on: set[asyncio.Task[object]] = {read_task}
                if stop_task is not None:
                    wait_on.add(stop_task)
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(wait_on, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if stop_task is not None and stop_task in done:
                    stop_task = None
                    log.info("recording stopped; logging off")
                    try:
                        writer.write(b"Action: Logoff\r\n\r\n")
                        await writer.drain()
                    except (ConnectionError, OSError):
                        pass
                    deadline = loop.time() + _LOGOFF_GRACE
                if read_task in done:
                    data = read_task.result()
                    read_task = None
                    if not data:
                        break
                    sink.put(data)
                    if login_ok is None:
                        head += data
                        login_ok = _login_result(head)
                        if login_ok is False:
                            log.error("AMI login refused by %s:%d", host, port)
                            break
                        if login_ok:
                            head = b""
                elif deadline is not None and loop.time() >= deadline:
                    log.info("no end of stream %.0f s after Logoff; closing", _LOGOFF_GRACE)
                    break
        except (ConnectionError, OSError) as exc:
            log.warning("recording connection lost: %r", exc)
        finally:
            for task in (stop_task, read_task):
                if task is not None:
                    task.cancel()
            writer.close()
            sink.put(None)  # type: ignore[arg-type]
            try:
                await asyncio.shield(sink_task)
            except asyncio.CancelledError:
                sink_task.cancel()
                sink.flush_pending()
                raise
    log.info("recorded %d bytes to %s", sink.written, out)
    if login_ok is False:
        raise AmiLoginError(f"AMI login refused by {host}:{port}")
    return sink.written

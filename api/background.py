"""A periodic job that lives exactly as long as the aiohttp application (``cleanup_ctx``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import web

__all__ = ["background"]


def background(job: Callable[[web.Application], Coroutine[Any, Any, None]], name: str
               ) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running ``job(app)`` from start-up to shutdown, then cancelling it."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(job(app), name=name)
        yield
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    return ctx

"""Polling for a condition in tests that drive sockets directly (no simulator notifier to wait
on).  Each test module makes its own ``until`` with the timeout and poll interval it needs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Until = Callable[..., Awaitable[None]]


def poller(default_timeout: float, poll: float) -> Until:
    """``until(cond, what="", timeout=default_timeout)``: return once ``cond()`` is true, or
    fail the test naming ``what`` (or the condition) after ``timeout`` seconds."""

    async def until(
        cond: Callable[[], Any], what: str = "", timeout: float = default_timeout
    ) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not cond():
            if loop.time() > end:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what or cond}")
            await asyncio.sleep(poll)

    return until

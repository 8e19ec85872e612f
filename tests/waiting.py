"""Waiting in tests that drive sockets directly (no simulator notifier to wait on): polling for
a condition (each test module makes its own ``until`` with the timeout and poll interval it
needs), and reading a client's received events up to the one a test waits for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

JSON = dict[str, Any]

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


class ReceivedEvents:
    """A test client's received JSON events: subclasses read one with :meth:`recv` (appending
    it to :attr:`events`); this waits for a given one and lists them."""

    #: Default bounds of :meth:`until` and :meth:`drain` (a subclass sets its own).
    until_timeout: float = 10.0
    drain_seconds: float = 0.2

    def __init__(self) -> None:
        self.events: list[JSON] = []

    async def recv(self, timeout: float) -> JSON:
        raise NotImplementedError

    async def until(
        self,
        event_type: str,
        pred: Callable[[JSON], bool] | None = None,
        timeout: float | None = None,
    ) -> JSON:
        """The next event of ``event_type`` (matching ``pred``); everything before is kept."""
        deadline = time.monotonic() + (self.until_timeout if timeout is None else timeout)
        while True:
            event = await self.recv(max(0.01, deadline - time.monotonic()))
            if event["type"] == event_type and (pred is None or pred(event)):
                return event

    async def drain(self, seconds: float | None = None) -> list[JSON]:
        """Everything that arrives within ``seconds`` (a quiet period, not a wait for a fact)."""
        got: list[JSON] = []
        deadline = time.monotonic() + (self.drain_seconds if seconds is None else seconds)
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(await self.recv(left))
            except asyncio.TimeoutError:
                break
        return got

    def of(self, event_type: str, pred: Callable[[JSON], bool] | None = None) -> list[JSON]:
        """The events of ``event_type`` (matching ``pred``) received so far."""
        return [e for e in self.events if e["type"] == event_type and (pred is None or pred(e))]

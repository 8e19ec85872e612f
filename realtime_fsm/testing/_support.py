"""Small pieces shared by the fake server and the fake caller: ids, waiting, loopback checks."""

from __future__ import annotations

import asyncio
import contextlib
import random
import string
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")

_ALNUM = string.ascii_letters + string.digits
LOOPBACK_HOST = "127.0.0.1"


def openai_id(prefix: str, rng: random.Random) -> str:
    """An id shaped like OpenAI's (``resp_C4IHTez0STfDDIteKgMyW``: prefix, ``_``, 21 chars)."""
    return prefix + "_" + "".join(rng.choice(_ALNUM) for _ in range(21))


def twilio_sid(prefix: str, rng: random.Random) -> str:
    """A Twilio-style sid: two letters and 32 hex digits (``MZ…``, ``CA…``, ``AC…``)."""
    return prefix + "".join(rng.choice("0123456789abcdef") for _ in range(32))


def settle(waiter: asyncio.Future[_T], value: _T) -> None:
    """Resolve ``waiter`` unless a timer or a cancel already did: the fakes wait on a future
    plus a timer instead of ``asyncio.wait_for`` (a task per wait), and either side may come
    first."""
    if not waiter.done():
        waiter.set_result(value)


class Notifier:
    """Wakes waiters whenever recorded state changes, so tests wait on facts, not on sleeps."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Return as soon as ``predicate()`` is true; raise ``asyncio.TimeoutError`` after
        ``timeout`` seconds.  The predicate is also re-checked every 50 ms, so predicates that
        depend on the clock work too."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._event.wait(), min(remaining, 0.05))

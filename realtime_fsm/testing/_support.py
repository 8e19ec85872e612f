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
#: Byte value -> an id character (``b % 62``; the slight skew does not matter for test ids).
_ALNUM_OF_BYTE = bytes(ord(_ALNUM[b % len(_ALNUM)]) for b in range(256))
_HEX_OF_BYTE = bytes(ord("0123456789abcdef"[b % 16]) for b in range(256))
LOOPBACK_HOST = "127.0.0.1"


def openai_id(prefix: str, rng: random.Random) -> str:
    """An id shaped like OpenAI's (``resp_C4IHTez0STfDDIteKgMyW``: prefix, ``_``, 21 chars)."""
    # 21 random bytes mapped to characters, not 21 ``choice`` calls (0.25 us against 3.3): the
    # simulator mints one id per event it sends, thousands a second in a load run.
    return prefix + "_" + rng.randbytes(21).translate(_ALNUM_OF_BYTE).decode("ascii")


def twilio_sid(prefix: str, rng: random.Random) -> str:
    """A Twilio-style sid: two letters and 32 hex digits (``MZ…``, ``CA…``, ``AC…``)."""
    return prefix + rng.randbytes(32).translate(_HEX_OF_BYTE).decode("ascii")


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
        self._waiting = 0

    def notify(self) -> None:
        # Called for every message a fake sends or receives: with nobody waiting (a load run)
        # there is nothing to wake, and no new Event to make.
        if self._waiting:
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
            event = self._event  # a notify from now on sets this one
            self._waiting += 1
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, 0.05))
            finally:
                self._waiting -= 1

"""Bounded waits that never swallow a cancellation, for every asyncio driver and server.

Not ``asyncio.wait_for``: before Python 3.12 it returns normally, swallowing the caller's
cancellation, when the task is cancelled in the same loop iteration as the awaited thing
completes (python/cpython#86296).  A task that survives its cancellation that way keeps whoever
cancelled it waiting forever (a call that never ends, sockets left open).  ``asyncio.wait``
never absorbs the caller's cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

_T = TypeVar("_T")


async def bounded(awaitable: Awaitable[_T], timeout: float) -> _T:
    """``awaitable`` bounded by ``timeout`` (``asyncio.TimeoutError`` past it), without
    ``asyncio.wait_for`` (see :func:`wait_event`)."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    finally:
        if not task.done():
            task.cancel()
            task.add_done_callback(_close_late_socket)
    if not done:
        raise asyncio.TimeoutError
    return task.result()


def _close_late_socket(task: asyncio.Future[Any]) -> None:
    """A connection that completed after its caller gave up on it must not stay open."""
    if task.cancelled() or task.exception() is not None:
        return
    result = task.result()
    if hasattr(result, "close") and hasattr(result, "recv"):
        with contextlib.suppress(RuntimeError):
            closer = asyncio.ensure_future(close_quietly(result))
            _LATE_CLOSERS.add(closer)
            closer.add_done_callback(_LATE_CLOSERS.discard)


_LATE_CLOSERS: set[asyncio.Future[None]] = set()


async def close_quietly(
    sock: Any, code: int = 1000, reason: str = "session replaced", timeout: float = 3.0
) -> None:
    """Close a socket nobody serves any more (a replaced or lost session, a late connection,
    the call's own at its end), bounded, whatever it raises: it is being thrown away.

    What the peer still sends meanwhile is read and discarded: a ``websockets`` connection
    nobody reads stops reading its TCP stream once its buffer is full, and the peer's close
    frame behind that buffer would never be seen, so the closing handshake would wait out
    its whole timeout.  One that still does not close in time is aborted: never left open."""
    discard = asyncio.ensure_future(_discard(sock))
    try:
        await bounded(sock.close(code, reason), timeout)
    except asyncio.CancelledError:
        _abort(sock)
        raise
    except Exception:  # timed out, or the close itself failed: drop the connection
        _abort(sock)
    finally:
        discard.cancel()


async def _discard(sock: Any) -> None:
    """Read and drop frames until the socket ends (or refuses a read: someone else reads)."""
    with contextlib.suppress(Exception):
        while True:
            await sock.recv()


def _abort(sock: Any) -> None:
    transport = getattr(sock, "transport", None)
    abort = getattr(transport, "abort", None)
    if callable(abort):
        with contextlib.suppress(Exception):
            abort()


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """``event.wait()`` bounded by ``timeout``: True if the event was set, False on timeout.

    Not ``asyncio.wait_for``: before Python 3.12 it returns normally, swallowing the
    cancellation, when the task is cancelled in the same loop iteration as the event is set
    (python/cpython#86296).  A timer that survives its cancellation that way keeps
    :meth:`CallBridge.run` waiting for it forever: the call never ends and both sockets stay
    open.  ``asyncio.wait`` never absorbs the caller's cancellation."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return bool(done)

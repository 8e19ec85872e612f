"""The asyncio drivers' socket helpers: the WebSocket protocol they need, what a peer closing
looks like, the test of whether a frame may skip the writer queue, and a refused handshake's
status.  Bounded waits and closing sockets nobody serves are in :mod:`realtime_fsm.bounded`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, cast

from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.protocol import State as WsState

from .call import TextFrame
from .webserver import WebSocket, WebSocketClosed

#: What a peer closing looks like from ``recv``/``send``, whatever the socket's library.
CLOSED: Final = (WsConnectionClosed, WebSocketClosed, ConnectionError, OSError, EOFError)


class MessageSocket(Protocol):
    """What a driver needs of a WebSocket: a ``websockets`` connection, our own server's, or
    an adapter (Starlette's, see :mod:`realtime_fsm.asgi`)."""

    async def recv(self) -> str | bytes: ...

    async def send(self, message: str) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


#: Opens a new OpenAI Realtime socket (same URL and headers each time).
Connector = Callable[[], Awaitable[MessageSocket]]
#: An item of a writer queue: a frame, a user text frame (reported written), or the stop mark.
Outbound = str | TextFrame | None


def drain(queue: asyncio.Queue[Outbound]) -> list[str]:
    """Empty a lost or replaced session's ``queue``; return its caller audio frames, in order
    (for the next session, or counted as dropped).  Its text frames need nothing: the
    session's custody takes back every text frame not reported written; the rest is moot."""
    audio: list[str] = []
    while not queue.empty():
        message = queue.get_nowait()
        if type(message) is str and _APPEND_TYPE in message[:48]:
            audio.append(message)
    return audio


_APPEND_TYPE: Final = '"input_audio_buffer.append"'


def never() -> bool:
    return False


def direct_probe(queue: asyncio.Queue[Outbound], sock: MessageSocket) -> Callable[[], bool]:
    """The test, asked once per frame, of whether a frame may go to ``sock`` straight from a
    reading task: nothing waits in ``queue`` ahead of it, and the send will not wait either
    (the socket open, its transport's buffer empty).  Built once per socket and queue, so the
    per-frame cost is one call; a socket that shows no transport (a test double, a trace
    wrapper) always goes through its writer queue.

    Open means ``websockets``' protocol state (a send on a closing connection waits out the
    closing handshake).  Our own server's socket needs no such test: a send there raises at
    once unless the socket is open, and the caller then queues the frame."""
    transport = getattr(sock, "transport", None)
    if transport is None:
        return never
    buffered = transport.get_write_buffer_size
    empty = queue.empty
    if isinstance(sock, WebSocket):
        return lambda: buffered() == 0 and empty()
    # A ``websockets`` connection: its sans-I/O protocol's state is one property call, the
    # connection's own ``state`` two.
    for holder in (getattr(sock, "protocol", None), sock):
        if getattr(holder, "state", None) is not None:
            ws, is_open = cast(Any, holder), WsState.OPEN
            return lambda: ws.state is is_open and buffered() == 0 and empty()
    if hasattr(sock, "closed"):
        other = cast(Any, sock)
        return lambda: other.closed is not True and buffered() == 0 and empty()
    return lambda: buffered() == 0 and empty()


def handshake_status(exc: BaseException) -> int | None:
    """The HTTP status of a refused WebSocket handshake (``websockets``' ``InvalidStatus``)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None

"""One port for a telephony webhook and its media WebSocket, on websockets' sans-IO protocol.

Twilio calls ``POST /incoming-call`` (form-encoded body) and then opens the Media Streams
WebSocket, and tunnels such as ngrok expose a single port.  ``websockets.asyncio.server`` cannot
answer a POST with a body, so this module reads the HTTP head itself: plain requests go to an
HTTP handler, upgrade requests are fed to :class:`websockets.server.ServerProtocol` (the
library's own, public sans-IO layer, which does the handshake, framing, ping/pong and close).

Everything is bounded: the request head, the request body, each WebSocket message
(``max_message_bytes``), and what is buffered between the socket and the handler (one TCP read,
parsed lazily: a peer that floods is simply not read faster than the handler consumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping

import attrs
from websockets.exceptions import InvalidState
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from .bounded import bounded
from .http_head import (
    HttpError,
    HttpRequest,
    HttpResponse,
    content_length,
    http_bytes,
    parse_head,
)
from .logsafe import safe

__all__ = [
    "HttpRequest",
    "HttpResponse",
    "Routes",
    "WebSocket",
    "WebSocketClosed",
    "serve",
    "serve_until_signalled",
]

log = logging.getLogger("realtime_fsm.webserver")

#: A request head longer than this is refused with 431: Twilio's are about 1 KiB.
MAX_HEAD_BYTES = 16 * 1024
#: A body longer than this is refused with 413: a webhook's form is a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024
#: How long a peer may take to send its request head (then the connection is just dropped).
HEAD_TIMEOUT = 10.0
#: After refusing a request: how long, and how many bytes, we read and drop of what the peer
#: still sends, so that our response is not lost to a TCP reset (see ``_refuse``).
LINGER_TIMEOUT = 1.0
LINGER_BYTES = 1024 * 1024
_READ_CHUNK = 64 * 1024
#: How long closing a WebSocket waits for the peer, to take the close frame and to answer it.
CLOSE_TIMEOUT = 2.0
#: Bytes a slow peer may leave unread in the transport before ``send`` waits for it.
_BUFFER_LIMIT = 64 * 1024
#: A peer that does not read is dropped once this much waits for it in the transport, or once
#: a wait for it to read lasts :data:`DRAIN_TIMEOUT`.  Sends wait above ``_BUFFER_LIMIT`` and
#: pongs above the transport's own high-water mark (64 KiB), so only a bug or a burst of
#: pongs gets near 1 MiB: a bound on memory per connection, not a rate limit.
MAX_WRITE_BUFFER = 1024 * 1024
#: A peer (a ping flood that never reads its pongs, a stalled reader) whose backlog does not
#: drain within this is dropped with 1008.  Twilio reads continuously, and the backlog waited
#: on is at most 64 KiB (about four seconds of the call's audio as JSON frames); 10 seconds
#: leaves room for a slow network and still frees a stuck call and its OpenAI session soon.
DRAIN_TIMEOUT = 10.0


class WebSocketClosed(Exception):
    """The WebSocket is closed; ``code`` and ``reason`` say how, when the peer said."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"websocket closed (code={code}, reason={reason!r})")
        self.code = code
        self.reason = reason


class WebSocket:
    """The server side of one accepted WebSocket: ``recv``, ``send``, ``close``.

    One reader and any number of writers; ``recv`` pulls from the socket only when called, so a
    slow handler applies TCP back-pressure instead of queueing without bound."""

    def __init__(
        self,
        request: HttpRequest,
        protocol: ServerProtocol,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.request = request
        self._protocol = protocol
        self._reader = reader
        self._writer = writer
        self._messages: list[str | bytes] = []
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._send_lock = asyncio.Lock()
        #: Set once the connection failed on our side (1007, 1008): what ``recv`` raises.
        self._failure: WebSocketClosed | None = None

    @property
    def closed(self) -> bool:
        return self._protocol.state is State.CLOSED or self._writer.is_closing()

    @property
    def close_code(self) -> int | None:
        return self._protocol.close_code

    @property
    def transport(self) -> asyncio.WriteTransport:
        """The TCP transport (its ``get_write_buffer_size()`` tells whether the peer keeps up)."""
        return self._writer.transport

    @property
    def close_reason(self) -> str | None:
        return self._protocol.close_reason

    async def recv(self) -> str | bytes:
        """The next message (text as ``str``); raises :class:`WebSocketClosed` at the end.

        Messages that arrived before a failure (a text message that is not UTF-8: 1007; a peer
        that does not read: 1008) are still handed out; then the failure is raised."""
        while not self._messages:
            if self._failure is not None:
                raise self._failure
            if self._protocol.state is State.CLOSED:
                raise WebSocketClosed(self._protocol.close_code, self._protocol.close_reason or "")
            try:
                data = await self._reader.read(_READ_CHUNK)
            except (ConnectionError, OSError):
                data = b""
            if data:
                self._protocol.receive_data(data)
            else:
                self._protocol.receive_eof()
            for event in self._protocol.events_received():
                if isinstance(event, Frame):
                    self._on_frame(event)
                    if self._failure is not None:
                        break  # the connection failed: nothing after the bad frame counts
            await self._flush()
            if self._protocol_closed() and not self._messages:
                self._writer.close()
        return self._messages.pop(0)

    def _protocol_closed(self) -> bool:
        return self._protocol.state is State.CLOSED

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                data = bytes(frame.data)
                if opcode is Opcode.TEXT:
                    self._text(data)
                else:
                    self._messages.append(data)
            else:
                self._fragments = [bytes(frame.data)]
                self._fragment_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                if self._fragment_text:
                    self._text(data)
                else:
                    self._messages.append(data)

    def _text(self, data: bytes) -> None:
        """Queue a text message; one that is not UTF-8 fails the connection with 1007.

        ``websockets``' sans-IO protocol leaves text payloads undecoded, so this is the one
        place they are checked: the handler sees the peer's socket closed
        (:class:`WebSocketClosed` with 1007), never a ``UnicodeDecodeError``."""
        try:
            self._messages.append(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            self._fail(
                CloseCode.INVALID_DATA, f"invalid UTF-8 in a text message at byte {exc.start}"
            )

    def _fail(self, code: int, reason: str, *, abort: bool = False) -> WebSocketClosed:
        """Fail the connection once: log why, send the close frame (unless ``abort``: the peer
        does not read, so the TCP link is dropped at once) and remember the failure, which
        :meth:`recv` and :meth:`send` raise from now on."""
        if self._failure is None:
            log.warning(
                "websocket %s from %s: %s; closing with %d",
                safe(self.request.path),
                self.request.client,
                reason,
                code,
            )
            self._failure = WebSocketClosed(code, reason)
            with contextlib.suppress(InvalidState):
                self._protocol.fail(code, reason)
            if abort:
                self._protocol.data_to_send()  # nobody will read it
                self._writer.transport.abort()
        return self._failure

    async def send(self, message: str | bytes) -> None:
        """Send one message; waits while the peer is slow to read (bounded buffering).

        The frame is written now: a frame held for the end of the loop iteration (to write a
        ``media`` and its ``mark`` in one system call) waited for every other callback of a
        busy iteration, which was most of a bridge's added latency at 150 calls
        (``docs/performance.md``).  Only when the transport holds more than
        ``_BUFFER_LIMIT`` bytes that the peer has not read does it wait for it to drain."""
        async with self._send_lock:
            try:
                if isinstance(message, str):
                    self._protocol.send_text(message.encode("utf-8"))
                else:
                    self._protocol.send_binary(message)
            except InvalidState as exc:
                if self._failure is not None:
                    raise self._failure from exc
                raise WebSocketClosed(self.close_code, self.close_reason or "") from exc
            await self._flush(drain_above=_BUFFER_LIMIT)

    def send_nowait(self, message: str) -> bool:
        """Write one text message at once if that needs no waiting: no other send under way,
        the connection open and the transport holding nothing the peer has not read.  Returns
        False, having sent nothing, otherwise; the caller then queues it for :meth:`send`.

        For a frame someone waits for, from code that cannot ``await``: the bridge's barge-in
        ``clear``, which through its writer task would go out only on the next loop iteration,
        after everything else ready in this one (at 150 calls, a good part of a millisecond)."""
        if (
            self._send_lock.locked()
            or self._protocol.state is not State.OPEN
            or self._writer.is_closing()
            or self._writer.transport.get_write_buffer_size()
        ):
            return False
        self._protocol.send_text(message.encode("utf-8"))
        # ``_flush``'s writing loop, not shared with it: ``_flush`` runs for every frame of
        # both servers, and a call there would cost each of them one more per frame.
        for chunk in self._protocol.data_to_send():
            if chunk:  # an empty chunk marks the end of the stream, after a close only
                self._writer.write(chunk)
        return True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake, wait briefly for the peer's reply, drop the TCP link.

        Every wait is bounded by :data:`CLOSE_TIMEOUT`: a peer that stops reading cannot hold
        the connection open, it is aborted."""
        stuck = False
        if self._protocol.state is State.OPEN:
            with contextlib.suppress(InvalidState):
                self._protocol.send_close(code, reason[:120])
            try:
                await bounded(self._flush(), CLOSE_TIMEOUT)
            except asyncio.TimeoutError:
                stuck = True
            except (WebSocketClosed, ConnectionError, OSError):
                pass
            if not stuck:
                with contextlib.suppress(WebSocketClosed, asyncio.TimeoutError, ConnectionError):
                    await bounded(self._drain_until_closed(), CLOSE_TIMEOUT)
        self._writer.close()
        if stuck:
            self._writer.transport.abort()
        try:
            await bounded(self._writer.wait_closed(), CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            self._writer.transport.abort()  # unsent data that nobody reads: do not wait for it
        except (ConnectionError, OSError):
            pass

    async def _drain_until_closed(self) -> None:
        while self._protocol.state is not State.CLOSED:
            await self.recv()

    async def _flush(self, drain_above: int = -1) -> None:
        """Write what the protocol has to send, then wait for the peer while the transport
        holds more than ``drain_above`` unread bytes (-1: always ask ``drain``, which waits
        only above the transport's own high-water mark)."""
        chunks = self._protocol.data_to_send()
        if not chunks:
            return
        if self._writer.is_closing():
            raise WebSocketClosed(self.close_code, self.close_reason or "")
        eof = False
        for chunk in chunks:
            if chunk:
                self._writer.write(chunk)
            else:
                eof = True  # the protocol is done writing: the peer waits for TCP to close
        if eof:
            self._writer.close()
            return
        buffered = self._writer.transport.get_write_buffer_size()
        if buffered <= drain_above:
            return
        if buffered > MAX_WRITE_BUFFER:
            raise self._fail(
                CloseCode.POLICY_VIOLATION,
                f"peer not reading: {buffered} bytes unsent, over {MAX_WRITE_BUFFER}",
                abort=True,
            )
        try:
            await bounded(self._writer.drain(), DRAIN_TIMEOUT)
        except asyncio.TimeoutError:
            raise self._fail(
                CloseCode.POLICY_VIOLATION,
                f"peer not reading: {buffered} bytes unsent for {DRAIN_TIMEOUT:g}s",
                abort=True,
            ) from None
        except (ConnectionError, OSError) as exc:
            raise WebSocketClosed(self.close_code, str(exc)) from exc


HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]
#: Called with the upgrade request before the handshake: return a response to refuse it.
WebSocketGate = Callable[[HttpRequest], Awaitable[HttpResponse | None]]
WebSocketHandler = Callable[[WebSocket], Awaitable[None]]


@attrs.frozen
class Routes:
    http: Mapping[str, HttpHandler] = attrs.field(factory=dict)
    websocket: Mapping[str, WebSocketHandler] = attrs.field(factory=dict)
    gate: WebSocketGate | None = None
    max_message_bytes: int = 64 * 1024


def _client_of(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else safe(str(peer))


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request head through its blank line; ``None`` when the peer left or stalled before
    sending one (nobody to answer); :class:`HttpError` 431 when it outgrows
    :data:`MAX_HEAD_BYTES` (the reader's limit)."""
    try:
        return await bounded(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
    except asyncio.LimitOverrunError:
        raise HttpError(431, f"request head over {MAX_HEAD_BYTES} bytes") from None
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, OSError):
        return None


async def _refuse(
    error: HttpError, client: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer ``error`` with its status and one log line, then close gracefully: our side is
    shut first and what the peer still sends is read and dropped (bounded by
    :data:`LINGER_BYTES` and :data:`LINGER_TIMEOUT`), because closing a socket with unread
    input makes the kernel send a reset that can destroy the response before it is read."""
    log.warning("refusing request from %s with %d: %s", client, error.status, error.reason)
    writer.write(http_bytes(HttpResponse(error.status, f"{error.reason}\n".encode())))

    async def linger() -> None:
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        dropped = 0
        while dropped < LINGER_BYTES:
            chunk = await reader.read(_READ_CHUNK)
            if not chunk:
                return
            dropped += len(chunk)

    with contextlib.suppress(asyncio.TimeoutError, ConnectionError, OSError, RuntimeError):
        await bounded(linger(), LINGER_TIMEOUT)


async def _handle_connection(
    routes: Routes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    client = _client_of(writer)
    try:
        try:
            head = await _read_head(reader)
            if head is None:
                return
            request = parse_head(head, client)
            if request.headers.get("upgrade", "").lower() == "websocket":
                await _upgrade(routes, request, head, reader, writer)
                return
            handler = routes.http.get(request.path)
            if handler is None:
                writer.write(http_bytes(HttpResponse(404, b"not found\n")))
                return
            length = content_length(request, MAX_BODY_BYTES)
        except HttpError as error:
            await _refuse(error, client, reader, writer)
            return
        body = await bounded(reader.readexactly(length), 10.0) if length else b""
        response = await handler(attrs.evolve(request, body=body))
        writer.write(http_bytes(response))
    except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
        pass
    except Exception:
        log.exception("unhandled error serving %s", client)
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        writer.close()


async def _upgrade(
    routes: Routes,
    request: HttpRequest,
    head: bytes,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    protocol = ServerProtocol(max_size=routes.max_message_bytes)
    protocol.receive_data(head)
    events = protocol.events_received()
    handler = routes.websocket.get(request.path)
    if not events or not isinstance(events[0], Request):
        response = protocol.reject(400, "bad websocket handshake\n")
    elif handler is None:
        response = protocol.reject(404, "not found\n")
    else:
        refusal = await routes.gate(request) if routes.gate is not None else None
        if refusal is not None:
            log.warning(
                "refused websocket %s from %s: %d",
                safe(request.path),
                request.client,
                refusal.status,
            )
            response = protocol.reject(refusal.status, refusal.body.decode("utf-8", "replace"))
        else:
            response = protocol.accept(events[0])
    protocol.send_response(response)
    for chunk in protocol.data_to_send():
        writer.write(chunk)
    await writer.drain()
    if response.status_code != 101 or handler is None:
        return
    ws = WebSocket(request, protocol, reader, writer)
    try:
        await handler(ws)
    except WebSocketClosed as exc:
        log.debug(
            "websocket %s from %s closed: %s",
            safe(request.path),
            request.client,
            safe(str(exc)),
        )
    finally:
        await ws.close()


async def serve(
    routes: Routes, host: str, port: int, *, reuse_port: bool = False
) -> asyncio.Server:
    """Start listening; ``server.sockets[0].getsockname()`` tells the port when ``port`` is 0.
    ``reuse_port``: ``SO_REUSEPORT``, for several processes accepting on one port (the
    kernel spreads new connections over them)."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle_connection(routes, reader, writer)

    return await asyncio.start_server(
        on_connect, host, port, limit=MAX_HEAD_BYTES, reuse_port=reuse_port or None
    )


async def serve_until_signalled(server: asyncio.Server) -> None:
    """Serve until SIGINT or SIGTERM (where the loop can watch signals), then close ``server``:
    the shape of a process whose only job is to serve, like the example bridge."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()

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
from types import MappingProxyType
from urllib.parse import parse_qs, urlsplit

import attrs
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

log = logging.getLogger("realtime_fsm.webserver")

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
_READ_CHUNK = 64 * 1024
#: How long closing a WebSocket waits for the peer, to take the close frame and to answer it.
CLOSE_TIMEOUT = 2.0
#: Bytes a slow peer may leave unread in the transport before ``send`` waits for it.
_BUFFER_LIMIT = 64 * 1024


@attrs.frozen
class HttpRequest:
    """A request head (header names lower-cased) and, for plain HTTP, its body."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    client: str = ""

    @property
    def target(self) -> str:
        """Path plus query string, exactly as requested (what request signatures cover)."""
        return self.headers.get(":target", self.path)

    def form(self) -> dict[str, str]:
        """The body as ``application/x-www-form-urlencoded`` fields (first value of each)."""
        fields = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {key: values[0] for key, values in fields.items()}


@attrs.frozen
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


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
        """The next message (text as ``str``); raises :class:`WebSocketClosed` at the end."""
        while not self._messages:
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
            await self._flush()
            for event in self._protocol.events_received():
                if isinstance(event, Frame):
                    self._on_frame(event)
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
                self._messages.append(data.decode("utf-8") if opcode is Opcode.TEXT else data)
            else:
                self._fragments = [bytes(frame.data)]
                self._fragment_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._messages.append(data.decode("utf-8") if self._fragment_text else data)

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
                await asyncio.wait_for(self._flush(), timeout=CLOSE_TIMEOUT)
            except asyncio.TimeoutError:
                stuck = True
            except (WebSocketClosed, ConnectionError, OSError):
                pass
            if not stuck:
                with contextlib.suppress(WebSocketClosed, asyncio.TimeoutError, ConnectionError):
                    await asyncio.wait_for(self._drain_until_closed(), timeout=CLOSE_TIMEOUT)
        self._writer.close()
        if stuck:
            self._writer.transport.abort()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), timeout=CLOSE_TIMEOUT)
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
        if self._writer.transport.get_write_buffer_size() <= drain_above:
            return
        try:
            await self._writer.drain()
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


def _parse_head(head: bytes, client: str) -> HttpRequest:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {":target": target}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    parts = urlsplit(target)
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return HttpRequest(
        method=method.upper(),
        path=parts.path,
        query=MappingProxyType(query),
        headers=MappingProxyType(headers),
        client=client,
    )


def _http_bytes(response: HttpResponse) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}.get(
        response.status, "Error"
    )
    head = (
        f"HTTP/1.1 {response.status} {reason}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + response.body


async def _handle_connection(
    routes: Routes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    peer = writer.get_extra_info("peername")
    client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
    try:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10.0)
            request = _parse_head(head, client)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
            return
        except ValueError:
            writer.write(_http_bytes(HttpResponse(400, b"bad request\n")))
            return
        if request.headers.get("upgrade", "").lower() == "websocket":
            await _upgrade(routes, request, head, reader, writer)
            return
        handler = routes.http.get(request.path)
        if handler is None:
            writer.write(_http_bytes(HttpResponse(404, b"not found\n")))
            return
        length = int(request.headers.get("content-length", "0") or "0")
        if length < 0 or length > MAX_BODY_BYTES:
            writer.write(_http_bytes(HttpResponse(400, b"body too large\n")))
            return
        body = await asyncio.wait_for(reader.readexactly(length), timeout=10.0) if length else b""
        response = await handler(attrs.evolve(request, body=body))
        writer.write(_http_bytes(response))
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
                "refused websocket %s from %s: %d", request.path, request.client, refusal.status
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
        log.debug("websocket %s from %s closed: %s", request.path, request.client, exc)
    finally:
        await ws.close()


async def serve(routes: Routes, host: str, port: int) -> asyncio.Server:
    """Start listening; ``server.sockets[0].getsockname()`` tells the port when ``port`` is 0."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle_connection(routes, reader, writer)

    return await asyncio.start_server(on_connect, host, port, limit=MAX_HEAD_BYTES)


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

"""A fake OpenAI Realtime server on 127.0.0.1, faithful where the response lifecycle is concerned.

Why it exists: the hard bugs of a realtime voice bridge are races between the client and the
server's response slot (a ``response.create`` while a response is still in progress, a cancel
racing completion, late deltas of a cancelled response, a truncate past the audio actually
sent).  Those races need a server that enforces the same rules as OpenAI's, with the same event
names, shapes, error codes and messages, and that can be made to misbehave on purpose.  This one
speaks raw protocol JSON over a real websocket, so it tests a bridge exactly as it runs in
production, without an account or a network.

What it enforces (see ``/work/shared/reference/openai-realtime.md``; every event it sends
parses with the ``openai`` 3.63.0 types, checked through the real SDK client in
``tests/test_simulator_sdk.py``):

* ``session.created`` on connect; ``session.update`` -> ``session.updated`` with the effective
  configuration, in the GA nested shape or the beta flat shape.  An update is applied whole or
  refused whole: a key the SDK's request types lack, at any depth (a beta key in a GA session,
  ``rate`` on ``audio/pcmu``, ``eagerness`` on ``server_vad``...), gets ``unknown_parameter``
  naming its path; values out of the documented ranges get the matching ``*_above_max_value``
  / ``*_below_min_value`` errors; a voice change once assistant audio has been sent gets
  ``cannot_update_voice`` ("Voice cannot be changed during the session once the model has
  responded with audio at least once").  ``response.create`` parameters likewise.
* Exactly one default-conversation response at a time: a second ``response.create`` gets
  ``conversation_already_has_active_response`` (``error.event_id`` = the client's ``event_id``)
  and no response.  The slot is busy until ``response.done`` has been sent, so a create sent
  after ``response.cancel`` but before that response's ``response.done`` is rejected too.
  Out-of-band responses (``conversation: "none"``) run in parallel and never hold the slot.
* Streaming: ``response.created`` (metadata echoed, ``conversation_id`` null for OOB),
  ``rate_limits.updated``, per message item ``response.output_item.added``,
  ``conversation.item.added`` (GA, with ``previous_item_id``) / ``.created`` (beta),
  ``response.content_part.added``, paced audio and transcript deltas, the done events
  (``conversation.item.done`` with the same ``previous_item_id``) and ``response.done`` with
  ``status``, ``status_details.reason`` and ``usage`` (input and output token details, cached
  tokens: :mod:`._realtime_usage`).
* ``max_output_tokens`` (session or ``response.create``): the response ends ``incomplete`` /
  ``max_output_tokens`` with its audio cut where the tokens ran out.
* ``response.cancel``: the remaining done events and ``response.done`` cancelled /
  ``client_cancelled``; nothing to cancel -> ``response_cancel_not_active``.
* ``conversation.item.truncate`` checked against the audio bytes actually sent for the item.
* Server VAD from the energy of the appended audio, honouring ``threshold``,
  ``prefix_padding_ms``, ``silence_duration_ms``, ``create_response``, ``interrupt_response``
  and ``idle_timeout_ms`` (``input_audio_buffer.timeout_triggered`` and a response of the
  server's own); input transcription with scripted text, streamed as deltas by the models that
  stream (:mod:`._realtime_vad`).

Opt-in model behaviours (defaults off, so a plain reply is one spoken message item at once):

* ``FakeRealtimeConfig.reasoning_delay_s``: a reasoning model (``gpt-realtime-2*``, from the
  URL's ``model``) is silent that long after ``response.created``, scaled by
  ``reasoning.effort``, before its first output item.
* ``ScriptedReply.of_items(...)`` (a queued reply or a reply source's answer): several message
  items in one response, spoken (:class:`ReplyItem` ``modality="audio"``) or text-only
  (``"text"``, e.g. a written preamble); truncate and delete work per item, and a cancel
  completes the items already said and never adds the later ones.

Timing is on the audio timeline for VAD (milliseconds of audio appended, like the real server)
and on the event loop's clock for generation (``realtime_factor`` times faster than real time).

Layout: this module holds the server and re-exports the public names; configuration and
records are in ``_realtime_types``, session state and ``session.update`` in
``_realtime_session`` (the accepted keys in ``_realtime_params``), token counts in
``_realtime_usage``; a connection is ``_realtime_base`` (state, sending) <
``_realtime_streaming`` (output items) < ``_realtime_responses`` (create, cancel, end) <
``_realtime_vad`` (input audio, VAD, idle timeout, transcription) < ``_realtime_connection``
(receiving, ``session.update``, items); tool calls are in :mod:`.fake_tools`.

Every client event received and every server event sent is recorded (at the moment it is queued
for the socket, so the record order is the wire order); every error sent is counted by code.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from ._conversation import JSON
from ._realtime_auth import RequiredAuth, auth_refusal
from ._realtime_base import SESSION_EXPIRED_MESSAGE
from ._realtime_connection import FakeRealtimeConnection
from ._realtime_types import (
    LIFECYCLE_EVENT_TYPES,
    FakeRealtimeConfig,
    ReceivedEvent,
    ReplyContext,
    ReplyItem,
    ReplySource,
    ResponseFaults,
    ResponseRecord,
    ScriptedError,
    ScriptedReply,
    SentEvent,
    beta_event_name,
)
from ._support import LOOPBACK_HOST, Notifier
from .fake_tools import ToolScript, ToolScripting

__all__ = [
    "LIFECYCLE_EVENT_TYPES",
    "FakeRealtimeConfig",
    "FakeRealtimeConnection",
    "FakeRealtimeServer",
    "ReceivedEvent",
    "ReplyContext",
    "ReplyItem",
    "ReplySource",
    "RequiredAuth",
    "ResponseFaults",
    "ResponseRecord",
    "ScriptedError",
    "ScriptedReply",
    "SESSION_EXPIRED_MESSAGE",
    "SentEvent",
    "beta_event_name",
]


# --- server -------------------------------------------------------------------------------------


class FakeRealtimeServer(ToolScripting):
    """The fake OpenAI Realtime server.  Use it as an async context manager::

        async with FakeRealtimeServer(FakeRealtimeConfig(realtime_factor=20)) as server:
            server.queue_reply("Hello! How can I help?")
            bridge = MyBridge(openai_url=server.url)   # ws://127.0.0.1:<port>/v1/realtime
            ...
            assert server.error_counts == {}

    ``replies``: scripted reply texts (or :class:`ScriptedReply`) used in order, or a callable
    ``(ReplyContext) -> str | ScriptedReply``.  When the queue is empty (and there is no
    callable) responses say ``config.default_reply``.
    """

    def __init__(
        self,
        config: FakeRealtimeConfig | None = None,
        *,
        replies: Sequence[str | ScriptedReply] | ReplySource | None = None,
        transcripts: Sequence[str] = (),
        on_append: Callable[[int, bytes, float], None] | None = None,
        on_event: Callable[[int, str, float], None] | None = None,
    ) -> None:
        self.config = config or FakeRealtimeConfig()
        # Measurement hooks (the load benchmark): ``on_append(connection, audio, monotonic)``
        # for every decoded ``input_audio_buffer.append``, ``on_event(connection, type,
        # monotonic)`` for every server event queued.  Called synchronously: keep them cheap.
        self._on_append = on_append
        self._on_event = on_event
        self.rng = random.Random(self.config.seed)
        self._reply_queue: list[ScriptedReply] = []
        self._reply_source: ReplySource | None = None
        if callable(replies):
            self._reply_source = replies
        elif replies is not None:
            for reply in replies:
                self.queue_reply(reply)
        self._transcripts: list[str] = list(transcripts)
        self._fault_queue: list[ResponseFaults] = []
        self._error_rules: list[tuple[str, ScriptedError, bool]] = []
        self._server: Server | None = None
        self._notifier = Notifier()
        self._response_number = 0
        self._tools = ToolScript()
        #: Connections in the order they were opened (index = position in this list).
        self.connections: list[FakeRealtimeConnection] = []
        #: Every client event received, in order.
        self.received: list[ReceivedEvent] = []
        #: Every server event sent (queued for the socket), in order.
        self.sent: list[SentEvent] = []
        #: Every response created, in order.
        self.responses: list[ResponseRecord] = []
        #: ``error`` events the protocol rules produced, by code (``"null"`` for no code).  A
        #: correct client keeps this empty, except for what it provokes on purpose.
        self.error_counts: Counter[str] = Counter()
        #: ``error`` events sent because a test asked for them (fault knobs), by code.
        self.injected_error_counts: Counter[str] = Counter()
        #: WebSocket handshakes answered with HTTP 503 (see :meth:`refuse_connections`).
        self.refused = 0
        #: Messages queued for the sockets and messages received, on all connections, kept
        #: even with ``record_events=False``: the client's share of the traffic.
        self.messages_sent = 0
        self.messages_received = 0
        self._refuse = 0
        self._auth: RequiredAuth | None = None
        #: Handshakes refused for their credentials or path (see :meth:`require_auth`).
        self.auth_refused = 0

    # -- start / stop ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 (``config.port``, 0 = a free port)."""
        if self._server is not None:
            return
        self._server = await serve(
            self._handle,
            LOOPBACK_HOST,
            self.config.port,
            max_size=16 * 1024 * 1024,
            process_request=self._process_request,
        )

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await server.wait_closed()

    async def __aenter__(self) -> FakeRealtimeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The port actually bound (valid after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the fake Realtime server is not started")
        for sock in self._server.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("the fake Realtime server has no socket")

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>/v1/realtime`` (any path and query are accepted)."""
        return f"ws://{LOOPBACK_HOST}:{self.port}/v1/realtime"

    def require_auth(self, auth: RequiredAuth | None) -> None:
        """Refuse handshakes that do not meet ``auth`` (``None``: accept any), as the real
        services do: HTTP 401 for a missing or wrong key, 404 for a path or deployment Azure
        does not serve, with the service's JSON error body.  Open connections are kept."""
        self._auth = auth

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        auth = self._auth
        refusal = auth_refusal(auth, request) if auth is not None else None
        if refusal is not None:
            self.auth_refused += 1
            self._notifier.notify()
            status, body = refusal
            response = ws.respond(status, body)
            del response.headers["Content-Type"]  # text/plain by default; the services send JSON
            response.headers["Content-Type"] = "application/json"
            return response
        refuse = self._refuse  # -1: refuse all, n > 0: the next n, 0: accept
        if refuse == 0:
            return None
        if refuse > 0:
            self._refuse = refuse - 1
        self.refused += 1
        self._notifier.notify()
        return ws.respond(503, "Service Unavailable: refused by the simulator\n")

    async def _handle(self, ws: ServerConnection) -> None:
        conn = FakeRealtimeConnection(self, ws, len(self.connections))
        self.connections.append(conn)
        self._notifier.notify()
        await conn._run()

    # -- scripting -------------------------------------------------------------------------

    def queue_reply(
        self, reply: str | ScriptedReply, *, faults: ResponseFaults | None = None
    ) -> None:
        """Add a reply for a future response (used in order, one per response)."""
        if isinstance(reply, str):
            reply = ScriptedReply(reply, faults=faults)
        elif faults is not None:
            reply = attrs.evolve(reply, faults=faults)
        self._reply_queue.append(reply)

    def set_reply_source(self, source: ReplySource | None) -> None:
        """Answer responses with ``source(ReplyContext)`` once the reply queue is empty."""
        self._reply_source = source

    def queue_transcript(self, text: str) -> None:
        """The text of the next input-audio transcription (sent if the session enables it)."""
        self._transcripts.append(text)

    def fault_next_response(self, faults: ResponseFaults) -> None:
        """Apply ``faults`` to the next response created (queued: one entry per response).

        Takes precedence over a reply's faults and over ``config.faults``.
        """
        self._fault_queue.append(faults)

    def error_on_next(
        self,
        client_event_type: str,
        code: str | None,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        swallow: bool = True,
    ) -> None:
        """Answer the next client event of ``client_event_type`` with this error (its
        ``error.event_id`` is that event's ``event_id``).  ``swallow``: the event is then not
        processed, as when the real server rejects it."""
        rule = ScriptedError(code=code, message=message, error_type=error_type, param=param)
        self._error_rules.append((client_event_type, rule, swallow))

    def inject_error(
        self,
        code: str | None,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        client_event_id: str | None = None,
    ) -> None:
        """Send an ``error`` event now on every open connection."""
        for conn in self.open_connections():
            conn.inject_error(
                code, message, error_type=error_type, param=param, client_event_id=client_event_id
            )

    def send_event(self, event: Mapping[str, Any]) -> None:
        """Send an arbitrary server event now on every open connection."""
        for conn in self.open_connections():
            conn.send_event(event)

    def drop_connections(self) -> None:
        """Abort every open connection (no close frame), as a network failure would."""
        for conn in self.open_connections():
            conn.drop()

    def expire_sessions(self) -> None:
        """End every open session as the real server does at its 60-minute cap: ``error``
        ``session_expired``, then a close frame."""
        for conn in self.open_connections():
            conn.expire()

    def refuse_connections(self, count: int | None = None) -> None:
        """Answer the next ``count`` WebSocket handshakes (``None``: all, until
        :meth:`accept_connections`) with HTTP 503, as an overloaded or unreachable service
        would.  Open connections are not touched."""
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._refuse = -1 if count is None else count

    def accept_connections(self) -> None:
        """Undo :meth:`refuse_connections`."""
        self._refuse = 0

    def open_connections(self) -> list[FakeRealtimeConnection]:
        return [c for c in self.connections if not c.closed]

    def _next_reply(
        self, ctx: ReplyContext, scripted: ScriptedReply | None = None
    ) -> tuple[ScriptedReply, ResponseFaults] | None:
        """The reply and faults of a new response; None if the create is to be swallowed (the
        swallowed create consumes its queued faults but not a queued reply).  ``scripted``
        (a tool turn's text) is said instead of the queued or sourced reply."""
        if self._fault_queue and self._fault_queue[0].ignore_create:
            self._fault_queue.pop(0)
            return None
        if not self._fault_queue and not self._reply_queue and self.config.faults.ignore_create:
            return None
        if scripted is not None:
            reply = scripted
        elif self._reply_queue:
            reply = self._reply_queue.pop(0)
        elif self._reply_source is not None:
            produced = self._reply_source(ctx)
            reply = ScriptedReply(produced) if isinstance(produced, str) else produced
        else:
            reply = ScriptedReply(self.config.default_reply)
        if self._fault_queue:
            faults = self._fault_queue.pop(0)
        elif reply.faults is not None:
            faults = reply.faults
        else:
            faults = self.config.faults
        if faults.ignore_create:  # from the reply itself: the reply is spent
            return None
        return reply, faults

    def _next_transcript(self) -> str:
        return self._transcripts.pop(0) if self._transcripts else self.config.default_transcript

    def _take_error_rule(self, event_type: str) -> tuple[ScriptedError, bool] | None:
        for i, (etype, rule, swallow) in enumerate(self._error_rules):
            if etype == event_type:
                del self._error_rules[i]
                return rule, swallow
        return None

    # -- records ---------------------------------------------------------------------------

    def _record_sent(self, connection: int, event: JSON, injected: bool) -> None:
        self.sent.append(SentEvent(time.monotonic(), connection, event, injected))
        if event.get("type") == "error":
            code = event.get("error", {}).get("code")
            counter = self.injected_error_counts if injected else self.error_counts
            counter[str(code) if code is not None else "null"] += 1
        self._notifier.notify()

    def _count_sent(self, event: JSON, injected: bool) -> None:
        """:meth:`_record_sent` without the record (``config.record_events`` off)."""
        if event.get("type") == "error":
            code = event.get("error", {}).get("code")
            counter = self.injected_error_counts if injected else self.error_counts
            counter[str(code) if code is not None else "null"] += 1
        self._notifier.notify()

    def _record_received(self, at: float, connection: int, event: JSON) -> None:
        self.received.append(ReceivedEvent(at, connection, event))

    def client_events(
        self, event_type: str | None = None, *, connection: int | None = None
    ) -> list[JSON]:
        """Client events received (all connections, or one by index), optionally only those
        of one type."""
        return [
            r.event
            for r in self.received
            if (event_type is None or r.event.get("type") == event_type)
            and (connection is None or r.connection == connection)
        ]

    def server_events(self, event_type: str | None = None) -> list[JSON]:
        """Server events sent (all connections), optionally only those of one type (use the
        name as sent: beta names for beta sessions)."""
        return [
            s.event for s in self.sent if event_type is None or s.event.get("type") == event_type
        ]

    def response(self, response_id: str) -> ResponseRecord:
        """The record of a response by id (``KeyError`` if unknown)."""
        for record in self.responses:
            if record.id == response_id:
                return record
        raise KeyError(response_id)

    @property
    def protocol_error_total(self) -> int:
        """Number of protocol-rule errors sent (injected ones excluded)."""
        return sum(self.error_counts.values())

    # -- waiting -----------------------------------------------------------------------------

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
    ) -> None:
        """Wait until ``predicate()`` holds (re-checked on every event sent or received)."""
        await self._notifier.wait_until(predicate, timeout, what)

    async def wait_for_connection(self, timeout: float = 5.0) -> FakeRealtimeConnection:
        """The first connection, once a client has connected."""
        await self.wait_until(lambda: bool(self.connections), timeout, "a connection")
        return self.connections[0]

    async def wait_for_event(
        self,
        event_type: str,
        predicate: Callable[[JSON], bool] | None = None,
        *,
        timeout: float = 5.0,
        start: int = 0,
    ) -> JSON:
        """The first *server* event of ``event_type`` (matching ``predicate``) sent at or after
        position ``start`` of :attr:`sent`; waits for it if needed."""
        return await self._wait_for_first(
            self.sent, event_type, predicate, timeout, start, "server event"
        )

    async def wait_for_client_event(
        self,
        event_type: str,
        predicate: Callable[[JSON], bool] | None = None,
        *,
        timeout: float = 5.0,
        start: int = 0,
    ) -> JSON:
        """The first *client* event of ``event_type`` received at or after position ``start``
        of :attr:`received`."""
        return await self._wait_for_first(
            self.received, event_type, predicate, timeout, start, "client event"
        )

    async def _wait_for_first(
        self,
        records: Sequence[ReceivedEvent] | Sequence[SentEvent],
        event_type: str,
        predicate: Callable[[JSON], bool] | None,
        timeout: float,
        start: int,
        what: str,
    ) -> JSON:
        """The first event of ``event_type`` (matching ``predicate``) at or after position
        ``start`` of ``records`` (a live list: waits for it to appear)."""
        found: list[JSON] = []

        def check() -> bool:
            for record in records[start:]:
                event = record.event
                if event.get("type") == event_type and (predicate is None or predicate(event)):
                    found.append(event)
                    return True
            return False

        await self.wait_until(check, timeout, f"{what} {event_type}")
        return found[0]

"""One fake Realtime connection's state, lifecycle and sending: the base of
:class:`~realtime_fsm.testing.fake_realtime.FakeRealtimeConnection`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._conversation import JSON
from ._realtime_session import _Session
from ._realtime_types import _GA_ONLY, Api, ResponseRecord, ScriptedError, beta_event_name
from ._realtime_usage import InputTokens, output_audio_tokens

if TYPE_CHECKING:
    from .fake_realtime import FakeRealtimeServer


import asyncio
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import attrs
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ._conversation import Item as _Item
from ._support import openai_id
from .fake_tools import (
    ToolPlan,
)


class _Abort:
    """Sentinel in the outbound queue: abort the TCP connection once everything before is sent."""


_ABORT = _Abort()


class _Close:
    """Sentinel in the outbound queue: close the WebSocket (close frame) once everything before
    is sent, as the real server does after ``session_expired``."""


_CLOSE = _Close()
#: The real server's message when a session reaches its maximum duration.
SESSION_EXPIRED_MESSAGE = "Your session hit the maximum duration of 60 minutes."


@attrs.define(eq=False)
class _Message:
    """One assistant message item a response says (one per ``ScriptedReply.items`` entry)."""

    text: str
    #: Spoken (``output_audio``) or written (``output_text``).
    audio: bool
    audio_ms: int
    item: _Item | None = None
    output_index: int = 0
    previous_item_id: str | None = None
    transcript_sent: str = ""
    #: Its done events were sent.
    finished: bool = False


@attrs.define(eq=False)
class _Live:
    """Runtime state of a response that has not finished yet."""

    record: ResponseRecord
    output_format: str
    voice: Any
    max_output_tokens: int | str
    #: The message items it will say, in order (they are added one after the other).
    messages: list[_Message]
    #: Its context (input tokens), counted when it was created.
    context: InputTokens
    #: The silent "thinking" before the first output item (reasoning models).
    reasoning_delay_s: float = 0.0
    cancel_event: asyncio.Event = attrs.field(factory=asyncio.Event)
    cancel_reason: str | None = None
    task: asyncio.Task[None] | None = None
    done_event: JSON | None = None
    #: The pause in progress (see ``_pause``): resolved True by a cancel, False by its timer.
    pause_waiter: asyncio.Future[bool] | None = None
    #: Tool calls of this response (see :mod:`.fake_tools`); their items follow the messages.
    tools: ToolPlan | None = None
    #: Every output item added so far, in output order (``response.done``'s ``output``).
    output: list[JSON] = attrs.field(factory=list)
    #: Output tokens so far (see :mod:`._realtime_usage`): text, and the audio's milliseconds.
    text_tokens: int = 0
    audio_ms_sent: int = 0
    #: ``max_output_tokens`` ran out: the response ends ``incomplete``.
    out_of_tokens: bool = False

    @property
    def audio_tokens(self) -> int:
        return output_audio_tokens(self.audio_ms_sent)


# --- connection -----------------------------------------------------------------------------


class _ConnectionBase:
    """State, lifecycle and sending of one connection; the protocol handlers are in the
    subclasses (responses in ``_realtime_responses``, the rest in ``_realtime_connection``)."""

    def __init__(self, server: FakeRealtimeServer, ws: ServerConnection, index: int) -> None:
        self._server = server
        self._ws = ws
        self.index = index
        request = ws.request
        self.path: str = request.path if request is not None else ""
        self.headers: dict[str, str] = dict(request.headers.raw_items()) if request else {}
        self.api: Api = self._pick_api()
        self.opened_at = time.monotonic()
        self.closed = False
        #: When the connection closed (either side), on the ``time.monotonic`` clock.
        self.closed_at: float | None = None
        #: Ended by :meth:`expire` (or ``config.session_max_s``).
        self.expired = False
        model = self._query_model() or server.config.model
        self._session = _Session(id=openai_id("sess", server.rng), model=model, api=self.api)
        if self.api == "beta":
            self._session.output_modalities = ["text", "audio"]
        self._conversation_id = openai_id("conv", server.rng)
        self._out: asyncio.Queue[str | _Abort | _Close | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._items: dict[str, _Item] = {}
        self._oob_items: dict[str, _Item] = {}
        self._active: _Live | None = None
        self._live: dict[str, _Live] = {}
        self._server_create_pending = False
        self._pending_late: list[tuple[JSON, bool]] = []
        self._last_user_text: str | None = None
        #: Assistant audio has been sent: the session's voice can no longer change.
        self._voice_locked = False
        #: The context of the latest default-conversation response (its prefix is cached).
        self._last_context: InputTokens | None = None
        #: Idle timeout: the input-audio position where the last response's playback is
        #: estimated to end (``response.done`` plus its audio), or None when not armed.
        self._idle_from_ms: int | None = None
        # VAD, on the audio timeline.
        self._audio_ms = 0
        self._uncommitted_ms = 0
        self._residual = b""
        self._speaking = False
        self._speech_item: str | None = None
        self._silence_ms = 0
        self._speech_start_ms = 0

    # -- public --------------------------------------------------------------------------------

    @property
    def session(self) -> JSON:
        """The effective session configuration, rendered as ``session.updated`` would show it."""
        return self._session.render()

    @property
    def active_response_id(self) -> str | None:
        """The default-conversation response holding the slot, if any."""
        return self._active.record.id if self._active else None

    def send_event(self, event: Mapping[str, Any]) -> None:
        """Send an arbitrary server event (an ``event_id`` is added if missing)."""
        self._emit(dict(event), injected=True)

    def inject_error(
        self,
        code: str | None,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        client_event_id: str | None = None,
    ) -> None:
        """Send an ``error`` event now.  Counted in ``injected_error_counts``, not as a
        protocol error."""
        self._send_error(code, message, error_type, param, client_event_id, injected=True)

    def drop(self) -> None:
        """Abort the TCP connection (no close frame) once the events already queued are sent."""
        self._out.put_nowait(_ABORT)

    def expire(self) -> None:
        """End the session as the real server does at its 60-minute cap: ``error``
        ``session_expired`` (type ``invalid_request_error``, no ``event_id``), then a close."""
        if self.closed:
            return
        self._send_error("session_expired", SESSION_EXPIRED_MESSAGE, injected=True)
        self._out.put_nowait(_CLOSE)
        self.expired = True

    @property
    def items(self) -> list[JSON]:
        """The conversation items of this session, in order (as ``conversation.item.added``
        shows them): what a restored conversation looks like to the model."""
        return [item.item for item in self._items.values()]

    # -- lifecycle -----------------------------------------------------------------------------

    def _pick_api(self) -> Api:
        configured = self._server.config.api
        if configured != "auto":
            return configured
        beta = any(
            k.lower() == "openai-beta" and "realtime=v1" in v.replace(" ", "").lower()
            for k, v in self.headers.items()
        )
        return "beta" if beta else "ga"

    def _query_model(self) -> str | None:
        match = re.search(r"[?&]model=([^&]+)", self.path)
        return match.group(1) if match else None

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        self._spawn(self._writer())
        self._emit({"type": "session.created", "session": self._session.render()})
        for scripted in self._server.config.scripted_errors:
            self._spawn(self._scripted_error(scripted))
        if self._server.config.session_max_s is not None:
            self._spawn(self._expire_after(self._server.config.session_max_s))
        try:
            async for message in self._ws:
                self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self.closed_at = time.monotonic()
            for live in list(self._live.values()):
                live.record.socket_dropped = True
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._server._notifier.notify()

    async def _writer(self) -> None:
        while True:
            item = await self._out.get()
            if item is None:
                return
            if isinstance(item, _Abort):
                for live in self._live.values():
                    live.record.socket_dropped = True
                self._ws.transport.abort()
                return
            if isinstance(item, _Close):
                for live in self._live.values():
                    live.record.socket_dropped = True
                await self._ws.close(1000, "session expired")
                return
            try:
                await self._ws.send(item)
            except ConnectionClosed:
                return

    async def _expire_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.expire()

    async def _scripted_error(self, scripted: ScriptedError) -> None:
        await asyncio.sleep(scripted.at_s)
        self._send_error(
            scripted.code,
            scripted.message,
            scripted.error_type,
            scripted.param,
            scripted.client_event_id,
            injected=True,
        )

    # -- sending -------------------------------------------------------------------------------

    def _emit(self, event: JSON, *, injected: bool = False, twice: bool = False) -> None:
        """Queue ``event`` (GA name in ``type``) for the socket, renamed for beta sessions."""
        if self.closed:
            return
        etype = str(event.get("type", ""))
        if self.api == "beta":
            if etype in _GA_ONLY:
                return
            event["type"] = beta_event_name(etype)
        event.setdefault("event_id", openai_id("event", self._server.rng))
        # Serialise now: later changes to server state (a truncate, a transcript) must not
        # reach an event already sent, and the record must be exactly what went on the wire.
        text = json.dumps(event)
        server = self._server
        for _ in range(2 if twice else 1):
            server.messages_sent += 1
            self._out.put_nowait(text)
            if server.config.record_events:
                server._record_sent(self.index, json.loads(text), injected)
            else:
                server._count_sent(event, injected)
        if server._on_event is not None:
            server._on_event(self.index, etype, time.monotonic())

    def _send_error(
        self,
        code: str | None,
        message: str,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        client_event_id: str | None = None,
        *,
        injected: bool = False,
    ) -> None:
        self._emit(
            {
                "type": "error",
                "error": {
                    "type": error_type,
                    "code": code,
                    "message": message,
                    "param": param,
                    "event_id": client_event_id,
                },
            },
            injected=injected,
        )

    def _emit_for(self, live: _Live, event: JSON, *, injected: bool = False) -> None:
        twice = event.get("type") in live.record.faults.duplicate_events
        self._emit(event, injected=injected, twice=twice)

    def _on_message(self, message: str | bytes) -> None:
        raise NotImplementedError  # FakeRealtimeConnection handles client events

    def _commit(self, item_id: str, audio_ms: int) -> None:
        raise NotImplementedError  # FakeRealtimeConnection owns the input audio buffer

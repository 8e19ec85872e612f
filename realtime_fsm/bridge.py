"""The asyncio bridge: one phone call, a Twilio Media Streams socket and an OpenAI Realtime socket.

Everything the response lifecycle decides goes through :class:`ResponseLifecycle`; the bridge
holds no response flags of its own.  It only moves bytes and runs the machine's commands:

* a task per inbound direction (Twilio -> OpenAI, OpenAI -> Twilio),
* a writer task per outbound socket behind a bounded queue, so the order of what the machine
  decides is the order on the wire, and a peer that stops reading cannot grow memory without
  bound (the call is ended with a logged reason instead),
* a timer task that sleeps until the machine's ``next_deadline`` and feeds it a ``Tick``.

mu-law passes through untouched: Twilio's base64 payload string becomes the OpenAI
``input_audio_buffer.append`` audio string and the OpenAI delta string becomes the Twilio
``media`` payload, never decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

import attrs
from websockets.exceptions import ConnectionClosed as WsConnectionClosed

from . import events as ev
from .commands import (
    ClearPlayback,
    Command,
    DropResponseAudio,
    RequestGivenUp,
    ReturnUndeliveredText,
    SendUserText,
)
from .config import LifecycleConfig
from .errors import RemoteProtocolError
from .lifecycle import ResponseLifecycle
from .openai_realtime import (
    DEFAULT_MAX_FRAME_SIZE,
    Dialect,
    Ignored,
    InputTranscript,
    OpenAIRealtimeCodec,
    OutputAudioDelta,
    OutputTranscriptDelta,
    ResponseActivity,
    SessionConfig,
    input_audio_append_json,
    is_client_command,
)
from .twilio_media import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Connected,
    Dtmf,
    Mark,
    Media,
    PlaybackTracker,
    Start,
    Stop,
    UnknownMessage,
    clear_message,
    mark_message,
    media_message,
    parse_message,
)
from .webserver import WebSocketClosed

log = logging.getLogger("realtime_fsm.bridge")

#: Server error codes after which the session cannot go on (livekit's list, plus the 60-minute
#: cap): the call is ended with the code as its reason.
FATAL_ERROR_CODES: Final = frozenset(
    {
        "invalid_api_key",
        "insufficient_quota",
        "account_deactivated",
        "billing_hard_limit_reached",
        "session_expired",
    }
)
_CLOSED = (WsConnectionClosed, WebSocketClosed, ConnectionError, OSError, EOFError)


class MessageSocket(Protocol):
    """What the bridge needs of a WebSocket: a ``websockets`` connection or our own server's."""

    async def recv(self) -> str | bytes: ...

    async def send(self, message: str) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


@attrs.frozen
class BridgeConfig:
    """Per-deployment settings; one ``CallBridge`` per call is built from them."""

    session: SessionConfig = attrs.field(factory=SessionConfig)
    dialect: Dialect = Dialect.GA
    lifecycle: LifecycleConfig = attrs.field(factory=LifecycleConfig)
    #: Instructions for a first response as soon as the stream starts; ``None``: wait for the
    #: caller.
    greeting: str | None = None
    #: Map each DTMF key to user text (``"DTMF 5"``), so keypad input reaches the model.
    dtmf_as_text: bool = True
    #: Accept ``{"event": "text", "text": ...}`` on the telephony socket as typed user text.
    #: Not a Twilio message: for simulators and custom telephony front-ends only.
    accept_text_messages: bool = False
    max_openai_frame: int = DEFAULT_MAX_FRAME_SIZE
    max_twilio_message: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Outbound messages buffered per socket before the call is ended as unable to keep up.
    max_queue: int = 2000
    #: Malformed frames tolerated per call before the offending socket is closed (1008).
    max_bad_frames: int = 100
    #: How long to wait for Twilio's ``start`` before giving up on the stream.
    start_timeout: float = 15.0


@attrs.define
class CallReport:
    """What happened on one call, for logs, metrics and the application."""

    call_sid: str | None = None
    stream_sid: str | None = None
    end_reason: str = ""
    undelivered_texts: list[str] = attrs.field(factory=list)
    given_up: list[RequestGivenUp] = attrs.field(factory=list)
    bad_frames: dict[str, int] = attrs.field(factory=dict)
    lifecycle_stats: dict[str, int] = attrs.field(factory=dict)
    user_texts_sent: int = 0
    media_in: int = 0
    media_out: int = 0
    server_errors: dict[str, int] = attrs.field(factory=dict)


class _EndCall(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallBridge:
    """Bridge one Twilio stream to one OpenAI Realtime session until either side ends."""

    def __init__(
        self,
        twilio: MessageSocket,
        openai: MessageSocket,
        config: BridgeConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_undelivered: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        self.twilio = twilio
        self.openai = openai
        self.config = config if config is not None else BridgeConfig()
        self.clock = clock
        self.on_undelivered = on_undelivered
        self.report = CallReport()
        # Built in ``_begin``, once Twilio's ``start`` names the call they log under; nothing
        # uses them before that.
        self.codec: OpenAIRealtimeCodec
        self.tracker: PlaybackTracker
        self.machine: ResponseLifecycle | None = None
        self.stream_sid = ""
        self._to_openai: asyncio.Queue[str | None] = asyncio.Queue(self.config.max_queue)
        self._to_twilio: asyncio.Queue[str | None] = asyncio.Queue(self.config.max_queue)
        self._wake = asyncio.Event()
        self._sleeping_until: float | None = None
        self._call = "-"

    # ------------------------------------------------------------------------- public API

    async def run(self) -> CallReport:
        """Serve the call; returns when either side ends.  Never raises for peer behaviour."""
        try:
            start = await self._await_start()
        except _EndCall as end:
            self.report.end_reason = end.reason
            await self._close_both(1008 if end.reason.startswith("bad") else 1000, end.reason)
            return self.report
        self._begin(start)
        tasks = [
            asyncio.create_task(self._twilio_reader(), name=f"{self._call}:twilio-in"),
            asyncio.create_task(self._openai_reader(), name=f"{self._call}:openai-in"),
            asyncio.create_task(self._writer(self._to_openai, self.openai), name="openai-out"),
            asyncio.create_task(self._writer(self._to_twilio, self.twilio), name="twilio-out"),
            asyncio.create_task(self._timer(), name=f"{self._call}:timer"),
        ]
        reason = "ended"
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if isinstance(exc, _EndCall):
                    reason = exc.reason
                elif exc is not None:
                    reason = f"internal error: {type(exc).__name__}"
                    log.error("call=%s task %s failed", self._call, task.get_name(), exc_info=exc)
                else:
                    reason = str(task.result())
                break
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._finish(reason)
            # Too much malformed input is a policy violation (1008), as before ``start``.
            await self._close_both(1008 if reason.startswith("bad") else 1000, reason[:100])
        return self.report

    def send_user_text(self, text: str, source: str = "app") -> None:
        """User text from elsewhere (a chat box, an SMS): delivered exactly once, barge-in safe."""
        self._handle(ev.UserText(text, source=source))

    def request_response(self, reason: str = "app", instructions: str | None = None) -> None:
        """Ask the model to speak (after a tool result, a timer, ...): queued if it is busy."""
        self._handle(ev.RequestResponse(reason=reason, instructions=instructions))

    # --------------------------------------------------------------------------- the call

    async def _await_start(self) -> Start:
        deadline = self.clock() + self.config.start_timeout
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise _EndCall("no start from telephony")
            try:
                frame = await asyncio.wait_for(self.twilio.recv(), remaining)
            except asyncio.TimeoutError:
                raise _EndCall("no start from telephony") from None
            except _CLOSED:
                raise _EndCall("telephony closed before start") from None
            try:
                message = parse_message(frame, max_message_size=self.config.max_twilio_message)
            except RemoteProtocolError as exc:
                self._bad_frame("twilio", exc)
                continue
            if isinstance(message, Start):
                fmt = message.media_format
                if fmt is not None and not fmt.is_mulaw_8k_mono:
                    raise _EndCall(f"bad media format {fmt}")
                return message
            if isinstance(message, Stop):
                raise _EndCall("telephony stopped before start")
            if not isinstance(message, Connected):
                self._count_bad("twilio", "before_start")
                log.warning("call=- %s before start dropped", type(message).__name__.lower())

    def _begin(self, start: Start) -> None:
        self.stream_sid = start.stream_sid
        self._call = start.call_sid or start.stream_sid
        self.report.call_sid = start.call_sid
        self.report.stream_sid = start.stream_sid
        expected = self.config.session.expected_session()
        lifecycle_cfg = attrs.evolve(
            self.config.lifecycle,
            call_id=self._call,
            server_creates_response=expected.create_response,
            server_interrupts_response=expected.interrupt_response,
        )
        self.machine = ResponseLifecycle(lifecycle_cfg, now=self.clock())
        self.codec = OpenAIRealtimeCodec(
            dialect=self.config.dialect,
            max_frame_size=self.config.max_openai_frame,
            call_id=self._call,
        )
        self.tracker = PlaybackTracker(
            bytes_per_ms=self.config.lifecycle.audio_bytes_per_ms, call_id=self._call
        )
        log.info(
            "call=%s stream started stream=%s params=%s",
            self._call,
            self.stream_sid,
            dict(start.custom_parameters),
        )
        self._send_openai(json.dumps(self.codec.session_update(self.config.session)))
        if self.config.greeting is not None:
            self._handle(ev.RequestResponse(reason="greeting", instructions=self.config.greeting))

    def _finish(self, reason: str) -> None:
        self.report.end_reason = reason
        machine = self.machine
        if machine is not None:
            with contextlib.suppress(Exception):
                self._execute(machine.handle(ev.ConnectionClosed(reason), self.clock()))
            self.report.lifecycle_stats = dict(machine.stats)
        log.info(
            "call=%s ended: %s (media in=%d out=%d, undelivered texts=%d)",
            self._call,
            reason,
            self.report.media_in,
            self.report.media_out,
            len(self.report.undelivered_texts),
        )

    async def _close_both(self, code: int, reason: str) -> None:
        for sock in (self.openai, self.twilio):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sock.close(code, reason), 3.0)

    # -------------------------------------------------------------------------- machine glue

    def _handle(self, event: ev.Event) -> None:
        machine = self.machine
        assert machine is not None
        self._execute(machine.handle(event, self.clock()))
        self._maybe_wake()

    def _maybe_wake(self) -> None:
        machine = self.machine
        assert machine is not None
        deadline = machine.next_deadline
        if deadline is not None and (
            self._sleeping_until is None or deadline < self._sleeping_until
        ):
            self._wake.set()

    def _execute(self, commands: list[Command]) -> None:
        for command in commands:
            if is_client_command(command):
                self._send_openai(self.codec.render_json(command))
                if isinstance(command, SendUserText):
                    self.report.user_texts_sent += 1
            elif isinstance(command, ClearPlayback):
                self._send_twilio(clear_message(self.stream_sid))
                self.tracker.clear()
            elif isinstance(command, DropResponseAudio):
                pass  # the machine filters that response's deltas from now on
            elif isinstance(command, RequestGivenUp):
                self.report.given_up.append(command)
                log.warning(
                    "call=%s response request given up: %s (%s)",
                    self._call,
                    command.reason,
                    ",".join(command.request_reasons),
                )
            elif isinstance(command, ReturnUndeliveredText):
                self.report.undelivered_texts.extend(command.texts)
                if self.on_undelivered is not None:
                    self.on_undelivered(command.texts)

    def _send_openai(self, message: str) -> None:
        try:
            self._to_openai.put_nowait(message)
        except asyncio.QueueFull:
            raise _EndCall("openai socket not keeping up (queue full)") from None

    def _send_twilio(self, message: str) -> None:
        try:
            self._to_twilio.put_nowait(message)
        except asyncio.QueueFull:
            raise _EndCall("telephony socket not keeping up (queue full)") from None

    def _count_bad(self, side: str, kind: str) -> None:
        key = f"{side}:{kind}"
        self.report.bad_frames[key] = self.report.bad_frames.get(key, 0) + 1
        if sum(self.report.bad_frames.values()) > self.config.max_bad_frames:
            raise _EndCall(f"bad input: too many malformed frames from {side}")

    def _bad_frame(self, side: str, exc: RemoteProtocolError) -> None:
        log.warning("call=%s bad frame from %s dropped: %s", self._call, side, exc.message[:200])
        self._count_bad(side, "malformed")

    # ----------------------------------------------------------------------------- tasks

    async def _writer(self, queue: asyncio.Queue[str | None], sock: MessageSocket) -> str:
        while True:
            message = await queue.get()
            if message is None:
                return "writer done"
            try:
                await sock.send(message)
            except _CLOSED:
                side = "openai" if sock is self.openai else "telephony"
                raise _EndCall(f"{side} closed") from None

    async def _twilio_reader(self) -> str:
        machine = self.machine
        assert machine is not None
        report = self.report
        max_size = self.config.max_twilio_message
        while True:
            try:
                frame = await self.twilio.recv()
            except _CLOSED:
                return "telephony closed"
            try:
                message = parse_message(frame, max_message_size=max_size)
            except RemoteProtocolError as exc:
                self._bad_frame("twilio", exc)
                continue
            kind = type(message)
            if kind is Media:
                assert isinstance(message, Media)
                if message.track is None or message.track == "inbound":
                    report.media_in += 1
                    self._send_openai(input_audio_append_json(message.payload))
            elif kind is Mark:
                assert isinstance(message, Mark)
                for progress in self.tracker.mark_received(message.name):
                    machine.playback_progress(progress.item_id, progress.played_ms)
            elif kind is Dtmf:
                assert isinstance(message, Dtmf)
                if self.config.dtmf_as_text:
                    self._handle(ev.UserText(f"DTMF {message.digit}", source="dtmf"))
            elif kind is Stop:
                return "telephony stop"
            elif kind is Start:
                self._count_bad("twilio", "duplicate_start")
                log.warning("call=%s duplicate start ignored", self._call)
            elif kind is UnknownMessage:
                self._on_unknown_twilio(frame)
            # Connected after start: harmless, nothing to do.

    def _on_unknown_twilio(self, frame: str | bytes) -> None:
        if self.config.accept_text_messages:
            try:
                data = json.loads(frame)
                text = data.get("text") if data.get("event") == "text" else None
            except (ValueError, AttributeError):
                text = None
            if isinstance(text, str) and text.strip():
                self._handle(ev.UserText(text, source="typed"))
                return
        self._count_bad("twilio", "unknown_event")

    async def _openai_reader(self) -> str:
        machine = self.machine
        assert machine is not None
        codec = self.codec
        tracker = self.tracker
        report = self.report
        clock = self.clock
        while True:
            try:
                frame = await self.openai.recv()
            except _CLOSED:
                return "openai closed"
            try:
                message = codec.parse(frame)
            except RemoteProtocolError as exc:
                self._bad_frame("openai", exc)
                continue
            kind = type(message)
            if kind is OutputAudioDelta:
                assert isinstance(message, OutputAudioDelta)
                item = message.item_id
                if not item:  # the mark names the item: an empty id is the peer's error
                    self._bad_frame("openai", RemoteProtocolError("audio delta: empty item_id"))
                    continue
                if machine.audio_delta(message.response_id, item, message.byte_count, clock()):
                    sid = self.stream_sid
                    self._send_twilio(media_message(sid, message.payload))
                    self._send_twilio(
                        mark_message(sid, tracker.audio_sent(item, message.byte_count))
                    )
                    report.media_out += 1
            elif kind is OutputTranscriptDelta:
                assert isinstance(message, OutputTranscriptDelta)
                machine.transcript_delta(message.response_id, clock())
                self._maybe_wake()
            elif kind is ResponseActivity:
                assert isinstance(message, ResponseActivity)
                machine.touch(message.response_id, clock())
            elif kind is Ignored:
                pass
            elif kind is InputTranscript:
                assert isinstance(message, InputTranscript)
                log.info("call=%s caller said: %r", self._call, message.transcript[:200])
            else:
                if isinstance(message, ev.ServerError):
                    code = message.code or "unknown"
                    report.server_errors[code] = report.server_errors.get(code, 0) + 1
                    if code in FATAL_ERROR_CODES:
                        raise _EndCall(f"openai error {code}")
                self._handle(message)  # type: ignore[arg-type]

    async def _timer(self) -> str:
        machine = self.machine
        assert machine is not None
        while True:
            deadline = machine.next_deadline
            self._sleeping_until = deadline
            self._wake.clear()
            # Never spin: a deadline that a tick did not move is retried after a short pause.
            timeout = None if deadline is None else max(0.005, deadline - self.clock())
            if not await _wait_event(self._wake, timeout):
                self._handle(ev.Tick())


async def _wait_event(event: asyncio.Event, timeout: float | None) -> bool:
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

"""The asyncio bridge: one phone call, a Twilio Media Streams socket and an OpenAI Realtime socket.

Everything the response lifecycle decides goes through :class:`ResponseLifecycle`; the bridge
holds no response flags of its own.  It only moves bytes and runs the machine's commands:

* a task per inbound direction (Twilio -> OpenAI, OpenAI -> Twilio),
* a writer task per outbound socket behind a bounded queue, so the order of what the machine
  decides is the order on the wire, and a peer that stops reading cannot grow memory without
  bound (the call is ended with a logged reason instead),
* a timer task that sleeps until the machine's ``next_deadline`` and feeds it a ``Tick``.

The OpenAI side is a *session* that can be replaced: when its socket drops, or the server ends it
(``session_expired``), and a ``reconnect`` connector was given, the bridge opens a new socket,
re-sends the session config, replays the conversation it knows as text (bounded, see
:mod:`realtime_fsm.history`), delivers the user text the lost session never got, and carries on
with a fresh machine.  See "Lost sessions and reconnects" in ``docs/bridge.md``.

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
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar, cast

import attrs
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.protocol import State as WsState

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
from .errors import CallNotActive, LocalProtocolError, RemoteProtocolError
from .history import ConversationHistory
from .lifecycle import USER_TEXT_REASON, USER_TURN_REASON, ResponseLifecycle
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
    dumps,
    input_audio_append_json,
    is_client_command,
    render_input_audio_commit,
)
from .table import ResponseState
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
    check_mark_every_ms,
    clear_message,
    mark_message,
    media_message,
    parse_message,
)
from .webserver import WebSocket, WebSocketClosed

log = logging.getLogger("realtime_fsm.bridge")
_T = TypeVar("_T")

#: Server error codes no new session can cure (livekit's list): the call is ended with the code
#: as its reason, never retried.
FATAL_ERROR_CODES: Final = frozenset(
    {
        "invalid_api_key",
        "insufficient_quota",
        "account_deactivated",
        "billing_hard_limit_reached",
    }
)
#: Server error codes that end the *session*, not the call (the 60-minute cap): with a
#: ``reconnect`` connector the bridge goes on with a new session; without one the call ends
#: with the code as its reason.
SESSION_LOST_ERROR_CODES: Final = frozenset({"session_expired"})
#: HTTP statuses of a refused reconnect handshake that retrying cannot fix (bad key, no access).
_FATAL_HANDSHAKE_STATUSES: Final = frozenset({401, 403})
_CLOSED = (WsConnectionClosed, WebSocketClosed, ConnectionError, OSError, EOFError)
_RESPONDING: Final = (ResponseState.CREATING, ResponseState.ACTIVE)
#: A session lost sooner than this after it started is short-lived: consecutive ones are backed
#: off (``reconnect_base_delay`` doubling up to ``reconnect_max_delay``) before the next
#: connect, so a server that says ``session.created`` and drops is not hammered.
_SHORT_SESSION_S: Final = 3.0
#: Response transcripts being accumulated at once (one default response, plus stragglers).
_MAX_PARTIALS: Final = 8


class MessageSocket(Protocol):
    """What the bridge needs of a WebSocket: a ``websockets`` connection or our own server's."""

    async def recv(self) -> str | bytes: ...

    async def send(self, message: str) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


#: Opens a new OpenAI Realtime socket (same URL and headers as the first) for a reconnect.
Connector = Callable[[], Awaitable[MessageSocket]]


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _dtmf_key(_inst: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and (type(value) is not str or value not in _DTMF_KEYS):
        raise ValueError(f"{attribute.name} must be one DTMF key (0-9, *, #), got {value!r}")


_DTMF_KEYS: Final = frozenset("0123456789*#")


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _mark_every(_inst: object, _attribute: attrs.Attribute[Any], value: int) -> None:
    # The tracker's own check, run when the config is built: a bad deployment setting fails at
    # start-up instead of ending every call.
    check_mark_every_ms(value)


#: ``BridgeConfig.mark_every_ms``'s default: a Twilio ``mark`` per 500 ms of an item's audio.
DEFAULT_MARK_EVERY_MS: Final = 500


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
    #: The keypad key that ends the caller's spoken turn (push-to-talk: the bridge commits the
    #: input audio, see :meth:`CallBridge.commit_user_turn`), for a session without turn
    #: detection (``SessionConfig(turn_detection=None)``); that key is then not sent as text.
    #: ``None``: no key does.
    commit_on_dtmf: str | None = attrs.field(default=None, validator=_dtmf_key)
    #: Accept ``{"event": "text", "text": ...}`` on the telephony socket as typed user text.
    #: Not a Twilio message: for simulators and custom telephony front-ends only.
    accept_text_messages: bool = False
    max_openai_frame: int = DEFAULT_MAX_FRAME_SIZE
    max_twilio_message: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Outbound messages buffered per socket before the call is ended as unable to keep up.
    max_queue: int = 2000
    #: Malformed frames tolerated per call before the offending socket is closed (1008).
    max_bad_frames: int = 100
    #: At most one Twilio ``mark`` per this many ms of an item's audio (plus one at its end);
    #: 0 = a mark after every ``media``.  With 20 ms deltas, per-delta marks are a third of a
    #: call's messages (each is sent, echoed and parsed); at 500 they are 1 in 25.  Truncation
    #: stays exact between marks while ``estimate_playback`` is on (the default); without it,
    #: truncation points have this granularity (always on the early side).
    mark_every_ms: int = attrs.field(default=DEFAULT_MARK_EVERY_MS, validator=_mark_every)
    #: Right before a barge-in (``speech_started``, user text), estimate how far the caller's
    #: playback got since the last mark echo (:meth:`PlaybackTracker.estimate`), so that the
    #: truncate point is what was heard, to within the echo's delay, however sparse the marks;
    #: False: truncate at the last echoed mark (early by up to ``mark_every_ms``).
    estimate_playback: bool = True
    #: How long to wait for Twilio's ``start`` before giving up on the stream.
    start_timeout: float = 15.0
    #: Connection attempts per lost session (the first at once, then with backoff) before the
    #: call ends with ``openai reconnect failed after N attempts``.  A new session that drops
    #: before its ``session.created``/``session.updated`` counts as a failed attempt.
    reconnect_attempts: int = attrs.field(default=4, validator=_positive)
    #: Backoff before the second attempt; doubled for each further one, up to the cap.
    reconnect_base_delay: float = attrs.field(default=0.25, validator=_non_negative)
    reconnect_max_delay: float = attrs.field(default=4.0, validator=_non_negative)
    #: Bound on one connection attempt (the connector should have its own, shorter one).
    reconnect_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Sessions a call may lose and replace in total (a 3-hour call needs 3 for the cap alone);
    #: past it the call ends rather than flap.
    max_reconnects: int = attrs.field(default=20, validator=_non_negative)
    #: Bounds of the conversation text kept for a restore (oldest dropped first).
    history_max_items: int = attrs.field(default=40, validator=_non_negative)
    history_max_chars: int = attrs.field(default=8000, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.commit_on_dtmf is not None and self.session.turn_detection is not None:
            raise ValueError(
                "commit_on_dtmf needs a session without turn detection"
                " (SessionConfig(turn_detection=None)): the server's VAD commits turns itself"
            )


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
    #: User texts written to an OpenAI socket (not merely queued; once if re-sent on a new
    #: session; never for a text handed back undelivered).
    user_texts_sent: int = 0
    media_in: int = 0
    media_out: int = 0
    server_errors: dict[str, int] = attrs.field(factory=dict)
    #: OpenAI sessions lost and replaced during the call.
    reconnects: int = 0
    #: Connection attempts that failed while replacing a lost session.
    reconnect_failures: int = 0
    #: Seconds from each loss to the new session's socket being open.
    reconnect_times: list[float] = attrs.field(factory=list)
    #: Caller audio frames dropped because no OpenAI session was up (while reconnecting), or
    #: left over for a lost session (queued, or its send failed): never sent to the next one.
    media_dropped: int = 0
    #: Caller turns a lost session took with it: committed (by the server's VAD or by
    #: :meth:`CallBridge.commit_user_turn`) but not answered in full, with no transcript to
    #: restore; or committed by hand while no session was up or before the lost one
    #: confirmed it.  The new session cannot know what was said, so they are not answered
    #: (the caller, hearing nothing, repeats).  A turn whose transcript did arrive is
    #: answered on the new session.
    turns_lost: int = 0


class _EndCall(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _SessionLost(Exception):
    """The OpenAI session is gone (socket closed, ``session_expired``), the call is not."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _TextFrame:
    """A user text item in the OpenAI queue: its text rides along so that, if the frame never
    reaches a socket, the text goes to the next session or back to the application."""

    __slots__ = ("json", "source", "text")

    def __init__(self, json_text: str, text: str, source: str) -> None:
        self.json = json_text
        self.text = text
        self.source = source


_Outbound = str | _TextFrame | None


class _Transcript:
    """One response's transcript so far, cut at ``limit`` characters: the history keeps no
    more than that of it anyway, and a server streaming huge deltas (or never ending a
    response) must not grow the bridge's memory."""

    __slots__ = ("chars", "limit", "parts")

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.chars = 0
        self.limit = limit

    def add(self, delta: str) -> None:
        room = self.limit - self.chars
        if room > 0:
            piece = delta if len(delta) <= room else delta[:room]
            self.parts.append(piece)
            self.chars += len(piece)


class CallBridge:
    """Bridge one Twilio stream to one OpenAI Realtime session until either side ends.

    ``reconnect``: opens a new OpenAI socket when the session is lost mid-call; ``None`` ends the
    call instead (as before reconnects existed)."""

    def __init__(
        self,
        twilio: MessageSocket,
        openai: MessageSocket,
        config: BridgeConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_undelivered: Callable[[tuple[str, ...]], None] | None = None,
        reconnect: Connector | None = None,
    ) -> None:
        self.twilio = twilio
        self.openai = openai
        self.config = config if config is not None else BridgeConfig()
        self.clock = clock
        self.on_undelivered = on_undelivered
        self.reconnect = reconnect
        self.report = CallReport()
        # Built in ``_begin``, once Twilio's ``start`` names the call they log under; nothing
        # uses them before that.
        self.codec: OpenAIRealtimeCodec
        self.tracker: PlaybackTracker
        self.machine: ResponseLifecycle | None = None
        self.stream_sid = ""
        #: What a new session is told of the conversation so far.
        self.history = ConversationHistory(
            self.config.history_max_items, self.config.history_max_chars
        )
        self._to_openai: asyncio.Queue[_Outbound] = asyncio.Queue(self.config.max_queue)
        self._to_twilio: asyncio.Queue[_Outbound] = asyncio.Queue(self.config.max_queue)
        #: Whether a frame may go straight to the socket (see :func:`_direct_probe`); the
        #: OpenAI one is rebuilt with each session and answers False while there is none.
        self._openai_direct = _direct_probe(self._to_openai, openai)
        self._twilio_direct = _direct_probe(self._to_twilio, twilio)
        #: Our own server's socket can write a frame without awaiting (see ``_send_twilio_urgent``).
        self._twilio_nowait: Callable[[str], bool] | None = getattr(twilio, "send_nowait", None)
        self._wake = asyncio.Event()
        self._sleeping_until: float | None = None
        #: The telephony peer's address, when the socket knows it (our server's does): until
        #: ``start`` names the call, the only thing that ties its log lines together.
        peer = getattr(getattr(twilio, "request", None), "client", None)
        self._peer = peer if isinstance(peer, str) else ""
        self._call = f"-@{self._peer}" if self._peer else "-"
        self._ended = False
        self._stop = asyncio.Event()
        self._stop_reason = ""
        # Reconnect state: while ``_reconnecting`` no machine is fed; user text and requests
        # wait in ``_held_*`` for the next session (or go back to the app if there is none).
        self._reconnecting = False
        self._held_texts: list[ev.UserText] = []
        self._held_requests: list[ev.RequestResponse] = []
        #: Failed attempts not yet cleared by a session that proved itself (session.created).
        self._unproven_attempts = 0
        #: When the current session started, and how many sessions in a row were short-lived.
        self._session_started_at = 0.0
        self._short_sessions = 0
        #: Texts whose send failed (older than anything queued) and texts a full queue
        #: refused (newer): with the queue's own, the texts no socket took, in order.
        self._unsent: list[ev.UserText] = []
        self._overflow: list[ev.UserText] = []
        self._stats_before: dict[str, int] = {}
        self._partials: dict[str, _Transcript] = {}
        #: Event ids minted by the bridge itself, counted per series (see ``_mint_id``).
        self._id_seq: dict[str, int] = {}
        #: Push-to-talk commits sent (or queued) on this session and not yet confirmed by an
        #: ``input_audio_buffer.committed`` or refused by an error, oldest first.
        self._commits: list[str] = []
        #: The item of the newest committed caller turn on this session, and the items whose
        #: input transcript arrived (bounded): whether a turn's words can be restored.
        self._turn_item: str | None = None
        self._transcribed: dict[str, None] = {}
        self._session_update_id: str | None = None
        self._closers: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------- public API

    async def run(self) -> CallReport:
        """Serve the call; returns when either side ends.  Never raises for peer behaviour."""
        try:
            start = await self._await_start()
        except _EndCall as end:
            self._ended = True
            self.report.end_reason = end.reason
            await self._close_both(1008 if end.reason.startswith("bad") else 1000, end.reason)
            return self.report
        self._begin(start)
        tasks = [
            asyncio.create_task(self._twilio_reader(), name=f"{self._call}:twilio-in"),
            asyncio.create_task(self._openai_side(), name=f"{self._call}:openai"),
            asyncio.create_task(self._writer(self._to_twilio, self.twilio), name="twilio-out"),
            asyncio.create_task(self._timer(), name=f"{self._call}:timer"),
            asyncio.create_task(self._stopper(), name=f"{self._call}:stop"),
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
            try:
                self._finish(reason)
            finally:
                # Both sockets close whatever went wrong above: an open socket is a live call
                # (and a bill) nobody serves.  Too much malformed input is a policy violation
                # (1008), as before ``start``.
                await self._close_both(1008 if reason.startswith("bad") else 1000, reason[:100])
        return self.report

    def send_user_text(self, text: str, source: str = "app") -> None:
        """User text from elsewhere (a chat box, an SMS): delivered exactly once, barge-in safe.

        Once this returns, the bridge owns the text: it reaches the model exactly once (on a
        new session if the current one is lost), or, if the call ends first, it is in
        :attr:`CallReport.undelivered_texts` and passed to ``on_undelivered``.  Raises
        :class:`~realtime_fsm.errors.CallNotActive` before the stream started and after the call
        ended: the text was not taken.  ``ValueError`` for blank text.  Not thread-safe: call it
        from the event loop's thread (``loop.call_soon_threadsafe`` from any other)."""
        event = ev.UserText(text, source=source)
        self._check_active()
        self._from_app(event)

    def request_response(self, reason: str = "app", instructions: str | None = None) -> None:
        """Ask the model to speak (after a tool result, a timer, ...): queued if it is busy.

        Raises :class:`~realtime_fsm.errors.CallNotActive` when the call is not running; a
        request that cannot be served later is reported in :attr:`CallReport.given_up`.  From
        the event loop's thread only, like :meth:`send_user_text`."""
        event = ev.RequestResponse(reason=reason, instructions=instructions)
        self._check_active()
        self._from_app(event)

    def commit_user_turn(self) -> None:
        """End the caller's spoken turn now (push-to-talk): commit the input audio so far, and
        the model answers it once the server confirms the commit (queued if it is busy).

        For a session without turn detection (``SessionConfig(turn_detection=None)``); with
        it, the server's VAD commits turns itself, and a hand commit on top would cut a turn in
        two or commit the audio since the last one as a turn of its own (answered twice), so
        it is a :class:`~realtime_fsm.errors.LocalProtocolError`.  Raises
        :class:`~realtime_fsm.errors.CallNotActive` when the call is not running.  While a
        lost session is being replaced the turn's audio is gone with it: nothing is committed,
        and the turn is counted in :attr:`CallReport.turns_lost` (as is a commit the lost
        session never confirmed).  From the event loop's thread only, like
        :meth:`send_user_text`."""
        if self.config.session.turn_detection is not None:
            raise LocalProtocolError(
                "commit_user_turn needs a session without turn detection (turn_detection=None):"
                " the server's VAD commits turns itself"
            )
        self._check_active()
        self._commit_turn("app")

    def _commit_turn(self, source: str) -> None:
        if self._reconnecting:
            self.report.turns_lost += 1
            log.warning(
                "call=%s turn commit (%s) while reconnecting: the turn is lost", self._call, source
            )
            return
        event_id = self._mint_id("commit")
        log.info("call=%s caller turn committed by %s event_id=%s", self._call, source, event_id)
        self._commits.append(event_id)
        try:
            self._send_openai(dumps(render_input_audio_commit(event_id=event_id)))
        except _EndCall as end:
            self._stop_reason = end.reason
            self._stop.set()

    @property
    def active(self) -> bool:
        """True from the stream's ``start`` until the call ends: the public calls are accepted."""
        return self.machine is not None and not self._ended and not self._stop.is_set()

    # --------------------------------------------------------------------------- the call

    async def _await_start(self) -> Start:
        deadline = self.clock() + self.config.start_timeout
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise _EndCall("no start from telephony")
            try:
                # Not ``asyncio.wait_for``: see ``_wait_event`` (it can swallow a cancellation
                # of ``run`` and leave the call serving after its owner gave up on it).
                frame = await _bounded(self.twilio.recv(), remaining)
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
                log.warning(
                    "call=%s %s before start dropped", self._call, type(message).__name__.lower()
                )

    def _begin(self, start: Start) -> None:
        self.stream_sid = start.stream_sid
        self._call = start.call_sid or start.stream_sid
        self.report.call_sid = start.call_sid
        self.report.stream_sid = start.stream_sid
        self.machine = self._new_machine()
        self._session_started_at = self.clock()
        self.codec = OpenAIRealtimeCodec(
            dialect=self.config.dialect,
            max_frame_size=self.config.max_openai_frame,
            call_id=self._call,
        )
        self.tracker = PlaybackTracker(
            bytes_per_ms=self.config.lifecycle.audio_bytes_per_ms,
            call_id=self._call,
            mark_every_ms=self.config.mark_every_ms,
        )
        log.info(
            "call=%s stream started stream=%s peer=%s params=%s",
            self._call,
            self.stream_sid,
            self._peer or "-",
            dict(start.custom_parameters),
        )
        self._send_session_update()
        if self.config.greeting is not None:
            self._handle(ev.RequestResponse(reason="greeting", instructions=self.config.greeting))

    def _send_session_update(self) -> None:
        """The session's config, with an event id of its own: an ``error`` naming it means
        the server refused the whole update and the session runs on its defaults."""
        event_id = self._mint_id("session")
        self._session_update_id = event_id
        update = self.codec.session_update(self.config.session, event_id=event_id)
        self._send_openai(json.dumps(update))

    def _new_machine(self) -> ResponseLifecycle:
        expected = self.config.session.expected_session()
        lifecycle_cfg = attrs.evolve(
            self.config.lifecycle,
            call_id=self._call,
            server_creates_response=expected.create_response,
            server_interrupts_response=expected.interrupt_response,
        )
        return ResponseLifecycle(lifecycle_cfg, now=self.clock())

    def _finish(self, reason: str) -> None:
        self._ended = True
        self.report.end_reason = reason
        # Texts that never reached a socket: still queued, or refused by a full queue.
        unsent = self._take_unsent()
        if unsent:
            self._return_texts(tuple(t.text for t in unsent))
        machine = self.machine
        if machine is not None:
            with contextlib.suppress(Exception):
                self._execute(machine.handle(ev.ConnectionClosed(reason), self.clock()))
            # A machine closed for a lost session has its stats in ``_stats_before`` already.
            stats = {} if self._reconnecting else machine.stats
            self.report.lifecycle_stats = _merged(self._stats_before, stats)
        # A session lost and not replaced: what waited for the next one goes back to the app.
        if self._held_requests:
            self.report.given_up.append(
                RequestGivenUp(
                    reason=f"closed:{reason}",
                    request_reasons=tuple(r.reason for r in self._held_requests),
                )
            )
            self._held_requests = []
        if self._held_texts:
            texts = tuple(t.text for t in self._held_texts)
            self._held_texts = []
            log.warning(
                "call=%s %d user text(s) held for a new session handed back undelivered",
                self._call,
                len(texts),
            )
            self._return_texts(texts)
        log.info(
            "call=%s ended: %s (media in=%d out=%d, undelivered texts=%d, reconnects=%d)",
            self._call,
            reason,
            self.report.media_in,
            self.report.media_out,
            len(self.report.undelivered_texts),
            self.report.reconnects,
        )

    async def _close_both(self, code: int, reason: str) -> None:
        for sock in (self.openai, self.twilio):
            with contextlib.suppress(Exception):
                await _bounded(sock.close(code, reason), 3.0)
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)

    # ------------------------------------------------------------------- lost sessions

    async def _openai_side(self) -> str:
        """Serve OpenAI sessions one after the other until the call ends."""
        while True:
            reason = await self._serve_session()
            if self.reconnect is None:
                return reason
            await self._replace_session(reason)

    async def _serve_session(self) -> str:
        """Run the current session's reader and writer; return why the session was lost."""
        tasks = (
            asyncio.create_task(self._openai_reader(), name=f"{self._call}:openai-in"),
            asyncio.create_task(self._writer(self._to_openai, self.openai), name="openai-out"),
        )
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if task in done:
                exc = task.exception()
                if isinstance(exc, _SessionLost):
                    return exc.reason
                if exc is not None:
                    raise exc
                return str(task.result())
        raise AssertionError("unreachable: asyncio.wait returned with no task done")

    async def _replace_session(self, reason: str) -> None:
        """The reconnect sequence; raises ``_EndCall`` when no new session can be had."""
        lost_at = self.clock()
        self._lose_session(reason)
        if self.report.reconnects >= self.config.max_reconnects:
            raise _EndCall(
                f"openai session lost ({reason}) after {self.report.reconnects} reconnects"
            )
        if lost_at - self._session_started_at < _SHORT_SESSION_S:
            self._short_sessions += 1
        else:
            self._short_sessions = 0
        # An unproven session is a failed attempt: the connect loop backs off for it already.
        if self._short_sessions and not self._unproven_attempts:
            cfg = self.config
            delay = cfg.reconnect_base_delay * 2.0 ** min(self._short_sessions - 1, 30)
            delay = min(cfg.reconnect_max_delay, delay)
            if delay > 0:
                log.info(
                    "call=%s session lived %.1fs (%d short in a row): reconnecting in %.2fs",
                    self._call,
                    lost_at - self._session_started_at,
                    self._short_sessions,
                    delay,
                )
                await asyncio.sleep(delay)
        sock, attempt = await self._connect_with_backoff()
        took = self.clock() - lost_at
        self.report.reconnects += 1
        self.report.reconnect_times.append(took)
        restored = self._start_session(sock)
        log.info(
            "call=%s openai session replaced in %.3fs (attempt %d): %d history item(s) restored,"
            " %d held text(s) delivered",
            self._call,
            took,
            attempt,
            restored[0],
            restored[1],
        )

    def _lose_session(self, reason: str) -> None:
        """Close the old machine and keep what the next session must get.  Synchronous, so
        nothing is fed to a machine between the loss and this bookkeeping."""
        machine = self.machine
        assert machine is not None
        self._reconnecting = True
        responding = machine.state in _RESPONDING
        requests = self._carried_requests(machine)
        # Oldest first: texts queued for the old socket (the machine sent them before it held
        # any), then the machine's held ones.  Frames already on the wire are in the history.
        texts = self._take_unsent()
        texts.extend(machine.held_texts)
        # Its RequestGivenUp lists what it held; what goes on is ``requests``, logged here.
        # ReturnUndeliveredText: the held texts, already taken above.
        machine.handle(ev.ConnectionClosed(f"session lost: {reason}"), self.clock())
        if requests:
            log.info(
                "call=%s request(s) %s carried over to the next session",
                self._call,
                ",".join(r.reason for r in requests),
            )
        self._stats_before = _merged(self._stats_before, machine.stats)
        self._held_texts[0:0] = texts
        self._held_requests[0:0] = requests
        self._partials.clear()
        if responding:
            # Half an answer must not go on playing over its retelling by the new session.  (A
            # finished answer the caller is still hearing plays out: nothing replaces it.)
            self._send_twilio(clear_message(self.stream_sid))
            self.tracker.clear()
        self._to_openai = asyncio.Queue(self.config.max_queue)
        self._openai_direct = _never
        old = self.openai
        closer = asyncio.create_task(_close_quietly(old), name=f"{self._call}:openai-close")
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)
        log.warning(
            "call=%s openai session lost (%s): reconnecting (%d held text(s), %d request(s))",
            self._call,
            reason,
            len(self._held_texts),
            len(self._held_requests),
        )

    def _carried_requests(self, machine: ResponseLifecycle) -> list[ev.RequestResponse]:
        """What the new session must be asked for, oldest first: the lost session's queued
        and in-flight requests, the retelling of a response it cut off, and an answer to a
        turn its VAD committed but had not begun to answer.  Nothing that would answer a turn
        whose words died with the session (counted in ``CallReport.turns_lost``), nor a create
        the caller interrupted (given up)."""
        queued = list(machine.pending)
        inflight = machine.inflight
        if inflight is not None:
            # A create the caller interrupted holds no requests: the machine reported them
            # given up (``interrupted``) when the caller barged in.
            queued[0:0] = inflight.requests
        active = machine.state is ResponseState.ACTIVE
        served = list(machine.response_requests) if active else []
        instructions = served[0].instructions if served else None
        retell = active
        lost = len(self._commits)  # commits the session never confirmed: their audio is gone
        self._commits.clear()
        turn = self._turn_item
        words_lost = turn is not None and turn not in self._transcribed
        if machine.awaiting_server_response():
            # The server's VAD committed the newest turn and its answer had not begun: with
            # the turn's transcript restored as history, the new session can answer it.
            if words_lost:
                lost += 1
            else:
                queued.append(ev.RequestResponse(reason=USER_TURN_REASON))
        elif words_lost:
            # The newest turn is answered by the response in play or by a create of ours: with
            # its words unknown, that answer would answer the turn before it.  Requests are
            # served in order, so ours is the last ``user_turn`` of those served and queued.
            if active and not served:
                retell = False  # the server's own answer to it
                lost += 1
            else:
                for held in (queued, served):
                    index = _last_turn_request(held)
                    if index is not None:
                        del held[index]
                        lost += 1
                        retell = retell and bool(served)
                        break
        if lost:
            self.report.turns_lost += lost
            log.warning(
                "call=%s %d caller turn(s) lost with the session before their words were"
                " known: not answered",
                self._call,
                lost,
            )
        if retell:
            # Cut off mid-response: ask for the rest first, with the instructions and metadata
            # it was asked with (a greeting's are in no restored history item).
            queued.insert(0, _retelling(served, instructions))
        return queued

    async def _connect_with_backoff(self) -> tuple[MessageSocket, int]:
        connector = self.reconnect
        assert connector is not None
        cfg = self.config
        attempts = self._unproven_attempts
        while True:
            if attempts >= cfg.reconnect_attempts:
                log.error("call=%s openai reconnect failed after %d attempts", self._call, attempts)
                raise _EndCall(f"openai reconnect failed after {attempts} attempts")
            if attempts:
                delay = cfg.reconnect_base_delay * 2.0 ** (attempts - 1)
                await asyncio.sleep(min(cfg.reconnect_max_delay, delay))
            attempts += 1
            try:
                sock = await _bounded(connector(), cfg.reconnect_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connector's own failure, whatever its type
                self.report.reconnect_failures += 1
                status = _handshake_status(exc)
                # The type (and an HTTP status) only: some clients put the URL in the text.
                log.warning(
                    "call=%s openai reconnect attempt %d/%d failed: %s%s",
                    self._call,
                    attempts,
                    cfg.reconnect_attempts,
                    type(exc).__name__,
                    f" (HTTP {status})" if status is not None else "",
                )
                if status in _FATAL_HANDSHAKE_STATUSES:
                    raise _EndCall(f"openai reconnect refused (HTTP {status})") from None
                continue
            self._unproven_attempts = attempts
            return sock, attempts

    def _start_session(self, sock: MessageSocket) -> tuple[int, int]:
        """A fresh machine on the new socket: config, history, held text, then requests."""
        self.openai = sock
        self._turn_item = None  # item ids are per session
        self._transcribed.clear()
        self._openai_direct = _direct_probe(self._to_openai, sock)
        self._session_started_at = self.clock()
        previous, self.machine = self.machine, self._new_machine()
        if previous is not None:
            # Per call, not per session: a reconnect must not reopen the no-audio watchdog's
            # cooldown (the soak saw a silent retry fire again 0.7 s into a 2 s cooldown).
            self.machine.watchdog_last_fire = previous.watchdog_last_fire
        codec = self.codec
        delivered = len(self._held_texts)
        # The restore must fit the queue with room to spare: the oldest history goes first.
        room = max(0, self.config.max_queue - delivered - 16)
        items = self.history.items()[-room:] if room else ()
        self._send_session_update()
        for item in items:
            # A replay of what the lost session already had: its own event_id kind, so a
            # trace checker can tell it from a fresh delivery.
            event_id = self._mint_id("history", series="restore")
            self._send_openai(dumps(codec.message_item(item.role, item.text, event_id=event_id)))
        while self._held_texts:  # one at a time: a full queue hands back the rest, in order
            text = self._held_texts.pop(0)
            command = SendUserText(self._mint_id("restore"), text.text, text.source)
            self._send_openai(_TextFrame(codec.render_json(command), text.text, text.source))
        requests, self._held_requests = self._held_requests, []
        if delivered:
            requests.append(ev.RequestResponse(reason=USER_TEXT_REASON))
        self._reconnecting = False
        if requests and requests[0].reason == RETELLING_REASON and requests[0].instructions:
            # A cut-off response asked with its own instructions (a greeting) is retold on its
            # own: the machine would fold requests without instructions into it, and answer
            # the caller's turn with the greeting's.  The rest wait for its done, as they did.
            self._handle(requests.pop(0))
            self.machine.pending.extend(requests)
            requests = []
        if requests:
            # One response for the restored state, as the machine coalesces its own pending
            # requests: a text queued with its response.create on the lost socket comes back
            # as a held text *and* a carried request, and each alone would ask for an answer.
            # The fresh machine is idle, so the last request sends one create for every
            # interchangeable request before it (oldest first); only a request with other
            # instructions waits for its own turn, as it would have on the old session.
            self.machine.pending.extend(requests[:-1])
            self._handle(requests[-1])
        self._wake.set()
        return len(items), delivered

    def _take_unsent(self) -> list[ev.UserText]:
        """User texts no socket took, oldest first; the OpenAI queue is emptied."""
        frames, audio = _drain(self._to_openai)
        self.report.media_dropped += audio  # caller audio no session will hear now
        queued = [ev.UserText(m.text, source=m.source) for m in frames]
        texts = self._unsent + queued + self._overflow
        self._unsent = []
        self._overflow = []
        return texts

    def _mint_id(self, kind: str, series: str | None = None) -> str:
        """``<prefix>_<kind>_<n>``, ``n`` counted per call in its ``series`` (the kind by
        default): ``history`` (replayed history) and ``restore`` (held text delivered for the
        first time) share one, ``session`` and ``commit`` have their own."""
        key = kind if series is None else series
        n = self._id_seq.get(key, 0) + 1
        self._id_seq[key] = n
        return f"{self.config.lifecycle.event_id_prefix}_{kind}_{n}"

    # -------------------------------------------------------------------------- machine glue

    def _check_active(self) -> None:
        if self.machine is None:
            raise CallNotActive("the call has not started (no telephony start yet)")
        if self._ended or self._stop.is_set():
            raise CallNotActive(f"the call has ended ({self._stop_reason or 'ended'})")

    def _from_app(self, event: ev.Event) -> None:
        """An application call: a failure to queue ends the call (from its own task), never
        raises into the application's code."""
        try:
            self._handle(event)
        except _EndCall as end:
            self._stop_reason = end.reason
            self._stop.set()

    async def _stopper(self) -> str:
        await _wait_event(self._stop, None)
        raise _EndCall(self._stop_reason)

    def _handle(self, event: ev.Event) -> None:
        machine = self.machine
        assert machine is not None
        if self._reconnecting:
            self._hold(event)
            return
        now = self.clock()
        kind = type(event)
        if (kind is ev.SpeechStarted or kind is ev.UserText) and self.config.estimate_playback:
            # A barge-in truncates at what the caller heard: bring that up to now first.
            progress = self.tracker.estimate(now)
            if progress is not None:
                machine.playback_progress(progress.item_id, progress.played_ms)
        self._execute(machine.handle(event, now))
        self._maybe_wake()

    def _hold(self, event: ev.Event) -> None:
        """No session: keep user text and requests for the next one (bounded), drop ticks."""
        if isinstance(event, ev.UserText):
            if len(self._held_texts) >= self.config.max_queue:
                log.warning("call=%s too much text held while reconnecting", self._call)
                self._return_texts((event.text,))
            else:
                self._held_texts.append(event)
        elif isinstance(event, ev.RequestResponse):
            if len(self._held_requests) < self.config.max_queue:
                self._held_requests.append(event)
            else:
                self.report.given_up.append(
                    RequestGivenUp(reason="reconnecting: too many", request_reasons=(event.reason,))
                )

    def _maybe_wake(self) -> None:
        machine = self.machine
        assert machine is not None
        deadline = machine.next_deadline
        if deadline is not None and (
            self._sleeping_until is None or deadline < self._sleeping_until
        ):
            self._wake.set()

    def _execute(self, commands: list[Command]) -> None:
        for index, command in enumerate(commands):
            try:
                self._execute_one(command)
            except _EndCall:
                # The call ends mid-batch (a full queue): user texts of the commands not
                # executed are the application's again, like those still queued.
                for rest in commands[index + 1 :]:
                    if isinstance(rest, SendUserText):
                        self._overflow.append(ev.UserText(rest.text, source=rest.source))
                    elif isinstance(rest, ReturnUndeliveredText):
                        self._return_texts(rest.texts)
                raise

    def _execute_one(self, command: Command) -> None:
        if is_client_command(command):
            if isinstance(command, SendUserText):
                json_text = self.codec.render_json(command)
                self._send_openai(_TextFrame(json_text, command.text, command.source))
            else:
                self._send_openai(self.codec.render_json(command))
        elif isinstance(command, ClearPlayback):
            self._send_twilio_urgent(clear_message(self.stream_sid))
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
            self._return_texts(command.texts)

    def _return_texts(self, texts: tuple[str, ...]) -> None:
        self.report.undelivered_texts.extend(texts)
        if self.on_undelivered is not None:
            # The application's code: its bug must not end the call as an internal error, nor
            # keep the sockets open (this runs while the call is torn down, too).  The texts are
            # in the report whatever it does.
            try:
                self.on_undelivered(texts)
            except Exception:
                log.exception("call=%s on_undelivered callback failed", self._call)

    def _send_openai(self, message: str | _TextFrame) -> None:
        try:
            self._to_openai.put_nowait(message)
        except asyncio.QueueFull:
            if type(message) is _TextFrame:
                self._overflow.append(ev.UserText(message.text, source=message.source))
            raise _EndCall("openai socket not keeping up (queue full)") from None

    def _send_twilio_urgent(self, message: str) -> None:
        """A frame the caller's ear waits for (the barge-in's ``clear``): written now when
        nothing is queued ahead of it and the socket takes it without waiting, instead of by
        the writer task on the next loop iteration, after every other callback ready in this
        one.  Otherwise queued as usual, so the order of frames never changes."""
        nowait = self._twilio_nowait
        if nowait is not None and self._to_twilio.empty():
            try:
                if nowait(message):
                    return
            except _CLOSED:
                pass  # the writer meets the closed socket and reports it the usual way
        self._send_twilio(message)

    def _send_twilio(self, message: str) -> None:
        try:
            self._to_twilio.put_nowait(message)
        except asyncio.QueueFull:
            raise _EndCall("telephony socket not keeping up (queue full)") from None

    async def _send_now(
        self,
        sock: MessageSocket,
        direct: Callable[[], bool],
        message: str,
        enqueue: Callable[[str], None],
    ) -> None:
        """Send from the reading task when ``direct`` (see :func:`_direct_probe`) says the
        socket would take the frame at once and nothing is queued ahead of it, instead of
        waking the writer task: that hop per frame was most of what the bridge cost over a
        bare relay (``docs/performance.md``).  Otherwise, or if the send fails, queue it: the
        writer keeps the order, the back-pressure limit and the error handling.

        The two per-frame sends (caller audio up, assistant audio down) spell these lines out
        in the reading loops rather than call this: a coroutine per frame was a measurable part
        of the bridge's own cost.  Only audio and Twilio frames go this way; user text always
        goes through the queue."""
        if direct():
            try:
                await sock.send(message)
            except _CLOSED:
                self._send_failed(sock, message, enqueue)
        else:
            enqueue(message)

    def _send_failed(
        self, sock: MessageSocket, message: str, enqueue: Callable[[str], None]
    ) -> None:
        """A frame sent straight from a reading task (see :func:`_direct_probe`) met a closed
        socket: queue it, so that the writer meets the close and reports it the usual way.
        If the OpenAI session was replaced meanwhile the frame is dropped (counted in
        ``media_dropped``): queued, it would reach the new session ahead of its
        ``session.update``."""
        # A lost session's queue is replaced at once, its socket only when the next one is up:
        # between the two, ``_reconnecting`` says the socket is no longer the session's.
        if sock is self.twilio or (sock is self.openai and not self._reconnecting):
            enqueue(message)
        else:
            self.report.media_dropped += 1  # the old session's audio: never resent

    def _count_bad(self, side: str, kind: str) -> None:
        key = f"{side}:{kind}"
        self.report.bad_frames[key] = self.report.bad_frames.get(key, 0) + 1
        if sum(self.report.bad_frames.values()) > self.config.max_bad_frames:
            raise _EndCall(f"bad input: too many malformed frames from {side}")

    def _bad_frame(self, side: str, exc: RemoteProtocolError) -> None:
        log.warning("call=%s bad frame from %s dropped: %s", self._call, side, exc.message[:200])
        self._count_bad(side, "malformed")

    # ------------------------------------------------------------------ history bookkeeping

    def _response_created(self, event: ev.ResponseCreated) -> None:
        if event.out_of_band:
            return  # not part of the conversation: never restored
        partials = self._partials
        if len(partials) >= _MAX_PARTIALS:
            del partials[next(iter(partials))]
        partials[event.response_id] = _Transcript(self.config.history_max_chars)

    def _response_done(self, event: ev.ResponseDone) -> None:
        transcript = self._partials.pop(event.response_id, None)
        # A cancelled response is left out: what the caller heard of it is not known as text.
        if transcript is not None and event.status in ("completed", "incomplete"):
            self.history.add("assistant", "".join(transcript.parts))

    # ----------------------------------------------------------------------------- tasks

    async def _writer(self, queue: asyncio.Queue[_Outbound], sock: MessageSocket) -> str:
        openai = sock is self.openai
        while True:
            message = await queue.get()
            if message is None:
                return "writer done"
            try:
                if type(message) is str:
                    await sock.send(message)
                else:
                    assert isinstance(message, _TextFrame)
                    try:
                        await sock.send(message.json)
                    except BaseException:
                        self._unsent.append(ev.UserText(message.text, source=message.source))
                        raise
                    # Counted once written, not when queued: a queued text can still be
                    # handed back, or re-sent on a new session.
                    self.report.user_texts_sent += 1
                    self.history.add("user", message.text)
            except _CLOSED:
                if openai:
                    raise _SessionLost("openai closed") from None
                raise _EndCall("telephony closed") from None

    async def _twilio_reader(self) -> str:
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
            if type(message) is Media:  # per frame: narrowed without an ``assert``
                if message.track is None or message.track == "inbound":
                    report.media_in += 1
                    if self._reconnecting:
                        report.media_dropped += 1  # no session to hear it; never buffered
                        continue
                    append = input_audio_append_json(message.payload)
                    # Socket and probe are replaced on a new session: never cache them.  What
                    # ``_send_now`` does, spelled out (per frame; see there).
                    if self._openai_direct():
                        openai = self.openai
                        try:
                            await openai.send(append)
                        except _CLOSED:
                            self._send_failed(openai, append, self._send_openai)
                    else:
                        self._send_openai(append)
                continue
            kind = type(message)
            if kind is Mark:
                assert isinstance(message, Mark)
                machine = self.machine  # replaced on a new session: never cache it
                assert machine is not None
                for progress in self.tracker.mark_received(message.name, self.clock()):
                    machine.playback_progress(progress.item_id, progress.played_ms)
            elif kind is Dtmf:
                assert isinstance(message, Dtmf)
                if message.digit == self.config.commit_on_dtmf:
                    self._commit_turn("dtmf")
                elif self.config.dtmf_as_text:
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
        # Logged each time: the bad-frame limit bounds how often (then the socket is closed).
        log.warning("call=%s unknown Twilio event dropped: %.100r", self._call, frame)
        self._count_bad("twilio", "unknown_event")

    async def _openai_reader(self) -> str:
        """One session's inbound frames; its machine and socket are fixed for its lifetime."""
        machine = self.machine
        assert machine is not None
        sock = self.openai
        codec = self.codec
        tracker = self.tracker
        report = self.report
        clock = self.clock
        partials = self._partials
        twilio, direct, send = self.twilio, self._twilio_direct, self._send_twilio
        while True:
            try:
                frame = await sock.recv()
            except _CLOSED:
                raise _SessionLost("openai closed") from None
            try:
                message = codec.parse(frame)
            except RemoteProtocolError as exc:
                self._bad_frame("openai", exc)
                continue
            if type(message) is OutputAudioDelta:  # per frame: narrowed without an ``assert``
                item = message.item_id
                if not item:  # the mark names the item: an empty id is the peer's error
                    self._bad_frame("openai", RemoteProtocolError("audio delta: empty item_id"))
                    continue
                if machine.audio_delta(message.response_id, item, message.byte_count, clock()):
                    name = tracker.audio_sent(item, message.byte_count)
                    media = media_message(self.stream_sid, message.payload)
                    if direct():  # ``_send_now``, spelled out (per frame; see there)
                        try:
                            await twilio.send(media)
                        except _CLOSED:
                            self._send_failed(twilio, media, send)
                    else:
                        send(media)
                    if name is not None:
                        mark = mark_message(self.stream_sid, name)
                        await self._send_now(twilio, direct, mark, send)
                    report.media_out += 1
                continue
            kind = type(message)
            if kind is not OutputTranscriptDelta:  # the item's audio ended (or something else)
                tail = tracker.flush_mark()
                if tail is not None:
                    self._send_twilio(mark_message(self.stream_sid, tail))
            if kind is OutputTranscriptDelta:
                assert isinstance(message, OutputTranscriptDelta)
                machine.transcript_delta(message.response_id, clock())
                transcript = partials.get(message.response_id)
                if transcript is not None:
                    transcript.add(message.delta)
                self._maybe_wake()
            elif kind is ResponseActivity:
                assert isinstance(message, ResponseActivity)
                machine.touch(message.response_id, clock())
            elif kind is Ignored:
                pass
            elif kind is InputTranscript:
                assert isinstance(message, InputTranscript)
                log.info("call=%s caller said: %r", self._call, message.transcript[:200])
                self.history.add("user", message.transcript)
                transcribed = self._transcribed
                if message.item_id:
                    transcribed[message.item_id] = None
                    if len(transcribed) > _MAX_TRANSCRIBED:
                        del transcribed[next(iter(transcribed))]
            else:
                if kind is ev.UserTurnCommitted:
                    assert isinstance(message, ev.UserTurnCommitted)
                    # No id: its transcript cannot be matched, so its words count as unknown.
                    self._turn_item = message.item_id or ""
                    if self._commits:  # ours (push-to-talk: no turn detection commits)
                        del self._commits[0]
                if kind is ev.ResponseCreated:
                    assert isinstance(message, ev.ResponseCreated)
                    self._response_created(message)
                elif kind is ev.ResponseDone:
                    assert isinstance(message, ev.ResponseDone)
                    self._response_done(message)
                elif kind is ev.SessionConfigured:
                    assert isinstance(message, ev.SessionConfigured)
                    self._unproven_attempts = 0  # the server took this session: it is real
                    problem = _audio_format_problem(message) if message.updated else None
                    if problem is not None:
                        log.error("call=%s %s: ending the call", self._call, problem)
                        raise _EndCall(problem)
                elif isinstance(message, ev.ServerError):
                    code = message.code or "unknown"
                    report.server_errors[code] = report.server_errors.get(code, 0) + 1
                    if code in FATAL_ERROR_CODES:
                        raise _EndCall(f"openai error {code}")
                    if message.event_id is not None and message.event_id in self._commits:
                        # Refused (input_audio_buffer_commit_empty): no turn to answer.
                        self._commits.remove(message.event_id)
                    if message.event_id is not None and message.event_id == self._session_update_id:
                        # Refused whole: the session is on the server's defaults (24 kHz PCM,
                        # its own turn detection), which would be noise both ways.
                        log.error(
                            "call=%s openai refused session.update (%s): %s",
                            self._call,
                            code,
                            message.message[:200],
                        )
                        raise _EndCall(f"openai refused session.update ({code})")
                    if code in SESSION_LOST_ERROR_CODES:
                        raise _SessionLost(f"openai error {code}")
                self._handle(message)  # type: ignore[arg-type]

    async def _timer(self) -> str:
        while True:
            machine = self.machine  # replaced on a new session: never cache it
            assert machine is not None
            deadline = None if self._reconnecting else machine.next_deadline
            self._sleeping_until = deadline
            self._wake.clear()
            # Never spin: a deadline that a tick did not move is retried after a short pause.
            timeout = None if deadline is None else max(0.005, deadline - self.clock())
            if not await _wait_event(self._wake, timeout):
                self._handle(ev.Tick())


def _drain(queue: asyncio.Queue[_Outbound]) -> tuple[list[_TextFrame], int]:
    """Empty ``queue``; return the user text frames it held, in order (the rest is stale), and
    how many caller audio frames were thrown away with it."""
    frames: list[_TextFrame] = []
    audio = 0
    while not queue.empty():
        message = queue.get_nowait()
        if type(message) is _TextFrame:
            frames.append(message)
        elif type(message) is str and _APPEND_TYPE in message[:48]:
            audio += 1
    return frames, audio


_APPEND_TYPE: Final = '"input_audio_buffer.append"'
#: The reason of the request that asks a new session for a response the lost one cut off.
RETELLING_REASON: Final = "reconnect"
#: Input transcripts remembered per session, to tell whether a committed turn's words came.
_MAX_TRANSCRIBED: Final = 32


def _never() -> bool:
    return False


def _direct_probe(queue: asyncio.Queue[_Outbound], sock: MessageSocket) -> Callable[[], bool]:
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
        return _never
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


def _audio_format_problem(session: ev.SessionConfigured) -> str | None:
    """Telephony audio is G.711 mu-law both ways, passed through untouched: a session that
    (after our ``session.update``) says another format would play noise to the caller and
    hear noise from them, so the call ends with this reason instead.  A format the server
    does not state is taken on trust."""
    wrong = [
        f"{side} {fmt}"
        for side, fmt in (
            ("input", session.input_audio_format),
            ("output", session.output_audio_format),
        )
        if fmt is not None and fmt != "pcmu"
    ]
    return f"openai session audio is not mu-law ({', '.join(wrong)})" if wrong else None


def _retelling(served: list[ev.RequestResponse], instructions: str | None) -> ev.RequestResponse:
    """The request that asks a new session for a response cut off with the old one: the
    ``instructions`` it was created with (coalesced requests share them) and the metadata of
    the requests it still serves; a response the server created by itself served none and
    gets the defaults."""
    metadata: dict[str, str] = {}
    for request in served:
        metadata.update(request.metadata)
    return ev.RequestResponse(reason=RETELLING_REASON, instructions=instructions, metadata=metadata)


def _last_turn_request(requests: list[ev.RequestResponse]) -> int | None:
    for index in range(len(requests) - 1, -1, -1):
        if requests[index].reason == USER_TURN_REASON:
            return index
    return None


def _merged(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0) + value
    return out


def _handshake_status(exc: BaseException) -> int | None:
    """The HTTP status of a refused WebSocket handshake (``websockets``' ``InvalidStatus``)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


async def _close_quietly(sock: MessageSocket) -> None:
    with contextlib.suppress(Exception):
        await _bounded(sock.close(1000, "session replaced"), 3.0)


async def _bounded(awaitable: Awaitable[_T], timeout: float) -> _T:
    """``awaitable`` bounded by ``timeout`` (``asyncio.TimeoutError`` past it), without
    ``asyncio.wait_for`` (see :func:`_wait_event`)."""
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
            closer = asyncio.ensure_future(_close_quietly(result))
            _LATE_CLOSERS.add(closer)
            closer.add_done_callback(_LATE_CLOSERS.discard)


_LATE_CLOSERS: set[asyncio.Future[None]] = set()


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

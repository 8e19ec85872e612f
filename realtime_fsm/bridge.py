"""The asyncio driver of one call: a Twilio Media Streams socket and an OpenAI Realtime socket.

Every decision is the sans-IO :class:`~realtime_fsm.call.CallSession`'s; this driver reads,
feeds, writes, sleeps until the deadline and reconnects when told:

* a task per inbound direction, feeding frames to the session and writing what it returns;
* a writer task per outbound socket behind a bounded queue, so the order of what the session
  decides is the order on the wire, and a peer that stops reading cannot grow memory without
  bound (the call is ended with a logged reason instead);
* a timer task that sleeps until the session's ``next_deadline`` and ticks it;
* on a lost OpenAI session, the reconnect loop: wait what the session says, open a socket,
  report it (see "Lost sessions" in ``docs/bridge.md``);
* the application's side: typed events out (:meth:`CallBridge.events`), tools run, calls in.

mu-law passes through untouched: Twilio's base64 payload string becomes the OpenAI
``input_audio_buffer.append`` audio string and the OpenAI delta string becomes the Twilio
``media`` payload, never decoded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from .admission import Admission
from .bounded import bounded, close_quietly, wait_event
from .call import (
    DEFAULT_MARK_EVERY_MS,
    FATAL_ERROR_CODES,
    RETELLING_REASON,
    SESSION_LOST_ERROR_CODES,
    AppEvent,
    BridgeConfig,
    CallEnded,
    CallReport,
    CallSession,
    ToolSpec,
)
from .call.fields import FATAL_HANDSHAKE_STATUSES
from .credentials import StreamCredentials
from .errors import UpstreamUnreachable
from .history import ConversationHistory
from .lifecycle import ResponseLifecycle
from .logsafe import safe
from .openai_realtime import OpenAIRealtimeCodec, SessionConfig
from .outbox import Outbox, SessionGone
from .sockets import (
    CLOSED,
    Connector,
    MessageSocket,
    Outbound,
    direct_probe,
    drain,
    handshake_status,
    never,
)
from .table import ENDING, READY_TO_SWITCH, RECONNECTING, ROTATING, RUNNING
from .twilio_media import PlaybackTracker

log = logging.getLogger("realtime_fsm.bridge")


def _status_note(status: int | None) -> str:
    """What a refused handshake's HTTP status says, for the log line."""
    if status in FATAL_HANDSHAKE_STATUSES:
        return f" (HTTP {status}: the API key or token was refused; check the provider's key)"
    return f" (HTTP {status})" if status is not None else ""


class CallBridge(Outbox):
    """Bridge one Twilio stream to OpenAI Realtime sessions until the call ends.

    ``openai``: the first session's socket, or ``None`` to open it with ``reconnect`` once
    Twilio's ``start`` arrives (no paid session for a stream that never starts).
    ``reconnect``: opens a new OpenAI socket when the session is lost mid-call; ``None`` ends
    the call instead."""

    def __init__(
        self,
        twilio: MessageSocket,
        openai: MessageSocket | None = None,
        config: BridgeConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_undelivered: Callable[[tuple[str, ...]], None] | None = None,
        reconnect: Connector | None = None,
        on_start: Callable[[], None] | None = None,
        credentials: StreamCredentials | None = None,
        admission: Admission | None = None,
    ) -> None:
        """``on_start``: called once when the stream has started, or ended without starting
        (a server's pre-start bounds release the stream's slot with it).  ``credentials``: the
        server's per-call stream credentials (:mod:`realtime_fsm.credentials`); a ``start``
        without a valid one ends the call with 1008 before any OpenAI session is opened.
        ``admission``: the server process's call capacity (:mod:`realtime_fsm.admission`); a
        ``start`` it does not admit ends the call with 1013, before any OpenAI session."""
        if openai is None and reconnect is None:
            raise ValueError("CallBridge needs an OpenAI socket or a connector to open one")
        self.twilio = twilio
        self.config = config if config is not None else BridgeConfig()
        self.clock = clock
        self.on_undelivered = on_undelivered
        self.reconnect = reconnect
        self._on_start = on_start
        #: The telephony peer's address, when the socket knows it (our server's does).
        peer = getattr(getattr(twilio, "request", None), "client", None)
        self.session = CallSession(
            self.config,
            now=clock(),
            peer=peer if isinstance(peer, str) else "",
            can_reconnect=reconnect is not None,
            credentials=credentials,
            wall_offset=time.time() - clock(),
            admission=admission,
        )
        self.report: CallReport = self.session.report
        self._to_openai: asyncio.Queue[Outbound] = asyncio.Queue(self.config.max_queue)
        self._to_twilio: asyncio.Queue[Outbound] = asyncio.Queue(self.config.max_queue)
        self.openai: MessageSocket | None = openai
        #: Whether a frame may go straight to the socket (see :func:`direct_probe`); the
        #: OpenAI one is rebuilt with each session and answers False while there is none.
        self._openai_direct = direct_probe(self._to_openai, openai) if openai else never
        self._twilio_direct = direct_probe(self._to_twilio, twilio)
        #: Our own server's socket can write a frame without awaiting.
        self._twilio_nowait: Callable[[str], bool] | None = getattr(twilio, "send_nowait", None)
        self._wake = asyncio.Event()
        self._sleeping_until: float | None = None
        self._stop = asyncio.Event()
        self._closers: set[asyncio.Task[None]] = set()
        self._events: asyncio.Queue[AppEvent] | None = None
        super().__init__()

    # ------------------------------------------------------------------ the session's parts

    @property
    def machine(self) -> ResponseLifecycle | None:
        """The current session's response machine (read-only use: tests, dashboards)."""
        return self.session.machine

    @property
    def tracker(self) -> PlaybackTracker:
        return self.session.tracker

    @property
    def codec(self) -> OpenAIRealtimeCodec:
        return self.session.codec

    @property
    def history(self) -> ConversationHistory:
        return self.session.history

    @property
    def stream_sid(self) -> str:
        return self.session.stream_sid

    @property
    def reconnecting(self) -> bool:
        """True while a lost OpenAI session is being replaced (no response machine runs)."""
        return self.session.call_state is RECONNECTING

    @property
    def active(self) -> bool:
        """True from the stream's ``start`` until the call ends: the public calls are accepted."""
        return self.session.active

    # ------------------------------------------------------------------------- public API

    async def run(self) -> CallReport:
        """Serve the call; returns when it ends.  Never raises for peer behaviour."""
        session = self.session
        try:
            try:
                await self._await_start()
            finally:
                self._started()
            if session.call_state is RUNNING and self.openai is None:
                await self._open_first_session()
            if session.call_state is RUNNING:
                await self._serve()
        finally:
            await self._close_both(session.close_code, (session.end_reason or "ended")[:100])
            session.closed(self.clock())
            self._after()
            self._cancel_tools()
        return self.report

    def _started(self) -> None:
        on_start, self._on_start = self._on_start, None
        if on_start is not None:
            try:
                on_start()
            except Exception:  # the server's bookkeeping: never the call's end
                log.exception("call=%s on_start failed", self.session.call_label)

    def send_user_text(self, text: str, source: str = "app") -> None:
        """User text from elsewhere (a chat box, an SMS): delivered exactly once, barge-in safe.

        Once this returns, the call owns the text: it reaches the model exactly once (on a new
        session if the current one is lost), or, if the call ends first, it is in
        :attr:`CallReport.undelivered_texts` and passed to ``on_undelivered``.  Raises
        :class:`~realtime_fsm.errors.CallNotActive` before the stream started and after the call
        ended: the text was not taken.  ``ValueError`` for blank text.  From the event loop's
        thread only (``loop.call_soon_threadsafe`` from any other)."""
        self.session.send_user_text(text, self.clock(), source)
        self._after()

    def request_response(self, reason: str = "app", instructions: str | None = None) -> None:
        """Ask the model to speak (after a timer, ...): queued and coalesced if it is busy.

        Raises :class:`~realtime_fsm.errors.CallNotActive` when the call is not running; a
        request that cannot be served later is reported in :attr:`CallReport.given_up`."""
        self.session.request_response(self.clock(), reason, instructions)
        self._after()

    def commit_user_turn(self) -> None:
        """End the caller's spoken turn now (push-to-talk), for a session without turn
        detection (``SessionConfig(turn_detection=None)``); a
        :class:`~realtime_fsm.errors.LocalProtocolError` with it (the server's VAD commits
        turns itself).  While a lost session is being replaced the turn's audio is gone with
        it: counted in :attr:`CallReport.turns_lost`."""
        self.session.commit_user_turn(self.clock())
        self._after()

    def update_session(
        self,
        *,
        session: SessionConfig | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> None:
        """Change the session mid-call: new instructions, voice, tools (see
        :meth:`CallSession.update_session <realtime_fsm.call.CallSession.update_session>`).
        Tools given as :class:`~realtime_fsm.tools.Tool` are run by this driver from now on."""
        self.session.update_session(
            self.clock(), session=session, tools=tools, tool_choice=tool_choice
        )
        self.config = self.session.config
        self._register_tools()
        self._after()

    def end_call(self, reason: str = "ended by the application") -> None:
        """End the call: both sockets are closed, the report says ``reason``."""
        self.session.end_call(reason, self.clock())
        self._after()

    def go_away(self) -> None:
        """End the call because the server is going away (its drain deadline passed): both
        sockets are closed with 1001, the report says ``"server draining"``."""
        self.session.go_away(self.clock())
        self._after()

    def events(self) -> AsyncIterator[AppEvent]:
        """The call's events, in order, ending with :class:`~realtime_fsm.call.CallEnded`.

        An async iterator rather than callbacks: the application's code runs in its own task,
        so a slow handler cannot stall the call's reading loops, and it composes with
        ``async for``, task groups and cancellation.  Bounded
        (``BridgeConfig.max_app_events``): when the reader is behind, the newest events are
        dropped and counted in :attr:`CallReport.app_events_dropped` (the final
        ``CallEnded`` is always delivered).  Call it before :meth:`run` to see every event."""
        if self._events is None:
            self._events = asyncio.Queue(self.config.max_app_events)
            self.session.emit_events = True
        return self._iterate(self._events)

    async def _iterate(self, queue: asyncio.Queue[AppEvent]) -> AsyncIterator[AppEvent]:
        while True:
            event = await queue.get()
            yield event
            if type(event) is CallEnded:
                return

    # --------------------------------------------------------------------------- the call

    async def _await_start(self) -> None:
        session = self.session
        clock = self.clock
        while session.call_state is not RUNNING and session.call_state is not ENDING:
            deadline = session.next_deadline
            remaining = 0.0 if deadline is None else deadline - clock()
            try:
                frame = await bounded(self.twilio.recv(), max(remaining, 0.0))
            except asyncio.TimeoutError:
                session.tick(clock())
                continue
            except CLOSED:
                session.twilio_closed(clock())
                continue
            session.twilio_frame(frame, clock())
            self._after()
        self._after()

    async def _open_first_session(self) -> None:
        connector = self.reconnect
        assert connector is not None
        try:
            sock = await bounded(connector(), self.config.reconnect_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connector's own failure, whatever its type
            status = handshake_status(exc)
            # Never the exception's text: some clients put the URL (and so tokens in a query
            # string) into it.  The type and the status are enough to act on.
            what = str(exc) if isinstance(exc, UpstreamUnreachable) else type(exc).__name__
            log.error(
                "call=%s cannot open the openai session: %s%s",
                self.session.call_label,
                safe(what),
                _status_note(status),
            )
            self.session.upstream_unreachable(self.clock(), status=status)
            return
        self._use_openai(sock)

    async def _serve(self) -> None:
        tasks = [
            asyncio.create_task(self._twilio_reader(), name=f"{self.session.call_label}:tw-in"),
            asyncio.create_task(self._openai_side(), name=f"{self.session.call_label}:openai"),
            asyncio.create_task(self._writer(self._to_twilio, self.twilio, False), name="tw-out"),
            asyncio.create_task(self._timer(), name=f"{self.session.call_label}:timer"),
            asyncio.create_task(wait_event(self._stop, None), name="stop"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    log.error(
                        "call=%s task %s failed",
                        self.session.call_label,
                        task.get_name(),
                        exc_info=exc,
                    )
                    self.session.end(f"internal error: {type(exc).__name__}", self.clock())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.session.end_reason is None:
            self.session.end("ended", self.clock())

    async def _close_both(self, code: int, reason: str) -> None:
        await self._stop_rotation()
        if self.openai is not None:
            # Nobody reads it any more: what it still sends is discarded while it closes.
            await close_quietly(self.openai, code, reason)
        try:
            await bounded(self.twilio.close(code, reason), 3.0)
        except Exception:  # a peer that is gone already: nothing left to close
            log.debug("call=%s close failed", self.session.call_label, exc_info=True)
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)

    # ------------------------------------------------------------------- lost sessions

    async def _openai_side(self) -> None:
        """Serve OpenAI sessions one after the other until the call ends."""
        session = self.session
        while True:
            reason = await self._serve_session()
            if reason is None:
                continue  # rotated: serve the socket now current
            if not _serving(session):
                return
            self._lose_session(reason)
            while session.call_state is RECONNECTING:
                delay = session.connect_delay or 0.0
                if delay > 0:
                    await asyncio.sleep(delay)
                connector = self.reconnect
                assert connector is not None
                try:
                    sock = await bounded(connector(), self.config.reconnect_timeout)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the connector's own failure, whatever its type
                    # The type (and an HTTP status) only: some clients put the URL in the text.
                    status = handshake_status(exc)
                    what = str(exc) if isinstance(exc, UpstreamUnreachable) else type(exc).__name__
                    session.connect_failed(what, self.clock(), status=status)
                    self._after()
                    continue
                self._use_openai(sock)
                session.session_opened(self.clock())
                self._after()
            if not _serving(session):
                return

    async def _serve_session(self) -> str | None:
        """Run the current session's reader and writer; return why the session was lost, or
        ``None`` when it was replaced by a rotation (the socket now current is another)."""
        sock = self.openai
        assert sock is not None
        self._switched.clear()
        tasks = (
            asyncio.create_task(self._openai_reader(sock), name="openai-in"),
            asyncio.create_task(self._writer(self._to_openai, sock, True), name="openai-out"),
        )
        switched = asyncio.ensure_future(self._switched.wait())
        try:
            done, _ = await asyncio.wait((*tasks, switched), return_when=asyncio.FIRST_COMPLETED)
        finally:
            switched.cancel()
            for task in tasks:
                task.cancel()
            if self.openai is not sock:
                # Replaced: closed once its reader and writer are done (whatever happens to
                # this task), what it still sends discarded.
                self._close_later(sock, after=tasks)
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.openai is not sock:
            return None
        for task in tasks:
            if task in done:
                exc = task.exception()
                if isinstance(exc, SessionGone):
                    return exc.reason
                if exc is not None:
                    raise exc
                return "openai reader done"
        raise AssertionError("unreachable: asyncio.wait returned with no task done")

    def _lose_session(self, reason: str) -> None:
        """Synchronous, so nothing is fed to the session between the loss and its report.  If
        a ready next session takes over (the switch happens in ``_after``), the caller audio
        the lost socket never got goes to it, after its restore."""
        audio = drain(self._to_openai)
        self._to_openai = asyncio.Queue(self.config.max_queue)
        self._openai_direct = never
        old = self.openai
        if old is not None:
            self._close_later(old)
        self.session.openai_lost(reason, self.clock(), audio_dropped=len(audio))
        self._after()
        if self.openai is not old and not self.session.input_audio_resent:
            self._carry_audio(audio)

    # ----------------------------------------------------------------------------- tasks

    async def _twilio_reader(self) -> None:
        session = self.session
        twilio = self.twilio
        clock = self.clock
        feed = session.twilio_frame
        while True:
            try:
                frame = await twilio.recv()
            except CLOSED:
                session.twilio_closed(clock())
                self._after()
                return
            out = feed(frame, clock())
            if out is not None:
                if not out:
                    continue  # NOTHING: a mark echo, nothing to hand out
                # Socket and probe are replaced on a new session: never cache them.
                if self._openai_direct():  # True only while a socket is up
                    openai: MessageSocket = self.openai  # type: ignore[assignment]
                    try:
                        await openai.send(out)
                    except CLOSED:
                        self._send_failed(openai, out)
                else:
                    self._send_openai(out)
                continue
            self._after()
            if session.call_state is ENDING:
                return

    async def _openai_reader(self, sock: MessageSocket) -> None:
        """One session's inbound frames."""
        session = self.session
        clock = self.clock
        feed = session.openai_frame
        out_twilio = session.out_twilio
        twilio, direct = self.twilio, self._twilio_direct
        while True:
            try:
                frame = await sock.recv()
            except CLOSED:
                raise SessionGone("openai closed") from None
            if self.openai is not sock:
                return  # replaced by a rotation: its late frames are not the session's
            media = feed(frame, clock())
            if media is not None:
                if direct():
                    try:
                        await twilio.send(media)
                    except CLOSED:
                        self._send_twilio(media)
                else:
                    self._send_twilio(media)
                if out_twilio:  # a playback mark after it: the same way, when it may
                    await self._twilio_now(out_twilio)
                continue
            self._after()
            if session.lost_reason is not None:
                raise SessionGone(session.lost_reason)
            if not _serving(session) or self.openai is not sock:
                return

    async def _timer(self) -> None:
        session = self.session
        while True:
            deadline = session.next_deadline
            self._sleeping_until = deadline
            self._wake.clear()
            # Never spin: a deadline that a tick did not move is retried after a short pause.
            timeout = None if deadline is None else max(0.005, deadline - self.clock())
            if not await wait_event(self._wake, timeout):
                session.tick(self.clock())
                self._after()


def _serving(session: CallSession) -> bool:
    """A session is up and serves the call (rotating included)."""
    state = session.call_state
    return state is RUNNING or state is ROTATING or state is READY_TO_SWITCH


__all__ = [
    "DEFAULT_MARK_EVERY_MS",
    "FATAL_ERROR_CODES",
    "RETELLING_REASON",
    "SESSION_LOST_ERROR_CODES",
    "BridgeConfig",
    "CallBridge",
    "CallReport",
    "Connector",
    "MessageSocket",
]

"""The asyncio driver's outbound side: writing what a :class:`~realtime_fsm.call.CallSession`
says, in its order, to the right socket.

After every input the driver hands the session's outputs out here (:meth:`Outbox._after`):
frames to the writer queues (or straight to a socket that takes them at once), application
events to the bounded event queue, returned texts to the application's callback, tool calls to
the tool runner; a deadline that moved earlier wakes the timer; an ending call stops the tasks.
The writers report each user text frame written back to the session, its one custodian.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from .call import AppEvent, CallEnded, CallReport, CallSession, TextFrame
from .call.texts import UrgentFrame
from .rotation_driver import RotationDriver
from .sockets import CLOSED, MessageSocket, Outbound
from .table import ENDING, READY_TO_SWITCH, ROTATING, RUNNING

log = logging.getLogger("realtime_fsm.bridge")


class SessionGone(Exception):
    """The OpenAI session is gone (socket closed, ``session_expired``), the call is not."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallObserver(Protocol):
    """What watches a call from its driver (``realtime_fsm.telemetry``): every application
    event, as it is handed out, and the moment an urgent frame (the barge-in's ``clear``) is
    written to the telephony socket.  Called on the call's own task: it must be quick and
    must not raise."""

    def events(self, events: Sequence[AppEvent]) -> None: ...

    def clear_written(self, now: float) -> None: ...


class Outbox(RotationDriver):
    """Mixin of :class:`~realtime_fsm.bridge.CallBridge`: its writers and output handling."""

    session: CallSession
    report: CallReport
    clock: Callable[[], float]
    twilio: MessageSocket
    openai: MessageSocket | None
    on_undelivered: Callable[[tuple[str, ...]], None] | None
    _to_openai: asyncio.Queue[Outbound]
    _to_twilio: asyncio.Queue[Outbound]
    _twilio_direct: Callable[[], bool]
    _twilio_nowait: Callable[[str], bool] | None
    _events: asyncio.Queue[AppEvent] | None
    _stop: asyncio.Event
    _wake: asyncio.Event
    _sleeping_until: float | None
    #: Set by :meth:`observe`; ``None``: nobody watches, and nothing here costs anything.
    _observer: CallObserver | None = None

    def observe(self, observer: CallObserver) -> None:
        """Hand every application event and urgent-frame write of this call to ``observer``
        too (telemetry).  Call it before :meth:`run`, to see the call from its start."""
        self._observer = observer
        self.session.emit_events = True

    async def _twilio_now(self, frames: list[str]) -> None:
        """Playback marks right behind their audio: sent from the reading task when the socket
        takes them at once and nothing waits ahead (see :func:`direct_probe`), as the audio
        was; otherwise queued, in order."""
        taken = frames[:]
        frames.clear()
        twilio, direct = self.twilio, self._twilio_direct
        for message in taken:
            if direct():
                try:
                    await twilio.send(message)
                except CLOSED:
                    self._send_twilio(message)
            else:
                self._send_twilio(message)

    async def _writer(self, queue: asyncio.Queue[Outbound], sock: MessageSocket, up: bool) -> None:
        session = self.session
        while True:
            message = await queue.get()
            if message is None:
                return
            try:
                if type(message) is str:
                    await sock.send(message)
                elif type(message) is TextFrame:
                    await sock.send(message.json)
                    # Counted once written, not when queued: a queued text can still be handed
                    # back, or re-sent on a new session.
                    session.text_written(message)
                else:  # an urgent frame (a str subclass): someone waits for it
                    await sock.send(message)  # type: ignore[arg-type]
                    self._urgent_written()
            except CLOSED:
                if up:
                    raise SessionGone("openai closed") from None
                session.twilio_closed(self.clock())
                self._after()
                return

    # ------------------------------------------------------------------ the session's outputs

    def _after(self) -> None:
        """Do what the session said: write its frames, hand out its events and returned texts,
        run its tool calls, wake the timer for an earlier deadline, stop when it ends."""
        session = self.session
        if session.next_generation is not None or self._next is not None:
            self._rotation_step()  # first: a switch moves the frames below to the new socket
        # OpenAI first: a barge-in's cancel is queued ahead of its clear, as the machine
        # said them.
        if session.out_openai:
            frames_up = session.out_openai[:]
            session.out_openai.clear()
            for item in frames_up:
                if not self._send_openai(item):
                    break
        if session.out_twilio:
            frames = session.out_twilio[:]
            session.out_twilio.clear()
            for message in frames:
                self._send_twilio(message)
        if session.events:
            self._hand_out(session.events)
        if session.returned_texts:
            self._returned(session.returned_texts)
        if session.tool_calls:
            self._start_tools(session.tool_calls)
        deadline = session.next_deadline
        if deadline is not None and (
            self._sleeping_until is None or deadline < self._sleeping_until
        ):
            self._wake.set()
        if session.call_state is ENDING or session.end_reason is not None:
            self._stop.set()

    def _hand_out(self, events: list[AppEvent]) -> None:
        observer = self._observer
        if observer is not None:
            observer.events(events)
        queue = self._events
        if queue is not None:
            for event in events:
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    if type(event) is CallEnded:
                        queue.get_nowait()  # the last event is always delivered
                        queue.put_nowait(event)
                    self.report.app_events_dropped += 1
        events.clear()

    def _returned(self, batches: list[tuple[str, ...]]) -> None:
        taken = batches[:]
        batches.clear()
        if self.on_undelivered is None:
            return
        for texts in taken:
            # The application's code: its bug must not end the call as an internal error, nor
            # keep the sockets open (this runs while the call is torn down, too).  The texts
            # are in the report whatever it does.
            try:
                self.on_undelivered(texts)
            except Exception:
                log.exception("call=%s on_undelivered callback failed", self.session.call_label)

    def _send_openai(self, message: str | TextFrame) -> bool:
        try:
            self._to_openai.put_nowait(message)
        except asyncio.QueueFull:
            self.session.end("openai socket not keeping up (queue full)", self.clock())
            self._stop.set()
            return False
        return True

    def _send_twilio(self, message: str) -> None:
        """An urgent frame (the barge-in's ``clear``) is written now when nothing is queued
        ahead and the socket takes it without waiting (our own server's ``send_nowait``), so it
        reaches the caller's ear sooner; everything else is queued, so the order of frames never
        changes."""
        nowait = self._twilio_nowait
        if nowait is not None and type(message) is UrgentFrame and self._to_twilio.empty():
            try:
                if nowait(message):
                    self._urgent_written()
                    return
            except CLOSED:
                pass  # the writer meets the closed socket and reports it the usual way
        try:
            self._to_twilio.put_nowait(message)
        except asyncio.QueueFull:
            self.session.end("telephony socket not keeping up (queue full)", self.clock())
            self._stop.set()

    def _urgent_written(self) -> None:
        observer = self._observer
        if observer is not None:
            observer.clear_written(self.clock())

    def _send_failed(self, sock: MessageSocket, message: str) -> None:
        """Caller audio sent straight from the reading task met a closed socket: queue it, so
        the writer meets the close and reports it the usual way -- unless the session was
        replaced meanwhile: then it is dropped (counted), never sent ahead of the new
        session's ``session.update``."""
        state = self.session.call_state
        if sock is self.openai and (
            state is RUNNING or state is ROTATING or state is READY_TO_SWITCH
        ):
            self._send_openai(message)
        else:
            self.report.media_dropped += 1

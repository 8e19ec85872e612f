"""One phone call as a sans-IO object: h11's ``Connection``, for a whole call.

Twilio frames, OpenAI frames, the application's calls and the current time go in; frames to
write on each side, application events, the next deadline, "end the call" and "the OpenAI
session is lost, open another" come out.  No sockets, no tasks, no clock: a driver (the asyncio
:class:`~realtime_fsm.bridge.CallBridge`, the ASGI routes, a test) feeds it and does what it
says.  The rules are rows: the call's own machine in :data:`realtime_fsm.table.CALL_TRANSITIONS`,
the response lifecycle's in the same module.

A driver's loop, in full::

    session = CallSession(config, now=clock(), can_reconnect=True)
    # for every frame read:  out = session.twilio_frame(frame, clock())  (or openai_frame)
    # write ``out`` if it is a frame ("": nothing else to do), then everything in
    # session.out_twilio / session.out_openai
    # (in order; report text frames written with session.text_written(frame));
    # sleep until session.next_deadline, then session.tick(clock());
    # session.lost_reason set: stop reading that socket, session.openai_lost(...) (if
    # session.generation changed, a ready next session took over: as at a rotation's switch);
    # call_state reconnecting: wait session.connect_delay, open a socket, session_opened();
    # session.next_generation set (a rotation): open a second socket, next_session_opened(),
    # write session.out_next to it and read it into next_session_frame() while rotating;
    # once session.generation is that number, it is the current socket (the old one's
    # unwritten caller audio goes there, after the session's frames), close the old one;
    # call_state ending: close both sockets, then session.closed(clock()).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from .. import events as ev
from ..admission import DRAIN_REASON, Admission
from ..credentials import StreamCredentials
from ..errors import LocalProtocolError
from ..logsafe import safe
from ..openai_realtime import SessionConfig
from ..table import AWAITING_START, ENDED, ENDING, READY_TO_SWITCH, ROTATING, RUNNING
from .config import BridgeConfig, ToolSpec
from .fields import FATAL_HANDSHAKE_STATUSES, log
from .texts import TextFrame
from .tool_calls import ToolCalls


class CallSession(ToolCalls):
    """The whole call, sans-IO.  One owner, one thread (the driver's)."""

    def __init__(
        self,
        config: BridgeConfig | None = None,
        *,
        now: float,
        peer: str = "",
        can_reconnect: bool = False,
        credentials: StreamCredentials | None = None,
        wall_offset: float = 0.0,
        admission: Admission | None = None,
    ) -> None:
        """``credentials``: the server's :class:`~realtime_fsm.credentials.StreamCredentials`;
        a ``start`` without a valid one for its call ends the call (1008) before any OpenAI
        session.  ``wall_offset``: Unix time minus the ``now`` clock, for their expiry.
        ``admission``: the server process's :class:`~realtime_fsm.admission.Admission`; a
        ``start`` it does not admit ends the call (1013, try again later) before any OpenAI
        session, and a started call holds a place in it until it is closed."""
        super().__init__(
            config if config is not None else BridgeConfig(),
            now=now,
            peer=peer,
            can_reconnect=can_reconnect,
            credentials=credentials,
            wall_offset=wall_offset,
            admission=admission,
        )
        self.report.undelivered_texts = self.custody.returned
        self.track_uncommitted()

    # --------------------------------------------------------------------- driver inputs

    @property
    def next_deadline(self) -> float | None:
        """When :meth:`tick` is due: the start's deadline, the response machine's, a tool's,
        the session's rotation."""
        state = self.call_state
        if state is RUNNING or state is ROTATING or state is READY_TO_SWITCH:
            machine = self.machine
            assert machine is not None
            deadline = machine.next_deadline
            if self._open_calls:
                first = min(c.deadline for c in self._open_calls.values())
                deadline = first if deadline is None else min(deadline, first)
            rotate_at = self._rotate_at
            if state is RUNNING and rotate_at is not None:
                deadline = rotate_at if deadline is None else min(deadline, rotate_at)
            return deadline
        if state is AWAITING_START:
            return self._start_deadline
        return None

    def tick(self, now: float) -> None:
        """Time passed (the driver slept until :attr:`next_deadline`)."""
        self._advance(now)
        state = self.call_state
        if state is RUNNING or state is ROTATING or state is READY_TO_SWITCH:
            self.expire_tool_calls()
            self.handle_event(ev.Tick())
            state = self.call_state
            if state is RUNNING:
                self._fire_call("tick")  # the rotation, when due
            elif state is READY_TO_SWITCH:
                self._fire_call("settle")
        elif state is AWAITING_START and self._now >= self._start_deadline:
            self.end("no start from telephony", now)

    def text_written(self, frame: TextFrame) -> None:
        """The driver wrote a user text frame to the OpenAI socket."""
        if self.custody.written(frame):
            self.report.user_texts_sent += 1
            self.history.add("user", frame.text)

    def openai_lost(self, reason: str, now: float, *, audio_dropped: int = 0) -> None:
        """The current OpenAI session is gone (its socket closed, or :attr:`lost_reason`).

        ``audio_dropped``: caller audio frames still queued for it.  They are counted as
        dropped, unless a ready next session took over (:attr:`generation` changed in this
        call): then the driver sends them to it, after the session's frames.  Every text frame
        not reported written is taken back for the next session."""
        self._advance(now)
        self.lost_reason = None
        self._reason = reason
        before = self.generation
        self._fire_call("session_lost")
        if self.generation == before:
            self.report.media_dropped += audio_dropped

    def connect_failed(self, error: str, now: float, *, status: int | None = None) -> None:
        """An attempt to open a new session failed (``error``: the exception's type name;
        ``status``: the HTTP status of a refused handshake)."""
        self._advance(now)
        self.report.reconnect_failures += 1
        self._unproven_attempts += 1
        self._failed_status = status
        log.warning(
            "call=%s openai reconnect attempt %d/%d failed: %s%s",
            self.call_label,
            self._unproven_attempts,
            self.config.reconnect_attempts,
            safe(error),
            f" (HTTP {status})" if status is not None else "",
        )
        if status is not None:
            self._reason = f"openai reconnect refused (HTTP {status})"
        self._fire_call("connect_failed")

    def upstream_unreachable(self, now: float, *, status: int | None = None) -> None:
        """The call's first OpenAI socket could not be opened: the call ends, and the
        telephony side is told it was a server error (1011), not a normal end.  ``status``:
        the HTTP status of a refused handshake; a 401/403 is named in the reason (the key or
        token was refused: a configuration error, not an outage)."""
        reason = (
            f"realtime server refused the credentials (HTTP {status})"
            if status in FATAL_HANDSHAKE_STATUSES
            else "realtime server unreachable"
        )
        self.end(reason, now)
        if self.end_reason == reason:
            self.close_code = 1011

    def session_opened(self, now: float) -> None:
        """A new OpenAI socket is open (the driver reads it from now on)."""
        self._advance(now)
        self._reason = ""
        # Unproven until the server says session.created (which resets the count).
        self._unproven_attempts += 1
        self._fire_call("session_opened")

    def closed(self, now: float) -> None:
        """The driver closed both sockets: the call is over, the report final."""
        self._advance(now)
        if self.call_state is not ENDING and self.end_reason is None:
            self._reason = self._reason or "ended"
        self._fire_call("closed")

    # ---------------------------------------------------------------- application calls

    @property
    def active(self) -> bool:
        """From Twilio's ``start`` until the call ends: the application's calls are taken."""
        state = self.call_state
        return state is not AWAITING_START and state is not ENDING and state is not ENDED

    def send_user_text(self, text: str, now: float, source: str = "app") -> None:
        """The caller's typed text (a chat box, an SMS): delivered exactly once, barge-in safe,
        or handed back undelivered.  :class:`~realtime_fsm.errors.CallNotActive` when the call
        is not running (the text was not taken); ``ValueError`` for blank text."""
        event = ev.UserText(text, source=source)
        self._check_active()
        self._advance(now)
        self.handle_event(event)

    def request_response(
        self, now: float, reason: str = "app", instructions: str | None = None
    ) -> None:
        """Ask the model to speak: queued and coalesced if it is busy, never a second create."""
        event = ev.RequestResponse(reason=reason, instructions=instructions)
        self._check_active()
        self._advance(now)
        self.handle_event(event)

    def commit_user_turn(self, now: float) -> None:
        """Push-to-talk: end the caller's turn now (a session without turn detection only)."""
        if self.config.session.turn_detection is not None:
            raise LocalProtocolError(
                "commit_user_turn needs a session without turn detection (turn_detection=None):"
                " the server's VAD commits turns itself"
            )
        self._check_active()
        self._advance(now)
        self.commit_turn("app")

    def update_session(
        self,
        now: float,
        *,
        session: SessionConfig | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> None:
        """Change the session mid-call (instructions, voice, tools, ...): sent now as a
        ``session.update``, and kept for any session that replaces this one.  The response
        machine learns what the server applied from its ``session.updated``.  ``ValueError``
        for a combination the call refuses (as at start), and for a new voice once the
        assistant has spoken on this session (the server refuses that: ``cannot_update_voice``);
        the call is unchanged then.  An update the server refuses leaves the previous settings
        in force (a ``ProtocolError`` event names the code); the call goes on."""
        self._check_active()
        self._advance(now)
        if (
            session is not None
            and session.voice is not None
            and session.voice != self.config.session.voice
            and self.report.media_out > self._media_out_at_session
        ):
            raise ValueError(
                "the voice cannot change once the assistant has spoken in this session"
                " (the Realtime API refuses it: cannot_update_voice)"
            )
        previous = self.config
        changes: dict[str, Any] = {}
        if session is not None:
            changes["session"] = session
        if tools is not None:
            changes["tools"] = tuple(tools)
        if tool_choice is not None:
            changes["tool_choice"] = tool_choice
        self.config = attrs.evolve(self.config, **changes)
        self.track_uncommitted()
        state = self.call_state
        if state is RUNNING or state is ROTATING or state is READY_TO_SWITCH:
            # A next session already configured gets the new config again at the switch.
            self.send_session_update(before=previous)

    def go_away(self, now: float) -> None:
        """The server is going away (its drain deadline passed): end the call now, with the
        report's reason :data:`DRAIN_REASON` and close code 1001 ("going away", RFC 6455) to
        both peers.  Nothing after a call that has ended already."""
        self._advance(now)
        self._reason = DRAIN_REASON
        self._fire_call("going_away")

    def end_call(self, reason: str, now: float) -> None:
        """End the call (the application's reason is the report's)."""
        if self.call_state is ENDED:
            return
        self.end(reason, now)

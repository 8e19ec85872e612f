"""Rotation: the OpenAI session is replaced before the server's cap ends it.

The server ends a Realtime session at 60 minutes: an ``error`` ``session_expired``, then the
socket closes, and a response in progress is cut off without its ``response.done``.  The call
does not wait for that.  ``BridgeConfig.rotate_after`` seconds into a session (the rows are in
:data:`realtime_fsm.table.CALL_TRANSITIONS`):

1. ``running -> rotating``: the driver is asked for a second socket (:attr:`next_generation`
   set); the current session goes on serving the call.
2. Opened (:meth:`next_session_opened`): the next session gets the same ``session.update``
   (``out_next``); its ``session.updated`` with mu-law both ways
   (:meth:`next_session_frame`) makes it ``ready_to_switch``.  A failure
   (:meth:`next_session_failed`, an error, the wrong audio) keeps the call on the current
   session and tries again ``rotate_retry_delay`` later, ``rotate_attempts`` times in all.
3. The switch, one synchronous step: at a quiet moment (nothing generating or queued, the
   caller's playback drained, the caller silent), or, once ``rotate_quiet_window`` has passed,
   at a response boundary (the done of the current response; what was queued behind it goes
   over, the answer the caller hears plays out).  The old machine hands over as for a lost
   session; the next session gets the conversation history, held text and carried requests,
   and becomes the current one (:attr:`generation`).  The driver then moves its socket over
   and closes the old one; frames the old socket still delivers are not fed.

Caller audio goes to the current session up to the switch, to the next one after it; audio
still queued for the old socket when the switch happens is sent to the next one (the driver's
part, see ``docs/bridge.md``).  Every step logs one ``[SESSION_ROTATE]`` line.
"""

from __future__ import annotations

import json
import logging
from typing import Literal

from .. import events as ev
from ..errors import RemoteProtocolError
from ..logsafe import safe
from ..openai_realtime import input_audio_append_json
from ..table import R_NONE, READY_TO_SWITCH, ROTATING
from ..twilio_media import clear_message
from . import app_events as ae
from .fields import log
from .openai_side import OpenAISide, audio_format_problem
from .texts import TextFrame, UrgentFrame

TAG = "[SESSION_ROTATE]"


class SessionRotation(OpenAISide):
    """The rotation rows' guards and actions, and the driver's reports on the next session."""

    # ---------------------------------------------------------------------- driver inputs

    def next_session_opened(self, now: float) -> int | None:
        """The driver opened the socket :attr:`next_generation` asked for.  Returns the
        session number it is to carry (write :attr:`out_next` to it, then read it into
        :meth:`next_session_frame` until the call is no longer ``rotating``); ``None``: no
        longer wanted, close it."""
        self._advance(now)
        if not self._fire_call("next_opened"):
            return None
        return self.next_generation

    def next_session_frame(self, frame: str | bytes, now: float) -> None:
        """A frame read from the next session's socket before the switch."""
        self._advance(now)
        if self.call_state is not ROTATING or self._next_update_id is None:
            return  # late: the next session was dropped, or is ready and waits unread
        try:
            message = self.codec.parse(frame)
        except RemoteProtocolError as exc:
            self._next_problem = f"bad frame ({exc.message[:100]})"
            self._fire_call("next_failed")
            return
        kind = type(message)
        if kind is ev.SessionConfigured:
            assert isinstance(message, ev.SessionConfigured)
            if not message.updated:
                return  # session.created shows the server's defaults, before our update
            self._next_configured = message
            self._next_problem = audio_format_problem(message) or ""
            self._fire_call("next_configured")
            self._next_configured = None
            if self.call_state is READY_TO_SWITCH:
                self._fire_call("settle")
        elif kind is ev.ServerError:
            assert isinstance(message, ev.ServerError)
            code = message.code or "unknown"
            errors = self.report.server_errors
            errors[code] = errors.get(code, 0) + 1
            self._next_problem = f"openai error {code}: {message.message[:100]}"
            self._fire_call("next_failed")
        # Anything else (rate limits, ...) says nothing about whether the session is usable.

    def next_session_failed(self, error: str, now: float, *, status: int | None = None) -> None:
        """The next session could not be opened or configured: its socket failed, closed or
        timed out (``error``: the exception's type name; ``status``: a refused handshake's)."""
        self._advance(now)
        self._next_problem = error if status is None else f"{error} (HTTP {status})"
        self._fire_call("next_failed")

    # -------------------------------------------------------------------------- guards

    def rotation_due(self) -> bool:
        at = self._rotate_at
        return at is not None and self._now >= at

    def next_audio_wrong(self) -> bool:
        configured = self._next_configured
        return configured is not None and audio_format_problem(configured) is not None

    def rotation_attempts_left(self) -> bool:
        return self._rotation_failures + 1 < self.config.rotate_attempts

    def quiet_moment(self) -> bool:
        """Nothing to cut off and nothing to carry: the response machine at rest, the caller's
        playback drained (no mark outstanding), the caller not speaking (no turn in the
        making), the newest turn's transcript in (it goes into the history), no tool call or
        push-to-talk commit open on this session."""
        machine = self.machine
        assert machine is not None
        turn = self._turn_item
        return (
            machine.at_rest()
            and not self.tracker.playing
            and not machine.caller_hearing
            and not self._caller_speaking
            and (
                turn is None
                or turn in self._transcribed
                or not self.config.session.input_transcription
            )
            and self._nothing_open()
        )

    def next_session_ready(self) -> bool:
        """The next session is open and said it applied our update (mu-law both ways): it can
        serve the call in this very step, as at a switch."""
        return self.next_generation is not None and self._next_settings is not None

    def quiet_window_passed(self) -> bool:
        return self._now >= self._next_ready_at + self.config.rotate_quiet_window

    def at_response_boundary(self) -> bool:
        """The done being handled freed the slot (what it let the machine send has not left
        the call, and is carried over), and nothing would be lost with the session: no caller
        turn the server owes an answer or whose words are unknown, the caller not speaking,
        no recovery, out-of-band response, tool call or commit open."""
        machine = self.machine
        assert machine is not None
        turn = self._turn_item
        return (
            self._boundary
            and not machine.awaiting_server_response()
            and machine.recovery_state is R_NONE
            and not machine.oob_responses
            and not self._caller_speaking
            and (turn is None or turn in self._transcribed)
            and self._nothing_open()
        )

    def hearing_retired_audio(self) -> bool:
        tracker = self.tracker
        return tracker.generation == self._retired_audio and tracker.playing

    def _nothing_open(self) -> bool:
        return not (self._open_calls or self._tool_rounds or self._commits)

    # -------------------------------------------------------------------------- actions

    def open_next_session(self) -> None:
        self.next_generation = self.generation + 1
        if not self._rotation_failures:
            self._rotation_due_at = self._now
        log.info(
            "call=%s %s due: session %d is %.1fs old (rotate_after=%gs): opening session %d"
            " (attempt %d/%d)",
            self.call_label,
            TAG,
            self.generation,
            self._now - self._session_started_at,
            self.config.rotate_after,
            self.next_generation,
            self._rotation_failures + 1,
            self.config.rotate_attempts,
        )

    def configure_next_session(self) -> None:
        """The same ``session.update`` the current session had, with an id of its own."""
        self._next_opened_at = self._now
        event_id = self.mint_id("session")
        self._next_update_id = event_id
        self._next_config = self.config
        update = self.codec.session_update(self.config.effective_session(), event_id=event_id)
        self.out_next.append(json.dumps(update))
        log.info(
            "call=%s %s session %d open: session.update sent (%s)",
            self.call_label,
            TAG,
            self.next_generation,
            event_id,
        )

    def note_next_ready(self) -> None:
        self._next_ready_at = self._now
        self._next_settings = self._next_configured
        log.info(
            "call=%s %s session %d ready %.3fs after due: switching at a quiet moment"
            " (within %gs, then at a response boundary)",
            self.call_label,
            TAG,
            self.next_generation,
            self._now - self._rotation_due_at,
            self.config.rotate_quiet_window,
        )

    def retry_rotation_later(self) -> None:
        self._rotation_failures += 1
        self.report.rotation_failures += 1
        delay = self.config.rotate_retry_delay
        log.warning(
            "call=%s %s session %d failed (%s): staying on session %d, next attempt in %gs",
            self.call_label,
            TAG,
            self.next_generation,
            safe(self._next_problem),
            self.generation,
            delay,
        )
        self._forget_next()
        self._rotate_at = self._now + delay

    def give_up_rotation(self) -> None:
        self._rotation_failures += 1
        self.report.rotation_failures += 1
        log.warning(
            "call=%s %s session %d failed (%s), attempt %d/%d: staying on session %d; at the"
            " server's cap it is replaced after the fact (reconnect)",
            self.call_label,
            TAG,
            self.next_generation,
            safe(self._next_problem),
            self._rotation_failures,
            self.config.rotate_attempts,
            self.generation,
        )
        self._forget_next()
        self._rotate_at = None

    def drop_next_session(self) -> None:
        """The call ends or its session was lost: a next session being prepared goes too (the
        driver closes its socket when :attr:`next_generation` is cleared)."""
        if self.next_generation is not None:
            log.info(
                "call=%s %s session %d dropped (%s)",
                self.call_label,
                TAG,
                self.next_generation,
                safe(self._reason or "call ending"),
            )
        self._forget_next()
        self._rotate_at = None

    def _forget_next(self) -> None:
        self.next_generation = None
        self.out_next.clear()
        self._next_update_id = None
        self._next_config = None
        self._next_problem = ""
        self._next_settings = None

    def switch_at_quiet_moment(self) -> None:
        self._switch(boundary=False)

    def switch_at_boundary(self) -> None:
        self._switch(boundary=True)

    def switch_to_ready_session(self) -> None:
        """The current session was lost (``hand_over`` took its estate) while the next one was
        ready: it takes over now, restored as a reconnected session is (the config if it
        changed since, the history up to this moment, held text, the carried requests with a
        cut-off answer's retelling first), with no connection to open.  Counted as a
        reconnect that took no time."""
        self.connect_delay = None
        new = self.next_generation
        old = self.generation
        items, delivered, carried = self._take_over()
        took = self._now - self._lost_at
        report = self.report
        report.reconnects += 1
        report.reconnects_to_ready += 1
        report.reconnect_times.append(took)
        log.info(
            "call=%s %s session %d lost, ready session %d took over: %d history item(s),"
            " %d held text(s) and %d request(s) carried, no connection opened",
            self.call_label,
            TAG,
            old,
            new,
            items,
            delivered,
            carried,
        )
        if self.emit_events:
            self.events.append(ae.SessionRestored(took, items, delivered, at=self._now))

    def clear_retired_audio(self) -> None:
        self.out_twilio.append(UrgentFrame(clear_message(self.stream_sid)))
        self.tracker.clear()
        self._retired_audio = None
        log.info(
            "call=%s %s barge-in over the replaced session's last answer: playback cleared",
            self.call_label,
            TAG,
        )

    def _switch(self, *, boundary: bool) -> None:
        """The next session takes over, in this very step."""
        new = self.next_generation
        assert new is not None
        old = self.generation
        # What this step made for the old session never reaches it: text goes to the next
        # session (custody takes back every frame not written), requests with the handover,
        # the rest (the create a boundary's drain just queued) is moot.
        withdrawn = sum(1 for frame in self.out_openai if type(frame) is not TextFrame)
        self.out_openai.clear()
        self.take_estate(f"replaced by session {new}")
        self.note_retired_audio()
        items, delivered, carried = self._take_over()
        report = self.report
        report.rotations += 1
        if boundary:
            report.rotations_at_boundary += 1
        waited = self._now - self._rotation_due_at
        log.info(
            "call=%s %s switched at a %s: session %d -> %d, %d history item(s),"
            " %d text(s) and %d request(s) carried, %d frame(s) withdrawn; %.1fs after due",
            self.call_label,
            TAG,
            "response boundary" if boundary else "quiet moment",
            old,
            new,
            items,
            delivered,
            carried,
            withdrawn,
            waited,
        )
        if self.emit_events:
            moment: Literal["quiet", "boundary"] = "boundary" if boundary else "quiet"
            self.events.append(ae.SessionRotated(moment, waited, items, carried, at=self._now))

    def _take_over(self) -> tuple[int, int, int]:
        """The ready next session becomes the current one, the old one's estate already taken:
        restored (history, held text, carried requests) on a fresh machine.  Returns the
        history items, the texts delivered and the requests carried."""
        new = self.next_generation
        assert new is not None
        # What was made for the old session never reaches it: text goes to the next session
        # (custody takes back every frame not written), requests with the handover.
        self.out_openai.clear()
        self._session_started_at = self._next_opened_at
        # The next session applied its own update before it was ready; the old session's
        # updates in flight are answered there or not at all.  A config the application
        # changed since is sent again: refused, the next session's stays.
        self._pending_updates.clear()
        configured = self._next_config
        carried = len(self._held_requests)
        settings = self._next_settings
        items, delivered = self.restore(
            update=self.config is not configured, update_replaces=configured
        )
        if settings is not None:  # what the new session applied, as its machine would hear it
            self.handle_event(settings)
        self._carry_uncommitted(new)
        self.generation = new
        self._forget_next()
        return items, delivered, carried

    def _carry_uncommitted(self, new: int) -> None:
        """Push-to-talk: the caller audio since the last commit is appended to the new
        session's input buffer, after its restore and before any later audio, so the turn
        being spoken keeps its beginning when it is committed there."""
        record = self._uncommitted
        self.input_audio_resent = record is not None
        if record is None:
            return
        payloads = record.payloads()
        for payload in payloads:
            self.out_openai.append(input_audio_append_json(payload))
        dropped = record.dropped
        record.dropped = 0  # counted once: the rest stays uncommitted on the new session
        self.report.push_to_talk_audio_dropped += dropped
        log.log(
            logging.WARNING if dropped else logging.INFO,
            "call=%s %s push-to-talk audio since the last commit carried to session %d:"
            " %d append(s), %d frame(s) past rotate_carry_audio=%gs dropped",
            self.call_label,
            TAG,
            new,
            len(payloads),
            dropped,
            self.config.rotate_carry_audio,
        )

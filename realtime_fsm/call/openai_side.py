"""What the call does with each OpenAI Realtime frame.

The per-frame path (assistant audio) returns the Twilio ``media`` frame to write at once; a
playback ``mark`` that follows it is left in the session's Twilio list.  Everything else goes
through the machines.
"""

from __future__ import annotations

from .. import events as ev
from ..commands import META_EVENT_ID, META_REASON
from ..errors import RemoteProtocolError
from ..logsafe import caller_text, safe
from ..openai_realtime import (
    FunctionCallDone,
    Ignored,
    InputTranscript,
    InputTranscriptDelta,
    ItemAdded,
    OutputAudioDelta,
    OutputItemAdded,
    OutputItemDone,
    OutputTranscriptDelta,
    ResponseActivity,
)
from ..table import ACTIVE, C_NONE, CANCELLING, READY_TO_SWITCH, ROTATING, RUNNING
from ..twilio_media import mark_message, media_message
from . import app_events as ae
from .config import SESSION_LOST_ERROR_CODES, BridgeConfig, fatal_error
from .fields import MAX_PARTIALS, MAX_TRANSCRIBED, Transcript, log
from .twilio_side import TwilioSide


class OpenAISide(TwilioSide):
    """OpenAI frames in."""

    def openai_frame(self, frame: str | bytes, now: float) -> str | None:
        """One frame from the current OpenAI session.  Returns the Twilio ``media`` frame to
        write now for assistant audio the caller should hear; ``None`` otherwise (outputs, if
        any, are in the session's lists)."""
        state = self.call_state
        if state is not RUNNING and state is not ROTATING and state is not READY_TO_SWITCH:
            return None  # a frame of a session already lost or a call already ending
        try:
            message = self.codec.parse(frame)
        except RemoteProtocolError as exc:
            self._advance(now)
            self.bad_frame("openai", exc)
            return None
        if type(message) is OutputAudioDelta:  # per frame: narrowed without an ``assert``
            item = message.item_id
            if not item:  # the mark names the item: an empty id is the peer's error
                self._advance(now)
                self.bad_frame("openai", RemoteProtocolError("audio delta: empty item_id"))
                return None
            # Running: a machine exists (a per-frame ``assert`` would cost more than it says).
            machine = self.machine
            if machine.audio_delta(message.response_id, item, message.byte_count, now):  # type: ignore[union-attr]
                self.report.media_out += 1
                if self.emit_events and item != self._last_audio_item:
                    self._new_audio_item(message.response_id, item, now)
                name = self.tracker.audio_sent(item, message.byte_count, now)
                if name is not None:
                    self.out_twilio.append(mark_message(self.stream_sid, name))
                return media_message(self.stream_sid, message.payload)
            return None
        self._advance(now)
        kind = type(message)
        # The item's audio ended (or something else came): mark its tail.  Not on the caller's
        # speech: a barge-in clears what plays, and a tail mark minted now, after the audio
        # played, would read as not yet heard and cap the estimate of what the caller heard.
        if kind is not OutputTranscriptDelta and kind is not ev.SpeechStarted:
            tail = self.tracker.flush_mark()
            if tail is not None:
                self.out_twilio.append(mark_message(self.stream_sid, tail))
        machine = self.machine
        assert machine is not None
        if kind is OutputTranscriptDelta:
            assert isinstance(message, OutputTranscriptDelta)
            machine.transcript_delta(message.response_id, now)
            transcript = self._partials.get(message.response_id)
            if transcript is not None:
                transcript.add(message.delta)
            if self.emit_events:
                self.events.append(
                    ae.AssistantTranscript(message.response_id, message.delta, final=False)
                )
        elif kind is ResponseActivity:
            assert isinstance(message, ResponseActivity)
            machine.touch(message.response_id, now)
        elif kind is Ignored:
            pass
        elif kind is InputTranscript:
            assert isinstance(message, InputTranscript)
            self._input_transcript(message)
            if self.call_state is READY_TO_SWITCH:
                self._fire_call("settle")  # the newest turn's words in: maybe the moment
        elif kind is OutputItemAdded:
            assert isinstance(message, OutputItemAdded)
            machine.item_added(message.response_id, message.item_id, message.item_type, now)
        elif kind is OutputItemDone:
            assert isinstance(message, OutputItemDone)
            machine.item_done(message.response_id, message.item_id, now)
        elif kind is FunctionCallDone:
            assert isinstance(message, FunctionCallDone)
            if message.item_id:
                machine.item_done(message.response_id, message.item_id, now)
            else:
                machine.touch(message.response_id, now)
            self.function_call_done(
                message.response_id,
                message.call_id,
                message.name,
                message.arguments,
                message.status,
            )
        elif kind is ItemAdded:
            assert isinstance(message, ItemAdded)
            if message.call_id:
                self.output_item_added(message.call_id)
        elif kind is InputTranscriptDelta:
            assert isinstance(message, InputTranscriptDelta)
            if self.emit_events:
                self.events.append(
                    ae.CallerTranscript(message.delta, final=False, item_id=message.item_id)
                )
        else:
            self._control(message)  # type: ignore[arg-type]
        return None

    def function_call_done(
        self, response_id: str, call_id: str, name: str, arguments: str, status: str | None
    ) -> None:
        """A ``function_call`` item is done (see :mod:`realtime_fsm.call.tool_calls`)."""

    def output_item_added(self, call_id: str) -> None:
        """The server added our ``function_call_output`` (see ``tool_calls``)."""

    def _new_audio_item(self, response_id: str, item: str, now: float) -> None:
        self._last_audio_item = item
        self._first_audio_of(response_id, item, now)
        items = self._response_items.get(response_id)
        if items is None:
            if len(self._response_items) >= MAX_PARTIALS:
                del self._response_items[next(iter(self._response_items))]
            self._response_items[response_id] = [item]
        elif item not in items:
            items.append(item)

    def _input_transcript(self, message: InputTranscript) -> None:
        log.info(
            "call=%s caller said: %s",
            self.call_label,
            caller_text(message.transcript, self.config.lifecycle.log_caller_content),
        )
        self.history.add("user", message.transcript)
        transcribed = self._transcribed
        if message.item_id:
            transcribed[message.item_id] = None
            if len(transcribed) > MAX_TRANSCRIBED:
                del transcribed[next(iter(transcribed))]
        if self.emit_events:
            self.events.append(
                ae.CallerTranscript(message.transcript, final=True, item_id=message.item_id or None)
            )

    def _control(self, message: ev.Event) -> None:
        """A lifecycle event: the call's own bookkeeping first, then the response machine."""
        kind = type(message)
        if kind is ev.SpeechStarted:
            self._caller_speaking = True
        elif kind is ev.UserTurnCommitted:
            assert isinstance(message, ev.UserTurnCommitted)
            # The turn is in the session's conversation now (speech_stopped comes before the
            # commit: until then the caller's words are only in this session's buffer).
            self._caller_speaking = False
            # No id: its transcript cannot be matched, so its words count as unknown.
            self._turn_item = message.item_id or ""
            self._turn_at = self._now  # what a response the server creates answers
            if self._commits:  # ours (push-to-talk: no turn detection commits)
                del self._commits[0]
        elif kind is ev.ResponseCreated:
            assert isinstance(message, ev.ResponseCreated)
            self._response_created(message)
        elif kind is ev.ResponseDone:
            assert isinstance(message, ev.ResponseDone)
            self._response_done(message)
        elif kind is ev.SessionConfigured:
            assert isinstance(message, ev.SessionConfigured)
            self._unproven_attempts = 0  # the server took this session: it is real
            if message.updated and self._pending_updates:
                del self._pending_updates[0]  # the oldest update in flight was applied
            problem = audio_format_problem(message) if message.updated else None
            if problem is not None:
                log.error("call=%s %s: ending the call", self.call_label, safe(problem))
                self.end(problem, self._now)
                return
        elif kind is ev.ServerError:
            assert isinstance(message, ev.ServerError)
            if not self._server_error(message):
                return
        if self.call_state is READY_TO_SWITCH:
            self._handle_then_settle(message)
        else:
            self.handle_event(message)

    def _handle_then_settle(self, message: ev.Event) -> None:
        """With the next session ready, every event may bring the moment to switch: the
        quiet one, or (the event being the done that frees the slot) a response boundary."""
        machine = self.machine
        assert machine is not None
        boundary = (
            type(message) is ev.ResponseDone
            and machine.create_state is C_NONE
            and (machine.state is ACTIVE or machine.state is CANCELLING)
            and machine.response_id == message.response_id
        )
        self.handle_event(message)
        if self.call_state is READY_TO_SWITCH:
            self._boundary = boundary
            try:
                self._fire_call("settle")
            finally:
                self._boundary = False

    def _server_error(self, message: ev.ServerError) -> bool:
        """Count and sort a server error; False when it ends the session or the call."""
        report = self.report
        code = message.code or "unknown"
        report.server_errors[code] = report.server_errors.get(code, 0) + 1
        if self.emit_events:
            self.events.append(ae.ProtocolError("openai", message.message[:200], code))
        fatal = fatal_error(message.code, message.error_type)
        if fatal is not None:
            log.error(
                "call=%s openai error %s: no new session can cure it, ending the call: %s",
                self.call_label,
                safe(fatal, 64),
                safe(message.message),
            )
            self.end(f"openai error {fatal}", self._now)
            return False
        event_id = message.event_id
        if event_id is not None and event_id in self._commits:
            # Refused (input_audio_buffer_commit_empty): no turn to answer.
            self._commits.remove(event_id)
        refused = self._refused_update(event_id)
        if refused:
            before = refused[0]
            if before is not None:
                # A mid-call update, refused whole: the server kept the settings it had, and
                # so does the call (a new session gets them too); the application hears of it
                # as a ProtocolError naming the code.
                self.config = before
                log.warning(
                    "call=%s openai refused a mid-call session.update (%s), the previous"
                    " settings stay: %s",
                    self.call_label,
                    safe(code, 64),
                    safe(message.message),
                )
                return True
            # Refused whole: the session is on the server's defaults (24 kHz PCM, its own turn
            # detection), which would be noise both ways.
            log.error(
                "call=%s openai refused session.update (%s): %s",
                self.call_label,
                safe(code, 64),
                safe(message.message),
            )
            self.end(f"openai refused session.update ({code})", self._now)
            return False
        if code in SESSION_LOST_ERROR_CODES:
            self.lost_reason = f"openai error {code}"
            return False
        return True

    def _refused_update(self, event_id: str | None) -> tuple[BridgeConfig | None, ...]:
        """The settings before the ``session.update`` an error names (taken off the pending
        list), in a 1-tuple; ``()`` when the error names none of ours."""
        for index, (update_id, before) in enumerate(self._pending_updates):
            if update_id == event_id:
                del self._pending_updates[index]
                return (before,)
        return ()

    def _response_created(self, event: ev.ResponseCreated) -> None:
        if self.emit_events:
            machine = self.machine
            assert machine is not None
            reason = event.metadata.get(META_REASON)
            reasons = tuple(reason.split("+")) if reason is not None else ()
            ours = reason is not None
            self.events.append(
                ae.ResponseStarted(
                    event.response_id,
                    ours,
                    reasons,
                    at=self._now,
                    requested_at=self._requested_at(ours, event.metadata.get(META_EVENT_ID)),
                )
            )
        if event.out_of_band:
            return  # not part of the conversation: never restored
        partials = self._partials
        if len(partials) >= MAX_PARTIALS:
            del partials[next(iter(partials))]
        partials[event.response_id] = Transcript(self.config.history_max_chars)

    def _response_done(self, event: ev.ResponseDone) -> None:
        transcript = self._partials.pop(event.response_id, None)
        text = "".join(transcript.parts) if transcript is not None else ""
        # A cancelled response is left out: what the caller heard of it is not known as text.
        if transcript is not None and event.status in ("completed", "incomplete"):
            self.history.add("assistant", text)
        items = self._response_items.pop(event.response_id, ())
        if self.emit_events:
            tracker = self.tracker
            heard = sum(tracker.played_ms(item) for item in items)
            if transcript is not None:
                self.events.append(ae.AssistantTranscript(event.response_id, text, final=True))
            self.events.append(
                ae.ResponseFinished(
                    event.response_id,
                    event.status,
                    event.reason,
                    heard,
                    at=self._now,
                    first_audio_at=self._first_audio_at(event.response_id),
                    input_tokens=event.input_tokens,
                    output_tokens=event.output_tokens,
                )
            )


def audio_format_problem(session: ev.SessionConfigured) -> str | None:
    """Telephony audio is G.711 mu-law both ways, passed through untouched: a session that
    (after our ``session.update``) says another format would play noise to the caller and
    hear noise from them, so the call ends with this reason instead.  A format the server does
    not state is taken on trust."""
    wrong = [
        f"{side} {fmt}"
        for side, fmt in (
            ("input", session.input_audio_format),
            ("output", session.output_audio_format),
        )
        if fmt is not None and fmt != "pcmu"
    ]
    return f"openai session audio is not mu-law ({', '.join(wrong)})" if wrong else None

"""What the call does with each Twilio Media Streams frame.

The per-frame path (caller audio) returns the OpenAI frame to write at once: the driver writes
it without looking at the session's outputs, which is what keeps the call's cost per frame
close to a bare relay's.  Every other frame goes through the machines and leaves its outputs in
the session's lists.
"""

from __future__ import annotations

import json
import re
from typing import Final

from .. import events as ev
from ..errors import RemoteProtocolError
from ..logsafe import caller_text, safe
from ..openai_realtime import dumps, input_audio_append_json, render_input_audio_commit
from ..table import AWAITING_START, READY_TO_SWITCH, RECONNECTING, ROTATING, RUNNING
from ..twilio_media import (
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    UnknownMessage,
    parse_message,
)
from .admitting import Admitting
from .fields import log
from .uncommitted import UncommittedAudio

#: :meth:`TwilioSide.twilio_frame`'s answer for a frame that needs nothing done after it.
NOTHING: Final = ""
#: Caller audio must be base64 (checked per frame with this and ``len % 4 == 0``: about 0.4 us,
#: against decoding it, which the bridge never does) ...
_b64 = re.compile(r"[A-Za-z0-9+/]+={0,2}").fullmatch
#: ... and at most a second of 8 kHz mu-law per frame (Twilio sends 20 ms: 216 chars).
MAX_MEDIA_CHARS: Final = 4 * ((8000 + 2) // 3)


class TwilioSide(Admitting):
    """Twilio frames in."""

    def twilio_frame(self, frame: str | bytes, now: float) -> str | None:
        """One frame from the Twilio socket.  Returns the ``input_audio_buffer.append`` to
        write now for caller audio while a session is up; :data:`NOTHING` (``""``) when the
        frame left no output and moved no deadline (a playback mark's echo); ``None`` for
        anything else (its outputs, if any, are in the session's lists)."""
        try:
            message = parse_message(frame, max_message_size=self.max_twilio_message)
        except RemoteProtocolError as exc:
            self._advance(now)
            self.bad_frame("twilio", exc)
            return None
        if type(message) is Media:  # per frame: narrowed without an ``assert``
            # Forwarded while a session serves the call: running, or rotating (the current
            # session hears the caller up to the switch).
            state = self.call_state
            if state is RUNNING or state is ROTATING or state is READY_TO_SWITCH:
                payload = message.payload
                track = message.track
                size = len(payload)
                if (
                    (track is None or track == "inbound")
                    and 0 < size <= MAX_MEDIA_CHARS
                    and not size & 3
                    and _b64(payload)
                ):
                    self.report.media_in += 1
                    uncommitted = self._uncommitted
                    if uncommitted is not None:
                        uncommitted.add(payload)
                    return input_audio_append_json(payload)
                self._advance(now)
                self._bad_media(message)
                return None
            return self._media_elsewhere(message)
        self._advance(now)
        kind = type(message)
        if self.call_state is AWAITING_START:
            self._before_start(message)
            return None
        if kind is Mark:
            assert isinstance(message, Mark)
            state = self.call_state
            if state is RUNNING or state is ROTATING or state is READY_TO_SWITCH:
                machine = self.machine
                assert machine is not None
                proved = self.tracker.mark_received(message.name, now)
                for progress in proved:
                    machine.playback_progress(progress.item_id, progress.played_ms)
                if self._retired_audio is not None and not self.tracker.playing:
                    self._retired_audio = None  # the replaced session's answer has played out
                started = self._awaiting_play and self._playback_started(proved, now)
                if state is READY_TO_SWITCH:
                    self._fire_call("settle")  # the playback drained may be the quiet moment
                    return None
                if started:
                    return None  # an application event to hand out
                # Playback progress moves no deadline and says nothing: no outputs to look at.
                return NOTHING
        elif kind is Dtmf:
            assert isinstance(message, Dtmf)
            if message.digit == self.config.commit_on_dtmf:
                self.commit_turn("dtmf")
            elif self.config.dtmf_as_text:
                self.handle_event(ev.UserText(f"DTMF {message.digit}", source="dtmf"))
        elif kind is Stop:
            self.end("telephony stop", now)
        elif kind is Start:
            self._start = message  # type: ignore[assignment]
            self._fire_call("start")
        elif kind is UnknownMessage:
            self._unknown(frame)
        # Connected after start: harmless, nothing to do.
        return None

    def _bad_media(self, message: Media) -> None:
        """Caller audio that is not what Twilio sends: never forwarded (OpenAI would answer
        each with an error: an amplifier), counted with the other bad frames (past
        ``max_bad_frames`` the call ends, 1008)."""
        if message.track is not None and message.track != "inbound":
            kind, why = "media_track", "not the inbound track"
        elif len(message.payload) > MAX_MEDIA_CHARS:
            kind, why = "media_size", f"{len(message.payload)} base64 chars"
        else:
            kind, why = "media_payload", "payload is not base64"
        log.warning("call=%s media dropped: %s", self.call_label, why)
        self.count_bad("twilio", kind)

    def twilio_closed(self, now: float) -> None:
        """The Twilio socket closed (the caller hung up, or the peer went away)."""
        before = self.call_state is AWAITING_START
        self.end("telephony closed before start" if before else "telephony closed", now)

    def _media_elsewhere(self, message: Media) -> str | None:
        """Caller audio while no session serves the call: dropped and counted while one is
        being reconnected, refused before ``start``."""
        state = self.call_state
        if state is RECONNECTING:
            if message.track is None or message.track == "inbound":
                self.report.media_in += 1
                self.report.media_dropped += 1  # no session to hear it; never buffered
        elif state is AWAITING_START:
            self._before_start(message)
        return None

    def _before_start(self, message: object) -> None:
        if isinstance(message, Start):
            self._start = message
            self._fire_call("start")
        elif isinstance(message, Stop):
            self.end("telephony stopped before start", self._now)
        elif not isinstance(message, Connected):
            self.count_bad("twilio", "before_start")
            log.warning(
                "call=%s %s before start dropped", self.call_label, type(message).__name__.lower()
            )

    def _unknown(self, frame: str | bytes) -> None:
        if self.config.accept_text_messages:
            try:
                data = json.loads(frame)
                text = data.get("text") if data.get("event") == "text" else None
            except (ValueError, AttributeError):
                text = None
            if isinstance(text, str) and text.strip():
                self.handle_event(ev.UserText(text, source="typed"))
                return
        # Logged each time: the bad-frame limit bounds how often (then the socket is closed).
        # The frame may be a caller's typed text this deployment does not accept: caller content.
        shown = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
        log.warning(
            "call=%s unknown Twilio event dropped: %s",
            self.call_label,
            caller_text(shown, self.config.lifecycle.log_caller_content, 100),
        )
        self.count_bad("twilio", "unknown_event")

    def commit_turn(self, source: str) -> None:
        """Push-to-talk: commit the caller's audio so far as a turn."""
        if self.call_state is RECONNECTING:
            self.report.turns_lost += 1
            log.warning(
                "call=%s turn commit (%s) while reconnecting: the turn is lost",
                self.call_label,
                source,
            )
            return
        event_id = self.mint_id("commit")
        log.info(
            "call=%s caller turn committed by %s event_id=%s", self.call_label, source, event_id
        )
        self._commits.append(event_id)
        self.out_openai.append(dumps(render_input_audio_commit(event_id=event_id)))
        if self._uncommitted is not None:
            self._uncommitted.clear()  # the audio so far is that turn's

    def track_uncommitted(self) -> None:
        """Keep the push-to-talk audio since the last commit while a switch of session can
        happen (no turn detection, rotation on, something kept); else keep none."""
        cfg = self.config
        if (
            cfg.session.turn_detection is None
            and cfg.rotate_after is not None
            and self.can_reconnect_sessions
            and cfg.rotate_carry_audio > 0
        ):
            if self._uncommitted is None:
                self._uncommitted = UncommittedAudio(cfg.rotate_carry_audio)
        else:
            self._uncommitted = None

    def bad_frame(self, side: str, exc: RemoteProtocolError) -> None:
        log.warning(
            "call=%s bad frame from %s dropped: %s", self.call_label, side, safe(exc.message)
        )
        if self.emit_events:
            from .app_events import ProtocolError

            self.events.append(ProtocolError(side, exc.message[:200]))
        self.count_bad(side, "malformed")

"""The call machine's ``start`` rows: is this stream the call it claims to be (its per-call
credential), can it be served (its media format), and beginning the call.

A layer of the session over :class:`~realtime_fsm.call.call_actions.CallActions`: the guards
and actions the ``start`` rows of :data:`realtime_fsm.table.CALL_TRANSITIONS` name.
"""

from __future__ import annotations

import attrs

from .. import events as ev
from ..credentials import CREDENTIAL_PARAMETER
from ..logsafe import caller_params, safe
from ..openai_realtime import OpenAIRealtimeCodec
from ..twilio_media import LedgerPlaybackTracker, Start
from . import app_events as ae
from .call_actions import CallActions
from .fields import log


class Starting(CallActions):
    """Guards and actions of the ``start`` rows."""

    def bad_media_format(self) -> bool:
        start = self._start
        fmt = start.media_format if start is not None else None
        return fmt is not None and not fmt.is_mulaw_8k_mono

    def credential_refused(self) -> bool:
        return self._credential_refusal() is not None

    def _credential_refusal(self) -> str | None:
        """Why the ``start`` being handled does not carry a valid credential for its call, or
        ``None`` (also when the server checks none)."""
        credentials, start = self.credentials, self._start
        if credentials is None or start is None:
            return None
        return credentials.refusal(
            start.custom_parameters.get(CREDENTIAL_PARAMETER),
            start.account_sid,
            start.call_sid,
            self._now + self.wall_offset,
        )

    def end_bad_format(self) -> None:
        start = self._start
        assert start is not None
        self._reason = f"bad media format {start.media_format}"
        self.note_end()

    def end_bad_credential(self) -> None:
        refusal = self._credential_refusal()
        self.refuse_stream(f"credential {refusal}", f"bad stream credential: {refusal}")

    def refuse_stream(self, why: str, reason: str) -> None:
        """End a stream refused at ``start``, before anything was opened for it: one WARNING
        naming the call, ``why`` and the peer, and ``reason`` as the call's end reason."""
        start = self._start
        assert start is not None
        # Twilio's ids are untrusted, and this call never got a label of its own: made safe here.
        log.warning(
            "call=%s stream refused: %s (peer=%s)",
            safe(start.call_sid or start.stream_sid, 64),
            why,
            safe(self.peer or "-", 64),
        )
        self._reason = reason
        self.note_end()

    def count_duplicate_start(self) -> None:
        self.count_bad("twilio", "duplicate_start")
        log.warning("call=%s duplicate start ignored", self.call_label)

    def begin_call(self) -> None:
        start = self._start
        assert start is not None
        if CREDENTIAL_PARAMETER in start.custom_parameters:
            # The credential is the server's, not the application's: spent, then out of sight
            # (the report, ``CallStarted``, the greeting function and the logs never see it).
            credential = start.custom_parameters[CREDENTIAL_PARAMETER]
            if self.credentials is not None:
                self.credentials.spend(credential, self._now + self.wall_offset)
            params = {k: v for k, v in start.custom_parameters.items() if k != CREDENTIAL_PARAMETER}
            start = self._start = attrs.evolve(start, custom_parameters=params)
        self.stream_sid = start.stream_sid
        # Twilio's ids are untrusted: the label is in every log line, so made safe once here.
        self.call_label = safe(start.call_sid or start.stream_sid, 64)
        report = self.report
        report.call_sid = start.call_sid
        report.stream_sid = start.stream_sid
        report.custom_parameters = dict(start.custom_parameters)
        self.machine = self._new_machine()
        self._session_started_at = self._now
        self._media_out_at_session = report.media_out
        after = self.config.rotate_after
        if after is not None and self.can_reconnect_sessions:
            self._rotate_at = self._now + after
        self.codec = OpenAIRealtimeCodec(
            dialect=self.config.dialect,
            max_frame_size=self.config.max_openai_frame,
            call_id=self.call_label,
        )
        # One count of the audio bytes: the machine's ledger, which the tracker reads.
        self.tracker = LedgerPlaybackTracker(
            self.machine.playback,
            bytes_per_ms=self.config.lifecycle.audio_bytes_per_ms,
            call_id=self.call_label,
            mark_every_ms=self.config.mark_every_ms,
        )
        log.info(
            "call=%s stream started stream=%s peer=%s params=%s",
            self.call_label,
            safe(self.stream_sid, 64),
            safe(self.peer or "-", 64),
            caller_params(start.custom_parameters, self.config.lifecycle.log_caller_content),
        )
        if self.emit_events:
            fmt = start.media_format
            self.events.append(
                ae.CallStarted(
                    call_sid=start.call_sid,
                    stream_sid=start.stream_sid,
                    custom_parameters=start.custom_parameters,
                    encoding=fmt.encoding if fmt else None,
                    sample_rate=fmt.sample_rate if fmt else None,
                    channels=fmt.channels if fmt else None,
                    at=self._now,
                )
            )
        self.send_session_update()
        greeting = self._greeting(start)
        if greeting is not None:
            # The row's action runs before the state changes: fed to the new machine directly.
            request = ev.RequestResponse(reason="greeting", instructions=greeting)
            self.execute(self.machine.handle(request, self._now))

    def _greeting(self, start: Start) -> str | None:
        greeting = self.config.greeting
        if greeting is None or isinstance(greeting, str):
            return greeting
        try:
            text = greeting(start.custom_parameters)
        except Exception:
            # The application's code: its bug costs the greeting, never the call.
            log.exception("call=%s the greeting function failed: no greeting", self.call_label)
            return None
        if text is not None and not isinstance(text, str):
            log.error("call=%s the greeting function returned %s", self.call_label, type(text))
            return None
        return text

"""One call's observer: application events in, metrics and spans out.

:class:`CallTelemetry` is the :class:`~realtime_fsm.outbox.CallObserver` that a
:class:`~realtime_fsm.telemetry.Telemetry` attaches to each call's
:class:`~realtime_fsm.bridge.CallBridge`.
It is called from the call's task after each input that produced events, never on the per-frame
paths (caller audio, assistant audio), which produce none; what it records per audio frame is
counted once, at the call's end, from the report.  A fault of its own is logged once per call
and never reaches the call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from ..call import (
    AppEvent,
    AudioTruncated,
    BargeIn,
    CallEnded,
    CallStarted,
    PlaybackStarted,
    ProtocolError,
    ResponseCancelling,
    ResponseFinished,
    ResponseRequestGivenUp,
    ResponseStarted,
    SessionLost,
    SessionRestored,
    SessionRotated,
    ToolResult,
    WatchdogFired,
)
from . import labels
from .instruments import Instruments

if TYPE_CHECKING:
    from .tracing import CallSpans

log = logging.getLogger("realtime_fsm.telemetry")

#: Responses whose origin and request time are remembered (for their done and their first
#: audio heard, which comes before or after it), newest kept.
MAX_TRACKED: Final = 16


class CallTelemetry:
    """Metrics and spans of one call (see the module's docstring)."""

    def __init__(self, instruments: Instruments, spans: CallSpans | None, label: str) -> None:
        self._m = instruments
        self._spans = spans
        self._label = label
        self._started_at: float | None = None
        #: Per recent response: (origin, when it was asked for).
        self._requests: dict[str, tuple[str, float]] = {}
        #: A barge-in waiting for its clear to be written: (when, source); or a clear written
        #: before its barge-in was handed out (the driver writes frames, then events).
        self._barge: tuple[float, str] | None = None
        self._clear_at: float | None = None
        self._failed = False

    # ------------------------------------------------------------------ CallObserver

    def events(self, events: Sequence[AppEvent]) -> None:
        for event in events:
            handler = _HANDLERS.get(type(event))
            if handler is None:
                continue
            try:
                handler(self, event)
            except Exception:  # telemetry must never end a call
                if not self._failed:
                    self._failed = True
                    log.exception("call=%s telemetry failed on %s", self._label, event)

    def clear_written(self, now: float) -> None:
        barge = self._barge
        if barge is not None:
            self._barge = None
            self._reaction(now - barge[0], barge[1])
        else:
            self._clear_at = now

    # ----------------------------------------------------------------------- handlers

    def _started(self, event: CallStarted) -> None:
        self._started_at = event.at
        if event.call_sid:
            self._label = event.call_sid[:64]
        self._m.add("realtime_fsm.calls.active", 1)
        if self._spans is not None:
            self._spans.started(event)

    def _response_started(self, event: ResponseStarted) -> None:
        origin = "app" if event.ours else "server"
        base = event.requested_at if event.requested_at is not None else event.at
        if len(self._requests) >= MAX_TRACKED:
            del self._requests[next(iter(self._requests))]
        self._requests[event.response_id] = (origin, base)
        if self._spans is not None:
            self._spans.response_started(event, origin)

    def _response_finished(self, event: ResponseFinished) -> None:
        request = self._requests.get(event.response_id)
        origin = request[0] if request is not None else "unknown"
        self._m.add(
            "realtime_fsm.responses", status=labels.response_status(event.status), origin=origin
        )
        if request is not None and event.first_audio_at is not None:
            self._m.record(
                "realtime_fsm.response.time_to_first_audio",
                event.first_audio_at - request[1],
                origin=origin,
            )
        if event.input_tokens:
            self._m.add("realtime_fsm.tokens", event.input_tokens, type="input")
        if event.output_tokens:
            self._m.add("realtime_fsm.tokens", event.output_tokens, type="output")
        if self._spans is not None:
            self._spans.response_finished(event)

    def _playback_started(self, event: PlaybackStarted) -> None:
        request = self._requests.get(event.response_id)
        if request is not None:
            self._m.record(
                "realtime_fsm.response.time_to_first_playback",
                event.at - request[1],
                origin=request[0],
            )
        if self._spans is not None:
            self._spans.event(
                "audio.first_played", event.at, {"item_id": event.item_id}, event.response_id
            )

    def _cancelling(self, event: ResponseCancelling) -> None:
        if self._spans is not None:
            self._spans.event("response.cancelling", event.at, {}, event.response_id or None)

    def _truncated(self, event: AudioTruncated) -> None:
        self._m.add("realtime_fsm.truncations")
        self._m.add("realtime_fsm.truncated_audio", event.unheard_ms / 1000)
        if self._spans is not None:
            self._spans.event(
                "response.truncated",
                event.at,
                {
                    "item_id": event.item_id,
                    "audio_end_ms": event.audio_end_ms,
                    "unheard_ms": event.unheard_ms,
                },
                event.response_id,
            )

    def _barge_in(self, event: BargeIn) -> None:
        self._m.add("realtime_fsm.barge_ins", source=event.source)
        clear_at = self._clear_at
        self._clear_at = None
        if clear_at is not None and clear_at >= event.at:
            self._reaction(clear_at - event.at, event.source)
        else:
            self._barge = (event.at, event.source)
        if self._spans is not None:
            self._spans.event("barge_in", event.at, {"source": event.source}, event.response_id)

    def _reaction(self, seconds: float, source: str) -> None:
        self._m.record("realtime_fsm.barge_in.reaction", seconds, source=source)

    def _watchdog(self, event: WatchdogFired) -> None:
        self._m.add("realtime_fsm.watchdog.fires", outcome=event.outcome)
        if self._spans is not None:
            self._spans.event(
                "watchdog.fired", event.at, {"outcome": event.outcome}, event.response_id
            )

    def _given_up(self, event: ResponseRequestGivenUp) -> None:
        self._m.add("realtime_fsm.requests.given_up", reason=labels.given_up_kind(event.reason))
        if self._spans is not None:
            self._spans.event(
                "request.given_up",
                event.at,
                {"reason": event.reason, "request_reasons": event.request_reasons},
            )

    def _session_lost(self, event: SessionLost) -> None:
        self._m.add("realtime_fsm.session.losses", reason=labels.session_loss_kind(event.reason))
        if self._spans is not None:
            self._spans.call.add_event(
                "session.lost", {"reason": event.reason}, self._spans.ns(event.at)
            )

    def _session_restored(self, event: SessionRestored) -> None:
        self._m.add("realtime_fsm.session.reconnects")
        self._m.record("realtime_fsm.session.reconnect.duration", event.took)
        if self._spans is not None:
            self._spans.call.add_event(
                "session.restored",
                {"took_s": event.took, "history_items": event.history_items},
                self._spans.ns(event.at),
            )

    def _session_rotated(self, event: SessionRotated) -> None:
        self._m.add("realtime_fsm.session.rotations", moment=event.moment)
        if self._spans is not None:
            self._spans.call.add_event(
                "session.rotated",
                {
                    "moment": event.moment,
                    "waited_s": event.waited,
                    "history_items": event.history_items,
                },
                self._spans.ns(event.at),
            )

    def _protocol_error(self, event: ProtocolError) -> None:
        side = event.side if event.side in ("twilio", "openai") else "other"
        self._m.add("realtime_fsm.protocol_errors", side=side, code=labels.code(event.code))

    def _tool_result(self, event: ToolResult) -> None:
        self._m.add("realtime_fsm.tool_calls", outcome="ok" if event.ok else "error")

    def _ended(self, event: CallEnded) -> None:
        kind = labels.end_kind(event.reason)
        m = self._m
        report = event.report
        m.add("realtime_fsm.calls", end_reason=kind)
        if self._started_at is not None:
            m.add("realtime_fsm.calls.active", -1)
            m.record("realtime_fsm.call.duration", event.at - self._started_at)
            self._started_at = None
        m.add("realtime_fsm.media_frames", report.media_in, direction="up")
        m.add("realtime_fsm.media_frames", report.media_out, direction="down")
        m.add("realtime_fsm.session.reconnect_failures", report.reconnect_failures)
        m.add("realtime_fsm.session.rotation_failures", report.rotation_failures)
        for key, count in report.bad_frames.items():
            side, _, kind_of = key.partition(":")
            m.add("realtime_fsm.bad_frames", count, side=side, kind=kind_of or "other")
        if self._spans is not None:
            self._spans.ended(event, kind, kind in labels.ERROR_END_KINDS)


_HANDLERS: dict[type, Callable[[CallTelemetry, object], None]] = {
    CallStarted: CallTelemetry._started,  # type: ignore[dict-item]
    ResponseStarted: CallTelemetry._response_started,  # type: ignore[dict-item]
    ResponseFinished: CallTelemetry._response_finished,  # type: ignore[dict-item]
    PlaybackStarted: CallTelemetry._playback_started,  # type: ignore[dict-item]
    ResponseCancelling: CallTelemetry._cancelling,  # type: ignore[dict-item]
    AudioTruncated: CallTelemetry._truncated,  # type: ignore[dict-item]
    BargeIn: CallTelemetry._barge_in,  # type: ignore[dict-item]
    WatchdogFired: CallTelemetry._watchdog,  # type: ignore[dict-item]
    ResponseRequestGivenUp: CallTelemetry._given_up,  # type: ignore[dict-item]
    SessionLost: CallTelemetry._session_lost,  # type: ignore[dict-item]
    SessionRestored: CallTelemetry._session_restored,  # type: ignore[dict-item]
    SessionRotated: CallTelemetry._session_rotated,  # type: ignore[dict-item]
    ProtocolError: CallTelemetry._protocol_error,  # type: ignore[dict-item]
    ToolResult: CallTelemetry._tool_result,  # type: ignore[dict-item]
    CallEnded: CallTelemetry._ended,  # type: ignore[dict-item]
}

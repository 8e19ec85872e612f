"""Spans of one call: a span for the call, a child span per response, the steps of the response
machine as span events.

Attributes follow the OpenTelemetry GenAI semantic conventions (status *Development*) as
published in ``open-telemetry/semantic-conventions-genai`` (v0.1.0, its first release apart from
the main conventions, built on semantic-conventions v1.45.0), whose realtime page defines the
span this library emits per response: ``gen_ai.realtime_inference.client``, one server-side
generation within a realtime session, span kind ``CLIENT``, named ``realtime_inference
{gen_ai.request.model}``, with ``gen_ai.operation.name = realtime_inference``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.id``,
``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
``gen_ai.output.type = speech``, ``gen_ai.conversation.id`` and ``error.type``.
``gen_ai.system``, which ``gen_ai.provider.name`` replaced (semantic-conventions v1.37.0), is
set too, for backends still reading the older conventions.

The call span (``realtime_fsm.call``, kind ``SERVER``: it serves Twilio's media stream) has no
GenAI convention of its own; its attributes are ``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.conversation.id`` (Twilio's CallSid: the conversation the
responses belong to, across OpenAI sessions) and this library's ``realtime_fsm.*``.  Event and
attribute names are listed in ``docs/observability.md``.  Caller content (transcripts, custom
parameters) is never put on a span.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from ..call import CallEnded, CallStarted, ResponseFinished, ResponseStarted

AttributeValue = str | int | float | bool | tuple[str, ...]

OPERATION: Final = "gen_ai.operation.name"
PROVIDER: Final = "gen_ai.provider.name"
SYSTEM: Final = "gen_ai.system"
REQUEST_MODEL: Final = "gen_ai.request.model"
RESPONSE_ID: Final = "gen_ai.response.id"
FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
OUTPUT_TYPE: Final = "gen_ai.output.type"
CONVERSATION_ID: Final = "gen_ai.conversation.id"
ERROR_TYPE: Final = "error.type"
#: The operation of a response's span (GenAI realtime spans).
REALTIME_INFERENCE: Final = "realtime_inference"
CALL_SPAN: Final = "realtime_fsm.call"
#: Response spans open at once per call; past it the oldest is ended as unfinished (a server
#: that never says ``response.done`` cannot grow a call's memory).
MAX_OPEN_RESPONSES: Final = 16


class CallSpans:
    """The spans of one call.  Times are the call's clock (``at`` of the events), turned into
    the epoch nanoseconds OpenTelemetry wants with one offset taken when the call began."""

    def __init__(
        self,
        tracer: Tracer,
        *,
        provider: str,
        model: str | None,
        offset_ns: int,
        now: float,
        peer: str,
    ) -> None:
        self._tracer = tracer
        self._offset_ns = offset_ns
        self._common: dict[str, AttributeValue] = {PROVIDER: provider, SYSTEM: provider}
        if model:
            self._common[REQUEST_MODEL] = model
        self._model = model
        attributes = dict(self._common)
        if peer:
            attributes["client.address"] = peer
        self.call: Span = tracer.start_span(
            CALL_SPAN, kind=SpanKind.SERVER, start_time=self.ns(now), attributes=attributes
        )
        self._context = trace.set_span_in_context(self.call)
        #: Response spans not yet ended, by response id, oldest first.
        self._open: dict[str, Span] = {}

    def ns(self, at: float) -> int:
        """Epoch nanoseconds of a time on the call's clock."""
        return int(at * 1e9) + self._offset_ns

    def started(self, event: CallStarted) -> None:
        span = self.call
        if event.call_sid:
            self._common[CONVERSATION_ID] = event.call_sid
            span.set_attribute(CONVERSATION_ID, event.call_sid)
            span.set_attribute("realtime_fsm.call_sid", event.call_sid)
        span.set_attribute("realtime_fsm.stream_sid", event.stream_sid)
        span.add_event("call.started", timestamp=self.ns(event.at))

    def response_started(self, event: ResponseStarted, origin: str) -> None:
        if len(self._open) >= MAX_OPEN_RESPONSES:
            oldest = next(iter(self._open))
            self._end_unfinished(oldest, event.at, "evicted")
        name = f"{REALTIME_INFERENCE} {self._model}" if self._model else REALTIME_INFERENCE
        attributes: dict[str, AttributeValue] = {
            OPERATION: REALTIME_INFERENCE,
            **self._common,
            RESPONSE_ID: event.response_id,
            OUTPUT_TYPE: "speech",
            "realtime_fsm.response.origin": origin,
        }
        if event.reasons:
            attributes["realtime_fsm.response.reasons"] = event.reasons
        span = self._tracer.start_span(
            name,
            context=self._context,
            kind=SpanKind.CLIENT,
            # From the request: the operation as the caller lives it (the wait for the
            # server's ``response.created`` included), as GenAI spans cover an operation from
            # when it is initiated.
            start_time=self.ns(event.requested_at if event.requested_at is not None else event.at),
            attributes=attributes,
        )
        if event.requested_at is not None:
            span.add_event("response.requested", timestamp=self.ns(event.requested_at))
        span.add_event("response.created", timestamp=self.ns(event.at))
        self._open[event.response_id] = span

    def event(
        self,
        name: str,
        at: float,
        attributes: Mapping[str, AttributeValue],
        response_id: str | None = None,
    ) -> None:
        """An event on that response's span while it is open; otherwise on the newest open
        response's span (``response_id`` None), or on the call span."""
        span = self._open.get(response_id) if response_id is not None else None
        if span is None and response_id is None and self._open:
            span = self._open[next(reversed(self._open))]
        if span is None:
            span = self.call
            if response_id is not None:
                attributes = {**attributes, RESPONSE_ID: response_id}
        span.add_event(name, attributes=attributes, timestamp=self.ns(at))

    def response_finished(self, event: ResponseFinished) -> None:
        span = self._open.pop(event.response_id, None)
        if span is None:
            return
        if event.first_audio_at is not None:
            span.add_event("audio.first_sent", timestamp=self.ns(event.first_audio_at))
        done: dict[str, AttributeValue] = {"status": event.status}
        if event.reason:
            done["reason"] = event.reason
        span.add_event("response.done", attributes=done, timestamp=self.ns(event.at))
        span.set_attribute(FINISH_REASONS, (event.reason or event.status,))
        span.set_attribute("realtime_fsm.response.status", event.status)
        span.set_attribute("realtime_fsm.response.heard_ms", event.heard_ms)
        if event.input_tokens is not None:
            span.set_attribute(INPUT_TOKENS, event.input_tokens)
        if event.output_tokens is not None:
            span.set_attribute(OUTPUT_TOKENS, event.output_tokens)
        if event.status == "failed":
            span.set_attribute(ERROR_TYPE, event.reason or "failed")
            span.set_status(Status(StatusCode.ERROR, event.reason or "failed"))
        span.end(end_time=self.ns(event.at))

    def ended(self, event: CallEnded, kind: str, error: bool) -> None:
        for response_id in list(self._open):
            self._end_unfinished(response_id, event.at, "call ended")
        span = self.call
        report = event.report
        span.set_attribute("realtime_fsm.end_reason", event.reason)
        span.set_attribute("realtime_fsm.end_kind", kind)
        span.set_attribute("realtime_fsm.media_in", report.media_in)
        span.set_attribute("realtime_fsm.media_out", report.media_out)
        span.set_attribute("realtime_fsm.reconnects", report.reconnects)
        span.set_attribute("realtime_fsm.bad_frames", sum(report.bad_frames.values()))
        span.add_event(
            "call.ended", attributes={"reason": event.reason}, timestamp=self.ns(event.at)
        )
        if error:
            span.set_attribute(ERROR_TYPE, kind)
            span.set_status(Status(StatusCode.ERROR, event.reason))
        span.end(end_time=self.ns(event.at))

    def _end_unfinished(self, response_id: str, at: float, why: str) -> None:
        span = self._open.pop(response_id)
        span.add_event("response.unfinished", attributes={"why": why}, timestamp=self.ns(at))
        span.set_attribute(FINISH_REASONS, ("unfinished",))
        span.end(end_time=self.ns(at))

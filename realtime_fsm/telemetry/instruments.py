"""The metrics: what each one is (:data:`METRICS`) and where it is recorded (:class:`Instruments`).

Every metric is recorded twice, when both are on, by the same call: through the OpenTelemetry
metrics API (a ``Meter`` from the application's ``MeterProvider``, exported however the
application set it up) and into ``prometheus_client`` metrics of a registry that ``/metrics``
renders.  Names follow each side's conventions: OpenTelemetry's are dotted with the unit as
instrument metadata (``realtime_fsm.barge_in.reaction``, unit ``s``), Prometheus's carry the
base unit and ``_total`` in the name (``realtime_fsm_barge_in_reaction_seconds``,
``realtime_fsm_calls_total``).

Nothing here runs per audio frame: the observer records per call, per response and per event.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from prometheus_client import CollectorRegistry

log = logging.getLogger("realtime_fsm.telemetry")

#: Distinct values one label of one metric may take; past it the value counts as ``other``
#: (a peer inventing error codes cannot grow the number of series without bound).
MAX_LABEL_VALUES: Final = 32

_LATENCY: Final = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_REACTION: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_CALL: Final = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
_RECONNECT: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@attrs.frozen
class Metric:
    """One metric: its OpenTelemetry instrument and its Prometheus metric."""

    #: ``counter`` (only goes up), ``updown`` (a gauge moved by +/-), ``histogram``.
    kind: str
    #: The OpenTelemetry instrument name.
    otel: str
    #: The Prometheus name (counters: without ``_total``, which the exposition adds).
    prometheus: str
    #: The OpenTelemetry unit (UCUM): ``s``, ``{call}``...
    unit: str
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


METRICS: Final = {
    m.otel: m
    for m in (
        Metric(
            "updown",
            "realtime_fsm.calls.active",
            "realtime_fsm_calls_active",
            "{call}",
            "Calls started (Twilio start) and not yet ended.",
        ),
        Metric(
            "counter",
            "realtime_fsm.calls",
            "realtime_fsm_calls",
            "{call}",
            "Calls ended (media streams, started or not), by why they ended.",
            ("end_reason",),
        ),
        Metric(
            "histogram",
            "realtime_fsm.call.duration",
            "realtime_fsm_call_duration_seconds",
            "s",
            "From Twilio's start to the end of the call.",
            buckets=_CALL,
        ),
        Metric(
            "counter",
            "realtime_fsm.responses",
            "realtime_fsm_responses",
            "{response}",
            "Responses ended (response.done), by status and by who asked (app or server).",
            ("status", "origin"),
        ),
        Metric(
            "histogram",
            "realtime_fsm.response.time_to_first_audio",
            "realtime_fsm_response_time_to_first_audio_seconds",
            "s",
            "From the request (our response.create, or the caller's turn the server answers)"
            " to the response's first audio written towards the caller.",
            ("origin",),
            _LATENCY,
        ),
        Metric(
            "histogram",
            "realtime_fsm.response.time_to_first_playback",
            "realtime_fsm_response_time_to_first_playback_seconds",
            "s",
            "From the request to the caller hearing the response's first audio (Twilio"
            " mark echoes, dated back by the audio each confirms).",
            ("origin",),
            _LATENCY,
        ),
        Metric(
            "counter",
            "realtime_fsm.barge_ins",
            "realtime_fsm_barge_ins",
            "{barge_in}",
            "Interruptions of the assistant: playback cleared, the response stopped.",
            ("source",),
        ),
        Metric(
            "histogram",
            "realtime_fsm.barge_in.reaction",
            "realtime_fsm_barge_in_reaction_seconds",
            "s",
            "From the caller's speech start (or text) arriving to the Twilio clear written.",
            ("source",),
            _REACTION,
        ),
        Metric(
            "counter",
            "realtime_fsm.truncations",
            "realtime_fsm_truncations",
            "{item}",
            "Assistant audio items truncated (or deleted) at what the caller heard.",
        ),
        Metric(
            "counter",
            "realtime_fsm.truncated_audio",
            "realtime_fsm_truncated_audio_seconds",
            "s",
            "Assistant audio received but not heard, cut from the conversation by truncates.",
        ),
        Metric(
            "counter",
            "realtime_fsm.watchdog.fires",
            "realtime_fsm_watchdog_fires",
            "{fire}",
            "No-audio watchdog fires: retried (cancelled, asked once more) or suppressed"
            " (inside the cooldown).",
            ("outcome",),
        ),
        Metric(
            "counter",
            "realtime_fsm.requests.given_up",
            "realtime_fsm_requests_given_up",
            "{request}",
            "Response requests that will not be served, by why.",
            ("reason",),
        ),
        Metric(
            "counter",
            "realtime_fsm.session.losses",
            "realtime_fsm_session_losses",
            "{session}",
            "OpenAI sessions lost mid-call, by why.",
            ("reason",),
        ),
        Metric(
            "counter",
            "realtime_fsm.session.reconnects",
            "realtime_fsm_session_reconnects",
            "{session}",
            "Lost OpenAI sessions replaced by a new one (the call went on).",
        ),
        Metric(
            "histogram",
            "realtime_fsm.session.reconnect.duration",
            "realtime_fsm_session_reconnect_duration_seconds",
            "s",
            "From a session's loss to its replacement's socket being open.",
            buckets=_RECONNECT,
        ),
        Metric(
            "counter",
            "realtime_fsm.session.reconnect_failures",
            "realtime_fsm_session_reconnect_failures",
            "{attempt}",
            "Connection attempts that failed while replacing a lost session.",
        ),
        Metric(
            "counter",
            "realtime_fsm.session.rotations",
            "realtime_fsm_session_rotations",
            "{session}",
            "OpenAI sessions replaced before the server's cap, by the moment of the switch.",
            ("moment",),
        ),
        Metric(
            "counter",
            "realtime_fsm.session.rotation_failures",
            "realtime_fsm_session_rotation_failures",
            "{attempt}",
            "Next sessions that could not be opened or configured for a rotation.",
        ),
        Metric(
            "counter",
            "realtime_fsm.protocol_errors",
            "realtime_fsm_protocol_errors",
            "{error}",
            "Malformed or refused frames and server error events, by side and code.",
            ("side", "code"),
        ),
        Metric(
            "counter",
            "realtime_fsm.bad_frames",
            "realtime_fsm_bad_frames",
            "{frame}",
            "Frames dropped as bad (counted with the call's report, at its end), by side and kind.",
            ("side", "kind"),
        ),
        Metric(
            "counter",
            "realtime_fsm.media_frames",
            "realtime_fsm_media_frames",
            "{frame}",
            "Audio frames bridged (at each call's end): up = caller to OpenAI, down = OpenAI"
            " to caller.",
            ("direction",),
        ),
        Metric(
            "counter",
            "realtime_fsm.tool_calls",
            "realtime_fsm_tool_calls",
            "{call}",
            "Function calls answered, by outcome (ok, error).",
            ("outcome",),
        ),
        Metric(
            "counter",
            "realtime_fsm.tokens",
            "realtime_fsm_tokens",
            "{token}",
            "Tokens the server reported used (response.done usage), by type (input, output).",
            ("type",),
        ),
    )
}


class Instruments:
    """The metrics of one :class:`~realtime_fsm.telemetry.Telemetry`, on both sides."""

    def __init__(
        self,
        meter_provider: MeterProvider | None,
        registry: CollectorRegistry | None,
        *,
        version: str,
    ) -> None:
        #: OpenTelemetry instruments by name (empty: no meter).
        self._otel: dict[str, Any] = {}
        #: prometheus_client metrics by OpenTelemetry name (empty: no registry).
        self._prom: dict[str, Any] = {}
        #: Label values seen per (metric, label), to bound them.
        self._seen: dict[tuple[str, str], set[str]] = {}
        if meter_provider is not None:
            meter = meter_provider.get_meter("realtime_fsm", version)
            for metric in METRICS.values():
                self._otel[metric.otel] = _otel_instrument(meter, metric)
        if registry is not None:
            for metric in METRICS.values():
                self._prom[metric.otel] = _prometheus_metric(registry, metric)

    @property
    def enabled(self) -> bool:
        return bool(self._otel or self._prom)

    def add(self, name: str, amount: float = 1, **labels: str) -> None:
        """Count ``amount`` more (a counter), or move a gauge by it."""
        if amount == 0:
            return
        labels = self._bounded(name, labels)
        instrument = self._otel.get(name)
        if instrument is not None:
            instrument.add(amount, labels)
        metric = self._prom.get(name)
        if metric is not None:
            # A gauge takes a negative step too (``updown``); a counter never gets one.
            (metric.labels(**labels) if labels else metric).inc(amount)

    def record(self, name: str, value: float, **labels: str) -> None:
        """One observation of a histogram (a duration in seconds: never negative)."""
        value = max(0.0, value)
        labels = self._bounded(name, labels)
        instrument = self._otel.get(name)
        if instrument is not None:
            instrument.record(value, labels)
        metric = self._prom.get(name)
        if metric is not None:
            (metric.labels(**labels) if labels else metric).observe(value)

    def _bounded(self, name: str, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            seen = self._seen.setdefault((name, key), set())
            if value not in seen:
                if len(seen) >= MAX_LABEL_VALUES:
                    labels[key] = "other"
                    continue
                seen.add(value)
        return labels


def _otel_instrument(meter: Any, metric: Metric) -> Any:
    if metric.kind == "counter":
        return meter.create_counter(metric.otel, metric.unit, metric.description)
    if metric.kind == "updown":
        return meter.create_up_down_counter(metric.otel, metric.unit, metric.description)
    return meter.create_histogram(
        metric.otel,
        metric.unit,
        metric.description,
        explicit_bucket_boundaries_advisory=list(metric.buckets) or None,
    )


def _prometheus_metric(registry: CollectorRegistry, metric: Metric) -> Any:
    from prometheus_client import Counter, Gauge, Histogram

    if metric.kind == "counter":
        return Counter(metric.prometheus, metric.description, metric.labels, registry=registry)
    if metric.kind == "updown":
        return Gauge(metric.prometheus, metric.description, metric.labels, registry=registry)
    return Histogram(
        metric.prometheus,
        metric.description,
        metric.labels,
        registry=registry,
        buckets=(*metric.buckets, float("inf")),
    )

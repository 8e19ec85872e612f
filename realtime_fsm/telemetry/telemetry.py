"""The switch: :class:`Telemetry`, one per process (or per server), attached to every call.

Off by default: a server without ``ServerConfig(telemetry=...)`` attaches nothing, its calls
build no application events for it, and ``/metrics`` is not a route (404).  On, each call gets a
:class:`~realtime_fsm.telemetry.observer.CallTelemetry`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ..outbox import Outbox
from ..webserver import HttpHandler, HttpRequest, HttpResponse
from .instruments import Instruments
from .observer import CallTelemetry

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Tracer, TracerProvider
    from prometheus_client import CollectorRegistry

log = logging.getLogger("realtime_fsm.telemetry")

#: What ``/metrics`` answers without ``prometheus_client`` (the ``prometheus`` extra).
PROMETHEUS_MISSING = (
    "metrics need the prometheus_client package: pip install 'prometheus_client>=0.20'"
    " (the realtime-fsm 'prometheus' extra)\n"
)


def _version() -> str:
    try:
        return version("realtime-fsm")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


class Telemetry:
    """OpenTelemetry spans and metrics, and Prometheus ``/metrics``, for every call.

    ``opentelemetry``: record through the OpenTelemetry API (the ``otel`` extra), with
    ``tracer_provider`` / ``meter_provider`` or, when not given, the globally configured
    ones (``opentelemetry.trace.get_tracer_provider()``...: no-ops until the application sets
    up an SDK).  ``prometheus``: also keep the metrics in ``registry`` (a
    ``prometheus_client.CollectorRegistry``; by default one of this object's own, so that two
    servers in one process do not collide) for ``metrics_path`` on the built-in server and the
    ASGI routes; ``metrics_path=None`` serves none (scrape ``registry`` yourself).  A missing
    package turns its part off with one warning; ``/metrics`` then answers 501.

    ``provider`` is ``gen_ai.provider.name``; ``model`` is ``gen_ai.request.model`` (by default
    the ``model`` of the server's realtime URL)."""

    def __init__(
        self,
        *,
        opentelemetry: bool = True,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        prometheus: bool = True,
        registry: CollectorRegistry | None = None,
        metrics_path: str | None = "/metrics",
        provider: str = "openai",
        model: str | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.metrics_path = metrics_path
        self.tracer: Tracer | None = None
        meter: MeterProvider | None = None
        if opentelemetry or tracer_provider is not None or meter_provider is not None:
            try:
                from opentelemetry import metrics, trace
            except ImportError:
                log.warning(
                    "telemetry: the opentelemetry-api package is missing"
                    " (pip install 'opentelemetry-api>=1.27', the 'otel' extra):"
                    " no spans, no OpenTelemetry metrics"
                )
            else:
                tracers = tracer_provider or trace.get_tracer_provider()
                self.tracer = tracers.get_tracer("realtime_fsm", _version())
                meter = meter_provider or metrics.get_meter_provider()
        #: The registry ``/metrics`` renders; ``None`` without ``prometheus_client``.
        self.registry: CollectorRegistry | None = None
        if prometheus:
            try:
                from prometheus_client import CollectorRegistry
            except ImportError:
                log.warning("telemetry: %s", PROMETHEUS_MISSING.strip())
            else:
                self.registry = registry if registry is not None else CollectorRegistry()
        self.instruments = Instruments(meter, self.registry, version=_version())
        self._missing_logged = False

    def attach(self, bridge: Outbox, *, model: str | None = None) -> CallTelemetry:
        """Watch one call: its events become metrics and spans.  Before ``bridge.run()``."""
        session = bridge.session
        clock: Callable[[], float] = bridge.clock
        spans = None
        if self.tracer is not None:
            from .tracing import CallSpans

            now = clock()
            spans = CallSpans(
                self.tracer,
                provider=self.provider,
                model=self.model or model,
                offset_ns=time.time_ns() - int(now * 1e9),
                now=now,
                peer=session.peer,
            )
        observer = CallTelemetry(self.instruments, spans, session.call_label)
        bridge.observe(observer)
        return observer

    def exposition(self) -> tuple[int, bytes, str]:
        """``(status, body, content type)`` of a ``/metrics`` scrape: the Prometheus text
        format, or 501 (and one log line) without ``prometheus_client``."""
        registry = self.registry
        if registry is None:
            if not self._missing_logged:
                self._missing_logged = True
                log.warning("/metrics: %s", PROMETHEUS_MISSING.strip())
            return 501, PROMETHEUS_MISSING.encode(), "text/plain; charset=utf-8"
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return 200, generate_latest(registry), CONTENT_TYPE_LATEST

    def http_handler(self) -> HttpHandler:
        """The built-in server's ``/metrics`` handler (``realtime_fsm.webserver``)."""

        async def metrics(request: HttpRequest) -> HttpResponse:
            if request.method != "GET":
                return HttpResponse(405, b"method not allowed\n")
            status, body, content_type = self.exposition()
            return HttpResponse(status, body, content_type)

        return metrics

"""Observability: OpenTelemetry spans and metrics, and Prometheus ``/metrics``, per call.

Turn it on with one object::

    telemetry = Telemetry()  # global OpenTelemetry providers, and /metrics
    config = ServerConfig(public_url=..., telemetry=telemetry)

Both halves are optional extras: ``realtime-fsm[otel]`` (``opentelemetry-api``; the
application brings its SDK and exporters) and ``realtime-fsm[prometheus]``
(``prometheus_client``, for ``/metrics``).  What is recorded, with names, units and the
measured cost: ``docs/observability.md``.
"""

from __future__ import annotations

from .instruments import METRICS, Metric
from .observer import CallTelemetry
from .telemetry import Telemetry

__all__ = ["METRICS", "CallTelemetry", "Metric", "Telemetry"]

"""Telemetry of real calls: the built-in server (and the ASGI routes) between the simulator's two
halves over sockets on 127.0.0.1, with the OpenTelemetry SDK's in-memory exporters and
``/metrics`` scraped over HTTP, parsed with ``prometheus_client.parser``.

What is asserted is that the spans and the metrics say what the calls did, as the simulator
recorded it (responses, their statuses and ids, the barge-in, the watchdog's fire) and as the
call's report counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families
from test_asgi import mount
from test_asgi import serving as uvicorn_serving
from test_e2e import (
    CALLER,
    HOST,
    SPEECH_S,
    bridge_config,
    committed,
    long_replies,
    run,
    short_replies,
    simulator,
    wait_finished,
    wait_playing,
    wait_served,
)
from waiting import poller

from realtime_fsm.asgi import TwilioVoiceRoutes
from realtime_fsm.bridge import BridgeConfig, CallReport
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.telemetry import METRICS, Telemetry
from realtime_fsm.telemetry.labels import end_kind, given_up_kind
from realtime_fsm.testing import FakeRealtimeServer, FakeTwilioCaller, ResponseFaults

until = poller(10.0, 0.01)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Otel:
    """An SDK tracer and meter provider with in-memory exporters."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def telemetry(self) -> Telemetry:
        return Telemetry(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)

    def points(self, name: str) -> dict[frozenset[tuple[str, str]], Any]:
        """The data points of one OpenTelemetry instrument, by their attributes."""
        out: dict[frozenset[tuple[str, str]], Any] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            attributes = frozenset((k, str(v)) for k, v in point.attributes.items())
                            out[attributes] = point
        return out


def scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


async def metrics(port: int, path: str = "/metrics") -> Samples:
    status, content_type, text = await asyncio.to_thread(scrape, port, path)
    assert status == 200, text
    assert content_type.startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Server:
    def __init__(self, port: int, reports: list[CallReport]) -> None:
        self.port = port
        self.url = f"ws://{HOST}:{port}/media-stream"
        self.reports = reports


@contextlib.asynccontextmanager
async def serving(
    sim: FakeRealtimeServer, bridge: BridgeConfig, telemetry: Telemetry | None
) -> AsyncIterator[Server]:
    reports: list[CallReport] = []
    # The realtime URL names a model, as OpenAI's does: it becomes gen_ai.request.model.
    config = ServerConfig(
        public_url=f"http://{HOST}",
        realtime_url=f"{sim.url}?model=gpt-realtime",
        bridge=bridge,
        telemetry=telemetry,
    )
    server = await start_server(config, HOST, 0, reports=reports)
    try:
        yield Server(server.sockets[0].getsockname()[1], reports)
    finally:
        server.close()
        await server.wait_closed()


def by_name(spans: tuple[ReadableSpan, ...]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    calls = [s for s in spans if s.name == "realtime_fsm.call"]
    assert len(calls) == 1, [s.name for s in spans]
    responses = [s for s in spans if s.name.startswith("realtime_inference")]
    assert len(responses) + 1 == len(spans), [s.name for s in spans]
    return calls[0], responses


def event_names(span: ReadableSpan) -> list[str]:
    """The span's events in the order they happened."""
    return [e.name for e in sorted(span.events, key=lambda e: e.timestamp)]


def attrs_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# --- a call with a barge-in ---------------------------------------------------------------------


def test_a_call_with_a_barge_in_is_traced_and_counted() -> None:
    otel = Otel()

    async def scenario() -> None:
        sim = simulator(long_replies)
        async with sim, serving(sim, bridge_config(), otel.telemetry()) as server:
            async with FakeTwilioCaller(server.url, CALLER) as caller:
                interrupted = await wait_playing(sim, caller)
                during = await metrics(server.port)
                assert value(during, "realtime_fsm_calls_active") == 1
                assert value(during, "realtime_fsm_calls_total", end_reason="telephony_stop") == 0
                await caller.speak(SPEECH_S)
                await sim.wait_until(lambda: committed(sim) >= 1, 10.0, "the turn's commit")
                await wait_finished(sim, interrupted)
                after = sim.responses.index(interrupted) + 1
                final = await wait_served(sim, caller, after=after)
                # Heard: its first mark's echo has come back (the caller plays at 4x).
                await caller.wait_until(
                    lambda: any(t.tag.ordinal == final.tag for t in caller.tags_played),
                    10.0,
                    "the answer to be heard",
                )
            await until(lambda: bool(server.reports), "the call's report")
            report = server.reports[0]
            scraped = await metrics(server.port)
        check_metrics(scraped, otel, sim, report, interrupted.id, final.id)
        check_spans(otel, sim, caller.call_sid, interrupted.id, final.id)

    run(scenario())


def check_metrics(
    scraped: Samples,
    otel: Otel,
    sim: FakeRealtimeServer,
    report: CallReport,
    interrupted: str,
    final: str,
) -> None:
    assert report.end_reason == "telephony stop"
    assert value(scraped, "realtime_fsm_calls_active") == 0
    assert value(scraped, "realtime_fsm_calls_total", end_reason="telephony_stop") == 1
    assert value(scraped, "realtime_fsm_call_duration_seconds_count") == 1
    # One count per response the server ended, by its status; all asked for by the bridge.
    statuses = Counter(r.status for r in sim.responses if r.finished)
    assert statuses["cancelled"] >= 1 and statuses["completed"] >= 1
    for status, count in statuses.items():
        assert value(scraped, "realtime_fsm_responses_total", status=status, origin="app") == count
    # Every response with audio: its time to first audio; the final one was heard.
    with_audio = sum(1 for r in sim.responses if r.audio_deltas > 0 and r.finished)
    ttfa = value(scraped, "realtime_fsm_response_time_to_first_audio_seconds_count", origin="app")
    assert ttfa == with_audio
    heard = value(
        scraped, "realtime_fsm_response_time_to_first_playback_seconds_count", origin="app"
    )
    assert 1 <= heard <= with_audio
    # First audio within the simulator's first delta delay plus a loaded machine's margin,
    # heard no sooner than sent.
    ttfa_sum = value(scraped, "realtime_fsm_response_time_to_first_audio_seconds_sum", origin="app")
    assert 0 < ttfa_sum / ttfa < 5.0
    # The barge-in: counted, its clear written (the reaction observed once per barge-in).
    barge_ins = value(scraped, "realtime_fsm_barge_ins_total", source="speech")
    assert barge_ins == report.lifecycle_stats.get("barge_ins", barge_ins) >= 1
    reactions = value(scraped, "realtime_fsm_barge_in_reaction_seconds_count", source="speech")
    assert reactions == barge_ins
    assert value(scraped, "realtime_fsm_barge_in_reaction_seconds_sum", source="speech") < 1.0
    assert value(scraped, "realtime_fsm_truncations_total") >= 1
    assert value(scraped, "realtime_fsm_truncated_audio_seconds_total") > 0
    assert value(scraped, "realtime_fsm_media_frames_total", direction="up") == report.media_in
    assert value(scraped, "realtime_fsm_media_frames_total", direction="down") == report.media_out
    assert value(scraped, "realtime_fsm_tokens_total", type="output") > 0
    assert value(scraped, "realtime_fsm_watchdog_fires_total", outcome="retried") == 0
    # The same figures through the OpenTelemetry metrics API.
    calls = otel.points("realtime_fsm.calls")
    assert calls[frozenset({("end_reason", "telephony_stop")})].value == 1
    assert otel.points("realtime_fsm.calls.active")[frozenset()].value == 0
    otel_barge = otel.points("realtime_fsm.barge_in.reaction")[frozenset({("source", "speech")})]
    assert otel_barge.count == reactions
    responses = otel.points("realtime_fsm.responses")
    assert {dict(k)["status"]: p.value for k, p in responses.items()} == dict(statuses)


def check_spans(
    otel: Otel, sim: FakeRealtimeServer, call_sid: str | None, interrupted: str, final: str
) -> None:
    call, responses = by_name(otel.spans.get_finished_spans())
    assert call.kind is SpanKind.SERVER and call.parent is None
    attributes = attrs_of(call)
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-realtime"
    assert attributes["gen_ai.conversation.id"] == call_sid
    assert attributes["realtime_fsm.end_reason"] == "telephony stop"
    assert call.status.status_code is StatusCode.UNSET
    assert {"call.started", "call.ended"} <= set(event_names(call))
    # A child span per response the server created, in the call's trace.
    assert call.context is not None and call.start_time is not None and call.end_time
    assert sorted(attrs_of(s)["gen_ai.response.id"] for s in responses) == sorted(
        r.id for r in sim.responses
    )
    for span in responses:
        assert span.name == "realtime_inference gpt-realtime"
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == call.context.span_id
        assert span.context is not None and span.context.trace_id == call.context.trace_id
        assert span.start_time is not None and span.end_time is not None
        assert call.start_time <= span.start_time <= span.end_time <= call.end_time
        # Events carry the times they happened (first audio sent is known at the done, and
        # told then): all within the span.
        assert all(span.start_time <= e.timestamp <= span.end_time for e in span.events)
        assert attrs_of(span)["gen_ai.operation.name"] == "realtime_inference"
    spans = {attrs_of(s)["gen_ai.response.id"]: s for s in responses}
    cut = spans[interrupted]
    names = event_names(cut)
    assert names[:2] == ["response.requested", "response.created"]
    assert {"barge_in", "response.cancelling", "response.truncated"} <= set(names)
    assert names.index("barge_in") < names.index("response.done")
    done = next(e for e in cut.events if e.name == "response.done")
    assert dict(done.attributes or {})["status"] == "cancelled"
    truncated = next(e for e in cut.events if e.name == "response.truncated")
    cut_at = dict(truncated.attributes or {})
    assert int(cut_at["audio_end_ms"]) >= 0 and int(cut_at["unheard_ms"]) > 0
    assert attrs_of(cut)["gen_ai.response.finish_reasons"] == ("client_cancelled",)
    answer = spans[final]
    assert {"audio.first_sent", "response.done"} <= set(event_names(answer))
    assert attrs_of(answer)["gen_ai.response.finish_reasons"] == ("completed",)
    assert attrs_of(answer)["gen_ai.usage.output_tokens"] > 0


# --- the watchdog -------------------------------------------------------------------------------


def test_a_watchdog_fire_is_a_span_event_and_counted() -> None:
    otel = Otel()

    async def scenario() -> None:
        sim = simulator(short_replies)
        sim.fault_next_response(
            ResponseFaults(silent=True, hold_open_s=None, cancel_ack_delay_s=0.3)
        )
        async with sim, serving(sim, bridge_config(), otel.telemetry()) as server:
            async with FakeTwilioCaller(server.url, CALLER) as caller:
                await wait_served(sim, caller, after=1)
            await until(lambda: bool(server.reports), "the call's report")
            scraped = await metrics(server.port)
        silent, retry = sim.responses[0], sim.responses[1]
        assert value(scraped, "realtime_fsm_watchdog_fires_total", outcome="retried") == 1
        assert value(scraped, "realtime_fsm_responses_total", status="cancelled", origin="app") == 1
        # The silent response had no audio: no time to first audio for it.
        ttfa = value(
            scraped, "realtime_fsm_response_time_to_first_audio_seconds_count", origin="app"
        )
        assert ttfa == sum(1 for r in sim.responses if r.audio_deltas and r.finished)
        _call, responses = by_name(otel.spans.get_finished_spans())
        spans = {attrs_of(s)["gen_ai.response.id"]: s for s in responses}
        names = event_names(spans[silent.id])
        assert names.index("watchdog.fired") < names.index("response.cancelling")
        fired = next(e for e in spans[silent.id].events if e.name == "watchdog.fired")
        assert dict(fired.attributes or {}) == {"outcome": "retried"}
        assert "audio.first_sent" not in names
        assert attrs_of(spans[retry.id])["realtime_fsm.response.reasons"] == ("no_audio_retry",)
        assert "watchdog.fired" not in event_names(spans[retry.id])
        points = otel.points("realtime_fsm.watchdog.fires")
        assert points[frozenset({("outcome", "retried")})].value == 1

    run(scenario())


def test_a_rotation_is_counted_and_a_span_event() -> None:
    """A session replaced before the cap, at a quiet moment: counted by moment, on the call
    span as ``session.rotated``; no loss, no reconnect."""
    otel = Otel()

    async def scenario() -> None:
        sim = simulator(short_replies)
        config = attrs.evolve(bridge_config(), rotate_after=0.5)
        async with sim, serving(sim, config, otel.telemetry()) as server:
            async with FakeTwilioCaller(server.url, CALLER) as caller:
                await wait_served(sim, caller, after=0)
                await sim.wait_until(
                    lambda: len(sim.connections) >= 2 and sim.connections[0].closed,
                    10.0,
                    "the first session replaced",
                )
            await until(lambda: bool(server.reports), "the call's report")
            scraped = await metrics(server.port)
        report = server.reports[0]
        assert report.rotations >= 1 and report.reconnects == 0
        rotated = value(scraped, "realtime_fsm_session_rotations_total", moment="quiet")
        assert rotated == report.rotations
        assert value(scraped, "realtime_fsm_session_reconnects_total") == 0
        call, _responses = by_name(otel.spans.get_finished_spans())
        events = [e for e in call.events if e.name == "session.rotated"]
        assert len(events) == report.rotations
        assert dict(events[0].attributes or {})["moment"] == "quiet"
        points = otel.points("realtime_fsm.session.rotations")
        assert points[frozenset({("moment", "quiet")})].value == report.rotations

    run(scenario())


# --- the ASGI routes ----------------------------------------------------------------------------


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
def test_asgi_routes_serve_metrics_during_and_after_a_call(framework: str) -> None:
    telemetry = Telemetry(opentelemetry=False)

    async def scenario() -> None:
        reports: list[CallReport] = []
        sim = simulator(short_replies)
        async with sim:
            config = ServerConfig(
                public_url="https://example.ngrok.app/voice",
                realtime_url=sim.url,
                bridge=bridge_config(),
                telemetry=telemetry,
            )
            voice = TwilioVoiceRoutes(config, reports=reports)
            async with uvicorn_serving(mount(voice, framework)) as port:
                url = f"ws://{HOST}:{port}/voice/media-stream"
                async with FakeTwilioCaller(url, CALLER) as caller:
                    await wait_served(sim, caller, after=0)
                    during = await metrics(port)  # the path as configured: not under /voice
                    assert value(during, "realtime_fsm_calls_active") == 1
                    done = value(
                        during, "realtime_fsm_responses_total", status="completed", origin="app"
                    )
                    assert done == 1
                await until(lambda: bool(reports), "the call's report")
                after = await metrics(port)
        assert value(after, "realtime_fsm_calls_active") == 0
        assert value(after, "realtime_fsm_calls_total", end_reason="telephony_stop") == 1
        assert (
            value(after, "realtime_fsm_media_frames_total", direction="up") == reports[0].media_in
        )

    run(scenario())


# --- switches -----------------------------------------------------------------------------------


def test_off_by_default_no_route_and_no_events_built() -> None:
    async def scenario() -> None:
        sim = simulator(short_replies)
        bridges: list[Any] = []
        async with sim:
            config = ServerConfig(public_url=f"http://{HOST}", realtime_url=sim.url)
            server = await start_server(config, HOST, 0, on_bridge=bridges.append)
            try:
                port = server.sockets[0].getsockname()[1]
                status, _type, _body = await asyncio.to_thread(scrape, port)
                assert status == 404
                async with FakeTwilioCaller(f"ws://{HOST}:{port}/media-stream", CALLER):
                    await until(lambda: bool(bridges), "the call")
                    assert bridges[0].session.emit_events is False
                    assert bridges[0]._observer is None
            finally:
                server.close()
                await server.wait_closed()

    run(scenario())


def test_without_prometheus_client_metrics_answers_501_and_logs_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="realtime_fsm.telemetry")
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    otel = Otel()
    telemetry = otel.telemetry()
    assert telemetry.registry is None

    async def scenario() -> None:
        sim = simulator(short_replies)
        async with sim, serving(sim, bridge_config(), telemetry) as server:
            for _ in range(3):
                status, _type, body = await asyncio.to_thread(scrape, server.port)
                assert status == 501 and "pip install 'prometheus_client>=0.20'" in body
            async with FakeTwilioCaller(server.url, CALLER) as caller:
                await wait_served(sim, caller, after=0)
            await until(lambda: bool(server.reports), "the call's report")
        # The OpenTelemetry half still records.
        assert otel.points("realtime_fsm.calls")[frozenset({("end_reason", "telephony_stop")})]

    run(scenario())
    lines = [r for r in caplog.records if "/metrics" in r.getMessage()]
    assert len(lines) == 1


def test_prometheus_only_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    telemetry = Telemetry()
    assert telemetry.tracer is None and telemetry.registry is not None

    async def scenario() -> None:
        sim = simulator(short_replies)
        async with sim, serving(sim, bridge_config(), telemetry) as server:
            for calls in (1, 2):
                async with FakeTwilioCaller(server.url, CALLER) as caller:
                    await wait_served(sim, caller, after=len(sim.responses))
                await until(lambda n=calls: len(server.reports) == n, "the call's report")
                scraped = await metrics(server.port)
                assert value(scraped, "realtime_fsm_calls_total", end_reason="telephony_stop") == (
                    calls
                )
                completed = value(
                    scraped, "realtime_fsm_responses_total", status="completed", origin="app"
                )
                assert completed == sum(1 for r in sim.responses if r.status == "completed")

    run(scenario())


# --- names and labels ---------------------------------------------------------------------------


def test_metric_names_follow_each_sides_conventions() -> None:
    for name, metric in METRICS.items():
        assert name == metric.otel and name.startswith("realtime_fsm.")
        assert metric.prometheus.startswith("realtime_fsm_")
        assert not metric.prometheus.endswith("_total")  # prometheus_client adds it
        if metric.unit == "s":
            assert metric.prometheus.endswith("_seconds"), metric
        else:
            assert metric.unit.startswith("{"), metric  # a count of things: no unit suffix
        assert metric.kind != "histogram" or metric.buckets


def test_labels_are_a_few_words_never_free_text() -> None:
    assert end_kind("telephony stop") == "telephony_stop"
    assert end_kind("telephony closed before start") == "no_start"
    assert end_kind("openai session lost (openai closed) after 3 reconnects") == "openai_lost"
    assert end_kind("openai error invalid_api_key") == "openai_error"
    assert end_kind("bad input: too many malformed frames from twilio") == "bad_input"
    assert end_kind("the caller asked for a human, Jane Doe") == "application"
    assert given_up_kind("rejected:conversation_already_has_active_response") == "rejected"
    assert given_up_kind("closed:telephony stop") == "closed"
    assert given_up_kind("something new") == "other"
    telemetry = Telemetry(opentelemetry=False)
    for n in range(50):  # a peer inventing error codes
        telemetry.instruments.add("realtime_fsm.protocol_errors", side="openai", code=f"c{n}")
    assert telemetry.registry is not None
    codes = {
        s.labels["code"]
        for family in text_string_to_metric_families(telemetry.exposition()[1].decode())
        for s in family.samples
        if s.name == "realtime_fsm_protocol_errors_total"
    }
    assert len(codes) == 33 and "other" in codes


def test_every_metric_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "observability.md").read_text()
    for metric in METRICS.values():
        suffix = "_total" if metric.kind == "counter" else ""
        assert f"`{metric.prometheus}{suffix}`" in doc, metric.prometheus
        assert f"`{metric.otel}`" in doc, metric.otel

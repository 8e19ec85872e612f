"""Capacity, health and the graceful drain of one server process, in process.

Unit: the admission ledger (:mod:`realtime_fsm.admission`) admits at the webhook, holds the
call's place until its stream starts, serves a stream that proves another worker admitted it,
refuses the rest while full or draining; the call machine's ``start`` row refuses a stream not
admitted (1013, no OpenAI session) and ``going_away`` ends a call with 1001.  Over real sockets
on 127.0.0.1 (the built-in server and the ASGI routes under uvicorn, the simulator as OpenAI):
``/healthz`` and ``/readyz``; a full server answers the webhook 503 with ``Retry-After`` (or a
busy ``<Reject>``); the race of a webhook admitted just before the drain and its stream arriving
after it (served), beside a stream no webhook admitted (refused); the drain deadline ending a
call with 1001 and ``"server draining"``; uvicorn drained by :class:`DrainingServer` while plain
uvicorn cuts the call with 1012.  The drain in a real process on SIGTERM, and several workers:
``tests/test_serve_process.py``.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from waiting import poller

from realtime_fsm.admission import Admission
from realtime_fsm.asgi import TwilioVoiceRoutes
from realtime_fsm.asgi_drain import DrainingServer
from realtime_fsm.bridge import BridgeConfig, CallBridge, CallReport
from realtime_fsm.call import CallSession
from realtime_fsm.drain import CallTracker, unavailable
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.table import ENDING, RUNNING
from realtime_fsm.testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ScriptedReply,
    WebhookRefused,
    dial,
)

HOST = "127.0.0.1"
PUBLIC_URL = "https://example.ngrok.app"
TOKEN = "twilio-token-DO-NOT-LOG-77aa"
NOW = 1_800_000_000.0
CALLER = FakeCallerConfig(speed=4.0, seed=9)

until = poller(15.0, 0.01)


# --- the ledger on its own ----------------------------------------------------------------------


def test_the_webhook_holds_a_place_that_the_stream_takes() -> None:
    adm = Admission(max_calls=2, hold=60)
    assert adm.ready(NOW) and adm.idle(NOW)
    assert adm.admit_webhook("CA1", NOW) is None
    assert adm.admit_webhook("CA2", NOW) is None
    refusal = adm.admit_webhook("CA3", NOW)
    assert refusal is not None and refusal.startswith("full")
    assert not adm.ready(NOW) and not adm.idle(NOW)
    # The held calls' streams are served; another one, unproven, is not.
    assert adm.stream_refusal("CA1", proven=False, now=NOW + 1) is None
    assert adm.stream_refusal("CA9", proven=False, now=NOW + 1) is not None
    adm.enter("CA1", NOW + 1)
    assert (adm.active, adm.held(NOW + 1)) == (1, 1)
    # A place whose stream never comes is given back when its hold expires.
    assert adm.held(NOW + 60) == 0 and adm.ready(NOW + 60)
    adm.leave()
    assert adm.idle(NOW + 60)
    assert adm.snapshot(NOW + 60)["calls_started"] == 1
    assert adm.snapshot(NOW + 60)["refused_webhooks"] == 1


def test_a_draining_process_serves_what_it_admitted_and_what_proves_admission() -> None:
    adm = Admission(max_calls=1)
    assert adm.admit_webhook("CA1", NOW) is None
    adm.drain()
    assert adm.admit_webhook("CA2", NOW) == "draining"
    assert not adm.ready(NOW) and not adm.idle(NOW)  # CA1's stream is still on its way
    assert adm.stream_refusal("CA1", proven=False, now=NOW) is None
    assert adm.stream_refusal("CA7", proven=False, now=NOW) == "draining"
    # A valid credential: another worker's webhook admitted it; served even past the bound.
    assert adm.stream_refusal("CA7", proven=True, now=NOW) is None
    adm.enter("CA1", NOW)
    adm.enter("CA7", NOW)
    assert (adm.active, adm.over_capacity) == (2, 1)
    adm.leave()
    adm.leave()
    assert adm.idle(NOW)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Admission(max_calls=0),
        lambda: Admission(hold=0),
        lambda: ServerConfig(public_url=PUBLIC_URL, max_calls=-1),
        lambda: ServerConfig(public_url=PUBLIC_URL, drain_timeout=0),
        lambda: ServerConfig(public_url=PUBLIC_URL, when_unavailable="ignore"),
    ],
)
def test_bad_settings_are_refused_at_construction(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


# --- the call machine ----------------------------------------------------------------------------


def start_frame(call: str) -> str:
    stream = "MZ" + "e" * 32
    start = {
        "streamSid": stream,
        "callSid": call,
        "accountSid": "AC" + "a" * 32,
        "tracks": ["inbound"],
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    return json.dumps(
        {"event": "start", "sequenceNumber": "1", "streamSid": stream, "start": start}
    )


def test_a_start_not_admitted_ends_with_1013_and_a_served_one_holds_its_place() -> None:
    adm = Admission(max_calls=1)
    assert adm.admit_webhook("CA1", 0.0) is None
    adm.drain()
    refused = CallSession(now=0.0, can_reconnect=True, admission=adm)
    refused.twilio_frame(start_frame("CA2"), 0.0)
    assert refused.call_state is ENDING
    assert (refused.close_code, refused.end_reason) == (1013, "not admitted: draining")
    assert refused.out_openai == [] and adm.refused_streams == 1
    served = CallSession(now=0.0, can_reconnect=True, admission=adm)
    served.twilio_frame(start_frame("CA1"), 0.0)
    assert served.call_state is RUNNING and adm.active == 1
    served.go_away(1.0)
    assert served.call_state is ENDING
    assert (served.close_code, served.end_reason) == (1001, "server draining")
    served.closed(2.0)
    assert adm.active == 0 and adm.idle(2.0)
    served.go_away(3.0)  # nothing after the end
    assert served.report.end_reason == "server draining"


# --- over sockets: the built-in server -----------------------------------------------------------


def run(body: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    async def main() -> None:
        await asyncio.wait_for(body(), timeout)

    asyncio.run(main())


def simulator() -> FakeRealtimeServer:
    config = FakeRealtimeConfig(realtime_factor=5.0, first_delta_delay_s=0.02, seed=4)
    return FakeRealtimeServer(config, replies=[ScriptedReply("Hello there.", audio_ms=400)])


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET on a fresh connection: status, headers (lower-case names), body."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@asynccontextmanager
async def builtin(
    ai: FakeRealtimeServer, reports: list[CallReport], **changes: Any
) -> AsyncIterator[tuple[int, CallTracker]]:
    config = ServerConfig(
        public_url=PUBLIC_URL,
        realtime_url=ai.url,
        bridge=BridgeConfig(greeting="Say hello."),
        **changes,
    )
    tracker = CallTracker(config.admission(), worker="t")
    server = await start_server(config, HOST, 0, reports=reports, tracker=tracker)
    try:
        yield server.sockets[0].getsockname()[1], tracker
    finally:
        server.close()
        await server.wait_closed()


def test_health_readiness_and_a_full_server_failing_the_webhook_over() -> None:
    reports: list[CallReport] = []

    async def body() -> None:
        async with simulator() as ai, builtin(ai, reports, max_calls=1) as (port, _):
            status, _, data = await http_get(port, "/healthz")
            assert status == 200 and json.loads(data)["status"] == "alive"
            status, _, data = await http_get(port, "/readyz")
            assert status == 200 and json.loads(data)["ready"] is True
            dialed = await dial(f"http://{HOST}:{port}", public_url=PUBLIC_URL)
            # The admitted webhook holds the one place: not ready, and the next webhook is
            # refused with 503 + Retry-After so that Twilio requests the fallback URL.
            status, _, data = await http_get(port, "/readyz")
            figures = json.loads(data)
            assert status == 503 and figures["held"] == 1 and figures["worker"] == "t"
            with pytest.raises(WebhookRefused) as refused:
                await dial(f"http://{HOST}:{port}", public_url=PUBLIC_URL)
            assert refused.value.status == 503
            status, headers, _ = await http_get(port, "/incoming-call?CallSid=CA2")  # a GET hook
            assert status == 503 and headers["retry-after"] == "5"
            url = f"ws://{HOST}:{port}/media-stream"
            async with FakeTwilioCaller(url, dialed.caller_config(CALLER)) as caller:
                await caller.wait_for_audio(100, timeout=15)
                assert json.loads((await http_get(port, "/readyz"))[2])["active_calls"] == 1
            await until(lambda: reports, "the report")
            assert json.loads((await http_get(port, "/readyz"))[2])["ready"] is True

    run(body)
    assert reports[0].end_reason == "telephony stop"


def test_the_refusal_carries_retry_after_or_is_a_busy_reject() -> None:
    answer = unavailable(ServerConfig(public_url=PUBLIC_URL).when_unavailable, "draining")
    assert answer.status == 503 and ("Retry-After", "5") in answer.headers
    busy = unavailable("busy", "full")
    assert busy.status == 200 and b'<Reject reason="busy" />' in busy.body

    async def body() -> None:
        async with simulator() as ai, builtin(ai, [], when_unavailable="busy") as (port, tracker):
            tracker.drain(30)
            with pytest.raises(WebhookRefused) as refused:  # no <Connect><Stream>: refused
                await dial(f"http://{HOST}:{port}", public_url=PUBLIC_URL)
            assert refused.value.status == 200 and b"<Reject" in refused.value.body
            tracker.cut_now()

    run(body)


def test_a_webhook_admitted_before_the_drain_gets_its_stream_served_after_it() -> None:
    """The race the drain must win: Twilio got our TwiML, then the drain began, then the
    stream arrives.  Served (no half-started call); a stream no webhook admitted is refused
    with 1013 before any OpenAI session; the drain ends once the admitted call has."""
    reports: list[CallReport] = []

    async def body() -> None:
        async with simulator() as ai, builtin(ai, reports) as (port, tracker):
            server = f"http://{HOST}:{port}"
            dialed = await dial(server, public_url=PUBLIC_URL)
            drain = tracker.drain(60)
            status, _, data = await http_get(port, "/readyz")
            assert status == 503 and json.loads(data)["draining"] is True
            with pytest.raises(WebhookRefused) as refused:
                await dial(server, public_url=PUBLIC_URL)
            assert refused.value.status == 503
            url = f"ws://{HOST}:{port}/media-stream"
            stranger = FakeTwilioCaller(url, CALLER)  # no webhook admitted this call
            await stranger.start()
            await stranger.wait_closed(10)
            assert stranger.close_code == 1013 and ai.connections == []
            async with FakeTwilioCaller(url, dialed.caller_config(CALLER)) as caller:
                await caller.wait_for_audio(100, timeout=15)
                assert not drain.done()
            report = await asyncio.wait_for(drain, 15)
            assert (report.calls_at_start, report.cut_at_deadline) == (0, 0)

    run(body)
    reasons = sorted(r.end_reason or "" for r in reports)
    assert reasons == ["not admitted: draining", "telephony stop"]


def test_the_drain_deadline_ends_the_call_with_1001_going_away() -> None:
    reports: list[CallReport] = []

    async def body() -> None:
        async with simulator() as ai, builtin(ai, reports) as (port, tracker):
            url = f"ws://{HOST}:{port}/media-stream"
            async with FakeTwilioCaller(url, CALLER) as caller:
                await caller.wait_for_audio(100, timeout=15)
                report = await asyncio.wait_for(tracker.drain(0.5), 20)
                await caller.wait_closed(10)
                assert caller.close_code == 1001
            assert (report.calls_at_start, report.cut_at_deadline, report.not_closed) == (1, 1, 0)
            await until(lambda: ai.open_connections() == [], "the OpenAI side closed")

    run(body)
    assert [r.end_reason for r in reports] == ["server draining"]


# --- over sockets: the ASGI routes under uvicorn -------------------------------------------------


@asynccontextmanager
async def uvicorn_serving(
    voice: TwilioVoiceRoutes, *, draining: bool
) -> AsyncIterator[tuple[int, uvicorn.Server, asyncio.Task[None]]]:
    app = Starlette(routes=[*voice.routes, *voice.health_routes])
    config = uvicorn.Config(app, host=HOST, port=0, log_config=None, lifespan="off")
    server = DrainingServer(config, voice) if draining else uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done(), "uvicorn to start")
        yield server.servers[0].sockets[0].getsockname()[1], server, task
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


def test_uvicorn_drained_by_draining_server_lets_the_call_finish() -> None:
    reports: list[CallReport] = []

    async def body() -> None:
        async with simulator() as ai:
            voice = TwilioVoiceRoutes(
                ServerConfig(
                    public_url=PUBLIC_URL,
                    realtime_url=ai.url,
                    bridge=BridgeConfig(greeting="Say hello."),
                    drain_timeout=30,
                ),
                reports=reports,
            )
            async with uvicorn_serving(voice, draining=True) as (port, server, task):
                assert (await http_get(port, "/readyz"))[0] == 200
                dialed = await dial(f"http://{HOST}:{port}", public_url=PUBLIC_URL)
                url = f"ws://{HOST}:{port}/media-stream"
                async with FakeTwilioCaller(url, dialed.caller_config(CALLER)) as caller:
                    await caller.wait_for_audio(20, timeout=15)
                    server.handle_exit(signal.SIGTERM, None)  # what uvicorn's handler calls
                    await until(lambda: voice.tracker.draining, "the drain")
                    status, _, data = await http_get(port, "/readyz")
                    assert status == 503 and json.loads(data)["draining"]
                    with pytest.raises(WebhookRefused):
                        await dial(f"http://{HOST}:{port}", public_url=PUBLIC_URL)
                    # The call goes on: the caller speaks and hears a reply after the signal.
                    heard = len(caller.media_received)
                    await caller.speak(0.3)
                    await caller.wait_until(lambda: len(caller.media_received) > heard, 15)
                    assert not caller.closed and not task.done()
                await asyncio.wait_for(task, 20)  # uvicorn stops once the call has ended
                assert server.reports[0].cut_at_deadline == 0

    run(body)
    assert [r.end_reason for r in reports] == ["telephony stop"]


def test_plain_uvicorn_cuts_the_call_with_1012_on_its_signal() -> None:
    """Why :class:`DrainingServer` exists: uvicorn fails every WebSocket with 1012 before the
    app's lifespan shutdown, where a ``drain()`` would come too late."""

    async def body() -> None:
        async with simulator() as ai:
            voice = TwilioVoiceRoutes(
                ServerConfig(
                    public_url=PUBLIC_URL,
                    realtime_url=ai.url,
                    bridge=BridgeConfig(greeting="Say hello."),
                )
            )
            async with uvicorn_serving(voice, draining=False) as (port, server, _):
                url = f"ws://{HOST}:{port}/media-stream"
                async with FakeTwilioCaller(url, CALLER) as caller:
                    await caller.wait_for_audio(20, timeout=15)
                    # What its signal handler does (calling the handler itself would make
                    # uvicorn re-raise the signal at exit, in this test process).
                    server.should_exit = True
                    await caller.wait_closed(15)
                    assert caller.close_code == 1012

    run(body)


def test_the_call_is_tracked_until_it_ends() -> None:
    bridges: list[CallBridge] = []

    async def body() -> None:
        async with simulator() as ai, builtin(ai, []) as (port, tracker):
            url = f"ws://{HOST}:{port}/media-stream"
            async with FakeTwilioCaller(url, CALLER) as caller:
                await caller.wait_for_audio(20, timeout=15)
                bridges.extend(tracker.live())
                assert len(bridges) == 1 and not tracker.idle()
            await until(tracker.idle, "the tracker idle")

    run(body)

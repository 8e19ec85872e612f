"""The ASGI driver (``realtime_fsm.asgi``) in FastAPI and Starlette apps, served by uvicorn.

Every call runs over real sockets on 127.0.0.1: uvicorn (port 0, in-process) serves an app with
the routes mounted, a :class:`~realtime_fsm.testing.FakeTwilioCaller` (or a bare websockets
client, to hang up in ways the caller does not) dials ``/media-stream``, and the bridge talks to
a :class:`~realtime_fsm.testing.FakeRealtimeServer`.  What matters to a user is asserted from
the outside: the caller hears the reply; a hang-up at any point is a normal end (its reason a
telephony close or stop, no ERROR record, no traceback from uvicorn) and leaves nothing open;
signatures are checked like the built-in server does.  Tests wait on conditions, each bounded.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import logging
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Coroutine, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import pytest
import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.types import ASGIApp
from starlette.websockets import WebSocket
from twilio.request_validator import RequestValidator
from waiting import poller
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.protocol import State

from realtime_fsm.asgi import StarletteSocket, TelephonyDisconnected, TwilioVoiceRoutes
from realtime_fsm.bridge import BridgeConfig, CallBridge, CallReport
from realtime_fsm.credentials import CREDENTIAL_PARAMETER, StreamCredentials
from realtime_fsm.server import ServerConfig, twiml
from realtime_fsm.testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ScriptedReply,
    dial,
    parse_twiml,
)

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
PUBLIC_URL = "https://example.ngrok.app"
WEBHOOK_URL = f"{PUBLIC_URL}/incoming-call"
STREAM_URL = "wss://example.ngrok.app/media-stream"
TOKEN = "twilio-token-DO-NOT-LOG-5c1f"
GREETING = "Greet the caller."
CALLER = FakeCallerConfig(speed=4.0, seed=3, custom_parameters={"name": "Ada"})
until = poller(10.0, 0.01)

JSON = dict[str, Any]


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 30))


def simulator() -> FakeRealtimeServer:
    config = FakeRealtimeConfig(realtime_factor=5.0, first_delta_delay_s=0.02, seed=5)
    return FakeRealtimeServer(config, replies=[ScriptedReply("Hello, Ada!", audio_ms=800)])


def server_config(realtime_url: str, **changes: Any) -> ServerConfig:
    fields: dict[str, Any] = {
        "public_url": PUBLIC_URL,
        "realtime_url": realtime_url,
        "bridge": BridgeConfig(greeting=GREETING),
    }
    fields.update(changes)
    return ServerConfig(**fields)


def mount(voice: TwilioVoiceRoutes, framework: str) -> ASGIApp:
    """The two ways the docs give: extend a FastAPI app's routes, or Starlette's ``routes=``."""
    if framework == "fastapi":
        app = FastAPI()
        app.router.routes.extend(voice.routes)
        return app
    return Starlette(routes=voice.routes)


@asynccontextmanager
async def serving(app: ASGIApp, ws: str = "auto") -> AsyncIterator[int]:
    """uvicorn on 127.0.0.1 in this loop; yields the port.  ``log_config=None``: uvicorn's own
    records (an ``Exception in ASGI application``) reach the root logger and ``caplog``.
    ``ws``: uvicorn's WebSocket implementation (each reports a hang-up its own way)."""
    config = uvicorn.Config(
        app, host=HOST, port=0, log_config=None, lifespan="off", ws=ws, ws_max_size=1 << 20
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done(), "uvicorn to start")
        if task.done():
            await task
            raise AssertionError("uvicorn stopped before it started")
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


def http(
    port: int, path: str, *, data: JSON | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    """One plain HTTP request (in a thread: urllib blocks)."""
    body = urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=body)
    if body is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


async def ahttp(port: int, path: str, **kw: Any) -> tuple[int, str, bytes]:
    return await asyncio.to_thread(http, port, path, **kw)


def sign(url: str, params: JSON | None = None) -> str:
    return str(RequestValidator(TOKEN).compute_signature(url, params or {}))


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def start_frames(stream: str = "MZ" + "0" * 32, call: str = "CA" + "1" * 32) -> list[str]:
    start = {
        "streamSid": stream,
        "callSid": call,
        "accountSid": "AC" + "2" * 32,
        "tracks": ["inbound"],
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    return [
        json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": stream}),
    ]


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


async def finished(ai: FakeRealtimeServer, reports: list[CallReport], count: int = 1) -> None:
    """Wait until ``count`` calls reported and the fake OpenAI server saw every socket close."""
    await until(lambda: len(reports) >= count, "the call's report")
    await ai.wait_until(lambda: not ai.open_connections(), 10, "OpenAI sockets closed")


# --- whole calls --------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
def test_whole_call_answered_and_stop_ends_it_normally(
    framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        reports: list[CallReport] = []
        bridges: list[CallBridge] = []
        async with simulator() as ai:
            voice = TwilioVoiceRoutes(
                server_config(ai.url), reports=reports, on_call=bridges.append
            )
            async with serving(mount(voice, framework)) as port:
                url = f"ws://{HOST}:{port}/media-stream"
                async with FakeTwilioCaller(url, CALLER) as caller:
                    await ai.wait_until(lambda: bool(ai.responses), 10, "the greeting")
                    tag = ai.responses[0].tag
                    await caller.wait_until(
                        lambda: any(t.tag.ordinal == tag for t in caller.tags_played),
                        10,
                        "the caller to hear the reply",
                    )
                # leaving the block: ``stop``, then the caller closes its socket
                await finished(ai, reports)
                assert caller.closed and caller.stop_sent
        assert len(bridges) == 1 and bridges[0].report is reports[0]
        assert reports[0].end_reason == "telephony stop"
        assert reports[0].call_sid == caller.call_sid
        assert caller.violations == []
        assert ai.error_counts == {}

    run(scenario())
    assert errors(caplog) == []


#: uvicorn's two WebSocket implementations that need no extra package: "auto" picks the first;
#: older uvicorns picked the second, deprecated now (its warnings are not ours).
WS_IMPLS = [
    "websockets-sansio",
    pytest.param(
        "websockets",
        marks=[
            pytest.mark.filterwarnings("ignore::DeprecationWarning"),
            pytest.mark.filterwarnings("ignore:.*deprecated"),  # UvicornDeprecationWarning
        ],
    ),
]


@pytest.mark.parametrize("ws_impl", WS_IMPLS)
@pytest.mark.parametrize("how", ["close frame", "dropped connection"])
def test_caller_hanging_up_without_stop_is_a_normal_end(
    how: str, ws_impl: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The new user's bug: a hang-up raised ``WebSocketDisconnect`` into the bridge, which
    ended every call as ``internal error`` with a traceback."""
    caplog.set_level(logging.DEBUG, logger="realtime_fsm")

    async def scenario() -> None:
        reports: list[CallReport] = []
        async with simulator() as ai:
            voice = TwilioVoiceRoutes(server_config(ai.url), reports=reports)
            async with serving(mount(voice, "fastapi"), ws_impl) as port:
                ws = await connect(f"ws://{HOST}:{port}/media-stream")
                for frame in start_frames():
                    await ws.send(frame)
                first = json.loads(await ws.recv())  # the greeting is playing
                assert first["event"] in ("media", "mark")
                if how == "close frame":
                    await ws.close()
                else:
                    assert ws.transport is not None
                    ws.transport.abort()
                await finished(ai, reports)
                await until(lambda: ws.state is State.CLOSED, "the caller's socket closed")
        assert reports[0].end_reason == "telephony closed"

    run(scenario())
    assert errors(caplog) == []
    assert not [r for r in caplog.records if r.exc_info]


def test_hang_up_before_start_and_oversized_message(caplog: pytest.LogCaptureFixture) -> None:
    """Before ``start`` a hang-up is still a normal end; a message over the bridge's limit is
    refused with 1009, not handed on."""
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        reports: list[CallReport] = []
        async with simulator() as ai:
            config = server_config(ai.url, bridge=BridgeConfig(max_twilio_message=4096))
            voice = TwilioVoiceRoutes(config, reports=reports)
            async with serving(mount(voice, "starlette")) as port:
                url = f"ws://{HOST}:{port}/media-stream"
                ws = await connect(url)
                await ws.close()
                await finished(ai, reports)
                assert reports[0].end_reason == "telephony closed before start"

                ws = await connect(url)
                for frame in start_frames():
                    await ws.send(frame)
                await ws.send(json.dumps({"event": "media", "pad": "x" * 5000}))
                await until(lambda: ws.state is State.CLOSED, "the bridge to close the socket")
                assert ws.close_code == 1009
                await finished(ai, reports, 2)
                assert reports[1].end_reason == "telephony closed"

    run(scenario())
    assert errors(caplog) == []
    assert [r.getMessage() for r in caplog.records if "over 4096 bytes" in r.getMessage()]


def test_unreachable_openai_closes_the_caller_with_1011_and_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        reports: list[CallReport] = []
        config = server_config(f"ws://{HOST}:{closed_port()}/v1/realtime")
        voice = TwilioVoiceRoutes(config, reports=reports)
        async with serving(mount(voice, "fastapi")) as port:
            caller = FakeTwilioCaller(f"ws://{HOST}:{port}/media-stream", CALLER)
            await caller.start()
            await caller.wait_closed(10)
            await caller.hang_up()
            assert caller.close_code == 1011
        # The session is opened after Twilio's start: the call is reported, unbridged.
        [report] = reports
        assert report.end_reason == "realtime server unreachable"
        assert report.media_out == 0

    run(scenario())
    records = errors(caplog)
    assert len(records) == 1 and "cannot reach the realtime server" in records[0].getMessage()
    assert records[0].exc_info is None


# --- the webhook and the upgrade's signature ----------------------------------------------------


def test_twiml_route_without_a_token_answers_get_and_post() -> None:
    async def scenario() -> None:
        voice = TwilioVoiceRoutes(server_config("ws://unused"))
        async with serving(mount(voice, "fastapi")) as port:
            for data in (None, {"CallSid": "CA" + "1" * 32}):
                status, ctype, body = await ahttp(port, "/incoming-call", data=data)
                assert (status, body) == (200, twiml(STREAM_URL))
                assert ctype.startswith("text/xml")
            big = {"CallSid": "x" * 70_000}  # over the 64 KiB bound: refused, not buffered
            assert (await ahttp(port, "/incoming-call", data=big))[0] == 413

    run(scenario())


def test_twiml_route_checks_the_webhook_signature(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    form = {"CallSid": "CA" + "1" * 32, "From": "+15551234567", "To": "+15557654321"}

    async def scenario() -> None:
        voice = TwilioVoiceRoutes(server_config("ws://unused", twilio_auth_token=TOKEN))
        async with serving(mount(voice, "starlette")) as port:
            good_post = {"X-Twilio-Signature": sign(WEBHOOK_URL, form)}
            assert (await ahttp(port, "/incoming-call", data=form, headers=good_post))[0] == 200
            query = "?" + urlencode(form)
            good_get = {"X-Twilio-Signature": sign(WEBHOOK_URL + query)}
            status, _, body = await ahttp(port, "/incoming-call" + query, headers=good_get)
            assert status == 200
            # The TwiML streams to the public URL with a credential for this very call.
            stream_url, params = parse_twiml(body)
            assert stream_url == STREAM_URL and list(params) == [CREDENTIAL_PARAMETER]
            check = StreamCredentials.from_auth_token(TOKEN)
            credential = params[CREDENTIAL_PARAMETER]
            assert check.refusal(credential, None, form["CallSid"], time.time()) is None
            other_call = "CA" + "2" * 32
            assert check.refusal(credential, None, other_call, time.time()) is not None

            tampered = {**form, "From": "+15550000000"}
            refused = [
                await ahttp(port, "/incoming-call", data=form),  # no signature
                await ahttp(port, "/incoming-call", data=form, headers={"X-Twilio-Signature": "x"}),
                await ahttp(port, "/incoming-call", data=tampered, headers=good_post),
                await ahttp(port, "/incoming-call?x=1" + query[1:], headers=good_get),
            ]
            assert [status for status, _, _ in refused] == [403] * 4
            assert b"missing X-Twilio-Signature" in refused[0][2]

    run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.name == "realtime_fsm.asgi"]
    refusals = [m for m in warnings if m.startswith("refusing webhook from 127.0.0.1:")]
    assert len(refusals) == 4  # once per refused request, with the client's address
    assert not [r for r in caplog.records if TOKEN in r.getMessage()]


def test_routes_follow_the_public_path_and_a_given_prefix() -> None:
    async def scenario() -> None:
        config = server_config("ws://unused", public_url=PUBLIC_URL + "/voice/")
        voice = TwilioVoiceRoutes(config)
        assert voice.stream_url == "wss://example.ngrok.app/voice/media-stream"
        stripped = TwilioVoiceRoutes(config, prefix="")
        assert [getattr(r, "path", "") for r in stripped.routes] == [
            "/incoming-call",
            "/media-stream",
        ]
        async with serving(mount(voice, "fastapi")) as port:
            status, _, body = await ahttp(port, "/voice/incoming-call")
            assert (status, body) == (200, twiml(voice.stream_url))
            assert (await ahttp(port, "/incoming-call"))[0] == 404

    run(scenario())


@pytest.mark.parametrize("ws_impl", WS_IMPLS)
def test_media_route_refuses_a_bad_upgrade_signature(
    ws_impl: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        reports: list[CallReport] = []
        async with simulator() as ai:
            config = server_config(ai.url, twilio_auth_token=TOKEN)
            voice = TwilioVoiceRoutes(config, reports=reports)
            async with serving(mount(voice, "fastapi"), ws_impl) as port:
                url = f"ws://{HOST}:{port}/media-stream"
                attempts = [
                    (url, {}),
                    (url, {"X-Twilio-Signature": "bad"}),
                    (url, {"X-Twilio-Signature": sign("wss://attacker.example/media-stream")}),
                    (url + "?a=1", {"X-Twilio-Signature": sign(STREAM_URL)}),
                ]
                for target, headers in attempts:
                    with pytest.raises(InvalidStatus) as refused:
                        await connect(target, additional_headers=headers)
                    assert refused.value.response.status_code == 403
                assert ai.connections == []  # nothing reached OpenAI

                # Signed, but no credential from the webhook: refused at start, 1008.
                signed = FakeCallerConfig(speed=4.0, auth_token=TOKEN, signature_url=STREAM_URL)
                async with FakeTwilioCaller(url, signed) as stray:
                    await stray.wait_until(lambda: stray.close_code is not None, 10, "refusal")
                assert stray.close_code == 1008
                assert ai.connections == []  # still nothing reached OpenAI

                dialed = await dial(
                    f"http://{HOST}:{port}", public_url=PUBLIC_URL, auth_token=TOKEN
                )
                assert dialed.stream_url == STREAM_URL
                async with FakeTwilioCaller(url, dialed.caller_config(speed=4.0)) as caller:
                    await caller.wait_for_audio(100, timeout=10)
                await finished(ai, reports)
        assert reports[0].end_reason == "bad stream credential: missing"
        assert reports[1].end_reason == "telephony stop"

    run(scenario())
    refusals = [
        r.getMessage()
        for r in caplog.records
        if r.name == "realtime_fsm.asgi" and "refusing media stream" in r.getMessage()
    ]
    assert len(refusals) == 4 and all("127.0.0.1:" in m for m in refusals)
    assert errors(caplog) == []


# --- the socket adapter on its own --------------------------------------------------------------


class FakeAsgi:
    """The server half of one ASGI WebSocket: what the app receives, what it sent."""

    def __init__(self, *incoming: JSON) -> None:
        self.incoming = [{"type": "websocket.connect"}, *incoming]
        self.sent: list[MutableMapping[str, Any]] = []
        self.fail_sends = False

    async def receive(self) -> MutableMapping[str, Any]:
        return self.incoming.pop(0)

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if self.fail_sends and message["type"] == "websocket.send":
            raise OSError("connection lost")
        self.sent.append(message)

    async def socket(self) -> StarletteSocket:
        scope = {"type": "websocket", "path": "/", "headers": [], "client": ("10.0.0.7", 5060)}
        websocket = WebSocket(scope, self.receive, self.send)
        await websocket.accept()
        return StarletteSocket(websocket, max_message=1024)


def test_socket_adapter_turns_every_way_out_into_a_connection_error() -> None:
    async def scenario() -> None:
        peer = FakeAsgi(
            {"type": "websocket.receive", "text": "hi"},
            {"type": "websocket.disconnect", "code": 1001},
        )
        sock = await peer.socket()
        assert sock.request.client == "10.0.0.7:5060"
        assert await sock.recv() == "hi"
        for _ in range(2):  # and a receive after the disconnect
            with pytest.raises(TelephonyDisconnected) as gone:
                await sock.recv()
            assert isinstance(gone.value, ConnectionError) and gone.value.code == 1001
        with pytest.raises(TelephonyDisconnected):
            await sock.send("late")
        await sock.close(1000, "bye")
        await sock.close()
        assert [m["type"] for m in peer.sent] == ["websocket.accept"]  # no close to a gone peer

        peer = FakeAsgi()
        peer.fail_sends = True
        sock = await peer.socket()
        with pytest.raises(TelephonyDisconnected) as gone:
            await sock.send("x")
        assert gone.value.code == 1006
        await sock.close()

        peer = FakeAsgi()
        sock = await peer.socket()
        await sock.close(1000, "done")
        await sock.close(1011, "again")
        assert [m["type"] for m in peer.sent] == ["websocket.accept", "websocket.close"]
        with pytest.raises(TelephonyDisconnected):
            await sock.send("after close")

    run(scenario())


def test_importing_without_starlette_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "realtime_fsm.asgi")
    for name in [m for m in sys.modules if m == "starlette" or m.startswith("starlette.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "starlette", None)
    with pytest.raises(ImportError, match=r"pip install 'starlette>=0.37' \(the 'asgi' extra\)"):
        importlib.import_module("realtime_fsm.asgi")


# --- examples/fastapi_app.py --------------------------------------------------------------------


def load_example(
    monkeypatch: pytest.MonkeyPatch, realtime_url: str, greeting: str | None = GREETING
) -> ModuleType:
    """``examples/fastapi_app.py`` as a user runs it, its settings from the environment
    (``greeting=None``: the example's own, made for each caller)."""
    for name, value in {
        "PUBLIC_URL": PUBLIC_URL,
        "REALTIME_URL": realtime_url,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "OPENAI_API_KEY": "sk-test",
    }.items():
        monkeypatch.setenv(name, value)
    if greeting is None:
        monkeypatch.delenv("GREETING", raising=False)
    else:
        monkeypatch.setenv("GREETING", greeting)
    spec = importlib.util.spec_from_file_location(
        f"fastapi_app_example_{greeting is None}", ROOT / "examples" / "fastapi_app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fastapi_example_end_to_end(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        async with simulator() as ai:
            example = load_example(monkeypatch, ai.url)
            async with serving(example.app) as port:
                status, _, body = await ahttp(port, "/healthz")
                assert status == 200 and json.loads(body)["calls_started"] == 0

                dialed = await dial(
                    f"http://{HOST}:{port}", public_url=PUBLIC_URL, auth_token=TOKEN
                )
                assert dialed.stream_url == STREAM_URL
                signed = dialed.caller_config(speed=4.0)
                async with FakeTwilioCaller(f"ws://{HOST}:{port}/media-stream", signed) as caller:
                    await caller.wait_for_audio(100, timeout=10)
                await finished(ai, example.app.state.reports)
                health = json.loads((await ahttp(port, "/healthz"))[2])
        assert health == {
            "status": "ok",
            "calls_started": 1,
            "calls_finished": 1,
            "last_end_reason": "telephony stop",
        }
        creates = [e.event for e in ai.received if e.event.get("type") == "response.create"]
        assert creates and creates[0]["response"]["instructions"] == GREETING
        assert caller.violations == []

    run(scenario())
    assert errors(caplog) == []

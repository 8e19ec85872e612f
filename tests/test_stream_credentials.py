"""Per-call stream credentials: a media stream cannot be replayed for another call.

Unit: a credential admits exactly its own call's stream, before it expires, once per process;
every other string is refused with a reason, never an exception.  Over real sockets on
127.0.0.1 (the built-in server and the ASGI routes, the simulator as OpenAI, a signed upgrade
every time, so the credential is the only thing that differs): a stream whose ``start`` lacks a
valid credential for its call is closed with 1008 and one WARNING, and no OpenAI session exists
for it at any point; a normal call beside it is still served; a second worker configured with
the same token (no shared state) admits a stream the first one's webhook answered; the
application never sees the credential.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator
from waiting import poller
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime_fsm.bridge import BridgeConfig, CallBridge, CallReport
from realtime_fsm.call import CallStarted
from realtime_fsm.credentials import CREDENTIAL_PARAMETER, StreamCredentials
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import (
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ScriptedReply,
    dial,
)

HOST = "127.0.0.1"
PUBLIC_URL = "https://example.ngrok.app"
STREAM_URL = "wss://example.ngrok.app/media-stream"
TOKEN = "twilio-token-DO-NOT-LOG-8d2e"
ACCOUNT = "AC" + "a" * 32
CALL = "CA" + "b" * 32
NOW = 1_800_000_000.0

until = poller(10.0, 0.01)


# --- the credential on its own ------------------------------------------------------------------


def test_a_credential_admits_its_own_call_once_before_it_expires() -> None:
    creds = StreamCredentials.from_auth_token(TOKEN, ttl=60)
    token = creds.mint(ACCOUNT, CALL, NOW)
    assert len(token) < 48 and TOKEN not in token
    assert creds.refusal(token, ACCOUNT, CALL, NOW + 59) is None
    # Refusals name what is wrong, in a fixed order that leaks nothing about the key.
    assert creds.refusal(None, ACCOUNT, CALL, NOW) == "missing"
    assert creds.refusal("", ACCOUNT, CALL, NOW) == "missing"
    assert creds.refusal(token, ACCOUNT, "CA" + "c" * 32, NOW) == "forged or for another call"
    assert creds.refusal(token, "AC" + "d" * 32, CALL, NOW) == "forged or for another call"
    assert creds.refusal(token, ACCOUNT, CALL, NOW + 62).startswith("expired")  # type: ignore[union-attr]
    other_key = StreamCredentials.from_auth_token("another-token")
    assert other_key.refusal(token, ACCOUNT, CALL, NOW) == "forged or for another call"
    version, expiry, mac = token.split(".")
    stretched = f"{version}.{int(expiry) + 3600}.{mac}"  # a later expiry does not verify
    assert creds.refusal(stretched, ACCOUNT, CALL, NOW) == "forged or for another call"
    for bad in ("v1", "v1..x", f"v2.{expiry}.{mac}", f"v1.-5.{mac}", f"v1.{expiry}.{mac}.x"):
        assert creds.refusal(bad, ACCOUNT, CALL, NOW) == "malformed"
    # Spent: refused the second time in this process, and only until it expires.
    creds.spend(token, NOW)
    assert creds.refusal(token, ACCOUNT, CALL, NOW + 1) == "already used"
    fresh = StreamCredentials.from_auth_token(TOKEN)  # another worker: no shared state
    assert fresh.refusal(token, ACCOUNT, CALL, NOW + 1) is None


def test_the_single_use_ledger_is_bounded_and_forgets_expired_credentials() -> None:
    creds = StreamCredentials(b"k" * 32, ttl=10, max_remembered=3)
    tokens = [creds.mint(ACCOUNT, f"CA{i:032d}", NOW + i) for i in range(5)]
    for i, token in enumerate(tokens):
        creds.spend(token, NOW + i)
    assert len(creds._used) == 3  # the oldest forgotten first
    creds.spend(creds.mint(ACCOUNT, CALL, NOW + 100), NOW + 100)
    assert len(creds._used) == 1  # every earlier one had expired


@pytest.mark.parametrize(
    "make",
    [
        lambda: StreamCredentials(b"short"),
        lambda: StreamCredentials(b"k" * 32, ttl=0),
        lambda: StreamCredentials(b"k" * 32, ttl=float("nan")),
        lambda: StreamCredentials(b"k" * 32, max_remembered=0),
        lambda: StreamCredentials.from_auth_token(""),
    ],
)
def test_bad_settings_are_refused_at_construction(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


@given(st.one_of(st.none(), st.text(max_size=80)), st.text(max_size=40), st.text(max_size=40))
def test_any_string_gets_a_reason_never_an_exception(
    credential: str | None, account: str, call: str
) -> None:
    creds = StreamCredentials(b"k" * 32)
    assert isinstance(creds.refusal(credential, account, call, NOW), str)


# --- over real sockets ----------------------------------------------------------------------------


def run(body: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    async def main() -> None:
        await asyncio.wait_for(body(), timeout)

    asyncio.run(main())


def simulator() -> FakeRealtimeServer:
    config = FakeRealtimeConfig(realtime_factor=5.0, first_delta_delay_s=0.02)
    return FakeRealtimeServer(config, replies=[ScriptedReply("Hello there.", audio_ms=400)])


@asynccontextmanager
async def bridge_server(
    ai: FakeRealtimeServer, reports: list[CallReport], bridges: list[CallBridge]
) -> AsyncIterator[int]:
    config = ServerConfig(
        public_url=PUBLIC_URL,
        realtime_url=ai.url,
        twilio_auth_token=TOKEN,
        bridge=BridgeConfig(greeting="Say hello."),
    )
    server = await start_server(config, HOST, 0, reports=reports, on_bridge=bridges.append)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def start_frame(call: str, account: str, params: dict[str, str]) -> str:
    """Twilio's ``start`` for ``call``, carrying ``params`` as ``customParameters``."""
    stream = "MZ" + "e" * 32
    start = {
        "streamSid": stream,
        "callSid": call,
        "accountSid": account,
        "tracks": ["inbound"],
        "customParameters": params,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    return json.dumps(
        {"event": "start", "sequenceNumber": "1", "streamSid": stream, "start": start}
    )


async def refused_stream(port: int, start: str) -> tuple[int, str]:
    """A signed upgrade, ``connected`` and ``start``: the close code and reason the server
    answers with (it must close; a stream left open fails the wait)."""
    url = f"ws://{HOST}:{port}/media-stream"
    signature = RequestValidator(TOKEN).compute_signature(STREAM_URL, {})
    async with connect(url, additional_headers={"X-Twilio-Signature": signature}) as twilio:
        await twilio.send(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        await twilio.send(start)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(twilio.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_streams_without_a_valid_credential_never_reach_openai(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="realtime_fsm")
    reports: list[CallReport] = []
    bridges: list[CallBridge] = []

    async def body() -> None:
        async with simulator() as ai, bridge_server(ai, reports, bridges) as port:
            server = f"http://{HOST}:{port}"
            # A normal call, dialed through the signed webhook, runs beside every hostile one.
            dialed = await dial(server, public_url=PUBLIC_URL, auth_token=TOKEN)
            credential = dialed.parameters[CREDENTIAL_PARAMETER]
            url = f"ws://{HOST}:{port}/media-stream"
            async with FakeTwilioCaller(url, dialed.caller_config(speed=4.0)) as caller:
                await caller.wait_for_audio(100, timeout=15)
                assert len(ai.connections) == 1

                expired = StreamCredentials.from_auth_token(TOKEN).mint(
                    ACCOUNT, CALL, time.time() - 120
                )
                other = await dial(server, public_url=PUBLIC_URL, auth_token=TOKEN)
                cases = {
                    "missing": start_frame(CALL, ACCOUNT, {}),
                    "forged": start_frame(CALL, ACCOUNT, {CREDENTIAL_PARAMETER: "v1.9.AAAA"}),
                    "expired": start_frame(CALL, ACCOUNT, {CREDENTIAL_PARAMETER: expired}),
                    # The live call's own credential, replayed by someone who captured it.
                    "replayed": start_frame(
                        dialed.call_sid, dialed.account_sid, {CREDENTIAL_PARAMETER: credential}
                    ),
                    # A real credential, for another call than the one the stream claims.
                    "other call": start_frame(CALL, other.account_sid, dict(other.parameters)),
                }
                for case, start in cases.items():
                    code, reason = await refused_stream(port, start)
                    assert code == 1008, case
                    assert reason.startswith("bad stream credential"), (case, reason)
                    # No OpenAI session was opened for it, nor is one open now.
                    assert len(ai.connections) == 1, case
                # The normal call never noticed: it is still running and still answers.
                [normal] = [b for b in bridges if b.active]
                heard = len(caller.media_received)
                normal.request_response("still there")
                await until(lambda: len(caller.media_received) > heard, "the normal call")
            await until(lambda: len(reports) == len(cases) + 1, "every report")
        assert ai.open_connections() == []

    run(body)
    refusals = [
        r.getMessage() for r in caplog.records if "stream refused: credential" in r.getMessage()
    ]
    assert len(refusals) == 5
    assert all("peer=127.0.0.1:" in m for m in refusals)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_any_worker_with_the_token_admits_the_stream_and_the_app_never_sees_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two servers, one token, no shared state: the webhook answered by one, the stream served
    by the other.  ``CallStarted``, the report, the greeting function and the logs carry the
    application's own parameters only."""
    caplog.set_level(logging.DEBUG, logger="realtime_fsm")
    reports: list[CallReport] = []
    started: list[CallStarted] = []
    greeted: list[dict[str, str]] = []

    def greeting(params: object) -> str:
        greeted.append(dict(params))  # type: ignore[call-overload]
        return "Say hello."

    async def listen(bridge: CallBridge) -> None:
        async for event in bridge.events():
            if isinstance(event, CallStarted):
                started.append(event)

    async def body() -> None:
        async with simulator() as ai:
            config = ServerConfig(
                public_url=PUBLIC_URL,
                realtime_url=ai.url,
                twilio_auth_token=TOKEN,
                bridge=BridgeConfig(greeting=greeting),
                stream_parameters=lambda webhook: {"caller": webhook.get("From", "")},
            )
            tasks: list[asyncio.Future[None]] = []

            def watch(bridge: CallBridge) -> None:
                # Subscribed before the bridge runs, so CallStarted is among the events.
                tasks.append(asyncio.ensure_future(listen(bridge)))

            first = await start_server(config, HOST, 0)
            second = await start_server(config, HOST, 0, reports=reports, on_bridge=watch)
            try:
                port_a = first.sockets[0].getsockname()[1]
                port_b = second.sockets[0].getsockname()[1]
                dialed = await dial(
                    f"http://{HOST}:{port_a}", public_url=PUBLIC_URL, auth_token=TOKEN
                )
                assert set(dialed.parameters) == {"caller", CREDENTIAL_PARAMETER}

                url = f"ws://{HOST}:{port_b}/media-stream"
                async with FakeTwilioCaller(url, dialed.caller_config(speed=4.0)) as caller:
                    await caller.wait_for_audio(100, timeout=15)
                await until(lambda: reports, "the report")
                await asyncio.wait_for(asyncio.gather(*tasks), 10)
            finally:
                for server in (first, second):
                    server.close()
                    await server.wait_closed()
            credential = dialed.parameters[CREDENTIAL_PARAMETER]
            [report] = reports
            assert report.end_reason == "telephony stop"
            assert dict(report.custom_parameters) == {"caller": "+15550100"}
            assert greeted == [{"caller": "+15550100"}]
            assert started and dict(started[0].custom_parameters) == {"caller": "+15550100"}
            assert not [r for r in caplog.records if credential in r.getMessage()]

    run(body)

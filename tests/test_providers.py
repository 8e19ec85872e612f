"""Whole calls through the bridge server, configured by model and provider, against a
simulator that demands the provider's credentials and URL shape, over 127.0.0.1.

* OpenAI: ``?model=`` built from ``ServerConfig.model``, ``Authorization: Bearer <key>``.
* Azure OpenAI: the GA form ``/openai/v1/realtime?model=<deployment>`` and the preview form
  ``/openai/realtime?api-version=...&deployment=...``, the key in ``api-key``, or an Entra ID
  token as a Bearer token.
* A refused key: the call ends at once with a reason that says so, one log line, no retry,
  no secret in the logs, no socket left open; a key refused on a reconnect is tried once.
* Fatal ``error`` events (quota, billing, a bad key, a deactivated account), matched by code
  or by type: the call ends with that reason, one log line, no reconnect, no socket open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import attrs
import pytest
from waiting import poller

from realtime_fsm.bridge import BridgeConfig, CallBridge, CallReport
from realtime_fsm.call import FATAL_ERROR_CODES
from realtime_fsm.config import LifecycleConfig
from realtime_fsm.openai_realtime import Dialect, SessionConfig
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
)
from realtime_fsm.testing.fake_realtime import RequiredAuth

HOST = "127.0.0.1"
KEY = "azure-key-0f3e9b2c7d"
WRONG_KEY = "azure-key-WRONG-51aa"
DEPLOYMENT = "voice-prod"
TRANSCRIBE_DEPLOYMENT = "transcribe-prod"
PREVIEW = "2025-04-01-preview"
CALLER = FakeCallerConfig(text_event="text", speed=4.0, seed=11)
until = poller(20.0, 0.02)


def run(scenario: Coroutine[Any, Any, None], timeout: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout))


def simulator() -> FakeRealtimeServer:
    config = FakeRealtimeConfig(
        realtime_factor=5.0, first_delta_delay_s=0.02, transcription_delay_s=0.01, seed=5
    )
    return FakeRealtimeServer(config, replies=["Hello from the simulator, how can I help?"])


def bridge_config(dialect: Dialect = Dialect.GA) -> BridgeConfig:
    return BridgeConfig(
        session=SessionConfig(
            instructions="You are a test assistant.",
            transcription_model=TRANSCRIBE_DEPLOYMENT,
        ),
        dialect=dialect,
        lifecycle=LifecycleConfig(no_audio_timeout=2.0),
        greeting="Greet the caller.",
        accept_text_messages=True,
        reconnect_base_delay=0.05,
        reconnect_max_delay=0.2,
    )


def azure_config(sim: FakeRealtimeServer, **overrides: Any) -> ServerConfig:
    settings: dict[str, Any] = {
        "public_url": f"http://{HOST}",
        "provider": "azure",
        "azure_endpoint": f"http://{HOST}:{sim.port}/",
        "azure_deployment": DEPLOYMENT,
        "api_key": KEY,
        "bridge": bridge_config(),
    }
    settings.update(overrides)
    return ServerConfig(**settings)


@attrs.define
class Bridge:
    url: str
    reports: list[CallReport]
    bridges: list[CallBridge]

    async def report(self) -> CallReport:
        await until(lambda: bool(self.reports), "the call report")
        assert len(self.reports) == 1, self.reports
        return self.reports[0]


@contextlib.asynccontextmanager
async def bridge_server(config: ServerConfig) -> AsyncIterator[Bridge]:
    reports: list[CallReport] = []
    bridges: list[CallBridge] = []
    server = await start_server(config, HOST, 0, reports=reports, on_bridge=bridges.append)
    try:
        port = server.sockets[0].getsockname()[1]
        yield Bridge(f"ws://{HOST}:{port}/media-stream", reports, bridges)
    finally:
        server.close()
        await server.wait_closed()


async def greeted(sim: FakeRealtimeServer, caller: FakeTwilioCaller) -> None:
    """The greeting was generated in full and its audio reached the caller."""
    await sim.wait_until(
        lambda: any(r.status == "completed" and r.audio_deltas > 0 for r in sim.responses),
        20.0,
        "a completed response",
    )
    await caller.wait_until(lambda: caller.received_ms >= 200, 20.0, "the greeting's audio")


async def no_socket_open(sim: FakeRealtimeServer, caller: FakeTwilioCaller) -> None:
    await caller.wait_closed(20.0)
    await until(lambda: not sim.open_connections(), "the simulator's sockets to close")


def bridge_log(caplog: pytest.LogCaptureFixture) -> str:
    """Every log line of this process except the simulator's own (``websockets.server``
    logs the headers it receives, which is the far side's business)."""
    return "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("websockets.server")
    )


def session_update(sim: FakeRealtimeServer) -> dict[str, Any]:
    [update] = sim.client_events("session.update")
    session: dict[str, Any] = update["session"]
    return session


# --- OpenAI -------------------------------------------------------------------------------------


def test_an_openai_call_names_the_model_and_sends_the_key_as_a_bearer_token() -> None:
    async def scenario() -> None:
        sim = simulator()
        async with sim:
            sim.require_auth(RequiredAuth("openai", KEY))
            config = ServerConfig(
                public_url=f"http://{HOST}",
                base_url=sim.url,
                model="gpt-realtime-2.1-mini",
                api_key=KEY,
                bridge=bridge_config(),
            )
            async with bridge_server(config) as bridge:
                async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                    await greeted(sim, caller)
                report = await bridge.report()
                await no_socket_open(sim, caller)
        assert sim.auth_refused == 0
        assert sim.connections[0].path == "/v1/realtime?model=gpt-realtime-2.1-mini"
        [created] = sim.server_events("session.created")
        assert created["session"]["model"] == "gpt-realtime-2.1-mini"
        assert report.end_reason == "telephony stop"
        assert report.server_errors == {}

    run(scenario())


# --- Azure: a whole call ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_version", "dialect", "path"),
    [
        (None, Dialect.GA, f"/openai/v1/realtime?model={DEPLOYMENT}"),
        (PREVIEW, Dialect.BETA, f"/openai/realtime?api-version={PREVIEW}&deployment={DEPLOYMENT}"),
    ],
    ids=["ga", "preview"],
)
def test_a_whole_call_through_azure(
    api_version: str | None, dialect: Dialect, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The bridge, configured for Azure, passes the simulator's Azure checks (path, query,
    ``api-key``), holds a call (greeting heard, a typed turn answered), and never logs the
    key, not even in the handshake ``websockets`` logs at DEBUG."""
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        sim = simulator()
        async with sim:
            sim.require_auth(RequiredAuth("azure", KEY, DEPLOYMENT, api_version))
            config = azure_config(sim, api_version=api_version, bridge=bridge_config(dialect))
            async with bridge_server(config) as bridge:
                async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                    await greeted(sim, caller)
                    await caller.type_text("What are your opening hours?")
                    await sim.wait_until(lambda: len(sim.responses) >= 2, 20.0, "an answer")
                    await caller.wait_until(
                        lambda: sim.responses[1].status == "completed", 20.0, "the answer"
                    )
                report = await bridge.report()
                await no_socket_open(sim, caller)
        assert sim.auth_refused == 0 and len(sim.connections) == 1
        assert sim.connections[0].path == path
        session = session_update(sim)
        if dialect is Dialect.GA:
            assert session["audio"]["input"]["transcription"]["model"] == TRANSCRIBE_DEPLOYMENT
        else:
            assert session["input_audio_transcription"]["model"] == TRANSCRIBE_DEPLOYMENT
        assert report.end_reason == "telephony stop" and report.user_texts_sent == 1
        assert report.reconnects == 0 and report.server_errors == {}

    run(scenario())
    logged = bridge_log(caplog)
    assert "api-key: [redacted]" in logged  # the handshake was logged, the key was not
    assert KEY not in logged


def test_azure_with_an_entra_token_function() -> None:
    """Without a key, a Microsoft Entra ID token goes as ``Authorization: Bearer``; a token
    function is asked again for every connection (a reconnect gets a fresh token)."""
    asked: list[int] = []

    def token() -> str:
        asked.append(1)
        return KEY

    async def scenario() -> None:
        sim = simulator()
        async with sim:
            sim.require_auth(RequiredAuth("azure", KEY, DEPLOYMENT))
            config = azure_config(sim, api_key="", azure_ad_token=token)
            async with bridge_server(config) as bridge:
                async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                    await greeted(sim, caller)
                    sim.drop_connections()
                    await sim.wait_until(lambda: len(sim.connections) == 2, 20.0, "a reconnect")
                    await until(lambda: bridge.bridges[0].session.call_state.value == "running")
                report = await bridge.report()
                await no_socket_open(sim, caller)
        assert sim.auth_refused == 0 and len(asked) == 2
        assert report.reconnects == 1 and report.end_reason == "telephony stop"

    run(scenario())


# --- Azure: a refused key -------------------------------------------------------------------------


def test_a_wrong_azure_key_ends_the_call_at_once_with_a_clear_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        sim = simulator()
        async with sim:
            sim.require_auth(RequiredAuth("azure", KEY, DEPLOYMENT))
            async with bridge_server(azure_config(sim, api_key=WRONG_KEY)) as bridge:
                async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                    report = await bridge.report()
                    await no_socket_open(sim, caller)
                    assert caller.close_code == 1011
                # Nothing more is tried after the refusal: give a retry loop time to show.
                await asyncio.sleep(0.5)
        assert report.end_reason == "realtime server refused the credentials (HTTP 401)"
        assert sim.auth_refused == 1 and sim.connections == []
        assert report.reconnect_failures == 0 and report.media_out == 0

    run(scenario())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    refused = [line for line in errors if "cannot open the openai session" in line]
    assert len(refused) == 1
    assert "refused the credentials" in refused[0] and "HTTP 401" in refused[0]
    assert "API key or token was refused" in refused[0]
    logged = bridge_log(caplog)
    assert "api-key: [redacted]" in logged
    assert WRONG_KEY not in logged and KEY not in logged


def test_the_wrong_path_is_refused_like_azure_does() -> None:
    """A deployment Azure does not serve is a 404, not a 401; the call still ends at once."""

    async def scenario() -> None:
        sim = simulator()
        async with sim:
            sim.require_auth(RequiredAuth("azure", KEY, DEPLOYMENT))
            config = azure_config(sim, azure_deployment="no-such-deployment")
            async with (
                bridge_server(config) as bridge,
                FakeTwilioCaller(bridge.url, CALLER) as caller,
            ):
                report = await bridge.report()
                await no_socket_open(sim, caller)
        assert report.end_reason == "realtime server unreachable"
        assert sim.auth_refused == 1 and sim.connections == []

    run(scenario())


def test_a_key_refused_on_reconnect_is_tried_once() -> None:
    """The key is revoked mid-call (the simulator now wants another): the lost session's
    replacement is refused with 401 and the call ends, after one attempt, not a storm."""

    async def scenario() -> None:
        sim = simulator()
        async with sim:
            sim.require_auth(RequiredAuth("azure", KEY, DEPLOYMENT))
            async with bridge_server(azure_config(sim)) as bridge:
                async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                    await greeted(sim, caller)
                    sim.require_auth(RequiredAuth("azure", "rotated-key-9d", DEPLOYMENT))
                    sim.drop_connections()
                    report = await bridge.report()
                    await no_socket_open(sim, caller)
                await asyncio.sleep(0.5)
        assert report.end_reason == "openai reconnect refused (HTTP 401)"
        assert sim.auth_refused == 1 and len(sim.connections) == 1
        assert report.reconnect_failures == 1 and report.reconnects == 0

    run(scenario())


# --- fatal error events -------------------------------------------------------------------------


FATAL_CASES = [
    *((code, code, "invalid_request_error") for code in sorted(FATAL_ERROR_CODES)),
    # OpenAI has changed such a code while keeping the type: matched by the type alone.
    *((code, "renamed_" + code, code) for code in sorted(FATAL_ERROR_CODES)),
]


@pytest.mark.parametrize(
    ("fatal", "code", "error_type"),
    FATAL_CASES,
    ids=[f"{'code' if c == f else 'type'}-{f}" for f, c, _ in FATAL_CASES],
)
def test_a_fatal_error_ends_the_call_without_a_reconnect(
    fatal: str, code: str, error_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    async def scenario() -> None:
        sim = simulator()
        async with sim:
            sim.require_auth(RequiredAuth("openai", KEY))
            config = ServerConfig(
                public_url=f"http://{HOST}", base_url=sim.url, api_key=KEY, bridge=bridge_config()
            )
            async with (
                bridge_server(config) as bridge,
                FakeTwilioCaller(bridge.url, CALLER) as caller,
            ):
                await greeted(sim, caller)
                sim.inject_error(code, "You exceeded your current quota.", error_type=error_type)
                report = await bridge.report()
                await no_socket_open(sim, caller)
        assert report.end_reason == f"openai error {fatal}"
        assert report.reconnects == 0 and report.reconnect_failures == 0
        assert len(sim.connections) == 1 and sim.auth_refused == 0
        assert report.server_errors == {code: 1}

    run(scenario())
    lines = [
        r.getMessage() for r in caplog.records if "no new session can cure it" in r.getMessage()
    ]
    assert len(lines) == 1 and f"openai error {fatal}:" in lines[0]
    assert "You exceeded your current quota." in lines[0]

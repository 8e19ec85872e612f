"""Lost sessions: the OpenAI socket drops, or the session expires, in the middle of a call.

End to end over 127.0.0.1 like ``test_e2e.py``: a :class:`FakeTwilioCaller` dials the real
server (:func:`realtime_fsm.server.start_server`), which bridges it to a
:class:`FakeRealtimeServer`.  Each new connection to the simulator is a fresh session with an
empty conversation, so what the bridge restores is exactly what the second connection received.
The bounded history and the item builders are unit-tested at the end.

Nothing here asserts on timing; the gap between a loss and the first audio of the new session
is printed (``pytest -s``) for the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import attrs
import openai.types.beta.realtime as beta_types
import openai.types.realtime as ga_types
import pytest
from pydantic import TypeAdapter
from waiting import poller
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime_fsm.bridge import BridgeConfig, CallBridge, CallReport
from realtime_fsm.config import LifecycleConfig
from realtime_fsm.errors import CallNotActive, LocalProtocolError
from realtime_fsm.history import ConversationHistory, HistoryItem
from realtime_fsm.openai_realtime import Dialect, SessionConfig, render_message_item
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ReplyContext,
    ResponseFaults,
    ResponseRecord,
    ScriptedReply,
)
from realtime_fsm.webserver import WebSocketClosed

HOST = "127.0.0.1"
CALLER = FakeCallerConfig(text_event="text", speed=4.0, seed=7)
REASON_KEY = "rtfsm_reason"
GA_CLIENT = TypeAdapter(ga_types.RealtimeClientEvent)
BETA_CLIENT = TypeAdapter(beta_types.RealtimeClientEvent)
JSON = dict[str, Any]


def run(scenario: Coroutine[Any, Any, None], timeout: float = 40.0) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout))


def replies(ctx: ReplyContext) -> ScriptedReply:
    """Two seconds of speech (0.4 s at the simulator's pace): long enough to cut in half."""
    return ScriptedReply(f"Answer {ctx.number} on connection {ctx.connection}.", audio_ms=2000)


def simulator(**config: Any) -> FakeRealtimeServer:
    base = FakeRealtimeConfig(
        realtime_factor=5.0, first_delta_delay_s=0.02, transcription_delay_s=0.01, seed=3
    )
    return FakeRealtimeServer(attrs.evolve(base, **config), replies=replies)


def bridge_config(dialect: Dialect = Dialect.GA, **overrides: Any) -> BridgeConfig:
    config = BridgeConfig(
        session=SessionConfig(
            instructions="You are a test assistant.",
            create_response=False,
            interrupt_response=False,
            silence_duration_ms=200,
        ),
        dialect=dialect,
        lifecycle=LifecycleConfig(
            create_timeout=2.0, cancel_timeout=5.0, no_audio_timeout=1.0, stall_timeout=5.0
        ),
        greeting="Greet the caller.",
        accept_text_messages=True,
        reconnect_base_delay=0.05,
        reconnect_max_delay=0.2,
    )
    return attrs.evolve(config, **overrides)


@attrs.define
class Bridge:
    url: str
    reports: list[CallReport]
    bridges: list[CallBridge]

    async def report(self, sim: FakeRealtimeServer) -> CallReport:
        await sim.wait_until(lambda: bool(self.reports), 10.0, "the call report")
        assert len(self.reports) == 1, self.reports
        return self.reports[0]


@contextlib.asynccontextmanager
async def bridge_server(sim: FakeRealtimeServer, config: BridgeConfig) -> AsyncIterator[Bridge]:
    reports: list[CallReport] = []
    bridges: list[CallBridge] = []
    server_config = ServerConfig(public_url=f"http://{HOST}", realtime_url=sim.url, bridge=config)
    server = await start_server(server_config, HOST, 0, reports=reports, on_bridge=bridges.append)
    try:
        port = server.sockets[0].getsockname()[1]
        yield Bridge(f"ws://{HOST}:{port}/media-stream", reports, bridges)
    finally:
        server.close()
        await server.wait_closed()


# --- what the simulator saw ---------------------------------------------------------------------


def items_created(sim: FakeRealtimeServer, connection: int) -> list[tuple[str, str]]:
    """``(role, text)`` of every message item the bridge created on one connection, in order."""
    out: list[tuple[str, str]] = []
    for event in sim.client_events("conversation.item.create", connection=connection):
        item = event["item"]
        for part in item["content"]:
            out.append((item["role"], part["text"]))
    return out


def user_text_count(sim: FakeRealtimeServer, text: str) -> int:
    """How many times ``text`` reached the model as a user item, over every connection."""
    return sum(
        1
        for event in sim.client_events("conversation.item.create")
        if event["item"]["role"] == "user"
        and any(p.get("text") == text for p in event["item"]["content"])
    )


def heard(caller: FakeTwilioCaller, record: ResponseRecord) -> int:
    return len({t.tag.chunk for t in caller.tags_received if t.tag.ordinal == record.tag})


async def wait_served(
    sim: FakeRealtimeServer,
    caller: FakeTwilioCaller,
    *,
    connection: int,
    after: int = 0,
    timeout: float = 10.0,
) -> ResponseRecord:
    """The first response (index >= ``after``) of ``connection`` that completed and was
    received in full by the caller."""
    found: list[ResponseRecord] = []

    def check() -> bool:
        for record in sim.responses[after:]:
            if (
                record.connection == connection
                and record.status == "completed"
                and record.audio_deltas > 0
                and heard(caller, record) >= record.audio_deltas
            ):
                found.append(record)
                return True
        return False

    await caller.wait_until(check, timeout, f"a response of connection {connection} heard")
    return found[0]


async def wait_playing(
    sim: FakeRealtimeServer, caller: FakeTwilioCaller, *, after: int
) -> ResponseRecord:
    """The newest response (index >= ``after``), once the caller has some of its audio."""
    found: list[ResponseRecord] = []

    def check() -> bool:
        if len(sim.responses) <= after:
            return False
        record = sim.responses[-1]
        if record.finished or heard(caller, record) < 5:
            return False
        found.append(record)
        return True

    await caller.wait_until(check, 10.0, "a response playing")
    return found[0]


def first_audio_of_connection(
    sim: FakeRealtimeServer, caller: FakeTwilioCaller, connection: int
) -> float | None:
    tags = {r.tag for r in sim.responses if r.connection == connection}
    times = [t.at for t in caller.tags_received if t.tag.ordinal in tags]
    return min(times) if times else None


def assert_valid_items(sim: FakeRealtimeServer, connection: int, adapter: TypeAdapter[Any]) -> None:
    for event in sim.client_events("conversation.item.create", connection=connection):
        adapter.validate_python(event)


# --- socket drop mid-response -------------------------------------------------------------------


def test_a_socket_drop_mid_response_continues_on_a_new_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The socket dies while the third answer plays: the caller's playback is cleared, a new
    session gets the config again and the conversation so far as text items (not the cut-off
    answer), a new response is asked for and heard, and the call ends normally later."""
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    async def scenario() -> None:
        sim = simulator()
        async with sim, bridge_server(sim, bridge_config()) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                await wait_served(sim, caller, connection=0)  # the greeting
                await caller.wait_for_quiet()
                await caller.type_text("My name is Ada.")
                await wait_served(sim, caller, connection=0, after=1)
                await caller.wait_for_quiet()
                await caller.type_text("Tell me more.")
                cut = await wait_playing(sim, caller, after=2)
                clears_before = len(caller.clears)
                lost_at = time.monotonic()
                sim.drop_connections()

                await sim.wait_until(lambda: len(sim.connections) >= 2, 10.0, "a reconnect")
                after = await wait_served(sim, caller, connection=1)
                gap = first_audio_of_connection(sim, caller, 1)
                assert gap is not None
                print(
                    "\nreconnect gap (drop -> first audio of the new session):"
                    f" {(gap - lost_at) * 1000:.0f} ms"
                )
                assert len(caller.clears) > clears_before  # the cut-off answer was flushed
                assert cut.socket_dropped and after.connection == 1

                new = sim.client_events(connection=1)
                kinds = [e["type"] for e in new if e["type"] != "input_audio_buffer.append"]
                assert kinds[0] == "session.update"
                assert new[0]["session"]["instructions"] == "You are a test assistant."
                restored = items_created(sim, 1)
                assert restored == [
                    ("assistant", "Answer 1 on connection 0."),
                    ("user", "My name is Ada."),
                    ("assistant", "Answer 2 on connection 0."),
                    ("user", "Tell me more."),
                ]
                assert_valid_items(sim, 1, GA_CLIENT)
                creates = sim.client_events("response.create", connection=1)
                assert [c["response"]["metadata"][REASON_KEY] for c in creates] == ["reconnect"]
                # The conversation carries on: one more turn on the new session.
                await caller.type_text("Thanks.")
                await sim.wait_until(lambda: len(sim.responses) >= 5, 5.0, "one more answer")
                last = sim.responses[-1]
                await sim.wait_until(lambda: last.finished, 5.0, "the last answer")
                await caller.wait_until(lambda: heard(caller, last) >= last.audio_deltas)
            report = await bridge.report(sim)
        assert report.end_reason == "telephony stop"
        assert report.reconnects == 1 and report.reconnect_failures == 0
        assert report.undelivered_texts == [] and report.given_up == []
        assert user_text_count(sim, "Thanks.") == 1 and user_text_count(sim, "My name is Ada.") == 2
        assert sim.protocol_error_total == 0, sim.error_counts
        assert caller.violations == []
        assert any("openai session lost (openai closed)" in r.getMessage() for r in caplog.records)

    run(scenario())


# --- session_expired ----------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", [Dialect.GA, Dialect.BETA], ids=["ga", "beta"])
def test_session_expired_is_a_new_session_not_the_end_of_the_call(dialect: Dialect) -> None:
    """The 60-minute cap (``session_expired``, then a close) while idle: a new session with the
    history, no response asked for (none was cut off), and the next turn is answered there."""

    async def scenario() -> None:
        sim = simulator()
        async with sim, bridge_server(sim, bridge_config(dialect)) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                greeting = await wait_served(sim, caller, connection=0)
                await sim.wait_until(lambda: greeting.done_sent, 5.0, "greeting done")
                await asyncio.sleep(0.05)  # the done reaches the bridge: nothing in progress
                sim.expire_sessions()
                await sim.wait_until(lambda: len(sim.connections) >= 2, 10.0, "a reconnect")
                assert sim.connections[0].expired
                await sim.wait_until(
                    lambda: len(items_created(sim, 1)) >= 1, 5.0, "the history restored"
                )
                assert items_created(sim, 1) == [("assistant", "Answer 1 on connection 0.")]
                assert sim.connections[1].items[0]["role"] == "assistant"
                await caller.type_text("Still there?")
                answer = await wait_served(sim, caller, connection=1)
                assert answer.metadata is not None and answer.metadata[REASON_KEY] == "user_text"
            report = await bridge.report(sim)
        adapter = GA_CLIENT if dialect is Dialect.GA else BETA_CLIENT
        assert_valid_items(sim, 1, adapter)
        assert report.end_reason == "telephony stop"
        assert report.reconnects == 1
        assert report.server_errors == {"session_expired": 1}
        assert (
            sim.client_events("response.create", connection=1)[0]["response"]["metadata"][
                REASON_KEY
            ]
            == "user_text"
        )
        assert report.undelivered_texts == []
        assert sim.protocol_error_total == 0, sim.error_counts

    run(scenario())


# --- held text ----------------------------------------------------------------------------------


def test_text_held_during_a_response_is_delivered_once_on_the_new_session() -> None:
    """Text typed during an answer is held until that answer's ``response.done``; the socket
    drops first.  The text reaches the new session exactly once (never the old one), as does a
    text the application sends while the bridge is between sessions (the first reconnect is
    refused), and is not reported undelivered."""

    async def scenario() -> None:
        sim = simulator()
        async with sim, bridge_server(sim, bridge_config()) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                # The greeting is interrupted, and its cancel is never acknowledged.
                sim.fault_next_response(ResponseFaults(cancel_ack_delay_s=30.0))
                playing = await wait_playing(sim, caller, after=0)
                await caller.type_text("Actually, a window seat.")
                await sim.wait_until(
                    lambda: playing.cancel_requested_at is not None, 5.0, "the cancel"
                )
                assert user_text_count(sim, "Actually, a window seat.") == 0  # held
                sim.refuse_connections(1)
                sim.drop_connections()
                await sim.wait_until(lambda: sim.refused == 1, 10.0, "a refused reconnect")
                # Between sessions (the bridge backs off before its second attempt).
                bridge.bridges[0].send_user_text("And no meal, please.")
                await sim.wait_until(lambda: len(sim.connections) >= 2, 10.0, "a reconnect")
                answer = await wait_served(sim, caller, connection=1)
                assert answer.metadata is not None and answer.metadata[REASON_KEY] == "user_text"
            report = await bridge.report(sim)
        assert items_created(sim, 1) == [
            ("user", "Actually, a window seat."),
            ("user", "And no meal, please."),
        ]
        assert user_text_count(sim, "Actually, a window seat.") == 1
        assert user_text_count(sim, "And no meal, please.") == 1
        assert len(sim.client_events("response.create", connection=1)) == 1
        assert report.undelivered_texts == []
        assert report.reconnects == 1 and report.reconnect_failures == 1
        assert report.end_reason == "telephony stop"
        assert sim.protocol_error_total == 0, sim.error_counts

    run(scenario())


# --- retries exhausted --------------------------------------------------------------------------


def test_when_reconnects_run_out_the_call_ends_and_held_text_goes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        sim = simulator()
        config = bridge_config(reconnect_attempts=3)
        async with (
            sim,
            bridge_server(sim, config) as bridge,
            FakeTwilioCaller(bridge.url, CALLER) as caller,
        ):
            sim.fault_next_response(ResponseFaults(cancel_ack_delay_s=30.0))
            playing = await wait_playing(sim, caller, after=0)
            await caller.type_text("Call me back.")
            await sim.wait_until(lambda: playing.cancel_requested_at is not None, 5.0, "the cancel")
            sim.refuse_connections()
            sim.drop_connections()
            report = await bridge.report(sim)
            await caller.wait_closed(10.0)
        assert report.end_reason == "openai reconnect failed after 3 attempts"
        assert report.undelivered_texts == ["Call me back."]
        assert report.reconnects == 0 and report.reconnect_failures == 3
        assert sim.refused == 3 and len(sim.connections) == 1
        assert user_text_count(sim, "Call me back.") == 0
        messages = [r.getMessage() for r in caplog.records]
        assert any("openai reconnect failed after 3 attempts" in m for m in messages)

    caplog.set_level(logging.INFO, logger="realtime_fsm")
    run(scenario())


# --- fatal codes --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["invalid_api_key", "insufficient_quota"])
def test_fatal_error_codes_end_the_call_without_a_retry(code: str) -> None:
    async def scenario() -> None:
        sim = simulator()
        async with (
            sim,
            bridge_server(sim, bridge_config()) as bridge,
            FakeTwilioCaller(bridge.url, CALLER) as caller,
        ):
            await wait_served(sim, caller, connection=0)
            sim.inject_error(code, "fatal", error_type="invalid_request_error")
            report = await bridge.report(sim)
            await caller.wait_closed(10.0)
        assert report.end_reason == f"openai error {code}"
        assert report.reconnects == 0 and report.reconnect_failures == 0
        assert len(sim.connections) == 1

    run(scenario())


# --- the public API when the call is not running ------------------------------------------------


class _IdleSocket:
    async def recv(self) -> str:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(self, message: str) -> None:
        return None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        return None


def test_send_user_text_before_start_and_after_the_end_raises_call_not_active() -> None:
    async def scenario() -> None:
        bridge = CallBridge(_IdleSocket(), _IdleSocket())
        with pytest.raises(CallNotActive):
            bridge.send_user_text("too early")
        with pytest.raises(CallNotActive):
            bridge.request_response()
        assert not bridge.active

        sim = simulator()
        async with sim, bridge_server(sim, bridge_config()) as server:
            async with FakeTwilioCaller(server.url, CALLER) as caller:
                await wait_served(sim, caller, connection=0)
                live = server.bridges[0]
                assert live.active
            await server.report(sim)
        with pytest.raises(CallNotActive):
            live.send_user_text("too late")
        assert server.reports[0].undelivered_texts == []

    run(scenario())


class _QueueSocket:
    """In memory: ``recv`` returns what was fed; ``send`` never returns when ``stuck`` (a peer
    that stopped reading)."""

    def __init__(self, *, stuck: bool = False) -> None:
        self.inbox: asyncio.Queue[str] = asyncio.Queue()
        self.stuck = stuck
        self.sent: list[str] = []

    async def recv(self) -> str:
        return await self.inbox.get()

    async def send(self, message: str) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        self.sent.append(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        return None


START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
        "callSid": "CA0123456789abcdef0123456789abcdef",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
    "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
}


def test_app_text_that_cannot_be_queued_ends_the_call_and_comes_back() -> None:
    """OpenAI stops reading: the app's texts fill the queue.  ``send_user_text`` never raises
    a private error into the app; the call ends with the reason, and every text the app handed
    over is reported undelivered, in order."""

    async def scenario() -> None:
        twilio, openai_sock = _QueueSocket(), _QueueSocket(stuck=True)
        returned: list[str] = []
        bridge = CallBridge(
            twilio,
            openai_sock,
            BridgeConfig(
                max_queue=4, lifecycle=LifecycleConfig(create_timeout=0.2, cancel_timeout=0.2)
            ),
            on_undelivered=lambda texts: returned.extend(texts),
        )
        twilio.inbox.put_nowait(json.dumps(START))
        task = asyncio.create_task(bridge.run())
        while not bridge.active:
            await asyncio.sleep(0.001)
        texts = [f"text {n}" for n in range(6)]
        taken = []
        for text in texts:
            try:
                bridge.send_user_text(text)
            except CallNotActive:
                break
            taken.append(text)
        report = await asyncio.wait_for(task, 10.0)
        assert report.end_reason == "openai socket not keeping up (queue full)"
        assert taken and report.undelivered_texts == taken
        assert returned == report.undelivered_texts
        with pytest.raises(CallNotActive):
            bridge.send_user_text("after the end")

    run(scenario())


class _ShortLivedSocket(_QueueSocket):
    """A session that drops on its own after what it was fed (a ``session.created`` or not)."""

    def __init__(self, *frames: JSON) -> None:
        super().__init__()
        for frame in frames:
            self.inbox.put_nowait(json.dumps(frame))

    async def recv(self) -> str:
        if self.inbox.empty():
            await asyncio.sleep(0.01)
            raise WebSocketClosed(1006, "dropped")
        return await super().recv()


SESSION_CREATED: JSON = {
    "type": "session.created",
    "event_id": "event_1",
    "session": {"type": "realtime", "id": "sess_1", "object": "realtime.session"},
}


@pytest.mark.parametrize("proven", [False, True], ids=["never_configured", "configured"])
def test_sessions_that_keep_dropping_do_not_loop_forever(proven: bool) -> None:
    """Every new session drops at once.  If none ever says ``session.created``, each one is a
    failed attempt and the attempts run out; if each does, it is a real session, and
    ``max_reconnects`` ends the call instead."""

    async def scenario() -> None:
        frames = (SESSION_CREATED,) if proven else ()
        connected: list[_ShortLivedSocket] = []

        async def connector() -> _ShortLivedSocket:
            sock = _ShortLivedSocket(*frames)
            connected.append(sock)
            return sock

        twilio = _QueueSocket()
        twilio.inbox.put_nowait(json.dumps(START))
        config = BridgeConfig(
            reconnect_attempts=3,
            reconnect_base_delay=0.0,
            max_reconnects=5,
            greeting="Hello.",
        )
        bridge = CallBridge(twilio, _ShortLivedSocket(*frames), config, reconnect=connector)
        report = await asyncio.wait_for(bridge.run(), 10.0)
        if proven:
            assert report.end_reason == "openai session lost (openai closed) after 5 reconnects"
            assert report.reconnects == 5 and len(connected) == 5
        else:
            assert report.end_reason == "openai reconnect failed after 3 attempts"
            assert report.reconnects == 3 and len(connected) == 3
        # The greeting was asked of every session and is given up once, at the end.
        for sock in connected:
            creates = [m for m in sock.sent if '"response.create"' in m]
            assert len(creates) == 1, sock.sent
        assert [g.request_reasons for g in report.given_up] == [("greeting",)]

    run(scenario())


# --- simulator knobs ----------------------------------------------------------------------------


def test_simulator_session_cap_and_refused_handshakes() -> None:
    async def scenario() -> None:
        async with FakeRealtimeServer(FakeRealtimeConfig(session_max_s=0.1)) as sim:
            async with connect(sim.url) as ws:
                types = []
                with pytest.raises(ConnectionClosed):
                    while True:
                        event = await ws.recv()
                        types.append(event)
                assert '"session.created"' in types[0]
                assert '"session_expired"' in types[-1]
                assert ws.close_code == 1000
            sim.refuse_connections(1)
            with pytest.raises(InvalidStatus) as refused:
                async with connect(sim.url):
                    pass
            assert refused.value.response.status_code == 503
            async with connect(sim.url) as ws:  # only one was refused
                assert "session.created" in str(await ws.recv())
            assert sim.refused == 1 and len(sim.connections) == 2

    run(scenario())


# --- bounded history ----------------------------------------------------------------------------


def test_history_keeps_the_most_recent_items_within_both_bounds() -> None:
    history = ConversationHistory(max_items=3, max_chars=20)
    history.add("user", "  hello  ")
    history.add("assistant", "")  # blank: nothing to restore
    history.add("assistant", "hi there")
    assert history.items() == (HistoryItem("user", "hello"), HistoryItem("assistant", "hi there"))
    assert history.chars == 13
    history.add("user", "what time")  # 22 chars: the oldest goes
    assert [i.text for i in history] == ["hi there", "what time"]
    history.add("assistant", "noon")
    history.add("user", "ok")  # 4 items: the oldest goes
    assert [i.text for i in history] == ["what time", "noon", "ok"]
    assert history.dropped == 2
    assert len(history) == 3 and history.chars == 15


def test_history_cuts_an_item_longer_than_the_whole_budget() -> None:
    history = ConversationHistory(max_items=5, max_chars=10)
    history.add("user", "short")
    history.add("assistant", "x" * 50)
    assert history.items() == (HistoryItem("assistant", "x" * 10),)
    assert history.chars == 10


def test_history_with_zero_bounds_keeps_nothing_and_refuses_bad_input() -> None:
    history = ConversationHistory(max_items=0, max_chars=100)
    history.add("user", "hello")
    assert history.items() == () and history.dropped == 1
    with pytest.raises(ValueError):
        ConversationHistory(max_items=-1)
    with pytest.raises(ValueError):
        history.add("system", "x")  # type: ignore[arg-type]


def test_bridge_config_refuses_bad_reconnect_settings() -> None:
    with pytest.raises(ValueError):
        BridgeConfig(reconnect_attempts=0)
    with pytest.raises(ValueError):
        BridgeConfig(reconnect_base_delay=-1.0)


# --- item builders against the openai package's types -------------------------------------------


@pytest.mark.parametrize("role", ["user", "assistant"])
def test_restored_message_items_are_valid_client_events(role: str) -> None:
    ga = render_message_item(role, "It is noon.", event_id="rtfsm_restore_1")  # type: ignore[arg-type]
    beta = render_message_item(role, "It is noon.", dialect=Dialect.BETA)  # type: ignore[arg-type]
    GA_CLIENT.validate_python(ga)
    BETA_CLIENT.validate_python(beta)
    ga_item = ga_types.ConversationItemCreateEvent.model_validate(ga).item
    beta_item = beta_types.ConversationItemCreateEvent.model_validate(beta).item
    assert ga_item.role == role and beta_item.role == role
    expected = {"user": ("input_text", "input_text"), "assistant": ("output_text", "text")}[role]
    assert (ga["item"]["content"][0]["type"], beta["item"]["content"][0]["type"]) == expected
    assert ga["event_id"] == "rtfsm_restore_1" and "event_id" not in beta
    with pytest.raises(LocalProtocolError):
        render_message_item("system", "x")  # type: ignore[arg-type]


# --- in-memory reconnect races (review regressions) ---------------------------------------------


class _Twilio:
    """The telephony side in memory: ``hang_up`` ends the call."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[str] = []
        self.inbox.put_nowait(json.dumps(START))

    async def recv(self) -> str:
        frame = await self.inbox.get()
        if frame is None:
            raise WebSocketClosed(1000, "hung up")
        return frame

    async def send(self, message: str) -> None:
        self.sent.append(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.inbox.put_nowait(None)

    def media(self) -> None:
        self.inbox.put_nowait(json.dumps(MEDIA))

    def hang_up(self) -> None:
        self.inbox.put_nowait(None)


MEDIA: JSON = {
    "event": "media",
    "sequenceNumber": "2",
    "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
    "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "AAAA"},
}


class _Transport:
    """Never backed up: the bridge's direct send path is taken when the socket looks open."""

    def get_write_buffer_size(self) -> int:
        return 0


class _Session:
    """An OpenAI socket in memory whose session the test ends with ``lose``.

    ``stall_after``: sends after that many hang (a peer that stopped reading).
    ``fail_append``: an ``input_audio_buffer.append`` send waits for :attr:`release`, then
    fails, like a send on a closing socket (given a transport, so it is sent directly)."""

    def __init__(self, *, stall_after: int | None = None, fail_append: bool = False) -> None:
        self.sent: list[str] = []
        self.stall_after = stall_after
        self.fail_append = fail_append
        self.transport = _Transport() if fail_append else None
        self.append_started = asyncio.Event()
        self.release = asyncio.Event()
        self.lost = asyncio.Event()

    def lose(self) -> None:
        self.lost.set()

    async def recv(self) -> str:
        await self.lost.wait()
        raise WebSocketClosed(1006, "dropped")

    async def send(self, message: str) -> None:
        if self.fail_append and "input_audio_buffer.append" in message:
            self.append_started.set()
            await self.release.wait()
            raise WebSocketClosed(1006, "dropped")
        if self.stall_after is not None and len(self.sent) >= self.stall_after:
            await asyncio.Event().wait()
        self.sent.append(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.lost.set()

    def types(self) -> list[str]:
        return [json.loads(m)["type"] for m in self.sent]

    def events(self, kind: str) -> list[JSON]:
        return [e for e in map(json.loads, self.sent) if e["type"] == kind]


_until = poller(10.0, 0.002)


def _memory_config(**overrides: Any) -> BridgeConfig:
    config = BridgeConfig(
        session=SessionConfig(create_response=False, interrupt_response=False),
        reconnect_base_delay=0.01,
        reconnect_max_delay=0.02,
    )
    return attrs.evolve(config, **overrides)


def test_a_text_lost_with_its_create_is_answered_once_on_the_new_session() -> None:
    """The text and its ``response.create`` were queued for a socket that stopped reading when
    the session dropped: the new session gets the text once and one ``response.create``, and
    nothing is left pending to ask for a second answer after the first."""

    async def scenario() -> None:
        twilio, old, new = _Twilio(), _Session(stall_after=1), _Session()

        async def connector() -> _Session:
            return new

        bridge = CallBridge(twilio, old, _memory_config(), reconnect=connector)
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the first session.update")
        bridge.send_user_text("book a table")
        await asyncio.sleep(0.02)  # the text frame is stuck in the old socket's send
        old.lose()
        await _until(lambda: new.events("response.create"), "the new session's create")
        await asyncio.sleep(0.05)  # room for a wrong second create to show
        assert new.types() == ["session.update", "conversation.item.create", "response.create"]
        item = new.events("conversation.item.create")[0]
        assert item["item"]["content"][0]["text"] == "book a table"
        assert item["event_id"].startswith("rtfsm_restore_")
        machine = bridge.machine
        assert machine is not None and machine.pending == []
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.reconnects == 1 and report.undelivered_texts == []
        # Written once (on the new session); the stuck write on the old one never completed.
        assert report.user_texts_sent == 1

    run(scenario())


def test_restored_history_and_re_delivered_text_have_distinct_event_id_kinds() -> None:
    """History replayed on a new session is ``<prefix>_history_<n>``; text held while
    reconnecting and delivered there for the first time is ``<prefix>_restore_<n>``.  The
    request carried over for the first text and the one for the held text make one create."""

    async def scenario() -> None:
        twilio, old, new = _Twilio(), _Session(), _Session()
        gate = asyncio.Event()

        async def connector() -> _Session:
            await gate.wait()
            return new

        config = _memory_config(lifecycle=LifecycleConfig(event_id_prefix="acme"))
        bridge = CallBridge(twilio, old, config, reconnect=connector)
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the first session.update")
        bridge.send_user_text("first")
        await _until(lambda: old.events("response.create"), "the first create")
        old.lose()
        await _until(lambda: bridge.reconnecting, "the reconnect")
        bridge.send_user_text("second")  # held: no session to take it
        gate.set()
        await _until(lambda: new.events("response.create"), "the new session's create")
        await asyncio.sleep(0.05)
        items = [
            (e["event_id"], e["item"]["role"], e["item"]["content"][0]["text"])
            for e in new.events("conversation.item.create")
        ]
        assert [(role, text) for _, role, text in items] == [("user", "first"), ("user", "second")]
        assert items[0][0].startswith("acme_history_")
        assert items[1][0].startswith("acme_restore_")
        creates = new.events("response.create")
        assert len(creates) == 1, creates
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.user_texts_sent == 2  # "first" on the old socket, "second" on the new

    run(scenario())


def test_caller_audio_whose_send_failed_on_the_lost_session_never_reaches_the_new_one() -> None:
    """A direct send of caller audio on the old socket fails after the session was replaced:
    the frame is dropped and counted, not queued ahead of the new session's session.update."""

    async def scenario() -> None:
        twilio, old, new = _Twilio(), _Session(fail_append=True), _Session()

        async def connector() -> _Session:
            old.release.set()  # the old socket's send fails while the new one is dialled
            await asyncio.sleep(0.02)
            return new

        bridge = CallBridge(twilio, old, _memory_config(), reconnect=connector)
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the first session.update")
        twilio.media()
        await asyncio.wait_for(old.append_started.wait(), 10.0)
        old.lose()
        await _until(lambda: new.sent, "the new session.update")
        twilio.media()  # the new session hears the caller again
        await _until(lambda: "input_audio_buffer.append" in new.types(), "audio on the new one")
        assert new.types()[0] == "session.update"
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.media_in == 2 and report.media_dropped == 1
        assert new.types().count("input_audio_buffer.append") == 1

    run(scenario())


def test_sessions_that_drop_soon_after_starting_are_backed_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each new session says ``session.created`` (so it is no failed attempt) and drops at
    once: the reconnects are spaced by the backoff delays instead of following at once."""
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    async def scenario() -> None:
        connected: list[_ShortLivedSocket] = []

        async def connector() -> _ShortLivedSocket:
            sock = _ShortLivedSocket(SESSION_CREATED)
            connected.append(sock)
            return sock

        config = BridgeConfig(reconnect_base_delay=0.01, reconnect_max_delay=0.04, max_reconnects=4)
        twilio = _Twilio()
        bridge = CallBridge(twilio, _ShortLivedSocket(SESSION_CREATED), config, reconnect=connector)
        report = await asyncio.wait_for(bridge.run(), 10.0)
        assert report.end_reason == "openai session lost (openai closed) after 4 reconnects"
        assert len(connected) == 4

    run(scenario())
    delays = [
        r.getMessage().rsplit(" ", 1)[-1]
        for r in caplog.records
        if "short in a row): reconnecting in" in r.getMessage()
    ]
    assert delays == ["0.01s", "0.02s", "0.04s", "0.04s"]


# --- what a cut-off answer and an unanswered turn carry to the new session ------------------------


def test_a_greeting_cut_off_by_a_lost_session_is_asked_for_again_with_its_instructions() -> None:
    """The greeting's instructions live in its ``response.create``, not in the session or the
    history: a greeting cut off mid-air is asked for again with them (and its metadata)."""

    async def scenario() -> None:
        sim = simulator()
        async with sim, bridge_server(sim, bridge_config()) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                cut = await wait_playing(sim, caller, after=0)
                (greeting,) = sim.client_events("response.create", connection=0)
                assert cut.connection == 0 and greeting["response"]["metadata"][REASON_KEY] == (
                    "greeting"
                )
                sim.drop_connections()
                await wait_served(sim, caller, connection=1)
                creates = sim.client_events("response.create", connection=1)
                assert len(creates) == 1
                assert creates[0]["response"]["instructions"] == "Greet the caller."
                assert creates[0]["response"]["metadata"][REASON_KEY] == "reconnect"
            report = await bridge.report(sim)
        assert report.reconnects == 1 and report.given_up == []
        assert sim.protocol_error_total == 0, sim.error_counts

    run(scenario())


class _ServerSession(_Session):
    """An OpenAI socket in memory that the test also speaks through, as the server."""

    def __init__(self) -> None:
        super().__init__()
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()

    def feed(self, *events: JSON) -> None:
        for event in events:
            self.inbox.put_nowait(json.dumps(event))

    def answer(self, response_id: str, create: int) -> JSON:
        """``response.created`` for the ``create``-th ``response.create`` sent here (its
        metadata echoed, so the bridge takes the response for its own)."""
        metadata = self.events("response.create")[create]["response"]["metadata"]
        return _created(response_id, metadata)

    def lose(self) -> None:
        self.inbox.put_nowait(None)

    async def recv(self) -> str:
        frame = await self.inbox.get()
        if frame is None:
            raise WebSocketClosed(1006, "dropped")
        return frame

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.inbox.put_nowait(None)


def _spoken_turn(item_id: str) -> list[JSON]:
    """The server's events for a caller turn its VAD detected and committed."""
    return [
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 100, "item_id": item_id},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": item_id},
        {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": None},
    ]


@pytest.mark.parametrize("transcribed", [True, False], ids=["transcribed", "not-transcribed"])
def test_a_turn_the_lost_session_never_answered_is_answered_when_its_words_are_known(
    transcribed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Server VAD committed the caller's turn; the session is lost before the server's answer
    began.  With the turn's transcript in hand the new session gets it as the last history item
    and one ``response.create`` for it; without one there is nothing to answer, and the loss is
    counted and logged instead of a made-up answer."""
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    async def scenario() -> None:
        twilio, old, new = _Twilio(), _ServerSession(), _ServerSession()

        async def connector() -> _ServerSession:
            return new

        session = SessionConfig(create_response=True, interrupt_response=True)
        bridge = CallBridge(twilio, old, _memory_config(session=session), reconnect=connector)
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the first session.update")
        old.feed(*_spoken_turn("item_turn_1"))
        await _until(lambda: _awaiting(bridge), "the commit")
        if transcribed:
            old.feed(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": "item_turn_1",
                    "content_index": 0,
                    "transcript": "What time do you open?",
                }
            )
            await _until(lambda: len(bridge.history) == 1, "the transcript")
        old.lose()
        await _until(lambda: new.sent, "the new session.update")
        await asyncio.sleep(0.05)  # room for a wrong create to show
        if transcribed:
            assert new.types() == [
                "session.update",
                "conversation.item.create",
                "response.create",
            ]
            item = new.events("conversation.item.create")[0]["item"]
            assert (item["role"], item["content"][0]["text"]) == ("user", "What time do you open?")
            create = new.events("response.create")[0]["response"]
            assert create["metadata"][REASON_KEY] == "user_turn"
        else:
            assert new.types() == ["session.update"]
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.reconnects == 1
        assert report.turns_lost == (0 if transcribed else 1)

    run(scenario())
    lost_logged = any(
        "caller turn(s) lost with the session" in r.getMessage() for r in caplog.records
    )
    assert lost_logged is not transcribed


def _awaiting(bridge: CallBridge) -> bool:
    machine = bridge.machine
    return machine is not None and machine.awaiting_server_response()


def test_an_answer_cut_off_with_a_request_queued_behind_it_is_asked_for_first() -> None:
    """The application asked for another response (other instructions) while one played; the
    session is lost.  The new session re-asks for the cut-off one, then the queued one after
    its ``response.done``: neither is lost, in the order they would have played."""

    async def scenario() -> None:
        twilio, old, new = _Twilio(), _ServerSession(), _ServerSession()

        async def connector() -> _ServerSession:
            return new

        bridge = CallBridge(twilio, old, _memory_config(), reconnect=connector)
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the first session.update")
        bridge.request_response("app", instructions="Tell the opening hours.")
        await _until(lambda: old.events("response.create"), "the first create")
        first = old.events("response.create")[0]
        old.feed(_created("resp_1", first["response"]["metadata"]))
        await _until(lambda: _state(bridge) == "active", "the response active")
        bridge.request_response("app", instructions="Say goodbye.")
        old.lose()
        await _until(lambda: new.events("response.create"), "the new session's create")
        await asyncio.sleep(0.05)
        creates = new.events("response.create")
        assert len(creates) == 1  # one at a time: the second waits for the first's done
        assert creates[0]["response"]["instructions"] == "Tell the opening hours."
        assert creates[0]["response"]["metadata"][REASON_KEY] == "reconnect"
        new.feed(_created("resp_2", creates[0]["response"]["metadata"]), _done("resp_2"))
        await _until(lambda: len(new.events("response.create")) == 2, "the queued create")
        second = new.events("response.create")[1]["response"]
        assert second["instructions"] == "Say goodbye."
        new.feed(_created("resp_3", second["metadata"]), _done("resp_3"))
        await _until(lambda: _state(bridge) == "idle", "both served")
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.reconnects == 1 and report.given_up == []

    run(scenario())


def _state(bridge: CallBridge) -> str | None:
    machine = bridge.machine
    return None if machine is None else machine.state.value


def _created(response_id: str, metadata: dict[str, str]) -> JSON:
    return {
        "type": "response.created",
        "event_id": f"event_{response_id}",
        "response": {
            "id": response_id,
            "object": "realtime.response",
            "status": "in_progress",
            "metadata": metadata,
            "output": [],
        },
    }


def _done(response_id: str) -> JSON:
    return {
        "type": "response.done",
        "event_id": f"event_done_{response_id}",
        "response": {
            "id": response_id,
            "object": "realtime.response",
            "status": "completed",
            "output": [],
        },
    }


STREAM = MEDIA["streamSid"]


def test_hand_commits_across_a_lost_session() -> None:
    """Push-to-talk around a lost session.  A turn the old session confirmed (``committed``)
    and transcribed is answered on the new one from its restored transcript.  A commit it
    never confirmed, and commits made while no session is up (by the application or the
    keypad), took their audio with it: nothing is committed on the new session for them and
    each such loss is counted."""

    async def scenario() -> None:
        twilio, old, new = _Twilio(), _ServerSession(), _ServerSession()
        gate = asyncio.Event()

        async def connector() -> _ServerSession:
            await gate.wait()
            return new

        config = _memory_config(session=SessionConfig(turn_detection=None), commit_on_dtmf="#")
        bridge = CallBridge(twilio, old, config, reconnect=connector)
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the first session.update")
        bridge.commit_user_turn()
        await _until(lambda: "input_audio_buffer.commit" in old.types(), "the commit")
        (commit,) = old.events("input_audio_buffer.commit")
        assert commit["event_id"] == "rtfsm_commit_1"
        transcript = {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_a",
            "content_index": 0,
            "transcript": "When do you open?",
        }
        old.feed(
            {"type": "input_audio_buffer.committed", "item_id": "item_a"},
            transcript,
        )
        await _until(lambda: old.events("response.create"), "the answer asked for")
        bridge.commit_user_turn()  # sent, never confirmed
        await _until(lambda: len(old.events("input_audio_buffer.commit")) == 2, "commit 2")
        old.lose()
        await _until(lambda: bridge.reconnecting, "the reconnect")
        bridge.commit_user_turn()
        key = {"track": "inbound_track", "digit": "#"}
        twilio.inbox.put_nowait(json.dumps({"event": "dtmf", "streamSid": STREAM, "dtmf": key}))
        await _until(lambda: bridge.report.turns_lost == 3, "all three counted")
        gate.set()
        await _until(lambda: new.events("response.create"), "the new session's answer")
        await asyncio.sleep(0.05)
        assert new.types() == ["session.update", "conversation.item.create", "response.create"]
        item = new.events("conversation.item.create")[0]["item"]
        assert (item["role"], item["content"][0]["text"]) == ("user", "When do you open?")
        assert _reasons(new) == ["user_turn"]
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.turns_lost == 3 and report.undelivered_texts == []

    run(scenario())


def _session_event(kind: str, input_format: str, output_format: str) -> JSON:
    audio = {
        "input": {"format": {"type": input_format}, "turn_detection": None},
        "output": {"format": {"type": output_format}},
    }
    return {"type": kind, "session": {"type": "realtime", "id": "sess_1", "audio": audio}}


def test_a_session_that_is_not_mu_law_after_our_update_ends_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``session.created`` shows the server's defaults (24 kHz PCM) before our update applies:
    no reason to act.  A ``session.updated`` still saying PCM would mean noise both ways (the
    bridge passes mu-law through untouched), so the call ends, with the reason and an ERROR
    line, instead of playing it."""
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    async def scenario() -> None:
        twilio, old = _Twilio(), _ServerSession()
        bridge = CallBridge(twilio, old, _memory_config())
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the session.update")
        old.feed(_session_event("session.created", "audio/pcm", "audio/pcm"))
        old.feed(_session_event("session.updated", "audio/pcmu", "audio/pcmu"))
        await asyncio.sleep(0.05)
        assert not task.done() and bridge.active
        old.feed(_session_event("session.updated", "audio/pcmu", "audio/pcm"))
        report = await asyncio.wait_for(task, 10.0)
        assert report.end_reason == "openai session audio is not mu-law (output pcm)"

    run(scenario())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        "call=CA0123456789abcdef0123456789abcdef openai session audio is not mu-law"
        " (output pcm): ending the call"
    ]


def test_a_refused_session_update_ends_the_call_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server answers our ``session.update`` (its own event id, ``<prefix>_session_<n>``)
    with an error: it refused the whole update, so the session runs on its defaults (PCM, its
    own turn detection).  The call ends with the code, and the server's message is logged; an
    error about another event does not end it."""
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    def error(code: str, event_id: str) -> JSON:
        detail = {"type": "invalid_request_error", "code": code, "event_id": event_id}
        return {"type": "error", "event_id": "event_9", "error": {**detail, "message": "Bad."}}

    async def scenario() -> None:
        twilio, old = _Twilio(), _ServerSession()
        bridge = CallBridge(twilio, old, _memory_config())
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the session.update")
        (update,) = old.events("session.update")
        assert update["event_id"] == "rtfsm_session_1"
        old.feed(error("invalid_value", "rtfsm_item_7"))
        await asyncio.sleep(0.05)
        assert not task.done()
        old.feed(error("invalid_value", update["event_id"]))
        report = await asyncio.wait_for(task, 10.0)
        assert report.end_reason == "openai refused session.update (invalid_value)"
        assert report.server_errors == {"invalid_value": 2}

    run(scenario())
    assert any(
        r.levelno == logging.ERROR
        and "openai refused session.update (invalid_value): Bad." in r.getMessage()
        for r in caplog.records
    )


def test_a_beta_bridge_on_a_ga_only_server_ends_the_call_at_its_refused_config() -> None:
    """Over real sockets: a bridge speaking beta to a server that only knows GA.  Its
    ``session.update`` is refused (``unknown_parameter``), and the call ends at once with that
    reason instead of running a session on the server's defaults."""

    async def scenario() -> None:
        sim = simulator(api="ga")
        async with sim, bridge_server(sim, bridge_config(Dialect.BETA, greeting=None)) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                await caller.wait_closed(10.0)
            report = await bridge.report(sim)
        assert report.end_reason == "openai refused session.update (unknown_parameter)"
        assert sim.client_events("response.create") == []

    run(scenario())


def _vad_bridge(
    old: _ServerSession, new: _ServerSession, **overrides: Any
) -> tuple[_Twilio, CallBridge, asyncio.Task[CallReport]]:
    async def connector() -> _ServerSession:
        return new

    session = SessionConfig(create_response=True, interrupt_response=True)
    twilio = _Twilio()
    bridge = CallBridge(
        twilio, old, _memory_config(session=session, **overrides), reconnect=connector
    )
    return twilio, bridge, asyncio.create_task(bridge.run())


def _transcript(item_id: str, text: str) -> JSON:
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": item_id,
        "content_index": 0,
        "transcript": text,
    }


def test_an_older_transcript_is_not_taken_for_the_lost_turns_words() -> None:
    """The first turn was transcribed and answered; the caller's second turn was committed,
    and the session was lost before its transcript came.  The newest restored item is then the
    *first* turn's words: answering it would answer the wrong turn, so the second turn is
    counted lost and nothing is asked for."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _vad_bridge(old, new)
        await _until(lambda: old.sent, "the first session.update")
        old.feed(
            *_spoken_turn("item_1"),
            _transcript("item_1", "Book me for Monday."),
            {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
            _done("resp_1"),
            *_spoken_turn("item_2"),
        )
        await _until(lambda: _awaiting(bridge) and _state(bridge) == "idle", "turn 2 committed")
        old.lose()
        await _until(lambda: new.sent, "the new session.update")
        await asyncio.sleep(0.05)
        assert new.types() == ["session.update", "conversation.item.create"]
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.turns_lost == 1

    run(scenario())


def test_a_create_the_caller_interrupted_is_not_carried_into_the_turns_answer() -> None:
    """The greeting's create is unanswered when the caller speaks over it (its cancel
    deferred), and the server's VAD commits the turn, whose transcript arrives; the session is
    lost.  The greeting was interrupted: it is reported given up, not merged into the new
    session's answer, which answers the caller's words with the session's own instructions."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _vad_bridge(old, new, greeting="Greet the caller.")
        await _until(lambda: old.events("response.create"), "the greeting's create")
        old.feed(*_spoken_turn("item_1"), _transcript("item_1", "What time do you open?"))
        await _until(lambda: len(bridge.history) == 1, "the transcript")
        old.lose()
        await _until(lambda: new.events("response.create"), "the new session's answer")
        await asyncio.sleep(0.05)
        (create,) = new.events("response.create")
        assert "instructions" not in create["response"]
        assert create["response"]["metadata"][REASON_KEY] == "user_turn"
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        # (The new session's create is still unanswered at the hang-up: given up as closed.)
        assert [(g.reason, g.request_reasons) for g in report.given_up] == [
            ("interrupted", ("greeting",)),
            ("closed:telephony closed", ("user_turn",)),
        ]
        assert report.turns_lost == 0

    run(scenario())


# --- which answers a lost session's turns get (re-review regressions) -----------------------------


def _bridge_on(
    sessions: list[_ServerSession], session: SessionConfig, **overrides: Any
) -> tuple[_Twilio, CallBridge, asyncio.Task[CallReport]]:
    """A bridge on ``sessions[0]`` whose reconnects get the next ones, in order."""
    spare = iter(sessions[1:])

    async def connector() -> _ServerSession:
        return next(spare)

    twilio = _Twilio()
    config = _memory_config(session=session, **overrides)
    bridge = CallBridge(twilio, sessions[0], config, reconnect=connector)
    return twilio, bridge, asyncio.create_task(bridge.run())


PTT = SessionConfig(turn_detection=None)
VAD = SessionConfig(create_response=True, interrupt_response=True)


def _committed(item_id: str | None) -> JSON:
    return {"type": "input_audio_buffer.committed", "item_id": item_id}


def _server_created(response_id: str) -> JSON:
    return {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}}


def _reasons(session: _ServerSession) -> list[str]:
    return [c["response"]["metadata"][REASON_KEY] for c in session.events("response.create")]


async def _ends(twilio: _Twilio, task: asyncio.Task[CallReport]) -> CallReport:
    await asyncio.sleep(0.05)  # room for a wrong create to show
    twilio.hang_up()
    return await asyncio.wait_for(task, 10.0)


def test_a_cut_off_answer_to_a_known_turn_is_retold_when_a_later_turn_is_lost() -> None:
    """Push-to-talk: the answer to turn 1 (transcribed) plays; turn 2 is committed and queued
    behind it, and the session is lost before turn 2's words came.  Turn 1's answer is retold;
    only turn 2, whose words are unknown, is dropped and counted."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _bridge_on([old, new], PTT)
        await _until(lambda: old.sent, "the session.update")
        bridge.commit_user_turn()
        old.feed(_committed("item_1"), _transcript("item_1", "Book me for Monday."))
        await _until(lambda: old.events("response.create"), "turn 1's answer asked for")
        old.feed(old.answer("resp_1", 0))
        await _until(lambda: _state(bridge) == "active", "turn 1's answer playing")
        bridge.commit_user_turn()
        old.feed(_committed("item_2"))
        await _until(lambda: bool(bridge.machine and bridge.machine.pending), "turn 2 queued")
        old.lose()
        await _until(lambda: new.events("response.create"), "the retelling")
        await asyncio.sleep(0.05)
        assert _reasons(new) == ["reconnect"]
        new.feed(new.answer("resp_2", 0))
        new.feed(_done("resp_2"))
        report = await _ends(twilio, task)
        assert _reasons(new) == ["reconnect"], "turn 2 is not answered from turn 1's words"
        assert report.turns_lost == 1

    run(scenario())


def test_what_else_the_cut_off_answer_served_is_retold_without_the_lost_turn() -> None:
    """One response served the caller's turn and a tool's request together; the turn's words
    never came.  The tool's request is retold on the new session (not dropped with the turn,
    and not lost without a report)."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _bridge_on([old, new], PTT)
        await _until(lambda: old.sent, "the session.update")
        bridge.request_response("warm_up")
        await _until(lambda: old.events("response.create"), "the first create")
        old.feed(old.answer("resp_0", 0))
        await _until(lambda: _state(bridge) == "active", "resp_0 playing")
        bridge.commit_user_turn()
        old.feed(_committed("item_1"))
        bridge.request_response("tool")
        old.feed(_done("resp_0"))
        await _until(lambda: len(old.events("response.create")) == 2, "the coalesced create")
        assert _reasons(old)[0] == "warm_up"
        assert sorted(_reasons(old)[1].split("+")) == ["tool", "user_turn"]
        old.feed(old.answer("resp_1", 1))
        await _until(lambda: _state(bridge) == "active", "resp_1 playing")
        old.lose()
        await _until(lambda: new.events("response.create"), "the retelling")
        report = await _ends(twilio, task)
        assert _reasons(new) == ["reconnect"]
        assert report.turns_lost == 1

    run(scenario())


def test_a_greeting_cut_off_is_retold_on_its_own_before_the_callers_turn() -> None:
    """Push-to-talk: the greeting plays, the caller's turn is committed and transcribed and
    waits behind it; the session is lost.  The greeting is retold with its instructions,
    alone; the caller's turn is answered after it, with the session's own instructions."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _bridge_on([old, new], PTT, greeting="Greet the caller.")
        await _until(lambda: old.events("response.create"), "the greeting's create")
        old.feed(old.answer("resp_g", 0))
        await _until(lambda: _state(bridge) == "active", "the greeting playing")
        bridge.commit_user_turn()
        old.feed(_committed("item_1"), _transcript("item_1", "Are you open today?"))
        await _until(lambda: len(bridge.history) == 1, "the transcript")
        old.lose()
        await _until(lambda: new.events("response.create"), "the retold greeting")
        await asyncio.sleep(0.05)
        (greeting,) = new.events("response.create")
        assert greeting["response"]["instructions"] == "Greet the caller."
        assert greeting["response"]["metadata"][REASON_KEY] == "reconnect"
        new.feed(_created("resp_2", greeting["response"]["metadata"]), _done("resp_2"))
        await _until(lambda: len(new.events("response.create")) == 2, "the turn's answer")
        answer = new.events("response.create")[1]["response"]
        assert "instructions" not in answer and answer["metadata"][REASON_KEY] == "user_turn"
        report = await _ends(twilio, task)
        assert report.turns_lost == 0

    run(scenario())


def test_each_unconfirmed_or_unnamed_turn_counts_and_a_refused_commit_does_not() -> None:
    """Two commits the session never confirmed are two lost turns; a commit the server refused
    as empty is no turn at all; a ``committed`` without an item id cannot be matched with a
    transcript, so its words count as unknown (and a transcript of an older item does not
    stand in for them)."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _bridge_on([old, new], PTT)
        await _until(lambda: old.sent, "the session.update")
        bridge.commit_user_turn()  # refused as empty
        await _until(lambda: old.events("input_audio_buffer.commit"), "commit 1")
        detail = {
            "type": "invalid_request_error",
            "code": "input_audio_buffer_commit_empty",
            "message": "Buffer too small.",
            "event_id": "rtfsm_commit_1",
        }
        old.feed({"type": "error", "event_id": "event_1", "error": detail})
        old.feed(_transcript("item_0", "An older turn."))
        bridge.commit_user_turn()  # confirmed, but without an item id
        await _until(lambda: len(old.events("input_audio_buffer.commit")) == 2, "commit 2")
        old.feed(_committed(None))
        await _until(lambda: old.events("response.create"), "its answer asked for")
        bridge.commit_user_turn()
        bridge.commit_user_turn()  # two never confirmed
        await _until(lambda: len(old.events("input_audio_buffer.commit")) == 4, "commits 3, 4")
        old.lose()
        await _until(lambda: new.sent, "the new session.update")
        report = await _ends(twilio, task)
        assert "response.create" not in new.types()
        assert report.turns_lost == 3

    run(scenario())


def test_the_servers_cut_off_answer_to_an_unknown_turn_is_not_retold() -> None:
    """Server VAD answers by itself: its answer to a turn whose words never came is cut off.
    Retold, it would answer the turn before; it is not, and the turn is counted."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _bridge_on([old, new], VAD)
        await _until(lambda: old.sent, "the session.update")
        old.feed(*_spoken_turn("item_1"), _server_created("resp_1"))
        await _until(lambda: _state(bridge) == "active", "the server's answer playing")
        old.lose()
        await _until(lambda: new.sent, "the new session.update")
        report = await _ends(twilio, task)
        assert new.types() == ["session.update"]
        assert report.turns_lost == 1

    run(scenario())


def test_what_a_session_knew_of_its_turns_does_not_outlive_it() -> None:
    """Session 1 loses an untranscribed turn (counted once).  Session 2 is cut off in the
    middle of a response the server made by itself, with no turn of its own: that response
    is retold on session 3, and session 1's lost turn is not counted again."""

    async def scenario() -> None:
        one, two, three = _ServerSession(), _ServerSession(), _ServerSession()
        twilio, bridge, task = _bridge_on([one, two, three], VAD)
        await _until(lambda: one.sent, "session 1's update")
        one.feed(*_spoken_turn("item_1"))
        await _until(lambda: _awaiting(bridge), "the turn committed")
        one.lose()
        await _until(lambda: two.sent, "session 2's update")
        await _until(lambda: bridge.report.turns_lost == 1, "the lost turn counted")
        two.feed(_server_created("resp_9"))
        await _until(lambda: _state(bridge) == "active", "the server's response playing")
        two.lose()
        await _until(lambda: three.events("response.create"), "the retelling on session 3")
        report = await _ends(twilio, task)
        assert _reasons(three) == ["reconnect"]
        assert report.turns_lost == 1

    run(scenario())

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
                # The done reaches the bridge: nothing in progress when the session expires.
                await sim.wait_until(
                    lambda: (
                        bridge.bridges[0].machine is not None
                        and bridge.bridges[0].machine.state.value == "idle"
                    ),
                    5.0,
                    "the bridge idle after the greeting",
                )
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

"""Hostile input over real websockets, to both sockets of the example bridge's server.

A hostile "Twilio" dials ``/media-stream`` and sends hypothesis-generated garbage: invalid JSON,
binary frames, wrong field types, missing fields, unknown events, ``media`` before ``start``,
marks the bridge never sent, floods and oversized frames.  A hostile "OpenAI" (a relay in front
of the simulator, so real responses flow) slips generated bad frames in between the real server
events: invalid JSON, binary frames, wrong types, missing fields, unknown types, audio and
``response.done`` for responses that never existed, floods and oversized frames.

For every example: nothing crashes, each bad frame is counted in the call's
:class:`~realtime_fsm.bridge.CallReport` and logged with ``call=<id>`` and a typed reason, the
socket is closed with a reason (1008 policy / 1009 too big) when going on is unsafe, and a
well-behaved call on the same server, at the same time, completes normally: its caller hears
audio, sees no protocol violation, and the simulator counts no protocol error.

One event loop in a background thread carries the simulator, the relay and the bridge server
for the whole module, so each hypothesis example costs one short call, not a server start.

The bounded-memory tests at the end stop reading on one side (a caller while the AI talks, an
OpenAI server while the caller streams): the bridge's outbound queue is bounded, the stuck
call ends with a logged reason, and another call on the same server goes on.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import poller
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from realtime_fsm.bridge import BridgeConfig, CallBridge, CallReport
from realtime_fsm.config import LifecycleConfig
from realtime_fsm.openai_realtime import SessionConfig
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ScriptedReply,
)

HOST = "127.0.0.1"
T = TypeVar("T")
JSON = dict[str, Any]
#: Bad frames a call may send before the bridge closes it (kept low so floods are short).
MAX_BAD = 12
#: Frame limits of the bridge under test (small, so oversized frames are cheap to send).
MAX_TWILIO = 8 * 1024
MAX_OPENAI = 64 * 1024
PAYLOAD = base64.b64encode(b"\xff" * 160).decode()
STREAM = "MZ" + "0" * 32
KNOWN_TWILIO = frozenset({"connected", "start", "media", "mark", "dtmf", "stop", "text"})


# --- the shared stack: simulator, hostile relay, bridge servers, one loop -----------------------


class LogLines(logging.Handler):
    """Every ``realtime_fsm`` log line, formatted, for asserting what was logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))

    def about(self, call: str, level: int = logging.WARNING) -> list[str]:
        needle = f"call={call} "
        return [m for lv, m in list(self.lines) if lv >= level and needle in m]


class HostileRelay:
    """An "OpenAI" endpoint that relays to the simulator and slips bad frames in between the
    real server events, one after each event once the session is configured.  Each new
    connection takes the next plan from :attr:`plans` (none left: a clean relay)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.plans: collections.deque[list[str | bytes]] = collections.deque()
        self.connections = 0
        self.injected: list[int] = []  # frames injected, per connection
        self._server: Server | None = None

    async def start(self) -> None:
        self._server = await serve(self._handle, HOST, 0, max_size=None, compression=None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://{HOST}:{port}/v1/realtime"

    async def _handle(self, down: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        plan = collections.deque(self.plans.popleft() if self.plans else [])
        self.injected.append(0)
        async with connect(self.upstream, max_size=None, compression=None) as up:

            async def to_server() -> None:
                async for message in down:
                    await up.send(message)

            async def inject() -> None:
                while plan:
                    await down.send(plan.popleft())
                    self.injected[index] += 1
                    await asyncio.sleep(0.002)  # let real events in between

            async def to_client() -> None:
                async for message in up:
                    await down.send(message)
                    if '"session.updated"' in str(message) and not injector:
                        injector.append(asyncio.create_task(inject()))

            injector: list[asyncio.Task[None]] = []
            tasks = [asyncio.create_task(to_server()), asyncio.create_task(to_client())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            except ConnectionClosed:
                pass
            finally:
                for task in tasks + injector:
                    task.cancel()
                await asyncio.gather(*tasks, *injector, return_exceptions=True)


def short_reply(_ctx: object) -> ScriptedReply:
    return ScriptedReply("Hello there, this is a short test answer.", audio_ms=1200)


def bridge_config(**kw: Any) -> BridgeConfig:
    return BridgeConfig(
        session=SessionConfig(instructions="test", silence_duration_ms=200),
        lifecycle=LifecycleConfig(
            create_timeout=2.0, cancel_timeout=2.0, no_audio_timeout=1.0, stall_timeout=3.0
        ),
        greeting="Greet the caller.",
        accept_text_messages=True,
        max_bad_frames=MAX_BAD,
        max_twilio_message=MAX_TWILIO,
        max_openai_frame=MAX_OPENAI,
        **kw,
    )


@attrs.define
class Stack:
    loop: asyncio.AbstractEventLoop
    sim: FakeRealtimeServer
    relay: HostileRelay
    direct_url: str  # bridge server talking to the simulator directly
    relayed_url: str  # bridge server talking to the hostile relay
    bridges: list[CallBridge]
    reports: list[CallReport]
    logs: LogLines
    servers: list[asyncio.Server]
    calls: int = 0

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self.loop)
        return future.result(timeout + 5)

    def sid(self, prefix: str) -> str:
        self.calls += 1
        return f"CA{prefix}{self.calls:06d}"


async def _build(logs: LogLines) -> Stack:
    sim = FakeRealtimeServer(
        FakeRealtimeConfig(realtime_factor=20, first_delta_delay_s=0.01, seed=3),
        replies=short_reply,
    )
    await sim.start()
    relay = HostileRelay(sim.url)
    await relay.start()
    bridges: list[CallBridge] = []
    reports: list[CallReport] = []
    servers = []
    urls = []
    for realtime_url in (sim.url, relay.url):
        config = ServerConfig(
            public_url=f"http://{HOST}", realtime_url=realtime_url, bridge=bridge_config()
        )
        server = await start_server(config, HOST, 0, reports=reports, on_bridge=bridges.append)
        servers.append(server)
        urls.append(f"ws://{HOST}:{server.sockets[0].getsockname()[1]}/media-stream")
    loop = asyncio.get_running_loop()
    return Stack(loop, sim, relay, urls[0], urls[1], bridges, reports, logs, servers)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    logs = LogLines()
    logger = logging.getLogger("realtime_fsm")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(logs)
    loop = asyncio.new_event_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    built = asyncio.run_coroutine_threadsafe(_build(logs), loop).result(10)
    try:
        yield built
        errors = list(loop_errors)  # what teardown's cancellations log is not the bridge's
    finally:

        async def teardown() -> None:
            for server in built.servers:
                server.close()
                await server.wait_closed()
            await built.relay.stop()
            await built.sim.stop()
            current = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not current]
            for task in rest:  # what a failed example left running
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(teardown(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        logger.removeHandler(logs)
        logger.setLevel(old_level)
    assert errors == [], errors
    assert not any(r.end_reason.startswith("internal error") for r in built.reports)


until = poller(10.0, 0.01)


async def finished(stack: Stack, bridge: CallBridge, timeout: float = 10.0) -> CallReport:
    await until(lambda: bridge.report in stack.reports, "the call report", timeout)
    return bridge.report


async def new_bridge(stack: Stack, before: int) -> CallBridge:
    await until(lambda: len(stack.bridges) > before, "the bridge to accept the call")
    return stack.bridges[before]


async def good_call(stack: Stack, url: str) -> tuple[FakeTwilioCaller, CallBridge]:
    """A well-behaved caller, connected, with its bridge (started before any hostile call)."""
    before = len(stack.bridges)
    caller = FakeTwilioCaller(url, FakeCallerConfig(call_sid=stack.sid("good"), speed=4.0))
    await caller.start()
    return caller, await new_bridge(stack, before)


@contextlib.asynccontextmanager
async def good_call_alongside(stack: Stack, url: str) -> AsyncIterator[None]:
    """A well-behaved call on the same server for the whole block; checked when it ends."""
    caller, good = await good_call(stack, url)
    try:
        yield
    except BaseException:
        await caller.hang_up()
        raise
    await finish_good_call(stack, caller, good)


async def finish_good_call(stack: Stack, caller: FakeTwilioCaller, bridge: CallBridge) -> None:
    """The good call hears its greeting, hangs up and ends cleanly, untouched by the other."""
    try:
        await caller.wait_until(lambda: caller.received_ms >= 200, 15.0, "the greeting's audio")
    finally:
        await caller.hang_up()
    report = await finished(stack, bridge)
    assert report.end_reason == "telephony stop", report
    assert report.bad_frames == {}, report
    assert caller.violations == [], caller.violations
    assert report.media_out > 0


# --- hostile Twilio ------------------------------------------------------------------------------


@attrs.frozen
class Frame:
    data: str | bytes
    #: True if the bridge must count it as bad input (a stray mark is tolerated, not counted).
    bad: bool = True
    label: str = ""


def _corrupt(message: JSON, path: tuple[str, ...], value: Any) -> JSON:
    """``message`` with the field at ``path`` replaced (``value is _DELETE``: removed)."""
    copy = json.loads(json.dumps(message))
    node = copy
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return copy


_DELETE = object()
TEMPLATES: list[tuple[JSON, list[tuple[str, ...]]]] = [
    (
        {"event": "media", "streamSid": STREAM, "media": {"payload": PAYLOAD}},
        [("event",), ("media",), ("media", "payload")],
    ),
    (
        {"event": "mark", "streamSid": STREAM, "mark": {"name": "m1"}},
        [("mark",), ("mark", "name")],
    ),
    (
        {"event": "dtmf", "streamSid": STREAM, "dtmf": {"digit": "5", "track": "inbound_track"}},
        [("dtmf",), ("dtmf", "digit")],
    ),
]
#: A value of the wrong type for any of the fields above (all want a string or an object).
wrong_value = st.one_of(
    st.lists(st.integers(), max_size=2), st.just([{"x": 1}]), st.just([[]])
) | st.one_of(st.integers(), st.booleans(), st.none()).filter(lambda v: v is not None)


@st.composite
def wrong_field(draw: st.DrawFn) -> Frame:
    template, paths = draw(st.sampled_from(TEMPLATES))
    path = draw(st.sampled_from(paths))
    if path[-1] == "digit":  # a number is a valid digit (senders write 5 for "5")
        value = draw(st.one_of(st.lists(st.integers(), max_size=2), st.just({"d": 5})))
    elif draw(st.booleans()):
        value = _DELETE
    else:
        value = draw(wrong_value)
    label = "missing" if value is _DELETE else "wrong type"
    return Frame(json.dumps(_corrupt(template, path, value)), label=f"{label} {'.'.join(path)}")


def _not_json_object(text: str) -> bool:
    try:
        data = json.loads(text)
    except ValueError:
        return True
    return not isinstance(data, dict) or type(data.get("event")) is not str


invalid_json = st.text(max_size=40).map(lambda t: "{" + t).filter(_not_json_object)
non_object = st.one_of(
    st.integers(), st.lists(st.integers(), max_size=3), st.text(max_size=8), st.booleans()
).map(json.dumps)
binary = st.binary(max_size=40).map(lambda b: b"\xff\xfe" + b)  # never UTF-8, never JSON
unknown_event = st.text(min_size=1, max_size=16).filter(lambda e: e not in KNOWN_TWILIO)

twilio_bad = st.one_of(
    invalid_json.map(lambda t: Frame(t, label="invalid JSON")),
    non_object.map(lambda t: Frame(t, label="not an object")),
    binary.map(lambda b: Frame(b, label="binary")),
    wrong_field(),
    unknown_event.map(lambda e: Frame(json.dumps({"event": e}), label="unknown event")),
)
media = Frame(
    json.dumps({"event": "media", "streamSid": STREAM, "media": {"payload": PAYLOAD}}), bad=False
)


def start_frame(call_sid: str) -> str:
    return json.dumps(
        {
            "event": "start",
            "streamSid": STREAM,
            "start": {
                "streamSid": STREAM,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


@attrs.frozen
class TwilioPlan:
    before_start: list[Frame]
    send_start: bool
    after_start: list[Frame]
    flood: bool
    oversized: bool


twilio_plans = st.builds(
    TwilioPlan,
    before_start=st.lists(
        st.one_of(twilio_bad, st.just(attrs.evolve(media, bad=True, label="media before start"))),
        max_size=3,
    ),
    send_start=st.booleans() | st.just(True),
    after_start=st.lists(
        st.one_of(
            twilio_bad,
            st.just(media),
            st.just(
                Frame(
                    json.dumps({"event": "mark", "streamSid": STREAM, "mark": {"name": "never"}}),
                    bad=False,
                    label="mark never sent",
                )
            ),
        ),
        max_size=6,
    ),
    flood=st.booleans(),
    oversized=st.booleans(),
)


async def hostile_twilio(stack: Stack, plan: TwilioPlan) -> None:
    async with good_call_alongside(stack, stack.direct_url):
        before = len(stack.bridges)
        call_sid = stack.sid("bad")
        sent_bad = 0
        ws = await connect(stack.direct_url, max_size=None, compression=None)
        try:
            bridge = await new_bridge(stack, before)
            host, port = ws.local_address[:2]
            pre_start = f"-@{host}:{port}"  # the call's name in the log until ``start``
            frames: list[Frame] = [Frame(json.dumps({"event": "connected"}), bad=False)]
            frames += plan.before_start
            if plan.send_start:
                frames.append(Frame(start_frame(call_sid), bad=False))
                frames += plan.after_start
            if plan.flood:
                frames += [Frame("{flood", label="flood")] * (MAX_BAD + 3)
            for frame in frames:
                await ws.send(frame.data)
                sent_bad += frame.bad
            expect_policy_close = sent_bad > MAX_BAD
            if plan.oversized and not expect_policy_close:
                await ws.send("x" * (MAX_TWILIO + 1))
            elif not expect_policy_close:
                await ws.send(json.dumps({"event": "stop", "streamSid": STREAM}))
            with pytest.raises(ConnectionClosed):  # the bridge ends the call in every case
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            code = ws.close_code
            reason = ws.close_reason or ""
        finally:
            await ws.close()
        report = await finished(stack, bridge)
        counted = sum(report.bad_frames.values())
        assert not report.end_reason.startswith("internal error"), report
        if expect_policy_close:
            assert code == 1008, (code, reason, report)
            assert reason.startswith("bad input"), reason
            assert counted == MAX_BAD + 1, report
        elif plan.oversized:
            assert code == 1009, (code, reason, report)  # message too big: not read, not parsed
            assert counted == sent_bad, report
        else:
            assert code == 1000, (code, reason, report)
            assert counted == sent_bad, report
            end = "telephony stop" if plan.send_start else "telephony stopped before start"
            assert report.end_reason == end, report
        # Every counted frame was logged with the call's id (the peer's address until ``start``
        # names it) and a typed reason; lines after ``start`` carry the call sid.
        early = min(sum(f.bad for f in plan.before_start), MAX_BAD + 1)
        assert len(stack.logs.about(pre_start)) >= early, stack.logs.about(pre_start)
        after = sum(f.bad for f in plan.after_start) if plan.send_start else 0
        if plan.send_start and not expect_policy_close:
            assert len(stack.logs.about(call_sid)) >= after, stack.logs.about(call_sid)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=twilio_plans)
def test_hostile_twilio(stack: Stack, plan: TwilioPlan) -> None:
    stack.run(hostile_twilio(stack, plan))


def test_hostile_twilio_known_cases(stack: Stack) -> None:
    """The named cases, each at least once whatever hypothesis draws."""
    cases = [
        TwilioPlan([attrs.evolve(media, bad=True, label="before start")], True, [], False, False),
        TwilioPlan([], True, [Frame(b"\xff\x00binary")], False, False),
        TwilioPlan([], True, [Frame(json.dumps({"event": "bogus"}))], False, False),
        TwilioPlan([], True, [], True, False),
        TwilioPlan([], True, [], False, True),
        TwilioPlan([], False, [], False, False),
    ]
    for plan in cases:
        stack.run(hostile_twilio(stack, plan))


# --- hostile OpenAI ------------------------------------------------------------------------------


OPENAI_WRONG: list[JSON] = [
    {"type": "response.created", "response": "not an object"},
    {"type": "response.created"},
    {"type": "response.done", "response": []},
    {"type": "response.output_audio.delta", "response_id": 5, "item_id": "i", "delta": PAYLOAD},
    {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": 7},
    {"type": "response.output_audio.delta", "item_id": "i", "delta": PAYLOAD},
    {"type": "error", "error": "boom"},
    {"type": 42},
    {"no_type": True},
]
#: Well-formed events about responses that never existed: not malformed, so not counted as bad
#: frames, but they must change nothing (the machine counts them as stale).
OPENAI_UNKNOWN_IDS: list[JSON] = [
    {
        "type": "response.done",
        "response": {"id": "resp_never", "object": "realtime.response", "status": "completed"},
    },
    {
        "type": "response.output_audio.delta",
        "response_id": "resp_never",
        "item_id": "item_never",
        "output_index": 0,
        "content_index": 0,
        "delta": PAYLOAD,
    },
]

openai_bad = st.one_of(
    invalid_json.map(lambda t: Frame(t, label="invalid JSON")),
    non_object.map(lambda t: Frame(t, label="not an object")),
    binary.map(lambda b: Frame(b, label="binary")),
    st.sampled_from(OPENAI_WRONG).map(lambda e: Frame(json.dumps(e), label="wrong field")),
)
openai_tolerated = st.one_of(
    st.sampled_from(OPENAI_UNKNOWN_IDS).map(lambda e: Frame(json.dumps(e), bad=False)),
    st.text(min_size=1, max_size=12).map(
        lambda t: Frame(json.dumps({"type": f"x.unknown.{t}"}), bad=False, label="unknown type")
    ),
)


@attrs.frozen
class OpenAIPlan:
    frames: list[Frame]
    flood: bool
    oversized: bool


openai_plans = st.builds(
    OpenAIPlan,
    frames=st.lists(st.one_of(openai_bad, openai_tolerated), min_size=1, max_size=8),
    flood=st.booleans(),
    oversized=st.booleans(),
)


def _openai_bad(report: CallReport) -> int:
    return sum(v for k, v in report.bad_frames.items() if k.startswith("openai"))


async def hostile_openai(stack: Stack, plan: OpenAIPlan) -> None:
    sessions = stack.relay.connections
    async with good_call_alongside(stack, stack.relayed_url):
        await until(lambda: stack.relay.connections > sessions, "the good call's session")
        frames: list[str | bytes] = [f.data for f in plan.frames]
        sent_bad = sum(f.bad for f in plan.frames)
        if plan.flood:
            frames += ["{flood"] * (MAX_BAD + 3)
            sent_bad += MAX_BAD + 3
        if plan.oversized:
            frames.append(json.dumps({"type": "x", "pad": "x" * MAX_OPENAI}))
        connection = stack.relay.connections
        stack.relay.plans.append(frames)
        before = len(stack.bridges)
        call_sid = stack.sid("evil")
        victim = FakeTwilioCaller(stack.relayed_url, FakeCallerConfig(call_sid=call_sid, speed=4.0))
        await victim.start()
        try:
            bridge = await new_bridge(stack, before)
            if sent_bad > MAX_BAD or plan.oversized:  # the bridge must end or replace the session
                await until(
                    lambda: bool(bridge.report.end_reason) or bridge.report.reconnects > 0,
                    "the bridge to drop the hostile session",
                )
            else:  # every bad frame read and counted, and the caller heard the answer anyway
                await until(
                    lambda: (
                        len(stack.relay.injected) > connection
                        and stack.relay.injected[connection] == len(frames)
                    ),
                    "the hostile frames to be sent",
                )
                await until(
                    lambda: _openai_bad(bridge.report) == sent_bad, "the bad frames counted"
                )
                await until(lambda: bool(victim.media_received), "the answer's audio")
        finally:
            await victim.hang_up()
        report = await finished(stack, bridge)
        counted = _openai_bad(report)
        assert not report.end_reason.startswith("internal error"), report
        if sent_bad > MAX_BAD:
            assert report.end_reason.startswith("bad input"), report
            assert counted == MAX_BAD + 1, report
            assert victim.close_code == 1008, victim.close_code
        else:
            assert counted <= sent_bad, report
            if not plan.oversized:
                assert counted == sent_bad, report
        assert victim.violations == [], victim.violations
        if counted:
            assert stack.logs.about(call_sid), "bad OpenAI frames were not logged with the call id"


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=openai_plans)
def test_hostile_openai(stack: Stack, plan: OpenAIPlan) -> None:
    stack.run(hostile_openai(stack, plan))


def test_simulator_saw_no_protocol_error(stack: Stack) -> None:
    """Whatever the hostile peers did, the bridge never broke the Realtime protocol rules."""
    stack.run(_no_errors(stack))


async def _no_errors(stack: Stack) -> None:
    assert stack.sim.error_counts == {}, stack.sim.error_counts


# --- bounded memory ------------------------------------------------------------------------------


def _tiny_buffers(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


async def deaf_caller(url: str, call_sid: str) -> ClientConnection:
    """A Twilio caller that sends ``start`` and then never reads: the socket's receive buffer
    is tiny and websockets stops reading once one message is buffered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _tiny_buffers(sock)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    sock.connect((HOST, port))
    ws = await connect(url, sock=sock, max_queue=1, max_size=None, compression=None)
    await ws.send(json.dumps({"event": "connected"}))
    await ws.send(start_frame(call_sid))
    return ws


@pytest.mark.slow
def test_caller_that_stops_reading(stack: Stack) -> None:
    """The AI talks (20 minutes of audio at 200x) to a caller that reads nothing: the bridge's
    queue to Twilio is bounded, the call ends with a logged reason instead of buffering the
    answer, and another call on the same server goes on."""

    async def scenario() -> None:
        sim = FakeRealtimeServer(
            FakeRealtimeConfig(realtime_factor=200, audio_delta_ms=100, seed=4),
            replies=[ScriptedReply("A very long answer.", audio_ms=1_200_000)],
        )
        async with sim, private_server(stack, sim.url, max_queue=200) as url:
            call_sid = stack.sid("deaf")
            before = len(stack.bridges)
            ws = await deaf_caller(url, call_sid)
            try:
                report = await finished(stack, await new_bridge(stack, before), timeout=60)
                assert "telephony" in report.end_reason, report
                assert "keeping up" in report.end_reason, report
                # Bounded: it ended long before the 12,000 deltas of the answer were queued.
                assert report.media_out < 12_000, report
                assert_end_logged(stack, call_sid)
                sim.set_reply_source(short_reply)
                async with good_call_alongside(stack, url):
                    pass
            finally:
                ws.transport.abort()

    stack.run(scenario(), timeout=90)


def assert_end_logged(stack: Stack, call_sid: str) -> None:
    ends = [m for m in stack.logs.about(call_sid, logging.INFO) if "keeping up" in m]
    assert ends, f"the end of {call_sid} was not logged with its reason"


@contextlib.asynccontextmanager
async def private_server(stack: Stack, realtime_url: str, **bridge: Any) -> AsyncIterator[str]:
    """A bridge server of its own (other limits, another upstream), reporting to the stack."""
    config = ServerConfig(
        public_url=f"http://{HOST}", realtime_url=realtime_url, bridge=bridge_config(**bridge)
    )
    server = await start_server(
        config, HOST, 0, reports=stack.reports, on_bridge=stack.bridges.append
    )
    try:
        yield f"ws://{HOST}:{server.sockets[0].getsockname()[1]}/media-stream"
    finally:
        server.close()
        await server.wait_closed()


async def _deaf_server() -> tuple[asyncio.Server, list[socket.socket]]:
    """An "OpenAI" that completes the handshake, sends ``session.created``, then never reads."""
    from websockets.server import ServerProtocol

    held: list[socket.socket] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        protocol = ServerProtocol(max_size=None)
        while True:
            data = await reader.read(4096)
            if not data:
                return
            protocol.receive_data(data)
            request = next((e for e in protocol.events_received()), None)
            if request is not None:
                break
        protocol.send_response(protocol.accept(request))  # type: ignore[arg-type]
        protocol.send_text(json.dumps({"type": "session.created", "session": {}}).encode())
        for chunk in protocol.data_to_send():
            writer.write(chunk)
        await writer.drain()
        held.append(sock)
        await asyncio.sleep(3600)  # never read again

    server = await asyncio.start_server(handle, HOST, 0)
    for sock in server.sockets:
        _tiny_buffers(sock)
    return server, held


@pytest.mark.slow
def test_openai_that_stops_reading(stack: Stack) -> None:
    """The caller streams audio (200 ms frames at 100x) to an OpenAI server that reads
    nothing: the queue to OpenAI is bounded, the call ends with a logged reason, and another
    call goes on."""

    async def scenario() -> None:
        deaf, _held = await _deaf_server()
        port = deaf.sockets[0].getsockname()[1]
        deaf_url = f"ws://{HOST}:{port}/v1/realtime"
        try:
            async with (
                good_call_alongside(stack, stack.direct_url),
                private_server(stack, deaf_url, max_queue=200) as url,
            ):
                call_sid = stack.sid("mute")
                config = FakeCallerConfig(call_sid=call_sid, speed=100.0, frame_ms=200)
                before = len(stack.bridges)
                async with FakeTwilioCaller(url, config):
                    stuck = await new_bridge(stack, before)
                    report = await finished(stack, stuck, timeout=60)
                assert "openai" in report.end_reason, report
                assert "keeping up" in report.end_reason, report
                assert_end_logged(stack, call_sid)
        finally:
            deaf.close()

    stack.run(scenario(), timeout=90)

"""Call traces (:mod:`realtime_fsm.trace`) and their checker (``realtime-fsm replay``).

* The recorder: audio elided, odd frames recorded safely, the file named by the call, secrets
  redacted, I/O failures never ending a call.
* The acid test: every end-to-end scenario of ``tests/test_e2e.py`` is run again, unchanged,
  through the real server with ``trace_dir`` set; its own assertions must hold and its trace
  must replay with zero violations.
* The shipped traces: ``tests/traces/good-*.jsonl`` (recorded from the real bridge) replay
  clean; each ``bad-*.jsonl`` (hand-made, see ``tests/traces/README.md``) gives exactly the
  expected violations at the expected lines; real traces edited to break one rule give exactly
  that violation.
* Security: with an API key and a Twilio token configured, neither appears in a trace, a log
  record or an error message of a call.
* Never raising: the recorder on frames it cannot serialise (the call goes on), past its size
  cap, flushing on a timer; the checker on every field of every hand-made trace replaced by a
  value of each JSON type, on hypothesis-mutated traces, and from the command line on
  unreadable files.
* Reconnects: history replayed into a new session is no delivery, deliveries count over all
  sessions, the watchdog cooldown carries over.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import importlib.util
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
import test_e2e as e2e
import test_reconnect as reconnect
import test_rotation_e2e as rotation
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_fsm.bridge import BridgeConfig, CallBridge, CallReport
from realtime_fsm.cli import main as cli_main
from realtime_fsm.config import LifecycleConfig
from realtime_fsm.openai_realtime import Dialect
from realtime_fsm.replay import TraceFormatError, Violation, check_file, check_lines
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import FakeTwilioCaller, dial
from realtime_fsm.trace import (
    MAX_TRACE_BYTES,
    REDACTED,
    CallTrace,
    TracedSocket,
    lifecycle_header,
    start_trace,
)

TRACES = Path(__file__).resolve().parent / "traces"
JSON = dict[str, Any]


def records(path: Path) -> list[JSON]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- the recorder -----------------------------------------------------------------------------


class FakeSocket:
    """A MessageSocket with scripted frames to read; records what is sent."""

    def __init__(self, frames: list[str | bytes]) -> None:
        self.frames = list(frames)
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.extra = "passed through"

    async def recv(self) -> str | bytes:
        if not self.frames:
            raise ConnectionError("closed")
        return self.frames.pop(0)

    async def send(self, message: str) -> None:
        self.sent.append(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


AUDIO_B64 = base64.b64encode(bytes(range(256)) * 2 + b"\x01").decode()  # 513 bytes
START = {
    "event": "start",
    "start": {"streamSid": "MZ1", "callSid": "CA/../1", "tracks": ["inbound"]},
    "streamSid": "MZ1",
}


def trace_config() -> BridgeConfig:
    return BridgeConfig()


async def drive(trace: CallTrace, twilio_frames: list[str | bytes]) -> FakeSocket:
    inner = FakeSocket(twilio_frames)
    sock = trace.wrap(inner, "twilio")
    while True:
        try:
            await sock.recv()
        except ConnectionError:
            break
    return inner


def test_recorder_elides_audio_and_records_odd_frames_safely(tmp_path: Path) -> None:
    trace = CallTrace.open(tmp_path, trace_config())
    media = {"event": "media", "media": {"track": "inbound", "payload": AUDIO_B64}}
    twilio_frames: list[str | bytes] = [
        json.dumps({"event": "connected"}),
        json.dumps(START),
        json.dumps(media),
        b"\x00\xff" * 300,
        "not json {" + "x" * 1000,
        json.dumps([1, 2]),
    ]

    async def scenario() -> None:
        twilio = await drive(trace, twilio_frames)
        openai_inner = FakeSocket(
            [
                json.dumps({"type": "response.output_audio.delta", "delta": AUDIO_B64}),
                json.dumps({"type": "response.audio.delta", "delta": "AAA="}),
            ]
        )
        openai = trace.wrap(openai_inner, "openai")
        await openai.recv()
        await openai.recv()
        await openai.send(json.dumps({"type": "input_audio_buffer.append", "audio": AUDIO_B64}))
        tw = trace.wrap(twilio, "twilio")  # a second wrap of a side counts as connection 2
        await tw.send(json.dumps({"event": "media", "media": {"payload": AUDIO_B64}}))
        await openai.close(1000, "done")
        assert openai_inner.closed == (1000, "done")
        # Only the trace is elided: the frame goes out unchanged.
        assert json.loads(openai_inner.sent[0])["audio"] == AUDIO_B64
        assert isinstance(openai, TracedSocket) and openai.extra == "passed through"

    asyncio.run(scenario())
    path = trace.finish(CallReport(end_reason="telephony stop", undelivered_texts=["hi"]))
    assert path == tmp_path / "CA_.._1.jsonl"  # named by the call, path characters replaced
    lines = records(path)
    header, *frames, trailer = lines
    assert header["kind"] == "header" and header["version"] == 1
    assert header["call_id"] == "CA/../1" and header["stream_sid"] == "MZ1"
    assert header["config"]["watchdog_cooldown"] == 12.0
    assert set(header["config"]) >= {"create_timeout", "cancel_timeout", "no_audio_timeout"}
    assert trailer == {**trailer, "kind": "end", "end_reason": "telephony stop"}
    assert trailer["undelivered_texts"] == ["hi"]
    by_type = {(r["side"], r["dir"], r.get("type")): r for r in frames}
    assert by_type[("twilio", "in", "media")]["frame"]["media"]["payload"] == {"elided_bytes": 513}
    assert by_type[("twilio", "out", "media")]["frame"]["media"]["payload"] == {"elided_bytes": 513}
    ga = by_type[("openai", "in", "response.output_audio.delta")]
    assert ga["frame"]["delta"] == {"elided_bytes": 513}
    beta = by_type[("openai", "in", "response.audio.delta")]
    assert beta["frame"]["delta"] == {"elided_bytes": 2}
    append = by_type[("openai", "out", "input_audio_buffer.append")]
    assert append["frame"]["audio"] == {"elided_bytes": 513}
    assert AUDIO_B64[:40] not in path.read_text()
    odd = [r for r in frames if r.get("type") is None and r["dir"] == "in"]
    binary, bad_json, not_object = odd
    assert binary["binary"] is True and binary["bytes"] == 600 and binary["truncated"] is True
    assert bad_json["bad_json"] is True and bad_json["truncated"] is True
    assert len(bad_json["raw"]) == 512 and bad_json["chars"] == 1010
    assert not_object["bad_json"] is False and not_object["raw"] == "[1, 2]"
    opens = [(r["side"], r["conn"]) for r in frames if r["dir"] == "open"]
    assert opens == [("twilio", 1), ("openai", 1), ("twilio", 2)]
    assert [r["t"] for r in frames] == sorted(r["t"] for r in frames)
    assert trace.finish() == path  # idempotent


def test_send_nowait_through_the_recorder_is_recorded_when_written(tmp_path: Path) -> None:
    """The bridge writes its barge-in ``clear`` with ``send_nowait`` when the socket has one:
    the wrapper must record those frames too (``__getattr__`` would hand out the inner method
    unrecorded), and only those the inner socket wrote."""

    class NowaitSocket(FakeSocket):
        accept = True

        def send_nowait(self, message: str) -> bool:
            if self.accept:
                self.sent.append(message)
            return self.accept

    clear = json.dumps({"event": "clear", "streamSid": "MZ1"})
    trace = CallTrace.open(tmp_path, trace_config())

    async def scenario() -> None:
        inner = NowaitSocket([json.dumps(START)])
        tw = trace.wrap(inner, "twilio")
        await tw.recv()
        assert isinstance(tw, TracedSocket)
        assert tw.send_nowait(clear) is True
        inner.accept = False
        assert tw.send_nowait(clear) is False  # declined: not written, not recorded
        assert inner.sent == [clear]
        plain = trace.wrap(FakeSocket([]), "openai")
        assert isinstance(plain, TracedSocket)
        assert plain.send_nowait("{}") is False  # an inner socket without it: always declines

    asyncio.run(scenario())
    path = trace.finish()
    assert path is not None
    outs = [r for r in records(path) if r.get("dir") == "out"]
    assert [(r["side"], r["type"]) for r in outs] == [("twilio", "clear")]


def test_recorder_without_start_falls_back_to_a_generated_name(tmp_path: Path) -> None:
    trace = CallTrace(tmp_path, {}, max_buffered_lines=5)
    asyncio.run(drive(trace, [json.dumps({"event": "connected"})] * 10))
    assert trace.path is not None and trace.path.name.startswith("call-")  # bound reached
    path = trace.finish(end_reason="no start")
    assert path is not None and len(records(path)) == 1 + 1 + 10 + 1 + 1
    assert records(path)[0]["call_id"] is None and records(path)[-1]["end_reason"] == "no start"
    # Two calls with the same id never overwrite each other.
    for _ in range(2):
        again = CallTrace(tmp_path, {})
        asyncio.run(drive(again, [json.dumps(START)]))
        again.finish()
    assert sorted(p.name for p in tmp_path.glob("CA*")) == ["CA_.._1-2.jsonl", "CA_.._1.jsonl"]


def test_recorder_redacts_secrets(tmp_path: Path) -> None:
    key, token = "sk-test-KEY-0123456789", "tw-token-abcdef"
    trace = CallTrace.open(tmp_path, trace_config(), secrets=(key, token, None, ""))
    error = {"type": "error", "error": {"message": f"Incorrect API key provided: {key}"}}
    custom = {**START, "start": {**START["start"], "customParameters": {"t": token}}}

    async def scenario() -> None:
        await drive(trace, [json.dumps(custom)])
        openai = trace.wrap(FakeSocket([json.dumps(error)]), "openai")
        await openai.recv()

    asyncio.run(scenario())
    path = trace.finish()
    assert path is not None
    text = path.read_text()
    assert key not in text and token not in text and text.count(REDACTED) == 2


def test_trace_io_failure_is_logged_and_never_ends_the_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    trace = start_trace(blocker / "traces", trace_config())
    assert trace is not None and start_trace(None, trace_config()) is None

    async def scenario() -> None:
        sock = trace.wrap(FakeSocket([json.dumps(START)]), "twilio")
        assert json.loads(await sock.recv()) == START  # the frame still reaches the bridge
        await sock.send("{}")

    asyncio.run(scenario())
    assert trace.finish() is None
    errors = [r for r in caplog.records if r.name == "realtime_fsm.trace"]
    assert len(errors) == 1 and "trace recording stopped" in errors[0].getMessage()


# --- the acid test: every end-to-end scenario, traced, replays clean ---------------------------


@attrs.frozen
class E2ECase:
    id: str
    test: str
    kwargs: dict[str, Any] = attrs.field(factory=dict)
    #: The test module the scenario is in (both start the real server from a ServerConfig).
    module: ModuleType = e2e
    #: The module whose ``ServerConfig`` starts that server, when it is another one.
    server_module: ModuleType | None = None


E2E_CASES = [
    E2ECase("barge_in_storm-app_creates", "test_barge_in_storm", {"server_creates": False}),
    E2ECase("barge_in_storm-server_creates", "test_barge_in_storm", {"server_creates": True}),
    E2ECase(
        "silent_response_watchdog",
        "test_silent_response_watchdog_fires_once_then_retries_after_done",
    ),
    E2ECase(
        "server_quiet_after_create", "test_server_quiet_after_create_recovers_through_the_timeouts"
    ),
    E2ECase(
        "server_quiet_after_cancel",
        "test_server_quiet_after_cancel_recovers_through_the_cancel_timeout",
    ),
    E2ECase(
        "cancel_acknowledged_after_timeout", "test_cancel_acknowledged_after_the_cancel_timeout"
    ),
    E2ECase("turn_taking-app_creates", "test_turn_taking_app_creates_responses"),
    E2ECase("turn_taking-server_creates", "test_turn_taking_server_creates_responses"),
    E2ECase(
        "server_creates_turn_while_cancelling",
        "test_server_creates_turn_committed_while_cancelling_is_not_raced",
    ),
    E2ECase(
        "duplicated_and_late_events-app_creates",
        "test_duplicated_and_late_events_change_nothing",
        {"server_creates": False},
    ),
    E2ECase(
        "duplicated_and_late_events-server_creates",
        "test_duplicated_and_late_events_change_nothing",
        {"server_creates": True},
    ),
    E2ECase(
        "hang_up_after_typing",
        "test_hang_up_right_after_typing_ends_the_call_and_hands_the_text_back",
    ),
    E2ECase("push_to_talk", "test_push_to_talk_a_dtmf_key_ends_the_callers_turn"),
]


#: Reconnect scenarios (a socket dropped mid-answer, the session cap): a trace spans two OpenAI
#: connections, and history restored into the new session is not a second delivery.
RECONNECT_CASES = [
    E2ECase(
        "reconnect-socket_drop",
        "test_a_socket_drop_mid_response_continues_on_a_new_session",
        module=reconnect,
    ),
    E2ECase(
        "reconnect-session_expired",
        "test_session_expired_is_a_new_session_not_the_end_of_the_call",
        {"dialect": Dialect.GA},
        module=reconnect,
    ),
    E2ECase(
        "reconnect-greeting_cut_off",
        "test_a_greeting_cut_off_by_a_lost_session_is_asked_for_again_with_its_instructions",
        module=reconnect,
    ),
]


#: Rotations (sessions replaced before the cap, at quiet moments and at a response boundary): a
#: trace spans several OpenAI connections, the next one opened while the current one serves.
ROTATION_CASES = [
    E2ECase(
        "rotation-quiet_moments",
        "test_three_rotations_at_quiet_moments_with_turns_and_barge_ins",
        module=rotation,
        server_module=reconnect,
    ),
    E2ECase(
        "rotation-response_boundary",
        "test_continuous_answers_rotate_at_a_response_boundary",
        module=rotation,
        server_module=reconnect,
    ),
]


def record_e2e(case: E2ECase, trace_dir: Path, caplog: Any) -> Path:
    """Run one scenario, unchanged but for ``ServerConfig.trace_dir``; its trace."""
    module = case.module
    server_module = case.server_module or module
    original = server_module.ServerConfig
    server_module.ServerConfig = functools.partial(ServerConfig, trace_dir=trace_dir)
    try:
        test = getattr(module, case.test)
        kwargs = dict(case.kwargs)
        if "caplog" in test.__code__.co_varnames[: test.__code__.co_argcount]:
            kwargs["caplog"] = caplog
        test(**kwargs)
    finally:
        server_module.ServerConfig = original
    (path,) = trace_dir.glob("*.jsonl")
    return path


def test_every_e2e_scenario_is_covered() -> None:
    scenarios = {name for name in dir(e2e) if name.startswith("test_")}
    assert scenarios == {case.test for case in E2E_CASES}


ALL_CASES = [*E2E_CASES, *RECONNECT_CASES, *ROTATION_CASES]


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_e2e_traces_replay_clean(
    case: E2ECase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = record_e2e(case, tmp_path, caplog)
    lines = records(path)
    header, trailer = lines[0], lines[-1]
    assert header["kind"] == "header" and trailer["kind"] == "end"
    assert path.name == f"{header['call_id']}.jsonl" and header["call_id"].startswith("CA")
    assert trailer["end_reason"] == "telephony stop"
    for record in lines[1:-1]:
        frame = record.get("frame") or {}
        if record.get("type") == "media":
            assert set(frame["media"]["payload"]) == {"elided_bytes"}
        elif record.get("type") in ("input_audio_buffer.append",):
            assert set(frame["audio"]) == {"elided_bytes"}
        elif str(record.get("type")).endswith("output_audio.delta"):
            assert set(frame["delta"]) == {"elided_bytes"}
    kinds = {(r.get("side"), r.get("dir"), r.get("type")) for r in lines}
    assert ("openai", "out", "response.create") in kinds
    assert ("twilio", "in", "start") in kinds and ("twilio", "out", "media") in kinds
    if case.module is not e2e:
        assert {"side": "openai", "dir": "open", "conn": 2}.items() <= next(
            r for r in lines if r.get("dir") == "open" and r.get("conn") == 2
        ).items()
    violations, warnings = check_file(path)
    assert violations == [] and warnings == []


# --- the shipped traces ------------------------------------------------------------------------


GOOD = sorted(TRACES.glob("good-*.jsonl"))

#: Each hand-made bad trace and exactly what the checker must find (tests/traces/README.md).
BAD: dict[str, list[tuple[int, str]]] = {
    "bad-create-while-active.jsonl": [(11, "create_while_active")],
    "bad-retry-before-done.jsonl": [(9, "create_while_active")],
    "bad-cancel-without-active.jsonl": [
        (11, "cancel_without_active"),
        (17, "cancel_without_active"),
    ],
    "bad-user-text-lost-and-duplicated.jsonl": [
        (15, "user_text_duplicated"),
        (19, "user_text_lost"),
    ],
    "bad-watchdog-in-cooldown.jsonl": [(21, "watchdog_in_cooldown")],
    "bad-response-left-hanging.jsonl": [(5, "response_left_hanging")],
    "bad-create-never-answered.jsonl": [(4, "create_never_answered")],
    "bad-busy-errors.jsonl": [(6, "create_races_server_response"), (12, "busy_error")],
}


def test_shipped_traces_are_all_checked() -> None:
    assert len(GOOD) >= 5
    assert {p.name for p in TRACES.glob("bad-*.jsonl")} == set(BAD)
    readme = (TRACES / "README.md").read_text()
    assert all(name in readme for name in [*BAD, *(p.name for p in GOOD)])


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_good_traces_replay_clean(path: Path) -> None:
    assert check_file(path) == ([], [])


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_traces_give_exactly_the_expected_violations(name: str) -> None:
    violations, warnings = check_file(TRACES / name)
    assert [(v.line, v.rule) for v in violations] == BAD[name], violations
    assert warnings == []


def _lines(name: str) -> list[str]:
    return (TRACES / name).read_text(encoding="utf-8").splitlines(keepends=True)


def _find(lines: list[str], predicate: Any) -> Iterator[int]:
    """0-based indexes of the lines whose record matches."""
    for index, line in enumerate(lines):
        if predicate(json.loads(line)):
            yield index


def _is_user_item(record: JSON) -> bool:
    return record.get("type") == "conversation.item.create" and record["dir"] == "out"


def _rules(lines: list[str]) -> list[tuple[int, str]]:
    violations, _ = check_lines(lines)
    return [(v.line, v.rule) for v in violations]


def test_edited_real_trace_duplicated_text() -> None:
    lines = _lines("good-barge-in-storm.jsonl")
    index = next(_find(lines, _is_user_item))
    lines.insert(index + 1, lines[index])
    assert _rules(lines) == [(index + 2, "user_text_duplicated")]


def test_edited_real_trace_lost_text() -> None:
    lines = _lines("good-barge-in-storm.jsonl")
    index = next(_find(lines, _is_user_item))
    text = json.loads(lines[index])["frame"]["item"]["content"][0]["text"]
    del lines[index]
    typed = next(_find(lines, lambda r: r.get("type") == "text" and r["frame"]["text"] == text))
    assert _rules(lines) == [(typed + 1, "user_text_lost")]


def test_edited_real_trace_retry_sent_before_the_silent_response_is_done() -> None:
    """The seed note's order (retry right after the cancel) on a real watchdog trace."""
    lines = _lines("good-silent-response-watchdog.jsonl")

    def is_retry(record: JSON) -> bool:
        frame = record.get("frame") or {}
        metadata = (frame.get("response") or {}).get("metadata") or {}
        return record.get("type") == "response.create" and metadata.get("rtfsm_reason") == (
            "no_audio_retry"
        )

    retry = next(_find(lines, is_retry))
    cancel = next(_find(lines, lambda r: r.get("type") == "response.cancel"))
    assert cancel < retry
    moved = json.loads(lines.pop(retry))
    moved["t"] = json.loads(lines[cancel])["t"]
    lines.insert(cancel + 1, json.dumps(moved) + "\n")
    assert _rules(lines) == [(cancel + 2, "create_while_active")]


def test_cli_replay_exit_status_and_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good, bad = str(GOOD[0]), str(TRACES / "bad-busy-errors.jsonl")
    assert cli_main(["replay", good]) == 0
    assert capsys.readouterr().out == f"{good}: ok\n"
    assert cli_main(["replay", good, bad]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{good}: ok"
    assert out[1].startswith(f"{bad}:6: create_races_server_response: ")
    assert out[2].startswith(f"{bad}:12: busy_error: ")
    not_a_trace = tmp_path / "x.jsonl"
    not_a_trace.write_text('{"t": 1}\n')
    assert cli_main(["replay", str(not_a_trace), str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "the first record must be the header" in err and "missing.jsonl" in err


def test_checker_tolerates_comments_and_unreadable_lines() -> None:
    lines = _lines("bad-create-never-answered.jsonl")
    lines.insert(1, "# a comment in a hand-written trace\n")
    lines.insert(2, "garbage\n")
    violations, warnings = check_lines(lines)
    assert violations == [Violation(6, "create_never_answered", violations[0].message)]
    assert warnings == ["line 3: not a JSON object; skipped"]


# --- security -------------------------------------------------------------------------------------


API_KEY = "sk-test-DO-NOT-LEAK-4f1c2b9a7e"
TWILIO_TOKEN = "twilio-token-DO-NOT-LEAK-91ab"
PUBLIC = "https://example.ngrok.app"


class _Everything(logging.Handler):
    """Every log record of the process but the simulated OpenAI server's own (it logs the
    request headers it receives, the key included: in production that is OpenAI's machine)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.peer_ports: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            port = record.websocket.local_address[1]  # type: ignore[attr-defined]
        except Exception:
            port = None
        if port is None or port not in self.peer_ports:
            self.records.append(record)


def test_secrets_never_appear_in_traces_logs_or_errors(tmp_path: Path) -> None:
    """An API key and a Twilio token configured (signature checks on): a whole call with a
    barge-in, an error from OpenAI and a call whose realtime server is unreachable.  Neither
    secret is in any trace line, any log record (every logger, DEBUG, websockets' handshake
    included) or any error message."""
    handler = _Everything()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    reports: list[CallReport] = []

    async def call(realtime_url: str, sim: Any) -> None:
        config = ServerConfig(
            public_url=PUBLIC,
            realtime_url=realtime_url,
            api_key=API_KEY,
            twilio_auth_token=TWILIO_TOKEN,
            bridge=e2e.bridge_config(),
            trace_dir=tmp_path,
        )
        server = await start_server(config, e2e.HOST, 0, reports=reports)
        port = server.sockets[0].getsockname()[1]
        dialed = await dial(f"http://{e2e.HOST}:{port}", public_url=PUBLIC, auth_token=TWILIO_TOKEN)
        assert dialed.stream_url == "wss://example.ngrok.app/media-stream"
        caller_config = dialed.caller_config(e2e.CALLER)
        try:
            async with FakeTwilioCaller(f"ws://{e2e.HOST}:{port}/media-stream", caller_config) as c:
                if sim is None:
                    await c.wait_until(lambda: c.close_code is not None, 10.0, "the refusal")
                    return
                await e2e.wait_playing(sim, c)
                sim.inject_error("invalid_value", "Invalid value for 'voice'.")
                await c.type_text("stop please")
                await e2e.wait_served(sim, c, after=1)
            await sim.wait_until(lambda: bool(reports), 5.0, "the report")
        finally:
            server.close()
            await server.wait_closed()

    async def scenario() -> None:
        sim = e2e.simulator(e2e.short_replies)
        async with sim:
            handler.peer_ports.add(sim.port)
            await call(sim.url, sim)
            assert sim.connections[0].headers.get("Authorization") == f"Bearer {API_KEY}"
            unreachable = sim.url.replace(str(sim.port), "1")
        await call(unreachable, None)

    try:
        e2e.run(scenario())
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    traces = sorted(tmp_path.glob("*.jsonl"))
    assert len(traces) == 2  # the call, and the one refused for want of a realtime server
    assert all(check_file(p) == ([], []) for p in traces)
    assert any("stop please" in p.read_text() for p in traces)
    texts = [p.read_text() for p in traces]
    for record in handler.records:
        texts.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(repr(record.exc_info[1]))
    texts.extend(repr(report) for report in reports)
    assert any("cannot reach the realtime server" in t for t in texts)
    assert any("Authorization" in t for t in texts)  # the handshake was logged, redacted
    leaks = [t for t in texts if API_KEY in t or TWILIO_TOKEN in t]
    assert leaks == []


def test_example_trace_dir_flag(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "twilio_bridge_example_trace",
        Path(__file__).resolve().parents[1] / "examples/twilio_bridge.py",
    )
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    base = ["--public-url", PUBLIC]
    assert example.build_config(example.parse_args(base)).trace_dir is None
    args = example.parse_args([*base, "--trace-dir", str(tmp_path)])
    assert example.build_config(args).trace_dir == str(tmp_path)
    assert example.build_config(args).max_trace_bytes == MAX_TRACE_BYTES
    args = example.parse_args([*base, "--trace-max-mb", "0.5"])
    assert example.build_config(args).max_trace_bytes == 512 * 1024
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(SystemExit):
            example.parse_args([*base, "--trace-max-mb", bad])


def test_the_servers_trace_size_cap_reaches_each_calls_trace(tmp_path: Path) -> None:
    """``ServerConfig.max_trace_bytes`` caps every call's file: a whole call through the
    server leaves a file no bigger, ending in the truncation note and the call's trailer."""
    reports: list[CallReport] = []
    cap = 6_000

    async def scenario() -> None:
        sim = e2e.simulator(e2e.short_replies)
        async with sim:
            config = ServerConfig(
                public_url=PUBLIC,
                realtime_url=sim.url,
                bridge=e2e.bridge_config(),
                trace_dir=tmp_path,
                max_trace_bytes=cap,
            )
            server = await start_server(config, e2e.HOST, 0, reports=reports)
            port = server.sockets[0].getsockname()[1]
            try:
                url = f"ws://{e2e.HOST}:{port}/media-stream"
                async with FakeTwilioCaller(url, e2e.CALLER) as caller:
                    await e2e.wait_served(sim, caller, after=0)
                    for n in range(20):
                        await caller.type_text(f"text number {n}")
                await sim.wait_until(lambda: bool(reports), 5.0, "the report")
            finally:
                server.close()
                await server.wait_closed()

    e2e.run(scenario())
    (path,) = tmp_path.glob("*.jsonl")
    assert path.stat().st_size <= cap
    lines = records(path)
    assert lines[-2] == {**lines[-2], "side": "trace", "dir": "truncated", "max_trace_bytes": cap}
    assert lines[-1]["kind"] == "end" and lines[-1]["end_reason"] == reports[0].end_reason
    with pytest.raises(ValueError, match="max_trace_bytes"):
        ServerConfig(public_url=PUBLIC, max_trace_bytes=0)


def _line(t: float, **fields: Any) -> str:
    return json.dumps({"t": t, **fields}) + "\n"


def _item(t: float, text: str, event_id: str | None = None, role: str = "user") -> str:
    content = [{"type": "input_text", "text": text}]
    frame: JSON = {"type": "conversation.item.create", "item": {"role": role, "content": content}}
    if event_id is not None:
        frame["event_id"] = event_id
    return _line(t, side="openai", dir="out", type=frame["type"], frame=frame)


def _typed(t: float, text: str) -> str:
    return _line(t, side="twilio", dir="in", type="text", frame={"event": "text", "text": text})


def test_history_restored_into_a_new_session_is_not_a_delivery() -> None:
    """After a reconnect the bridge replays the call's history (``<prefix>_history_<n>``) into
    the new session: those items are not deliveries.  Deliveries are counted over all sessions,
    so a text held over a reconnect and delivered on the new session is delivered once."""
    lines = _lines("bad-create-never-answered.jsonl")[:3]  # header, start, session.updated
    lines += [
        _typed(1.0, "hello"),
        _item(1.1, "hello", "rtfsm_text_1"),
        _line(2.0, side="openai", dir="open", conn=2),
        _item(2.1, "hello", "rtfsm_history_1"),  # the restore: not a delivery
    ]
    assert _rules(lines) == []
    # A fresh delivery on the new session is a second delivery, whatever the session.
    assert _rules([*lines, _item(2.2, "hello", "rtfsm_restore_1")]) == [(8, "user_text_duplicated")]
    # Delivered only as history (never fresh): lost.
    assert _rules([*lines[:4], lines[5], lines[6]]) == [(4, "user_text_lost")]
    # Held over the reconnect, delivered on the new session with its own id: fine.
    assert _rules([*lines[:4], lines[5], _item(2.2, "hello", "rtfsm_restore_1")]) == []


def test_same_text_typed_on_both_sides_of_a_reconnect() -> None:
    """The same text typed before and after a reconnect, each delivered once (whether or not the
    history replays the first): neither lost nor duplicated.  A restored caller transcript that
    happens to equal a typed text is history, not a delivery of it."""
    head = _lines("bad-create-never-answered.jsonl")[:3]
    before = [_typed(1.0, "Yes."), _item(1.1, "Yes.", "rtfsm_text_1")]
    reconnect = _line(2.0, side="openai", dir="open", conn=2)
    after = [_typed(3.0, "Yes."), _item(3.1, "Yes.", "rtfsm_text_2")]
    assert _rules([*head, *before, reconnect, *after]) == []  # history_max_items=0
    restored = [_item(2.1, "Yes.", "rtfsm_history_1"), _item(2.2, "Yes.", "rtfsm_history_2")]
    assert _rules([*head, *before, reconnect, *restored, *after]) == []
    # A real duplicate across sessions is caught: the first text sent again fresh.
    again = _item(2.3, "Yes.", "rtfsm_text_9")
    assert _rules([*head, *before, reconnect, again, *after]) == [(9, "user_text_duplicated")]


def test_a_create_right_after_the_servers_idle_timeout_races_its_response() -> None:
    """``create_response`` is off in this trace's session, but the server answers its idle
    timeout itself: a create before that response came is a race, like one after a VAD commit."""
    lines = _lines("bad-create-never-answered.jsonl")[:3]
    timeout = {
        "type": "input_audio_buffer.timeout_triggered",
        "audio_start_ms": 0,
        "audio_end_ms": 6000,
        "item_id": "item_idle_1",
    }
    create = {"type": "response.create", "event_id": "rtfsm_create_1", "response": {}}
    lines += [
        _line(6.0, side="openai", dir="in", type=timeout["type"], frame=timeout),
        _line(6.1, side="openai", dir="out", type="response.create", frame=create),
    ]
    assert _rules(lines) == [(5, "create_races_server_response")]


def test_history_ids_follow_the_headers_event_id_prefix() -> None:
    lines = _lines("bad-create-never-answered.jsonl")[:3]
    header = json.loads(lines[0])
    header["config"]["event_id_prefix"] = "app"
    lines[0] = json.dumps(header) + "\n"
    lines += [_typed(1.0, "hi"), _item(1.1, "hi", "app_text_1")]
    assert _rules([*lines, _item(2.0, "hi", "app_history_1")]) == []
    # Another prefix's "history" is no history of this bridge's: a second delivery.
    assert _rules([*lines, _item(2.0, "hi", "rtfsm_history_1")]) == [(6, "user_text_duplicated")]


def test_watchdog_cooldown_carries_over_a_reconnect() -> None:
    """The bridge hands the no-audio watchdog's cooldown to the new session's machine, so a fire
    right after a reconnect, inside the cooldown, is a violation."""
    lines = _lines("bad-watchdog-in-cooldown.jsonl")
    expected = _rules(lines)
    assert [rule for _, rule in expected] == ["watchdog_in_cooldown"]
    # A new connection opens between the two fires, before the caller's text that leads to
    # the second silent response.
    typed = next(n for n, text in enumerate(lines) if '"and tomorrow?"' in text)
    lines.insert(typed, _line(5.9, side="openai", dir="open", conn=2))
    assert _rules(lines) == [(expected[0][0] + 1, "watchdog_in_cooldown")]


def _create(t: float, n: int, reason: str) -> str:
    event_id = f"rtfsm_create_{n}"
    metadata = {"rtfsm_event_id": event_id, "rtfsm_reason": reason}
    frame = {"type": "response.create", "event_id": event_id, "response": {"metadata": metadata}}
    return _line(t, side="openai", dir="out", type="response.create", frame=frame)


def _server(t: float, kind: str, **fields: Any) -> str:
    return _line(t, side="openai", dir="in", type=kind, frame={"type": kind, **fields})


def test_a_turn_committed_while_busy_is_overdue_server_turn_grace_after_the_slot_frees() -> None:
    """The ``turn`` machine's two deadlines (docs/design.md, rule 5): a turn committed on a free
    slot is the server's for ``create_timeout``; one committed while the slot was busy (the
    server may skip it) only for ``server_turn_grace`` after the slot frees, and then the
    bridge answers it.  Found on a loaded machine: speech committed while the answer to typed
    text played, the server skipped it, and the bridge's answer 1 s after that response's
    done was reported as racing the server."""
    head = _lines("bad-busy-errors.jsonl")[:3]  # server VAD creates; create_timeout 5 s
    ours = {"rtfsm_event_id": "rtfsm_create_1", "rtfsm_reason": "user_text"}
    busy = [
        _create(1.0, 1, "user_text"),
        _server(1.1, "response.created", response={"id": "resp_A", "metadata": ours}),
        _server(1.5, "input_audio_buffer.committed", item_id="item_u1"),
        _server(2.0, "response.done", response={"id": "resp_A", "status": "cancelled"}),
    ]
    # server_turn_grace (1 s, the default, as the header does not say) after the slot freed.
    assert _rules([*head, *busy, _create(3.1, 2, "user_turn")]) == []
    assert _rules([*head, *busy, _create(2.5, 2, "user_turn")]) == [
        (8, "create_races_server_response")
    ]
    header = json.loads(head[0])
    header["config"]["server_turn_grace"] = 2.0
    slower = [json.dumps(header) + "\n", *head[1:]]
    assert _rules([*slower, *busy, _create(3.1, 2, "user_turn")]) == [
        (8, "create_races_server_response")
    ]
    # Committed on a free slot: the server's for create_timeout after the commit.
    free = [_server(2.5, "input_audio_buffer.committed", item_id="item_u2")]
    assert _rules([*head, *busy[:2], busy[3], *free, _create(3.6, 2, "user_turn")]) == [
        (8, "create_races_server_response")
    ]
    assert _rules([*head, *busy[:2], busy[3], *free, _create(7.6, 2, "user_turn")]) == []


# --- never raising: the recorder on hostile frames, the checker on hostile traces ---------------


def _nested(depth: int) -> str:
    return '{"event":"x","a":' + "[" * depth + "]" * depth + "}"


def test_recorder_never_raises_on_frames_nested_near_the_recursion_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """json.loads takes a frame that json.dumps, one level deeper in the trace line, cannot
    write: the frame still reaches the bridge, and the trace keeps it as truncated raw text."""
    limit = sys.getrecursionlimit()
    frames: list[str | bytes] = [json.dumps(START)]
    frames += [_nested(n) for n in range(limit - 150, limit + 5)]
    frames.append(json.dumps({"event": "text", "text": "lone \ud800 surrogate"}))
    trace = CallTrace.open(tmp_path, trace_config())

    async def scenario() -> list[str | bytes]:
        sock = trace.wrap(FakeSocket(list(frames)), "twilio")
        return [await sock.recv() for _ in frames]

    with caplog.at_level(logging.WARNING, "realtime_fsm.trace"):
        assert asyncio.run(scenario()) == frames  # every frame passed through, unchanged
    path = trace.finish(end_reason="done")
    assert path is not None
    kept = [r for r in records(path) if "unserialisable" in r]
    assert trace.unserialisable == len(kept) >= 2  # some depth, and the lone surrogate
    assert all(len(r["raw"]) <= 512 and r["type"] is None for r in kept)
    assert records(path)[-1]["end_reason"] == "done"  # recording went on to the end
    warnings = [r for r in caplog.records if r.name == "realtime_fsm.trace"]
    assert len(warnings) == 1 and "could not be recorded" in warnings[0].getMessage()
    assert check_file(path) == ([], [])


class _ScriptedSocket(FakeSocket):
    """Reads its frames, then waits for the bridge to close it (as a quiet peer would)."""

    async def recv(self) -> str | bytes:
        if self.frames:
            return self.frames.pop(0)
        await asyncio.sleep(0.2)
        raise ConnectionError("closed")


def test_a_frame_the_recorder_cannot_serialise_never_ends_the_call(tmp_path: Path) -> None:
    limit = sys.getrecursionlimit()
    frames: list[str | bytes] = [json.dumps(START)]
    frames += [_nested(n) for n in range(limit - 150, limit + 5)]
    trace = CallTrace.open(tmp_path, trace_config())

    async def scenario() -> CallReport:
        twilio = trace.wrap(_ScriptedSocket(frames), "twilio")
        openai = trace.wrap(_ScriptedSocket([]), "openai")
        return await CallBridge(twilio, openai, trace_config()).run()

    report = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert "internal error" not in report.end_reason
    assert trace.unserialisable >= 1
    path = trace.finish(report)
    assert path is not None and records(path)[-1]["end_reason"] == report.end_reason


def test_recorder_caps_the_file_size(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cap = 20_000
    trace = CallTrace(tmp_path, lifecycle_header(LifecycleConfig()), max_trace_bytes=cap)
    typed = [json.dumps({"event": "text", "text": f"text number {n}"}) for n in range(400)]
    with caplog.at_level(logging.WARNING, "realtime_fsm.trace"):
        asyncio.run(drive(trace, [json.dumps(START), *typed]))
        path = trace.finish(CallReport(end_reason="telephony stop"))
    assert path is not None and trace.capped
    assert path.stat().st_size <= cap
    lines = records(path)
    note, trailer = lines[-2:]
    assert note == {**note, "side": "trace", "dir": "truncated", "max_trace_bytes": cap}
    assert trailer["kind"] == "end" and trailer["end_reason"] == "telephony stop"
    logged = [r.getMessage() for r in caplog.records if r.name == "realtime_fsm.trace"]
    assert len(logged) == 1 and "max_trace_bytes=20000" in logged[0]
    # The texts past the cut were delivered, for all the trace knows: not reported lost.
    violations, warnings = check_file(path)
    assert violations == []
    assert warnings == [f"line {len(lines) - 1}: " + warnings[0].split(": ", 1)[1]]
    assert "recording truncated" in warnings[0]


def test_recorder_flushes_on_a_timer_not_per_line(tmp_path: Path) -> None:
    trace = CallTrace(tmp_path, {}, flush_interval=0.01)

    async def scenario() -> None:
        sock = trace.wrap(FakeSocket([json.dumps(START), json.dumps({"event": "dtmf"})]), "twilio")
        await sock.recv()
        await sock.recv()
        assert trace.path is not None
        path = trace.path
        for _ in range(1000):  # the timer's flush, whenever the loop gets to it
            if '"dtmf"' in path.read_text():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the recorded frame never reached the file")

    asyncio.run(scenario())
    trace.finish()


#: Small traces with every kind of line the checker reads (creates, cancels, errors, typed
#: text and its deliveries, watchdog fires, a trailer): the raw material of the mutations.
_SMALL_TRACES = [_lines(p.name) for p in sorted(TRACES.glob("bad-*.jsonl"))]
_SMALL_TRACE = _lines("good-cancel-acknowledged-late.jsonl")


def test_checker_survives_malformed_lines(capsys: pytest.CaptureFixture[str]) -> None:
    lines = list(_SMALL_TRACE)
    index = next(_find(lines, _is_user_item))
    record = json.loads(lines[index])
    record["frame"]["item"]["content"] = 5
    lines[index] = json.dumps(record) + "\n"
    lines.insert(index + 1, "[" * 100_000 + "]" * 100_000 + "\n")
    lines.insert(index + 2, '{"t": 1' + "0" * 400 + ', "side": "twilio"}\n')  # inf as float
    lines.insert(index + 3, '{"t": NaN, "side": "openai", "dir": "out", "frame": 5}\n')
    lines.insert(index + 4, '{"t": 1, "side": "twilio", "dir": "in", "frame": {"event": 5}}\n')
    violations, warnings = check_lines(lines)
    # The mangled delivery no longer counts (the trailer hands nothing back): lost.
    assert [v.rule for v in violations] == ["user_text_lost"]
    assert warnings == [f"line {index + 2}: unreadable (nested too deeply); skipped"]


def test_cli_replay_on_unreadable_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    deep_header = tmp_path / "deep.jsonl"
    deep_header.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    deep_line = tmp_path / "deep-line.jsonl"
    deep_line.write_text(_SMALL_TRACE[0] + "{" * 50_000 + "\n" + "".join(_SMALL_TRACE[1:]))
    assert cli_main(["replay", str(deep_header), str(binary)]) == 2
    err = capsys.readouterr().err
    assert f"{deep_header}: cannot check: line 1: the first record must be the header" in err
    assert f"{binary}: cannot check: " in err
    assert cli_main(["replay", str(deep_line)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{deep_line}: ok\n"
    assert "line 2: not a JSON object; skipped" in captured.err


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["resp_1", "user", "input_text", "message", "rtfsm_history_1", 1e308]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _paths(inner, (*path, index))


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    return [*value[:head], _replace(value[head], rest, new), *value[head + 1 :]]


def _mutate(data: st.DataObject, value: Any) -> Any:
    """``value`` with one node (any, equally likely) replaced by an arbitrary JSON value."""
    path = data.draw(st.sampled_from(list(_paths(value))))
    return _replace(value, path, data.draw(_JSON_VALUES))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_checker_never_raises_on_mutated_traces(data: st.DataObject) -> None:
    """Any line (the header included) with any node replaced by any JSON value, or by text that
    is no JSON: the checker returns violations and warnings, or refuses the file for its header;
    it never raises otherwise, and every field it reads is validated (its per-line safety net,
    which would say ``unreadable (SomeError)``, never fires)."""
    lines = list(data.draw(st.sampled_from(_SMALL_TRACES)))
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(0, len(lines) - 1))
        if data.draw(st.integers(0, 19)) == 0:
            lines[index] = data.draw(st.text(max_size=20)) + "\n"
            continue
        try:
            record = json.loads(lines[index])
        except ValueError:
            continue  # replaced by text already
        lines[index] = json.dumps(_mutate(data, record)) + "\n"
    try:
        _, warnings = check_lines(lines)
    except TraceFormatError:
        return
    assert all(w.endswith("not a JSON object; skipped") for w in warnings), warnings


#: A value of each JSON type, and numbers no timestamp can be.
_WRONG_TYPES: list[Any] = [None, True, 5, -1e308, "x", [], [5], {}, {"x": 5}]


@pytest.mark.parametrize("index", range(len(_SMALL_TRACES)))
def test_checker_validates_every_field_of_every_line(index: int) -> None:
    """Exhaustively: every node of every line of the hand-made traces replaced, in turn, by a
    value of every JSON type.  The checker never raises (but for a broken header) and never
    needs its per-line safety net."""
    lines = _SMALL_TRACES[index]
    for number, text in enumerate(lines):
        record = json.loads(text)
        for path in _paths(record):
            for value in _WRONG_TYPES:
                mutated = [*lines]
                mutated[number] = json.dumps(_replace(record, path, value)) + "\n"
                try:
                    _, warnings = check_lines(mutated)
                except TraceFormatError:
                    assert number == 0
                    continue
                assert all(w.endswith("not a JSON object; skipped") for w in warnings), (
                    number,
                    path,
                    value,
                    warnings,
                )


@pytest.mark.parametrize("history_max_items", [0, 40])
def test_same_text_typed_across_a_real_reconnect_replays_clean(
    tmp_path: Path, history_max_items: int
) -> None:
    """The real bridge: "yes" typed, the session expires, "yes" typed again on the new one.
    With no history replayed (``history_max_items=0``) or with the first "yes" replayed as
    history, the trace is clean: one delivery per text typed, over both sessions."""
    reports: list[CallReport] = []

    async def scenario() -> Any:
        sim = reconnect.simulator()
        async with sim:
            config = ServerConfig(
                public_url="http://127.0.0.1",
                realtime_url=sim.url,
                bridge=reconnect.bridge_config(history_max_items=history_max_items),
                trace_dir=tmp_path,
            )
            server = await start_server(config, "127.0.0.1", 0, reports=reports)
            port = server.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}/media-stream"
            try:
                async with FakeTwilioCaller(url, reconnect.CALLER) as caller:
                    await reconnect.wait_served(sim, caller, connection=0)
                    await caller.wait_for_quiet()
                    await caller.type_text("yes")
                    await reconnect.wait_served(sim, caller, connection=0, after=1)
                    await caller.wait_for_quiet()
                    sim.expire_sessions()
                    await sim.wait_until(lambda: len(sim.connections) >= 2, 10.0, "reconnect")
                    await sim.wait_until(
                        lambda: bool(sim.client_events("session.update", connection=1)),
                        10.0,
                        "the new session",
                    )
                    await caller.type_text("yes")
                    await reconnect.wait_served(sim, caller, connection=1, after=2)
                    await caller.wait_for_quiet()
                await sim.wait_until(lambda: bool(reports), 10.0, "the report")
            finally:
                server.close()
                await server.wait_closed()
        return sim

    sim = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert reconnect.user_text_count(sim, "yes") == 2 + (1 if history_max_items else 0)
    (path,) = tmp_path.glob("*.jsonl")
    assert check_file(path) == ([], [])

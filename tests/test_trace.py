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
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
import test_e2e as e2e
import test_e2e_turns as e2e_turns
import test_reconnect as reconnect
import test_rotation_e2e as rotation

from realtime_fsm.bridge import BridgeConfig, CallReport
from realtime_fsm.cli import main as cli_main
from realtime_fsm.openai_realtime import Dialect
from realtime_fsm.replay import Violation, check_file, check_lines
from realtime_fsm.server import ServerConfig
from realtime_fsm.trace import (
    REDACTED,
    CallTrace,
    TracedSocket,
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
    # Split out of test_e2e: their servers start from test_e2e's harness (bridge_server).
    E2ECase(
        "turn_taking-app_creates",
        "test_turn_taking_app_creates_responses",
        module=e2e_turns,
        server_module=e2e,
    ),
    E2ECase(
        "turn_taking-server_creates",
        "test_turn_taking_server_creates_responses",
        module=e2e_turns,
        server_module=e2e,
    ),
    E2ECase(
        "server_creates_turn_while_cancelling",
        "test_server_creates_turn_committed_while_cancelling_is_not_raced",
        module=e2e_turns,
        server_module=e2e,
    ),
    E2ECase(
        "duplicated_and_late_events-app_creates",
        "test_duplicated_and_late_events_change_nothing",
        {"server_creates": False},
        module=e2e_turns,
        server_module=e2e,
    ),
    E2ECase(
        "duplicated_and_late_events-server_creates",
        "test_duplicated_and_late_events_change_nothing",
        {"server_creates": True},
        module=e2e_turns,
        server_module=e2e,
    ),
    E2ECase(
        "hang_up_after_typing",
        "test_hang_up_right_after_typing_ends_the_call_and_hands_the_text_back",
        module=e2e_turns,
        server_module=e2e,
    ),
    E2ECase("push_to_talk", "test_push_to_talk_a_dtmf_key_ends_the_callers_turn", module=e2e_turns),
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
    scenarios = {
        (module, name)
        for module in (e2e, e2e_turns)
        for name in dir(module)
        if name.startswith("test_")
    }
    assert scenarios == {(case.module, case.test) for case in E2E_CASES}


ALL_CASES = [*E2E_CASES, *RECONNECT_CASES, *ROTATION_CASES]


@pytest.mark.slow
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
    if case.module not in (e2e, e2e_turns):  # a reconnect or a rotation: two connections
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

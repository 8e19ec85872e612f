"""The replay checker on reconnects (history restored is not a delivery, the watchdog's cooldown
carries over), on the server's turns (idle timeout, a turn committed while busy), and never
raising: the recorder on hostile frames, the checker on malformed, mutated and truncated traces,
and a real reconnect's trace replayed clean.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_reconnect as reconnect
from hypothesis import given, settings
from hypothesis import strategies as st
from test_trace import (
    JSON,
    START,
    TRACES,
    FakeSocket,
    _find,
    _is_user_item,
    _lines,
    _rules,
    drive,
    records,
    trace_config,
)

from realtime_fsm.bridge import CallBridge, CallReport
from realtime_fsm.cli import main as cli_main
from realtime_fsm.config import LifecycleConfig
from realtime_fsm.replay import TraceFormatError, check_file, check_lines
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import FakeTwilioCaller
from realtime_fsm.trace import (
    CallTrace,
    lifecycle_header,
)


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


@pytest.mark.slow
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


def field_mutations(lines: list[str]) -> Iterator[tuple[int, tuple[Any, ...], Any, list[str]]]:
    """Every node of every line replaced, in turn, by a value of every JSON type:
    ``(line index, path, value, mutated lines)``."""
    for number, text in enumerate(lines):
        record = json.loads(text)
        for path in _paths(record):
            for value in _WRONG_TYPES:
                mutated = [*lines]
                mutated[number] = json.dumps(_replace(record, path, value)) + "\n"
                yield number, path, value, mutated


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_SMALL_TRACES)))
def test_checker_validates_every_field_of_every_line(index: int) -> None:
    """Exhaustively: every node of every line of the hand-made traces replaced, in turn, by a
    value of every JSON type.  The checker never raises (but for a broken header) and never
    needs its per-line safety net."""
    for number, path, value, mutated in field_mutations(_SMALL_TRACES[index]):
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

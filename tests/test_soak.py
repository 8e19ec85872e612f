"""The fault soak, short: a few dozen simulated calls with random faults through the example
bridge's server (``realtime-fsm soak`` runs 1,000; see ``docs/testing.md``).

The soak's own checks are tested too, on hand-made outcomes and log records, so a soak that
reports "0 violations" is known to be able to report some.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest

from realtime_fsm.bridge import BridgeConfig, CallReport
from realtime_fsm.cli import SoakProgress, main
from realtime_fsm.openai_realtime import SessionConfig
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ResponseFaults,
)
from realtime_fsm.testing._soak_trace import busy_errors_on_the_wire
from realtime_fsm.testing.soak import (
    BUSY,
    FAULTS,
    SOAK_LIFECYCLE,
    CallOutcome,
    LogWatch,
    SoakConfig,
    SoakResult,
    run_soak,
)

#: Slow, so a plain ``pytest`` deselects it; CI runs it (``pytest -m ''``):
#: the soak runner: tens of whole calls with random faults.
pytestmark = pytest.mark.slow


def test_short_soak() -> None:
    """40 calls, 20 at a time, every fault knob drawn: no violation of any kind."""
    config = SoakConfig(calls=40, concurrency=20, seed=20261124)
    result = asyncio.run(asyncio.wait_for(run_soak(config), 120))
    report = result.format()
    print(report)
    assert result.ok, report
    outcomes = result.outcomes
    assert len(outcomes) == 40
    drawn = {fault for o in outcomes for fault in o.faults}
    assert drawn == set(FAULTS), f"faults never drawn: {set(FAULTS) - drawn}"
    # The calls did what a soak is for: answers, barge-ins, texts, recoveries.
    assert sum(o.responses for o in outcomes) > 40
    assert sum(o.audio_chunks_heard for o in outcomes) > 0
    assert sum(o.texts_typed for o in outcomes) > 40
    assert sum(o.watchdog_fires for o in outcomes) > 0
    assert sum(o.hung_up_mid_response for o in outcomes) > 0
    assert sum(o.idle_after_s is not None for o in outcomes) > 20
    # Sessions replaced before the cap, with the texts and idle checks above holding across.
    assert sum(o.rotations for o in outcomes) > 0


def outcome(**kw: object) -> CallOutcome:
    base = CallOutcome(0, "CAx", False, (), end_reason="telephony stop")
    for key, value in kw.items():
        setattr(base, key, value)
    return base


def test_each_check_can_fail() -> None:
    assert outcome().violations() == []
    cases = {
        "lost texts": outcome(lost_texts=["t"]),
        "duplicated texts": outcome(duplicated_texts=["t"]),
        "not back to idle": outcome(not_idle="active with 1 pending after 9 s"),
        BUSY: outcome(busy_errors=1),
        "watchdog fires inside the cooldown": outcome(watchdog_in_cooldown=1),
        "crash": outcome(crash="internal error: KeyError"),
        "telephony protocol violations": outcome(caller_violations=["media without payload"]),
        "unexpected end": outcome(end_reason="openai closed"),
        "OpenAI would reject": outcome(protocol_errors=Counter(invalid_value=1)),
    }
    for needle, case in cases.items():
        found = case.violations()
        assert len(found) == 1 and needle in found[0], (needle, found)
    # A dropped socket explains an ``openai closed`` end; races and probes are not violations.
    assert outcome(end_reason="openai closed", socket_dropped=True).violations() == []
    assert outcome(busy_races=2, busy_probes=1).violations() == []
    benign = Counter({BUSY: 3, "response_cancel_not_active": 2})
    assert outcome(protocol_errors=benign, busy_races=2, busy_probes=1).violations() == []
    result = SoakResult(SoakConfig(calls=2), [outcome()], 1.0, ["boom"], ["task failed"])
    assert len(result.violations) == 3  # one call missing, a loop exception, an error logged
    assert not result.ok
    assert "violations: 3" in result.format()


def test_watchdog_fires_are_read_from_the_log() -> None:
    watch = LogWatch()
    logger = logging.getLogger("realtime_fsm.lifecycle")

    def fire(call: str) -> None:
        record = logger.makeRecord(
            logger.name,
            logging.WARNING,
            __file__,
            0,
            "call=%s [NO_AUDIO_WATCHDOG] FIRED! resp=%s transcript_deltas=%d audio_deltas=%d",
            (call, "resp_1", 3, 0),
            None,
        )
        watch.emit(record)

    fire("CA1")
    fire("CA1")
    fire("CA2")
    assert Counter({k: len(v) for k, v in watch.fires.items()}) == {"CA1": 2, "CA2": 1}
    error = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "call=CA1 x", (), None)
    watch.emit(error)
    assert watch.errors == ["call=CA1 x"]


def test_cli_soak(capsys: pytest.CaptureFixture[str]) -> None:
    """``realtime-fsm soak`` prints the report, PASS first, and exits 0 when nothing was
    violated; its progress goes to stderr (not a terminal here: whole lines)."""
    code = main(["soak", "--calls", "4", "--concurrency", "2", "--seed", "4", "--factor", "20"])
    captured = capsys.readouterr()
    out = captured.out
    assert out.startswith("PASS: 4 simulated calls"), out
    assert "soak: 4 calls, 2 at a time, seed 4" in out, out
    assert "violations: 0" in out, out
    assert code == 0
    progress = captured.err.splitlines()
    assert progress and progress[-1].startswith("soak: 4/4 calls") and "done" in progress[-1]
    assert "\r" not in captured.err


def explained_result() -> SoakResult:
    """Two calls whose protocol errors every injected fault explains."""
    races = outcome(
        protocol_errors=Counter({BUSY: 2, "response_cancel_not_active": 5}),
        busy_races=1,
        busy_probes=1,
        faults=("slow_cancel",),
    )
    injected = outcome(injected_error_codes=Counter(server_error=3), faults=("server_error",))
    return SoakResult(SoakConfig(calls=2), [races, injected], 1.0)


def test_headline_pass_explains_every_error_code() -> None:
    result = explained_result()
    assert result.ok
    headline = " ".join(result.headline().split())
    assert headline.startswith("PASS: 2 simulated calls (2 with injected faults)")
    assert f"{BUSY} x2: OpenAI refused a request for a new answer" in headline
    assert "Expected under the injected faults: 1 came after a stop request" in headline
    assert "1 crossed an answer that OpenAI's own turn detection had just started" in headline
    assert "0 were asked for after the bridge, on its own clock, had given up" in headline
    assert "response_cancel_not_active x5: the bridge asked OpenAI to stop an answer" in headline
    assert "server_error x3: injected on purpose" in headline
    assert "NOT expected" not in headline
    assert result.format().startswith(result.headline() + "\n\nsoak: 2 calls")


def test_headline_fail_says_what_is_not_expected() -> None:
    result = explained_result()
    broken = outcome(
        protocol_errors=Counter({BUSY: 1, "item_not_found": 1}),
        busy_errors=1,
        lost_texts=["hello"],
    )
    result.outcomes.append(broken)
    result.config = SoakConfig(calls=3)
    assert not result.ok
    headline = " ".join(result.headline().split())
    assert headline.startswith(
        "FAIL: 3 problems in 3 simulated calls (2 with injected faults): typed texts or keys"
        " lost: 1; refusals (active response) nothing explains: 1; requests OpenAI rejects: 1."
    ), headline
    assert "NOT expected for 1 of them: no injected fault or race explains those" in headline
    assert "item_not_found x1: NOT expected: OpenAI rejects what the bridge sent" in headline
    report = result.format()
    assert "lost texts ['hello']" in report and "violations: 3:" in report


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_line_on_a_terminal_and_in_a_log() -> None:
    now = [0.0]
    tty = FakeStream(True)
    progress = SoakProgress(100, tty, clock=lambda: now[0])
    progress.tick()
    assert tty.getvalue() == "\rsoak: 0/100 calls, 0 s elapsed, estimating the time left..."
    now[0] = 0.1
    progress.update(10)  # less than 0.25 s later: not redrawn
    assert tty.getvalue().count("\r") == 1
    now[0] = 10.0
    progress.update(20)
    assert tty.getvalue().endswith(
        "\rsoak: 20/100 calls, 10 s elapsed, 2.0 calls/s, about 40 s left"
    )
    now[0] = 130.0
    progress.update(100)  # the last call: always shown
    progress.close()
    last = tty.getvalue().split("\r")[-1]
    assert last.endswith("\n") and last.rstrip() == "soak: 100/100 calls, 2 min 10 s elapsed, done"
    assert "\n" not in tty.getvalue()[:-1]  # one line, rewritten in place

    now[0] = 0.0
    log = FakeStream(False)
    progress = SoakProgress(100, log, clock=lambda: now[0])
    for second in range(1, 31):  # a call done every second, for 30 s
        now[0] = float(second)
        progress.update(second)
    lines = log.getvalue().splitlines()
    assert lines == [
        "soak: 1/100 calls, 1 s elapsed, 1.0 calls/s, about 1 min 39 s left",
        "soak: 11/100 calls, 11 s elapsed, 1.0 calls/s, about 1 min 29 s left",
        "soak: 21/100 calls, 21 s elapsed, 1.0 calls/s, about 1 min 19 s left",
    ]


def test_watchdog_cooldown_survives_a_reconnect(caplog: pytest.LogCaptureFixture) -> None:
    """Regression (found by the soak): a reconnect built a fresh machine, so the no-audio
    watchdog fired again inside the cooldown of its previous fire."""

    async def scenario() -> None:
        faults = ResponseFaults(silent=True, hold_open_s=None)
        sim_config = FakeRealtimeConfig(realtime_factor=10, faults=faults, seed=2)
        lifecycle = attrs.evolve(SOAK_LIFECYCLE, watchdog_cooldown=30.0)
        bridge = BridgeConfig(
            session=SessionConfig(instructions="t", silence_duration_ms=200),
            lifecycle=lifecycle,
            greeting="Greet the caller.",
            accept_text_messages=True,
        )
        reports: list[CallReport] = []
        async with FakeRealtimeServer(sim_config) as sim:
            config = ServerConfig(
                public_url="http://127.0.0.1", realtime_url=sim.url, bridge=bridge
            )
            server = await start_server(config, "127.0.0.1", 0, reports=reports)
            port = server.sockets[0].getsockname()[1]
            caller_config = FakeCallerConfig(call_sid="CAcooldown", text_event="text", speed=2.0)
            try:
                url = f"ws://127.0.0.1:{port}/media-stream"
                async with FakeTwilioCaller(url, caller_config) as caller:
                    fired = "[NO_AUDIO_WATCHDOG] FIRED!"
                    await caller.wait_until(lambda: fired in caplog.text, 10.0, "a first fire")
                    sim.drop_connections()
                    await sim.wait_until(lambda: len(sim.connections) == 2, 10.0, "a reconnect")
                    await caller.type_text("are you there?")  # a new silent response

                    def second_session_judged() -> bool:  # fired again, or held back
                        if caplog.text.count(fired) > 1:
                            return True
                        held = [f"{r.id} not retried" for r in sim.responses if r.connection]
                        return any(line in caplog.text for line in held)

                    await caller.wait_until(second_session_judged, 10.0, "the silent answer")
            finally:
                server.close()
                await server.wait_closed()
        assert caplog.text.count("[NO_AUDIO_WATCHDOG] FIRED!") == 1, caplog.text
        assert reports[0].reconnects >= 1, reports

    with caplog.at_level(logging.INFO, logger="realtime_fsm"):
        asyncio.run(asyncio.wait_for(scenario(), 60))


def _trace(path: Path, resend_at: float) -> Path:
    """A create the server answers at once, read by the bridge 1.2 s later (a loaded loop):
    at ``create_timeout`` (1 s) the bridge sent it once more, and the resend is busy."""
    metadata = {"rtfsm_event_id": "rtfsm_create_1", "rtfsm_reason": "user_text"}

    def line(t: float, side: str, direction: str, frame: dict[str, Any]) -> str:
        kind = frame.get("type") or frame.get("event")
        return json.dumps({"t": t, "side": side, "dir": direction, "type": kind, "frame": frame})

    def create(t: float, n: int) -> str:
        meta = {**metadata, "rtfsm_event_id": f"rtfsm_create_{n}"}
        frame = {"type": "response.create", "event_id": meta["rtfsm_event_id"]}
        return line(t, "openai", "out", {**frame, "response": {"metadata": meta}})

    busy = {
        "type": "invalid_request_error",
        "code": BUSY,
        "message": "Conversation already has an active response in progress: resp_A.",
        "event_id": "rtfsm_create_2",
    }
    config = {"create_timeout": 1.0, "cancel_timeout": 1.0, "event_id_prefix": "rtfsm"}
    header = {"kind": "header", "format": "realtime-fsm-trace", "version": 1, "config": config}
    start = {"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1"}}
    lines = [
        json.dumps(header),
        line(0.01, "twilio", "in", start),
        create(1.0, 1),
        create(resend_at, 2),
        line(2.2, "openai", "in", {"type": "response.created", "response": {"id": "resp_A"}}),
        line(2.2, "openai", "out", {"type": "response.cancel", "response_id": "resp_A"}),
        line(2.3, "openai", "in", {"type": "error", "event_id": "evt_busy", "error": busy}),
        json.dumps({"kind": "end", "t": 3.0, "end_reason": "telephony stop"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_busy_errors_are_judged_on_the_bridges_clock(tmp_path: Path) -> None:
    """The soak's third explanation of a busy error, read from the call's trace: the create
    went out after the bridge, on its own clock, had given up what held the slot (here the
    first create, resent at ``create_timeout``, whose answer crossed the resend).  A create
    sent before that (the first one not yet overdue) stays unexplained, and so do the hand-made
    bad trace's two busy errors (a create racing the server's VAD answer, and one into a slot
    held by a response the client knew of)."""
    assert busy_errors_on_the_wire(_trace(tmp_path / "late.jsonl", 2.1)) == {"evt_busy": True}
    assert busy_errors_on_the_wire(_trace(tmp_path / "early.jsonl", 1.5)) == {"evt_busy": False}
    bad = Path(__file__).parent / "traces" / "bad-busy-errors.jsonl"
    assert busy_errors_on_the_wire(bad) == {"evt_srv_2.010": False, "evt_srv_4.100": False}
    assert busy_errors_on_the_wire(tmp_path / "missing.jsonl") is None


def test_the_idle_wait_credits_time_the_event_loop_could_not_run() -> None:
    """A loaded machine makes the back-to-idle wait longer, not the call wrong: time the loop
    was blocked (here 0.4 s of a 0.5 s budget, the condition true 0.15 s after the block) is
    credited, up to the budget again; a condition that never holds still fails, within twice
    the budget of running time."""
    from realtime_fsm.testing.soak_call import _until

    async def blocked_then_true() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        settled_at = start + 0.65

        def block() -> None:
            time.sleep(0.4)  # the machine is overloaded: the loop runs nothing meanwhile

        loop.call_later(0.1, block)
        ok = await _until(lambda: loop.time() >= settled_at, 0.5)
        return ok, loop.time() - start

    ok, took = asyncio.run(blocked_then_true())
    assert ok and took >= 0.65

    async def never() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        loop.call_later(0.1, lambda: time.sleep(1.0))
        assert not await _until(lambda: False, 0.3)
        return loop.time() - start

    took = asyncio.run(never())
    assert took < 0.3 + 1.0 + 0.3 + 1.0  # budget, the block, the credit cap, scheduling room

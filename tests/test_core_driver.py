"""LifecycleDriver: commands in order, a timer that follows every deadline move, and teardown.

Each test runs its own loop (``asyncio.run``) bounded by ``asyncio.wait_for(..., 10)``.  Timing
tests use real time with short timeouts from ``LifecycleConfig`` and wait on conditions, never
on fixed sleeps; the one timing bound they assert is far from the value it guards against (a
watchdog due in 0.1 s must not wait for a 60 s stall timeout).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from realtime_fsm.commands import (
    META_EVENT_ID,
    ClearPlayback,
    Command,
    RequestGivenUp,
    ReturnUndeliveredText,
    SendResponseCancel,
    SendResponseCreate,
    SendUserText,
)
from realtime_fsm.config import LifecycleConfig
from realtime_fsm.core_driver import LifecycleDriver
from realtime_fsm.events import (
    Event,
    RequestResponse,
    ResponseCreated,
    ResponseDone,
    UserText,
)
from realtime_fsm.lifecycle import ResponseLifecycle

ROOT = Path(__file__).resolve().parents[1]
SLOW = 60.0  # every timeout a test does not exercise: far beyond the test's own bound


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), 10)

    asyncio.run(bounded())


def machine(**settings: float) -> ResponseLifecycle:
    config = dict(
        create_timeout=SLOW,
        cancel_timeout=SLOW,
        no_audio_timeout=SLOW,
        stall_timeout=SLOW,
        server_turn_grace=SLOW,
    )
    config.update(settings)
    return ResponseLifecycle(LifecycleConfig(call_id="test", **config), now=time.monotonic())


class Recorder:
    """An ``execute`` that records what it ran; tests wait on what it has seen."""

    def __init__(self) -> None:
        self.seen: list[Command] = []

    def __call__(self, command: Command) -> None:
        self.seen.append(command)

    def of(self, kind: type) -> list[Any]:
        return [c for c in self.seen if isinstance(c, kind)]

    async def until(self, kind: type, count: int = 1) -> Any:
        while len(self.of(kind)) < count:
            await asyncio.sleep(0.002)
        return self.of(kind)[count - 1]


def created(create: SendResponseCreate, response_id: str) -> ResponseCreated:
    return ResponseCreated(response_id, metadata={META_EVENT_ID: create.event_id})


async def to_active(driver: LifecycleDriver, rec: Recorder, response_id: str = "r1") -> None:
    driver.handle(RequestResponse(reason="greeting"))
    await driver.drain()
    driver.handle(created(rec.of(SendResponseCreate)[-1], response_id))
    assert driver.machine.state.value == "active"


class Handing(ResponseLifecycle):
    """Remembers every command the machine handed out, in the order it handed them."""

    def __init__(self, config: LifecycleConfig) -> None:
        super().__init__(config, now=time.monotonic())
        self.handed: list[Command] = []

    def handle(self, event: Event, now: float) -> list[Command]:
        commands = super().handle(event, now)
        self.handed.extend(commands)
        return commands


def test_commands_run_in_order_with_an_async_callback_and_reentrant_handles() -> None:
    async def body() -> None:
        log: list[tuple[str, Command]] = []
        driver: LifecycleDriver

        async def execute(command: Command) -> None:
            log.append(("start", command))
            await asyncio.sleep(0.001)  # another command must not start meanwhile
            if isinstance(command, ClearPlayback):
                # The app feeds an event from inside execute: its commands queue behind.
                driver.handle(UserText("and another thing"))
            log.append(("end", command))

        m = Handing(machine().config)
        driver = LifecycleDriver(m, execute)
        async with driver:
            driver.handle(RequestResponse(reason="greeting"))
            await driver.drain()
            create = m.handed[-1]
            assert isinstance(create, SendResponseCreate)
            driver.handle(created(create, "r1"))
            driver.handle(UserText("stop"))  # barge-in: cancel, clear, hold the text
            assert driver.queued >= 2
            await driver.drain()
            assert driver.queued == 0
            driver.handle(ResponseDone("r1", status="cancelled"))  # texts, then one create
            await driver.drain()
        assert [kind for kind, _ in log] == ["start", "end"] * (len(log) // 2)  # never nested
        executed = [command for kind, command in log if kind == "start"]
        assert executed == m.handed  # every command, in the order the machine handed it out
        kinds = [type(c).__name__ for c in executed]
        assert kinds.index("ClearPlayback") < kinds.index("SendUserText")
        assert [c.text for c in executed if isinstance(c, SendUserText)] == [
            "stop",
            "and another thing",
        ]
        assert driver.execute_errors == 0

    run(body)


def test_watchdog_fires_on_time_when_only_transcript_delta_moved_the_deadline() -> None:
    async def body() -> None:
        rec = Recorder()
        driver = LifecycleDriver(machine(no_audio_timeout=0.1), rec)
        async with driver:
            await to_active(driver, rec)
            # The timer now sleeps for the 60 s stall timeout; no handle() follows.
            assert (driver.machine.next_deadline or 0) > time.monotonic() + SLOW / 2
            started = time.monotonic()
            driver.transcript_delta("r1")
            cancel = await rec.until(SendResponseCancel)
            elapsed = time.monotonic() - started
            assert cancel.response_id == "r1"
            assert 0.1 <= elapsed < 5.0, elapsed  # due at 0.1 s, not at the stall's 60 s
            assert driver.machine.stats.get("watchdog_fires") == 1
            assert driver.ticks >= 1

    run(body)


def test_create_timeout_resends_then_gives_up() -> None:
    async def body() -> None:
        rec = Recorder()
        async with LifecycleDriver(machine(create_timeout=0.05), rec) as driver:
            driver.handle(RequestResponse(reason="greeting"))
            given_up = await rec.until(RequestGivenUp)
            assert given_up.reason == "create_timeout"
            assert len(rec.of(SendResponseCreate)) == 2  # sent once more, then given up
            assert driver.machine.state.value == "idle"
            assert driver.machine.next_deadline is None

    run(body)


def test_execute_raising_is_logged_counted_and_does_not_stop_the_timer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        rec = Recorder()

        def execute(command: Command) -> None:
            rec(command)
            if isinstance(command, SendResponseCreate):
                raise ConnectionError("socket gone")

        async with LifecycleDriver(machine(create_timeout=0.05), execute) as driver:
            driver.handle(RequestResponse(reason="greeting"))
            await rec.until(RequestGivenUp)  # the timer ticked twice after the failures
            assert driver.execute_errors == 2

    with caplog.at_level(logging.ERROR, logger="realtime_fsm.core_driver"):
        run(body)
    failures = [r for r in caplog.records if "execute(SendResponseCreate) failed" in r.message]
    assert len(failures) == 2
    assert failures[0].exc_info is not None


def test_close_returns_held_text_through_execute() -> None:
    async def body() -> None:
        rec = Recorder()
        async with LifecycleDriver(machine(), rec) as driver:
            await to_active(driver, rec)
            driver.handle(UserText("call me back"))  # held until the cancelled response ends
            await driver.drain()
        assert rec.of(ReturnUndeliveredText) == [ReturnUndeliveredText(("call me back",))]
        assert driver.machine.state.value == "closed"
        assert driver.machine.next_deadline is None

    run(body)


def test_close_runs_commands_still_queued_before_the_returned_text() -> None:
    async def body() -> None:
        rec = Recorder()
        driver = LifecycleDriver(machine(), rec)  # never started: close() executes them
        driver.handle(RequestResponse(reason="greeting"))
        driver.handle(UserText("hello"))  # during creating: held
        assert rec.seen == []
        with pytest.raises(RuntimeError, match="not running"):
            await driver.drain()
        await driver.close("hangup")
        kinds = [type(c).__name__ for c in rec.seen]
        assert kinds[0] == "SendResponseCreate"
        assert kinds[-1] == "ReturnUndeliveredText"
        assert rec.of(ReturnUndeliveredText)[0].texts == ("hello",)
        await driver.close()  # a second close does nothing
        assert len(rec.of(ReturnUndeliveredText)) == 1

    run(body)


def test_close_cancels_an_execute_stuck_past_its_timeout_and_still_returns_the_text() -> None:
    async def body() -> None:
        rec = Recorder()
        never = asyncio.Event()

        async def execute(command: Command) -> None:
            rec(command)
            if isinstance(command, SendResponseCreate):
                await never.wait()  # a socket write that never completes

        driver = LifecycleDriver(machine(), execute)
        runner = asyncio.ensure_future(driver.run())
        driver.handle(RequestResponse(reason="greeting"))
        await rec.until(SendResponseCreate)
        driver.handle(UserText("hello"))  # held: the create is unanswered
        await driver.close("hangup", timeout=0.05)
        assert rec.of(ReturnUndeliveredText) == [ReturnUndeliveredText(("hello",))]
        assert await runner is None  # close() ended it: run() returns, it does not raise

    run(body)


def test_close_from_inside_execute_finishes_the_queue() -> None:
    async def body() -> None:
        rec = Recorder()
        driver: LifecycleDriver

        async def execute(command: Command) -> None:
            rec(command)
            if isinstance(command, SendUserText):
                await driver.close("socket error")  # returns at once; the task goes on

        driver = LifecycleDriver(machine(), execute)
        task = driver.start()
        driver.handle(UserText("first"))  # idle: sent at once, with a create
        await asyncio.wait({task})
        kinds = [type(c).__name__ for c in rec.seen]
        assert kinds == ["SendUserText", "SendResponseCreate", "RequestGivenUp"]
        assert rec.seen[-1].reason == "closed:socket error"  # the close's own command ran

    run(body)


def test_cancelling_run_propagates_even_mid_execute() -> None:
    async def body() -> None:
        entered = asyncio.Event()
        gate = asyncio.Event()

        async def execute(command: Command) -> None:
            entered.set()
            await gate.wait()  # a send that never completes

        driver = LifecycleDriver(machine(create_timeout=0.05), execute)
        runner = asyncio.ensure_future(driver.run())
        await asyncio.sleep(0)
        driver.handle(RequestResponse(reason="greeting"))
        await entered.wait()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        assert driver.execute_errors == 0  # the cancellation was not taken for a failure
        assert driver._task is not None and driver._task.cancelled()
        assert driver._timer is None  # the timer stopped with the task

    run(body)


def test_cancelling_the_drivers_own_task_propagates_to_run() -> None:
    async def body() -> None:
        driver = LifecycleDriver(machine(), Recorder())
        runner = asyncio.ensure_future(driver.run())
        await asyncio.sleep(0)
        assert driver._task is not None
        driver._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    run(body)


def test_a_deadline_a_tick_does_not_move_is_retried_without_spinning() -> None:
    class Stuck(ResponseLifecycle):
        """A machine whose deadline stays in the past whatever the tick does."""

        __slots__ = ()

        @property
        def next_deadline(self) -> float | None:
            return 0.0

    async def body() -> None:
        stuck = Stuck(LifecycleConfig(), now=time.monotonic())
        async with LifecycleDriver(stuck, Recorder()) as driver:
            started = time.monotonic()
            while driver.ticks < 5:
                await asyncio.sleep(0.002)
            rate = driver.ticks / (time.monotonic() - started)
        assert rate < 1000, rate  # a 5 ms pause allows ~200/s; spinning would be far more

    run(body)


def test_core_only_example_runs_the_watchdog_through_the_driver() -> None:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "core_only.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "[NO_AUDIO_WATCHDOG] FIRED! resp=resp_1 transcript_deltas=1 audio_deltas=0" in out
    assert "audio of resp_2 forwarded to the caller" in out
    assert "core only: ok" in out

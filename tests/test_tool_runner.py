"""realtime_fsm.tool_runner: every way one tool call can end becomes an outcome with an output
for the model, except the caller's cancellation, which propagates and takes the tool with it."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable
from typing import Any

import pytest

from realtime_fsm.tool_runner import ToolOutcome, run_tool
from realtime_fsm.tools import Tool, function_tool

SECRET = "4711-caller-pin"


def run(coro: Awaitable[ToolOutcome]) -> ToolOutcome:
    async def main() -> ToolOutcome:
        return await coro

    return asyncio.run(main())


def args(**kwargs: Any) -> str:
    return json.dumps(kwargs)


@function_tool
def add(a: int, b: int) -> dict[str, int]:
    """Add two numbers."""
    return {"sum": a + b, "thread": threading.get_ident()}


@function_tool
async def echo(text: str) -> str:
    """Echo."""
    await asyncio.sleep(0)
    return text


@function_tool
def broken(pin: str) -> None:
    raise ValueError("no booking found")


@function_tool
async def broken_async(pin: str) -> None:
    raise KeyError("booking")


def test_sync_tool_runs_in_a_worker_thread() -> None:
    outcome = run(run_tool(add, "add", args(a=2, b="3"), default_timeout=5))
    assert outcome.ok and outcome.error is None and outcome.duration_s >= 0
    result = json.loads(outcome.output)
    assert result["sum"] == 5 and result["thread"] != threading.get_ident()


def test_async_tool() -> None:
    outcome = run(run_tool(echo, "echo", args(text="hi"), default_timeout=5))
    assert outcome == ToolOutcome(output="hi", ok=True, error=None, duration_s=outcome.duration_s)


def test_a_slow_sync_tool_does_not_block_the_loop() -> None:
    @function_tool
    def slow() -> str:
        time.sleep(0.3)
        return "done"

    async def main() -> tuple[ToolOutcome, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        outcome = await run_tool(slow, "slow", "", default_timeout=5)
        task.cancel()
        return outcome, ticks

    outcome, ticks = asyncio.run(main())
    assert outcome.output == "done" and ticks >= 5


def test_unknown_tool(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="realtime_fsm.tools"):
        outcome = run(run_tool(None, "fly_to_mars", args(pin=SECRET), default_timeout=5))
    assert not outcome.ok
    assert json.loads(outcome.output) == {
        "error": "unknown tool 'fly_to_mars': no function of that name exists"
    }
    assert outcome.error is not None and "fly_to_mars" in outcome.error
    assert SECRET not in caplog.text and "fly_to_mars" in caplog.text


def test_bad_arguments(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="realtime_fsm.tools"):
        outcome = run(run_tool(add, "add", args(a=SECRET, b=1), default_timeout=5))
    assert not outcome.ok
    assert outcome.error is not None and outcome.error.startswith("invalid arguments: a:")
    assert json.loads(outcome.output) == {"error": outcome.error}
    assert SECRET not in caplog.text and SECRET not in outcome.output
    with caplog.at_level(logging.WARNING, logger="realtime_fsm.tools"):
        outcome = run(run_tool(add, "add", "{not json", default_timeout=5))
    assert outcome.error == "arguments are not valid JSON"


@pytest.mark.parametrize(
    ("tool", "reason"),
    [(broken, "ValueError: no booking found"), (broken_async, "KeyError: 'booking'")],
)
def test_a_raising_tool(tool: Tool, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="realtime_fsm.tools"):
        outcome = run(run_tool(tool, tool.name, args(pin=SECRET), default_timeout=5))
    assert not outcome.ok and outcome.error == reason
    assert json.loads(outcome.output) == {"error": reason}
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.name == "realtime_fsm.tools"
    line = record.getMessage()
    assert "\n" not in line and tool.name in line and reason in line and " s: " in line
    assert SECRET not in caplog.text


def test_a_raising_validator_or_formatter_is_a_tool_failure() -> None:
    def validate(_data: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("validator bug")

    tool = Tool("v", "", {"type": "object"}, lambda: None, validate_arguments=validate)
    outcome = run(run_tool(tool, "v", "{}", default_timeout=5))
    assert outcome.error == "RuntimeError: validator bug"

    class Unprintable:
        def __str__(self) -> str:
            raise TypeError("no str")

    @function_tool
    async def weird() -> Unprintable:
        return Unprintable()

    assert run(run_tool(weird, "weird", "", default_timeout=5)).error == "TypeError: no str"


def test_async_timeout_cancels_the_tool() -> None:
    cancelled = asyncio.Event()

    @function_tool(timeout=0.05)
    async def hang() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()

    async def main() -> ToolOutcome:
        outcome = await run_tool(hang, "hang", "", default_timeout=60)
        await asyncio.wait_for(cancelled.wait(), 5)  # the test's own bound, not the code's
        return outcome

    outcome = asyncio.run(main())
    assert not outcome.ok and outcome.error == "hang timed out after 0.05 s and was abandoned"
    assert json.loads(outcome.output) == {"error": outcome.error}
    assert 0.05 <= outcome.duration_s < 5


def test_sync_timeout_uses_the_default_and_abandons_the_thread() -> None:
    release = threading.Event()
    finished = threading.Event()

    @function_tool
    def stuck() -> str:
        release.wait(10)
        finished.set()
        return "late"

    async def main() -> ToolOutcome:
        try:
            return await run_tool(stuck, "stuck", "", default_timeout=0.05)
        finally:
            # Before asyncio.run ends: its shutdown waits for the default executor's threads.
            release.set()

    outcome = asyncio.run(main())
    assert not outcome.ok and outcome.error == "stuck timed out after 0.05 s and was abandoned"
    assert finished.wait(5)  # the thread ran on, its result dropped


def test_cancelling_the_caller_propagates_and_cancels_the_tool() -> None:
    started = asyncio.Event()
    tool_cancelled = asyncio.Event()

    @function_tool
    async def long_call() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            tool_cancelled.set()
            raise

    async def main() -> None:
        call = asyncio.create_task(run_tool(long_call, "long_call", "", default_timeout=60))
        await started.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(tool_cancelled.wait(), 5)

    asyncio.run(main())


def test_a_cancel_arriving_as_the_tool_finishes_is_not_swallowed() -> None:
    """The python/cpython#86296 race: the tool's result and the caller's cancel in one step."""

    async def main() -> None:
        call: asyncio.Task[ToolOutcome] | None = None

        @function_tool
        async def finishes() -> str:
            assert call is not None
            call.cancel()
            return "result"

        call = asyncio.create_task(run_tool(finishes, "finishes", "", default_timeout=60))
        with pytest.raises(asyncio.CancelledError):
            await call
        assert call.cancelled()

    asyncio.run(main())


def test_a_tool_cancelling_itself_is_a_failure_not_a_cancellation() -> None:
    @function_tool
    async def gives_up() -> None:
        raise asyncio.CancelledError

    outcome = run(run_tool(gives_up, "gives_up", "", default_timeout=5))
    assert not outcome.ok and outcome.error == "CancelledError"


def test_sync_function_returning_a_coroutine_is_awaited() -> None:
    async def inner() -> list[int]:
        return [1, 2]

    @function_tool
    def wrapper() -> Any:
        return inner()

    assert not wrapper.is_async
    assert run(run_tool(wrapper, "wrapper", "", default_timeout=5)).output == "[1,2]"

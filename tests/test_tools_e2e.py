"""Function calling end to end: the simulator's model calls a tool, the bridge runs it and the
caller hears the answer, over real sockets on 127.0.0.1.

The rules under test (``call/tool_calls.py``): only completed calls run; the output goes in at
once; the follow-up ``response.create`` goes through the response machine (never into a busy
slot: not while the calling response is still active, not over a VAD response the caller
started); parallel calls get one follow-up; a tool that raises or hangs gets an error output; a
VAD response that began after the outputs were in the conversation answers them (the follow-up
is withdrawn, the caller hears one answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
from test_e2e import (
    BUSY,
    CALLER,
    bridge_config,
    bridge_server,
    create_reasons,
    run,
    short_replies,
    simulator,
)

from realtime_fsm.bridge import BridgeConfig, CallReport
from realtime_fsm.testing import (
    FakeRealtimeServer,
    FakeTwilioCaller,
    ResponseFaults,
    ResponseRecord,
)
from realtime_fsm.tools import Tool, function_tool

ORDERS = {"42": "shipped on Monday", "7": "still in the warehouse"}


@function_tool
async def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order's status.

    Args:
        order_id: The order number the caller gave.
    """
    return {"order_id": order_id, "status": ORDERS.get(order_id, "unknown")}


def config(*tools: Tool, server_creates: bool = True, **extra: Any) -> BridgeConfig:
    return attrs.evolve(
        bridge_config(server_creates=server_creates, greeting=None), tools=tools, **extra
    )


def answered(sim: FakeRealtimeServer, prefix: str) -> list[ResponseRecord]:
    return [r for r in sim.responses if r.text.startswith(prefix)]


def finished(records: list[ResponseRecord]) -> bool:
    return bool(records) and all(r.done_sent for r in records)


def called_and_done(sim: FakeRealtimeServer) -> bool:
    """The model's call is complete and the response that made it is done (a caller talking
    before that would cut the call off: an incomplete call is never run)."""
    if not sim.tool_calls or sim.tool_calls[0].status != "completed":
        return False
    rid = sim.tool_calls[0].response_id
    return any(r.id == rid and r.done_sent for r in sim.responses)


async def ask(sim: FakeRealtimeServer, caller: FakeTwilioCaller, words: str) -> None:
    sim.queue_transcript(words)
    await caller.speak(0.4)


@attrs.define
class Scene:
    """One call through the example server: the simulator, the caller, and, once the caller
    hung up, the call's report."""

    sim: FakeRealtimeServer
    caller: FakeTwilioCaller
    report: CallReport | None = None


@contextlib.asynccontextmanager
async def a_call(
    *tools: Tool,
    arguments: dict[str, str] | None = None,
    then_reply: Any = "Done.",
    faults: ResponseFaults | None = None,
    **script: Any,
) -> AsyncIterator[Scene]:
    """A call whose caller's turns about an order make the model call ``lookup_order`` (or
    ``script``'s ``calls``), answered with ``then_reply``, bridged with ``tools``."""
    sim = simulator(short_replies, faults=faults)
    async with sim:
        if "calls" not in script:
            script["name"] = "lookup_order"
            script["arguments"] = arguments or {"order_id": "42"}
        sim.script_tool_call(r"order", then_reply=then_reply, **script)
        async with bridge_server(sim, config(*tools)) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                scene = Scene(sim, caller)
                yield scene
            scene.report = await bridge.report(sim)


def test_the_model_calls_a_tool_and_the_caller_hears_its_answer() -> None:
    async def scenario() -> None:
        reply = lambda outputs: f"Your order: {json.loads(outputs[0])['status']}."  # noqa: E731
        async with a_call(lookup_order, preamble="Let me look that up.", then_reply=reply) as s:
            await ask(s.sim, s.caller, "where is my order forty two")
            await s.sim.wait_until(
                lambda: finished(answered(s.sim, "Your order")), 10, "the answer"
            )
            [answer] = answered(s.sim, "Your order")
            assert answer.text == "Your order: shipped on Monday."
            await s.caller.wait_until(
                lambda: any(t.tag.ordinal == answer.tag for t in s.caller.tags_received), 5
            )
        [output] = s.sim.tool_outputs
        assert json.loads(output.output) == {"order_id": "42", "status": "shipped on Monday"}
        assert s.sim.responses_before_outputs == 0
        assert s.sim.error_counts == {}
        assert create_reasons(s.sim).count("tool") == 1
        assert s.report is not None
        assert s.report.tool_calls == 1 and s.report.tool_failures == 0

    run(scenario())


def test_parallel_calls_are_answered_with_one_create() -> None:
    async def scenario() -> None:
        calls = [("lookup_order", {"order_id": "42"}), ("lookup_order", {"order_id": "7"})]
        reply = lambda outputs: f"Two orders, {len(outputs)} answers."  # noqa: E731
        async with a_call(lookup_order, calls=calls, then_reply=reply) as s:
            await ask(s.sim, s.caller, "and my two orders")
            await s.sim.wait_until(lambda: finished(answered(s.sim, "Two orders")), 10)
        assert len(s.sim.tool_outputs) == 2
        assert create_reasons(s.sim).count("tool") == 1
        assert s.sim.responses_before_outputs == 0 and s.sim.error_counts == {}

    run(scenario())


def test_a_tool_that_raises_gets_an_error_output_and_the_model_goes_on() -> None:
    @function_tool(name="lookup_order")
    async def broken(order_id: str) -> str:
        """Find an order."""
        raise RuntimeError("database down")

    async def scenario() -> None:
        async with a_call(broken, then_reply="Sorry, I cannot look that up.") as s:
            await ask(s.sim, s.caller, "my order please")
            await s.sim.wait_until(lambda: finished(answered(s.sim, "Sorry")), 10)
        [output] = s.sim.tool_outputs
        assert "database down" in json.loads(output.output)["error"]
        assert s.report is not None and s.report.tool_failures == 1
        assert s.sim.error_counts == {}

    run(scenario())


def test_a_hanging_tool_is_answered_with_an_error_after_its_timeout() -> None:
    @function_tool(name="lookup_order", timeout=0.3)
    async def hangs(order_id: str) -> str:
        """Find an order."""
        await asyncio.Event().wait()
        return "never"

    async def scenario() -> None:
        async with a_call(hangs, then_reply="Sorry.") as s:
            await ask(s.sim, s.caller, "my order")
            await s.sim.wait_until(lambda: finished(answered(s.sim, "Sorry")), 10)
        [output] = s.sim.tool_outputs
        assert "timed out" in json.loads(output.output)["error"]
        assert s.report is not None and s.report.tool_failures == 1

    run(scenario())


def test_the_caller_talking_while_a_tool_runs() -> None:
    """The output is still delivered; the follow-up waits its turn behind the response the
    caller's new turn started; nothing is ever created into a busy slot."""
    release = asyncio.Event()

    @function_tool(name="lookup_order")
    async def slow(order_id: str) -> str:
        """Find an order."""
        await release.wait()
        return "shipped"

    async def scenario() -> None:
        async with a_call(slow) as s:
            await ask(s.sim, s.caller, "where is my order")
            await s.sim.wait_until(lambda: called_and_done(s.sim), 10, "the call, its done")
            # While the tool runs, the caller says something else: the server's VAD answers
            # that turn by itself.
            await ask(s.sim, s.caller, "hello, are you there")
            await s.sim.wait_until(
                lambda: sum(r.origin == "server_vad" for r in s.sim.responses) >= 2, 10
            )
            release.set()
            await s.sim.wait_until(lambda: finished(answered(s.sim, "Done")), 10)
        assert [o.output for o in s.sim.tool_outputs] == ["shipped"]
        assert s.sim.error_counts == {}  # never a create into a busy slot
        assert len(answered(s.sim, "Done")) == 1

    run(scenario())


def test_a_vad_response_racing_the_follow_up_answers_once() -> None:
    """The server starts a VAD response just as the follow-up create arrives: the create is
    refused busy (the server's rule), and the caller hears one answer, not two."""

    async def scenario() -> None:
        async with a_call(lookup_order) as s:
            s.sim.race_vad_on_next_create()
            await ask(s.sim, s.caller, "where is my order")
            await s.sim.wait_until(lambda: finished(answered(s.sim, "Done")), 10)
            await s.sim.wait_until(lambda: all(r.done_sent for r in s.sim.responses), 10)
            await asyncio.sleep(0.3)  # room for a wrong second answer to show
        assert len(s.sim.tool_outputs) == 1
        # The one refusal is the race itself (the server's rule); the VAD response saw the
        # output and answered it; the refused follow-up is not asked for again.
        assert s.sim.error_counts == {BUSY: 1}
        assert len(answered(s.sim, "Done")) == 1, [r.text for r in s.sim.responses]
        assert create_reasons(s.sim) == ["tool"]
        assert s.report is not None and s.report.tool_calls == 1

    run(scenario())


def test_a_call_cut_off_by_a_barge_in_is_not_run() -> None:
    """The caller talks while the model is still writing the call's arguments: the server
    cancels the response, the item ends ``incomplete`` with a fragment of JSON, nothing runs."""
    ran: list[str] = []

    @function_tool(name="lookup_order")
    async def records(order_id: str) -> str:
        """Find an order."""
        ran.append(order_id)
        return "shipped"

    async def scenario() -> None:
        async with a_call(records, faults=ResponseFaults(stall_after_deltas=2)) as s:
            await ask(s.sim, s.caller, "where is my order")
            await s.sim.wait_until(lambda: bool(s.sim.tool_calls), 10, "the call begun")
            await ask(s.sim, s.caller, "no wait, never mind")
            await s.sim.wait_until(
                lambda: s.sim.tool_calls[0].status == "incomplete", 10, "the cut"
            )
            await s.sim.wait_until(lambda: all(r.done_sent for r in s.sim.responses), 10)
        assert ran == [] and s.sim.tool_outputs == []
        assert s.report is not None and s.report.tool_calls == 0
        assert s.sim.error_counts == {}

    run(scenario())

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
import json
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

from realtime_fsm.bridge import BridgeConfig
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


def test_the_model_calls_a_tool_and_the_caller_hears_its_answer() -> None:
    async def scenario() -> None:
        sim = simulator(short_replies)
        async with sim:
            sim.script_tool_call(
                r"order",
                name="lookup_order",
                arguments={"order_id": "42"},
                preamble="Let me look that up.",
                then_reply=lambda outputs: f"Your order: {json.loads(outputs[0])['status']}.",
            )
            async with bridge_server(sim, config(lookup_order)) as bridge:
                async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                    await ask(sim, caller, "where is my order forty two")
                    await sim.wait_until(
                        lambda: finished(answered(sim, "Your order")), 10, "the answer"
                    )
                    [answer] = answered(sim, "Your order")
                    assert answer.text == "Your order: shipped on Monday."
                    await caller.wait_until(
                        lambda: any(t.tag.ordinal == answer.tag for t in caller.tags_received),
                        5,
                    )
                report = await bridge.report(sim)
            [output] = sim.tool_outputs
            assert json.loads(output.output) == {"order_id": "42", "status": "shipped on Monday"}
            assert sim.responses_before_outputs == 0
            assert sim.error_counts == {}
            assert create_reasons(sim).count("tool") == 1
            assert report.tool_calls == 1 and report.tool_failures == 0

    run(scenario())


def test_parallel_calls_are_answered_with_one_create() -> None:
    async def scenario() -> None:
        sim = simulator(short_replies)
        async with sim:
            sim.script_tool_call(
                r"orders",
                calls=[("lookup_order", {"order_id": "42"}), ("lookup_order", {"order_id": "7"})],
                then_reply=lambda outputs: f"Two orders, {len(outputs)} answers.",
            )
            async with bridge_server(sim, config(lookup_order)) as bridge:
                async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                    await ask(sim, caller, "and my two orders")
                    await sim.wait_until(
                        lambda: finished(answered(sim, "Two orders")), 10, "the answer"
                    )
                await bridge.report(sim)
            assert len(sim.tool_outputs) == 2
            assert create_reasons(sim).count("tool") == 1
            assert sim.responses_before_outputs == 0 and sim.error_counts == {}

    run(scenario())


def test_a_tool_that_raises_gets_an_error_output_and_the_model_goes_on() -> None:
    @function_tool(name="lookup_order")
    async def broken(order_id: str) -> str:
        """Find an order."""
        raise RuntimeError("database down")

    async def scenario() -> None:
        sim = simulator(short_replies)
        async with sim:
            sim.script_tool_call(
                r"order",
                name="lookup_order",
                arguments={"order_id": "42"},
                then_reply="Sorry, I cannot look that up right now.",
            )
            async with bridge_server(sim, config(broken)) as bridge:
                async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                    await ask(sim, caller, "my order please")
                    await sim.wait_until(lambda: finished(answered(sim, "Sorry")), 10)
                report = await bridge.report(sim)
            [output] = sim.tool_outputs
            assert "database down" in json.loads(output.output)["error"]
            assert report.tool_failures == 1 and sim.error_counts == {}

    run(scenario())


def test_a_hanging_tool_is_answered_with_an_error_after_its_timeout() -> None:
    @function_tool(name="lookup_order", timeout=0.3)
    async def hangs(order_id: str) -> str:
        """Find an order."""
        await asyncio.Event().wait()
        return "never"

    async def scenario() -> None:
        sim = simulator(short_replies)
        async with sim:
            sim.script_tool_call(
                r"order", name="lookup_order", arguments={"order_id": "1"}, then_reply="Sorry."
            )
            async with bridge_server(sim, config(hangs)) as bridge:
                async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                    await ask(sim, caller, "my order")
                    await sim.wait_until(lambda: finished(answered(sim, "Sorry")), 10)
                report = await bridge.report(sim)
            [output] = sim.tool_outputs
            assert "timed out" in json.loads(output.output)["error"]
            assert report.tool_failures == 1

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
        sim = simulator(short_replies)
        async with sim:
            sim.script_tool_call(
                r"order", name="lookup_order", arguments={"order_id": "42"}, then_reply="Done."
            )
            async with bridge_server(sim, config(slow)) as bridge:
                async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                    await ask(sim, caller, "where is my order")
                    await sim.wait_until(
                        lambda: called_and_done(sim), 10, "the tool call, its response done"
                    )
                    # While the tool runs, the caller says something else: the server's VAD
                    # answers that turn by itself.
                    await ask(sim, caller, "hello, are you there")
                    await sim.wait_until(
                        lambda: sum(r.origin == "server_vad" for r in sim.responses) >= 2, 10
                    )
                    release.set()
                    await sim.wait_until(lambda: finished(answered(sim, "Done")), 10)
                await bridge.report(sim)
            assert [o.output for o in sim.tool_outputs] == ["shipped"]
            assert sim.error_counts == {}  # never a create into a busy slot
            assert len(answered(sim, "Done")) == 1

    run(scenario())


def test_a_vad_response_racing_the_follow_up_answers_once() -> None:
    """The server starts a VAD response just as the follow-up create arrives: the create is
    refused busy (the server's rule), and the caller hears one answer, not two."""

    async def scenario() -> None:
        sim = simulator(short_replies)
        async with sim:
            sim.script_tool_call(
                r"order", name="lookup_order", arguments={"order_id": "42"}, then_reply="Done."
            )
            sim.race_vad_on_next_create()
            async with bridge_server(sim, config(lookup_order)) as bridge:
                async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                    await ask(sim, caller, "where is my order")
                    await sim.wait_until(lambda: finished(answered(sim, "Done")), 10)
                    await sim.wait_until(
                        lambda: all(r.done_sent for r in sim.responses), 10, "all done"
                    )
                    await asyncio.sleep(0.3)  # room for a wrong second answer to show
                report = await bridge.report(sim)
            assert len(sim.tool_outputs) == 1
            # The one refusal is the race itself (the server's rule); the VAD response saw the
            # output and answered it; the refused follow-up is not asked for again.
            assert sim.error_counts == {BUSY: 1}
            assert len(answered(sim, "Done")) == 1, [r.text for r in sim.responses]
            assert create_reasons(sim) == ["tool"]
            assert report.tool_calls == 1

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
        sim = simulator(short_replies, faults=ResponseFaults(stall_after_deltas=2))
        async with sim:
            sim.script_tool_call(r"order", name="lookup_order", arguments={"order_id": "42"})
            async with bridge_server(sim, config(records)) as bridge:
                async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                    await ask(sim, caller, "where is my order")
                    await sim.wait_until(lambda: bool(sim.tool_calls), 10, "the call begun")
                    await ask(sim, caller, "no wait, never mind")
                    await sim.wait_until(
                        lambda: sim.tool_calls[0].status == "incomplete", 10, "the cut"
                    )
                    await sim.wait_until(lambda: all(r.done_sent for r in sim.responses), 10)
                report = await bridge.report(sim)
            assert ran == [] and sim.tool_outputs == []
            assert report.tool_calls == 0 and sim.error_counts == {}

    run(scenario())

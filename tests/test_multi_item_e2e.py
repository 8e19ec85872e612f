"""Several output items in one response, end to end over real sockets on 127.0.0.1: the
simulator's model speaks a preamble and calls a tool in the same response (``[message,
function_call]``, ``openai-realtime.md`` §10.2), the example server bridges it, and the fake
Twilio caller plays what it receives in real time and echoes the marks.

What is checked is what each end saw: the caller hears the preamble's audio, then the answer's,
each in full and in order; a caller who speaks during the preamble gets the preamble truncated
at what they heard (never past it, never at 0, never the call item), and the simulator, which
checks every truncate against the audio it sent for the item, accepts it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
from test_e2e import CALLER, bridge_config, bridge_server, run, short_replies, simulator
from test_tools_e2e import ask, called_and_done, config, lookup_order

from realtime_fsm.testing import (
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ResponseRecord,
    ScriptedReply,
)

PREAMBLE = "Let me look that order up for you, one moment please."  # 3.2 s of audio
ANSWER = "Your order shipped on Monday."


@contextlib.asynccontextmanager
async def order_call(speed: float) -> AsyncIterator[tuple[FakeRealtimeServer, FakeTwilioCaller]]:
    """A call whose caller asks about an order: the model speaks :data:`PREAMBLE` and calls
    ``lookup_order`` in one response, then says :data:`ANSWER`."""
    sim = simulator(short_replies)
    async with sim:
        sim.script_tool_call(
            r"order",
            name="lookup_order",
            arguments={"order_id": "42"},
            preamble=PREAMBLE,
            then_reply=ANSWER,
        )
        async with bridge_server(sim, config(lookup_order)) as bridge:
            caller_config = attrs.evolve(CALLER, speed=speed)
            async with FakeTwilioCaller(bridge.url, caller_config) as caller:
                yield sim, caller


def tool_response(sim: FakeRealtimeServer) -> ResponseRecord:
    [record] = [r for r in sim.responses if r.id == sim.tool_calls[0].response_id]
    return record


def items_added(sim: FakeRealtimeServer, response_id: str) -> list[dict[str, Any]]:
    """The output items the server opened in one response, in order."""
    return [
        e["item"]
        for e in sim.server_events("response.output_item.added")
        if e.get("response_id") == response_id
    ]


def test_the_preamble_then_the_answer_are_heard_in_full_and_in_order() -> None:
    async def scenario() -> None:
        async with order_call(speed=4.0) as (sim, caller):
            await ask(sim, caller, "where is my order")
            await sim.wait_until(lambda: called_and_done(sim), 10, "the tool call")
            calling = tool_response(sim)
            kinds = [item["type"] for item in items_added(sim, calling.id)]
            assert kinds == ["message", "function_call"]
            await sim.wait_until(
                lambda: any(r.text == ANSWER and r.done_sent for r in sim.responses), 10
            )
            [answer] = [r for r in sim.responses if r.text == ANSWER]
            await caller.wait_until(
                lambda: (
                    caller.played_ms >= (calling.audio_deltas + answer.audio_deltas) * 20
                    and not caller.pending_marks
                ),
                15,
                "both responses played out",
            )
            order = [t.tag.ordinal for t in caller.tags_played]
            heard = {
                o: [t.tag.chunk for t in caller.tags_played if t.tag.ordinal == o] for o in order
            }
        # Every chunk of the preamble, then every chunk of the answer, nothing in between.
        first_answer = order.index(answer.tag)
        assert set(order[:first_answer]) == {calling.tag}
        assert set(order[first_answer:]) == {answer.tag}
        assert heard[calling.tag] == list(range(calling.audio_deltas))
        assert heard[answer.tag] == list(range(answer.audio_deltas))
        assert sim.client_events("conversation.item.truncate") == []
        assert sim.client_events("conversation.item.delete") == []
        assert sim.error_counts == {}
        assert caller.violations == []

    run(scenario(), timeout=60)


def test_speaking_during_the_preamble_truncates_it_at_what_the_caller_heard() -> None:
    async def scenario() -> None:
        async with order_call(speed=1.0) as (sim, caller):
            await ask(sim, caller, "where is my order")
            # The call is complete and its response done (a caller talking before that would
            # cut the call off): the preamble still plays, far ahead of the caller's ear.
            await sim.wait_until(lambda: called_and_done(sim), 10, "the tool call")
            calling = tool_response(sim)
            await caller.wait_until(lambda: caller.played_ms >= 900, 10, "900 ms of preamble")
            assert caller.played_ms < calling.audio_deltas * 20  # still mid-preamble
            await caller.speak(0.3)
            await sim.wait_until(
                lambda: bool(sim.server_events("conversation.item.truncated")), 5, "the truncate"
            )
            [truncate] = sim.client_events("conversation.item.truncate")
            clear_at = caller.clears[0].at
            heard_ms = sum(len(p.data) for p in caller.played if p.ended_at <= clear_at) / 8
            await sim.wait_until(lambda: bool(sim.tool_outputs), 10, "the tool's output")
        preamble, call = items_added(sim, calling.id)
        assert (preamble["type"], call["type"]) == ("message", "function_call")
        assert truncate["item_id"] == preamble["id"]
        # What the caller heard when the clear reached them, less the marks' and the speech's
        # trip (the estimate is early, never late), plus the 20 ms piece playing at the clear.
        assert 0 < heard_ms - 300 <= truncate["audio_end_ms"] <= heard_ms + 20
        assert truncate["audio_end_ms"] < calling.audio_deltas * 20
        # Neither the preamble (heard in part: truncated) nor the call item is deleted.  (The
        # answer to the tool's output may have begun when the caller spoke: an item of it
        # nobody heard is deleted, which is right.)
        deleted = {e["item_id"] for e in sim.client_events("conversation.item.delete")}
        assert not deleted & {preamble["id"], call["id"]}
        assert len(sim.tool_outputs) == 1  # the call was complete: it ran
        assert sim.error_counts == {}
        assert caller.violations == []

    run(scenario(), timeout=60)


# --- the simulator's multi-item replies and reasoning delay (sim21) -----------------------------


@contextlib.asynccontextmanager
async def greeted(
    reply: ScriptedReply, *, reasoning_delay_s: float = 0.0, effort: str | None = None
) -> AsyncIterator[tuple[FakeRealtimeServer, FakeTwilioCaller]]:
    """A caller on the example server whose greeting is ``reply``, from a simulator of a
    reasoning model (``gpt-realtime-2.1``, the default) that thinks ``reasoning_delay_s`` at
    effort ``medium`` (twice that at ``high``) before its first output item; the caller plays
    in real time."""
    sim_config = FakeRealtimeConfig(
        realtime_factor=5.0,
        first_delta_delay_s=0.02,
        transcription_delay_s=0.01,
        reasoning_delay_s=reasoning_delay_s,
        seed=7,
    )
    async with FakeRealtimeServer(sim_config, replies=[reply]) as sim:
        config = bridge_config(server_creates=True)
        config = attrs.evolve(config, session=attrs.evolve(config.session, reasoning_effort=effort))
        caller_config = attrs.evolve(CALLER, speed=1.0)
        async with (
            bridge_server(sim, config) as bridge,
            FakeTwilioCaller(bridge.url, caller_config) as caller,
        ):
            yield sim, caller


def test_barge_in_mid_item_2_of_3_truncates_2_deletes_3_and_leaves_1() -> None:
    """A greeting spoken as three message items; the caller speaks 250 ms into the second,
    before its first regular mark (every 500 ms) came back.  The first was heard in full (left
    alone), the second is truncated at what the caller heard (its start mark's echo anchors
    the estimate), the third, received but never played, is deleted.  The simulator checks
    each against the audio it sent for that item."""
    first, second, third = "One moment.", "Here is the long middle part of it.", "The end."

    async def scenario() -> None:
        async with greeted(ScriptedReply.of_items(first, second, third)) as (sim, caller):
            await sim.wait_until(lambda: bool(sim.responses) and sim.responses[0].finished, 10)
            record = sim.responses[0]
            one, two, three = record.item_ids
            first_ms = len(first) * 60
            await caller.wait_until(
                lambda: caller.played_ms >= first_ms + 250, 10, "250 ms into item 2"
            )
            await caller.speak(0.3)
            await sim.wait_until(
                lambda: bool(sim.server_events("conversation.item.deleted")), 5, "the delete"
            )
            clear_at = caller.clears[0].at
            heard_ms = sum(len(p.data) for p in caller.played if p.ended_at <= clear_at) / 8
        truncates = sim.client_events("conversation.item.truncate")
        deletes = sim.client_events("conversation.item.delete")
        assert [t["item_id"] for t in truncates] == [two]
        assert [d["item_id"] for d in deletes] == [three]
        assert one not in {t["item_id"] for t in truncates} | {d["item_id"] for d in deletes}
        heard_two = heard_ms - first_ms
        # Heard when the clear reached the caller (whole 20 ms pieces, plus the one playing),
        # early only by the trips of the last echo and of the caller's speech (generous: the
        # machine is shared).
        end_ms = truncates[0]["audio_end_ms"]
        assert max(1, heard_two - 250) <= end_ms <= heard_two + 20
        assert sim.error_counts == {}
        assert caller.violations == []

    run(scenario(), timeout=60)


@pytest.mark.slow
def test_a_reasoning_model_thinking_past_the_stall_timeout_is_heard() -> None:
    """At effort ``high`` the model thinks 6 s before its first item, longer than the bridge's
    ``stall_timeout`` (5 s here): the thinking allowance (3 x at ``high``) lets it speak."""

    async def scenario() -> None:
        reply = ScriptedReply("Hello, I thought about it.", audio_ms=600)
        async with greeted(reply, reasoning_delay_s=3.0, effort="high") as (sim, caller):
            await sim.wait_until(lambda: bool(sim.responses) and sim.responses[0].finished, 20)
            record = sim.responses[0]
            await caller.wait_until(lambda: caller.played_ms >= 600, 10, "the greeting")
        assert record.reasoning_delay_s == 6.0
        assert record.status == "completed"
        assert sim.client_events("response.cancel") == []
        assert sim.error_counts == {}

    run(scenario(), timeout=60)

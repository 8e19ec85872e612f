"""Opt-in model behaviours of the simulator, driven by the real ``openai`` SDK client (every
event parsed strictly with the SDK's types, see ``tests/sdk_client.py``):

* reasoning models (``gpt-realtime-2*``) stay silent between ``response.created`` and the first
  output item, longer with a higher ``reasoning.effort`` (``FakeRealtimeConfig.reasoning_delay_s``);
* multi-item replies (``ScriptedReply.of_items``, reference 10.2): several assistant message
  items in one response, a text-only preamble before a spoken item; truncate and delete per
  item; a cancel mid item 2 of 3.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, cast

import attrs
import pytest
from sdk_client import FAST, SdkClient, connected

from realtime_fsm.testing import FakeRealtimeServer, ReplyItem, ScriptedReply


def run(coro: Coroutine[Any, Any, None], timeout: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


# --- reasoning delay ---------------------------------------------------------------------------


async def _gap(sdk: SdkClient, **response: Any) -> float:
    """Seconds between ``response.created`` and the first output item of a new response."""
    if response:
        await sdk.conn.response.create(response=cast(Any, response))
    else:
        await sdk.conn.response.create()
    created = await sdk.until("response.created")
    added = await sdk.until("response.output_item.added")
    await sdk.until("response.done")
    assert added["response_id"] == created["response"]["id"]
    return sdk.at(added) - sdk.at(created)


@pytest.mark.parametrize(
    ("effort", "scale"),
    [("minimal", 0.25), ("low", 0.5), ("medium", 1.0), ("high", 2.0), ("xhigh", 4.0)],
)
def test_a_reasoning_model_thinks_before_its_first_item(effort: str, scale: float) -> None:
    config = attrs.evolve(FAST, reasoning_delay_s=0.2)

    async def scenario() -> None:
        async with connected(config, model="gpt-realtime-2") as (server, sdk):
            await _gap(sdk, reasoning={"effort": effort})
            # Exact from the server's record; the gap the client sees is not even a lower bound
            # (its loop may read response.created late on a loaded machine, shortening it).
            assert server.responses[0].reasoning_delay_s == pytest.approx(0.2 * scale)

    run(scenario())


def test_the_session_effort_applies_and_other_models_do_not_think() -> None:
    config = attrs.evolve(FAST, reasoning_delay_s=0.2)

    async def scenario() -> None:
        async with connected(config, model="gpt-realtime-2.1") as (server, sdk):
            await _gap(sdk)  # no effort anywhere: "low"
            await sdk.conn.session.update(
                session={"type": "realtime", "reasoning": {"effort": "high"}}
            )
            assert (await sdk.until("session.updated"))["session"]["reasoning"] == {
                "effort": "high"
            }
            # The gap as the client saw it depends on when its loop read response.created
            # (a loaded machine shortens it); the server's own record of the delay is exact.
            await _gap(sdk)
            assert [r.reasoning_delay_s for r in server.responses] == pytest.approx([0.1, 0.4])
        async with connected(config, model="gpt-realtime-1.5") as (server, sdk):
            await _gap(sdk, reasoning={"effort": "xhigh"})
            assert server.responses[0].reasoning_delay_s == 0.0

    run(scenario())


def test_a_cancel_while_the_model_thinks_ends_the_response_with_no_output() -> None:
    config = attrs.evolve(FAST, reasoning_delay_s=30.0)

    async def scenario() -> None:
        async with connected(config, model="gpt-realtime-2") as (_server, sdk):
            await sdk.conn.response.create()
            await sdk.until("response.created")
            await sdk.conn.response.cancel()
            done = (await sdk.until("response.done"))["response"]
            assert (done["status"], done["output"]) == ("cancelled", [])
            assert sdk.of("response.output_item.added") == []

    run(scenario())


# --- multi-item responses ----------------------------------------------------------------------


def test_a_reply_spoken_as_two_message_items() -> None:
    async def scenario() -> None:
        reply = ScriptedReply.of_items("Your order shipped.", "It arrives on Monday.")
        async with connected(replies=[reply]) as (server, sdk):
            await sdk.conn.response.create()
            done = (await sdk.until("response.done"))["response"]
            added = sdk.of("response.output_item.added")
            assert [a["output_index"] for a in added] == [0, 1]
            ids = [a["item"]["id"] for a in added]
            assert len(set(ids)) == 2 and server.responses[0].item_ids == ids
            assert [o["id"] for o in done["output"]] == ids
            assert [o["status"] for o in done["output"]] == ["completed", "completed"]
            transcripts = {
                e["item_id"]: e["transcript"]
                for e in sdk.of("response.output_audio_transcript.done")
            }
            assert transcripts == {ids[0]: "Your order shipped.", ids[1]: "It arrives on Monday."}
            for index, item_id in enumerate(ids):
                deltas = [
                    e for e in sdk.of("response.output_audio.delta") if e["item_id"] == item_id
                ]
                assert deltas and {d["output_index"] for d in deltas} == {index}
            # The second item's deltas start after the first item is done.
            order = [
                e["type"]
                for e in sdk.events
                if e.get("item_id") == ids[0] or e.get("item", {}).get("id") == ids[0]
            ]
            first_done = max(
                i
                for i, e in enumerate(sdk.events)
                if e["type"] == "response.output_item.done" and e["item"]["id"] == ids[0]
            )
            second_added = next(
                i
                for i, e in enumerate(sdk.events)
                if e["type"] == "response.output_item.added" and e["item"]["id"] == ids[1]
            )
            assert first_done < second_added and order[-1] == "conversation.item.done"
            # Each assistant item names the item before it.
            item_done = sdk.of("conversation.item.done", lambda e: e["item"]["role"] == "assistant")
            assert item_done[1]["previous_item_id"] == ids[0]

    run(scenario())


def test_a_text_preamble_then_a_spoken_item() -> None:
    async def scenario() -> None:
        reply = ScriptedReply.of_items(
            ReplyItem("Checking the order.", modality="text"), "It shipped."
        )
        async with connected(replies=[reply]) as (_server, sdk):
            await sdk.conn.response.create()
            done = (await sdk.until("response.done"))["response"]
            first, second = done["output"]
            assert first["content"] == [{"type": "output_text", "text": "Checking the order."}]
            assert second["content"] == [{"type": "output_audio", "transcript": "It shipped."}]
            text_parts = sdk.of(
                "response.content_part.added", lambda e: e["item_id"] == first["id"]
            )
            assert text_parts[0]["part"]["type"] == "text"
            assert (
                "".join(e["delta"] for e in sdk.of("response.output_text.delta"))
                == "Checking the order."
            )
            assert not sdk.of("response.output_audio.delta", lambda e: e["item_id"] == first["id"])
            assert sdk.of("response.output_audio.delta", lambda e: e["item_id"] == second["id"])

    run(scenario())


def test_truncate_and_delete_work_per_item() -> None:
    async def scenario() -> None:
        reply = ScriptedReply.of_items(
            ReplyItem("First.", audio_ms=400), ReplyItem("Second.", audio_ms=400)
        )
        async with connected(replies=[reply]) as (_server, sdk):
            conn = sdk.conn
            await conn.response.create()
            first, second = (await sdk.until("response.done"))["response"]["output"]
            await conn.conversation.item.truncate(
                item_id=first["id"], content_index=0, audio_end_ms=400
            )
            await conn.conversation.item.truncate(
                item_id=second["id"], content_index=0, audio_end_ms=120
            )
            truncated = [await sdk.until("conversation.item.truncated") for _ in range(2)]
            assert [(t["item_id"], t["audio_end_ms"]) for t in truncated] == [
                (first["id"], 400),
                (second["id"], 120),
            ]
            # The second item now has 120 ms: more is refused, for it alone.
            await conn.conversation.item.truncate(
                item_id=second["id"], content_index=0, audio_end_ms=200, event_id="evt_t"
            )
            error = (await sdk.until("error"))["error"]
            assert (error["event_id"], error["message"]) == (
                "evt_t",
                "Audio content of 120ms is already shorter than 200ms",
            )
            await conn.conversation.item.delete(item_id=first["id"])
            assert (await sdk.until("conversation.item.deleted"))["item_id"] == first["id"]
            await conn.conversation.item.retrieve(item_id=second["id"])
            assert (await sdk.until("conversation.item.retrieved"))["item"]["id"] == second["id"]

    run(scenario())


def test_a_cancel_mid_item_two_of_three() -> None:
    config = attrs.evolve(FAST, realtime_factor=10)

    async def scenario() -> None:
        reply = ScriptedReply.of_items(
            ReplyItem("One.", audio_ms=200),
            ReplyItem("Two, which is long.", audio_ms=20_000),
            "Three.",
        )
        async with connected(config, replies=[reply]) as (server, sdk):
            await sdk.conn.response.create()
            second = await sdk.until("response.output_item.added", lambda e: e["output_index"] == 1)
            await sdk.until(
                "response.output_audio.delta", lambda e: e["item_id"] == second["item"]["id"]
            )
            await sdk.conn.response.cancel()
            done = (await sdk.until("response.done"))["response"]
            assert done["status"] == "cancelled"
            assert [(o["status"], o["id"]) for o in done["output"]] == [
                ("completed", done["output"][0]["id"]),
                ("incomplete", second["item"]["id"]),
            ]
            assert done["output"][0]["content"][0]["transcript"] == "One."
            assert [a["output_index"] for a in sdk.of("response.output_item.added")] == [0, 1]
            item_done = sdk.of("response.output_item.done")
            assert [d["item"]["status"] for d in item_done] == ["completed", "incomplete"]
            assert server.responses[0].status == "cancelled"
            assert isinstance(server, FakeRealtimeServer)

    run(scenario())

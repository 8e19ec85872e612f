"""The simulator's function calling, over real websockets on 127.0.0.1.

A raw websocket client plays the app's side of a tool turn (reference ``openai-realtime.md``
§11): the fake server calls a scripted tool, the app adds ``function_call_output`` items and
asks for the next response.  Every event the server sends is validated against the union of
OpenAI's GA server events (by ``realtime()``), and the tool events also against their own
``openai.types.realtime`` classes, so the simulator's tool events cannot drift from the SDK.
"""

from __future__ import annotations

import json
import re
from typing import Any

from openai.types.realtime import (
    ConversationItemAdded,
    RealtimeConversationItemFunctionCall,
    ResponseDoneEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
)
from test_simulator import App, _user_text, _vad_session, b64, realtime, run

from realtime_fsm.testing import FakeRealtimeServer, ResponseFaults, silence, tone

JSON = dict[str, Any]
_TOOL_EVENT_TYPES: dict[str, Any] = {
    "response.output_item.added": ResponseOutputItemAddedEvent,
    "response.function_call_arguments.delta": ResponseFunctionCallArgumentsDeltaEvent,
    "response.function_call_arguments.done": ResponseFunctionCallArgumentsDoneEvent,
    "response.output_item.done": ResponseOutputItemDoneEvent,
    "conversation.item.added": ConversationItemAdded,
    "response.done": ResponseDoneEvent,
}


def validate_tool_events(server: FakeRealtimeServer) -> None:
    """Each tool event as its own SDK class; function_call items as the function-call item."""
    for event in server.server_events():
        cls = _TOOL_EVENT_TYPES.get(event["type"])
        if cls is None:
            continue
        cls.model_validate(event)
        items = [event["item"]] if "item" in event else event.get("response", {}).get("output", [])
        for item in items:
            if item.get("type") == "function_call":
                RealtimeConversationItemFunctionCall.model_validate(item)


async def say(app: App, text: str) -> None:
    await app.send("conversation.item.create", item=_user_text(text))
    await app.until("conversation.item.added")


async def send_output(app: App, call_id: str, output: str) -> str:
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return await app.send("conversation.item.create", item=item)


def calls_in(done: JSON) -> list[JSON]:
    return [i for i in done["response"]["output"] if i["type"] == "function_call"]


def transcript_of(app: App, response_id: str) -> str:
    parts = app.of("response.output_audio_transcript.done")
    return "".join(p["transcript"] for p in parts if p["response_id"] == response_id)


def test_a_tool_call_then_its_output_then_the_reply_is_heard() -> None:
    async def scenario() -> None:
        async with realtime() as (server, app):
            server.script_tool_call(
                re.compile(r"order (\d+)"),
                name="lookup_order",
                arguments={"order_id": "42"},
                then_reply=lambda outputs: f"Your order is {json.loads(outputs[0])['state']}.",
            )
            await say(app, "where is my order 42?")
            await app.send("response.create")
            added = await app.until("response.output_item.added")
            item = added["item"]
            assert item["type"] == "function_call" and item["status"] == "in_progress"
            assert item["arguments"] == "" and item["name"] == "lookup_order"
            assert re.fullmatch(r"call_\w{16}", item["call_id"])
            done = await app.until("response.done")
            deltas = app.of("response.function_call_arguments.delta")
            assert len(deltas) > 1  # streamed, not one blob
            assert "".join(d["delta"] for d in deltas) == '{"order_id": "42"}'
            args_done = app.of("response.function_call_arguments.done")[0]
            assert args_done["name"] == "lookup_order"
            assert args_done["call_id"] == item["call_id"]
            assert json.loads(args_done["arguments"]) == {"order_id": "42"}
            assert app.of("response.output_item.done")[0]["item"]["status"] == "completed"
            assert done["response"]["status"] == "completed"
            [call] = calls_in(done)
            assert call["call_id"] == item["call_id"] and call["status"] == "completed"
            assert not app.of("response.output_audio.delta")  # a call, not speech
            call_id = item["call_id"]
            await send_output(app, call_id, json.dumps({"state": "shipped"}))
            output_item = (await app.until("conversation.item.added"))["item"]
            assert output_item["type"] == "function_call_output"
            assert server.tool_outputs == [(call_id, "lookup_order", '{"state": "shipped"}')]
            await app.send("response.create")
            second = await app.until("response.done")
            assert transcript_of(app, second["response"]["id"]) == "Your order is shipped."
            assert server.responses_before_outputs == 0
            assert [c.status for c in server.tool_calls] == ["completed"]
            assert server.error_counts == {}
            validate_tool_events(server)

    run(scenario())


def test_a_preamble_then_a_call_is_one_multi_item_response() -> None:
    async def scenario() -> None:
        async with realtime() as (server, app):
            server.script_tool_call(
                "order",
                name="lookup_order",
                arguments='{"order_id":"7"}',
                preamble="Let me look that up.",
                then_reply="It arrives tomorrow.",
            )
            await say(app, "my order please")
            await app.send("response.create")
            done = await app.until("response.done")
            output = done["response"]["output"]
            assert [i["type"] for i in output] == ["message", "function_call"]
            added = app.of("response.output_item.added")
            assert [(e["output_index"], e["item"]["type"]) for e in added] == [
                (0, "message"),
                (1, "function_call"),
            ]
            assert app.of("response.output_audio.delta")  # the preamble is spoken
            assert transcript_of(app, done["response"]["id"]) == "Let me look that up."
            assert app.of("response.function_call_arguments.done")[0]["output_index"] == 1
            assert output[1]["arguments"] == '{"order_id":"7"}'  # a raw string is sent as is
            # The preamble's item is done before the call starts.
            types = [e["type"] for e in app.events]
            message_done = types.index("response.output_item.done")
            assert message_done < types.index("response.function_call_arguments.delta")
            await send_output(app, output[1]["call_id"], "ok")
            await app.until("conversation.item.added")
            await app.send("response.create")
            reply = await app.until("response.done")
            assert transcript_of(app, reply["response"]["id"]) == "It arrives tomorrow."
            validate_tool_events(server)

    run(scenario())


def test_parallel_calls_are_answered_with_one_create() -> None:
    async def scenario() -> None:
        async with realtime() as (server, app):
            server.script_tool_call(
                "weather",
                calls=[("weather", {"city": "Paris"}), ("weather", {"city": "Oslo"})],
                then_reply=" / ".join,
            )
            await say(app, "weather in Paris and Oslo")
            await app.send("response.create")
            done = await app.until("response.done")
            calls = calls_in(done)
            assert [json.loads(c["arguments"])["city"] for c in calls] == ["Paris", "Oslo"]
            assert [i["output_index"] for i in app.of("response.output_item.added")] == [0, 1]
            assert len({c["call_id"] for c in calls}) == 2
            await send_output(app, calls[0]["call_id"], "sunny")
            await app.until("conversation.item.added")
            # One output of two: a create now is served, but counted as too early.
            await app.send("response.create")
            early = await app.until("response.done")
            assert transcript_of(app, early["response"]["id"]) == "This is a simulated reply."
            assert server.responses_before_outputs == 1
            await send_output(app, calls[1]["call_id"], "snow")
            await app.until("conversation.item.added")
            await app.send("response.create")
            reply = await app.until("response.done")
            assert transcript_of(app, reply["response"]["id"]) == "sunny / snow"
            assert [o.output for o in server.tool_outputs] == ["sunny", "snow"]
            assert server.error_counts == {}
            validate_tool_events(server)

    run(scenario())


def test_unknown_call_id_and_second_output_are_rejected() -> None:
    async def scenario() -> None:
        async with realtime() as (server, app):
            server.script_tool_call("hours", name="opening_hours")
            await say(app, "what are your hours")
            await app.send("response.create")
            [call] = calls_in(await app.until("response.done"))
            assert call["arguments"] == "{}"
            eid = await send_output(app, "call_nope", "x")
            error = (await app.until("error"))["error"]
            assert error["message"] == "Tool call ID 'call_nope' not found in conversation."
            assert error["type"] == "invalid_request_error" and error["event_id"] == eid
            await send_output(app, call["call_id"], "9 to 5")
            await app.until("conversation.item.added")
            eid = await send_output(app, call["call_id"], "again")
            error = (await app.until("error"))["error"]
            assert error["event_id"] == eid and call["call_id"] in error["message"]
            item = {"type": "function_call_output", "call_id": call["call_id"], "output": 5}
            await app.send("conversation.item.create", item=item)
            error = (await app.until("error"))["error"]
            assert error["code"] == "invalid_type" and error["param"] == "item.output"
            assert server.tool_outputs == [(call["call_id"], "opening_hours", "9 to 5")]
            outputs = [
                i for i in server.connections[0].items if i["type"] == "function_call_output"
            ]
            assert len(outputs) == 1  # nothing rejected was added
            assert server.error_counts == {"null": 2, "invalid_type": 1}

    run(scenario())


def test_a_cancel_mid_call_leaves_an_incomplete_call() -> None:
    async def scenario() -> None:
        async with realtime() as (server, app):
            server.script_tool_call(
                "order", calls=[("lookup_order", {"order_id": "1" * 40}), ("never", {})]
            )
            server.fault_next_response(ResponseFaults(stall_after_deltas=2))
            await say(app, "order status")
            await app.send("response.create")
            await app.until("response.function_call_arguments.delta")
            await app.until("response.function_call_arguments.delta")  # then it stalls
            await app.send("response.cancel")
            done = await app.until("response.done")
            assert done["response"]["status"] == "cancelled"
            assert done["response"]["status_details"]["reason"] == "client_cancelled"
            [call] = calls_in(done)  # the second call never started
            assert call["status"] == "incomplete"
            args_done = app.of("response.function_call_arguments.done")[0]
            sent = "".join(d["delta"] for d in app.of("response.function_call_arguments.delta"))
            assert args_done["arguments"] == sent == call["arguments"]
            assert len(sent) == 16  # two deltas: a fragment, not JSON
            item_done = app.of("response.output_item.done")[0]["item"]
            assert item_done["status"] == "incomplete"
            assert [c.status for c in server.tool_calls] == ["incomplete"]
            # Nothing is owed for a call cut short: a create is not "too early".
            await app.send("response.create")
            await app.until("response.done")
            assert server.responses_before_outputs == 0
            validate_tool_events(server)

    run(scenario())


def test_vad_response_races_the_follow_up_create() -> None:
    async def scenario() -> None:
        async with realtime() as (server, app):
            server.script_tool_call("book", name="book_table", then_reply="Booked for two.")
            await say(app, "book a table")
            await app.send("response.create")
            [call] = calls_in(await app.until("response.done"))
            await send_output(app, call["call_id"], "confirmed")
            await app.until("conversation.item.added")
            server.race_vad_on_next_create()
            eid = await app.send("response.create")
            error = (await app.until("error"))["error"]
            assert error["code"] == "conversation_already_has_active_response"
            assert error["event_id"] == eid
            types = [e["type"] for e in app.events]
            stopped = types.index("input_audio_buffer.speech_stopped")
            assert stopped < types.index("input_audio_buffer.committed")
            racer = server.responses[-1]
            assert racer.origin == "server_vad" and racer.id in error["message"]
            done = await app.until("response.done")
            # The server's response came after the output: it answers with the tool's result.
            assert transcript_of(app, done["response"]["id"]) == "Booked for two."
            assert len(server.responses) == 2
            assert server.error_counts == {"conversation_already_has_active_response": 1}

    run(scenario())


def test_a_spoken_turn_triggers_the_call_and_vad_sees_the_outputs() -> None:
    async def scenario() -> None:
        session = _vad_session(create=True, interrupt=True)
        async with realtime(session=session) as (server, app):
            server.queue_transcript("what's the time in Tokyo")
            server.script_tool_call(r"time in (\w+)", name="clock", then_reply="It is noon.")
            await app.send("input_audio_buffer.append", audio=b64(tone(300) + silence(300)))
            done = await app.until("response.done")
            [call] = calls_in(done)
            assert call["name"] == "clock" and server.responses[0].origin == "server_vad"
            await send_output(app, call["call_id"], "12:00")
            await app.until("conversation.item.added")
            # The caller speaks again before the app asks: VAD's response sees the output.
            await app.send("input_audio_buffer.append", audio=b64(tone(300) + silence(300)))
            second = await app.until("response.done")
            assert transcript_of(app, second["response"]["id"]) == "It is noon."
            assert server.responses[1].origin == "server_vad"
            assert server.responses_before_outputs == 0
            assert server.error_counts == {}

    run(scenario())


def test_tool_events_keep_their_names_in_a_beta_session() -> None:
    async def scenario() -> None:
        beta = {"input_audio_format": "g711_ulaw", "turn_detection": None}
        async with realtime(session=beta, beta=True) as (server, app):
            server.script_tool_call(lambda text: "card" in text, name="block_card")
            await app.send("conversation.item.create", item=_user_text("block my card"))
            await app.until("conversation.item.created")
            await app.send("response.create")
            done = await app.until("response.done")
            assert calls_in(done)[0]["name"] == "block_card"
            assert app.of("response.function_call_arguments.done")
            created = [e["item"]["type"] for e in app.of("conversation.item.created")]
            assert created == ["message", "function_call"]

    run(scenario())

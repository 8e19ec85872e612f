"""The adapter's function-calling pieces, on frames the ``openai`` package's own types accept:
a function call done (completed or cut off), our tool output added to the conversation, the
caller's partial transcript, and the ``function_call_output`` item we render."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types import realtime as ga_types
from pydantic import TypeAdapter

from realtime_fsm.openai_realtime import (
    FunctionCallDone,
    Ignored,
    InputTranscriptDelta,
    ItemAdded,
    OutputItemDone,
    ResponseActivity,
    parse_server_event,
    render_function_call_output,
)

GA_SERVER = TypeAdapter(ga_types.RealtimeServerEvent)
GA_CLIENT = TypeAdapter(ga_types.RealtimeClientEvent)


def frame(event: dict[str, Any]) -> str:
    GA_SERVER.validate_python(event)  # only frames the real server could send
    return json.dumps(event)


def call_item(status: str, arguments: str = '{"order_id": "42"}') -> dict[str, Any]:
    return {
        "id": "item_fc1",
        "type": "function_call",
        "call_id": "call_abc",
        "name": "lookup_order",
        "arguments": arguments,
        "status": status,
        "object": "realtime.item",
    }


@pytest.mark.parametrize("status", ["completed", "incomplete"])
def test_a_function_call_item_done_is_parsed_with_its_status(status: str) -> None:
    event = {
        "type": "response.output_item.done",
        "event_id": "event_1",
        "response_id": "resp_1",
        "output_index": 1,
        "item": call_item(status, '{"order_' if status == "incomplete" else '{"order_id": "42"}'),
    }
    result = parse_server_event(frame(event))
    assert result == FunctionCallDone(
        response_id="resp_1",
        item_id="item_fc1",
        call_id="call_abc",
        name="lookup_order",
        arguments=event["item"]["arguments"],
        status=status,
    )


def test_any_other_output_item_done_names_its_item() -> None:
    event = {
        "type": "response.output_item.done",
        "event_id": "event_1",
        "response_id": "resp_1",
        "output_index": 0,
        "item": {
            "id": "item_msg",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [],
            "object": "realtime.item",
        },
    }
    # The lifecycle tracks every output item (several per response with reasoning models).
    assert parse_server_event(frame(event)) == OutputItemDone("resp_1", "item_msg")
    del event["item"]["id"]  # no id: only a sign of life of its response, as before
    assert parse_server_event(frame(event)) == ResponseActivity(
        "resp_1", "response.output_item.done"
    )


@pytest.mark.parametrize("event_type", ["conversation.item.added", "conversation.item.done"])
def test_our_tool_output_added_to_the_conversation(event_type: str) -> None:
    event = {
        "type": event_type,
        "event_id": "event_2",
        "previous_item_id": "item_fc1",
        "item": {
            "id": "item_out1",
            "type": "function_call_output",
            "call_id": "call_abc",
            "output": '{"status": "shipped"}',
            "object": "realtime.item",
        },
    }
    result = parse_server_event(frame(event))
    if event_type == "conversation.item.added":
        assert result == ItemAdded("item_out1", "function_call_output", "call_abc")
    else:
        assert result == Ignored(event_type, known=True)


def test_a_user_message_added_is_nothing_to_act_on() -> None:
    event = {
        "type": "conversation.item.added",
        "event_id": "event_3",
        "item": {
            "id": "item_u1",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
            "object": "realtime.item",
        },
    }
    assert parse_server_event(frame(event)) == Ignored("conversation.item.added", known=True)


def test_a_partial_caller_transcript() -> None:
    event = {
        "type": "conversation.item.input_audio_transcription.delta",
        "event_id": "event_4",
        "item_id": "item_u2",
        "content_index": 0,
        "delta": "where is my",
    }
    assert parse_server_event(frame(event)) == InputTranscriptDelta("item_u2", "where is my")


def test_the_rendered_tool_output_is_a_client_event_the_sdk_accepts() -> None:
    event = render_function_call_output(
        "call_abc", '{"status": "shipped"}', event_id="rtfsm_tool_1"
    )
    parsed = GA_CLIENT.validate_python(event)
    assert parsed.type == "conversation.item.create"
    assert parsed.item.type == "function_call_output"
    assert parsed.item.call_id == "call_abc"

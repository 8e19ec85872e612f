"""The OpenAI Realtime adapter on malformed input: every field of every event type wrong, random
JSON and bytes; only ``RemoteProtocolError`` is ever raised, and what is parsed still matches the
``openai`` package's own types.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_fsm import (
    RemoteProtocolError,
    ResponseCreated,
    ResponseDone,
    ServerError,
    SessionConfigured,
    SpeechStarted,
    SpeechStopped,
    UserTurnCommitted,
)
from realtime_fsm import events as ev
from realtime_fsm.openai_realtime import (
    KNOWN_TYPES,
    FunctionCallDone,
    Ignored,
    InputTranscript,
    OpenAIRealtimeCodec,
    OutputAudioDelta,
    OutputItemAdded,
    OutputItemDone,
    OutputTranscriptDelta,
    ResponseActivity,
    base64_decoded_size,
    parse_server_event,
)

# ----------------------------------------------------------------------------- malformed input

MALFORMED = [
    ("not json", "{"),
    ("not json bytes", b"\xff\xfe\x00garbage"),
    ("empty", ""),
    ("array", "[]"),
    ("string", '"response.done"'),
    ("number", "42"),
    ("null", "null"),
    ("no type", '{"event_id":"e"}'),
    ("numeric type", '{"type":7}'),
    ("null type", '{"type":null}'),
    ("deep nesting", "[" * 100_000),
    ("created without response", '{"type":"response.created"}'),
    ("created response not object", '{"type":"response.created","response":[]}'),
    ("created without id", '{"type":"response.created","response":{}}'),
    ("created empty id", '{"type":"response.created","response":{"id":""}}'),
    ("created numeric id", '{"type":"response.created","response":{"id":1}}'),
    (
        "created metadata not strings",
        '{"type":"response.created","response":{"id":"r","metadata":{"a":1}}}',
    ),
    (
        "created metadata array",
        '{"type":"response.created","response":{"id":"r","metadata":["a"]}}',
    ),
    (
        "created modalities string",
        '{"type":"response.created","response":{"id":"r","output_modalities":"audio"}}',
    ),
    (
        "created conversation_id number",
        '{"type":"response.created","response":{"id":"r","conversation_id":5}}',
    ),
    ("done without response", '{"type":"response.done"}'),
    ("done status number", '{"type":"response.done","response":{"id":"r","status":1}}'),
    (
        "done details string",
        '{"type":"response.done","response":{"id":"r","status_details":"x"}}',
    ),
    (
        "done reason number",
        '{"type":"response.done","response":{"id":"r","status_details":{"reason":3}}}',
    ),
    ("error without error", '{"type":"error"}'),
    ("error message number", '{"type":"error","error":{"message":5}}'),
    ("error code object", '{"type":"error","error":{"message":"m","code":{}}}'),
    ("error event_id number", '{"type":"error","error":{"message":"m","event_id":1}}'),
    (
        "audio without delta",
        '{"type":"response.output_audio.delta","response_id":"r","item_id":"i"}',
    ),
    (
        "audio delta not string",
        '{"type":"response.audio.delta","response_id":"r","item_id":"i","delta":[1]}',
    ),
    (
        "audio without response_id",
        '{"type":"response.output_audio.delta","item_id":"i","delta":""}',
    ),
    (
        "audio without item_id",
        '{"type":"response.output_audio.delta","response_id":"r","delta":""}',
    ),
    (
        "transcript delta null",
        '{"type":"response.audio_transcript.delta","response_id":"r","item_id":"i","delta":null}',
    ),
    ("activity without response_id", '{"type":"response.output_item.added","item":{}}'),
    ("speech start negative", '{"type":"input_audio_buffer.speech_started","audio_start_ms":-1}'),
    ("speech start string", '{"type":"input_audio_buffer.speech_started","audio_start_ms":"5"}'),
    ("speech start float", '{"type":"input_audio_buffer.speech_started","audio_start_ms":1.5}'),
    ("speech stop bool", '{"type":"input_audio_buffer.speech_stopped","audio_end_ms":true}'),
    ("committed item number", '{"type":"input_audio_buffer.committed","item_id":3}'),
    ("session missing", '{"type":"session.updated"}'),
    ("session audio string", '{"type":"session.updated","session":{"audio":"x"}}'),
    (
        "session input list",
        '{"type":"session.updated","session":{"type":"realtime","audio":{"input":[]}}}',
    ),
    ("session turn string", '{"type":"session.updated","session":{"turn_detection":"server_vad"}}'),
    ("session turn no type", '{"type":"session.updated","session":{"turn_detection":{}}}'),
    (
        "session create_response string",
        '{"type":"session.updated","session":{"turn_detection":'
        '{"type":"server_vad","create_response":"yes"}}}',
    ),
    (
        "transcript without text",
        '{"type":"conversation.item.input_audio_transcription.completed","item_id":"i"}',
    ),
]


@pytest.mark.parametrize(("label", "frame"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_is_a_remote_protocol_error(label: str, frame: str | bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_server_event(frame)
    assert info.value.message  # a message a human can act on
    assert "Traceback" not in info.value.message


def test_error_messages_name_the_field() -> None:
    with pytest.raises(RemoteProtocolError, match=r"'delta' must be a base64 string, got missing"):
        parse_server_event('{"type":"response.output_audio.delta","response_id":"r","item_id":"i"}')
    with pytest.raises(RemoteProtocolError, match=r"'id' must be a string, got number"):
        parse_server_event('{"type":"response.done","response":{"id":1}}')


def test_oversized_frame_is_refused_before_parsing() -> None:
    frame = json.dumps({"type": "response.output_audio.delta", "delta": "A" * 2000})
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        parse_server_event(frame, max_frame_size=1000)
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        OpenAIRealtimeCodec(max_frame_size=1000).parse(frame.encode())
    # "{" * 2000 would be bad JSON too; the limit must win, so no parse time is spent on it.
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        parse_server_event("{" * 2000, max_frame_size=1000)


def test_bytes_and_bytearray_frames_are_accepted() -> None:
    frame = '{"type":"response.audio.delta","response_id":"r","item_id":"i","delta":"AAA="}'
    expected = OutputAudioDelta("r", "i", "AAA=", 2)
    assert parse_server_event(frame.encode()) == expected
    assert parse_server_event(bytearray(frame.encode())) == expected


RESULT_TYPES = (
    SessionConfigured,
    ResponseCreated,
    ResponseDone,
    ServerError,
    SpeechStarted,
    SpeechStopped,
    UserTurnCommitted,
    ev.IdleTimeoutTriggered,
    OutputAudioDelta,
    OutputTranscriptDelta,
    ResponseActivity,
    OutputItemAdded,
    OutputItemDone,
    FunctionCallDone,
    InputTranscript,
    Ignored,
)


def _parsed_or_refused(frame: str | bytes) -> None:
    """Either a typed result or a RemoteProtocolError; any other exception fails the test."""
    try:
        result = parse_server_event(frame)
    except RemoteProtocolError as exc:
        assert exc.message
        return
    assert isinstance(result, RESULT_TYPES)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(frame: bytes) -> None:
    _parsed_or_refused(frame)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([*sorted(KNOWN_TYPES), "x.unknown"]),
    st.dictionaries(
        st.sampled_from(
            [
                "response_id",
                "item_id",
                "delta",
                "transcript",
                "response",
                "error",
                "session",
                "audio_start_ms",
                "audio_end_ms",
            ]
        ),
        json_values,
        max_size=6,
    ),
)
def test_random_fields_on_every_type_only_raise_remote_errors(
    event_type: str, fields: dict[str, Any]
) -> None:
    frame = json.dumps({**fields, "type": event_type})
    _parsed_or_refused(frame)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(json_values)
def test_random_json_never_crashes(value: Any) -> None:
    _parsed_or_refused(json.dumps(value))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_decoded_size_matches_decoding(raw: bytes, strip_padding: bool) -> None:
    text = base64.b64encode(raw).decode()
    if strip_padding:
        text = text.rstrip("=")
    assert base64_decoded_size(text) == len(raw)


def test_decoded_size_of_garbage_is_never_negative() -> None:
    assert base64_decoded_size("=") == 0
    assert base64_decoded_size("") == 0
    assert base64_decoded_size("==") == 0

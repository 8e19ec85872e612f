"""The OpenAI Realtime adapter against the ``openai`` package's own types.

Server fixtures are first validated with the package's server-event unions, so they are real
shapes; every client event the adapter renders is validated with the package's client-event
unions (the TypedDict params and the pydantic models) in GA and in beta mode, and must round-trip
through the model without unknown fields.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Annotated, Any, get_args, get_origin

import attrs
import openai.types.beta.realtime as beta_types
import openai.types.realtime as ga_types
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from realtime_fsm import (
    META_EVENT_ID,
    META_REASON,
    ClearPlayback,
    DropResponseAudio,
    LocalProtocolError,
    RemoteProtocolError,
    RequestGivenUp,
    RequestResponse,
    ResponseCreated,
    ResponseDone,
    ResponseLifecycle,
    ResponseState,
    ReturnUndeliveredText,
    SendItemDelete,
    SendResponseCancel,
    SendResponseCreate,
    SendTruncate,
    SendUserText,
    ServerError,
    SessionConfigured,
    SpeechStarted,
    SpeechStopped,
    UserTurnCommitted,
)
from realtime_fsm import events as ev
from realtime_fsm.openai_realtime import (
    ACTIVITY_TYPES,
    AUDIO_DELTA_TYPES,
    CLIENT_COMMANDS,
    DEFAULT_TRANSCRIPTION_MODEL,
    IGNORED_TYPES,
    KNOWN_TYPES,
    MAX_UNKNOWN_TYPES,
    OTHER_UNKNOWN,
    TRANSCRIPT_DELTA_TYPES,
    ClientCommand,
    Dialect,
    FunctionCallDone,
    Ignored,
    InputTranscript,
    OpenAIRealtimeCodec,
    OutputAudioDelta,
    OutputItemAdded,
    OutputItemDone,
    OutputTranscriptDelta,
    ResponseActivity,
    SessionConfig,
    base64_decoded_size,
    dumps,
    input_audio_append_json,
    is_client_command,
    parse_server_event,
    render_command,
    render_input_audio_append,
    render_input_audio_commit,
    render_session_update,
)

# ------------------------------------------------------------------------- the package's unions


def _union_members(union: Any) -> tuple[type[Any], ...]:
    if get_origin(union) is Annotated:
        union = get_args(union)[0]
    return get_args(union)


def _type_literals(union: Any) -> set[str]:
    names: set[str] = set()
    for member in _union_members(union):
        names.update(get_args(member.model_fields["type"].annotation))
    return names


GA_SERVER_TYPES = _type_literals(ga_types.RealtimeServerEvent)
BETA_SERVER_TYPES = _type_literals(beta_types.RealtimeServerEvent)
ALL_SERVER_TYPES = sorted(GA_SERVER_TYPES | BETA_SERVER_TYPES)

GA_SERVER = TypeAdapter(ga_types.RealtimeServerEvent)
BETA_SERVER = TypeAdapter(beta_types.RealtimeServerEvent)
CLIENT: dict[Dialect, tuple[TypeAdapter[Any], TypeAdapter[Any]]] = {
    Dialect.GA: (
        TypeAdapter(ga_types.RealtimeClientEventParam),
        TypeAdapter(ga_types.RealtimeClientEvent),
    ),
    Dialect.BETA: (
        TypeAdapter(beta_types.RealtimeClientEventParam),
        TypeAdapter(beta_types.RealtimeClientEvent),
    ),
}


def test_union_literals_were_found() -> None:
    # Guard the derivation itself: an openai upgrade that changes the union's shape must not
    # turn the coverage test below into a vacuous pass.
    assert len(GA_SERVER_TYPES) >= 40
    assert len(BETA_SERVER_TYPES) >= 30
    assert "response.output_audio.delta" in GA_SERVER_TYPES
    assert "response.audio.delta" in BETA_SERVER_TYPES


def _no_extra(value: Any, path: str = "$") -> None:
    """Fail on any field the package's model does not declare (its models allow extras)."""
    if isinstance(value, BaseModel):
        assert not value.model_extra, f"unknown field(s) at {path}: {sorted(value.model_extra)}"
        for name in type(value).model_fields:
            _no_extra(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _no_extra(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_extra(item, f"{path}.{key}")


def assert_valid_client_event(event: dict[str, Any], dialect: Dialect) -> None:
    """Valid for the typed params *and* the pydantic models, with nothing unknown and nothing
    coerced: the model dumps back to exactly what we send."""
    params, models = CLIENT[dialect]
    params.validate_python(event)
    model = models.validate_python(event)
    assert model.type == event["type"]
    _no_extra(model)
    assert model.model_dump(mode="json", exclude_unset=True) == event
    assert json.loads(dumps(event)) == event


def _server(event: dict[str, Any], *, beta: bool = False) -> str:
    """A server frame, after checking the fixture is a real shape for its generation."""
    (BETA_SERVER if beta else GA_SERVER).validate_python(event)
    return json.dumps(event)


# ------------------------------------------------------------------------------- server events

AUDIO = base64.b64encode(bytes(range(256)) * 2 + b"\xff" * 7).decode()  # 519 bytes, padded


def _response(**fields: Any) -> dict[str, Any]:
    response: dict[str, Any] = {"id": "resp_1", "object": "realtime.response"}
    response.update(fields)
    return response


@pytest.mark.parametrize(
    ("event_type", "beta"),
    [("response.output_audio.delta", False), ("response.audio.delta", True)],
)
def test_audio_delta_keeps_the_payload_and_counts_bytes(event_type: str, beta: bool) -> None:
    frame = _server(
        {
            "type": event_type,
            "event_id": "event_1",
            "response_id": "resp_1",
            "item_id": "item_1",
            "output_index": 0,
            "content_index": 0,
            "delta": AUDIO,
        },
        beta=beta,
    )
    result = parse_server_event(frame)
    assert result == OutputAudioDelta("resp_1", "item_1", AUDIO, 519)
    assert isinstance(result, OutputAudioDelta)
    assert result.to_event() == ev.AudioDelta(
        response_id="resp_1", item_id="item_1", byte_count=519
    )


@pytest.mark.parametrize(
    ("event_type", "beta"),
    [
        ("response.output_audio_transcript.delta", False),
        ("response.audio_transcript.delta", True),
    ],
)
def test_audio_transcript_delta(event_type: str, beta: bool) -> None:
    frame = _server(
        {
            "type": event_type,
            "event_id": "event_1",
            "response_id": "resp_1",
            "item_id": "item_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hello",
        },
        beta=beta,
    )
    result = parse_server_event(frame)
    assert result == OutputTranscriptDelta("resp_1", "item_1", "Hello")
    assert isinstance(result, OutputTranscriptDelta)
    assert result.to_event() == ev.TranscriptDelta(response_id="resp_1", item_id="item_1")


@pytest.mark.parametrize("event_type", ["response.output_text.delta", "response.text.delta"])
def test_text_delta_only_touches(event_type: str) -> None:
    # Text must never look like an audio transcript: that would arm the no-audio watchdog.
    frame = json.dumps(
        {
            "type": event_type,
            "event_id": "e",
            "response_id": "resp_1",
            "item_id": "item_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "hi",
        }
    )
    assert parse_server_event(frame) == ResponseActivity("resp_1", event_type)


@pytest.mark.parametrize("beta", [False, True])
def test_response_created_default_conversation(beta: bool) -> None:
    modalities = {"modalities": ["text", "audio"]} if beta else {"output_modalities": ["audio"]}
    frame = _server(
        {
            "type": "response.created",
            "event_id": "event_1",
            "response": _response(
                status="in_progress",
                conversation_id="conv_1",
                metadata={META_EVENT_ID: "rtfsm_create_1", META_REASON: "app"},
                output=[],
                **modalities,
            ),
        },
        beta=beta,
    )
    result = parse_server_event(frame)
    assert result == ResponseCreated(
        response_id="resp_1",
        out_of_band=False,
        metadata={META_EVENT_ID: "rtfsm_create_1", META_REASON: "app"},
        output_modalities=tuple(modalities.popitem()[1]),
    )


def test_response_created_out_of_band_is_a_null_conversation_id() -> None:
    frame = _server(
        {
            "type": "response.created",
            "event_id": "event_1",
            "response": _response(status="in_progress", conversation_id=None, metadata=None),
        }
    )
    result = parse_server_event(frame)
    assert isinstance(result, ResponseCreated)
    assert result.out_of_band is True
    assert dict(result.metadata) == {}
    assert result.output_modalities == ()


def test_response_created_without_conversation_id_is_not_out_of_band() -> None:
    # Absent is "not said", not "none": assuming out-of-band would free the default slot.
    frame = _server({"type": "response.created", "event_id": "e", "response": _response()})
    result = parse_server_event(frame)
    assert isinstance(result, ResponseCreated)
    assert result.out_of_band is False


@pytest.mark.parametrize(
    ("status", "details", "reason"),
    [
        ("completed", None, None),
        ("cancelled", {"type": "cancelled", "reason": "turn_detected"}, "turn_detected"),
        ("cancelled", {"type": "cancelled", "reason": "client_cancelled"}, "client_cancelled"),
        ("incomplete", {"type": "incomplete", "reason": "max_output_tokens"}, "max_output_tokens"),
        (
            "failed",
            {"type": "failed", "error": {"type": "server_error", "code": "rate_limited"}},
            "rate_limited",
        ),
        ("failed", {"type": "failed", "error": {"type": "server_error"}}, "server_error"),
    ],
)
@pytest.mark.parametrize("beta", [False, True])
def test_response_done(status: str, details: Any, reason: str | None, beta: bool) -> None:
    frame = _server(
        {
            "type": "response.done",
            "event_id": "event_9",
            "response": _response(status=status, status_details=details, output=[]),
        },
        beta=beta,
    )
    assert parse_server_event(frame) == ResponseDone(
        response_id="resp_1", status=status, reason=reason
    )


def test_response_done_from_a_real_trace() -> None:
    # semantic-kernel decision 0065's WebRTC trace (beta names), as quoted in the reference.
    frame = (
        '{"type":"response.done","event_id":"event_x","response":{"id":"resp_AzlwJ26l9LarAEdw41C66",'
        '"object":"realtime.response","status":"cancelled","status_details":{"type":"cancelled",'
        '"reason":"turn_detected","error":null},"output":[],"conversation_id":"conv_1",'
        '"modalities":["audio","text"],"usage":null}}'
    )
    BETA_SERVER.validate_json(frame)
    assert parse_server_event(frame) == ResponseDone(
        response_id="resp_AzlwJ26l9LarAEdw41C66", status="cancelled", reason="turn_detected"
    )


@pytest.mark.parametrize("beta", [False, True])
def test_error_event_carries_the_client_event_id(beta: bool) -> None:
    frame = _server(
        {
            "type": "error",
            "event_id": "event_server_1",
            "error": {
                "type": "invalid_request_error",
                "code": "conversation_already_has_active_response",
                "message": "Conversation already has an active response in progress: resp_C4I.",
                "param": None,
                "event_id": "rtfsm_create_3",
            },
        },
        beta=beta,
    )
    assert parse_server_event(frame) == ServerError(
        code="conversation_already_has_active_response",
        message="Conversation already has an active response in progress: resp_C4I.",
        event_id="rtfsm_create_3",
        error_type="invalid_request_error",
    )


def test_error_event_with_nulls() -> None:
    frame = _server(
        {
            "type": "error",
            "event_id": "e",
            "error": {"type": "invalid_request_error", "code": None, "message": "x"},
        }
    )
    assert parse_server_event(frame) == ServerError(
        code=None, message="x", event_id=None, error_type="invalid_request_error"
    )
    # Tolerated, so a rejection is not lost: a missing message and type, a numeric code.
    frame = json.dumps({"type": "error", "error": {"code": 500}})
    assert parse_server_event(frame) == ServerError(code="500", message="", event_id=None)


@pytest.mark.parametrize("beta", [False, True])
def test_input_audio_buffer_events(beta: bool) -> None:
    started = _server(
        {
            "type": "input_audio_buffer.speech_started",
            "event_id": "e1",
            "audio_start_ms": 1200,
            "item_id": "item_u1",
        },
        beta=beta,
    )
    stopped = _server(
        {
            "type": "input_audio_buffer.speech_stopped",
            "event_id": "e2",
            "audio_end_ms": 2400,
            "item_id": "item_u1",
        },
        beta=beta,
    )
    committed = _server(
        {
            "type": "input_audio_buffer.committed",
            "event_id": "e3",
            "item_id": "item_u1",
            "previous_item_id": None,
        },
        beta=beta,
    )
    assert parse_server_event(started) == SpeechStarted(item_id="item_u1", audio_start_ms=1200)
    assert parse_server_event(stopped) == SpeechStopped(item_id="item_u1", audio_end_ms=2400)
    assert parse_server_event(committed) == UserTurnCommitted(item_id="item_u1")


@pytest.mark.parametrize("beta", [False, True])
def test_input_transcription_completed(beta: bool) -> None:
    frame = _server(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "event_id": "e",
            "item_id": "item_u1",
            "content_index": 0,
            "transcript": "stop, I meant Tuesday",
            "usage": {"type": "duration", "seconds": 1.5},
        },
        beta=beta,
    )
    assert parse_server_event(frame) == InputTranscript("item_u1", "stop, I meant Tuesday")


# ---------------------------------------------------------------------------- session.updated


def _ga_session(turn_detection: Any, **extra: Any) -> dict[str, Any]:
    session: dict[str, Any] = {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_1",
        "model": "gpt-realtime",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "gpt-transcribe"},
                "turn_detection": turn_detection,
            },
            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
        },
    }
    session.update(extra)
    return session


def _beta_session(turn_detection: Any) -> dict[str, Any]:
    return {
        "id": "sess_1",
        "modalities": ["text", "audio"],
        "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_ulaw",
        "turn_detection": turn_detection,
        "voice": "alloy",
    }


SERVER_VAD_ON = SessionConfigured(
    turn_detection="server_vad", create_response=True, interrupt_response=True
)
TURN_CASES = [
    (None, SessionConfigured(turn_detection=None)),
    (
        {"type": "server_vad"},
        SessionConfigured(
            turn_detection="server_vad", create_response=True, interrupt_response=True
        ),
    ),
    (
        {"type": "server_vad", "create_response": None, "interrupt_response": None},
        SessionConfigured(
            turn_detection="server_vad", create_response=True, interrupt_response=True
        ),
    ),
    (
        {"type": "semantic_vad", "create_response": False, "interrupt_response": True},
        SessionConfigured(
            turn_detection="semantic_vad", create_response=False, interrupt_response=True
        ),
    ),
    (
        {
            "type": "server_vad",
            "create_response": True,
            "interrupt_response": False,
            "silence_duration_ms": 500,
            "prefix_padding_ms": 300,
            "threshold": 0.5,
        },
        SessionConfigured(
            turn_detection="server_vad", create_response=True, interrupt_response=False
        ),
    ),
]


@pytest.mark.parametrize(("turn", "expected"), TURN_CASES)
@pytest.mark.parametrize("event_type", ["session.updated", "session.created"])
def test_session_ga_nested_turn_detection(
    turn: Any, expected: SessionConfigured, event_type: str
) -> None:
    frame = _server({"type": event_type, "event_id": "e", "session": _ga_session(turn)})
    assert parse_server_event(frame) == _as_sent(expected, event_type)


@pytest.mark.parametrize(("turn", "expected"), TURN_CASES)
@pytest.mark.parametrize("event_type", ["session.updated", "session.created"])
def test_session_beta_flat_turn_detection(
    turn: Any, expected: SessionConfigured, event_type: str
) -> None:
    frame = _server(
        {"type": event_type, "event_id": "e", "session": _beta_session(turn)}, beta=True
    )
    assert parse_server_event(frame) == _as_sent(expected, event_type)


def _as_sent(expected: SessionConfigured, event_type: str) -> SessionConfigured:
    """``expected`` from a session that states mu-law both ways, as ``_ga_session`` and
    ``_beta_session`` do (in their dialect's own words)."""
    return attrs.evolve(
        expected,
        input_audio_format="pcmu",
        output_audio_format="pcmu",
        updated=event_type == "session.updated",
    )


@pytest.mark.parametrize(
    ("audio", "formats"),
    [
        ({"input": {"format": {"type": "audio/pcm", "rate": 24000}}}, ("pcm", None)),
        ({"output": {"format": {"type": "audio/pcma"}}}, (None, "pcma")),
        ({"input": {"format": {}}, "output": {"format": None}}, (None, None)),
        ({"input": {"format": "audio/pcmu"}, "output": {"format": {"type": "x/new"}}},
         ("pcmu", "x/new")),
        ({"input": {"format": 7}, "output": "odd"}, (None, None)),
    ],
)  # fmt: skip
def test_session_audio_formats_are_read_leniently_in_both_dialects(
    audio: dict[str, Any], formats: tuple[str | None, str | None]
) -> None:
    """A format the server states is read as a short name; an odd shape is ``None`` (not an
    error: the frame keeps its turn-taking settings, which the core needs)."""
    ga = {"type": "session.updated", "session": {"type": "realtime", "audio": audio}}
    event = parse_server_event(json.dumps(ga))
    assert isinstance(event, SessionConfigured) and event.updated
    assert (event.input_audio_format, event.output_audio_format) == formats
    beta_names = {"pcm": "pcm16", "pcma": "g711_alaw", "pcmu": "g711_ulaw", "x/new": "x/new"}
    beta = {
        "type": "session.created",
        "session": {
            "input_audio_format": beta_names.get(formats[0] or "", 5),
            "output_audio_format": beta_names.get(formats[1] or ""),
        },
    }
    event = parse_server_event(json.dumps(beta))
    assert isinstance(event, SessionConfigured) and not event.updated
    assert (event.input_audio_format, event.output_audio_format) == formats


def test_session_transcription_type_never_creates_or_interrupts() -> None:
    frame = json.dumps(
        {
            "type": "session.updated",
            "session": {
                "type": "transcription",
                "audio": {"input": {"turn_detection": {"type": "server_vad"}}},
            },
        }
    )
    assert parse_server_event(frame) == SessionConfigured(turn_detection="server_vad", updated=True)


def test_session_without_any_turn_detection_reads_as_none() -> None:
    assert parse_server_event('{"type":"session.updated","session":{"type":"realtime"}}') == (
        SessionConfigured(turn_detection=None, updated=True)
    )
    assert parse_server_event('{"type":"session.updated","session":{}}') == SessionConfigured(
        updated=True
    )
    assert parse_server_event('{"type":"session.created","session":{}}') == SessionConfigured()


# ------------------------------------------------------------------- every type of both unions


def _superset_frame(event_type: str) -> str:
    """One frame with every field any handler reads, so each type can be parsed generically."""
    return json.dumps(
        {
            "type": event_type,
            "event_id": "event_1",
            "response_id": "resp_1",
            "item_id": "item_1",
            "delta": "AAAA",
            "transcript": "hi",
            "response": {"id": "resp_1", "status": "completed", "conversation_id": "conv_1"},
            "error": {"type": "server_error", "code": "x", "message": "m", "event_id": None},
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )


@pytest.mark.parametrize("event_type", ALL_SERVER_TYPES)
def test_every_union_type_is_parsed_or_explicitly_ignored(event_type: str) -> None:
    assert event_type in KNOWN_TYPES
    result = parse_server_event(_superset_frame(event_type))
    if event_type in IGNORED_TYPES:
        assert result == Ignored(event_type, known=True)
    elif event_type in ("conversation.item.added", "conversation.item.created"):
        # Parsed for one item type only (our tool outputs); any other item is nothing to do.
        assert result == Ignored(event_type, known=True)
    else:
        assert not isinstance(result, Ignored)
    if event_type in AUDIO_DELTA_TYPES:
        assert isinstance(result, OutputAudioDelta)
    elif event_type in TRANSCRIPT_DELTA_TYPES:
        assert isinstance(result, OutputTranscriptDelta)
    elif event_type in ACTIVITY_TYPES:
        assert result == ResponseActivity("resp_1", event_type)


def test_every_name_the_adapter_knows_is_in_a_package_union() -> None:
    # No invented names: each parsed or ignored type exists in the GA or the beta union.
    assert set(ALL_SERVER_TYPES) == set(KNOWN_TYPES)


def test_ga_and_beta_aliases_give_the_same_result() -> None:
    pairs = [
        ("response.output_audio.delta", "response.audio.delta"),
        ("response.output_audio.done", "response.audio.done"),
        ("response.output_audio_transcript.delta", "response.audio_transcript.delta"),
        ("response.output_audio_transcript.done", "response.audio_transcript.done"),
        ("response.output_text.delta", "response.text.delta"),
        ("response.output_text.done", "response.text.done"),
    ]
    for ga_name, beta_name in pairs:
        assert ga_name in GA_SERVER_TYPES and beta_name in BETA_SERVER_TYPES
        ga = parse_server_event(_superset_frame(ga_name))
        beta = parse_server_event(_superset_frame(beta_name))
        if isinstance(ga, ResponseActivity):
            assert isinstance(beta, ResponseActivity)
            assert ga.response_id == beta.response_id
        else:
            assert ga == beta
    for name in ("conversation.item.added", "conversation.item.done", "conversation.item.created"):
        assert parse_server_event(_superset_frame(name)) == Ignored(name, known=True)


# ----------------------------------------------------------------------------- unknown types


def test_unknown_type_is_ignored_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    codec = OpenAIRealtimeCodec(call_id="CA1")
    caplog.set_level(logging.WARNING, logger="realtime_fsm.openai_realtime")
    for _ in range(3):
        assert codec.parse('{"type":"response.brand_new.delta","x":1}') == Ignored(
            "response.brand_new.delta", known=False
        )
    codec.parse('{"type":"rate_limits.updated","rate_limits":[]}')  # known: not counted
    assert codec.unknown_types == {"response.brand_new.delta": 3}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "response.brand_new.delta" in lines[0] and "call=CA1" in lines[0]


def test_unknown_type_table_is_bounded() -> None:
    codec = OpenAIRealtimeCodec()
    for index in range(MAX_UNKNOWN_TYPES + 10):
        codec.parse(json.dumps({"type": f"x.{index}"}))
    assert len(codec.unknown_types) == MAX_UNKNOWN_TYPES + 1
    assert codec.unknown_types[OTHER_UNKNOWN] == 10


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


# ---------------------------------------------------------------------------- client events

COMMANDS: list[ClientCommand] = [
    SendResponseCreate(
        event_id="rtfsm_create_1",
        reason="app",
        metadata={META_EVENT_ID: "rtfsm_create_1", META_REASON: "app"},
    ),
    SendResponseCreate(
        event_id="rtfsm_create_2",
        reason="greeting",
        instructions="Greet the caller.",
        metadata={META_EVENT_ID: "rtfsm_create_2", META_REASON: "greeting", "app": "x"},
    ),
    SendResponseCreate(
        event_id="rtfsm_create_3",
        reason="classify",
        instructions="Classify the caller's intent.",
        metadata={META_EVENT_ID: "rtfsm_create_3", META_REASON: "classify"},
        out_of_band=True,
    ),
    SendResponseCreate(event_id="rtfsm_create_4", reason="bare"),
    SendResponseCancel(event_id="rtfsm_cancel_5", response_id="resp_1"),
    SendResponseCancel(event_id="rtfsm_cancel_6", response_id=None),
    SendUserText(event_id="rtfsm_item_7", text="Actually, make it Tuesday."),
    SendTruncate(event_id="rtfsm_truncate_8", item_id="item_a1", audio_end_ms=1600),
    SendItemDelete(event_id="rtfsm_delete_9", item_id="item_a2"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{type(c).__name__}-{c.event_id}")
@pytest.mark.parametrize("modalities", [None, ("audio",), ("text",)])
@pytest.mark.parametrize("dialect", list(Dialect))
def test_every_command_renders_a_valid_client_event(
    command: Any, modalities: tuple[str, ...] | None, dialect: Dialect
) -> None:
    event = render_command(command, dialect=dialect, response_modalities=modalities)
    assert_valid_client_event(event, dialect)
    assert event["event_id"] == command.event_id
    codec = OpenAIRealtimeCodec(dialect=dialect, response_modalities=modalities)
    assert codec.render(command) == event
    assert json.loads(codec.render_json(command)) == event


def test_response_create_shapes() -> None:
    oob = render_command(COMMANDS[2], response_modalities=("audio",))
    assert oob == {
        "type": "response.create",
        "event_id": "rtfsm_create_3",
        "response": {
            "conversation": "none",
            "instructions": "Classify the caller's intent.",
            "metadata": {META_EVENT_ID: "rtfsm_create_3", META_REASON: "classify"},
            "output_modalities": ["audio"],
        },
    }
    beta = render_command(COMMANDS[2], dialect=Dialect.BETA, response_modalities=("audio",))
    assert beta["response"]["modalities"] == ["text", "audio"]
    assert "output_modalities" not in beta["response"]
    bare = render_command(COMMANDS[3])
    assert bare == {"type": "response.create", "event_id": "rtfsm_create_4", "response": {}}
    assert "conversation" not in render_command(COMMANDS[0])["response"]  # default: "auto"


def test_cancel_truncate_delete_and_user_text_shapes() -> None:
    assert render_command(COMMANDS[4]) == {
        "type": "response.cancel",
        "event_id": "rtfsm_cancel_5",
        "response_id": "resp_1",
    }
    assert render_command(COMMANDS[5]) == {"type": "response.cancel", "event_id": "rtfsm_cancel_6"}
    assert render_command(COMMANDS[6]) == {
        "type": "conversation.item.create",
        "event_id": "rtfsm_item_7",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Actually, make it Tuesday."}],
        },
    }
    assert render_command(COMMANDS[7]) == {
        "type": "conversation.item.truncate",
        "event_id": "rtfsm_truncate_8",
        "item_id": "item_a1",
        "content_index": 0,
        "audio_end_ms": 1600,
    }
    assert render_command(COMMANDS[8]) == {
        "type": "conversation.item.delete",
        "event_id": "rtfsm_delete_9",
        "item_id": "item_a2",
    }


@pytest.mark.parametrize(
    "command",
    [
        ClearPlayback(reason="barge_in"),
        DropResponseAudio(response_id="resp_1"),
        RequestGivenUp(reason="x"),
        ReturnUndeliveredText(texts=("a",)),
    ],
)
def test_non_openai_commands_are_refused(command: Any) -> None:
    assert not is_client_command(command)
    assert not isinstance(command, CLIENT_COMMANDS)
    with pytest.raises(LocalProtocolError, match="not an OpenAI Realtime client event"):
        render_command(command)


def test_client_command_guard_accepts_every_send_command() -> None:
    assert all(is_client_command(command) for command in COMMANDS)


@pytest.mark.parametrize("dialect", list(Dialect))
def test_input_audio_append_passes_the_payload_through(dialect: Dialect) -> None:
    payload = "f39///////9/f39/f3//f3///v///////////39/f3///3//fw=="
    event = render_input_audio_append(payload)
    assert event == {"type": "input_audio_buffer.append", "audio": payload}
    assert_valid_client_event(event, dialect)
    assert json.loads(input_audio_append_json(payload)) == event


SESSION_CONFIGS = [
    SessionConfig(),
    SessionConfig(voice="marin", instructions="You are a phone agent."),
    SessionConfig(turn_detection="semantic_vad", eagerness="low", create_response=False),
    SessionConfig(
        turn_detection="server_vad",
        silence_duration_ms=400,
        prefix_padding_ms=200,
        threshold=0.6,
        interrupt_response=False,
    ),
    SessionConfig(turn_detection=None),
    SessionConfig(input_transcription=False),
    SessionConfig(transcription_model="gpt-4o-mini-transcribe", transcription_language="en"),
]


@pytest.mark.parametrize("config", SESSION_CONFIGS)
@pytest.mark.parametrize("dialect", list(Dialect))
def test_session_update_is_a_valid_client_event(config: SessionConfig, dialect: Dialect) -> None:
    event = render_session_update(config, dialect=dialect, event_id="rtfsm_session_1")
    if dialect is Dialect.BETA and config.turn_detection is None:
        # The beta TypedDict omits Optional on turn_detection, although its own docstring says
        # "This can be set to `null` to turn off"; the beta model accepts null.  Check the
        # params without it and the model with it.
        without = {**event, "session": {k: v for k, v in event["session"].items()}}
        del without["session"]["turn_detection"]
        CLIENT[dialect][0].validate_python(without)
        model = CLIENT[dialect][1].validate_python(event)
        _no_extra(model)
        assert model.model_dump(mode="json", exclude_unset=True) == event
    else:
        assert_valid_client_event(event, dialect)
    assert (
        OpenAIRealtimeCodec(dialect=dialect).session_update(config, event_id="rtfsm_session_1")
        == event
    )


def test_session_update_ga_shape() -> None:
    event = render_session_update(SessionConfig(voice="marin", instructions="Be brief."))
    assert event == {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "output_modalities": ["audio"],
            "instructions": "Be brief.",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": {"model": "gpt-transcribe"},
                    "turn_detection": {
                        "type": "server_vad",
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
            },
        },
    }


def test_session_update_beta_shape() -> None:
    event = render_session_update(
        SessionConfig(voice="alloy", turn_detection="semantic_vad", interrupt_response=False),
        dialect=Dialect.BETA,
    )
    assert event == {
        "type": "session.update",
        "session": {
            "modalities": ["text", "audio"],
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_ulaw",
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": {
                "type": "semantic_vad",
                "create_response": True,
                "interrupt_response": False,
            },
            "voice": "alloy",
        },
    }


def test_session_update_turn_detection_none_is_an_explicit_null() -> None:
    ga = render_session_update(SessionConfig(turn_detection=None))
    assert ga["session"]["audio"]["input"]["turn_detection"] is None
    beta = render_session_update(SessionConfig(turn_detection=None), dialect=Dialect.BETA)
    assert beta["session"]["turn_detection"] is None
    off = render_session_update(SessionConfig(input_transcription=False))
    assert "transcription" not in off["session"]["audio"]["input"]


def test_transcription_model_defaults_per_dialect() -> None:
    assert DEFAULT_TRANSCRIPTION_MODEL == {
        Dialect.GA: "gpt-transcribe",
        Dialect.BETA: "whisper-1",
    }
    custom = SessionConfig(transcription_model="gpt-4o-mini-transcribe")
    beta = render_session_update(custom, dialect=Dialect.BETA)
    assert beta["session"]["input_audio_transcription"] == {"model": "gpt-4o-mini-transcribe"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"turn_detection": "semantic_vad", "silence_duration_ms": 300},
        {"turn_detection": None, "threshold": 0.5},
        {"turn_detection": "server_vad", "eagerness": "high"},
        {"turn_detection": "push_to_talk"},
        {"eagerness": "fast", "turn_detection": "semantic_vad"},
        {"threshold": 1.5},
        {"silence_duration_ms": -1},
        {"create_response": "yes"},
        {"voice": 3},
    ],
)
def test_session_config_refuses_bad_combinations(kwargs: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        SessionConfig(**kwargs)


@pytest.mark.parametrize("modalities", [("audio", "text"), ("video",), ("text", "text", "x")])
def test_invalid_response_modalities_are_refused(modalities: tuple[str, ...]) -> None:
    with pytest.raises(LocalProtocolError, match="modalities"):
        OpenAIRealtimeCodec(response_modalities=modalities)
    with pytest.raises(LocalProtocolError, match="modalities"):
        render_command(COMMANDS[0], response_modalities=modalities)


def test_beta_accepts_audio_with_text() -> None:
    event = render_command(COMMANDS[0], dialect=Dialect.BETA, response_modalities=("audio", "text"))
    assert event["response"]["modalities"] == ["text", "audio"]
    assert_valid_client_event(event, Dialect.BETA)


def test_codec_argument_checks() -> None:
    with pytest.raises(TypeError):
        OpenAIRealtimeCodec(dialect="ga")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        OpenAIRealtimeCodec(max_frame_size=0)
    codec = OpenAIRealtimeCodec(dialect=Dialect.BETA, max_frame_size=10)
    assert codec.dialect is Dialect.BETA
    assert codec.max_frame_size == 10


# -------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("config", SESSION_CONFIGS)
@pytest.mark.parametrize("dialect", list(Dialect))
def test_session_round_trip(config: SessionConfig, dialect: Dialect) -> None:
    """What we send, echoed back by a server that applies it, reads as what we expect."""
    sent = render_session_update(config, dialect=dialect)["session"]
    echoed = {"type": "session.updated", "event_id": "event_7", "session": {"id": "sess", **sent}}
    frame = _server(echoed, beta=dialect is Dialect.BETA)
    assert parse_server_event(frame) == config.expected_session()


@pytest.mark.parametrize("dialect", list(Dialect))
def test_response_create_round_trip_through_the_lifecycle(dialect: Dialect) -> None:
    """Our create's metadata comes back on response.created and makes the response ours."""
    codec = OpenAIRealtimeCodec(dialect=dialect, response_modalities=("audio",))
    lifecycle = ResponseLifecycle()
    commands = lifecycle.handle(RequestResponse(reason="greeting"), now=0.0)
    (create,) = commands
    assert isinstance(create, SendResponseCreate)
    sent = codec.render(create)
    assert_valid_client_event(sent, dialect)
    modalities_key = "output_modalities" if dialect is Dialect.GA else "modalities"
    echoed = {
        "type": "response.created",
        "event_id": "event_2",
        "response": _response(
            status="in_progress",
            conversation_id="conv_1",
            metadata=sent["response"]["metadata"],
            **{modalities_key: sent["response"][modalities_key]},
        ),
    }
    created = codec.parse(_server(echoed, beta=dialect is Dialect.BETA))
    assert isinstance(created, ResponseCreated)
    assert created.metadata[META_EVENT_ID] == create.event_id
    assert "audio" in created.output_modalities
    lifecycle.handle(created, now=0.1)
    assert lifecycle.state is ResponseState.ACTIVE
    assert lifecycle.response_id == "resp_1"
    audio = codec.parse(
        _superset_frame(
            "response.output_audio.delta" if dialect is Dialect.GA else "response.audio.delta"
        )
    )
    assert isinstance(audio, OutputAudioDelta)
    assert lifecycle.audio_delta(audio.response_id, audio.item_id, audio.byte_count, 0.2)
    done = codec.parse(
        _server(
            {"type": "response.done", "event_id": "e", "response": _response(status="completed")},
            beta=dialect is Dialect.BETA,
        )
    )
    assert isinstance(done, ResponseDone)
    lifecycle.handle(done, now=0.3)
    assert lifecycle.check_invariants() == []
    assert lifecycle.state.value == "idle"  # (mypy keeps the narrowing to ACTIVE from above)


def test_rejected_create_is_matched_by_event_id() -> None:
    codec = OpenAIRealtimeCodec()
    lifecycle = ResponseLifecycle()
    (create,) = lifecycle.handle(RequestResponse(reason="app"), now=0.0)
    assert isinstance(create, SendResponseCreate)
    error = codec.parse(
        json.dumps(
            {
                "type": "error",
                "event_id": "event_s",
                "error": {
                    "type": "invalid_request_error",
                    "code": "invalid_value",
                    "message": "bad",
                    "event_id": codec.render(create)["event_id"],
                },
            }
        )
    )
    assert isinstance(error, ServerError)
    commands = lifecycle.handle(error, now=0.1)
    assert lifecycle.state is ResponseState.IDLE
    assert any(isinstance(c, RequestGivenUp) for c in commands)


@pytest.mark.parametrize("dialect", list(Dialect))
@pytest.mark.parametrize("event_id", [None, "rtfsm_commit_1"])
def test_input_audio_commit_is_a_valid_client_event(dialect: Dialect, event_id: str | None) -> None:
    event = render_input_audio_commit(event_id=event_id)
    assert event["type"] == "input_audio_buffer.commit"
    assert event.get("event_id") == event_id
    assert_valid_client_event(event, dialect)

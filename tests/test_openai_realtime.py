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
from pydantic import BaseModel, TypeAdapter

from realtime_fsm import (
    META_EVENT_ID,
    META_REASON,
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
    ACTIVITY_TYPES,
    AUDIO_DELTA_TYPES,
    IGNORED_TYPES,
    KNOWN_TYPES,
    MAX_UNKNOWN_TYPES,
    OTHER_UNKNOWN,
    TRANSCRIPT_DELTA_TYPES,
    Dialect,
    Ignored,
    InputTranscript,
    OpenAIRealtimeCodec,
    OutputAudioDelta,
    OutputTranscriptDelta,
    ResponseActivity,
    dumps,
    parse_server_event,
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

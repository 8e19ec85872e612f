"""The OpenAI Realtime adapter's client events, validated by the ``openai`` package's own
``RealtimeClientEvent`` types (GA and beta), and round trips through the codec.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_openai_realtime import (
    CLIENT,
    _no_extra,
    _response,
    _server,
    _superset_frame,
    assert_valid_client_event,
)

from realtime_fsm import (
    META_EVENT_ID,
    META_REASON,
    ClearPlayback,
    DropResponseAudio,
    LocalProtocolError,
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
)
from realtime_fsm.openai_realtime import (
    CLIENT_COMMANDS,
    DEFAULT_TRANSCRIPTION_MODEL,
    ClientCommand,
    Dialect,
    OpenAIRealtimeCodec,
    OutputAudioDelta,
    SessionConfig,
    input_audio_append_json,
    is_client_command,
    parse_server_event,
    render_command,
    render_input_audio_append,
    render_input_audio_commit,
    render_session_update,
)

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

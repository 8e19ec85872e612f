"""Every session setting, against the ``openai`` package's own session types.

The rendered ``session.update`` is validated with the package's GA (and, where the field
exists, beta) client-event types: the TypedDict params and the pydantic models, with nothing
unknown and nothing coerced.  The walk over ``RealtimeSessionCreateRequest`` (and the nested
audio, transcription, noise reduction and turn detection models) proves every GA field can be
set, first-class or through ``extra``; a field a new SDK adds fails it until it is covered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs
import openai.types.realtime as ga_types
import pytest
from openai.types.beta.realtime.session_update_event import Session as BetaSession
from openai.types.realtime.audio_transcription import AudioTranscription
from openai.types.realtime.realtime_audio_config_input import (
    NoiseReduction,
    RealtimeAudioConfigInput,
)
from openai.types.realtime.realtime_audio_config_output import RealtimeAudioConfigOutput
from openai.types.realtime.realtime_audio_input_turn_detection import SemanticVad, ServerVad
from pydantic import BaseModel
from test_openai_realtime import CLIENT, _no_extra

from realtime_fsm.openai_realtime import (
    Dialect,
    OpenAIRealtimeCodec,
    SessionConfig,
    render_session_update,
)
from realtime_fsm.tools import Tool


def rendered(config: SessionConfig, dialect: Dialect = Dialect.GA) -> tuple[dict[str, Any], Any]:
    """The ``session.update`` for ``config`` and its validated model, after checking it is a
    valid client event of ``dialect`` that round-trips exactly (and, for GA, a *realtime*
    session, not a transcription session that happened to fit the union)."""
    event = render_session_update(config, dialect=dialect, event_id="evt_1")
    params, models = CLIENT[dialect]
    params.validate_python(event)
    model = models.validate_python(event)
    assert model.type == "session.update"
    _no_extra(model)
    assert model.model_dump(mode="json", exclude_unset=True) == event
    assert json.loads(json.dumps(event)) == event
    if dialect is Dialect.GA:
        assert isinstance(model.session, ga_types.RealtimeSessionCreateRequest)
    assert OpenAIRealtimeCodec(dialect=dialect).session_update(config, event_id="evt_1") == event
    return event, model


WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
MCP: dict[str, Any] = {
    "type": "mcp",
    "server_label": "crm",
    "server_url": "https://mcp.example.com",
    "require_approval": "never",
}
RETENTION: dict[str, Any] = {
    "type": "retention_ratio",
    "retention_ratio": 0.8,
    "token_limits": {"post_instructions": 5000},
}
TRACING: dict[str, Any] = {"workflow_name": "phone", "group_id": "g1", "metadata": {"k": "v"}}
PROMPT: dict[str, Any] = {"id": "pmpt_123", "version": "2", "variables": {"city": "Paris"}}

# ------------------------------------------------------------------ first-class fields (GA)

FULL = SessionConfig(
    instructions="Be brief.",
    voice="marin",
    silence_duration_ms=300,
    idle_timeout_ms=6000,
    tools=(WEATHER, MCP),
    tool_choice={"type": "function", "name": "get_weather"},
    max_output_tokens=1024,
    speed=1.25,
    noise_reduction="near_field",
    truncation=RETENTION,
    tracing=TRACING,
    prompt=PROMPT,
    reasoning_effort="high",
    parallel_tool_calls=False,
)


def test_every_first_class_field_lands_where_ga_puts_it() -> None:
    event, _ = rendered(FULL)
    session = event["session"]
    assert session["type"] == "realtime"
    assert session["output_modalities"] == ["audio"]
    audio_in, audio_out = session["audio"]["input"], session["audio"]["output"]
    assert audio_in["format"] == audio_out["format"] == {"type": "audio/pcmu"}
    assert audio_in["noise_reduction"] == {"type": "near_field"}
    assert audio_in["turn_detection"]["idle_timeout_ms"] == 6000
    assert audio_in["turn_detection"]["silence_duration_ms"] == 300
    assert audio_out == {"format": {"type": "audio/pcmu"}, "speed": 1.25, "voice": "marin"}
    assert session["tools"] == [WEATHER, MCP]
    assert session["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert session["max_output_tokens"] == 1024
    assert session["truncation"] == RETENTION
    assert session["tracing"] == TRACING
    assert session["prompt"] == PROMPT
    assert session["reasoning"] == {"effort": "high"}
    assert session["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("kwargs", "key", "expected"),
    [
        ({"tool_choice": "required", "tools": (WEATHER,)}, "tool_choice", "required"),
        ({"tool_choice": "none"}, "tool_choice", "none"),
        (
            {"tools": (MCP,), "tool_choice": {"type": "mcp", "server_label": "crm", "name": "x"}},
            "tool_choice",
            {"type": "mcp", "server_label": "crm", "name": "x"},
        ),
        ({"max_output_tokens": "inf"}, "max_output_tokens", "inf"),
        ({"max_output_tokens": 1}, "max_output_tokens", 1),
        ({"truncation": "auto"}, "truncation", "auto"),
        ({"truncation": "disabled"}, "truncation", "disabled"),
        (
            {"truncation": {"type": "retention_ratio", "retention_ratio": 0}},
            "truncation",
            {"type": "retention_ratio", "retention_ratio": 0},
        ),
        ({"tracing": "auto"}, "tracing", "auto"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt", {"id": "pmpt_1"}),
        ({"reasoning_effort": "xhigh"}, "reasoning", {"effort": "xhigh"}),
        ({"parallel_tool_calls": True}, "parallel_tool_calls", True),
    ],
)
def test_other_values_of_first_class_fields_are_valid(
    kwargs: dict[str, Any], key: str, expected: object
) -> None:
    event, _ = rendered(SessionConfig(**kwargs))
    assert event["session"][key] == expected


def test_unset_fields_are_not_sent() -> None:
    """The defaults render exactly what the bridge sent before these fields existed."""
    event, _ = rendered(SessionConfig())
    assert set(event["session"]) == {"type", "output_modalities", "audio"}
    assert set(event["session"]["audio"]["input"]) == {"format", "transcription", "turn_detection"}
    assert set(event["session"]["audio"]["output"]) == {"format"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tools": WEATHER}, "tools must be a sequence"),
        ({"tools": ["get_weather"]}, r"tools\[0\] must be a mapping"),
        ({"tools": [{"name": "f"}]}, r"tools\[0\].type"),
        ({"tools": [{"type": "function"}]}, r"tools\[0\].name"),
        ({"tools": [WEATHER, WEATHER]}, "duplicate function name 'get_weather'"),
        ({"tools": [{**WEATHER, "parameters": "x"}]}, "parameters"),
        ({"tools": [{**WEATHER, "description": 3}]}, "description"),
        ({"tools": [{"type": "mcp"}]}, "server_label"),
        ({"tools": [{**WEATHER, "parameters": {"x": {1, 2}}}]}, "JSON data"),
        ({"tool_choice": "always"}, "tool_choice must be one of"),
        ({"tool_choice": {"type": "function"}}, "tool_choice must be one of"),
        ({"tool_choice": {"type": "function", "name": "nope"}}, "'nope', which is not in tools"),
        ({"max_output_tokens": 0}, r"max_output_tokens must be an int in \[1, 4096\]"),
        ({"max_output_tokens": 4097}, "max_output_tokens"),
        ({"max_output_tokens": True}, "max_output_tokens"),
        ({"max_output_tokens": "infinite"}, "max_output_tokens"),
        ({"speed": 0.2}, r"speed must be a number in \[0.25, 1.5\]"),
        ({"speed": 1.6}, "speed"),
        ({"speed": "1"}, "speed"),
        ({"noise_reduction": "far"}, "noise_reduction must be one of"),
        ({"truncation": "sometimes"}, "truncation must be"),
        ({"truncation": {"type": "retention_ratio", "retention_ratio": 1.5}}, "retention_ratio"),
        (
            {"truncation": {**RETENTION, "token_limits": {"post_instructions": -1}}},
            "post_instructions",
        ),
        ({"tracing": "on"}, "tracing must be a mapping"),
        ({"tracing": {"workflow": "x"}}, r"unknown key\(s\) \['workflow'\]"),
        ({"tracing": {"group_id": 1}}, "tracing.group_id must be a string"),
        ({"prompt": {"version": "1"}}, "prompt.id must be a string"),
        ({"prompt": {"id": "p", "variables": ["a"]}}, "prompt.variables must be a mapping"),
        ({"reasoning_effort": "max"}, "reasoning_effort must be one of"),
        ({"parallel_tool_calls": 1}, "parallel_tool_calls must be a bool"),
        ({"idle_timeout_ms": -5}, "idle_timeout_ms must be a non-negative int"),
        ({"idle_timeout_ms": 5000, "turn_detection": "semantic_vad"}, "needs turn_detection"),
        ({"idle_timeout_ms": 5000, "turn_detection": None}, "needs turn_detection"),
        ({"extra": ["model"]}, "extra must be a mapping"),
        ({"extra": {"model": float("nan")}}, "extra must be JSON data"),
    ],
)
def test_bad_values_are_refused_when_built(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionConfig(**kwargs)


# ---------------------------------------------------------------------------------- tools


class SchemaOnly:
    """Not a ``Tool``: anything with ``schema()`` will do."""

    def schema(self) -> dict[str, Any]:
        return dict(WEATHER)


def test_tools_given_as_objects_with_schema_are_stored_as_plain_dicts() -> None:
    hangup = Tool("hang_up", "End the call.", {"type": "object", "properties": {}}, print)
    config = SessionConfig(tools=[hangup, SchemaOnly(), MCP], tool_choice="auto")
    assert all(type(entry) is dict for entry in config.tools)
    assert config.tools == (hangup.schema(), WEATHER, MCP)
    event, _ = rendered(config)
    assert event["session"]["tools"] == [hangup.schema(), WEATHER, MCP]
    # A function tool_choice may name a tool given as an object.
    SessionConfig(tools=[hangup], tool_choice={"type": "function", "name": "hang_up"})


def test_config_and_events_share_no_mutable_state() -> None:
    """A frozen config stays what it was built with: the caller's dicts are copied in, and a
    rendered event (which the bridge edits) is copied out."""
    tool = json.loads(json.dumps(WEATHER))
    extra: dict[str, Any] = {"audio": {"input": {"transcription": {"prompt": "names"}}}}
    config = SessionConfig(tools=[tool], tracing=dict(TRACING), extra=extra)
    tool["name"] = "changed"
    extra["audio"]["input"]["transcription"]["prompt"] = "changed"
    event = render_session_update(config)
    event["session"]["tools"][0]["parameters"]["required"].append("zip")
    event["session"]["tracing"]["metadata"]["k"] = "w"
    event["session"]["audio"]["input"]["transcription"]["prompt"] = "w"
    assert render_session_update(config) == render_session_update(
        SessionConfig(
            tools=[WEATHER],
            tracing=TRACING,
            extra={"audio": {"input": {"transcription": {"prompt": "names"}}}},
        )
    )


def test_config_stays_hashable_and_comparable() -> None:
    assert attrs.evolve(FULL) == FULL
    assert hash(FULL) == hash(attrs.evolve(FULL))
    assert attrs.evolve(FULL, tools=(WEATHER,), tool_choice=None) != FULL


# ---------------------------------------------------------------------------------- extra


def test_extra_deep_merges_with_what_is_rendered() -> None:
    config = SessionConfig(
        noise_reduction="far_field",
        transcription_language="en",
        voice="marin",
        extra={
            "audio": {
                "input": {
                    "noise_reduction": {"strength": 0.5},
                    "transcription": {"prompt": "Expect street names."},
                },
                "output": {"voice": {"id": "voice_1234"}},
            },
            "include": ["item.input_audio_transcription.logprobs"],
        },
    )
    event, _ = rendered(config)
    audio_in = event["session"]["audio"]["input"]
    assert audio_in["noise_reduction"] == {"type": "far_field", "strength": 0.5}
    assert audio_in["transcription"] == {
        "model": "gpt-transcribe",
        "language": "en",
        "prompt": "Expect street names.",
    }
    assert audio_in["format"] == {"type": "audio/pcmu"}
    assert "turn_detection" in audio_in
    assert event["session"]["audio"]["output"]["voice"] == {"id": "voice_1234"}
    assert event["session"]["include"] == ["item.input_audio_transcription.logprobs"]


def test_extra_null_is_sent_and_extra_wins_over_a_first_class_field() -> None:
    """``None`` in ``extra`` is an explicit ``null`` (noise reduction or tracing off); a
    first-class value can be overridden, e.g. a model allowing more than 4096 tokens."""
    config = SessionConfig(
        noise_reduction="near_field",
        max_output_tokens=100,
        extra={"audio": {"input": {"noise_reduction": None}}, "max_output_tokens": 8000},
    )
    event, _ = rendered(config)
    assert event["session"]["audio"]["input"]["noise_reduction"] is None
    assert event["session"]["max_output_tokens"] == 8000
    event, _ = rendered(SessionConfig(extra={"tracing": None}))
    assert event["session"]["tracing"] is None


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ({"type": "transcription"}, "'type'"),
        ({"output_modalities": ["text"]}, "'output_modalities'"),
        ({"modalities": ["text"]}, "'modalities'"),
        (
            {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}},
            "'audio.input.format'",
        ),
        ({"audio": {"output": {"format": {"type": "audio/pcma"}}}}, "'audio.output.format'"),
        ({"input_audio_format": "pcm16"}, "'input_audio_format'"),
        ({"output_audio_format": "pcm16"}, "'output_audio_format'"),
        ({"audio": {"input": {"turn_detection": None}}}, "'audio.input.turn_detection'"),
        ({"turn_detection": {"type": "server_vad"}}, "'turn_detection'"),
        ({"create_response": False}, "'create_response'"),
        ({"interrupt_response": False}, "'interrupt_response'"),
        ({"audio": None}, r"extra\['audio'\] must be a mapping"),
        ({"audio": {"output": "alloy"}}, r"extra\['audio.output'\] must be a mapping"),
    ],
)
def test_extra_refuses_keys_the_bridge_owns(extra: dict[str, Any], refused: str) -> None:
    with pytest.raises(ValueError, match=refused):
        SessionConfig(extra=extra)


# ------------------------------------------------------------- every GA field is settable

#: Fields the bridge renders itself, always with this value.
OWNED = "owned"

#: For each GA model the session holds: where it sits in the rendered session, and for each
#: of its fields either ``OWNED`` or the ``SessionConfig`` keyword arguments that set it.
GA_WALK: list[tuple[type[BaseModel], tuple[str, ...], dict[str, Any]]] = [
    (
        ga_types.RealtimeSessionCreateRequest,
        (),
        {
            "type": OWNED,
            "output_modalities": OWNED,
            "audio": {"speed": 0.5},
            "include": {"extra": {"include": ["item.input_audio_transcription.logprobs"]}},
            "instructions": {"instructions": "Be brief."},
            "max_output_tokens": {"max_output_tokens": 4096},
            "model": {"extra": {"model": "gpt-realtime-2"}},
            "parallel_tool_calls": {"parallel_tool_calls": True},
            "prompt": {"prompt": PROMPT},
            "reasoning": {"reasoning_effort": "minimal"},
            "tool_choice": {
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "name": "get_weather"},
            },
            "tools": {"tools": [WEATHER, MCP]},
            "tracing": {"tracing": TRACING},
            "truncation": {"truncation": RETENTION},
        },
    ),
    (
        RealtimeAudioConfigInput,
        ("audio", "input"),
        {
            "format": OWNED,
            "noise_reduction": {"noise_reduction": "far_field"},
            "transcription": {"transcription_model": "gpt-transcribe"},
            "turn_detection": {"turn_detection": "semantic_vad"},
        },
    ),
    (
        RealtimeAudioConfigOutput,
        ("audio", "output"),
        {
            "format": OWNED,
            "speed": {"speed": 1.5},
            "voice": {"voice": "cedar"},
        },
    ),
    (
        NoiseReduction,
        ("audio", "input", "noise_reduction"),
        {
            "type": {"noise_reduction": "near_field"},
            "strength": {
                "noise_reduction": "near_field",
                "extra": {"audio": {"input": {"noise_reduction": {"strength": 0.7}}}},
            },
        },
    ),
    (
        AudioTranscription,
        ("audio", "input", "transcription"),
        {
            "model": {"transcription_model": "gpt-realtime-whisper"},
            "language": {"transcription_language": "de"},
            **{
                field: {"extra": {"audio": {"input": {"transcription": {field: value}}}}}
                for field, value in [
                    ("delay", "low"),
                    ("keywords", ["Twilio"]),
                    ("languages", ["en", "es"]),
                    ("prompt", "Expect names."),
                ]
            },
        },
    ),
    (
        ServerVad,
        ("audio", "input", "turn_detection"),
        {
            "type": {"turn_detection": "server_vad"},
            "create_response": {"create_response": False},
            "interrupt_response": {"interrupt_response": False},
            "idle_timeout_ms": {"idle_timeout_ms": 10000},
            "prefix_padding_ms": {"prefix_padding_ms": 300},
            "silence_duration_ms": {"silence_duration_ms": 500},
            "threshold": {"threshold": 0.5},
        },
    ),
    (
        SemanticVad,
        ("audio", "input", "turn_detection"),
        {
            "type": {"turn_detection": "semantic_vad"},
            "create_response": {"turn_detection": "semantic_vad", "create_response": False},
            "interrupt_response": {"turn_detection": "semantic_vad", "interrupt_response": False},
            "eagerness": {"turn_detection": "semantic_vad", "eagerness": "high"},
        },
    ),
]


@pytest.mark.parametrize(
    ("model", "samples"),
    [(model, samples) for model, _, samples in GA_WALK],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_the_walk_covers_every_field_of_the_ga_model(
    model: type[BaseModel], samples: dict[str, Any]
) -> None:
    """A field a new ``openai`` release adds fails here until it is given a sample."""
    assert set(samples) == set(model.model_fields)


def _at(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        node = getattr(node, key)
    return node


@pytest.mark.parametrize(
    ("model", "path", "field", "kwargs"),
    [
        pytest.param(model, path, field, kwargs, id=f"{model.__name__}.{field}")
        for model, path, samples in GA_WALK
        for field, kwargs in samples.items()
    ],
)
def test_every_ga_field_is_settable(
    model: type[BaseModel], path: tuple[str, ...], field: str, kwargs: Any
) -> None:
    config = SessionConfig() if kwargs == OWNED else SessionConfig(**kwargs)
    _, event_model = rendered(config)
    node = _at(event_model.session, path)
    assert isinstance(node, model)
    assert field in node.model_fields_set and getattr(node, field) is not None


# ------------------------------------------------------------------------------------ beta

#: Beta session fields: ``OWNED``, the keyword arguments that set them, or ``None`` for a
#: field a phone bridge has no use for in ``session.update`` (set through ``extra``).
BETA_WALK: dict[str, Any] = {
    "input_audio_format": OWNED,
    "output_audio_format": OWNED,
    "modalities": OWNED,
    "turn_detection": {"turn_detection": "semantic_vad"},
    "input_audio_transcription": {"transcription_model": "whisper-1"},
    "input_audio_noise_reduction": {"noise_reduction": "far_field"},
    "instructions": {"instructions": "Be brief."},
    "voice": {"voice": "alloy"},
    "speed": {"speed": 0.75},
    "max_response_output_tokens": {"max_output_tokens": "inf"},
    "tools": {"tools": [SchemaOnly()]},
    "tool_choice": {"tools": [WEATHER], "tool_choice": "required"},
    "tracing": {"tracing": TRACING},
    "model": {"extra": {"model": "gpt-4o-realtime-preview"}},
    "temperature": {"extra": {"temperature": 0.8}},
    "client_secret": {"extra": {"client_secret": {"expires_after": {"anchor": "created_at"}}}},
}


def test_the_beta_walk_covers_every_field_of_the_beta_session() -> None:
    assert set(BETA_WALK) == set(BetaSession.model_fields)


@pytest.mark.parametrize(("field", "kwargs"), list(BETA_WALK.items()), ids=list(BETA_WALK))
def test_every_beta_field_is_settable(field: str, kwargs: Any) -> None:
    config = SessionConfig() if kwargs == OWNED else SessionConfig(**kwargs)
    _event, model = rendered(config, Dialect.BETA)
    assert field in model.session.model_fields_set
    assert getattr(model.session, field) is not None


def test_beta_renders_its_own_names() -> None:
    config = SessionConfig(
        tools=[WEATHER],
        tool_choice="auto",
        max_output_tokens=500,
        speed=1.1,
        noise_reduction="near_field",
        tracing="auto",
        extra={"temperature": 0.7},
    )
    event, _ = rendered(config, Dialect.BETA)
    session = event["session"]
    assert session["tools"] == [WEATHER]
    assert session["tool_choice"] == "auto"
    assert session["max_response_output_tokens"] == 500
    assert session["speed"] == 1.1
    assert session["input_audio_noise_reduction"] == {"type": "near_field"}
    assert session["tracing"] == "auto"
    assert session["temperature"] == 0.7
    assert "max_output_tokens" not in session and "audio" not in session


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"truncation": "auto"}, "truncation has no beta session field"),
        ({"prompt": {"id": "p"}}, "prompt has no beta session field"),
        ({"reasoning_effort": "low"}, "reasoning_effort has no beta session field"),
        ({"parallel_tool_calls": True}, "parallel_tool_calls has no beta session field"),
        ({"idle_timeout_ms": 5000}, "idle_timeout_ms has no beta session field"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}},
            "tool_choice",
        ),
        ({"tools": [MCP]}, r"tools\[0\]: beta sessions only take function tools"),
    ],
)
def test_beta_refuses_what_it_has_no_field_for(kwargs: dict[str, Any], message: str) -> None:
    config = SessionConfig(**kwargs)
    rendered(config)  # fine for GA
    with pytest.raises(ValueError, match=message):
        render_session_update(config, dialect=Dialect.BETA)
    with pytest.raises(ValueError, match=message):
        OpenAIRealtimeCodec(dialect=Dialect.BETA).session_update(config)


def test_mapping_type_is_accepted_for_extra() -> None:
    from types import MappingProxyType

    config = SessionConfig(extra=MappingProxyType({"model": "gpt-realtime-2"}))
    assert isinstance(config.extra, Mapping) and config.extra == {"model": "gpt-realtime-2"}

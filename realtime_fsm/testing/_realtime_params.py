"""Which parameters the fake Realtime server accepts in ``session.update`` and
``response.create``, and the real server's errors for the others.

Why it exists: the real server refuses a ``session.update`` (the whole event, nothing applied)
when any key in it, however deeply nested, is not a parameter it knows: ``error``
``unknown_parameter`` naming the full path (``session.audio.output.rate``).  A simulator that
accepts what the real one refuses lets a bridge ship a typo that leaves every call on the
server's defaults.  The accepted keys are those of the ``openai`` package's request types
(3.63.0): GA ``RealtimeSessionCreateRequestParam`` / ``RealtimeResponseCreateParamsParam``,
beta ``session_update_event_param.Session`` / ``response_create_event_param.Response``;
``tests/test_simulator_sdk.py`` compares these tables with those types, so they cannot drift.

A table maps a key to ``None`` (any value: the handlers check values they use) or to the table
of the object it holds (checked when the value is an object; ``"auto"`` or ``null`` pass to the
handler).  Where the types have a union of objects (audio formats, turn detection, tool choice)
the table holds the union of their keys; the handlers then check the keys per variant
(``audio/pcmu`` takes no ``rate``, ``semantic_vad`` no ``idle_timeout_ms``).  ``tools`` entries
are not checked here: their shapes are many (functions, MCP servers) and a bridge's tools are
checked by its own code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._conversation import ProtocolError

Schema = Mapping[str, "Schema | None"]

_GA_FORMAT: Schema = {"type": None, "rate": None}
_VOICE_ID: Schema = {"id": None}
_TOOL_CHOICE: Schema = {"type": None, "name": None, "server_label": None}
_PROMPT: Schema = {"id": None, "variables": None, "version": None}
_REASONING: Schema = {"effort": None}
_TRACING: Schema = {"group_id": None, "metadata": None, "workflow_name": None}
#: Keys of GA ``ServerVad`` and ``SemanticVad`` together (checked per type by the session).
GA_TURN_DETECTION: Schema = {
    "type": None,
    "create_response": None,
    "interrupt_response": None,
    "idle_timeout_ms": None,
    "prefix_padding_ms": None,
    "silence_duration_ms": None,
    "threshold": None,
    "eagerness": None,
}
#: Beta ``SessionTurnDetection``: no ``idle_timeout_ms`` (a GA-only setting).
BETA_TURN_DETECTION: Schema = {k: None for k in GA_TURN_DETECTION if k != "idle_timeout_ms"}

GA_SESSION: Schema = {
    "type": None,
    "model": None,
    "instructions": None,
    "output_modalities": None,
    "max_output_tokens": None,
    "tools": None,
    "tool_choice": _TOOL_CHOICE,
    "tracing": _TRACING,
    "truncation": {
        "type": None,
        "retention_ratio": None,
        "token_limits": {"post_instructions": None},
    },
    "prompt": _PROMPT,
    "include": None,
    "parallel_tool_calls": None,
    "reasoning": _REASONING,
    "audio": {
        "input": {
            "format": _GA_FORMAT,
            "noise_reduction": {"type": None, "strength": None},
            "transcription": {
                "model": None,
                "language": None,
                "languages": None,
                "prompt": None,
                "keywords": None,
                "delay": None,
            },
            "turn_detection": GA_TURN_DETECTION,
        },
        "output": {"format": _GA_FORMAT, "speed": None, "voice": _VOICE_ID},
    },
}

GA_RESPONSE: Schema = {
    "conversation": None,
    "input": None,
    "instructions": None,
    "metadata": None,
    "output_modalities": None,
    "max_output_tokens": None,
    "tools": None,
    "tool_choice": _TOOL_CHOICE,
    "prompt": _PROMPT,
    "parallel_tool_calls": None,
    "reasoning": _REASONING,
    "audio": {"output": {"format": _GA_FORMAT, "voice": _VOICE_ID}},
}

BETA_SESSION: Schema = {
    "model": None,
    "instructions": None,
    "modalities": None,
    "voice": None,
    "input_audio_format": None,
    "output_audio_format": None,
    "input_audio_transcription": {"model": None, "language": None, "prompt": None},
    "input_audio_noise_reduction": {"type": None},
    "turn_detection": BETA_TURN_DETECTION,
    "tools": None,
    "tool_choice": None,
    "temperature": None,
    "max_response_output_tokens": None,
    "speed": None,
    "tracing": _TRACING,
    "client_secret": {"expires_after": {"anchor": None, "seconds": None}},
}

BETA_RESPONSE: Schema = {
    "conversation": None,
    "input": None,
    "instructions": None,
    "metadata": None,
    "modalities": None,
    "voice": None,
    "output_audio_format": None,
    "temperature": None,
    "max_response_output_tokens": None,
    "tools": None,
    "tool_choice": None,
}

#: ``max_output_tokens``: "an integer between 1 and 4096 ... or ``inf``" (GA and beta types).
MAX_OUTPUT_TOKENS = 4096


def check_keys(raw: Mapping[str, Any], schema: Schema, prefix: str) -> None:
    """``unknown_parameter`` for the first key of ``raw`` (at any depth) ``schema`` lacks."""
    for key, value in raw.items():
        path = f"{prefix}.{key}"
        if key not in schema:
            raise unknown_parameter(path)
        sub = schema[key]
        if sub is not None and isinstance(value, Mapping):
            check_keys(value, sub, path)


def unknown_parameter(path: str) -> ProtocolError:
    return ProtocolError("unknown_parameter", f"Unknown parameter: '{path}'.", path)


def check_max_output_tokens(value: Any, param: str) -> int | str:
    """``max_output_tokens`` as the types allow it (1..4096 or ``"inf"``), else the error."""
    if value == "inf":
        return "inf"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(
            "invalid_type",
            f"Invalid type for '{param}': expected an integer or 'inf', but got "
            f"{type(value).__name__} instead.",
            param,
        )
    if value < 1:
        raise ProtocolError(
            "integer_below_min_value",
            f"Invalid '{param}': integer below minimum value. Expected a value >= 1, but got "
            f"{value} instead.",
            param,
        )
    if value > MAX_OUTPUT_TOKENS:
        raise ProtocolError(
            "integer_above_max_value",
            f"Invalid '{param}': integer above maximum value. Expected a value <= "
            f"{MAX_OUTPUT_TOKENS}, but got {value} instead.",
            param,
        )
    return value


def check_ms(value: Any, param: str) -> int:
    """A non-negative integer number of milliseconds (VAD durations)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(
            "invalid_type",
            f"Invalid type for '{param}': expected an integer, but got {type(value).__name__} "
            "instead.",
            param,
        )
    if value < 0:
        raise ProtocolError(
            "integer_below_min_value",
            f"Invalid '{param}': integer below minimum value. Expected a value >= 0, but got "
            f"{value} instead.",
            param,
        )
    return value


def check_threshold(value: Any, param: str) -> float:
    """The VAD ``threshold``: "Activation threshold for VAD (0.0 to 1.0)"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(
            "invalid_type",
            f"Invalid type for '{param}': expected a decimal, but got {type(value).__name__} "
            "instead.",
            param,
        )
    if value < 0:
        raise ProtocolError(
            "decimal_below_min_value",
            f"Invalid '{param}': decimal below minimum value. Expected a value >= 0, but got "
            f"{value} instead.",
            param,
        )
    if value > 1:
        raise ProtocolError(
            "decimal_above_max_value",
            f"Invalid '{param}': decimal above maximum value. Expected a value <= 1, but got "
            f"{value} instead.",
            param,
        )
    return float(value)

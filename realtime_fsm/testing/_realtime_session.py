"""The fake Realtime server's session state and the parsing of ``session.update`` and
``response.create`` parameters, with the real server's error messages."""

from __future__ import annotations

import time
from typing import Any

import attrs

from ._conversation import JSON
from ._conversation import ProtocolError as _ProtocolError
from ._realtime_types import Api

# --- internal state -----------------------------------------------------------------------------


_GA_FORMAT_TYPES = {"audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw", "audio/pcm": "pcm16"}
_BETA_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")
_SERVER_VAD_DEFAULTS: JSON = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
_SEMANTIC_VAD_DEFAULTS: JSON = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
_EAGERNESS_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 300}
_BETA_ONLY_SESSION_KEYS = frozenset(
    {
        "input_audio_format",
        "output_audio_format",
        "turn_detection",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "voice",
        "modalities",
        "max_response_output_tokens",
        "temperature",
    }
)
_GA_ONLY_SESSION_KEYS = frozenset(
    {"type", "audio", "output_modalities", "max_output_tokens", "include", "truncation", "prompt"}
)
_BETA_ONLY_RESPONSE_KEYS = frozenset(
    {"modalities", "voice", "output_audio_format", "max_response_output_tokens", "temperature"}
)
_GA_ONLY_RESPONSE_KEYS = frozenset({"output_modalities", "audio", "max_output_tokens"})


@attrs.define
class _Session:
    id: str
    model: str
    api: Api
    instructions: str = ""
    voice: str = "alloy"
    output_modalities: list[str] = attrs.field(factory=lambda: ["audio"])
    input_format: str = "pcm16"
    output_format: str = "pcm16"
    turn_detection: JSON | None = attrs.field(factory=lambda: dict(_SERVER_VAD_DEFAULTS))
    transcription: JSON | None = None
    noise_reduction: JSON | None = None
    max_output_tokens: int | str = "inf"
    tools: list[Any] = attrs.field(factory=list)
    tool_choice: Any = "auto"
    temperature: float = 0.8
    speed: float = 1.0
    extra: JSON = attrs.field(factory=dict)
    expires_at: int = attrs.field(factory=lambda: int(time.time()) + 3600)

    def render(self) -> JSON:
        if self.api == "beta":
            return {
                "id": self.id,
                "object": "realtime.session",
                "model": self.model,
                "expires_at": self.expires_at,
                "modalities": list(self.output_modalities),
                "instructions": self.instructions,
                "voice": self.voice,
                "input_audio_format": self.input_format,
                "output_audio_format": self.output_format,
                "input_audio_transcription": self.transcription,
                "input_audio_noise_reduction": self.noise_reduction,
                "turn_detection": dict(self.turn_detection) if self.turn_detection else None,
                "tools": list(self.tools),
                "tool_choice": self.tool_choice,
                "temperature": self.temperature,
                "max_response_output_tokens": self.max_output_tokens,
                "speed": self.speed,
            }
        session: JSON = {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": self.model,
            "expires_at": self.expires_at,
            "output_modalities": list(self.output_modalities),
            "instructions": self.instructions,
            "tools": list(self.tools),
            "tool_choice": self.tool_choice,
            "max_output_tokens": self.max_output_tokens,
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": None,
            "audio": {
                "input": {
                    "format": _ga_format(self.input_format),
                    "transcription": self.transcription,
                    "noise_reduction": self.noise_reduction,
                    "turn_detection": dict(self.turn_detection) if self.turn_detection else None,
                },
                "output": {
                    "format": _ga_format(self.output_format),
                    "voice": self.voice,
                    "speed": self.speed,
                },
            },
        }
        session.update(self.extra)
        return session

    @property
    def vad_silence_ms(self) -> int:
        td = self.turn_detection or {}
        if td.get("type") == "semantic_vad":
            return _EAGERNESS_SILENCE_MS.get(str(td.get("eagerness")), 800)
        return int(td.get("silence_duration_ms") or 500)

    @property
    def vad_prefix_ms(self) -> int:
        td = self.turn_detection or {}
        return int(td.get("prefix_padding_ms") or (300 if td.get("type") == "server_vad" else 0))


def _ga_format(canonical: str) -> JSON:
    if canonical == "pcm16":
        return {"type": "audio/pcm", "rate": 24000}
    return {"type": "audio/pcmu" if canonical == "g711_ulaw" else "audio/pcma"}


def _parse_ga_format(value: Any, param: str) -> str:
    if not isinstance(value, dict):
        raise _ProtocolError(
            "invalid_type", f"Invalid type for '{param}': expected an object.", param
        )
    ftype = value.get("type")
    if ftype not in _GA_FORMAT_TYPES:
        raise _ProtocolError(
            "invalid_value",
            f"Invalid value: '{ftype}'. Supported values are: 'audio/pcm', 'audio/pcmu', and "
            "'audio/pcma'.",
            f"{param}.type",
        )
    if ftype == "audio/pcm" and value.get("rate", 24000) != 24000:
        raise _ProtocolError(
            "invalid_value", "Invalid value: only a rate of 24000 is supported.", f"{param}.rate"
        )
    return _GA_FORMAT_TYPES[ftype]


def _parse_beta_format(value: Any, param: str) -> str:
    if value not in _BETA_FORMATS:
        raise _ProtocolError(
            "invalid_value",
            f"Invalid value: '{value}'. Supported values are: 'pcm16', 'g711_ulaw', and "
            "'g711_alaw'.",
            param,
        )
    return str(value)


def _parse_turn_detection(value: Any, param: str, api: Api) -> JSON | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _ProtocolError(
            "invalid_type", f"Invalid type for '{param}': expected an object.", param
        )
    if "type" not in value and api == "ga":
        raise _ProtocolError(
            "missing_required_parameter",
            f"Missing required parameter: '{param}.type'.",
            f"{param}.type",
        )
    ttype = value.get("type", "server_vad")
    if ttype == "server_vad":
        result = dict(_SERVER_VAD_DEFAULTS)
    elif ttype == "semantic_vad":
        result = dict(_SEMANTIC_VAD_DEFAULTS)
    else:
        raise _ProtocolError(
            "invalid_value",
            f"Invalid value: '{ttype}'. Supported values are: 'server_vad' and 'semantic_vad'.",
            f"{param}.type",
        )
    for key, item in value.items():
        if key not in result:
            raise _ProtocolError(
                "unknown_parameter", f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}"
            )
        result[key] = item
    return result


def _validate_metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    param = "response.metadata"
    if not isinstance(value, dict):
        raise _ProtocolError(
            "invalid_type", f"Invalid type for '{param}': expected an object.", param
        )
    if len(value) > 16:
        raise _ProtocolError(
            "object_above_max_properties",
            f"Invalid '{param}': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(value)} properties instead.",
            param,
        )
    for key, item in value.items():
        if not isinstance(item, str):
            raise _ProtocolError(
                "invalid_type", f"Invalid type for '{param}.{key}': expected a string.", param
            )
        if len(key) > 64 or len(item) > 512:
            raise _ProtocolError(
                "string_above_max_length",
                f"Invalid '{param}': keys may be at most 64 and values at most 512 characters.",
                param,
            )
    return dict(value)

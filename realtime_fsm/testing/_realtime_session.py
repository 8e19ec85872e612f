"""The fake Realtime server's session state and the parsing of ``session.update`` and
``response.create`` parameters, with the real server's error messages.

A ``session.update`` is applied whole or not at all, as on the real server: every check runs
on a copy, and the first failure becomes the ``error`` event while the session keeps what it
had.  The checks: unknown keys at any depth (:mod:`._realtime_params`), value ranges, the
audio formats, the turn detection per type, and the voice lock: "Voice cannot be changed
during the session once the model has responded with audio at least once" (GA
``RealtimeAudioConfigOutput.voice``), refused with the real ``cannot_update_voice`` error.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

from ._conversation import JSON
from ._conversation import ProtocolError as _ProtocolError
from ._realtime_params import (
    BETA_SESSION,
    GA_SESSION,
    check_keys,
    check_max_output_tokens,
    check_ms,
    check_threshold,
    unknown_parameter,
)
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
#: The real server's answer to a voice change after assistant audio (openai-python#2607:
#: ``code='cannot_update_voice'``, ``type='invalid_request_error'``, ``param=None``).
CANNOT_UPDATE_VOICE = "Cannot update a conversation's voice if assistant audio is present."
#: Reasoning-capable models (reference 10): the ``gpt-realtime-2`` family.
REASONING_MODEL_PREFIX = "gpt-realtime-2"
#: Transcription models that send only ``...input_audio_transcription.completed``; the others
#: (``gpt-4o-transcribe``, ``gpt-4o-mini-transcribe``, ``gpt-transcribe``,
#: ``gpt-realtime-whisper``...) stream ``...input_audio_transcription.delta`` first.
NON_STREAMING_TRANSCRIPTION = frozenset({"whisper-1"})
#: Transcription models billed by audio duration (``usage.type: "duration"``); the others
#: report ``usage.type: "tokens"``.
DURATION_BILLED_TRANSCRIPTION = frozenset({"whisper-1", "gpt-realtime-whisper"})


@attrs.define
class _Session:
    id: str
    model: str
    api: Api
    instructions: str = ""
    voice: Any = "alloy"
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
    #: GA ``reasoning`` (``{"effort": ...}``) and ``parallel_tool_calls``; shown once set.
    reasoning: JSON | None = None
    parallel_tool_calls: bool | None = None
    extra: JSON = attrs.field(factory=dict)
    expires_at: int = attrs.field(factory=lambda: int(time.time()) + 3600)

    def __attrs_post_init__(self) -> None:
        if self.api == "beta" and self.turn_detection is not None:
            self.turn_detection.pop("idle_timeout_ms", None)  # a GA-only setting

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
        if self.reasoning is not None:
            session["reasoning"] = dict(self.reasoning)
        if self.parallel_tool_calls is not None:
            session["parallel_tool_calls"] = self.parallel_tool_calls
        session.update(self.extra)
        return session

    @property
    def vad_silence_ms(self) -> int:
        td = self.turn_detection or {}
        if td.get("type") == "semantic_vad":
            return _EAGERNESS_SILENCE_MS.get(str(td.get("eagerness")), 800)
        value = td.get("silence_duration_ms")
        return 500 if value is None else int(value)

    @property
    def vad_prefix_ms(self) -> int:
        td = self.turn_detection or {}
        if td.get("type") != "server_vad":
            return 0
        value = td.get("prefix_padding_ms")
        return 300 if value is None else int(value)

    @property
    def idle_timeout_ms(self) -> int | None:
        """``idle_timeout_ms`` of ``server_vad`` ("only supported for ``server_vad``")."""
        td = self.turn_detection or {}
        value = td.get("idle_timeout_ms") if td.get("type") == "server_vad" else None
        return None if value is None else int(value)

    def speech_level(self, base: float) -> float:
        """The RMS level above which a 10 ms frame is speech, for this session's ``threshold``.

        The real ``threshold`` is a probability ("A higher threshold will require louder audio
        to activate the model"); the simulator's VAD measures energy, so the threshold moves
        the energy level on a log scale: 0.5 (the default) gives ``base``
        (``FakeRealtimeConfig.vad_energy_threshold``), 1.0 full scale (nothing is speech),
        0.0 ``base`` squared.  With the default base 0.02: 0.7 -> 0.096, 0.8 -> 0.21 (the
        fake caller's speech measures about 0.2)."""
        td = self.turn_detection or {}
        threshold = td.get("threshold") if td.get("type") == "server_vad" else None
        if threshold is None or base >= 1.0:
            return base
        return float(base ** (2.0 * (1.0 - float(threshold))))

    @property
    def reasoning_effort(self) -> str | None:
        return None if self.reasoning is None else self.reasoning.get("effort")

    @property
    def transcription_streams(self) -> bool:
        """Whether the input transcription model streams deltas before ``completed``."""
        model = (self.transcription or {}).get("model")
        return isinstance(model, str) and model not in NON_STREAMING_TRANSCRIPTION

    @property
    def transcription_billed_by_duration(self) -> bool:
        model = (self.transcription or {}).get("model")
        return not isinstance(model, str) or model in DURATION_BILLED_TRANSCRIPTION


def _ga_format(canonical: str) -> JSON:
    if canonical == "pcm16":
        return {"type": "audio/pcm", "rate": 24000}
    return {"type": "audio/pcmu" if canonical == "g711_ulaw" else "audio/pcma"}


# --- session.update -------------------------------------------------------------------------


def apply_update(new: _Session, raw: JSON, *, voice_locked: bool) -> None:
    """Apply the ``session`` of a ``session.update`` to ``new`` (a copy of the session), or
    raise the real server's error.  ``voice_locked``: assistant audio has been sent."""
    if new.api == "ga":
        _apply_ga(new, raw, voice_locked)
    else:
        _apply_beta(new, raw, voice_locked)


def _check_voice(new: _Session, voice: Any, voice_locked: bool) -> None:
    if voice_locked and voice != new.voice:
        raise _ProtocolError("cannot_update_voice", CANNOT_UPDATE_VOICE)
    new.voice = voice


def _apply_ga(new: _Session, raw: JSON, voice_locked: bool) -> None:
    check_keys(raw, GA_SESSION, "session")
    if "type" not in raw:
        raise _ProtocolError(
            "missing_required_parameter",
            "Missing required parameter: 'session.type'.",
            "session.type",
        )
    if raw["type"] != "realtime":
        raise _ProtocolError(
            "invalid_value",
            f"Invalid value: '{raw['type']}'. This fake server only simulates 'realtime' sessions.",
            "session.type",
        )
    audio = raw.get("audio") or {}
    audio_in = audio.get("input") or {}
    audio_out = audio.get("output") or {}
    if "format" in audio_in:
        new.input_format = _parse_ga_format(audio_in["format"], "session.audio.input.format")
    if "turn_detection" in audio_in:
        new.turn_detection = _parse_turn_detection(
            audio_in["turn_detection"], "session.audio.input.turn_detection", "ga"
        )
    if "transcription" in audio_in:
        new.transcription = audio_in["transcription"]
    if "noise_reduction" in audio_in:
        new.noise_reduction = audio_in["noise_reduction"]
    if "format" in audio_out:
        new.output_format = _parse_ga_format(audio_out["format"], "session.audio.output.format")
    if "voice" in audio_out:
        _check_voice(new, audio_out["voice"], voice_locked)
    if "speed" in audio_out:
        new.speed = audio_out["speed"]
    if "output_modalities" in raw:
        new.output_modalities = list(raw["output_modalities"])
    if "max_output_tokens" in raw:
        new.max_output_tokens = check_max_output_tokens(
            raw["max_output_tokens"], "session.max_output_tokens"
        )
    if "reasoning" in raw:
        new.reasoning = raw["reasoning"]
    if "parallel_tool_calls" in raw:
        new.parallel_tool_calls = raw["parallel_tool_calls"]
    _apply_common(new, raw)
    for key in ("tracing", "truncation", "prompt", "include"):
        if key in raw:
            new.extra = {**new.extra, key: raw[key]}


def _apply_beta(new: _Session, raw: JSON, voice_locked: bool) -> None:
    check_keys(raw, BETA_SESSION, "session")
    if "input_audio_format" in raw:
        new.input_format = _parse_beta_format(
            raw["input_audio_format"], "session.input_audio_format"
        )
    if "output_audio_format" in raw:
        new.output_format = _parse_beta_format(
            raw["output_audio_format"], "session.output_audio_format"
        )
    if "turn_detection" in raw:
        new.turn_detection = _parse_turn_detection(
            raw["turn_detection"], "session.turn_detection", "beta"
        )
    if "input_audio_transcription" in raw:
        new.transcription = raw["input_audio_transcription"]
    if "input_audio_noise_reduction" in raw:
        new.noise_reduction = raw["input_audio_noise_reduction"]
    if "voice" in raw:
        _check_voice(new, raw["voice"], voice_locked)
    if "modalities" in raw:
        new.output_modalities = list(raw["modalities"])
    if "max_response_output_tokens" in raw:
        new.max_output_tokens = check_max_output_tokens(
            raw["max_response_output_tokens"], "session.max_response_output_tokens"
        )
    if "temperature" in raw:
        new.temperature = raw["temperature"]
    if "speed" in raw:
        new.speed = raw["speed"]
    _apply_common(new, raw)


def _apply_common(new: _Session, raw: JSON) -> None:
    if "instructions" in raw:
        new.instructions = str(raw["instructions"])
    if "tools" in raw:
        new.tools = list(raw["tools"] or [])
    if "tool_choice" in raw:
        new.tool_choice = raw["tool_choice"]


# --- values -----------------------------------------------------------------------------------


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
    if ftype != "audio/pcm" and "rate" in value:
        # ``AudioPCMU`` / ``AudioPCMA`` have only ``type`` (reference 6).
        raise unknown_parameter(f"{param}.rate")
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
        if api == "beta":
            del result["idle_timeout_ms"]
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
            raise unknown_parameter(f"{param}.{key}")
        if item is None:
            continue
        if key in ("prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"):
            check_ms(item, f"{param}.{key}")
        elif key == "threshold":
            check_threshold(item, f"{param}.{key}")
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

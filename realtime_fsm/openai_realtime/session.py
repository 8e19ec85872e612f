"""The session a telephony bridge asks for: :class:`SessionConfig` and its ``session.update``.

Kept apart from :mod:`~realtime_fsm.openai_realtime.rendering` because it is configuration, not
a per-event translation: the options a bridge is built with, validated when it is built, and
:func:`render_session_update`, the one event that carries them (GA nested shape or beta flat
shape, the two generations disagree most here).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import attrs

from .. import events as ev
from . import models
from . import session_fields as sf
from .messages import Dialect
from .rendering import _modalities
from .session_fields import NoiseReduction, ReasoningEffort

#: Transcription model used when :attr:`SessionConfig.transcription_model` is ``None``
#: (:mod:`~.models`: GA's is current; beta lists no current one).
DEFAULT_TRANSCRIPTION_MODEL: Final[Mapping[Dialect, str]] = {
    Dialect.GA: models.DEFAULT_GA_TRANSCRIPTION_MODEL,
    Dialect.BETA: models.DEFAULT_BETA_TRANSCRIPTION_MODEL,
}


TurnDetection = Literal["server_vad", "semantic_vad"]
Eagerness = Literal["low", "medium", "high", "auto"]

_opt_str_field = attrs.validators.optional(attrs.validators.instance_of(str))
_bool_field = attrs.validators.instance_of(bool)


def _opt_choice(*choices: str) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and value not in choices:
            raise ValueError(f"{attribute.name} must be one of {choices} or None, got {value!r}")

    return check


def _opt_ms(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if type(value) is not int or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative int or None, got {value!r}")


def _opt_threshold(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be a number in [0, 1] or None, got {value!r}")


@attrs.frozen
class SessionConfig:
    """What a telephony bridge asks of the session in ``session.update``.

    Audio is ``audio/pcmu`` (beta ``g711_ulaw``) both ways, fixed: Twilio speaks 8 kHz mu-law,
    and passing its payloads straight through is the point.  Input transcription is on by
    default because barge-in logs the caller's words.  ``create_response`` and
    ``interrupt_response`` are only sent with a turn detection; they decide who creates and who
    cancels, so the lifecycle must learn the values the server *applied*: feed it the
    ``SessionConfigured`` parsed from ``session.updated``, not :meth:`expected_session`.

    The VAD tuning knobs are ``None`` (server default) unless set, and each belongs to one kind
    of turn detection; setting one for the other kind is refused here rather than by the server
    mid-call.

    The fields after ``eagerness`` are the other settings a voice app commonly needs; ``None``
    (or no tools) means "not sent", so the server's default or the session's current value
    holds.  Any other field of the GA session goes in :attr:`extra`.  A field the beta API
    lacks (see :data:`~.session_fields.GA_ONLY`) makes beta rendering raise ``ValueError``
    rather than vanish from the update."""

    instructions: str | None = attrs.field(default=None, validator=_opt_str_field)
    voice: str | None = attrs.field(default=None, validator=_opt_str_field)
    turn_detection: TurnDetection | None = attrs.field(
        default="server_vad",
        validator=_opt_choice("server_vad", "semantic_vad"),
    )
    create_response: bool = attrs.field(default=True, validator=_bool_field)
    interrupt_response: bool = attrs.field(default=True, validator=_bool_field)
    input_transcription: bool = attrs.field(default=True, validator=_bool_field)
    #: ``None``: :data:`DEFAULT_TRANSCRIPTION_MODEL` for the dialect rendered.
    transcription_model: str | None = attrs.field(default=None, validator=_opt_str_field)
    transcription_language: str | None = attrs.field(default=None, validator=_opt_str_field)
    #: ``server_vad`` only.
    silence_duration_ms: int | None = attrs.field(default=None, validator=_opt_ms)
    #: ``server_vad`` only.
    prefix_padding_ms: int | None = attrs.field(default=None, validator=_opt_ms)
    #: ``server_vad`` only.
    threshold: float | None = attrs.field(default=None, validator=_opt_threshold)
    #: ``semantic_vad`` only.
    eagerness: Eagerness | None = attrs.field(
        default=None,
        validator=_opt_choice("low", "medium", "high", "auto"),
    )
    #: ``server_vad`` only; GA only: after this long without caller speech (counted from the
    #: end of the reply's playback) the server creates a response on its own.
    idle_timeout_ms: int | None = attrs.field(default=None, validator=_opt_ms)
    #: Tools the model may call: mappings in the API's shape (``{"type": "function", "name",
    #: "description", "parameters"}``, or GA ``mcp``) or objects with a ``schema()`` method
    #: returning one (:class:`realtime_fsm.tools.Tool`).  Stored as plain dicts.  Empty: not sent.
    tools: tuple[Mapping[str, Any], ...] = attrs.field(
        default=(), converter=sf.to_tools, validator=sf.check_tools, hash=False
    )
    #: ``"auto"``, ``"none"``, ``"required"``, ``{"type": "function", "name": ...}`` (a name in
    #: :attr:`tools`) or GA ``{"type": "mcp", "server_label": ...}``.
    tool_choice: str | Mapping[str, Any] | None = attrs.field(
        default=None,
        converter=sf.tool_choice_json,
        validator=sf.check_tool_choice,
        hash=False,
    )
    #: Per response, tool calls included: 1..4096 or ``"inf"`` (beta
    #: ``max_response_output_tokens``).
    max_output_tokens: int | Literal["inf"] | None = attrs.field(
        default=None, validator=sf.check_max_output_tokens
    )
    #: Spoken speed, 0.25..1.5 (GA ``audio.output.speed``, beta ``speed``); a post-processing
    #: step, and only changeable between turns.
    speed: float | None = attrs.field(default=None, validator=sf.check_speed)
    #: Input noise reduction (GA ``audio.input.noise_reduction.type``, beta
    #: ``input_audio_noise_reduction.type``); its ``strength`` can go in :attr:`extra`.
    noise_reduction: NoiseReduction | None = attrs.field(
        default=None, validator=_opt_choice("near_field", "far_field")
    )
    #: GA only: ``"auto"``, ``"disabled"`` or ``{"type": "retention_ratio", ...}``.  What to
    #: drop when a long call outgrows the context; ``"disabled"`` makes that an error instead.
    truncation: str | Mapping[str, Any] | None = attrs.field(
        default=None,
        converter=sf.truncation_json,
        validator=sf.check_truncation,
        hash=False,
    )
    #: ``"auto"`` or ``{"workflow_name"?, "group_id"?, "metadata"?}``; fixed once enabled.
    #: To send ``null`` (tracing off) use ``extra={"tracing": None}``.
    tracing: str | Mapping[str, Any] | None = attrs.field(
        default=None, converter=sf.tracing_json, validator=sf.check_tracing, hash=False
    )
    #: GA only: ``{"id", "version"?, "variables"?}``, a saved prompt (deprecated by OpenAI:
    #: saved prompts shut down on 2026-11-30).
    prompt: Mapping[str, Any] | None = attrs.field(
        default=None, converter=sf.prompt_json, validator=sf.check_prompt, hash=False
    )
    #: GA only, reasoning models (``gpt-realtime-2``, ``gpt-realtime-2.1``...):
    #: ``reasoning.effort``.  The server calls :meth:`for_model`, which leaves it out for a
    #: model known not to reason.
    reasoning_effort: ReasoningEffort | None = attrs.field(
        default=None, validator=_opt_choice("minimal", "low", "medium", "high", "xhigh")
    )
    #: GA only, reasoning models: whether one response may carry several function calls
    #: (left out for a model known not to reason, like :attr:`reasoning_effort`).
    parallel_tool_calls: bool | None = attrs.field(default=None, validator=sf.check_opt_bool)
    #: Any other session field, deep-merged last into the rendered ``session`` object (nested
    #: mappings merge, so ``{"audio": {"input": {"noise_reduction": {"strength": 0.5}}}}`` keeps
    #: the rendered ``type``); use the dialect's own names.  Keys the call depends on (audio
    #: formats, ``type``, modalities, turn detection) are refused, see
    #: :data:`~.session_fields.OWNED_PATHS`.
    extra: Mapping[str, Any] = attrs.field(
        factory=dict, converter=sf.to_extra, validator=sf.check_extra, hash=False
    )

    def __attrs_post_init__(self) -> None:
        server_knobs = (self.silence_duration_ms, self.prefix_padding_ms, self.threshold)
        if self.turn_detection != "server_vad" and any(k is not None for k in server_knobs):
            raise ValueError(
                "silence_duration_ms/prefix_padding_ms/threshold need turn_detection='server_vad'"
            )
        if self.turn_detection != "server_vad" and self.idle_timeout_ms is not None:
            raise ValueError("idle_timeout_ms needs turn_detection='server_vad'")
        if self.turn_detection != "semantic_vad" and self.eagerness is not None:
            raise ValueError("eagerness needs turn_detection='semantic_vad'")
        if isinstance(self.tool_choice, Mapping) and self.tool_choice["type"] == "function":
            name = self.tool_choice["name"]
            if name not in sf.function_names(self.tools):
                raise ValueError(f"tool_choice names function {name!r}, which is not in tools")

    def transcription_model_for(self, dialect: Dialect) -> str | None:
        """The input transcription model a session in ``dialect`` is asked for (``None``:
        transcription off)."""
        if not self.input_transcription:
            return None
        return self.transcription_model or DEFAULT_TRANSCRIPTION_MODEL[dialect]

    def for_model(self, model: str | None) -> tuple[SessionConfig, tuple[str, ...]]:
        """This config as sent to a session on ``model``, and the fields left out for it.

        ``reasoning_effort`` and ``parallel_tool_calls`` are left out for a model the SDK lists
        as non-reasoning (:func:`~.models.takes_reasoning`).  Why: the SDK documents both as
        for "reasoning-capable Realtime models such as ``gpt-realtime-2``"; whether the server
        *rejects* them for other models is unverified, and if it does it rejects the whole
        ``session.update``, which ends the call.  Leaving out a setting the model cannot use
        costs nothing; sending it risks every call.  pipecat 1.14 strips ``reasoning`` the
        same way.  A model the table does not know keeps them (it may be a newer reasoning
        model, or an Azure deployment named otherwise).  ``extra`` is never touched: what is
        put there is sent as written."""
        if models.takes_reasoning(model):
            return self, ()
        dropped = tuple(f for f in models.REASONING_ONLY_FIELDS if getattr(self, f) is not None)
        if not dropped:
            return self, ()
        return attrs.evolve(self, reasoning_effort=None, parallel_tool_calls=None), dropped

    def expected_session(self) -> ev.SessionConfigured:
        """What the lifecycle should assume *if the server applies this config as sent*.

        Useful before ``session.updated`` arrives; the parsed ``session.updated`` then wins."""
        if self.turn_detection is None:
            return ev.SessionConfigured(
                turn_detection=None,
                input_audio_format="pcmu",
                output_audio_format="pcmu",
                updated=True,
                reasoning_effort=self.reasoning_effort,
            )
        return ev.SessionConfigured(
            turn_detection=self.turn_detection,
            create_response=self.create_response,
            interrupt_response=self.interrupt_response,
            input_audio_format="pcmu",  # Twilio's: always sent
            output_audio_format="pcmu",
            updated=True,  # the session.updated that answers it
            reasoning_effort=self.reasoning_effort,
        )

    def _turn_detection(self) -> dict[str, Any] | None:
        if self.turn_detection is None:
            return None
        turn: dict[str, Any] = {
            "type": self.turn_detection,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }
        for key in (
            "silence_duration_ms",
            "prefix_padding_ms",
            "threshold",
            "idle_timeout_ms",
            "eagerness",
        ):
            value = getattr(self, key)
            if value is not None:
                turn[key] = value
        return turn

    def _transcription(self, dialect: Dialect) -> dict[str, Any]:
        transcription: dict[str, Any] = {"model": self.transcription_model_for(dialect)}
        if self.transcription_language is not None:
            transcription["language"] = self.transcription_language
        return transcription


def render_session_update(
    config: SessionConfig, *, dialect: Dialect = Dialect.GA, event_id: str | None = None
) -> dict[str, Any]:
    """``session.update`` for a telephony session (GA nested shape, or beta flat shape).

    Turn detection ``None`` is sent as an explicit ``null``: that is how VAD is switched off.
    Transcription off is sent as an *absent* field (the session default is off, and the typed
    client params do not accept ``null`` there).  The other optional settings are absent when
    unset.  :attr:`SessionConfig.extra` is merged in last.  Raises ``ValueError`` for a setting
    ``dialect`` has no field for.  The event is a fresh copy: changing it leaves ``config`` as
    it was."""
    sf.check_dialect(config, dialect)
    key, modalities = _modalities(("audio",), dialect)
    session: dict[str, Any]
    if dialect is Dialect.GA:
        audio_in: dict[str, Any] = {"format": {"type": "audio/pcmu"}}
        if config.noise_reduction is not None:
            audio_in["noise_reduction"] = {"type": config.noise_reduction}
        if config.input_transcription:
            audio_in["transcription"] = config._transcription(dialect)
        audio_in["turn_detection"] = config._turn_detection()
        audio_out: dict[str, Any] = {"format": {"type": "audio/pcmu"}}
        if config.speed is not None:
            audio_out["speed"] = config.speed
        if config.voice is not None:
            audio_out["voice"] = config.voice
        session = {
            "type": "realtime",
            key: modalities,
            "audio": {"input": audio_in, "output": audio_out},
        }
        _put(session, "max_output_tokens", config.max_output_tokens)
        _put(session, "truncation", config.truncation)
        _put(session, "prompt", config.prompt)
        if config.reasoning_effort is not None:
            session["reasoning"] = {"effort": config.reasoning_effort}
        _put(session, "parallel_tool_calls", config.parallel_tool_calls)
    else:
        session = {
            key: modalities,
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_ulaw",
            "turn_detection": config._turn_detection(),
        }
        if config.input_transcription:
            session["input_audio_transcription"] = config._transcription(dialect)
        if config.voice is not None:
            session["voice"] = config.voice
        if config.noise_reduction is not None:
            session["input_audio_noise_reduction"] = {"type": config.noise_reduction}
        _put(session, "speed", config.speed)
        _put(session, "max_response_output_tokens", config.max_output_tokens)
    if config.instructions is not None:
        session["instructions"] = config.instructions
    if config.tools:
        session["tools"] = copy.deepcopy(list(config.tools))
    _put(session, "tool_choice", config.tool_choice)
    _put(session, "tracing", config.tracing)
    sf.deep_merge(session, config.extra)
    event: dict[str, Any] = {"type": "session.update", "session": session}
    if event_id is not None:
        event["event_id"] = event_id
    return event


def _put(session: dict[str, Any], key: str, value: object) -> None:
    """Set ``key`` to a copy of ``value`` unless it is ``None`` (not sent)."""
    if value is not None:
        session[key] = copy.deepcopy(value)

"""Inputs to the response-lifecycle machine.

Every event is a small frozen value object.  Events come from three directions and the class
names say which:

* the application (``RequestResponse``, ``UserText``, ``UserTurnCommitted``),
* the OpenAI Realtime server (``ResponseCreated``, ``AudioDelta``, ``ResponseDone``, ...),
* the telephony side (``PlaybackProgress``), plus the driver's clock (``Tick``) and
  teardown (``ConnectionClosed``).

Fields are validated on construction so that a wrong type fails here, with a clear
``TypeError``/``ValueError``, instead of deep inside a transition.  Adapters are the place that
turns raw JSON into these; the core never sees a dict from the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

_str = attrs.validators.instance_of(str)
_opt_str = attrs.validators.optional(_str)
_bool = attrs.validators.instance_of(bool)


def _non_negative_int(_inst: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int:
        raise TypeError(f"{attribute.name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _frozen_str_map(value: Mapping[str, str] | None) -> Mapping[str, str]:
    """Copy a metadata mapping into a read-only one, so a frozen event is really immutable."""
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise TypeError(f"metadata must be a mapping, got {type(value).__name__}")
    clean: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError("metadata keys and values must be strings")
        clean[key] = item
    return MappingProxyType(clean)


def _str_tuple(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError("output_modalities must be a list or tuple of strings")
    if not all(isinstance(item, str) for item in value):
        raise TypeError("output_modalities must hold strings")
    return tuple(value)


def _non_empty_text(_inst: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")


# ----------------------------------------------------------------------------- application side


@attrs.frozen
class RequestResponse:
    """The application wants the model to speak: a greeting, after a tool output, a nudge.

    Requests with no ``instructions`` are interchangeable (any response reads the whole
    conversation), so the machine coalesces them.  Requests with their own instructions get a
    response each, in order.  ``out_of_band`` requests (``conversation: "none"``) never touch the
    default-conversation slot and are sent at once.
    """

    reason: str = attrs.field(default="app", validator=_str)
    instructions: str | None = attrs.field(default=None, validator=_opt_str)
    metadata: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_str_map)
    out_of_band: bool = attrs.field(default=False, validator=_bool)


@attrs.frozen
class UserText:
    """User words the server has not seen yet: typed chat, an external STT result, DTMF mapped
    to text.  During a response this is a barge-in; the text is held and delivered exactly once,
    after the interrupted response's ``response.done``."""

    text: str = attrs.field(validator=_non_empty_text)
    source: str = attrs.field(default="typed", validator=_str)


@attrs.frozen
class UserTurnCommitted:
    """The server already holds the user's turn (server VAD commit, manual commit).

    No item is needed; a response is requested unless the session's turn detection creates
    responses by itself (``create_response``)."""

    item_id: str | None = attrs.field(default=None, validator=_opt_str)


@attrs.frozen
class SessionConfigured:
    """The effective turn-taking settings, read from ``session.updated``.

    They decide who cancels on barge-in (``interrupt_response``) and who creates the response
    for a committed user turn (``create_response``).  The audio formats are not the core's
    business: a bridge checks them (``pcmu``, ``pcma``, ``pcm``, whatever the dialect calls
    them; ``None`` where the server did not say).  ``updated`` tells an answer to our
    ``session.update`` from ``session.created``, which shows the defaults before it applies.
    ``reasoning_effort`` is the session's ``reasoning.effort`` (reasoning models): how long a
    response may think in silence before it counts as hung; ``None`` where the server did not
    say (the effort assumed so far stands)."""

    turn_detection: str | None = attrs.field(default=None, validator=_opt_str)
    create_response: bool = attrs.field(default=False, validator=_bool)
    interrupt_response: bool = attrs.field(default=False, validator=_bool)
    input_audio_format: str | None = attrs.field(default=None, validator=_opt_str)
    output_audio_format: str | None = attrs.field(default=None, validator=_opt_str)
    updated: bool = attrs.field(default=False, validator=_bool)
    reasoning_effort: str | None = attrs.field(default=None, validator=_opt_str)


# ---------------------------------------------------------------------------------- server side


@attrs.frozen
class SpeechStarted:
    """``input_audio_buffer.speech_started``: the caller started talking (a barge-in)."""

    item_id: str | None = attrs.field(default=None, validator=_opt_str)
    audio_start_ms: int = attrs.field(default=0, validator=_non_negative_int)


@attrs.frozen
class SpeechStopped:
    """``input_audio_buffer.speech_stopped``: informational; server VAD may now create."""

    item_id: str | None = attrs.field(default=None, validator=_opt_str)
    audio_end_ms: int = attrs.field(default=0, validator=_non_negative_int)


@attrs.frozen
class IdleTimeoutTriggered:
    """``input_audio_buffer.timeout_triggered``: the server VAD's ``idle_timeout_ms`` passed
    with no caller speech.  The server commits the silence as a user item (its
    ``input_audio_buffer.committed`` names the same ``item_id``) and creates a response itself,
    whatever ``create_response`` says: "a model response will be generated" (GA docstring)."""

    item_id: str | None = attrs.field(default=None, validator=_opt_str)
    audio_start_ms: int = attrs.field(default=0, validator=_non_negative_int)
    audio_end_ms: int = attrs.field(default=0, validator=_non_negative_int)


@attrs.frozen
class ResponseCreated:
    """``response.created``.

    ``out_of_band`` is true when the response does not write to the default conversation
    (``conversation_id`` null).  ``metadata`` is echoed from our ``response.create`` and is how
    the machine tells its own responses from server-created ones (VAD, idle timeout).
    ``output_modalities`` is empty when the server did not say; the watchdog only skips responses
    that explicitly exclude audio."""

    response_id: str = attrs.field(validator=_non_empty_text)
    out_of_band: bool = attrs.field(default=False, validator=_bool)
    metadata: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_str_map)
    output_modalities: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)


@attrs.frozen
class AudioDelta:
    """One chunk of response audio.  Prefer :meth:`ResponseLifecycle.audio_delta` on the hot
    path; this class exists so that traces and tests can treat audio like any other event."""

    response_id: str = attrs.field(validator=_str)
    item_id: str = attrs.field(validator=_str)
    byte_count: int = attrs.field(validator=_non_negative_int)


@attrs.frozen
class TranscriptDelta:
    """A chunk of the *audio* transcript (``response.output_audio_transcript.delta``).  Text-only
    deltas (``response.output_text.delta``) are not this event: they must never arm the
    no-audio watchdog."""

    response_id: str = attrs.field(validator=_str)
    item_id: str = attrs.field(default="", validator=_str)


@attrs.frozen
class ResponseDone:
    """``response.done``, with its final status (``completed``, ``cancelled``, ``failed``,
    ``incomplete``) and ``status_details.reason`` when there is one."""

    response_id: str = attrs.field(validator=_non_empty_text)
    status: str = attrs.field(default="completed", validator=_str)
    reason: str | None = attrs.field(default=None, validator=_opt_str)
    #: The response's ``usage.input_tokens`` / ``output_tokens``, when the server said: for
    #: observers (spans, metrics); no transition reads them, and they are not compared.
    input_tokens: int | None = attrs.field(default=None, eq=False, kw_only=True)
    output_tokens: int | None = attrs.field(default=None, eq=False, kw_only=True)


@attrs.frozen
class ServerError:
    """An ``error`` event.  ``event_id`` is the *client* event id the server echoes back
    (``error.event_id``), which is how the machine matches a rejection to its request."""

    code: str | None = attrs.field(default=None, validator=_opt_str)
    message: str = attrs.field(default="", validator=_str)
    event_id: str | None = attrs.field(default=None, validator=_opt_str)
    #: ``error.type`` (``invalid_request_error``, ``server_error``...).  Read with ``code`` for
    #: the errors no new session can cure: OpenAI has changed such a code while keeping the
    #: type (livekit-agents matches both for that reason).
    error_type: str | None = attrs.field(default=None, validator=_opt_str)


# -------------------------------------------------------------------------------- telephony side


@attrs.frozen
class PlaybackProgress:
    """How many ms of an assistant audio item the caller has actually heard (from Twilio marks).

    Absolute, not incremental; a smaller value than already known is ignored."""

    item_id: str = attrs.field(validator=_str)
    played_ms: int = attrs.field(validator=_non_negative_int)


# ------------------------------------------------------------------------------- clock, teardown


@attrs.frozen
class Tick:
    """The driver's timer fired (at or after :attr:`ResponseLifecycle.next_deadline`)."""


@attrs.frozen
class ConnectionClosed:
    """Either socket closed: no ``response.done`` will ever arrive again."""

    reason: str = attrs.field(default="closed", validator=_str)


Event = (
    RequestResponse
    | UserText
    | UserTurnCommitted
    | SessionConfigured
    | SpeechStarted
    | SpeechStopped
    | IdleTimeoutTriggered
    | ResponseCreated
    | AudioDelta
    | TranscriptDelta
    | ResponseDone
    | ServerError
    | PlaybackProgress
    | Tick
    | ConnectionClosed
)

__all__ = [
    "AudioDelta",
    "ConnectionClosed",
    "Event",
    "IdleTimeoutTriggered",
    "PlaybackProgress",
    "RequestResponse",
    "ResponseCreated",
    "ResponseDone",
    "ServerError",
    "SessionConfigured",
    "SpeechStarted",
    "SpeechStopped",
    "Tick",
    "TranscriptDelta",
    "UserText",
    "UserTurnCommitted",
]

"""What a call tells the application: typed, frozen values, in the order things happened.

A driver hands them out as an async iterator (``async for event in bridge.events()``), bounded:
an application that reads slowly, or not at all, never slows the call; events past the bound
are dropped and counted (:attr:`~realtime_fsm.call.CallReport.app_events_dropped`).  Nothing
here is read back by the call: these values cannot change a transition.

Caller content (transcripts, typed text, custom parameters) is in these values as it came: the
application decides what to log or keep.  The library's own log lines keep redacting it.

Times (``at``, ``requested_at``, ...) are the call's clock: the ``now`` its driver passed in
with the input that caused the event (``time.monotonic()`` for the bundled drivers), so
durations are differences of two of them.  They are keyword-only and left out of equality: two
events that say the same thing compare equal whatever their times.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

import attrs

from .config import CallReport


def _ro(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@attrs.frozen
class CallStarted:
    """Twilio's ``start``: the call is running."""

    call_sid: str | None
    stream_sid: str
    #: The TwiML ``<Parameter>`` values (``customParameters``): who is calling, an account id.
    custom_parameters: Mapping[str, str] = attrs.field(converter=_ro)
    #: ``audio/x-mulaw``: the only encoding the call accepts (others end it).
    encoding: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    at: float = attrs.field(default=0.0, eq=False, kw_only=True)


@attrs.frozen
class CallerTranscript:
    """What the caller said, as the server's input transcription heard it.  ``final`` is
    False for a partial (a transcription delta), True for the completed turn."""

    text: str
    final: bool
    item_id: str | None = None


@attrs.frozen
class AssistantTranscript:
    """What the assistant is saying: each delta (``final`` False) and, at the response's
    done, the whole of it (``final`` True; cut at the history's bound)."""

    response_id: str
    text: str
    final: bool


@attrs.frozen
class ResponseStarted:
    """A response began (``response.created``).  ``ours``: asked for by a ``response.create``
    of this call, for ``reasons`` (``greeting``, ``user_text``, ``tool``, ...); otherwise the
    server created it (its VAD answering a turn)."""

    response_id: str
    ours: bool
    reasons: tuple[str, ...] = ()
    #: When ``response.created`` arrived.
    at: float = attrs.field(default=0.0, eq=False, kw_only=True)
    #: When the response was asked for: our ``response.create`` handed to the driver, or, for
    #: one the server created, the caller's turn it answers committed; ``None``: not known.
    requested_at: float | None = attrs.field(default=None, eq=False, kw_only=True)


@attrs.frozen
class ResponseFinished:
    """A response ended (``response.done``): ``status`` is ``completed``, ``cancelled``,
    ``incomplete`` or ``failed``; ``heard_ms`` is how much of its audio the caller's playback
    reported heard (from Twilio marks) by then."""

    response_id: str
    status: str
    reason: str | None
    heard_ms: int
    #: When ``response.done`` arrived.
    at: float = attrs.field(default=0.0, eq=False, kw_only=True)
    #: When its first audio was handed to the telephony side; ``None``: it had none.
    first_audio_at: float | None = attrs.field(default=None, eq=False, kw_only=True)
    #: The server's ``usage`` of the response, when it said.
    input_tokens: int | None = attrs.field(default=None, eq=False, kw_only=True)
    output_tokens: int | None = attrs.field(default=None, eq=False, kw_only=True)


@attrs.frozen
class BargeIn:
    """The caller interrupted the assistant: playback cleared, the response cancelled.
    ``source`` is ``speech`` (the server's VAD heard the caller) or ``text`` (typed text)."""

    source: str
    response_id: str | None
    #: When the caller's speech (or text) that interrupted arrived.
    at: float = attrs.field(default=0.0, eq=False, kw_only=True)


@attrs.frozen
class WatchdogFired:
    """The no-audio watchdog judged a response silent (transcript, no audio).  ``outcome``:
    ``retried`` (cancelled; asked again once) or ``suppressed`` (inside the cooldown)."""

    response_id: str | None
    outcome: str
    at: float = attrs.field(default=0.0, eq=False, kw_only=True)


@attrs.frozen
class ResponseCancelling:
    """The response is being stopped (the response machine entered ``cancelling``): a
    barge-in, the watchdog, a response nobody asked for; by our ``response.cancel`` or the
    server's own interruption.  Its ``response.done`` follows.  ``response_id`` is ``None``
    for a response not yet created (cancelled as soon as it is)."""

    response_id: str | None
    at: float = attrs.field(default=0.0, eq=False, kw_only=True)


@attrs.frozen
class AudioTruncated:
    """Assistant audio the caller did not hear was cut from the conversation: the item is
    truncated at ``audio_end_ms`` (0: deleted, not a millisecond of it heard), and
    ``unheard_ms`` of its audio, received but not heard, is gone from what the model
    remembers saying."""

    item_id: str
    audio_end_ms: int
    unheard_ms: int
    #: The response the item belongs to, when the call still knows it.
    response_id: str | None
    at: float = attrs.field(default=0.0, eq=False, kw_only=True)


@attrs.frozen
class ResponseRequestGivenUp:
    """A request for a response will not be served: ``reason`` is the machine's
    (``create_timeout``, ``rejected:<code>``, ``interrupted``, ``closed:<why>``, ...), and
    ``request_reasons`` what it asked for (``greeting``, ``user_text``, ...).  The same value
    is in :attr:`CallReport.given_up <realtime_fsm.call.CallReport.given_up>`."""

    reason: str
    request_reasons: tuple[str, ...]
    at: float = attrs.field(default=0.0, eq=False, kw_only=True)


@attrs.frozen
class PlaybackStarted:
    """The caller began to hear this response: from the first Twilio ``mark`` echo of its
    first audio item, dated back by the audio that echo confirms played (Twilio plays what it
    has buffered continuously), and never before the audio was sent."""

    response_id: str
    item_id: str
    at: float = attrs.field(default=0.0, eq=False, kw_only=True)


@attrs.frozen
class ToolCall:
    """The model called a function: run it and answer with
    ``submit_tool_output(call_id, output)`` (a driver given the tool runs it itself)."""

    call_id: str
    name: str
    #: JSON text, as the model wrote it.
    arguments: str
    response_id: str


@attrs.frozen
class ToolResult:
    """A tool call was answered (its ``function_call_output`` is on its way to the model)."""

    call_id: str
    name: str
    ok: bool
    #: Seconds from the model's call to the output.
    took: float


@attrs.frozen
class SessionLost:
    """The OpenAI session is gone; the call goes on while another is opened."""

    reason: str
    at: float = attrs.field(default=0.0, eq=False, kw_only=True)


@attrs.frozen
class SessionRestored:
    """A new OpenAI session took over: ``took`` seconds after the loss."""

    took: float
    history_items: int
    texts_delivered: int
    at: float = attrs.field(default=0.0, eq=False, kw_only=True)


@attrs.frozen
class SessionRotated:
    """The OpenAI session was replaced before the server's cap, the caller none the wiser:
    at a ``quiet`` moment or a response ``boundary`` (``moment``), ``waited`` seconds after it
    was due (``BridgeConfig.rotate_after``), with ``history_items`` of conversation restored
    and ``requests_carried`` (a boundary's queued responses) asked of the new session."""

    moment: Literal["quiet", "boundary"]
    waited: float
    history_items: int
    requests_carried: int
    at: float = attrs.field(default=0.0, eq=False, kw_only=True)


@attrs.frozen
class ProtocolError:
    """A frame from ``side`` (``twilio`` or ``openai``) was malformed or refused, or the
    server reported an error: counted, logged, and here for the application."""

    side: str
    message: str
    code: str | None = None


@attrs.frozen
class CallEnded:
    """The call is over; ``report`` says what happened.  Always the last event."""

    reason: str
    report: CallReport
    at: float = attrs.field(default=0.0, eq=False, kw_only=True)


AppEvent = (
    CallStarted
    | CallerTranscript
    | AssistantTranscript
    | ResponseStarted
    | ResponseFinished
    | BargeIn
    | WatchdogFired
    | ResponseCancelling
    | AudioTruncated
    | ResponseRequestGivenUp
    | PlaybackStarted
    | ToolCall
    | ToolResult
    | SessionLost
    | SessionRestored
    | SessionRotated
    | ProtocolError
    | CallEnded
)

__all__ = [
    "AppEvent",
    "AssistantTranscript",
    "AudioTruncated",
    "BargeIn",
    "CallEnded",
    "CallStarted",
    "CallerTranscript",
    "PlaybackStarted",
    "ProtocolError",
    "ResponseCancelling",
    "ResponseFinished",
    "ResponseRequestGivenUp",
    "ResponseStarted",
    "SessionLost",
    "SessionRestored",
    "SessionRotated",
    "ToolCall",
    "ToolResult",
    "WatchdogFired",
]

"""What a call tells the application: typed, frozen values, in the order things happened.

A driver hands them out as an async iterator (``async for event in bridge.events()``), bounded:
an application that reads slowly, or not at all, never slows the call; events past the bound
are dropped and counted (:attr:`~realtime_fsm.call.CallReport.app_events_dropped`).  Nothing
here is read back by the call: these values cannot change a transition.

Caller content (transcripts, typed text, custom parameters) is in these values as it came: the
application decides what to log or keep.  The library's own log lines keep redacting it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

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


@attrs.frozen
class ResponseFinished:
    """A response ended (``response.done``): ``status`` is ``completed``, ``cancelled``,
    ``incomplete`` or ``failed``; ``heard_ms`` is how much of its audio the caller's playback
    reported heard (from Twilio marks) by then."""

    response_id: str
    status: str
    reason: str | None
    heard_ms: int


@attrs.frozen
class BargeIn:
    """The caller interrupted the assistant: playback cleared, the response cancelled.
    ``source`` is ``speech`` (the server's VAD heard the caller) or ``text`` (typed text)."""

    source: str
    response_id: str | None


@attrs.frozen
class WatchdogFired:
    """The no-audio watchdog judged a response silent (transcript, no audio).  ``outcome``:
    ``retried`` (cancelled; asked again once) or ``suppressed`` (inside the cooldown)."""

    response_id: str | None
    outcome: str


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


@attrs.frozen
class SessionRestored:
    """A new OpenAI session took over: ``took`` seconds after the loss."""

    took: float
    history_items: int
    texts_delivered: int


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


AppEvent = (
    CallStarted
    | CallerTranscript
    | AssistantTranscript
    | ResponseStarted
    | ResponseFinished
    | BargeIn
    | WatchdogFired
    | ToolCall
    | ToolResult
    | SessionLost
    | SessionRestored
    | ProtocolError
    | CallEnded
)

__all__ = [
    "AppEvent",
    "AssistantTranscript",
    "BargeIn",
    "CallEnded",
    "CallStarted",
    "CallerTranscript",
    "ProtocolError",
    "ResponseFinished",
    "ResponseStarted",
    "SessionLost",
    "SessionRestored",
    "ToolCall",
    "ToolResult",
    "WatchdogFired",
]

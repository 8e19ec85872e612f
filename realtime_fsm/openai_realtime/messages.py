"""The OpenAI Realtime adapter's value types: what parsing returns and what rendering accepts.

The per-frame results (:class:`OutputAudioDelta`, :class:`OutputTranscriptDelta`,
:class:`ResponseActivity`), the results for the application (:class:`InputTranscript`,
:class:`Ignored`), the unions that name them all (:data:`ServerMessage`, :data:`ClientCommand`),
the :class:`Dialect` rendering picks, and the sets of server event types each result stands for.
They are here, apart from the code, because :mod:`~realtime_fsm.openai_realtime.parsing`,
:mod:`~realtime_fsm.openai_realtime.rendering` and the bridge all depend on them and on nothing
else of each other.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from .. import events as ev
from ..commands import (
    SendItemDelete,
    SendResponseCancel,
    SendResponseCreate,
    SendTruncate,
    SendUserText,
)


class Dialect(enum.Enum):
    """Which generation of the client protocol to *render*.  Parsing always accepts both."""

    GA = "ga"
    BETA = "beta"


# ------------------------------------------------------------------------------ parse results


@attrs.frozen
class OutputAudioDelta:
    """``response.output_audio.delta`` (beta ``response.audio.delta``).

    ``payload`` is the server's base64 string, untouched, so mu-law can go to Twilio without a
    decode/encode round trip; ``byte_count`` is what it decodes to, computed from its length and
    padding (the lifecycle counts bytes to know how much audio an item holds)."""

    response_id: str
    item_id: str
    payload: str
    byte_count: int

    def to_event(self) -> ev.AudioDelta:
        """The core event, for traces and tests; drivers use ``ResponseLifecycle.audio_delta``."""
        return ev.AudioDelta(
            response_id=self.response_id, item_id=self.item_id, byte_count=self.byte_count
        )


@attrs.frozen
class OutputTranscriptDelta:
    """``response.output_audio_transcript.delta`` (beta ``response.audio_transcript.delta``).

    Only the transcript *of audio*: it arms the no-audio watchdog, which text deltas must not."""

    response_id: str
    item_id: str
    delta: str

    def to_event(self) -> ev.TranscriptDelta:
        """The core event; drivers use ``ResponseLifecycle.transcript_delta``."""
        return ev.TranscriptDelta(response_id=self.response_id, item_id=self.item_id)


@attrs.frozen
class ResponseActivity:
    """Any other event that belongs to a response (text and function-call deltas, output item
    and content part events, the ``*.done`` of audio and transcript).

    It only proves the response is alive: feed ``response_id`` to
    ``ResponseLifecycle.touch`` so a busy but silent response is not taken for a hung one."""

    response_id: str
    event_type: str


@attrs.frozen
class InputTranscript:
    """``conversation.item.input_audio_transcription.completed``: what the caller said.

    For logs and the application; the lifecycle does not need it (it may arrive before or after
    the response it triggered)."""

    item_id: str
    transcript: str


@attrs.frozen
class InputTranscriptDelta:
    """``conversation.item.input_audio_transcription.delta``: a partial of what the caller is
    saying, for the application (nothing decides on it)."""

    item_id: str
    delta: str


@attrs.frozen
class FunctionCallDone:
    """``response.output_item.done`` of a ``function_call`` item: the model called a tool.

    ``status`` is the item's: only ``completed`` is run (the done events also come for calls a
    cancel cut off, whose ``arguments`` may be a fragment of JSON).  Still a sign of life of
    ``response_id``, like the other per-response events."""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str
    status: str | None


@attrs.frozen
class OutputItemAdded:
    """``response.output_item.added``: a response opened an output item (``item_type``
    ``message``, ``function_call``, ...).  A reasoning model's response can hold several, in
    ``output_index`` order (a spoken preamble, then a call or a second message): the lifecycle
    tracks each one (``ResponseLifecycle.item_added``) to know which item is still being
    generated, whether a function call is open, and what a barge-in leaves unheard."""

    response_id: str
    item_id: str
    item_type: str


@attrs.frozen
class OutputItemDone:
    """``response.output_item.done`` of an item that is not a function call (those are
    :class:`FunctionCallDone`): the item is complete, or was cut off by a cancel."""

    response_id: str
    item_id: str


@attrs.frozen
class ItemAdded:
    """``conversation.item.added`` (beta ``conversation.item.created``) of an item the call
    cares about: a ``function_call_output`` (``call_id``), now in the conversation, so a
    response created from here on sees it."""

    item_id: str | None
    item_type: str
    call_id: str | None


@attrs.frozen
class Ignored:
    """A well-formed event the lifecycle has no use for.

    ``known`` tells an event of the ``openai`` package's unions (nothing to do) from a type this
    adapter has never heard of (worth a log line, once)."""

    event_type: str
    known: bool


#: Results that go to ``ResponseLifecycle.handle`` as they are.
LifecycleEvent = (
    ev.SessionConfigured
    | ev.ResponseCreated
    | ev.ResponseDone
    | ev.ServerError
    | ev.SpeechStarted
    | ev.SpeechStopped
    | ev.UserTurnCommitted
    | ev.IdleTimeoutTriggered
)
#: Everything :func:`parse_server_event` can return: the per-frame results take the lifecycle's
#: fast paths (``audio_delta``, ``transcript_delta``, ``touch``) instead of ``handle``.
ServerMessage = (
    LifecycleEvent
    | OutputAudioDelta
    | OutputTranscriptDelta
    | ResponseActivity
    | InputTranscript
    | InputTranscriptDelta
    | FunctionCallDone
    | OutputItemAdded
    | OutputItemDone
    | ItemAdded
    | Ignored
)

#: Core commands that become OpenAI client events.
ClientCommand = (
    SendResponseCreate | SendResponseCancel | SendUserText | SendTruncate | SendItemDelete
)
#: The same, as a tuple for ``isinstance`` (the other commands are for telephony or the app).
CLIENT_COMMANDS: Final = (
    SendResponseCreate,
    SendResponseCancel,
    SendUserText,
    SendTruncate,
    SendItemDelete,
)


# -------------------------------------------------------------------------------- event names

AUDIO_DELTA_TYPES: Final = frozenset({"response.output_audio.delta", "response.audio.delta"})
TRANSCRIPT_DELTA_TYPES: Final = frozenset(
    {"response.output_audio_transcript.delta", "response.audio_transcript.delta"}
)
#: Per-response events that only prove the response is alive (they all carry ``response_id``).
ACTIVITY_TYPES: Final = frozenset(
    {
        "response.output_text.delta",
        "response.text.delta",
        "response.output_text.done",
        "response.text.done",
        "response.output_audio.done",
        "response.audio.done",
        "response.output_audio_transcript.done",
        "response.audio_transcript.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
    }
)
#: Event types of the GA and beta server unions that carry nothing the lifecycle needs.
#: ``conversation.item.*`` events name no response; MCP call progress names no response;
#: ``output_audio_buffer.*`` is WebRTC/SIP only.
IGNORED_TYPES: Final = frozenset(
    {
        "conversation.created",
        "conversation.item.done",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.input_audio_transcription.segment",
        "input_audio_buffer.cleared",
        "input_audio_buffer.dtmf_event_received",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "rate_limits.updated",
        "transcription_session.updated",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
    }
)

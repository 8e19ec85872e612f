"""OpenAI Realtime adapter: server frames in, typed results out; commands in, client events out.

Sans-IO: nothing here touches a socket.  A driver reads a text frame from the Realtime
WebSocket, calls :func:`parse_server_event` (or :meth:`OpenAIRealtimeCodec.parse`), feeds the
result to the :class:`~realtime_fsm.lifecycle.ResponseLifecycle`, and writes whatever
:func:`render_command` makes of the commands it gets back.

Both API generations are read, whatever the codec renders: the GA names
(``response.output_audio.delta``, ...) and the beta aliases (``response.audio.delta``, ...) map
to the same results, so a server that mixes them, or a proxy that rewrites one to the other,
cannot confuse the lifecycle.  Rendering has to pick one, because the two generations disagree
on field names (``output_modalities`` vs ``modalities``, nested vs flat session config).

Every event type of the ``openai`` package's GA and beta server-event unions is either parsed
or explicitly :class:`Ignored` with ``known=True``; anything else is ``Ignored`` with
``known=False`` (never an error: the server gains event types faster than clients).  What *is*
an error is a frame that is not a JSON object, lacks a string ``type``, is larger than the
configured limit, or has a missing or wrongly typed field that the lifecycle depends on: those
raise :class:`~realtime_fsm.errors.RemoteProtocolError` so a driver can log the frame and keep
the call alive.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, TypeGuard

import attrs

from . import events as ev
from ._wire import (
    bad_field,
    load_json_object,
    opt_obj,
    opt_str,
    plain_json_string,
    req_obj,
    req_str,
)
from .commands import (
    Command,
    SendItemDelete,
    SendResponseCancel,
    SendResponseCreate,
    SendTruncate,
    SendUserText,
)
from .errors import LocalProtocolError, RemoteProtocolError

log = logging.getLogger("realtime_fsm.openai_realtime")

#: Default cap on one server frame.  Audio deltas are a few KiB; the largest events a bridge
#: sees are ``session.created``/``session.updated`` with long instructions.  Set the WebSocket
#: library's own ``max_size`` to the same value so the limit is enforced before buffering.
DEFAULT_MAX_FRAME_SIZE: Final = 4 * 1024 * 1024
#: How many distinct unknown event types a codec counts by name; the rest share one bucket, so a
#: misbehaving server cannot grow the table without bound.
MAX_UNKNOWN_TYPES: Final = 256
#: The bucket unknown types go to once :data:`MAX_UNKNOWN_TYPES` names are tracked.
OTHER_UNKNOWN: Final = "<other>"


class Dialect(enum.Enum):
    """Which generation of the client protocol to *render*.  Parsing always accepts both."""

    GA = "ga"
    BETA = "beta"


#: Transcription model used when :attr:`SessionConfig.transcription_model` is ``None``.
DEFAULT_TRANSCRIPTION_MODEL: Final[Mapping[Dialect, str]] = {
    Dialect.GA: "gpt-4o-transcribe",
    Dialect.BETA: "whisper-1",
}


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
)
#: Everything :func:`parse_server_event` can return: the per-frame results take the lifecycle's
#: fast paths (``audio_delta``, ``transcript_delta``, ``touch``) instead of ``handle``.
ServerMessage = (
    LifecycleEvent
    | OutputAudioDelta
    | OutputTranscriptDelta
    | ResponseActivity
    | InputTranscript
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
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
    }
)
#: Event types of the GA and beta server unions that carry nothing the lifecycle needs.
#: ``conversation.item.*`` events name no response; MCP call progress names no response;
#: ``output_audio_buffer.*`` is WebRTC/SIP only; ``timeout_triggered`` is followed by the
#: ``response.created`` of the response the server makes itself, which is what matters.
IGNORED_TYPES: Final = frozenset(
    {
        "conversation.created",
        "conversation.item.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.input_audio_transcription.segment",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
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


# ------------------------------------------------------------------------------ field helpers


def _opt_int(obj: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value = obj.get(key)
    if value is None:
        return default
    if type(value) is not int or value < 0:
        raise bad_field(where, key, "a non-negative integer", obj)
    return value


def _opt_bool(obj: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if type(value) is not bool:
        raise bad_field(where, key, "a boolean", obj)
    return value


def _str_list(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is not list or not all(type(item) is str for item in value):
        raise bad_field(where, key, "an array of strings", obj)
    return tuple(value)


def _str_map(obj: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = obj.get(key)
    if value is None:
        return {}
    if type(value) is not dict or not all(type(item) is str for item in value.values()):
        raise bad_field(where, key, "an object of strings", obj)
    return value


def base64_decoded_size(payload: str) -> int:
    """Bytes a base64 string decodes to, from its length and padding alone (no decoding).

    Exact for well-formed base64, padded or not; never negative for garbage."""
    size = len(payload) * 3 // 4
    if payload.endswith("=="):
        size -= 2
    elif payload.endswith("="):
        size -= 1
    return size if size > 0 else 0


# ----------------------------------------------------------------------------------- handlers


def _audio_delta(data: dict[str, Any]) -> OutputAudioDelta:
    payload = data.get("delta")
    response_id = data.get("response_id")
    item_id = data.get("item_id")
    if type(payload) is str and type(response_id) is str and type(item_id) is str:
        return OutputAudioDelta(response_id, item_id, payload, base64_decoded_size(payload))
    where = data["type"]
    req_str(data, "response_id", where)
    req_str(data, "item_id", where)
    raise bad_field(where, "delta", "a base64 string", data)


def _transcript_delta(data: dict[str, Any]) -> OutputTranscriptDelta:
    where = data["type"]
    return OutputTranscriptDelta(
        req_str(data, "response_id", where),
        req_str(data, "item_id", where),
        req_str(data, "delta", where),
    )


def _activity(data: dict[str, Any]) -> ResponseActivity:
    where = data["type"]
    return ResponseActivity(req_str(data, "response_id", where), where)


def _response_created(data: dict[str, Any]) -> ev.ResponseCreated:
    where = "response.created"
    response = req_obj(data, "response", where)
    where = "response.created response"
    response_id = req_str(response, "id", where)
    # conversation_id null (present, not absent) is how the server says conversation "none".
    out_of_band = "conversation_id" in response and response["conversation_id"] is None
    opt_str(response, "conversation_id", where)
    modalities = _str_list(response, "output_modalities", where)
    if modalities is None:
        modalities = _str_list(response, "modalities", where)  # beta
    return ev.ResponseCreated(
        response_id=response_id,
        out_of_band=out_of_band,
        metadata=_str_map(response, "metadata", where),
        output_modalities=modalities or (),
    )


def _response_done(data: dict[str, Any]) -> ev.ResponseDone:
    where = "response.done"
    response = req_obj(data, "response", where)
    where = "response.done response"
    response_id = req_str(response, "id", where)
    status = opt_str(response, "status", where) or "completed"
    reason: str | None = None
    details = opt_obj(response, "status_details", where)
    if details is not None:
        reason = opt_str(details, "reason", "response.done status_details")
        error = opt_obj(details, "error", "response.done status_details")
        if reason is None and error is not None:
            # A failed response has no reason, only an error; its code is the useful "why".
            reason = opt_str(error, "code", "response.done status_details.error") or opt_str(
                error, "type", "response.done status_details.error"
            )
    return ev.ResponseDone(response_id=response_id, status=status, reason=reason)


def _error(data: dict[str, Any]) -> ev.ServerError:
    where = "error"
    error = req_obj(data, "error", where)
    where = "error.error"
    code = error.get("code")
    if type(code) is int:
        code = str(code)
    elif code is not None and type(code) is not str:
        raise bad_field(where, "code", "a string or null", error)
    # A missing message is tolerated: losing the error would lose its event_id, which is what
    # ends a pending response.create early instead of at its timeout.
    message = error.get("message")
    if message is None:
        message = ""
    elif type(message) is not str:
        raise bad_field(where, "message", "a string", error)
    return ev.ServerError(code=code, message=message, event_id=opt_str(error, "event_id", where))


def _session(data: dict[str, Any]) -> ev.SessionConfigured:
    where = data["type"]
    updated = where == "session.updated"
    session = req_obj(data, "session", where)
    where = f"{where} session"
    creates = True
    if "audio" in session or session.get("type") in ("realtime", "transcription"):
        # GA: session.audio.input.turn_detection; a transcription session never responds.
        creates = session.get("type") != "transcription"
        audio = opt_obj(session, "audio", where)
        audio_in = opt_obj(audio, "input", f"{where}.audio") if audio is not None else None
        audio_out = audio.get("output") if audio is not None else None
        holder, holder_where = audio_in, f"{where}.audio.input"
        formats = (
            _ga_format(audio_in),
            _ga_format(audio_out if type(audio_out) is dict else None),
        )
    else:
        holder, holder_where = session, where  # beta: flat
        formats = (
            _format_name(session.get("input_audio_format")),
            _format_name(session.get("output_audio_format")),
        )
    turn = opt_obj(holder, "turn_detection", holder_where) if holder is not None else None
    if turn is None:
        return ev.SessionConfigured(
            turn_detection=None,
            input_audio_format=formats[0],
            output_audio_format=formats[1],
            updated=updated,
        )
    turn_where = f"{holder_where}.turn_detection"
    kind = req_str(turn, "type", turn_where)
    # Both flags are documented "true by default": absent or null means the server acts.
    create = _opt_bool(turn, "create_response", turn_where, True)
    interrupt = _opt_bool(turn, "interrupt_response", turn_where, True)
    return ev.SessionConfigured(
        turn_detection=kind,
        create_response=create and creates,
        interrupt_response=interrupt and creates,
        input_audio_format=formats[0],
        output_audio_format=formats[1],
        updated=updated,
    )


#: Both dialects' audio format names, as one short name each (GA ``audio/pcmu``, beta
#: ``g711_ulaw``: ``pcmu``).  A name not listed is kept as sent.
_FORMAT_NAMES: Final = {
    "audio/pcmu": "pcmu",
    "audio/pcma": "pcma",
    "audio/pcm": "pcm",
    "g711_ulaw": "pcmu",
    "g711_alaw": "pcma",
    "pcm16": "pcm",
}


def _ga_format(holder: dict[str, Any] | None) -> str | None:
    """GA ``audio.input.format`` / ``audio.output.format``: ``{"type": "audio/pcmu"}``.  Read
    leniently (an odd shape is ``None``, not an error): it must not cost the frame its
    turn-taking settings."""
    fmt = holder.get("format") if holder is not None else None
    return _format_name(fmt.get("type") if type(fmt) is dict else fmt)


def _format_name(name: object) -> str | None:
    """Beta ``input_audio_format`` / ``output_audio_format`` (``"g711_ulaw"``) or a GA type."""
    return _FORMAT_NAMES.get(name, name[:64]) if type(name) is str else None


def _speech_started(data: dict[str, Any]) -> ev.SpeechStarted:
    where = "input_audio_buffer.speech_started"
    return ev.SpeechStarted(
        item_id=opt_str(data, "item_id", where),
        audio_start_ms=_opt_int(data, "audio_start_ms", where, 0),
    )


def _speech_stopped(data: dict[str, Any]) -> ev.SpeechStopped:
    where = "input_audio_buffer.speech_stopped"
    return ev.SpeechStopped(
        item_id=opt_str(data, "item_id", where),
        audio_end_ms=_opt_int(data, "audio_end_ms", where, 0),
    )


def _committed(data: dict[str, Any]) -> ev.UserTurnCommitted:
    return ev.UserTurnCommitted(item_id=opt_str(data, "item_id", "input_audio_buffer.committed"))


def _input_transcript(data: dict[str, Any]) -> InputTranscript:
    where = data["type"]
    return InputTranscript(req_str(data, "item_id", where), req_str(data, "transcript", where))


_HANDLERS: dict[str, Callable[[dict[str, Any]], ServerMessage]] = {
    "session.created": _session,
    "session.updated": _session,
    "response.created": _response_created,
    "response.done": _response_done,
    "error": _error,
    "input_audio_buffer.speech_started": _speech_started,
    "input_audio_buffer.speech_stopped": _speech_stopped,
    "input_audio_buffer.committed": _committed,
    "conversation.item.input_audio_transcription.completed": _input_transcript,
}
_HANDLERS.update(dict.fromkeys(AUDIO_DELTA_TYPES, _audio_delta))
_HANDLERS.update(dict.fromkeys(TRANSCRIPT_DELTA_TYPES, _transcript_delta))
_HANDLERS.update(dict.fromkeys(ACTIVITY_TYPES, _activity))

#: Every event type this adapter recognises: parsed or deliberately ignored.
KNOWN_TYPES: Final = frozenset(_HANDLERS) | IGNORED_TYPES
#: One shared instance per ignored type: nothing to allocate for the chatty ones.
_IGNORED: Final = {name: Ignored(name, known=True) for name in IGNORED_TYPES}

assert not (IGNORED_TYPES & _HANDLERS.keys()), "a type cannot be both parsed and ignored"


def parse_server_event(
    frame: str | bytes | bytearray, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> ServerMessage:
    """Turn one server text frame into a typed result.

    Raises :class:`RemoteProtocolError` for a frame the lifecycle cannot trust (bad JSON, not an
    object, no string ``type``, oversized, a required field missing or of the wrong type).  An
    unknown ``type`` is not an error: it comes back as ``Ignored(known=False)``."""
    data = load_json_object(frame, max_frame_size, "server event")
    event_type = data.get("type")
    if type(event_type) is not str:
        raise bad_field("server event", "type", "a string", data)
    handler = _HANDLERS.get(event_type)
    if handler is None:
        ignored = _IGNORED.get(event_type)
        return ignored if ignored is not None else Ignored(event_type, known=False)
    try:
        return handler(data)
    except (TypeError, ValueError) as exc:  # a core event's own validation (empty id, ...)
        raise RemoteProtocolError(f"{event_type}: {exc}") from None


# ---------------------------------------------------------------------------------- rendering


def _modalities(modalities: Sequence[str], dialect: Dialect) -> tuple[str, list[str]]:
    """The response/session modality field for a dialect.

    Beta servers reject ``["audio"]`` alone (audio always came with its transcript), so beta
    gets ``["text", "audio"]`` for audio; GA allows exactly one modality."""
    if not set(modalities) <= {"audio", "text"} or (
        dialect is Dialect.GA and len(set(modalities)) != 1
    ):
        raise LocalProtocolError(
            f"output modalities {tuple(modalities)!r} are not valid for {dialect.value}: use"
            " ('audio',) or ('text',)"
        )
    if dialect is Dialect.GA:
        return "output_modalities", list(modalities)
    if "audio" in modalities:
        return "modalities", ["text", "audio"]
    return "modalities", list(modalities)


def _render_create(
    command: SendResponseCreate, dialect: Dialect, modalities: Sequence[str] | None
) -> dict[str, Any]:
    response: dict[str, Any] = {}
    if command.out_of_band:
        response["conversation"] = "none"
    if command.instructions is not None:
        response["instructions"] = command.instructions
    if command.metadata:
        response["metadata"] = dict(command.metadata)
    if modalities:
        key, value = _modalities(modalities, dialect)
        response[key] = value
    return {"type": "response.create", "event_id": command.event_id, "response": response}


def _render_cancel(command: SendResponseCancel) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "response.cancel", "event_id": command.event_id}
    if command.response_id is not None:
        event["response_id"] = command.response_id
    return event


def _render_user_text(command: SendUserText) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "event_id": command.event_id,
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": command.text}],
        },
    }


def _render_truncate(command: SendTruncate) -> dict[str, Any]:
    return {
        "type": "conversation.item.truncate",
        "event_id": command.event_id,
        "item_id": command.item_id,
        "content_index": 0,
        "audio_end_ms": command.audio_end_ms,
    }


def _render_delete(command: SendItemDelete) -> dict[str, Any]:
    return {
        "type": "conversation.item.delete",
        "event_id": command.event_id,
        "item_id": command.item_id,
    }


#: Content part type of an assistant text message, per dialect (GA ``output_text``, beta ``text``).
_ASSISTANT_TEXT: Final[Mapping[Dialect, str]] = {Dialect.GA: "output_text", Dialect.BETA: "text"}


def render_input_audio_commit(*, event_id: str | None = None) -> dict[str, Any]:
    """``input_audio_buffer.commit``: end the caller's turn by hand (push-to-talk), for a
    session without turn detection.  The server answers ``input_audio_buffer.committed``
    (the core's :class:`~realtime_fsm.events.UserTurnCommitted`), or the error
    ``input_audio_buffer_commit_empty`` when the buffer holds too little audio.  The same in
    both dialects."""
    event: dict[str, Any] = {"type": "input_audio_buffer.commit"}
    if event_id is not None:
        event["event_id"] = event_id
    return event


def render_message_item(
    role: Literal["user", "assistant"],
    text: str,
    *,
    dialect: Dialect = Dialect.GA,
    event_id: str | None = None,
) -> dict[str, Any]:
    """``conversation.item.create`` of one text message, to restore a conversation on a new
    session: user text as ``input_text``, an assistant transcript as ``output_text`` (beta
    ``text``).  Assistant *audio* cannot be created by a client, so a restored assistant turn is
    its transcript."""
    if role == "user":
        part = {"type": "input_text", "text": text}
    elif role == "assistant":
        part = {"type": _ASSISTANT_TEXT[dialect], "text": text}
    else:
        raise LocalProtocolError(f"message role must be 'user' or 'assistant', got {role!r}")
    event: dict[str, Any] = {"type": "conversation.item.create"}
    if event_id is not None:
        event["event_id"] = event_id
    event["item"] = {"type": "message", "role": role, "content": [part]}
    return event


def render_command(
    command: ClientCommand,
    *,
    dialect: Dialect = Dialect.GA,
    response_modalities: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The client event (a JSON-ready dict) for one core command.

    ``response_modalities`` is put on every ``response.create`` when given (``("audio",)`` for
    telephony); ``None`` leaves it to the session.  Raises :class:`LocalProtocolError` for a
    command that is not an OpenAI client event (``ClearPlayback`` and friends)."""
    if isinstance(command, SendResponseCreate):
        return _render_create(command, dialect, response_modalities)
    if isinstance(command, SendResponseCancel):
        return _render_cancel(command)
    if isinstance(command, SendUserText):
        return _render_user_text(command)
    if isinstance(command, SendTruncate):
        return _render_truncate(command)
    if isinstance(command, SendItemDelete):
        return _render_delete(command)
    raise LocalProtocolError(f"{type(command).__name__} is not an OpenAI Realtime client event")


def is_client_command(command: Command) -> TypeGuard[ClientCommand]:
    """True for the commands :func:`render_command` accepts (the rest are not for OpenAI)."""
    return isinstance(command, CLIENT_COMMANDS)


def dumps(event: Mapping[str, Any]) -> str:
    """Compact JSON for the wire (no spaces: audio appends are sent 50 times a second)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def render_input_audio_append(payload: str) -> dict[str, Any]:
    """``input_audio_buffer.append`` with a base64 payload passed through as is (Twilio mu-law
    into a ``pcmu`` session needs no transcoding).  No ``event_id``: the server never answers
    an append, and minting ids 50 times a second would only cost."""
    return {"type": "input_audio_buffer.append", "audio": payload}


def input_audio_append_json(payload: str) -> str:
    """:func:`render_input_audio_append` already serialised, for the per-frame path: the base64
    string is wrapped as is (one concatenation instead of a ``json.dumps``)."""
    if type(payload) is str and plain_json_string(payload):
        return '{"type":"input_audio_buffer.append","audio":"' + payload + '"}'
    return dumps({"type": "input_audio_buffer.append", "audio": payload})


# ----------------------------------------------------------------------------- session config

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
    mid-call."""

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

    def __attrs_post_init__(self) -> None:
        server_knobs = (self.silence_duration_ms, self.prefix_padding_ms, self.threshold)
        if self.turn_detection != "server_vad" and any(k is not None for k in server_knobs):
            raise ValueError(
                "silence_duration_ms/prefix_padding_ms/threshold need turn_detection='server_vad'"
            )
        if self.turn_detection != "semantic_vad" and self.eagerness is not None:
            raise ValueError("eagerness needs turn_detection='semantic_vad'")

    def expected_session(self) -> ev.SessionConfigured:
        """What the lifecycle should assume *if the server applies this config as sent*.

        Useful before ``session.updated`` arrives; the parsed ``session.updated`` then wins."""
        if self.turn_detection is None:
            return ev.SessionConfigured(
                turn_detection=None,
                input_audio_format="pcmu",
                output_audio_format="pcmu",
                updated=True,
            )
        return ev.SessionConfigured(
            turn_detection=self.turn_detection,
            create_response=self.create_response,
            interrupt_response=self.interrupt_response,
            input_audio_format="pcmu",  # Twilio's: always sent
            output_audio_format="pcmu",
            updated=True,  # the session.updated that answers it
        )

    def _turn_detection(self) -> dict[str, Any] | None:
        if self.turn_detection is None:
            return None
        turn: dict[str, Any] = {
            "type": self.turn_detection,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }
        for key in ("silence_duration_ms", "prefix_padding_ms", "threshold", "eagerness"):
            value = getattr(self, key)
            if value is not None:
                turn[key] = value
        return turn

    def _transcription(self, dialect: Dialect) -> dict[str, Any]:
        model = self.transcription_model or DEFAULT_TRANSCRIPTION_MODEL[dialect]
        transcription: dict[str, Any] = {"model": model}
        if self.transcription_language is not None:
            transcription["language"] = self.transcription_language
        return transcription


def render_session_update(
    config: SessionConfig, *, dialect: Dialect = Dialect.GA, event_id: str | None = None
) -> dict[str, Any]:
    """``session.update`` for a telephony session (GA nested shape, or beta flat shape).

    Turn detection ``None`` is sent as an explicit ``null``: that is how VAD is switched off.
    Transcription off is sent as an *absent* field (the session default is off, and the typed
    client params do not accept ``null`` there)."""
    key, modalities = _modalities(("audio",), dialect)
    session: dict[str, Any]
    if dialect is Dialect.GA:
        audio_in: dict[str, Any] = {"format": {"type": "audio/pcmu"}}
        if config.input_transcription:
            audio_in["transcription"] = config._transcription(dialect)
        audio_in["turn_detection"] = config._turn_detection()
        audio_out: dict[str, Any] = {"format": {"type": "audio/pcmu"}}
        if config.voice is not None:
            audio_out["voice"] = config.voice
        session = {
            "type": "realtime",
            key: modalities,
            "audio": {"input": audio_in, "output": audio_out},
        }
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
    if config.instructions is not None:
        session["instructions"] = config.instructions
    event: dict[str, Any] = {"type": "session.update", "session": session}
    if event_id is not None:
        event["event_id"] = event_id
    return event


# --------------------------------------------------------------------------------------- codec


class OpenAIRealtimeCodec:
    """One Realtime connection's translator: the pure functions above plus the two things that
    need state, the chosen :class:`Dialect` and the count of unknown event types.

    An unknown type is logged once (at WARNING, with the call id) and counted every time, so a
    new server event shows up in logs without flooding them; :attr:`unknown_types` is there for
    metrics.  One codec per connection; not thread-safe (one task owns it)."""

    __slots__ = ("_call_id", "_dialect", "_max_frame_size", "_modalities", "unknown_types")

    def __init__(
        self,
        *,
        dialect: Dialect = Dialect.GA,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        response_modalities: Sequence[str] | None = None,
        call_id: str = "-",
    ) -> None:
        if not isinstance(dialect, Dialect):
            raise TypeError(f"dialect must be a Dialect, got {dialect!r}")
        if type(max_frame_size) is not int or max_frame_size <= 0:
            raise ValueError(f"max_frame_size must be a positive int, got {max_frame_size!r}")
        self._dialect = dialect
        self._max_frame_size = max_frame_size
        self._modalities = tuple(response_modalities) if response_modalities else None
        if self._modalities is not None:
            _modalities(self._modalities, dialect)  # refuse a bad value now, not per response
        self._call_id = call_id
        #: Unknown event type -> how many times it was seen (bounded, see MAX_UNKNOWN_TYPES).
        self.unknown_types: dict[str, int] = {}

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    @property
    def max_frame_size(self) -> int:
        return self._max_frame_size

    def parse(self, frame: str | bytes | bytearray) -> ServerMessage:
        """:func:`parse_server_event`, counting and logging (once) unknown types."""
        message = parse_server_event(frame, max_frame_size=self._max_frame_size)
        if type(message) is Ignored and not message.known:
            self._note_unknown(message.event_type)
        return message

    def _note_unknown(self, event_type: str) -> None:
        counts = self.unknown_types
        key = event_type
        if key not in counts and len(counts) >= MAX_UNKNOWN_TYPES:
            key = OTHER_UNKNOWN
        seen = counts.get(key, 0)
        counts[key] = seen + 1
        if seen == 0:
            log.warning(
                "call=%s unknown OpenAI Realtime event type %r ignored (logged once per type)",
                self._call_id,
                event_type[:100],
            )

    def render(self, command: ClientCommand) -> dict[str, Any]:
        """:func:`render_command` in this codec's dialect."""
        return render_command(command, dialect=self._dialect, response_modalities=self._modalities)

    def render_json(self, command: ClientCommand) -> str:
        return dumps(self.render(command))

    def message_item(
        self, role: Literal["user", "assistant"], text: str, *, event_id: str | None = None
    ) -> dict[str, Any]:
        """:func:`render_message_item` in this codec's dialect."""
        return render_message_item(role, text, dialect=self._dialect, event_id=event_id)

    def session_update(
        self, config: SessionConfig, *, event_id: str | None = None
    ) -> dict[str, Any]:
        """:func:`render_session_update` in this codec's dialect."""
        return render_session_update(config, dialect=self._dialect, event_id=event_id)


__all__ = [
    "ACTIVITY_TYPES",
    "AUDIO_DELTA_TYPES",
    "CLIENT_COMMANDS",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_TRANSCRIPTION_MODEL",
    "IGNORED_TYPES",
    "KNOWN_TYPES",
    "LifecycleEvent",
    "MAX_UNKNOWN_TYPES",
    "OTHER_UNKNOWN",
    "TRANSCRIPT_DELTA_TYPES",
    "ClientCommand",
    "Dialect",
    "Eagerness",
    "Ignored",
    "InputTranscript",
    "OpenAIRealtimeCodec",
    "OutputAudioDelta",
    "OutputTranscriptDelta",
    "ResponseActivity",
    "ServerMessage",
    "SessionConfig",
    "TurnDetection",
    "base64_decoded_size",
    "dumps",
    "input_audio_append_json",
    "is_client_command",
    "parse_server_event",
    "render_command",
    "render_input_audio_append",
    "render_input_audio_commit",
    "render_message_item",
    "render_session_update",
]

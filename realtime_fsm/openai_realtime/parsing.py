"""Server event parsing: one Realtime text frame in, one typed result out.

:func:`parse_server_event` and the handler per event type it dispatches to, with the field
checks they share.  Both API generations are read (GA names and beta aliases map to the same
result); every event type of the ``openai`` package's unions is parsed or deliberately
:class:`~realtime_fsm.openai_realtime.messages.Ignored`.  This is the per-frame path of the
assistant's audio, so the handlers check the common case first and only then say what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from .. import events as ev
from .._wire import (
    bad_field,
    load_json_object,
    opt_obj,
    opt_str,
    req_obj,
    req_str,
)
from ..errors import RemoteProtocolError
from .messages import (
    ACTIVITY_TYPES,
    AUDIO_DELTA_TYPES,
    IGNORED_TYPES,
    TRANSCRIPT_DELTA_TYPES,
    FunctionCallDone,
    Ignored,
    InputTranscript,
    InputTranscriptDelta,
    ItemAdded,
    OutputAudioDelta,
    OutputItemAdded,
    OutputItemDone,
    OutputTranscriptDelta,
    ResponseActivity,
    ServerMessage,
)

#: Default cap on one server frame.  Audio deltas are a few KiB; the largest events a bridge
#: sees are ``session.created``/``session.updated`` with long instructions.  Set the WebSocket
#: library's own ``max_size`` to the same value so the limit is enforced before buffering.
DEFAULT_MAX_FRAME_SIZE: Final = 4 * 1024 * 1024


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
    usage = response.get("usage")
    tokens_in = tokens_out = None
    if type(usage) is dict:  # informational: a usage we cannot read is left out, never refused
        tokens_in = _count(usage.get("input_tokens"))
        tokens_out = _count(usage.get("output_tokens"))
    return ev.ResponseDone(
        response_id=response_id,
        status=status,
        reason=reason,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
    )


def _count(value: object) -> int | None:
    """A token count as the server wrote it, or ``None`` for anything but an int >= 0."""
    return value if type(value) is int and value >= 0 else None


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
    # ``type`` is tolerated when missing or not a string, like ``message``: it only refines
    # what ``code`` says, and the error must still reach the lifecycle.
    error_type = error.get("type")
    return ev.ServerError(
        code=code,
        message=message,
        event_id=opt_str(error, "event_id", where),
        error_type=error_type if type(error_type) is str else None,
    )


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
    effort = _reasoning_effort(session)
    turn = opt_obj(holder, "turn_detection", holder_where) if holder is not None else None
    if turn is None:
        return ev.SessionConfigured(
            turn_detection=None,
            input_audio_format=formats[0],
            output_audio_format=formats[1],
            updated=updated,
            reasoning_effort=effort,
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
        reasoning_effort=effort,
    )


def _reasoning_effort(session: dict[str, Any]) -> str | None:
    """GA ``session.reasoning.effort`` (reasoning models; beta has none).  Read leniently, like
    the formats: an odd shape is ``None`` (not stated), never the frame's turn-taking lost."""
    reasoning = session.get("reasoning")
    effort = reasoning.get("effort") if type(reasoning) is dict else None
    return effort[:32] if type(effort) is str and effort else None


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


def _timeout_triggered(data: dict[str, Any]) -> ev.IdleTimeoutTriggered:
    where = "input_audio_buffer.timeout_triggered"
    return ev.IdleTimeoutTriggered(
        item_id=opt_str(data, "item_id", where),
        audio_start_ms=_opt_int(data, "audio_start_ms", where, 0),
        audio_end_ms=_opt_int(data, "audio_end_ms", where, 0),
    )


def _input_transcript(data: dict[str, Any]) -> InputTranscript:
    where = data["type"]
    return InputTranscript(req_str(data, "item_id", where), req_str(data, "transcript", where))


def _input_transcript_delta(data: dict[str, Any]) -> InputTranscriptDelta:
    where = data["type"]
    return InputTranscriptDelta(req_str(data, "item_id", where), req_str(data, "delta", where))


def _item_id_type(item: object) -> tuple[str, str] | None:
    """An output item's ``id`` and ``type``, or ``None`` for a shape without them (it is then
    only a sign of life of its response)."""
    if type(item) is not dict:
        return None
    item_id = item.get("id")
    kind = item.get("type")
    if type(item_id) is not str or not item_id or type(kind) is not str:
        return None
    return item_id, kind[:64]


def _output_item_added(data: dict[str, Any]) -> OutputItemAdded | ResponseActivity:
    where = data["type"]
    response_id = req_str(data, "response_id", where)
    known = _item_id_type(data.get("item"))
    if known is None:
        return ResponseActivity(response_id, where)
    return OutputItemAdded(response_id, known[0], known[1])


def _output_item_done(
    data: dict[str, Any],
) -> FunctionCallDone | OutputItemDone | ResponseActivity:
    where = data["type"]
    response_id = req_str(data, "response_id", where)
    item = data.get("item")
    if type(item) is not dict or item.get("type") != "function_call":
        known = _item_id_type(item)
        if known is None:
            return ResponseActivity(response_id, where)
        return OutputItemDone(response_id, known[0])
    where = f"{where} item"
    return FunctionCallDone(
        response_id=response_id,
        item_id=opt_str(item, "id", where) or "",
        call_id=opt_str(item, "call_id", where) or "",
        name=opt_str(item, "name", where) or "",
        arguments=opt_str(item, "arguments", where) or "",
        status=opt_str(item, "status", where),
    )


def _item_added(data: dict[str, Any]) -> ItemAdded | Ignored:
    where = data["type"]
    item = data.get("item")
    # Only our tool outputs matter: any other item (or shape) is nothing to act on.
    if type(item) is not dict or item.get("type") != "function_call_output":
        return _IGNORED[where]
    item_type = "function_call_output"
    where = f"{where} item"
    return ItemAdded(opt_str(item, "id", where), item_type, opt_str(item, "call_id", where))


_HANDLERS: dict[str, Callable[[dict[str, Any]], ServerMessage]] = {
    "session.created": _session,
    "session.updated": _session,
    "response.created": _response_created,
    "response.done": _response_done,
    "error": _error,
    "input_audio_buffer.speech_started": _speech_started,
    "input_audio_buffer.speech_stopped": _speech_stopped,
    "input_audio_buffer.committed": _committed,
    "input_audio_buffer.timeout_triggered": _timeout_triggered,
    "conversation.item.input_audio_transcription.completed": _input_transcript,
    "conversation.item.input_audio_transcription.delta": _input_transcript_delta,
    "response.output_item.added": _output_item_added,
    "response.output_item.done": _output_item_done,
    "conversation.item.added": _item_added,
    "conversation.item.created": _item_added,
}
_HANDLERS.update(dict.fromkeys(AUDIO_DELTA_TYPES, _audio_delta))
_HANDLERS.update(dict.fromkeys(TRANSCRIPT_DELTA_TYPES, _transcript_delta))
_HANDLERS.update(dict.fromkeys(ACTIVITY_TYPES, _activity))

#: Every event type this adapter recognises: parsed or deliberately ignored.
KNOWN_TYPES: Final = frozenset(_HANDLERS) | IGNORED_TYPES
#: One shared instance per ignored type (and per parsed type whose other shapes are ignored):
#: nothing to allocate for the chatty ones.
_IGNORED: Final = {name: Ignored(name, known=True) for name in KNOWN_TYPES}

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

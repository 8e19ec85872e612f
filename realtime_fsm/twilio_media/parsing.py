"""Inbound message parsing: one Media Streams text frame in, one typed message out.

:func:`parse_message` and the parser per ``event`` it dispatches to, with the field readers
they share.  Tolerant of what real sessions show (numbers sent as strings, opaque stream sids,
unknown fields and events), strict about shape.  This is the per-frame path of the caller's
audio (``media``, 50 times a second) and of every mark echo.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

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
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaFormat,
    Start,
    Stop,
    TwilioMessage,
    UnknownMessage,
)

#: Default cap on one inbound message.  A 20 ms media message is about 300 bytes; ``start``
#: with custom parameters (each under 500 characters) is the largest thing Twilio sends.
DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024


# ------------------------------------------------------------------------------ field helpers


def _number(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    """A non-negative integer sent as a string (Twilio) or a number (compatible providers)."""
    value = obj.get(key)
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        if value.isascii() and value.isdigit():
            try:
                return int(value)
            except ValueError:  # more digits than int() accepts
                pass
    elif kind is int:
        if value >= 0:
            return int(value)
    elif kind is float and value.is_integer() and value >= 0:
        return int(value)
    raise bad_field(where, key, "a non-negative integer or a string of digits", obj)


def _scalar_text(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    """Text that some senders write as a number (a version, a DTMF digit, a parameter)."""
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) in (int, float):
        return str(value)
    raise bad_field(where, key, "a string", obj)


def _stream_sid(data: Mapping[str, Any], where: str) -> str | None:
    sid = opt_str(data, "streamSid", where)
    return sid or None


# ----------------------------------------------------------------------------------- parsing


def _connected(data: dict[str, Any]) -> Connected:
    return Connected(
        protocol=_scalar_text(data, "protocol", "connected"),
        version=_scalar_text(data, "version", "connected"),
    )


def _start(data: dict[str, Any]) -> Start:
    start = req_obj(data, "start", "start")
    where = "start.start"
    top_sid = _stream_sid(data, "start")
    sid = opt_str(start, "streamSid", where) or top_sid
    if not sid:
        raise RemoteProtocolError("start: no streamSid (neither start.streamSid nor streamSid)")
    if top_sid is not None and top_sid != sid:
        raise RemoteProtocolError(f"start: streamSid {top_sid!r} != start.streamSid {sid!r}")
    tracks = start.get("tracks")
    if tracks is None:
        tracks = []
    elif type(tracks) is not list or not all(type(t) is str for t in tracks):
        raise bad_field(where, "tracks", "an array of strings", start)
    params_raw = opt_obj(start, "customParameters", where) or {}
    params: dict[str, str] = {}
    for name in params_raw:
        value = _scalar_text(params_raw, name, f"{where}.customParameters")
        if value is not None:
            params[name] = value
    fmt_raw = opt_obj(start, "mediaFormat", where)
    media_format = None
    if fmt_raw is not None:
        fmt_where = f"{where}.mediaFormat"
        rate = _number(fmt_raw, "sampleRate", fmt_where)
        if rate is None:
            raise bad_field(fmt_where, "sampleRate", "a non-negative integer", fmt_raw)
        channels = _number(fmt_raw, "channels", fmt_where)
        media_format = MediaFormat(
            encoding=req_str(fmt_raw, "encoding", fmt_where),
            sample_rate=rate,
            channels=1 if channels is None else channels,
        )
    return Start(
        stream_sid=sid,
        call_sid=opt_str(start, "callSid", where),
        account_sid=opt_str(start, "accountSid", where),
        tracks=tuple(tracks),
        custom_parameters=params,
        media_format=media_format,
        sequence_number=_number(data, "sequenceNumber", "start"),
    )


def _media(data: dict[str, Any]) -> Media:
    media = data.get("media")
    if type(media) is not dict:
        raise bad_field("media", "media", "an object", data)
    payload = media.get("payload")
    if type(payload) is not str:
        raise bad_field("media.media", "payload", "a base64 string", media)
    return Media(
        payload=payload,
        track=opt_str(media, "track", "media.media"),
        chunk=_number(media, "chunk", "media.media"),
        timestamp=_number(media, "timestamp", "media.media"),
        stream_sid=_stream_sid(data, "media"),
        sequence_number=_number(data, "sequenceNumber", "media"),
    )


def _dtmf(data: dict[str, Any]) -> Dtmf:
    dtmf = req_obj(data, "dtmf", "dtmf")
    digit = _scalar_text(dtmf, "digit", "dtmf.dtmf")
    if not digit:
        raise bad_field("dtmf.dtmf", "digit", "a non-empty string", dtmf)
    return Dtmf(
        digit=digit,
        track=opt_str(dtmf, "track", "dtmf.dtmf"),
        stream_sid=_stream_sid(data, "dtmf"),
        sequence_number=_number(data, "sequenceNumber", "dtmf"),
    )


def _mark(data: dict[str, Any]) -> Mark:
    mark = req_obj(data, "mark", "mark")
    return Mark(
        name=req_str(mark, "name", "mark.mark"),
        stream_sid=_stream_sid(data, "mark"),
        sequence_number=_number(data, "sequenceNumber", "mark"),
    )


def _stop(data: dict[str, Any]) -> Stop:
    stop = opt_obj(data, "stop", "stop") or {}
    return Stop(
        account_sid=opt_str(stop, "accountSid", "stop.stop"),
        call_sid=opt_str(stop, "callSid", "stop.stop"),
        stream_sid=_stream_sid(data, "stop"),
        sequence_number=_number(data, "sequenceNumber", "stop"),
    )


_PARSERS: dict[str, Callable[[dict[str, Any]], TwilioMessage]] = {
    "connected": _connected,
    "start": _start,
    "media": _media,
    "dtmf": _dtmf,
    "mark": _mark,
    "stop": _stop,
}
#: Every inbound ``event`` value this adapter parses.
INBOUND_EVENTS: Final = frozenset(_PARSERS)


def parse_message(
    frame: str | bytes | bytearray, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> TwilioMessage:
    """Turn one inbound Media Streams text frame into a typed message.

    Raises :class:`RemoteProtocolError` for bad JSON, a non-object, an oversized frame, a missing
    ``event``, or a known message with a missing or wrongly typed required part.  An unknown
    ``event`` is :class:`UnknownMessage`, not an error."""
    data = load_json_object(frame, max_message_size, "Twilio")
    event = data.get("event")
    if type(event) is not str:
        raise bad_field("Twilio message", "event", "a string", data)
    parser = _PARSERS.get(event)
    if parser is None:
        return UnknownMessage(event)
    return parser(data)

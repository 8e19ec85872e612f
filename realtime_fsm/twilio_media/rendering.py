"""Outbound message rendering: the ``media``, ``mark`` and ``clear`` messages a bridge sends.

Each returns the JSON text to write.  :func:`media_message` and :func:`mark_message` are on the
per-frame path of the assistant's audio, so a payload or name that needs no escaping is put in
a template instead of going through ``json.dumps``.  Nothing may be sent before ``start``: every
message needs the stream's sid, which is checked here rather than by Twilio.
"""

from __future__ import annotations

import json
from typing import Any

from .._wire import plain_json_string
from ..errors import LocalProtocolError


def _check_sid(stream_sid: str) -> None:
    if type(stream_sid) is not str or not stream_sid:
        raise LocalProtocolError(
            f"outbound Twilio message needs the stream's streamSid, got {stream_sid!r};"
            " nothing may be sent before 'start'"
        )


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def media_message(stream_sid: str, payload: str) -> str:
    """``media`` with a base64 mu-law payload passed through as is (no track, chunk or
    timestamp: Twilio's schema has none outbound, and extra fields are a 31951 error)."""
    _check_sid(stream_sid)
    if type(payload) is str and plain_json_string(payload) and plain_json_string(stream_sid):
        return f'{{"event":"media","streamSid":"{stream_sid}","media":{{"payload":"{payload}"}}}}'
    return _dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


def mark_message(stream_sid: str, name: str) -> str:
    """``mark``; Twilio echoes it when the audio sent before it has played (or was cleared)."""
    _check_sid(stream_sid)
    if type(name) is not str or not name:
        raise LocalProtocolError(f"mark name must be a non-empty string, got {name!r}")
    if plain_json_string(name) and plain_json_string(stream_sid):
        return f'{{"event":"mark","streamSid":"{stream_sid}","mark":{{"name":"{name}"}}}}'
    return _dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    """``clear``: drop all audio buffered at Twilio; pending marks come back at once."""
    _check_sid(stream_sid)
    return _dumps({"event": "clear", "streamSid": stream_sid})

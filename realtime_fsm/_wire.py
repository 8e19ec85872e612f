"""JSON framing shared by the protocol adapters (private).

Both peers send one JSON object per WebSocket text frame, and both adapters must turn every way
that can go wrong into a :class:`~realtime_fsm.errors.RemoteProtocolError`, the same way.  Kept
apart so neither adapter imports the other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import RemoteProtocolError

#: True for a string that ``json.dumps`` writes as ``'"' + s + '"'`` (printable ASCII without
#: ``"`` and ``\\``): base64 audio, stream sids, mark names.  The per-frame messages are built
#: around such strings with concatenation instead of a ``json.dumps`` of a dict, which costs
#: more than everything else done to an audio frame; anything else still goes through
#: ``json.dumps``, so the output is byte-identical either way.
plain_json_string: Callable[[str], object] = re.compile(r"[ !#-\[\]-~]*\Z").match


def kind(value: object) -> str:
    """A JSON name for what was found, so an error message says ``got null``, not ``NoneType``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def bad_field(where: str, key: str, expected: str, obj: Mapping[str, Any]) -> RemoteProtocolError:
    """The error for a missing or wrongly typed field (returned, so callers ``raise`` it)."""
    found = kind(obj[key]) if key in obj else "missing"
    return RemoteProtocolError(f"{where}: field {key!r} must be {expected}, got {found}")


def load_json_object(
    frame: str | bytes | bytearray, max_frame_size: int, what: str
) -> dict[str, Any]:
    """Decode one text frame into a JSON object, or raise :class:`RemoteProtocolError`.

    The size check comes first, so an oversized frame costs no parsing; it counts characters
    for ``str`` and bytes otherwise.  Deep nesting (``RecursionError``) and undecodable bytes are
    peer errors like any other bad JSON."""
    if len(frame) > max_frame_size:
        raise RemoteProtocolError(
            f"{what} frame of length {len(frame)} exceeds the limit of {max_frame_size}"
        )
    try:
        data = json.loads(frame)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise RemoteProtocolError(f"{what} frame is not valid JSON: {exc}") from None
    if type(data) is not dict:
        raise RemoteProtocolError(f"{what} frame must be a JSON object, got {kind(data)}")
    return data


def req_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if type(value) is not str:
        raise bad_field(where, key, "a string", obj)
    return value


def opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    raise bad_field(where, key, "a string or null", obj)


def req_obj(obj: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if type(value) is not dict:
        raise bad_field(where, key, "an object", obj)
    return value


def opt_obj(obj: Mapping[str, Any], key: str, where: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is None or type(value) is dict:
        return value
    raise bad_field(where, key, "an object or null", obj)

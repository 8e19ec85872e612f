"""The two protocol parsers and the HTTP head parser, fuzzed: whatever a peer sends, the answer
is a parsed message or a :class:`~realtime_fsm.errors.RemoteProtocolError` (which the call
counts as a bad frame) -- for a request head, an ``HttpError`` with the status to send -- never
another exception.  Inputs are raw bytes, arbitrary text, and JSON objects shaped like the real
events (every known type, fields of every JSON type, nested at random), so the checks behind
the first field are reached too.

A bounded run is part of the suite; a longer one::

    RTFSM_FUZZ_EXAMPLES=200000 python -m pytest -q tests/test_fuzz_parsers.py
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime_fsm.errors import RemoteProtocolError
from realtime_fsm.http_head import HttpError, content_length, parse_head
from realtime_fsm.openai_realtime import KNOWN_TYPES, Dialect, OpenAIRealtimeCodec
from realtime_fsm.twilio_media import parse_message

#: Slow, so a plain ``pytest`` deselects it; CI runs it (``pytest -m ''``):
#: thousands of hypothesis examples per parser.
pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("RTFSM_FUZZ_EXAMPLES", "600"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
TWILIO_EVENTS = ["connected", "start", "media", "mark", "dtmf", "stop", "text", "other"]
TWILIO_KEYS = [
    "event", "streamSid", "sequenceNumber", "start", "media", "mark", "dtmf", "stop",
    "callSid", "accountSid", "tracks", "customParameters", "mediaFormat", "encoding",
    "sampleRate", "channels", "payload", "track", "chunk", "timestamp", "name", "digit",
]  # fmt: skip
OPENAI_KEYS = [
    "type", "event_id", "response_id", "item_id", "delta", "response", "session", "error",
    "status", "status_details", "metadata", "id", "code", "message", "output_modalities",
    "audio", "input", "output", "format", "turn_detection", "item", "call_id", "name",
    "arguments", "transcript", "audio_start_ms", "audio_end_ms", "output", "content",
]  # fmt: skip


def shaped(keys: list[str], first: str, values: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with a plausible first field and other known keys holding any JSON, nested one
    level in objects of known keys too, so validation past the type is exercised."""
    nested = st.dictionaries(st.sampled_from(keys), JSON_VALUES, max_size=6)
    field = JSON_VALUES | nested
    return st.builds(
        lambda kind, rest: {first: kind, **rest},
        st.sampled_from(values) | JSON_SCALARS,
        st.dictionaries(st.sampled_from(keys), field, max_size=8),
    )


def _only_typed_errors(call: Any, frame: str | bytes) -> None:
    # Anything else raised fails the test with the input hypothesis shrank it to.
    with contextlib.suppress(RemoteProtocolError):
        call(frame)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_twilio_parser_on_anything(frame: str | bytes) -> None:
    _only_typed_errors(parse_message, frame)


@FUZZ
@given(shaped(TWILIO_KEYS, "event", TWILIO_EVENTS))
def test_twilio_parser_on_shaped_json(event: dict[str, Any]) -> None:
    _only_typed_errors(parse_message, json.dumps(event))


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300), st.sampled_from(list(Dialect)))
def test_openai_parser_on_anything(frame: str | bytes, dialect: Dialect) -> None:
    _only_typed_errors(OpenAIRealtimeCodec(dialect=dialect).parse, frame)


@FUZZ
@given(shaped(OPENAI_KEYS, "type", sorted(KNOWN_TYPES)), st.sampled_from(list(Dialect)))
def test_openai_parser_on_shaped_json(event: dict[str, Any], dialect: Dialect) -> None:
    _only_typed_errors(OpenAIRealtimeCodec(dialect=dialect).parse, json.dumps(event))


HEAD_LINES = st.lists(
    st.one_of(
        st.binary(max_size=60),
        st.sampled_from(
            [
                b"GET /incoming-call?CallSid=CA1 HTTP/1.1",
                b"POST /media-stream HTTP/1.1",
                b"Host: example",
                b"Content-Length: 12",
                b"Content-Length: abc",
                b"Content-Length: -1",
                b"Transfer-Encoding: chunked",
                b"Upgrade: websocket",
                b"X-Twilio-Signature: abc=",
                b" folded",
                b"Bad Header",
                b"",
            ]
        ),
    ),
    max_size=12,
)


@FUZZ
@given(HEAD_LINES, st.integers(0, 70_000))
def test_http_head_parser_on_anything(lines: list[bytes], limit: int) -> None:
    """A request head answers with a request or an :class:`HttpError` (a status to send)."""
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    try:
        request = parse_head(head, "127.0.0.1:1")
        content_length(request, limit)
        request.form_fields()
        _ = request.query_string
    except HttpError as exc:
        assert 400 <= exc.status < 600

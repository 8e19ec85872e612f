"""The Twilio Media Streams adapter: documented and recorded message shapes, tolerance, strictness,
outbound shapes, and the playback tracker's mark generations.

Shapes come from ``../shared/reference/twilio-media-streams.md``: the Twilio docs examples
(section 1 and 2) and the real recorded sessions it lists (section 6).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings, stateful
from hypothesis import strategies as st

from realtime_fsm import (
    ClearPlayback,
    LocalProtocolError,
    PlaybackProgress,
    RemoteProtocolError,
    ResponseCreated,
    ResponseLifecycle,
    SendItemDelete,
    SendTruncate,
    SpeechStarted,
)
from realtime_fsm.twilio_media import (
    DEFAULT_MAX_MESSAGE_SIZE,
    INBOUND_EVENTS,
    MULAW_BYTES_PER_MS,
    Connected,
    Dtmf,
    Mark,
    MarkName,
    Media,
    MediaFormat,
    PlaybackTracker,
    Start,
    Stop,
    UnknownMessage,
    clear_message,
    mark_message,
    media_message,
    parse_message,
)

SID = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"

# ---------------------------------------------------------------- documented shapes (Twilio docs)

DOC_CONNECTED = '{ "event": "connected", "protocol": "Call", "version": "1.0.0" }'
DOC_START = """{
  "event": "start",
  "sequenceNumber": "1",
  "start": {
    "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "tracks": [ "inbound" ],
    "mediaFormat": { "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 },
    "customParameters": { "FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob" }
  },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
}"""
DOC_MEDIA = """{ "event": "media", "sequenceNumber": "4",
  "media": { "track": "inbound", "chunk": "2", "timestamp": "5", "payload": "no+JhoaJjpzS..." },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX" }"""
DOC_DTMF = """{ "event": "dtmf", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
  "sequenceNumber": "5",
  "dtmf": { "track": "inbound_track", "digit": "1" } }"""
DOC_MARK = """{ "event": "mark", "sequenceNumber": "4",
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
  "mark": { "name": "my label" } }"""
DOC_STOP = """{ "event": "stop", "sequenceNumber": "5",
  "stop": { "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX" },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX" }"""


def test_documented_connected() -> None:
    assert parse_message(DOC_CONNECTED) == Connected(protocol="Call", version="1.0.0")


def test_documented_start() -> None:
    start = parse_message(DOC_START)
    assert start == Start(
        stream_sid=SID,
        call_sid="CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        account_sid="ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        tracks=("inbound",),
        custom_parameters={"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
        media_format=MediaFormat("audio/x-mulaw", 8000, 1),
        sequence_number=1,
    )
    assert isinstance(start, Start)
    assert start.media_format is not None and start.media_format.is_mulaw_8k_mono
    with pytest.raises(TypeError):
        start.custom_parameters["FirstName"] = "x"  # type: ignore[index]


def test_documented_media() -> None:
    assert parse_message(DOC_MEDIA) == Media(
        payload="no+JhoaJjpzS...",
        track="inbound",
        chunk=2,
        timestamp=5,
        stream_sid=SID,
        sequence_number=4,
    )


def test_documented_dtmf_mark_stop() -> None:
    assert parse_message(DOC_DTMF) == Dtmf(
        digit="1", track="inbound_track", stream_sid=SID, sequence_number=5
    )
    assert parse_message(DOC_MARK) == Mark(name="my label", stream_sid=SID, sequence_number=4)
    assert parse_message(DOC_STOP) == Stop(
        account_sid="ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        call_sid="CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        stream_sid=SID,
        sequence_number=5,
    )


def test_every_documented_inbound_event_is_parsed() -> None:
    assert {"connected", "start", "media", "dtmf", "mark", "stop"} == INBOUND_EVENTS


# ------------------------------------------------------------------------ recorded real sessions

# twilio/media-streams node/connect-basic/output.txt (2020-06-11, real bidirectional session),
# converted from Node's console.log notation to JSON: a UUID streamSid.
REAL_2020_START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC18fbd524d33614fba208030751dffdca",
            "streamSid": "9e7ee906-377b-408f-a852-eebfb834422a",
            "callSid": "CA3c95a2a6bba5fde93a5dea01e388e8fb",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"aCutomParameter": "aCustomValue that was set in TwiML"},
        },
        "streamSid": "9e7ee906-377b-408f-a852-eebfb834422a",
    }
)
REAL_2020_MEDIA = json.dumps(
    {
        "event": "media",
        "sequenceNumber": "2",
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "52",
            "payload": "6/jk2NbZ3uXj5Oz+bmhiYnD07+XWy8bIzdjg6mpNPzk3Nzc2Njg/UXXl2s7Cu7u+xcnLzdr7aG"
            "p98/94++PTztXc3NfV3PRnYGNhXVtfe9vMxcXJzM/X81JAOjY0MjEwMzlDVX3dzsK6tre8wsfK0OxdVFtx/n"
            "Zw89fMzNLb3NPS3v5kYXZvXl5q3snBvb3BxsrYakY3Ly0sKysrLjZCZA==",
        },
        "streamSid": "9e7ee906-377b-408f-a852-eebfb834422a",
    }
)
# Echoed marks in that session came back with sequence numbers 103, 154, 205 between media.
REAL_2020_MARK = json.dumps(
    {
        "event": "mark",
        "sequenceNumber": "103",
        "streamSid": "9e7ee906-377b-408f-a852-eebfb834422a",
        "mark": {"name": "Repeat message 0"},
    }
)
# Raw compact JSON exactly as received (the TypeScript Bun server comment block, section 6 #3).
REAL_COMPACT = [
    '{"event":"connected","protocol":"Call","version":"1.0.0"}',
    '{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC7e2b7d19e3afe0f5715710b94d26db7e",'
    '"streamSid":"MZ5174584e1127285e2b015e720b3d9e68","callSid":"CA45397943c1c7a49f7b7713c230107a39",'
    '"tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},'
    '"customParameters":{}},"streamSid":"MZ5174584e1127285e2b015e720b3d9e68"}',
    '{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"155",'
    '"payload":"f39///////9/f39/f3//f3///v///////////39/f3///3//f39/f////3//f3///////39/f39//39/f39/'
    "f39//3//f////////39/fn9/f/9/f39/f3//f39/f/9//////3///////////39/f/////9/////////////f39/f39//3"
    '9//3///3//////f39/f39///9/f39//39/fw=="},"streamSid":"MZ5174584e1127285e2b015e720b3d9e68"}',
    '{"event":"media","sequenceNumber":"74","media":{"track":"inbound","chunk":"73","timestamp":"1593",'
    '"payload":"/39/f/9/f39//39///////9/////f39/f39/////f/9/f3//f39/f39/f/9//////39///9/f///f///f/9'
    "///9//////39/f3///3////////////9/f39/f/////9/f39/f39//39///////////9/f39/f39/f/9//39/f////////"
    '/9///////9/f39/f3//f///f/9/f39/f3//fw=="},"streamSid":"MZ5174584e1127285e2b015e720b3d9e68"}',
]
# tigerfarm/work wss/README.md: a 2019 beta-era <Start><Stream> session, as logged (line-wrapped
# JSON; the media payload was elided in the log, so a 160-byte one stands in for it).
REAL_2019 = [
    '{"event":"connected","protocol":"Call","version":"0.2.0"}',
    """{"event":"start","sequenceNumber":"1",
"start":{"accountSid":"AC1b32414e8ab41e56e6393bcbba7d5a9d",
"streamSid":"MZc3320b5e6fba10a11d7c96fe1903e3f0",
"callSid":"CA77145f1c2f9166cab03d083d5804d9ae",
"tracks":["inbound"],
"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},
"customParameters":{"hello":"HelloValue"}
},
"streamSid":"MZc3320b5e6fba10a11d7c96fe1903e3f0"}""",
    """{
   "event":"media","sequenceNumber":"2",
   "media":{"track":"inbound","chunk":"1","timestamp":"102",
   "payload":"PAYLOAD"},
   "streamSid":"MZc3320b5e6fba10a11d7c96fe1903e3f0"
}""".replace("PAYLOAD", base64.b64encode(b"\xff" * 160).decode()),
    """{
"event":"stop","sequenceNumber":"352","streamSid":"MZc3320b5e6fba10a11d7c96fe1903e3f0",
"stop":{"accountSid":"AC1b32414e8ab41e56e6393bcbba7d5a9d","callSid":"CA77145f1c2f9166cab03d083d5804d9ae"}
}""",
]


def test_real_session_uuid_stream_sid() -> None:
    start = parse_message(REAL_2020_START)
    assert isinstance(start, Start)
    assert start.stream_sid == "9e7ee906-377b-408f-a852-eebfb834422a"
    assert start.custom_parameters == {"aCutomParameter": "aCustomValue that was set in TwiML"}
    media = parse_message(REAL_2020_MEDIA)
    assert isinstance(media, Media)
    assert (media.chunk, media.timestamp, media.sequence_number) == (1, 52, 2)
    assert len(base64.b64decode(media.payload)) == 160  # 20 ms of mu-law


def test_real_session_marks_count_in_sequence_numbers() -> None:
    mark = parse_message(REAL_2020_MARK)
    assert mark == Mark(
        name="Repeat message 0",
        stream_sid="9e7ee906-377b-408f-a852-eebfb834422a",
        sequence_number=103,
    )


def test_real_compact_session() -> None:
    connected, start, first, later = (parse_message(frame) for frame in REAL_COMPACT)
    assert connected == Connected("Call", "1.0.0")
    assert isinstance(start, Start) and start.custom_parameters == {}
    assert start.media_format == MediaFormat("audio/x-mulaw", 8000, 1)
    assert isinstance(first, Media) and isinstance(later, Media)
    assert (first.chunk, first.timestamp) == (1, 155)
    assert (later.chunk, later.timestamp, later.sequence_number) == (73, 1593, 74)
    for media in (first, later):
        assert len(base64.b64decode(media.payload)) == 160
    # ~20 ms per chunk between the two recorded frames.
    assert later.chunk is not None and first.chunk is not None
    assert later.timestamp is not None and first.timestamp is not None
    per_chunk = (later.timestamp - first.timestamp) / (later.chunk - first.chunk)
    assert 19.5 < per_chunk < 20.5


def test_real_2019_session() -> None:
    sid = "MZc3320b5e6fba10a11d7c96fe1903e3f0"
    connected, start, media, stop = (parse_message(frame) for frame in REAL_2019)
    assert connected == Connected("Call", "0.2.0")  # a beta-era version: not checked
    assert isinstance(start, Start)
    assert start.stream_sid == sid
    assert start.custom_parameters == {"hello": "HelloValue"}
    assert isinstance(media, Media)
    assert (media.chunk, media.timestamp, media.stream_sid) == (1, 102, sid)
    assert stop == Stop(
        account_sid="AC1b32414e8ab41e56e6393bcbba7d5a9d",
        call_sid="CA77145f1c2f9166cab03d083d5804d9ae",
        stream_sid=sid,
        sequence_number=352,
    )


# ----------------------------------------------------------------------------------- tolerance


def test_numbers_may_be_numbers() -> None:
    frame = json.dumps(
        {
            "event": "media",
            "sequenceNumber": 7,
            "streamSid": SID,
            "media": {"chunk": 3, "timestamp": 1700000000123.0, "payload": "AAAA"},
        }
    )
    media = parse_message(frame)
    assert isinstance(media, Media)
    assert (media.sequence_number, media.chunk, media.timestamp) == (7, 3, 1700000000123)
    assert media.track is None


def test_extra_fields_and_missing_optional_parts_are_tolerated() -> None:
    assert parse_message('{"event":"connected","extra":{"a":[1]}}') == Connected()
    assert parse_message('{"event":"connected","version":1}') == Connected(version="1")
    assert parse_message('{"event":"stop"}') == Stop()
    assert parse_message('{"event":"mark","mark":{"name":"x","extra":1}}') == Mark(name="x")
    start = parse_message('{"event":"start","start":{"streamSid":"S"},"foo":"bar"}')
    assert start == Start(stream_sid="S")
    media = parse_message('{"event":"media","media":{"payload":""}}')
    assert media == Media(payload="")


def test_start_stream_sid_may_come_from_the_top_level() -> None:
    start = parse_message('{"event":"start","streamSid":"S1","start":{"callSid":"CA1"}}')
    assert start == Start(stream_sid="S1", call_sid="CA1")


def test_custom_parameters_numbers_become_text() -> None:
    frame = json.dumps(
        {
            "event": "start",
            "start": {
                "streamSid": "S",
                "customParameters": {"n": 5, "b": True, "s": "x", "none": None},
            },
        }
    )
    start = parse_message(frame)
    assert isinstance(start, Start)
    assert dict(start.custom_parameters) == {"n": "5", "b": "true", "s": "x"}


def test_media_format_check_refuses_non_mulaw() -> None:
    # SignalWire L16 at 24 kHz: parsed (tolerant), but not passthrough-compatible.
    frame = json.dumps(
        {
            "event": "start",
            "start": {
                "streamSid": "S",
                "mediaFormat": {"encoding": "audio/x-L16", "sampleRate": "24000", "channels": 1},
            },
        }
    )
    start = parse_message(frame)
    assert isinstance(start, Start) and start.media_format is not None
    assert start.media_format.sample_rate == 24000
    assert not start.media_format.is_mulaw_8k_mono
    assert MediaFormat("AUDIO/X-MULAW", 8000).is_mulaw_8k_mono


def test_unknown_event_is_not_an_error() -> None:
    assert parse_message('{"event":"playedStream","name":"x"}') == UnknownMessage("playedStream")


def test_bytes_frames_are_accepted() -> None:
    assert parse_message(DOC_MARK.encode()) == parse_message(DOC_MARK)
    assert parse_message(bytearray(DOC_MARK.encode())) == parse_message(DOC_MARK)


# ----------------------------------------------------------------------------------- strictness

MALFORMED = [
    ("bad json", "{"),
    ("bad utf-8", b"\xff\xfe\xfd"),
    ("empty", ""),
    ("array", "[]"),
    ("string", '"media"'),
    ("null", "null"),
    ("deep nesting", "[" * 50_000),
    ("no event", '{"streamSid":"S"}'),
    ("event number", '{"event":1}'),
    ("media without media", '{"event":"media"}'),
    ("media not object", '{"event":"media","media":"AAAA"}'),
    ("media without payload", '{"event":"media","media":{"track":"inbound"}}'),
    ("media payload number", '{"event":"media","media":{"payload":12}}'),
    ("media chunk letters", '{"event":"media","media":{"payload":"","chunk":"abc"}}'),
    ("media chunk negative", '{"event":"media","media":{"payload":"","chunk":-1}}'),
    ("media chunk signed string", '{"event":"media","media":{"payload":"","chunk":"-1"}}'),
    ("media timestamp fraction", '{"event":"media","media":{"payload":"","timestamp":1.5}}'),
    ("media timestamp bool", '{"event":"media","media":{"payload":"","timestamp":true}}'),
    ("media track number", '{"event":"media","media":{"payload":"","track":1}}'),
    ("sequence number object", '{"event":"media","sequenceNumber":{},"media":{"payload":""}}'),
    ("huge digit string", '{"event":"media","sequenceNumber":"' + "9" * 5000 + '"}'),
    ("stream sid number", '{"event":"mark","streamSid":5,"mark":{"name":"x"}}'),
    ("mark without mark", '{"event":"mark"}'),
    ("mark without name", '{"event":"mark","mark":{}}'),
    ("mark name number", '{"event":"mark","mark":{"name":3}}'),
    ("dtmf without dtmf", '{"event":"dtmf"}'),
    ("dtmf empty digit", '{"event":"dtmf","dtmf":{"digit":""}}'),
    ("dtmf digit list", '{"event":"dtmf","dtmf":{"digit":[1]}}'),
    ("start without start", '{"event":"start","streamSid":"S"}'),
    ("start without stream sid", '{"event":"start","start":{"callSid":"CA"}}'),
    ("start empty stream sid", '{"event":"start","start":{"streamSid":""}}'),
    (
        "start sids disagree",
        '{"event":"start","streamSid":"S1","start":{"streamSid":"S2"}}',
    ),
    ("start tracks string", '{"event":"start","start":{"streamSid":"S","tracks":"inbound"}}'),
    (
        "start params array",
        '{"event":"start","start":{"streamSid":"S","customParameters":["a"]}}',
    ),
    (
        "start param object",
        '{"event":"start","start":{"streamSid":"S","customParameters":{"a":{}}}}',
    ),
    (
        "start format without rate",
        '{"event":"start","start":{"streamSid":"S","mediaFormat":{"encoding":"audio/x-mulaw"}}}',
    ),
    (
        "start format without encoding",
        '{"event":"start","start":{"streamSid":"S","mediaFormat":{"sampleRate":8000}}}',
    ),
    ("start call sid number", '{"event":"start","start":{"streamSid":"S","callSid":1}}'),
    ("stop not object", '{"event":"stop","stop":"x"}'),
    ("connected version list", '{"event":"connected","version":[1]}'),
]


@pytest.mark.parametrize(("label", "frame"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_is_a_remote_protocol_error(label: str, frame: str | bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(frame)
    assert info.value.message


def test_error_messages_say_what_is_wrong() -> None:
    with pytest.raises(
        RemoteProtocolError, match=r"'payload' must be a base64 string, got missing"
    ):
        parse_message('{"event":"media","media":{}}')
    with pytest.raises(RemoteProtocolError, match="no streamSid"):
        parse_message('{"event":"start","start":{}}')


def test_oversized_message_is_refused() -> None:
    frame = json.dumps({"event": "media", "media": {"payload": "A" * DEFAULT_MAX_MESSAGE_SIZE}})
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        parse_message(frame)
    assert isinstance(parse_message(frame, max_message_size=len(frame)), Media)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
RESULT_TYPES = (Connected, Start, Media, Dtmf, Mark, Stop, UnknownMessage)


def _parsed_or_refused(frame: str | bytes) -> None:
    try:
        result = parse_message(frame)
    except RemoteProtocolError as exc:
        assert exc.message
        return
    assert isinstance(result, RESULT_TYPES)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(frame: bytes) -> None:
    _parsed_or_refused(frame)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([*sorted(INBOUND_EVENTS), "other"]),
    st.dictionaries(
        st.sampled_from(
            ["streamSid", "sequenceNumber", "start", "media", "dtmf", "mark", "stop", "version"]
        ),
        json_values,
        max_size=5,
    ),
)
def test_random_fields_on_every_event_only_raise_remote_errors(
    event: str, fields: dict[str, Any]
) -> None:
    _parsed_or_refused(json.dumps({**fields, "event": event}))


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(INBOUND_EVENTS)),
    st.dictionaries(
        st.sampled_from(
            [
                "payload",
                "chunk",
                "timestamp",
                "track",
                "name",
                "digit",
                "streamSid",
                "callSid",
                "tracks",
                "customParameters",
                "mediaFormat",
            ]
        ),
        json_values,
        max_size=5,
    ),
)
def test_random_inner_objects_only_raise_remote_errors(event: str, inner: dict[str, Any]) -> None:
    _parsed_or_refused(json.dumps({"event": event, event: inner, "streamSid": "S"}))


# ---------------------------------------------------------------------------- outbound messages


def test_outbound_media_shape_passes_the_payload_through() -> None:
    payload = "f39///////9/f39/f3//f3///v///////////39/f3///3//fw=="
    message = json.loads(media_message(SID, payload))
    assert message == {"event": "media", "streamSid": SID, "media": {"payload": payload}}
    # No inbound-only fields on outbound media (Twilio 31951 on schema violations).
    assert set(message["media"]) == {"payload"}


def test_outbound_mark_and_clear_shapes() -> None:
    assert json.loads(mark_message(SID, "my label")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "my label"},
    }
    assert json.loads(clear_message(SID)) == {"event": "clear", "streamSid": SID}


def test_outbound_messages_are_compact_text() -> None:
    text = clear_message(SID)
    assert isinstance(text, str) and " " not in text


def test_outbound_round_trip_through_the_inbound_parser() -> None:
    # A mark we send comes back as the same name.
    echoed = json.loads(mark_message(SID, "g0:1:20:item_1"))
    echoed["sequenceNumber"] = "9"
    assert parse_message(json.dumps(echoed)) == Mark("g0:1:20:item_1", SID, 9)


@pytest.mark.parametrize("sid", ["", None, 5])
def test_outbound_before_start_is_refused(sid: Any) -> None:
    with pytest.raises(LocalProtocolError, match="streamSid"):
        media_message(sid, "AAAA")
    with pytest.raises(LocalProtocolError, match="streamSid"):
        mark_message(sid, "m")
    with pytest.raises(LocalProtocolError, match="streamSid"):
        clear_message(sid)


def test_outbound_mark_needs_a_name() -> None:
    with pytest.raises(LocalProtocolError):
        mark_message(SID, "")


# ----------------------------------------------------------------------------- playback tracker

CHUNK = 160  # bytes of mu-law = 20 ms


def test_mark_names_carry_the_generation() -> None:
    tracker = PlaybackTracker()
    name = tracker.audio_sent("item_abc", 1600)
    assert name == "g0:1:200:item_abc"
    assert MarkName.parse(name) == MarkName(0, 1, 200, "item_abc")
    assert str(MarkName.parse(name)) == name
    tracker.clear()
    assert tracker.audio_sent("item_abc", 160).startswith("g1:")


def test_mark_name_round_trips_item_ids_with_colons() -> None:
    decoded = MarkName.parse(str(MarkName(3, 7, 1600, "item:with:colons")))
    assert decoded == MarkName(3, 7, 1600, "item:with:colons")


@pytest.mark.parametrize(
    "name",
    [
        "my label",
        "",
        "g:1:2:i",
        "gx:1:2:i",
        "g1:1:2",
        "g1:a:2:i",
        "g1:1:-2:i",
        "g1:1:2:",
        "h1:1:2:i",
    ],
)
def test_foreign_mark_names_do_not_decode(name: str) -> None:
    assert MarkName.parse(name) is None


def test_played_ms_from_echoed_marks() -> None:
    tracker = PlaybackTracker()
    names = [tracker.audio_sent("item_1", CHUNK) for _ in range(5)]
    assert tracker.sent_ms("item_1") == 100
    assert tracker.pending_marks == 5 and tracker.playing
    assert tracker.mark_received(names[0]) == (PlaybackProgress("item_1", 20),)
    assert tracker.mark_received(names[1]) == (PlaybackProgress("item_1", 40),)
    assert tracker.played_ms("item_1") == 40
    assert tracker.pending_marks == 3
    for name in names[2:]:
        tracker.mark_received(name)
    assert tracker.played_ms("item_1") == 100
    assert not tracker.playing
    assert tracker.stats["marks_played"] == 5


def test_bytes_to_ms_is_eight_bytes_per_ms_rounded_up() -> None:
    assert MULAW_BYTES_PER_MS == 8
    tracker = PlaybackTracker()
    name = tracker.audio_sent("item_1", 3700 * 8 + 3)  # openclaw's 29,600 bytes = 3,700 ms, +3
    assert tracker.mark_received(name) == (PlaybackProgress("item_1", 3701),)
    tracker2 = PlaybackTracker(bytes_per_ms=48)  # 24 kHz PCM16
    assert tracker2.mark_received(tracker2.audio_sent("i", 4800)) == (PlaybackProgress("i", 100),)


def test_marks_echoed_after_clear_are_never_counted_as_played() -> None:
    tracker = PlaybackTracker()
    names = [tracker.audio_sent("item_1", CHUNK) for _ in range(10)]
    tracker.mark_received(names[0])
    tracker.mark_received(names[1])
    assert tracker.played_ms("item_1") == 40
    tracker.clear()
    assert tracker.generation == 1
    assert tracker.pending_marks == 0 and not tracker.playing
    # Twilio sends every remaining mark back at once after a clear.
    for name in names[2:]:
        assert tracker.mark_received(name) == ()
    assert tracker.stats["marks_cleared"] == 8
    assert tracker.stats["marks_dropped_by_clear"] == 8
    assert tracker.played_ms("item_1") == 0  # per-item counters restart with the generation


def test_an_in_flight_played_echo_at_clear_under_counts_by_one_chunk() -> None:
    # The documented race: the echo for chunk 3 was on its way when we sent clear.
    tracker = PlaybackTracker()
    names = [tracker.audio_sent("item_1", CHUNK) for _ in range(3)]
    tracker.mark_received(names[0])
    tracker.clear()
    assert tracker.mark_received(names[1]) == ()  # classed as cleared: safe side


def test_a_later_echo_implies_the_earlier_ones_played() -> None:
    tracker = PlaybackTracker()
    first = [tracker.audio_sent("item_1", CHUNK) for _ in range(2)]
    second = [tracker.audio_sent("item_2", CHUNK) for _ in range(2)]
    # Echoes for first[1] and second[0] went missing; second[1] proves all four played.
    assert tracker.mark_received(first[0]) == (PlaybackProgress("item_1", 20),)
    assert tracker.mark_received(second[1]) == (
        PlaybackProgress("item_1", 40),
        PlaybackProgress("item_2", 40),
    )
    assert tracker.pending_marks == 0
    assert tracker.stats["marks_implied"] == 2


def test_duplicate_unknown_and_foreign_echoes_are_ignored() -> None:
    tracker = PlaybackTracker()
    name = tracker.audio_sent("item_1", CHUNK)
    assert tracker.mark_received(name) == (PlaybackProgress("item_1", 20),)
    assert tracker.mark_received(name) == ()  # duplicate
    assert tracker.mark_received("g0:99:5000:item_1") == ()  # never sent
    assert tracker.mark_received("g7:1:20:item_1") == ()  # future generation
    assert tracker.mark_received("Repeat message 0") == ()  # somebody else's mark
    assert tracker.stats["marks_unknown"] == 3
    assert tracker.stats["marks_foreign"] == 1
    assert tracker.played_ms("item_1") == 20


def test_pending_marks_are_bounded() -> None:
    tracker = PlaybackTracker(max_pending=3)
    names = [tracker.audio_sent("item_1", CHUNK) for _ in range(5)]
    assert tracker.pending_marks == 3
    assert tracker.stats["marks_evicted"] == 2
    assert tracker.mark_received(names[0]) == ()
    assert tracker.mark_received(names[4]) == (PlaybackProgress("item_1", 100),)


def test_tracker_argument_checks() -> None:
    with pytest.raises(ValueError):
        PlaybackTracker(bytes_per_ms=0)
    with pytest.raises(ValueError):
        PlaybackTracker(max_pending=0)
    tracker = PlaybackTracker()
    with pytest.raises(LocalProtocolError):
        tracker.audio_sent("item_1", -1)
    with pytest.raises(LocalProtocolError):
        tracker.audio_sent("", 10)


def test_tracker_feeds_the_core_truncate() -> None:
    """Audio out, marks back, barge-in: the truncate is at what the caller heard."""
    lifecycle = ResponseLifecycle()
    tracker = PlaybackTracker()
    lifecycle.handle(ResponseCreated(response_id="resp_1"), now=0.0)  # a server VAD response
    names = []
    for index in range(10):  # 200 ms of audio sent
        assert lifecycle.audio_delta("resp_1", "item_a", CHUNK, now=0.01 * index)
        names.append(tracker.audio_sent("item_a", CHUNK))
    for name in names[:4]:  # 80 ms played
        for progress in tracker.mark_received(name):
            lifecycle.playback_progress(progress.item_id, progress.played_ms)
    commands = lifecycle.handle(SpeechStarted(item_id="item_u"), now=0.2)
    assert ClearPlayback(reason="barge_in") in commands
    truncates = [c for c in commands if isinstance(c, SendTruncate)]
    assert [(t.item_id, t.audio_end_ms) for t in truncates] == [("item_a", 80)]
    tracker.clear()  # the driver sends Twilio "clear" for ClearPlayback
    for name in names[4:]:
        assert tracker.mark_received(name) == ()


def test_nothing_heard_means_delete_not_truncate() -> None:
    lifecycle = ResponseLifecycle()
    tracker = PlaybackTracker()
    lifecycle.handle(ResponseCreated(response_id="resp_1"), now=0.0)
    lifecycle.audio_delta("resp_1", "item_a", CHUNK, now=0.01)
    name = tracker.audio_sent("item_a", CHUNK)
    commands = lifecycle.handle(SpeechStarted(), now=0.02)
    assert [c.item_id for c in commands if isinstance(c, SendItemDelete)] == ["item_a"]
    tracker.clear()
    assert tracker.mark_received(name) == ()


class TrackerMachine(stateful.RuleBasedStateMachine):
    """Random interleavings of sends, echoes (in order, as Twilio does) and clears."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = PlaybackTracker()
        #: (generation, name, item, end_ms) in send order, as Twilio will echo them.
        self.outstanding: list[tuple[int, str, str, int]] = []
        self.sent_bytes: dict[str, int] = {}

    @stateful.rule(item=st.sampled_from(["a", "b"]), size=st.integers(0, 400))
    def send(self, item: str, size: int) -> None:
        name = self.tracker.audio_sent(item, size)
        self.sent_bytes[item] = self.sent_bytes.get(item, 0) + size
        end_ms = -(-self.sent_bytes[item] // MULAW_BYTES_PER_MS)
        self.outstanding.append((self.tracker.generation, name, item, end_ms))

    @stateful.rule()
    def echo(self) -> None:
        if not self.outstanding:
            return
        generation, name, item, end_ms = self.outstanding.pop(0)
        before = self.tracker.played_ms(item)
        progress = self.tracker.mark_received(name)
        if generation < self.tracker.generation:
            assert progress == ()  # a cleared mark is never played
            assert self.tracker.played_ms(item) == before
        else:
            assert self.tracker.played_ms(item) == end_ms
            assert (PlaybackProgress(item, end_ms) in progress) == (end_ms > before)

    @stateful.rule()
    def clear(self) -> None:
        self.tracker.clear()
        self.sent_bytes.clear()

    @stateful.invariant()
    def pending_matches(self) -> None:
        current = [o for o in self.outstanding if o[0] == self.tracker.generation]
        assert self.tracker.pending_marks == len(current)
        for item, sent in self.sent_bytes.items():
            assert self.tracker.played_ms(item) <= self.tracker.sent_ms(item)
            assert self.tracker.sent_ms(item) == -(-sent // MULAW_BYTES_PER_MS)


TestTrackerMachine = TrackerMachine.TestCase
TestTrackerMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)

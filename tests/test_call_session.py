"""``CallSession`` driven by hand: no sockets, no asyncio, the clock a float passed in.

Every OpenAI server frame fed here is first validated by the ``openai`` package's own
``RealtimeServerEvent`` type, and every frame the session emits on ``out_openai`` is validated by
``RealtimeClientEvent``: the tests speak the documented protocol on both sides
(``shared/reference/openai-realtime.md``, ``twilio-media-streams.md``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import TypeAdapter

from realtime_fsm.call import (
    BridgeConfig,
    CallEnded,
    CallSession,
    TextFrame,
)
from realtime_fsm.errors import CallNotActive, LocalProtocolError
from realtime_fsm.table import CallState

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
CLIENT_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeClientEvent)

STREAM = "MZ00000000000000000000000000000001"
CALL = "CA00000000000000000000000000000001"
MULAW = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
#: 160 bytes of mu-law silence (20 ms), base64.
PAYLOAD = "/" * 212 + "/w=="  # 160 bytes of mu-law, base64


# ------------------------------------------------------------------------- Twilio frames


def tw_connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def tw_start(
    params: dict[str, str] | None = None, media_format: dict[str, Any] | None = MULAW
) -> str:
    start: dict[str, Any] = {
        "accountSid": "AC00000000000000000000000000000001",
        "streamSid": STREAM,
        "callSid": CALL,
        "tracks": ["inbound"],
        "customParameters": params or {},
    }
    if media_format is not None:
        start["mediaFormat"] = media_format
    return json.dumps(
        {"event": "start", "sequenceNumber": "1", "start": start, "streamSid": STREAM}
    )


def tw_media(chunk: int = 1) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(chunk + 1),
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(20 * chunk),
                "payload": PAYLOAD,
            },
            "streamSid": STREAM,
        }
    )


def tw_mark(name: str) -> str:
    return json.dumps(
        {"event": "mark", "sequenceNumber": "9", "streamSid": STREAM, "mark": {"name": name}}
    )


def tw_dtmf(digit: str) -> str:
    return json.dumps(
        {
            "event": "dtmf",
            "sequenceNumber": "7",
            "streamSid": STREAM,
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def tw_stop() -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": "99",
            "stop": {"accountSid": "AC00000000000000000000000000000001", "callSid": CALL},
            "streamSid": STREAM,
        }
    )


# ------------------------------------------------------------------------- OpenAI frames

_SEQ = iter(range(1, 1 << 62))


def _server(event: dict[str, Any]) -> str:
    """A server frame the ``openai`` package's server-event union accepts."""
    event = {"event_id": f"event_srv_{next(_SEQ)}", **event}
    SERVER_EVENT.validate_python(event)
    return json.dumps(event)


def oa_session(kind: str = "session.created") -> str:
    return _server(
        {
            "type": kind,
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "turn_detection": {
                            "type": "server_vad",
                            "create_response": True,
                            "interrupt_response": True,
                        },
                    },
                    "output": {"format": {"type": "audio/pcmu"}},
                },
            },
        }
    )


def oa_created(rid: str, metadata: dict[str, str] | None = None) -> str:
    response: dict[str, Any] = {
        "id": rid,
        "object": "realtime.response",
        "status": "in_progress",
        "conversation_id": "conv_1",
        "output": [],
    }
    if metadata is not None:
        response["metadata"] = metadata
    return _server({"type": "response.created", "response": response})


def oa_done(rid: str, status: str = "completed", reason: str | None = None) -> str:
    response: dict[str, Any] = {"id": rid, "object": "realtime.response", "status": status}
    if reason is not None:
        response["status_details"] = {"type": status, "reason": reason}
    return _server({"type": "response.done", "response": response})


def oa_audio(rid: str, item: str, delta: str = PAYLOAD) -> str:
    return _server(
        {
            "type": "response.output_audio.delta",
            "response_id": rid,
            "item_id": item,
            "output_index": 0,
            "content_index": 0,
            "delta": delta,
        }
    )


def oa_audio_done(rid: str, item: str) -> str:
    return _server(
        {
            "type": "response.output_audio.done",
            "response_id": rid,
            "item_id": item,
            "output_index": 0,
            "content_index": 0,
        }
    )


def oa_transcript(rid: str, item: str, delta: str) -> str:
    return _server(
        {
            "type": "response.output_audio_transcript.delta",
            "response_id": rid,
            "item_id": item,
            "output_index": 0,
            "content_index": 0,
            "delta": delta,
        }
    )


def oa_function_call(
    rid: str, call_id: str, name: str = "lookup", arguments: str = "{}", status: str = "completed"
) -> str:
    return _server(
        {
            "type": "response.output_item.done",
            "response_id": rid,
            "output_index": 0,
            "item": {
                "type": "function_call",
                "id": f"item_{call_id}",
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
                "status": status,
            },
        }
    )


def oa_output_added(call_id: str, output: str = "{}") -> str:
    return _server(
        {
            "type": "conversation.item.added",
            "previous_item_id": None,
            "item": {
                "type": "function_call_output",
                "id": f"item_out_{call_id}",
                "call_id": call_id,
                "output": output,
            },
        }
    )


def oa_speech_started(item: str = "item_user_1") -> str:
    return _server(
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 100, "item_id": item}
    )


def oa_speech_stopped(item: str = "item_user_1") -> str:
    return _server(
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": item}
    )


def oa_committed(item: str = "item_user_1") -> str:
    return _server(
        {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None}
    )


def oa_input_transcript(item: str, text: str) -> str:
    return _server(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item,
            "content_index": 0,
            "transcript": text,
            "usage": {"type": "duration", "seconds": 1},
        }
    )


def oa_error(code: str | None, message: str = "oops", event_id: str | None = None) -> str:
    return _server(
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "param": None,
                "event_id": event_id,
            },
        }
    )


# ----------------------------------------------------------------------------- the driver


class Call:
    """A test driver: a fake clock, and every output drained, validated and kept."""

    def __init__(self, config: BridgeConfig | None = None, *, can_reconnect: bool = True) -> None:
        self.t = 0.0
        self.s = CallSession(config or BridgeConfig(), now=self.t, can_reconnect=can_reconnect)
        self.s.emit_events = True
        #: Every OpenAI frame emitted, decoded (text frames included), in order.
        self.sent: list[dict[str, Any]] = []
        #: Text frames not yet reported written.
        self.unwritten: list[TextFrame] = []
        self.twilio: list[dict[str, Any]] = []
        self.events: list[Any] = []
        #: Text frames are reported written as soon as they are drained, unless False.
        self.write_texts = True

    def at(self, t: float) -> Call:
        assert t >= self.t
        self.t = t
        return self

    def drain(self) -> list[dict[str, Any]]:
        new: list[dict[str, Any]] = []
        out = self.s.out_openai[:]
        self.s.out_openai.clear()
        for frame in out:
            raw = frame.json if isinstance(frame, TextFrame) else frame
            CLIENT_EVENT.validate_json(raw)
            new.append(json.loads(raw))
            if isinstance(frame, TextFrame):
                if self.write_texts:
                    self.s.text_written(frame)
                else:
                    self.unwritten.append(frame)
        self.sent.extend(new)
        self.twilio.extend(json.loads(m) for m in self.s.out_twilio)
        self.s.out_twilio.clear()
        self.events.extend(self.s.events)
        self.s.events.clear()
        return new

    def tw(self, frame: str, dt: float = 0.0) -> str | None:
        self.t += dt
        out = self.s.twilio_frame(frame, self.t)
        if out:  # "": handled, nothing to write (a mark echo)
            CLIENT_EVENT.validate_json(out)
        self.drain()
        return out

    def oa(self, frame: str, dt: float = 0.0) -> str | None:
        self.t += dt
        out = self.s.openai_frame(frame, self.t)
        self.drain()
        return out

    def start(self, **kw: Any) -> Call:
        self.tw(tw_connected())
        self.tw(tw_start(**kw))
        return self

    def tick(self, t: float | None = None) -> None:
        if t is not None:
            self.at(t)
        self.s.tick(self.t)
        self.drain()

    def creates(self) -> list[dict[str, Any]]:
        return [e for e in self.sent if e["type"] == "response.create"]

    def types(self, events: list[dict[str, Any]] | None = None) -> list[str]:
        return [e["type"] for e in (self.sent if events is None else events)]

    def answer(self, create: dict[str, Any], rid: str) -> None:
        """The server takes our ``response.create``: ``response.created`` echoing its metadata."""
        self.oa(oa_created(rid, create["response"].get("metadata", {})))

    def close(self) -> None:
        self.s.closed(self.t)
        self.drain()


def reasons(create: dict[str, Any]) -> list[str]:
    return create["response"]["metadata"]["rtfsm_reason"].split("+")


# ============================================================================ 1. call machine


def test_start_with_media_format_runs_and_sends_session_update() -> None:
    c = Call()
    assert c.s.call_state is CallState.AWAITING_START
    assert c.s.next_deadline == pytest.approx(BridgeConfig().start_timeout)
    c.start(params={"account": "42"})
    assert c.s.call_state is CallState.RUNNING
    assert c.s.active
    assert c.types() == ["session.update"]
    assert c.sent[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert c.s.report.stream_sid == STREAM and c.s.report.call_sid == CALL
    assert c.s.report.custom_parameters == {"account": "42"}
    assert c.s.report.bad_frames == {}


def test_start_without_media_format_is_taken_on_trust() -> None:
    c = Call().start(media_format=None)
    assert c.s.call_state is CallState.RUNNING
    assert c.types() == ["session.update"]


@pytest.mark.parametrize(
    "fmt",
    [
        {"encoding": "audio/x-l16", "sampleRate": 8000, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2},
    ],
)
def test_non_mulaw_start_ends_with_1008(fmt: dict[str, Any]) -> None:
    c = Call()
    c.tw(tw_start(media_format=fmt))
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason is not None and c.s.end_reason.startswith("bad media format ")
    assert c.s.close_code == 1008
    assert c.sent == []  # no session.update for a call that never ran
    with pytest.raises(CallNotActive):
        c.s.send_user_text("hi", c.t)
    c.close()
    assert c.s.call_state is CallState.ENDED
    assert c.s.report.end_reason.startswith("bad media format ")


@pytest.mark.parametrize(
    "frame", [tw_media(), tw_mark("m1"), tw_dtmf("5"), json.dumps({"event": "weird"})]
)
def test_frames_before_start_are_counted_bad_and_dropped(frame: str) -> None:
    c = Call()
    assert c.tw(frame) is None
    assert c.s.call_state is CallState.AWAITING_START
    assert sum(c.s.report.bad_frames.values()) == 1
    assert c.sent == [] and c.twilio == []
    c.start()
    assert c.s.call_state is CallState.RUNNING


def test_connected_before_start_is_not_bad() -> None:
    c = Call()
    c.tw(tw_connected())
    assert c.s.report.bad_frames == {}


def test_stop_before_start_ends_the_call() -> None:
    c = Call()
    c.tw(tw_stop())
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == "telephony stopped before start"


def test_start_timeout_via_tick() -> None:
    c = Call(BridgeConfig(start_timeout=2.0))
    c.tick(1.999)
    assert c.s.call_state is CallState.AWAITING_START
    assert c.s.next_deadline == pytest.approx(2.0)
    c.tick(2.0)
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == "no start from telephony"
    assert c.s.next_deadline is None
    c.close()
    assert c.s.report.end_reason == "no start from telephony"


def test_duplicate_start_is_counted_and_ignored() -> None:
    c = Call().start(params={"n": "1"})
    c.tw(tw_start(params={"n": "2"}))
    assert c.s.call_state is CallState.RUNNING
    assert c.s.report.bad_frames == {"twilio:duplicate_start": 1}
    assert c.s.report.custom_parameters == {"n": "1"}
    assert c.types() == ["session.update"]  # not re-initialised


def test_twilio_closed_before_start() -> None:
    c = Call()
    c.s.twilio_closed(1.0)
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == "telephony closed before start"


def test_twilio_closed_after_start() -> None:
    c = Call().start()
    c.s.twilio_closed(1.0)
    assert c.s.end_reason == "telephony closed"
    c.close()
    assert c.s.report.end_reason == "telephony closed"


def test_stop_after_start_ends_the_call() -> None:
    c = Call().start()
    c.tw(tw_stop())
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == "telephony stop"


def test_end_call_first_reason_wins() -> None:
    c = Call().start()
    c.s.end_call("first", 1.0)
    c.s.end_call("second", 2.0)
    c.s.twilio_closed(3.0)
    assert c.s.end_reason == "first"
    assert c.s.close_code == 1000
    c.close()
    c.s.end_call("third", 4.0)  # after the end: a no-op
    assert c.s.call_state is CallState.ENDED
    assert c.s.report.end_reason == "first"
    ended = [e for e in c.events if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].reason == "first"


def test_closed_settles_the_report_while_running() -> None:
    c = Call().start()
    c.close()
    assert c.s.call_state is CallState.ENDED
    assert c.s.end_reason == "ended"
    assert c.s.report.end_reason == "ended"
    c.close()  # twice: nothing more
    assert [type(e) for e in c.events].count(CallEnded) == 1


def test_closed_before_start_settles_the_report() -> None:
    c = Call()
    c.close()
    assert c.s.call_state is CallState.ENDED
    assert c.s.report.end_reason == "ended"


def _app_calls(c: Call) -> list[Any]:
    return [
        lambda: c.s.send_user_text("hi", c.t),
        lambda: c.s.request_response(c.t),
        lambda: c.s.submit_tool_output("call_1", "{}", c.t),
    ]


def test_app_calls_before_start_raise_call_not_active() -> None:
    c = Call()
    for call in _app_calls(c):
        with pytest.raises(CallNotActive):
            call()
    assert c.sent == []


@pytest.mark.parametrize("closed", [False, True])
def test_app_calls_after_end_raise_call_not_active(closed: bool) -> None:
    c = Call().start()
    c.s.end_call("bye", 1.0)
    if closed:
        c.close()
    for call in _app_calls(c):
        with pytest.raises(CallNotActive):
            call()
    c.close()
    assert c.s.report.undelivered_texts == []  # nothing was taken


def test_commit_user_turn_needs_a_session_without_turn_detection() -> None:
    c = Call().start()
    with pytest.raises(LocalProtocolError):
        c.s.commit_user_turn(c.t)


def test_blank_text_is_a_value_error() -> None:
    c = Call().start()
    with pytest.raises(ValueError):
        c.s.send_user_text("   ", c.t)
    c.close()
    assert c.s.report.undelivered_texts == []


def test_caller_audio_is_returned_for_direct_write() -> None:
    c = Call().start()
    out = c.tw(tw_media())
    assert out is not None
    assert json.loads(out) == {"type": "input_audio_buffer.append", "audio": PAYLOAD}
    assert c.s.report.media_in == 1

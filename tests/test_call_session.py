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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import TypeAdapter

from realtime_fsm.call import (
    AssistantTranscript,
    AudioTruncated,
    BargeIn,
    BridgeConfig,
    CallEnded,
    CallSession,
    CallStarted,
    ResponseFinished,
    ResponseStarted,
    SessionLost,
    SessionRestored,
    TextFrame,
    ToolCall,
    ToolResult,
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


# ======================================================================= 2. loss and restore


def _lose(c: Call, reason: str = "openai closed", dt: float = 10.0) -> None:
    c.t += dt
    c.s.openai_lost(reason, c.t)
    c.drain()


def _reopen(c: Call, dt: float = 0.0) -> list[dict[str, Any]]:
    c.t += dt
    before = len(c.sent)
    c.s.session_opened(c.t)
    c.drain()
    return c.sent[before:]


def test_openai_lost_goes_reconnecting_with_delay_zero() -> None:
    c = Call().start()
    _lose(c, dt=10.0)
    assert c.s.call_state is CallState.RECONNECTING
    assert c.s.connect_delay == 0.0
    assert c.s.active
    assert c.s.next_deadline is None
    assert any(isinstance(e, SessionLost) and e.reason == "openai closed" for e in c.events)


def test_short_lived_session_is_backed_off() -> None:
    c = Call().start()
    _lose(c, dt=1.0)
    assert c.s.call_state is CallState.RECONNECTING
    assert c.s.connect_delay == pytest.approx(BridgeConfig().reconnect_base_delay)


def test_openai_lost_without_reconnect_ends_the_call() -> None:
    c = Call(can_reconnect=False).start()
    _lose(c, "openai closed")
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == "openai closed"


@pytest.mark.parametrize("status", [401, 403])
def test_connect_refused_ends_the_call(status: int) -> None:
    c = Call().start()
    _lose(c)
    c.s.connect_failed("InvalidStatus", c.t, status=status)
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == f"openai reconnect refused (HTTP {status})"
    assert c.s.connect_delay is None
    assert c.s.report.reconnect_failures == 1


def test_repeated_connect_failures_back_off_then_end() -> None:
    cfg = BridgeConfig(reconnect_attempts=3, reconnect_base_delay=0.5, reconnect_max_delay=0.75)
    c = Call(cfg).start()
    _lose(c)
    c.s.connect_failed("OSError", c.t)
    assert c.s.call_state is CallState.RECONNECTING
    assert c.s.connect_delay == pytest.approx(0.5)
    c.s.connect_failed("InvalidStatus", c.t, status=503)
    assert c.s.call_state is CallState.RECONNECTING
    assert c.s.connect_delay == pytest.approx(0.75)  # capped
    c.s.connect_failed("OSError", c.t)
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == "openai reconnect failed after 3 attempts"
    assert c.s.report.reconnect_failures == 3


def test_session_opened_restores_config_history_and_carried_texts() -> None:
    c = Call().start()
    c.oa(oa_session())
    c.s.send_user_text("my order is 42", c.t)
    c.drain()
    c.answer(c.creates()[-1], "resp_t")
    c.oa(oa_audio("resp_t", "item_t"))
    c.oa(oa_transcript("resp_t", "item_t", "Got it."))
    c.oa(oa_done("resp_t"))
    # The caller's turn, transcribed; and an answer to it, completed.
    c.oa(oa_speech_started("u1"), 1.0)
    c.oa(oa_committed("u1"))
    c.oa(oa_input_transcript("u1", "where is it"))
    c.oa(oa_created("resp_vad"))
    c.oa(oa_audio("resp_vad", "item_a"))
    c.oa(oa_transcript("resp_vad", "item_a", "It ships "))
    c.oa(oa_transcript("resp_vad", "item_a", "today."))
    c.oa(oa_done("resp_vad"))
    _lose(c, dt=10.0)
    c.s.send_user_text("typed while reconnecting", c.t)
    c.drain()
    assert not any(
        e["type"] == "conversation.item.create"
        and "typed while reconnecting" in json.dumps(e)
        and e is not None
        for e in c.sent
    )
    new = _reopen(c, dt=0.5)
    assert c.s.call_state is CallState.RUNNING
    assert new[0]["type"] == "session.update"
    texts = [
        (e["item"]["role"], e["item"]["content"][0]["text"])
        for e in new
        if e["type"] == "conversation.item.create"
    ]
    assert texts == [
        ("user", "my order is 42"),
        ("assistant", "Got it."),
        ("user", "where is it"),
        ("assistant", "It ships today."),
        ("user", "typed while reconnecting"),
    ]
    creates = [e for e in new if e["type"] == "response.create"]
    assert len(creates) == 1 and reasons(creates[0]) == ["user_text"]
    assert c.s.report.reconnects == 1
    assert c.s.report.reconnect_times == [pytest.approx(0.5)]
    restored = [e for e in c.events if isinstance(e, SessionRestored)]
    assert restored == [SessionRestored(pytest.approx(0.5), 4, 1)]
    c.close()
    assert c.s.report.user_texts_sent == 2
    assert c.s.report.undelivered_texts == []


def test_response_cut_off_mid_answer_is_retold() -> None:
    c = Call().start()
    c.oa(oa_session())
    c.s.request_response(c.t, reason="app", instructions="Say the weather")
    c.drain()
    (create,) = c.creates()
    c.answer(create, "resp_1")
    c.oa(oa_audio("resp_1", "item_1"))
    c.oa(oa_transcript("resp_1", "item_1", "It is sun"))
    _lose(c)
    assert {"event": "clear", "streamSid": STREAM} in c.twilio  # the half answer stops
    new = _reopen(c)
    creates = [e for e in new if e["type"] == "response.create"]
    assert len(creates) == 1
    assert reasons(creates[0]) == ["reconnect"]
    assert creates[0]["response"]["instructions"] == "Say the weather"
    # The cut-off answer is not history: it is asked for again.
    assert "It is sun" not in json.dumps(new)


def test_create_in_flight_when_lost_is_carried() -> None:
    c = Call().start()
    c.s.request_response(c.t, reason="timer")
    c.drain()
    _lose(c)
    new = _reopen(c)
    creates = [e for e in new if e["type"] == "response.create"]
    assert len(creates) == 1 and reasons(creates[0]) == ["timer"]


def test_request_while_reconnecting_is_carried() -> None:
    c = Call().start()
    _lose(c)
    c.s.request_response(c.t, reason="timer")
    c.drain()
    assert c.creates() == []
    new = _reopen(c)
    creates = [e for e in new if e["type"] == "response.create"]
    assert len(creates) == 1 and reasons(creates[0]) == ["timer"]


def test_max_reconnects_ends_the_call() -> None:
    c = Call(BridgeConfig(max_reconnects=1)).start()
    _lose(c, "openai closed")
    _reopen(c)
    c.oa(oa_session())
    _lose(c, "openai closed")
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == "openai session lost (openai closed) after 1 reconnects"


def test_max_reconnects_zero_ends_at_first_loss_and_returns_texts() -> None:
    c = Call(BridgeConfig(max_reconnects=0)).start()
    c.write_texts = False
    c.s.send_user_text("unsent", c.t)
    c.drain()
    _lose(c)
    assert c.s.call_state is CallState.ENDING
    c.close()
    assert c.s.report.undelivered_texts == ["unsent"]


def test_session_dropped_before_created_counts_as_failed_attempt() -> None:
    c = Call(BridgeConfig(reconnect_attempts=2)).start()
    _lose(c)
    _reopen(c)  # no session.created: unproven
    _lose(c, dt=10.0)
    assert c.s.call_state is CallState.RECONNECTING
    c.s.connect_failed("OSError", c.t)
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason is not None and "after 2 attempts" in c.s.end_reason


def test_session_expired_error_asks_for_a_new_session() -> None:
    c = Call().start()
    c.oa(oa_error("session_expired", "Your session hit the maximum duration of 60 minutes."))
    assert c.s.lost_reason == "openai error session_expired"
    c.s.openai_lost(c.s.lost_reason, c.t)
    assert c.s.call_state is CallState.RECONNECTING
    assert c.s.lost_reason is None


def test_fatal_error_ends_the_call() -> None:
    c = Call().start()
    c.oa(oa_error("invalid_api_key", "bad key"))
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == "openai error invalid_api_key"


def test_openai_frames_while_reconnecting_are_ignored() -> None:
    c = Call().start()
    _lose(c)
    assert c.oa(oa_audio("resp_old", "item_old")) is None
    assert c.sent == [c.sent[0]] and c.s.call_state is CallState.RECONNECTING


# ========================================================================== 3. text custody


def test_unwritten_texts_come_back_once_in_order() -> None:
    c = Call().start()
    c.write_texts = False
    for text in ("one", "two", "three"):
        c.s.send_user_text(text, c.t)
        c.drain()
    assert len(c.unwritten) == 1  # the others barge in: held by the machine
    c.s.end_call("bye", c.t)
    c.close()
    assert c.s.report.undelivered_texts == ["one", "two", "three"]
    assert c.s.report.user_texts_sent == 0
    assert [t for batch in c.s.returned_texts for t in batch] == ["one", "two", "three"]
    c.close()
    assert c.s.report.undelivered_texts == ["one", "two", "three"]


def test_a_written_text_is_counted_once_and_not_returned() -> None:
    c = Call().start()
    c.write_texts = False
    c.s.send_user_text("hello", c.t)
    c.drain()
    (frame,) = c.unwritten
    c.s.text_written(frame)
    c.s.text_written(frame)  # reported twice: still once
    c.close()
    assert c.s.report.user_texts_sent == 1
    assert c.s.report.undelivered_texts == []


def test_texts_taken_back_on_loss_are_resent_not_returned() -> None:
    c = Call().start()
    c.write_texts = False
    c.s.send_user_text("first", c.t)
    c.s.send_user_text("second", c.t)
    c.drain()
    old = list(c.unwritten)
    c.unwritten.clear()
    _lose(c)
    for frame in old:  # the writer of the lost socket reports late: not counted
        c.s.text_written(frame)
    assert c.s.report.user_texts_sent == 0
    new = _reopen(c)
    items = [
        e["item"]["content"][0]["text"] for e in new if e["type"] == "conversation.item.create"
    ]
    assert items == ["first", "second"]
    assert [f.text for f in c.unwritten] == ["first", "second"]
    for frame in c.unwritten:
        c.s.text_written(frame)
    c.close()
    assert c.s.report.user_texts_sent == 2
    assert c.s.report.undelivered_texts == []


@pytest.mark.parametrize("written", [False, True])
def test_text_and_its_create_in_flight_at_loss_delivered_once(written: bool) -> None:
    c = Call().start()
    c.oa(oa_session())
    c.write_texts = written
    c.s.send_user_text("hello", c.t)
    c.drain()
    _lose(c)
    new = _reopen(c)
    items = [e for e in new if e["type"] == "conversation.item.create"]
    creates = [e for e in new if e["type"] == "response.create"]
    assert [e["item"]["content"][0]["text"] for e in items] == ["hello"]
    # Written: replayed as history; not written: delivered now.  Either way one answer.
    assert items[0]["event_id"].split("_")[1] == ("history" if written else "restore")
    assert len(creates) == 1 and reasons(creates[0]) == ["user_text"]
    c.write_texts = True
    for frame in c.unwritten:
        c.s.text_written(frame)
    c.close()
    assert c.s.report.user_texts_sent == 1 and c.s.report.undelivered_texts == []


def test_cut_off_greeting_is_retold_alone_then_the_held_text_answered() -> None:
    c = Call(BridgeConfig(greeting="Greet warmly")).start()
    c.oa(oa_session())
    assert reasons(c.creates()[-1]) == ["greeting"]
    c.answer(c.creates()[-1], "resp_g")
    c.oa(oa_audio("resp_g", "item_g"))
    _lose(c)
    c.s.send_user_text("hi", c.t)
    new = _reopen(c)
    creates = [e for e in new if e["type"] == "response.create"]
    assert len(creates) == 1
    assert reasons(creates[0]) == ["reconnect"]
    assert creates[0]["response"]["instructions"] == "Greet warmly"
    c.answer(creates[0], "resp_g2")
    c.oa(oa_audio("resp_g2", "item_g2"))
    c.oa(oa_done("resp_g2"))
    assert reasons(c.creates()[-1]) == ["user_text"]
    assert "instructions" not in c.creates()[-1]["response"]


def test_heard_ms_comes_from_mark_echoes() -> None:
    c = Call().start()
    c.oa(oa_session())
    c.s.request_response(c.t)
    c.drain()
    c.answer(c.creates()[-1], "resp_1")
    for _ in range(3):
        c.oa(oa_audio("resp_1", "item_1"))  # 3 x 20 ms
        c.oa(oa_transcript("resp_1", "item_1", "la "))
    c.oa(oa_audio_done("resp_1", "item_1"))
    marks = [m["mark"]["name"] for m in c.twilio if m["event"] == "mark"]
    assert marks
    for name in marks:
        c.tw(tw_mark(name), 0.06)
    c.oa(oa_done("resp_1"))
    (finished,) = [e for e in c.events if isinstance(e, ResponseFinished)]
    assert finished.heard_ms == 60


def test_texts_held_while_reconnecting_come_back_when_the_call_ends() -> None:
    c = Call().start()
    _lose(c)
    c.s.send_user_text("a", c.t)
    c.s.send_user_text("b", c.t)
    c.s.connect_failed("InvalidStatus", c.t, status=401)
    c.close()
    assert c.s.report.undelivered_texts == ["a", "b"]
    assert c.s.report.user_texts_sent == 0


def test_text_during_barge_in_is_held_then_sent_once() -> None:
    c = Call().start()
    c.oa(oa_session())
    c.s.request_response(c.t)
    c.drain()
    (create,) = c.creates()
    c.answer(create, "resp_1")
    c.oa(oa_audio("resp_1", "item_1"))
    c.s.send_user_text("stop, I meant 43", c.t)
    new = c.drain()
    assert "response.cancel" in c.types(new)
    assert not any(e["type"] == "conversation.item.create" for e in new)  # held
    c.oa(oa_done("resp_1", "cancelled", "client_cancelled"))
    texts = [e for e in c.sent if e["type"] == "conversation.item.create"]
    assert len(texts) == 1
    assert reasons(c.creates()[-1]) == ["user_text"]
    c.close()
    assert c.s.report.user_texts_sent == 1 and c.s.report.undelivered_texts == []


# ================================================================================= 4. tools


def _tool_call(c: Call, rid: str = "resp_1", calls: tuple[str, ...] = ("call_1",)) -> None:
    c.oa(oa_session())
    c.s.request_response(c.t)
    c.drain()
    c.answer(c.creates()[-1], rid)
    for call_id in calls:
        c.oa(oa_function_call(rid, call_id, arguments='{"order": 42}'))


def test_completed_function_call_is_a_tool_call() -> None:
    c = Call().start()
    _tool_call(c)
    (call,) = c.s.tool_calls
    assert call == ToolCall("call_1", "lookup", '{"order": 42}', "resp_1")
    assert call in c.events
    assert c.s.report.tool_calls == 1


def test_incomplete_function_call_is_not_run() -> None:
    c = Call().start()
    c.s.request_response(c.t)
    c.drain()
    c.answer(c.creates()[-1], "resp_1")
    c.oa(oa_function_call("resp_1", "call_1", arguments='{"ord', status="incomplete"))
    assert c.s.tool_calls == []
    assert c.s.report.tool_calls == 0
    with pytest.raises(LocalProtocolError):
        c.s.submit_tool_output("call_1", "{}", c.t)


def test_unknown_call_id_raises() -> None:
    c = Call().start()
    with pytest.raises(LocalProtocolError):
        c.s.submit_tool_output("call_nope", "{}", c.t)


def test_output_now_follow_up_after_calling_response_done() -> None:
    c = Call().start()
    _tool_call(c)
    c.s.submit_tool_output("call_1", '{"status": "shipped"}', c.t + 0.5)
    new = c.drain()
    assert new == [
        {
            "type": "conversation.item.create",
            "event_id": new[0]["event_id"],
            "item": {
                "type": "function_call_output",
                "call_id": "call_1",
                "output": '{"status": "shipped"}',
            },
        }
    ]
    assert len(c.creates()) == 1  # not yet: the calling response still holds the slot
    c.oa(oa_output_added("call_1"))
    c.oa(oa_done("resp_1"))
    assert len(c.creates()) == 2
    assert reasons(c.creates()[-1]) == ["tool"]
    (result,) = [e for e in c.events if isinstance(e, ToolResult)]
    assert result.call_id == "call_1" and result.ok
    with pytest.raises(LocalProtocolError):  # already answered
        c.s.submit_tool_output("call_1", "{}", c.t)


def test_output_after_done_asks_at_once() -> None:
    c = Call().start()
    _tool_call(c)
    c.oa(oa_done("resp_1"))
    assert len(c.creates()) == 1
    c.s.submit_tool_output("call_1", "{}", c.t)
    c.drain()
    assert c.types()[-2:] == ["conversation.item.create", "response.create"]
    assert reasons(c.creates()[-1]) == ["tool"]


def test_two_parallel_calls_one_follow_up() -> None:
    c = Call().start()
    _tool_call(c, calls=("call_1", "call_2"))
    c.oa(oa_done("resp_1"))
    c.s.submit_tool_output("call_2", "b", c.t)
    c.drain()
    assert len(c.creates()) == 1
    c.s.submit_tool_output("call_1", "a", c.t)
    c.drain()
    assert len(c.creates()) == 2
    assert reasons(c.creates()[-1]) == ["tool"]


def test_unanswered_call_gets_an_error_output_at_next_deadline() -> None:
    c = Call(BridgeConfig(tool_timeout=5.0)).start()
    _tool_call(c)
    c.oa(oa_done("resp_1"))
    deadline = c.s.next_deadline
    assert deadline == pytest.approx(c.t + 5.0 + 1.0)
    c.tick(deadline - 0.01)
    assert len(c.creates()) == 1
    c.tick(deadline)
    out = [e for e in c.sent if e["type"] == "conversation.item.create"]
    assert out[-1]["item"]["call_id"] == "call_1"
    assert "did not answer in time" in out[-1]["item"]["output"]
    assert c.s.report.tool_failures == 1
    assert reasons(c.creates()[-1]) == ["tool"]
    with pytest.raises(LocalProtocolError):
        c.s.submit_tool_output("call_1", "late", c.t)


def test_vad_response_after_outputs_added_withdraws_the_follow_up() -> None:
    c = Call().start()
    _tool_call(c)
    c.oa(oa_done("resp_1"))
    # The caller talks while the tool runs: the server's VAD owes the turn an answer.
    c.oa(oa_speech_started("u1"))
    c.oa(oa_speech_stopped("u1"))
    c.oa(oa_committed("u1"))
    c.s.submit_tool_output("call_1", "{}", c.t)
    c.drain()
    assert len(c.creates()) == 1  # queued behind the server's answer
    c.oa(oa_output_added("call_1"))
    c.oa(oa_created("resp_vad"))  # after the output was added: it answers it
    c.oa(oa_done("resp_vad"))
    c.tick(c.t + 30.0)
    assert len(c.creates()) == 1  # withdrawn: no second answer


def test_vad_response_before_output_added_keeps_the_follow_up() -> None:
    c = Call().start()
    _tool_call(c)
    c.oa(oa_done("resp_1"))
    c.oa(oa_speech_started("u1"))
    c.oa(oa_committed("u1"))
    c.s.submit_tool_output("call_1", "{}", c.t)
    c.drain()
    c.oa(oa_created("resp_vad"))  # the output not yet in the conversation
    c.oa(oa_output_added("call_1"))
    c.oa(oa_done("resp_vad"))
    assert len(c.creates()) == 2
    assert "tool" in reasons(c.creates()[-1])


def test_open_tool_calls_die_with_the_session() -> None:
    c = Call().start()
    _tool_call(c)
    _lose(c)
    with pytest.raises(LocalProtocolError):
        c.s.submit_tool_output("call_1", "{}", c.t)
    _reopen(c)
    with pytest.raises(LocalProtocolError):
        c.s.submit_tool_output("call_1", "{}", c.t)


# ============================================================================ 5. app events


def test_app_events_of_a_simple_call() -> None:
    c = Call().start(params={"caller": "Jane"})
    c.oa(oa_session())
    c.s.request_response(c.t, reason="greet")
    c.drain()
    c.answer(c.creates()[-1], "resp_1")
    media = c.oa(oa_audio("resp_1", "item_1"))
    assert media is not None and json.loads(media)["event"] == "media"
    c.oa(oa_transcript("resp_1", "item_1", "Hello "))
    c.oa(oa_transcript("resp_1", "item_1", "Jane."))
    c.oa(oa_audio_done("resp_1", "item_1"))
    c.oa(oa_done("resp_1"))
    # Still playing at Twilio when the caller talks: a barge-in (playback cleared).
    c.oa(oa_speech_started("u1"), 0.01)
    c.s.end_call("bye", c.t)
    c.close()
    kinds = [type(e) for e in c.events]
    assert kinds == [
        CallStarted,
        ResponseStarted,
        AssistantTranscript,
        AssistantTranscript,
        AssistantTranscript,
        ResponseFinished,
        BargeIn,
        AudioTruncated,
        CallEnded,
    ]
    started = c.events[0]
    assert started.custom_parameters == {"caller": "Jane"}
    assert started.encoding == "audio/x-mulaw" and started.sample_rate == 8000
    assert c.events[1] == ResponseStarted("resp_1", True, ("greet",))
    assert c.events[2:5] == [
        AssistantTranscript("resp_1", "Hello ", False),
        AssistantTranscript("resp_1", "Jane.", False),
        AssistantTranscript("resp_1", "Hello Jane.", True),
    ]
    assert c.events[5].response_id == "resp_1" and c.events[5].status == "completed"
    assert c.events[6].source == "speech"
    # Nothing of item_1 was heard (no mark echo): deleted, all its audio unheard.
    assert c.events[7] == AudioTruncated("item_1", 0, 20, "resp_1")
    assert {"event": "clear", "streamSid": STREAM} in c.twilio
    assert c.events[-1].reason == "bye" and c.events[-1].report is c.s.report


def test_server_response_is_not_ours() -> None:
    c = Call().start()
    c.oa(oa_created("resp_vad"))
    assert c.events[-1] == ResponseStarted("resp_vad", False, ())


def test_no_events_unless_asked() -> None:
    c = Call()
    c.s.emit_events = False
    c.start()
    c.close()
    assert c.events == []


# ============================================= regressions: bugs this file found, fixed


@pytest.mark.parametrize("how", ["refused", "end_call", "max_reconnects"])
def test_lifecycle_stats_not_double_counted_after_a_loss(how: str) -> None:
    c = Call(BridgeConfig(max_reconnects=0 if how == "max_reconnects" else 20)).start()
    c.oa(oa_session())
    c.oa(oa_created("resp_vad"))
    c.oa(oa_audio("resp_vad", "item_1"))
    c.oa(oa_done("resp_vad"))
    assert c.s.machine is not None
    live = dict(c.s.machine.stats)
    assert live.get("server_created_responses") == 1
    _lose(c)
    if how == "refused":
        c.s.connect_failed("InvalidStatus", c.t, status=401)
    elif how == "end_call":
        c.s.end_call("bye", c.t)
    assert c.s.call_state is CallState.ENDING
    c.close()
    assert c.s.report.lifecycle_stats == live


@pytest.mark.parametrize("when", ["ended", "ending_after_loss"])
def test_dtmf_after_the_end_does_not_raise(when: str) -> None:
    c = Call().start()
    if when == "ended":
        c.s.end_call("bye", c.t)
        c.close()
    else:
        _lose(c)
        c.s.connect_failed("InvalidStatus", c.t, status=401)
    c.tw(tw_dtmf("5"))  # peer input: never raises
    c.close()
    assert c.s.report.undelivered_texts in ([], ["DTMF 5"])


def test_function_call_reported_twice_runs_once() -> None:
    c = Call().start()
    _tool_call(c)
    c.s.submit_tool_output("call_1", "{}", c.t)
    c.drain()
    c.oa(oa_function_call("resp_1", "call_1", arguments='{"order": 42}'))  # the same item again
    c.oa(oa_done("resp_1"))
    assert len(c.s.tool_calls) == 1
    assert c.s.report.tool_calls == 1
    assert reasons(c.creates()[-1]) == ["tool"]


# ======================================================================= 6. property test

_HOSTILE_TWILIO: list[str | bytes] = [
    "",
    "not json",
    b"\xff\xfe\x80 not utf-8",
    b'{"event": "media", "media": {"payload": "\xc3\x28"}}',
    "[]",
    "null",
    '{"event": 5}',
    '{"event": "media"}',
    '{"event": "media", "media": {"payload": 5}}',
    '{"event": "start", "start": {}}',
    '{"event": "start", "start": {"streamSid": 7}}',
    '{"event": "mark", "mark": {}}',
    '{"event": "dtmf", "dtmf": {"digit": ""}}',
    '{"event": "stop", "stop": "x"}',
    '{"event": "text", "text": "injected"}',
    '{"event": "unknown_thing"}',
    json.dumps({"event": "media", "media": {"payload": "A" * 70_000}}),
    json.dumps({"event": "x" * 10_000}),
]
_HOSTILE_OPENAI: list[str | bytes] = [
    "",
    "garbage{",
    b"\xff\xfe\x80",
    b'{"type": "response.created", "response": {"id": "\xc3\x28"}}',
    "42",
    '{"type": null}',
    '{"type": "response.created"}',
    '{"type": "response.created", "response": {"id": 5}}',
    '{"type": "response.created", "response": {"id": "", "metadata": {"a": 1}}}',
    '{"type": "response.done", "response": {}}',
    '{"type": "response.output_audio.delta", "response_id": "r", "item_id": "", "delta": "AA=="}',
    '{"type": "response.output_audio.delta", "response_id": 1, "item_id": "i", "delta": 2}',
    '{"type": "response.output_item.done", "response_id": "resp_1", "item": {"type":'
    ' "function_call", "call_id": 3}}',
    '{"type": "conversation.item.added", "item": {"type": "function_call_output", "call_id": []}}',
    '{"type": "error", "error": {"code": {"x": 1}}}',
    '{"type": "error"}',
    '{"type": "session.updated", "session": {"audio": {"input": {"turn_detection": 5}}}}',
    '{"type": "input_audio_buffer.speech_started", "audio_start_ms": -1}',
    '{"type": "totally.new.event", "x": 1}',
    json.dumps({"type": "response.output_audio_transcript.delta", "delta": "x" * 50_000}),
    json.dumps(
        {
            "type": "response.output_audio_transcript.delta",
            "response_id": "resp_1",
            "item_id": "item_1",
            "delta": "\U0001f600" * 20_000,
        }
    ),
]
_RIDS = ["resp_1", "resp_2", "resp_vad", "resp_old"]
_ITEMS = ["item_1", "item_2"]
_CALL_IDS = ["call_1", "call_2"]
_ERRORS = [
    ("conversation_already_has_active_response", "Conversation already has an active response"),
    ("response_cancel_not_active", "Cancellation failed: no active response found"),
    ("input_audio_buffer_commit_empty", "buffer too small"),
    ("session_expired", "Your session hit the maximum duration of 60 minutes."),
    ("invalid_value", "Audio content of 9250ms is already shorter than 57340ms"),
    (None, "something"),
]
_DTS = [0.0, 0.0, 0.01, 0.3, 1.2, 4.0, 5.5, 12.0, 25.0]


def _pcm_session_updated() -> str:
    frame = json.loads(oa_session("session.updated"))
    frame["session"]["audio"]["output"]["format"] = {"type": "audio/pcm", "rate": 24000}
    return json.dumps(frame)


#: What a next session's socket may say before the switch.
_NEXT_SESSION_FRAMES = [
    oa_session("session.created"),
    *[oa_session("session.updated")] * 4,
    _pcm_session_updated(),
    oa_error("invalid_value", "bad session"),
    "garbage{",
]


class PropertyDriver:
    """Drives one session through random steps, checking the invariants after each one."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.cfg = BridgeConfig(
            tool_timeout=3.0,
            reconnect_attempts=3,
            max_reconnects=3,
            start_timeout=30.0,
            max_bad_frames=40,
            rotate_after=data.draw(st.sampled_from([None, 1.0, 1.0, 6.0]), label="rotate_after"),
            rotate_quiet_window=data.draw(st.sampled_from([0.0, 2.0, 30.0]), label="window"),
            rotate_retry_delay=0.5,
        )
        self.t = 0.0
        self.s = CallSession(self.cfg, now=self.t, can_reconnect=True)
        self.s.emit_events = data.draw(st.booleans(), label="emit_events")
        self.create_timeout = self.cfg.lifecycle.create_timeout
        #: Our response.create event ids not yet answered on this session -> when sent.
        self.outstanding: dict[str, float] = {}
        self.creates_sent: list[dict[str, Any]] = []
        self.taken: list[str] = []
        self.written: list[str] = []
        self.unwritten: list[TextFrame] = []
        self.marks: list[str] = []
        self.submitted: list[str] = []
        self.calls_made: list[str] = []
        self.n_text = 0
        #: The session number the frames drained belong to, and the next session's socket
        #: (its number) once "opened" for a rotation.
        self.generation = 0
        self.next_open: int | None = None

    # -------------------------------------------------------------------- bookkeeping

    def advance(self) -> None:
        self.t += self.data.draw(st.sampled_from(_DTS), label="dt")
        self._expire()

    def _expire(self) -> None:
        for event_id, sent_at in list(self.outstanding.items()):
            if self.t >= sent_at + self.create_timeout:
                del self.outstanding[event_id]  # resent once, or given up: both by design

    def drain(self) -> None:
        s = self.s
        if s.generation != self.generation:
            # Another session now: the old one's creates are moot, and the driver drops what
            # was queued for its socket (the texts are back in the call's custody).
            self.generation = s.generation
            self.outstanding.clear()
            self.unwritten.clear()
        for frame in s.out_next:
            CLIENT_EVENT.validate_json(frame)
            assert json.loads(frame)["type"] == "session.update"
        s.out_next.clear()
        out = s.out_openai[:]
        s.out_openai.clear()
        for frame in out:
            raw = frame.json if isinstance(frame, TextFrame) else frame
            CLIENT_EVENT.validate_json(raw)
            event = json.loads(raw)
            if event["type"] == "response.create":
                if event["response"].get("conversation") != "none":
                    assert not self.outstanding, (
                        f"second response.create {event['event_id']} while"
                        f" {sorted(self.outstanding)} unanswered"
                    )
                    self.outstanding[event["event_id"]] = self.t
                self.creates_sent.append(event)
            if isinstance(frame, TextFrame):
                self.unwritten.append(frame)
        for message in s.out_twilio:
            twilio = json.loads(message)
            assert twilio["event"] in ("media", "mark", "clear")
            assert twilio["streamSid"] == STREAM
            if twilio["event"] == "mark":
                self.marks.append(twilio["mark"]["name"])
        s.out_twilio.clear()
        if s.events:
            assert not any(isinstance(e, CallEnded) for e in s.events[:-1])
            s.events.clear()
        self.calls_made.extend(c.call_id for c in s.tool_calls)
        s.tool_calls.clear()
        s.returned_texts.clear()

    def write_some(self) -> None:
        """The writer task writes the oldest frames (or all of them)."""
        if not self.unwritten:
            return
        n = self.data.draw(st.integers(1, len(self.unwritten)), label="written")
        for frame in self.unwritten[:n]:
            before = self.s.report.user_texts_sent
            self.s.text_written(frame)
            if self.s.report.user_texts_sent > before:
                self.written.append(frame.text)
        del self.unwritten[:n]

    def text(self) -> str:
        self.n_text += 1
        tail = self.data.draw(
            st.sampled_from(["", " hello", " \u00e9\U0001f600", " " + "x" * 5000, '\n\t\\"']),
            label="text",
        )
        return f"t{self.n_text}{tail}"

    # ----------------------------------------------------------------------- frames

    def twilio_step(self) -> None:
        d = self.data
        kind = d.draw(
            st.sampled_from(
                ["start", "media", "mark", "dtmf", "stop", "connected", "hostile", "close"]
            ),
            label="twilio",
        )
        active = self.s.active
        frame: str | bytes
        if kind == "start":
            fmt = d.draw(st.sampled_from([MULAW, None, {**MULAW, "sampleRate": 16000}]))
            frame = tw_start(media_format=fmt)
        elif kind == "media":
            frame = tw_media(d.draw(st.integers(1, 10_000)))
        elif kind == "mark":
            names = self.marks or ["nope"]
            frame = tw_mark(d.draw(st.sampled_from([*names, "unknown:1"])))
        elif kind == "dtmf":
            if not active:  # the closed-machine case is test_dtmf_after_the_end_does_not_raise
                return
            digit = d.draw(st.sampled_from("0123456789*#"))
            frame = tw_dtmf(digit)
            self.taken.append(f"DTMF {digit}")  # the text the session makes of it
        elif kind == "stop":
            if d.draw(st.integers(0, 5)):  # rarely: it ends the call
                return
            frame = tw_stop()
        elif kind == "connected":
            frame = tw_connected()
        elif kind == "close":
            if d.draw(st.integers(0, 8)):
                return
            self.s.twilio_closed(self.t)
            return
        else:
            frame = d.draw(st.sampled_from(_HOSTILE_TWILIO))
        out = self.s.twilio_frame(frame, self.t)
        if out:  # "": handled, nothing to write (a mark echo)
            CLIENT_EVENT.validate_json(out)

    def _metadata(self) -> dict[str, str] | None:
        d = self.data
        if self.creates_sent and d.draw(st.booleans(), label="ours"):
            create = d.draw(st.sampled_from(self.creates_sent[-3:]), label="which create")
            return dict(create["response"].get("metadata", {}))
        return None

    def openai_step(self) -> None:
        d = self.data
        kind = d.draw(
            st.sampled_from(
                [
                    "created",
                    "done",
                    "audio",
                    "audio_done",
                    "transcript",
                    "function_call",
                    "output_added",
                    "speech_started",
                    "speech_stopped",
                    "committed",
                    "input_transcript",
                    "error",
                    "session",
                    "hostile",
                ]
            ),
            label="openai",
        )
        rid = d.draw(st.sampled_from(_RIDS), label="rid")
        item = d.draw(st.sampled_from(_ITEMS), label="item")
        answered: str | None = None
        errored: str | None = None
        busy = False
        frame: str | bytes
        if kind == "created":
            metadata = self._metadata()
            frame = oa_created(rid, metadata)
            answered = (metadata or {}).get("rtfsm_event_id")
        elif kind == "done":
            status = d.draw(st.sampled_from(["completed", "cancelled", "incomplete", "failed"]))
            frame = oa_done(rid, status)
        elif kind == "audio":
            frame = oa_audio(rid, item)
        elif kind == "audio_done":
            frame = oa_audio_done(rid, item)
        elif kind == "transcript":
            frame = oa_transcript(rid, item, d.draw(st.sampled_from(["Hi ", "", "\u00e9t\u00e9"])))
        elif kind == "function_call":
            status = d.draw(st.sampled_from(["completed", "completed", "incomplete"]))
            call_id = d.draw(st.sampled_from(_CALL_IDS))
            if call_id in self.submitted:  # see test_function_call_reported_twice_runs_once
                return
            frame = oa_function_call(rid, call_id, status=status)
        elif kind == "output_added":
            frame = oa_output_added(d.draw(st.sampled_from(_CALL_IDS)))
        elif kind == "speech_started":
            frame = oa_speech_started()
        elif kind == "speech_stopped":
            frame = oa_speech_stopped()
        elif kind == "committed":
            frame = oa_committed(d.draw(st.sampled_from(["u1", "u2"])))
        elif kind == "input_transcript":
            frame = oa_input_transcript("u1", "hello there")
        elif kind == "error":
            code, message = d.draw(st.sampled_from(_ERRORS))
            event_id = None
            if self.creates_sent and d.draw(st.booleans()):
                event_id = self.creates_sent[-1]["event_id"]
            frame = oa_error(code, message, event_id)
            errored = event_id
            busy = code == "conversation_already_has_active_response" and event_id is None
        elif kind == "session":
            frame = oa_session(d.draw(st.sampled_from(["session.created", "session.updated"])))
        else:
            frame = d.draw(st.sampled_from(_HOSTILE_OPENAI))
        running = self.s.call_state is CallState.RUNNING
        out = self.s.openai_frame(frame, self.t)
        if out is not None:
            media = json.loads(out)
            assert media["event"] == "media" and media["streamSid"] == STREAM
        if running:
            if answered is not None:
                self.outstanding.pop(answered, None)
            if errored is not None:
                self.outstanding.pop(errored, None)
            if busy:
                self.outstanding.clear()

    # ----------------------------------------------------------------------- app calls

    def app_step(self) -> None:
        d = self.data
        kind = d.draw(
            st.sampled_from(["text", "blank", "request", "tool", "commit", "end"]), label="app"
        )
        s = self.s
        try:
            if kind == "text":
                text = self.text()
                s.send_user_text(text, self.t)
                self.taken.append(text)
            elif kind == "blank":
                with pytest.raises(ValueError):
                    s.send_user_text(d.draw(st.sampled_from(["", "  ", "\n"])), self.t)
            elif kind == "request":
                s.request_response(
                    self.t, reason="app", instructions=d.draw(st.sampled_from([None, "Be brief"]))
                )
            elif kind == "tool":
                made = self.calls_made[-4:]
                call_id = d.draw(st.sampled_from([*made, "call_unknown"]), label="call id")
                s.submit_tool_output(call_id, "{}", self.t)
                self.submitted.append(call_id)
            elif kind == "commit":
                s.commit_user_turn(self.t)
            elif d.draw(st.integers(0, 6)) == 0:
                s.end_call("app ended", self.t)
        except CallNotActive:
            assert not s.active
        except LocalProtocolError:
            assert kind in ("tool", "commit")

    # ------------------------------------------------------------------ driver reports

    def driver_step(self) -> None:
        d = self.data
        s = self.s
        state = s.call_state
        serving = state in (CallState.RUNNING, CallState.ROTATING, CallState.READY_TO_SWITCH)
        if serving and (s.lost_reason is not None or d.draw(st.integers(0, 4)) == 0):
            audio = d.draw(st.integers(0, 3))
            s.openai_lost(s.lost_reason or "openai closed", self.t, audio_dropped=audio)
            self.outstanding.clear()
            self.unwritten.clear()  # the lost socket's queue is dropped with it
        elif s.next_generation is not None and self.next_open != s.next_generation:
            how = d.draw(st.sampled_from(["open", "open", "open", "fail"]), label="next session")
            if how == "open":
                self.next_open = s.next_session_opened(self.t)
            else:
                s.next_session_failed("OSError", self.t)
        elif state is CallState.ROTATING and self.next_open == s.next_generation:
            frame = d.draw(st.sampled_from(_NEXT_SESSION_FRAMES), label="next frame")
            s.next_session_frame(frame, self.t)
        elif state is CallState.RECONNECTING:
            self.t += s.connect_delay or 0.0
            how = d.draw(st.sampled_from(["open", "open", "fail", "refused"]), label="connect")
            if how == "open":
                s.session_opened(self.t)
            else:
                status = None if how == "fail" else d.draw(st.sampled_from([401, 403, 500]))
                s.connect_failed("OSError", self.t, status=status)
        else:
            self.write_some()

    def tick_step(self) -> None:
        deadline = self.s.next_deadline
        if deadline is not None and self.data.draw(st.booleans(), label="to deadline"):
            self.t = max(self.t, deadline)
            self._expire()
        self.s.tick(self.t)

    # -------------------------------------------------------------------------- run

    def run(self) -> None:
        d = self.data
        if d.draw(st.booleans(), label="start first"):
            self.s.twilio_frame(tw_start(), self.t)
        steps = d.draw(st.integers(1, 60), label="steps")
        for _ in range(steps):
            self.advance()
            step = d.draw(
                st.sampled_from(["twilio", "openai", "openai", "app", "driver", "driver", "tick"]),
                label="step",
            )
            getattr(self, f"{step}_step")()
            self.drain()
            if self.s.call_state is CallState.ENDING and d.draw(st.integers(0, 3)) == 0:
                break
        if d.draw(st.booleans(), label="write before close"):
            self.write_some()
        self.t += 0.01
        self.s.closed(self.t)
        self.drain()
        self.check_texts()

    def check_texts(self) -> None:
        report = self.s.report
        assert self.s.call_state is CallState.ENDED
        assert report.end_reason
        assert report.user_texts_sent == len(self.written)
        assert sorted(self.written + report.undelivered_texts) == sorted(self.taken), (
            f"taken {self.taken!r}, written {self.written!r}, returned {report.undelivered_texts!r}"
        )
        # Returned in the order given.
        rest = iter(self.taken)
        assert all(text in rest for text in report.undelivered_texts), "returned out of order"


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_random_interleavings_keep_the_invariants(data: st.DataObject) -> None:
    PropertyDriver(data).run()


def test_heard_ms_without_transcript_deltas() -> None:
    c = Call().start()
    c.oa(oa_session())
    c.s.request_response(c.t)
    c.drain()
    c.answer(c.creates()[-1], "resp_1")
    for _ in range(3):
        c.oa(oa_audio("resp_1", "item_1"))
    c.oa(oa_audio_done("resp_1", "item_1"))
    for name in [m["mark"]["name"] for m in c.twilio if m["event"] == "mark"]:
        c.tw(tw_mark(name), 0.06)
    c.oa(oa_done("resp_1"))
    (finished,) = [e for e in c.events if isinstance(e, ResponseFinished)]
    assert finished.heard_ms == 60

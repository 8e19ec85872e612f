"""``CallSession`` under random interleavings of valid and hostile frames from both sides, app
calls and clock steps (hypothesis): the session's invariants hold after every step.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st
from test_call_session import (
    CLIENT_EVENT,
    MULAW,
    STREAM,
    Call,
    oa_audio,
    oa_audio_done,
    oa_committed,
    oa_created,
    oa_done,
    oa_error,
    oa_function_call,
    oa_input_transcript,
    oa_output_added,
    oa_session,
    oa_speech_started,
    oa_speech_stopped,
    oa_transcript,
    tw_connected,
    tw_dtmf,
    tw_mark,
    tw_media,
    tw_start,
    tw_stop,
)

from realtime_fsm.call import (
    BridgeConfig,
    CallEnded,
    CallSession,
    ResponseFinished,
    TextFrame,
)
from realtime_fsm.errors import CallNotActive, LocalProtocolError
from realtime_fsm.table import CallState

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
        ptt = data.draw(st.booleans(), label="push-to-talk")
        self.cfg = BridgeConfig(
            session=attrs.evolve(BridgeConfig().session, turn_detection=None)
            if ptt
            else BridgeConfig().session,
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
        #: Push-to-talk: caller audio bytes forwarded since the last commit (what a switch
        #: must carry to the new session).
        self.uncommitted = 0

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
        switched = s.generation != self.generation
        if switched:
            # Another session now: the old one's creates are moot, and the driver drops what
            # was queued for its socket (the texts are back in the call's custody).
            self.generation = s.generation
            self.outstanding.clear()
            self.unwritten.clear()
            if not s.input_audio_resent:  # a reconnect: the new buffer starts empty
                self.uncommitted = 0
        carried = 0
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
            if event["type"] == "input_audio_buffer.append":
                carried += len(base64.b64decode(event["audio"]))
            elif event["type"] == "input_audio_buffer.commit":
                self.uncommitted = 0
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
        if switched and s.input_audio_resent:
            # A switch carried the push-to-talk turn so far to the new session, whole.
            assert carried == self.uncommitted, (carried, self.uncommitted)
            note("push-to-talk audio carried over a switch")
        else:
            assert carried == 0  # caller audio goes out per frame, never in the call's lists
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
            self.uncommitted += len(base64.b64decode(json.loads(out)["audio"]))

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
        # Frames reach the machine while the call serves: running, or rotating (the current
        # session still serves the call while the next one is prepared).
        running = self.s.call_state in (
            CallState.RUNNING,
            CallState.ROTATING,
            CallState.READY_TO_SWITCH,
        )
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
        # A loss is likelier with the next session ready: it takes over then (no reconnect).
        ready = state is CallState.READY_TO_SWITCH
        lose = s.lost_reason is not None or d.draw(st.integers(0, 1 if ready else 4)) == 0
        if serving and lose:
            audio = d.draw(st.integers(0, 3))
            dropped, generation, following = s.report.media_dropped, s.generation, s.next_generation
            s.openai_lost(s.lost_reason or "openai closed", self.t, audio_dropped=audio)
            self.outstanding.clear()
            self.unwritten.clear()  # the lost socket's queue is dropped with it (or moved)
            assert s.next_generation is None  # taken over, or dropped with the lost one
            if s.call_state is CallState.RUNNING:  # the ready session is current at once
                assert ready and s.generation == following and s.connect_delay is None
                assert s.report.media_dropped == dropped  # the driver moves that audio
                note("lost while the next session was ready: switched")
            else:
                assert s.generation == generation
                assert s.report.media_dropped == dropped + audio
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


@pytest.mark.slow
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

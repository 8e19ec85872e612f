"""``CallBridge`` over in-memory sockets: one response at a time, malformed peer input, every way a
call ends, the timers, back-pressure, hostile peers and buggy applications.  The sockets, frames
and harness are test_bridge's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

import pytest
from test_bridge import (
    CHUNK_A,
    CHUNK_B,
    Call,
    FakeClock,
    MemorySocket,
    audio,
    connected,
    created,
    done,
    dtmf,
    error,
    mark,
    media,
    run,
    settle,
    start,
    stop,
    transcript,
    typed,
    until,
)
from websockets.protocol import State

from realtime_fsm import META_REASON, LifecycleConfig, ResponseState
from realtime_fsm.bridge import BridgeConfig, CallBridge
from realtime_fsm.errors import CallNotActive, LocalProtocolError
from realtime_fsm.openai_realtime import SessionConfig

# ------------------------------------------------------------------------ one response at a time


def test_busy_rejection_is_requeued_until_the_active_response_is_done() -> None:
    async def body() -> None:
        call = Call(BridgeConfig(greeting="Say hello."))
        await call.begin()
        await until(lambda: call.openai.of_type("response.create"))
        [first] = call.openai.of_type("response.create")
        call.openai.feed(
            error(
                "conversation_already_has_active_response",
                first["event_id"],
                "Conversation already has an active response in progress: resp_srv. Wait"
                " until the response is finished before creating a new one.",
            )
        )
        await settle()
        assert len(call.openai.of_type("response.create")) == 1  # not retried while busy
        call.openai.feed(audio("resp_srv", "item_s", CHUNK_A))  # the busy response still plays
        await until(lambda: call.twilio.of_type("media"))
        call.openai.feed(done("resp_srv"))
        await until(lambda: len(call.openai.of_type("response.create")) == 2, "re-queued create")
        second = call.openai.of_type("response.create")[1]
        assert second["response"]["instructions"] == "Say hello."
        assert second["response"]["metadata"][META_REASON] == "greeting"
        assert second["event_id"] != first["event_id"]
        assert call.report.given_up == []
        assert call.report.server_errors == {"conversation_already_has_active_response": 1}
        call.twilio.feed(stop())
        await call.end()

    run(body)


class OneResponseServer:
    """A scripted OpenAI peer enforcing the real rule: one default response at a time.

    A ``response.create`` while a response is active gets the server's busy error (counted);
    otherwise the response is created, echoing metadata, and starts talking."""

    def __init__(self, sock: MemorySocket) -> None:
        self.sock = sock
        self.active: str | None = None
        self.busy_errors = 0
        self.responses = 0
        self.texts: list[str] = []

    async def serve(self) -> None:
        while True:
            message = json.loads(await self.sock.outbox.get())
            kind = message["type"]
            if kind == "response.create":
                if self.active is not None:
                    self.busy_errors += 1
                    self.sock.feed(
                        error("conversation_already_has_active_response", message["event_id"])
                    )
                    continue
                self.responses += 1
                rid = self.active = f"resp_{self.responses}"
                self.sock.feed(created(rid, message))
                self.sock.feed(audio(rid, f"item_{self.responses}", CHUNK_A))
            elif kind == "response.cancel":
                if self.active is not None and message.get("response_id") in (None, self.active):
                    self.sock.feed(done(self.active, "cancelled"))
                    self.active = None
                else:
                    self.sock.feed(error("response_cancel_not_active", message["event_id"]))
            elif kind == "conversation.item.create":
                self.texts.append(message["item"]["content"][0]["text"])

    def finish(self) -> None:
        if self.active is not None:
            self.sock.feed(audio(self.active, "item_x", CHUNK_B), done(self.active))
            self.active = None


@pytest.mark.parametrize("seed", range(6))
def test_never_a_second_response_while_one_is_active(seed: int) -> None:
    rng = random.Random(seed)

    async def body() -> None:
        config = BridgeConfig(
            session=SessionConfig(turn_detection=None),
            greeting="hi",
            accept_text_messages=True,
        )
        call = Call(config)
        server = OneResponseServer(call.openai)
        serving = asyncio.create_task(server.serve())
        await call.begin()
        sent_texts: list[str] = []
        for step in range(40):
            action = rng.choice(["dtmf", "typed", "app", "request", "ask", "finish", "marks"])
            if action == "dtmf":
                digit = rng.choice("0123456789*#")
                call.twilio.feed(dtmf(digit))
                sent_texts.append(f"DTMF {digit}")
            elif action == "typed":
                call.twilio.feed(typed(f"typed {step}"))
                sent_texts.append(f"typed {step}")
            elif action == "app":
                call.bridge.send_user_text(f"app {step}")
                sent_texts.append(f"app {step}")
            elif action == "request":
                call.bridge.request_response()
            elif action == "ask":
                call.bridge.request_response("tool", instructions=f"say {step}")
            elif action == "finish":
                server.finish()
            else:
                for m in call.twilio.of_type("mark"):
                    call.twilio.feed(mark(m["mark"]["name"]))
            await settle()
        machine = call.bridge.machine
        assert machine is not None
        for _ in range(200):  # let the queue drain: finish whatever is active
            if machine.state is ResponseState.IDLE and not machine.pending:
                break
            server.finish()
            await settle()
        assert machine.state is ResponseState.IDLE
        assert server.busy_errors == 0
        assert server.texts == sent_texts  # every user text reached the server once, in order
        assert machine.check_invariants() == []
        assert call.running
        call.twilio.feed(stop())
        report = await call.end()
        assert report.undelivered_texts == []
        serving.cancel()

    run(body, timeout=10)


# --------------------------------------------------------------------------- malformed peer input


def test_malformed_frames_from_either_side_are_counted_and_the_call_goes_on() -> None:
    async def body() -> None:
        call = Call(BridgeConfig(greeting="hi"))
        await call.begin()
        await call.respond("resp_1")
        call.twilio.feed(
            "not json",
            b"\xff\xfe",
            '{"event": 5}',
            '{"event": "media", "media": {}}',
            "[1, 2]",
        )
        call.openai.feed(
            "{",
            '{"type": "response.created", "response": {"id": ""}}',
            '{"no": "type"}',
            '{"type": "response.output_audio.delta", "response_id": "resp_1",'
            ' "item_id": "", "delta": "AAAA"}',
            '{"type": "response.output_audio.delta", "response_id": "resp_1"}',
        )
        await settle()
        assert call.running
        call.twilio.feed(media(CHUNK_A))
        call.openai.feed(audio("resp_1", "item_1", CHUNK_B))
        await until(lambda: call.openai.of_type("input_audio_buffer.append"), "append")
        await until(lambda: call.twilio.of_type("media"), "audio out")
        assert call.twilio.of_type("media")[0]["media"]["payload"] == CHUNK_B
        assert call.report.bad_frames == {"twilio:malformed": 5, "openai:malformed": 5}
        assert call.running
        call.twilio.feed(stop())
        report = await call.end()
        assert report.end_reason == "telephony stop"

    run(body)


@pytest.mark.parametrize("side", ["twilio", "openai"])
def test_too_many_malformed_frames_end_the_call(side: str, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    async def body() -> None:
        call = Call(BridgeConfig(max_bad_frames=3))
        await call.begin()
        sock = call.twilio if side == "twilio" else call.openai
        sock.feed(*["garbage"] * 4)
        report = await call.end()
        assert report.end_reason == f"bad input: too many malformed frames from {side}"
        assert report.bad_frames == {f"{side}:malformed": 4}
        assert call.twilio.closed and call.openai.closed
        assert sock.close_args is not None and sock.close_args[0] == 1008  # policy violation

    run(body)
    assert "too many malformed frames" in caplog.text


def test_garbage_before_start_also_ends_the_call_with_a_reason() -> None:
    async def body() -> None:
        call = Call(BridgeConfig(max_bad_frames=2))
        call.twilio.feed("x", "y", "z")
        report = await call.end()
        assert report.end_reason == "bad input: too many malformed frames from twilio"
        assert call.openai.sent == []
        assert call.twilio.close_args is not None and call.twilio.close_args[0] == 1008

    run(body)


def test_a_stream_that_is_not_mulaw_is_refused() -> None:
    async def body() -> None:
        call = Call()
        call.twilio.feed(connected(), start(encoding="audio/l16"))
        report = await call.end()
        assert report.end_reason.startswith("bad media format")
        assert call.openai.sent == [] and call.twilio.sent == []
        assert call.twilio.closed and call.openai.closed

    run(body)


# -------------------------------------------------------------------------------------- endings


@pytest.mark.parametrize("ending", ["stop", "twilio_closed", "openai_closed"])
def test_either_side_ending_closes_the_other_and_reports_held_text(ending: str) -> None:
    async def body() -> None:
        call = Call(BridgeConfig(greeting="hi"))
        await call.begin()
        await call.respond("resp_1")
        call.openai.feed(audio("resp_1", "item_1", CHUNK_A))
        await until(lambda: call.twilio.of_type("media"))
        call.twilio.feed(dtmf("7"))  # a barge-in: held until resp_1's response.done ...
        await until(lambda: call.openai.of_type("response.cancel"))
        call.bridge.send_user_text("and a window seat")
        await settle()
        if ending == "stop":  # ... which never comes
            call.twilio.feed(stop())
        elif ending == "twilio_closed":
            call.twilio.hang_up()
        else:
            call.openai.hang_up()
        report = await call.end()
        expected_reason = {
            "stop": "telephony stop",
            "twilio_closed": "telephony closed",
            "openai_closed": "openai closed",
        }[ending]
        assert report.end_reason == expected_reason
        assert call.twilio.closed and call.openai.closed
        assert report.undelivered_texts == ["DTMF 7", "and a window seat"]
        assert call.undelivered == [("DTMF 7", "and a window seat")]
        assert not call.openai.of_type("conversation.item.create")
        assert report.user_texts_sent == 0
        assert report.lifecycle_stats.get("texts_held") == 2

    run(body)


def test_a_pending_request_at_close_is_reported_given_up() -> None:
    async def body() -> None:
        call = Call(BridgeConfig(greeting="hi"))
        await call.begin()
        await until(lambda: call.openai.of_type("response.create"))
        call.twilio.feed(stop())
        report = await call.end()
        assert [g.reason for g in report.given_up] == ["closed:telephony stop"]
        assert report.given_up[0].request_reasons == ("greeting",)

    run(body)


def test_a_fatal_openai_error_ends_the_call_with_its_code() -> None:
    async def body() -> None:
        call = Call()
        await call.begin()
        call.openai.feed(error("invalid_value", None, "some field is wrong"))  # not fatal
        await settle()
        assert call.running
        call.openai.feed(error("session_expired", None, "Your session hit the 60 minute limit."))
        report = await call.end()
        assert report.end_reason == "openai error session_expired"
        assert report.server_errors == {"invalid_value": 1, "session_expired": 1}
        assert call.twilio.closed and call.openai.closed

    run(body)


def test_no_start_in_time_ends_the_call() -> None:
    async def body() -> None:
        call = Call(BridgeConfig(start_timeout=0.05))
        call.twilio.feed(connected())
        report = await call.end()
        assert report.end_reason == "no start from telephony"
        assert call.openai.sent == []
        assert call.twilio.closed and call.openai.closed

    run(body)


def test_the_start_deadline_follows_the_bridge_clock() -> None:
    """A peer that trickles non-start messages cannot hold the call open past the deadline."""

    async def body() -> None:
        clock = FakeClock()
        call = Call(BridgeConfig(start_timeout=15.0), clock=clock)
        call.twilio.feed(connected())
        await settle()
        assert call.running
        clock.now += 16.0
        call.twilio.feed(connected())
        report = await call.end()
        assert report.end_reason == "no start from telephony"

    run(body)


# --------------------------------------------------------------------------------------- timers


def test_timer_gives_up_an_unanswered_create_and_the_call_recovers() -> None:
    async def body() -> None:
        lifecycle = LifecycleConfig(create_timeout=0.05)
        call = Call(BridgeConfig(greeting="hi", lifecycle=lifecycle))
        await call.begin()
        await until(lambda: call.openai.of_type("response.create"))
        # The server never answers: the timer's Tick sends the create once more, then gives
        # the request up, and the slot is free.
        await until(lambda: call.report.given_up, "give-up", timeout=1.0)
        [given_up] = call.report.given_up
        assert given_up.reason == "create_timeout"
        assert given_up.request_reasons == ("greeting",)
        assert len(call.openai.of_type("response.create")) == 2
        call.twilio.feed(dtmf("1"))
        await until(lambda: len(call.openai.of_type("response.create")) == 3, "a new create")
        await call.respond("resp_2")
        call.openai.feed(audio("resp_2", "item_2", CHUNK_A))
        await until(lambda: call.twilio.of_type("media"))
        call.twilio.feed(stop())
        await call.end()

    run(body)


def test_timer_runs_the_no_audio_watchdog(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    async def body() -> None:
        lifecycle = LifecycleConfig(no_audio_timeout=0.05)
        call = Call(BridgeConfig(greeting="hi", lifecycle=lifecycle))
        await call.begin()
        await call.respond("resp_1")
        call.openai.feed(transcript("resp_1", "item_1", "Hello"))  # words, but never audio
        await until(lambda: call.openai.of_type("response.cancel"), "watchdog cancel")
        assert call.openai.of_type("response.cancel")[0]["response_id"] == "resp_1"
        call.openai.feed(audio("resp_1", "item_1", CHUNK_A))  # too late: dropped
        call.openai.feed(done("resp_1", "cancelled"))
        await until(lambda: len(call.openai.of_type("response.create")) == 2, "retry create")
        retry = call.openai.of_type("response.create")[1]
        assert retry["response"]["metadata"][META_REASON] == "no_audio_retry"
        await call.respond("resp_2")
        call.openai.feed(audio("resp_2", "item_2", CHUNK_B))
        call.openai.feed(done("resp_2"))
        await until(lambda: call.twilio.of_type("media"))
        await settle()
        assert [m["media"]["payload"] for m in call.twilio.of_type("media")] == [CHUNK_B]
        call.twilio.feed(stop())
        await call.end()

    run(body)
    assert "[NO_AUDIO_WATCHDOG] FIRED! resp=resp_1" in caplog.text
    assert "[NO_AUDIO_WATCHDOG] Recovery result: success" in caplog.text


def test_timer_cancels_a_stalled_response_and_abandons_an_unconfirmed_cancel() -> None:
    async def body() -> None:
        lifecycle = LifecycleConfig(stall_timeout=0.05, cancel_timeout=0.05)
        call = Call(BridgeConfig(greeting="hi", lifecycle=lifecycle))
        await call.begin()
        await call.respond("resp_1")
        # Total silence: the stall timeout cancels, then the cancel timeout frees the slot.
        await until(lambda: call.openai.of_type("response.cancel"), "stall cancel")
        machine = call.bridge.machine
        assert machine is not None
        await until(lambda: machine.state is ResponseState.IDLE, "back to idle")
        assert machine.stats.get("stalled_responses") == 1
        assert machine.stats.get("cancel_timeouts") == 1
        call.bridge.request_response("nudge")
        await until(lambda: len(call.openai.of_type("response.create")) == 2, "a new create")
        call.twilio.feed(stop())
        await call.end()

    run(body)


# ------------------------------------------------------------------------------ back-pressure


@pytest.mark.parametrize("slow", ["twilio", "openai"])
def test_a_peer_that_never_reads_ends_the_call_instead_of_growing_memory(
    slow: str, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    async def body() -> None:
        config = BridgeConfig(max_queue=8, greeting="hi" if slow == "twilio" else None)
        call = Call(config, twilio_reads=slow != "twilio", openai_reads=slow != "openai")
        call.twilio.feed(connected(), start())
        if slow == "twilio":
            await until(lambda: call.openai.of_type("response.create"))
            await call.respond("resp_1")
            for _ in range(100):
                call.openai.feed(audio("resp_1", "item_1", CHUNK_A))
        else:
            for i in range(100):
                call.twilio.feed(media(CHUNK_A, i))
        report = await call.end()
        queue = call.bridge._to_twilio if slow == "twilio" else call.bridge._to_openai
        assert queue.maxsize == 8 and queue.qsize() <= 8
        side = "telephony" if slow == "twilio" else "openai"
        assert report.end_reason == f"{side} socket not keeping up (queue full)"
        assert call.twilio.closed and call.openai.closed

    run(body)
    assert "not keeping up (queue full)" in caplog.text


# ------------------------------------------------------------------ hostile peers, buggy apps


def test_a_response_transcript_is_kept_up_to_the_history_budget_only() -> None:
    """Huge transcript deltas (a hostile or broken server) are cut at ``history_max_chars``
    per response while they stream, not after: memory stays bounded by size, not by count."""

    async def body() -> None:
        call = Call(BridgeConfig(history_max_chars=1000))
        await call.begin()
        call.openai.feed(created("resp_1"))
        for n in range(40):
            call.openai.feed(transcript("resp_1", "item_1", str(n % 10) * 64 * 1024))
        await until(lambda: call.openai.inbox.empty(), "the deltas read")
        await settle()
        partial = call.bridge.session._partials["resp_1"]
        assert partial.chars == 1000 and sum(map(len, partial.parts)) == 1000
        assert len(partial.parts) == 1  # nothing appended once the budget is spent
        call.openai.feed(done("resp_1"))
        await until(lambda: len(call.bridge.history) == 1, "the transcript in the history")
        item = call.bridge.history.items()[0]
        assert item.role == "assistant" and item.text == "0" * 1000
        call.twilio.feed(stop())
        await call.end()

    run(body)


def test_a_failing_on_undelivered_callback_still_ends_the_call_cleanly(caplog: Any) -> None:
    """The app's ``on_undelivered`` raises while the call is torn down: ``run`` still returns
    its report, with the text in it, and both sockets are closed."""
    caplog.set_level(logging.ERROR, logger="realtime_fsm")

    def broken(texts: tuple[str, ...]) -> None:
        raise RuntimeError("bug in the application's callback")

    async def body() -> None:
        call = Call(openai_reads=False)  # nothing the bridge sends to OpenAI gets out
        call.bridge.on_undelivered = broken
        call.twilio.feed(connected(), start())
        await until(lambda: call.bridge.active, "the stream start")
        call.bridge.send_user_text("call me back")
        await settle()
        call.twilio.hang_up()
        report = await call.end()
        assert report.end_reason == "telephony closed"
        assert report.undelivered_texts == ["call me back"]
        assert report.user_texts_sent == 0  # queued, never written: not counted as sent
        assert call.twilio.closed and call.openai.closed

    run(body)
    assert "on_undelivered callback failed" in caplog.text


class _ClosingSocket(MemorySocket):
    """A ``websockets``-like OpenAI socket in its closing handshake: it has a transport with
    nothing buffered, but a send waits (like one that waits out ``close_timeout``)."""

    class _Transport:
        def get_write_buffer_size(self) -> int:
            return 0

    transport = _Transport()
    state = State.CLOSING


def test_caller_audio_is_not_sent_directly_on_a_closing_socket() -> None:
    """The direct send path would stall the Twilio reader on a closing socket: the frames are
    queued instead and the reader keeps reading."""

    async def body() -> None:
        call = Call()
        closing = _ClosingSocket("openai", call.wire, reading=False)
        call.bridge.openai = closing
        call.twilio.feed(connected(), start())
        for n in range(3):
            call.twilio.feed(media(CHUNK_A, n))
        call.twilio.feed(dtmf("5"))
        await until(lambda: call.report.media_in == 3, "the reader past the audio", 3.0)
        await until(lambda: call.bridge._to_openai.qsize() >= 3, "the audio queued", 3.0)
        assert not closing.sent
        call.twilio.hang_up()
        report = await call.end()
        assert report.undelivered_texts == ["DTMF 5"]

    run(body)


VAD_SERVER_CREATES = SessionConfig(create_response=True, interrupt_response=True)
VAD_CLIENT_CREATES = SessionConfig(create_response=False, interrupt_response=False)


def test_commit_user_turn_refuses_sessions_with_turn_detection() -> None:
    """With turn detection on, the server's VAD commits turns itself (``create_response`` only
    says who answers them): a hand commit on top would cut a turn in two, or commit the audio
    since the VAD's commit as a turn of its own, answered twice.  Refused up front."""
    for session in (VAD_SERVER_CREATES, VAD_CLIENT_CREATES):
        with pytest.raises(ValueError, match="commit_on_dtmf needs a session without turn"):
            BridgeConfig(session=session, commit_on_dtmf="#")
    with pytest.raises(ValueError, match="one DTMF key"):
        BridgeConfig(session=SessionConfig(turn_detection=None), commit_on_dtmf="##")
    BridgeConfig(session=SessionConfig(turn_detection=None), commit_on_dtmf="*")

    class Idle:
        async def recv(self) -> str:
            await asyncio.Event().wait()
            raise AssertionError

        async def send(self, message: str) -> None: ...

        async def close(self, code: int = 1000, reason: str = "") -> None: ...

    for session in (VAD_SERVER_CREATES, VAD_CLIENT_CREATES):
        bridge = CallBridge(Idle(), Idle(), BridgeConfig(session=session))
        with pytest.raises(LocalProtocolError, match="without turn detection"):
            bridge.commit_user_turn()
    bridge = CallBridge(Idle(), Idle(), BridgeConfig(session=SessionConfig(turn_detection=None)))
    with pytest.raises(CallNotActive):
        bridge.commit_user_turn()  # no start yet

"""The bridge's wiring, with in-memory sockets: what goes on each wire, in which order, and why.

Each test runs one :class:`CallBridge` between two :class:`MemorySocket` s on a private event loop
(``asyncio.run``; there is no pytest-asyncio).  The test plays both peers: it feeds Twilio
Media Streams and OpenAI Realtime frames and reads what the bridge sends.  Both sockets log into
one shared list, so cross-socket order ("cancel, then clear") can be checked too.  Timers use
real but tiny timeouts; nothing here sleeps for more than a few tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import openai.types.beta.realtime as beta_types
import openai.types.realtime as ga_types
import pytest
from pydantic import TypeAdapter
from waiting import poller

from realtime_fsm import META_EVENT_ID, META_REASON
from realtime_fsm.bridge import BridgeConfig, CallBridge, CallReport
from realtime_fsm.openai_realtime import Dialect, SessionConfig
from realtime_fsm.webserver import WebSocketClosed

STREAM = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA0123456789abcdef0123456789abcdef"
GA_CLIENT = TypeAdapter(ga_types.RealtimeClientEvent)
BETA_CLIENT = TypeAdapter(beta_types.RealtimeClientEvent)
Json = dict[str, Any]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


#: 20 ms of mu-law (160 bytes) whose base64 uses '+', '/' and '=' padding: a re-encode would show.
CHUNK_A = b64(bytes(range(96, 256)))
CHUNK_B = b64(bytes(range(0, 160)))
CHUNK_C = b64(bytes(range(50, 210)))
assert "+" in CHUNK_A + CHUNK_B and "/" in CHUNK_A and CHUNK_A.endswith("==")


# ------------------------------------------------------------------------------ in-memory socket


class MemorySocket:
    """One side of a WebSocket held in memory: the bridge ``recv``s what the test ``feed``s and
    ``send``s into :attr:`sent` (and the shared ``wire`` log).  ``reading=False`` makes a peer
    that never reads: every ``send`` blocks, like a full TCP window."""

    def __init__(self, name: str, wire: list[tuple[str, str]], *, reading: bool = True) -> None:
        self.name = name
        self.wire = wire
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        #: Every message the bridge sent, also as a queue for a scripted peer.
        self.sent: list[str] = []
        self.outbox: asyncio.Queue[str] = asyncio.Queue()
        self.close_args: tuple[int, str] | None = None
        self.peer_closed = False
        self._reading = asyncio.Event()
        if reading:
            self._reading.set()

    # the test's side ------------------------------------------------------------------------

    def feed(self, *frames: Json | str | bytes) -> None:
        for frame in frames:
            self.inbox.put_nowait(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    def hang_up(self) -> None:
        """The peer closes the connection: the bridge's next ``recv`` raises."""
        self.inbox.put_nowait(None)

    def messages(self) -> list[Json]:
        return [json.loads(m) for m in self.sent]

    def of_type(self, kind: str) -> list[Json]:
        key = "type" if self.name == "openai" else "event"
        return [m for m in self.messages() if m.get(key) == kind]

    @property
    def closed(self) -> bool:
        return self.close_args is not None

    # the bridge's side (MessageSocket) ------------------------------------------------------

    async def recv(self) -> str | bytes:
        if self.close_args is not None or self.peer_closed:
            raise WebSocketClosed(1000, "closed")
        frame = await self.inbox.get()
        if frame is None:
            self.peer_closed = True
            raise WebSocketClosed(1000, "peer closed")
        return frame

    async def send(self, message: str) -> None:
        if self.close_args is not None or self.peer_closed:
            raise WebSocketClosed(1000, "closed")
        await self._reading.wait()
        self.sent.append(message)
        self.wire.append((self.name, message))
        self.outbox.put_nowait(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.close_args is None:
            self.close_args = (code, reason)
            self.inbox.put_nowait(None)  # wake a pending recv, like a real close would


class NowaitSocket(MemorySocket):
    """A Twilio side with ``send_nowait``, as our own server's socket has: it writes at once
    unless a ``send`` is under way or the peer is not reading (the real one declines then too:
    its lock is held, or its transport holds unread bytes)."""

    def __init__(self, name: str, wire: list[tuple[str, str]], *, reading: bool = True) -> None:
        super().__init__(name, wire, reading=reading)
        self.nowait_calls: list[str] = []
        self.nowait_sent: list[str] = []
        self._sending = 0

    def send_nowait(self, message: str) -> bool:
        self.nowait_calls.append(message)
        if self._sending or not self._reading.is_set() or self.closed or self.peer_closed:
            return False
        self.sent.append(message)
        self.wire.append((self.name, message))
        self.outbox.put_nowait(message)
        self.nowait_sent.append(message)
        return True

    async def send(self, message: str) -> None:
        self._sending += 1
        try:
            await super().send(message)
        finally:
            self._sending -= 1


# ------------------------------------------------------------------------------ protocol frames


def connected() -> Json:
    return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start(encoding: str = "audio/x-mulaw") -> Json:
    return {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC0123456789abcdef0123456789abcdef",
            "streamSid": STREAM,
            "callSid": CALL,
            "tracks": ["inbound"],
            "customParameters": {"caller": "+15550100"},
            "mediaFormat": {"encoding": encoding, "sampleRate": 8000, "channels": 1},
        },
        "streamSid": STREAM,
    }


def media(payload: str, chunk: int = 1) -> Json:
    return {
        "event": "media",
        "sequenceNumber": str(chunk + 1),
        "media": {"track": "inbound", "chunk": str(chunk), "timestamp": "5", "payload": payload},
        "streamSid": STREAM,
    }


def mark(name: str) -> Json:
    return {"event": "mark", "sequenceNumber": "9", "streamSid": STREAM, "mark": {"name": name}}


def dtmf(digit: str) -> Json:
    return {
        "event": "dtmf",
        "streamSid": STREAM,
        "sequenceNumber": "5",
        "dtmf": {"track": "inbound_track", "digit": digit},
    }


def stop() -> Json:
    return {
        "event": "stop",
        "sequenceNumber": "99",
        "streamSid": STREAM,
        "stop": {"accountSid": "AC0123456789abcdef0123456789abcdef", "callSid": CALL},
    }


def typed(text: str) -> Json:
    return {"event": "text", "text": text}


def created(rid: str, create: Json | None = None) -> Json:
    """``response.created``; echoing a ``response.create``'s metadata makes it "ours"."""
    response: Json = {
        "id": rid,
        "object": "realtime.response",
        "status": "in_progress",
        "conversation_id": "conv_1",
        "output_modalities": ["audio"],
        "output": [],
    }
    if create is not None:
        response["metadata"] = create["response"].get("metadata")
    return {"type": "response.created", "event_id": f"evt_c_{rid}", "response": response}


def audio(rid: str, item: str, payload: str) -> Json:
    return {
        "type": "response.output_audio.delta",
        "event_id": "evt_a",
        "response_id": rid,
        "item_id": item,
        "output_index": 0,
        "content_index": 0,
        "delta": payload,
    }


def transcript(rid: str, item: str, text: str) -> Json:
    return {
        "type": "response.output_audio_transcript.delta",
        "event_id": "evt_t",
        "response_id": rid,
        "item_id": item,
        "output_index": 0,
        "content_index": 0,
        "delta": text,
    }


def done(rid: str, status: str = "completed") -> Json:
    return {
        "type": "response.done",
        "event_id": f"evt_d_{rid}",
        "response": {"id": rid, "object": "realtime.response", "status": status, "output": []},
    }


def error(code: str, event_id: str | None = None, message: str = "") -> Json:
    return {
        "type": "error",
        "event_id": "evt_e",
        "error": {
            "type": "invalid_request_error",
            "code": code,
            "message": message or code,
            "param": None,
            "event_id": event_id,
        },
    }


def speech_started(item: str = "item_user_1") -> Json:
    return {
        "type": "input_audio_buffer.speech_started",
        "event_id": "evt_s",
        "audio_start_ms": 1000,
        "item_id": item,
    }


# ----------------------------------------------------------------------------------- harness


until = poller(1.0, 0.001)


async def settle() -> None:
    """Let every task run until nothing is left to do (no timers involved)."""
    for _ in range(50):
        await asyncio.sleep(0)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Call:
    """A bridge between two memory sockets, run as a task."""

    def __init__(
        self,
        config: BridgeConfig | None = None,
        *,
        twilio_reads: bool = True,
        openai_reads: bool = True,
        clock: Callable[[], float] | None = None,
        twilio_nowait: bool = False,
    ) -> None:
        self.wire: list[tuple[str, str]] = []
        twilio_kind = NowaitSocket if twilio_nowait else MemorySocket
        self.twilio = twilio_kind("twilio", self.wire, reading=twilio_reads)
        self.openai = MemorySocket("openai", self.wire, reading=openai_reads)
        self.undelivered: list[tuple[str, ...]] = []
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        self.bridge = CallBridge(
            self.twilio,
            self.openai,
            config,
            on_undelivered=self.undelivered.append,
            **kwargs,
        )
        self.task = asyncio.create_task(self.bridge.run())

    @property
    def report(self) -> CallReport:
        return self.bridge.report

    @property
    def running(self) -> bool:
        return not self.task.done()

    async def begin(self) -> None:
        """``connected`` + ``start``, and wait for the ``session.update``."""
        self.twilio.feed(connected(), start())
        await until(lambda: self.openai.sent, "session.update")
        await settle()

    async def respond(self, rid: str, create_index: int = -1) -> Json:
        """Answer the bridge's ``response.create`` with ``response.created``; return the create."""
        await until(lambda: self.openai.of_type("response.create"), "response.create")
        create = self.openai.of_type("response.create")[create_index]
        self.openai.feed(created(rid, create))
        await settle()
        return create

    async def end(self, timeout: float = 1.5) -> CallReport:
        return await asyncio.wait_for(self.task, timeout)

    def wire_index(self, side: str, predicate: Callable[[Json], bool]) -> list[int]:
        return [
            i
            for i, (name, message) in enumerate(self.wire)
            if name == side and predicate(json.loads(message))
        ]


def run(body: Callable[[], Awaitable[None]], timeout: float = 5.0) -> None:
    async def main() -> None:
        await asyncio.wait_for(body(), timeout)

    asyncio.run(main())


def is_type(kind: str) -> Callable[[Json], bool]:
    return lambda m: m.get("type") == kind


def is_event(kind: str) -> Callable[[Json], bool]:
    return lambda m: m.get("event") == kind


# --------------------------------------------------------------------------- session and greeting


def test_session_update_is_first_then_the_greeting() -> None:
    async def body() -> None:
        call = Call(BridgeConfig(greeting="Greet the caller briefly."))
        await call.begin()
        await until(lambda: len(call.openai.sent) >= 2, "greeting")
        first, second = call.openai.messages()[:2]
        GA_CLIENT.validate_python(first)
        GA_CLIENT.validate_python(second)
        assert first["type"] == "session.update"
        session = first["session"]
        assert session["type"] == "realtime"
        assert session["output_modalities"] == ["audio"]
        assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        assert session["audio"]["input"]["turn_detection"] == {
            "type": "server_vad",
            "create_response": True,
            "interrupt_response": True,
        }
        assert "transcription" in session["audio"]["input"]
        assert second["type"] == "response.create"
        assert second["response"]["instructions"] == "Greet the caller briefly."
        assert second["response"]["metadata"][META_REASON] == "greeting"
        assert second["response"]["metadata"][META_EVENT_ID] == second["event_id"]
        await settle()
        assert len(call.openai.sent) == 2
        assert call.twilio.sent == []  # nothing is sent to Twilio before there is audio
        assert call.report.call_sid == CALL and call.report.stream_sid == STREAM
        call.twilio.feed(stop())
        await call.end()

    run(body)


def test_no_greeting_waits_for_the_caller_and_beta_session_shape() -> None:
    async def body() -> None:
        config = BridgeConfig(
            dialect=Dialect.BETA, session=SessionConfig(turn_detection=None, voice="alloy")
        )
        call = Call(config)
        await call.begin()
        await settle()
        [update] = call.openai.messages()
        BETA_CLIENT.validate_python(update)
        session = update["session"]
        assert session["input_audio_format"] == "g711_ulaw"
        assert session["output_audio_format"] == "g711_ulaw"
        assert session["turn_detection"] is None
        assert session["voice"] == "alloy"
        call.twilio.feed(stop())
        await call.end()

    run(body)


# ------------------------------------------------------------------------------ audio passthrough


def test_audio_is_forwarded_byte_for_byte_both_ways_with_a_mark_after_each_chunk() -> None:
    async def body() -> None:
        call = Call(BridgeConfig(greeting="hi", mark_every_ms=0))
        await call.begin()
        # Twilio -> OpenAI: the payload string goes out untouched.
        call.twilio.feed(media(CHUNK_A, 1), media(CHUNK_B, 2))
        await until(lambda: len(call.openai.of_type("input_audio_buffer.append")) == 2)
        appends = call.openai.of_type("input_audio_buffer.append")
        assert [a["audio"] for a in appends] == [CHUNK_A, CHUNK_B]
        assert appends[0] == {"type": "input_audio_buffer.append", "audio": CHUNK_A}
        raw = [m for m in call.openai.sent if "input_audio_buffer.append" in m]
        assert CHUNK_A in raw[0]  # not re-escaped, not re-encoded
        GA_CLIENT.validate_python(appends[0])
        # OpenAI -> Twilio: the delta string becomes the media payload, then a mark.
        await call.respond("resp_1")
        call.openai.feed(audio("resp_1", "item_1", CHUNK_C), audio("resp_1", "item_1", CHUNK_A))
        await until(lambda: len(call.twilio.sent) == 4, "media, mark, media, mark")
        out = call.twilio.messages()
        assert [m["event"] for m in out] == ["media", "mark", "media", "mark"]
        assert out[0] == {"event": "media", "streamSid": STREAM, "media": {"payload": CHUNK_C}}
        assert out[2]["media"]["payload"] == CHUNK_A
        assert CHUNK_C in call.twilio.sent[0]
        assert all(m["streamSid"] == STREAM for m in out)
        assert out[1]["mark"]["name"] != out[3]["mark"]["name"]
        assert call.report.media_in == 2 and call.report.media_out == 2
        call.twilio.feed(stop())
        report = await call.end()
        assert report.end_reason == "telephony stop"
        assert report.bad_frames == {}

    run(body)


def test_media_before_start_is_dropped_and_counted() -> None:
    async def body() -> None:
        call = Call()
        call.twilio.feed(connected(), media(CHUNK_A), dtmf("1"), start(), media(CHUNK_B))
        await until(lambda: call.openai.of_type("input_audio_buffer.append"), "append")
        await settle()
        appends = call.openai.of_type("input_audio_buffer.append")
        assert [a["audio"] for a in appends] == [CHUNK_B]
        assert call.openai.messages()[0]["type"] == "session.update"
        assert not call.openai.of_type("conversation.item.create")  # the early DTMF too
        assert call.report.bad_frames == {"twilio:before_start": 2}
        assert call.report.media_in == 1
        call.twilio.feed(stop())
        await call.end()

    run(body)


def test_outbound_track_media_is_not_sent_back_to_openai() -> None:
    async def body() -> None:
        call = Call()
        await call.begin()
        echo = media(CHUNK_A)
        echo["media"]["track"] = "outbound"
        call.twilio.feed(echo, media(CHUNK_B))
        await until(lambda: call.openai.of_type("input_audio_buffer.append"))
        await settle()
        assert [a["audio"] for a in call.openai.of_type("input_audio_buffer.append")] == [CHUNK_B]
        call.twilio.feed(stop())
        await call.end()

    run(body)


# ------------------------------------------------------------------------------------- barge-in


@pytest.mark.parametrize("how", ["dtmf", "speech", "app_text"])
def test_audio_of_a_dropped_response_never_reaches_twilio_after_the_clear(how: str) -> None:
    async def body() -> None:
        call = Call(BridgeConfig(greeting="hi"))
        await call.begin()
        await call.respond("resp_1")
        call.openai.feed(audio("resp_1", "item_1", CHUNK_A))
        await until(lambda: call.twilio.of_type("media"), "first audio")
        if how == "dtmf":
            call.twilio.feed(dtmf("0"))
        elif how == "speech":
            call.openai.feed(speech_started())
        else:
            call.bridge.send_user_text("actually, never mind")
        await until(lambda: call.twilio.of_type("clear"), "clear")
        # Late audio of the interrupted response keeps coming from the server ...
        call.openai.feed(audio("resp_1", "item_1", CHUNK_B), audio("resp_1", "item_1", CHUNK_B))
        call.openai.feed(done("resp_1", "cancelled"))
        if how == "speech":
            # server VAD creates the next response by itself
            call.openai.feed(created("resp_2"))
        else:
            await until(lambda: len(call.openai.of_type("response.create")) == 2, "2nd create")
            await call.respond("resp_2")
        call.openai.feed(audio("resp_2", "item_2", CHUNK_C))
        await until(lambda: len(call.twilio.of_type("media")) == 2, "audio of resp_2")
        await settle()
        events = call.twilio.messages()
        clear_at = next(i for i, m in enumerate(events) if m["event"] == "clear")
        after = [m["media"]["payload"] for m in events[clear_at:] if m["event"] == "media"]
        assert after == [CHUNK_C]  # ... and none of it is sent after the clear
        assert events[clear_at] == {"event": "clear", "streamSid": STREAM}
        assert call.bridge.machine is not None
        assert call.bridge.machine.stats.get("dropped_audio_deltas") == 2
        cancels = call.openai.of_type("response.cancel")
        if how == "speech":
            assert cancels == []  # interrupt_response: the server cancels by itself
        else:
            assert [c["response_id"] for c in cancels] == ["resp_1"]
        call.twilio.feed(stop())
        await call.end()

    run(body)


@pytest.mark.parametrize(
    ("interrupt_response", "estimate", "elapsed_ms", "heard_ms"),
    [
        (True, True, 0, 40),  # no time since the echo: exactly the echo
        (False, True, 0, 40),
        (True, True, 7, 47),  # playback went on for 7 ms since the echo
        (True, True, 500, 59),  # ... but never up to the next mark, not yet echoed
        (True, False, 7, 40),  # estimate_playback=False: the echo alone
    ],
)
def test_echoed_marks_feed_played_ms_and_barge_in_truncates_at_what_was_heard(
    interrupt_response: bool, estimate: bool, elapsed_ms: int, heard_ms: int
) -> None:
    async def body() -> None:
        clock = FakeClock()
        session = SessionConfig(interrupt_response=interrupt_response)
        config = BridgeConfig(
            session=session, greeting="hi", estimate_playback=estimate, mark_every_ms=0
        )
        call = Call(config, clock=clock)
        await call.begin()
        await call.respond("resp_1")
        for payload in (CHUNK_A, CHUNK_B, CHUNK_C):  # 3 x 160 bytes = 60 ms
            call.openai.feed(audio("resp_1", "item_1", payload))
        await until(lambda: len(call.twilio.of_type("mark")) == 3, "three marks")
        names = [m["mark"]["name"] for m in call.twilio.of_type("mark")]
        call.twilio.feed(mark(names[0]), mark(names[1]))  # the caller heard 40 ms
        await settle()
        clock.now += elapsed_ms / 1000
        call.openai.feed(speech_started())
        await until(lambda: call.openai.of_type("conversation.item.truncate"), "truncate")
        [truncate] = call.openai.of_type("conversation.item.truncate")
        GA_CLIENT.validate_python(truncate)
        assert truncate == {
            "type": "conversation.item.truncate",
            "event_id": truncate["event_id"],
            "item_id": "item_1",
            "content_index": 0,
            "audio_end_ms": heard_ms,
        }
        cancels = call.openai.of_type("response.cancel")
        assert len(cancels) == (0 if interrupt_response else 1)
        assert call.twilio.of_type("clear")
        # The last mark comes back after the clear: flushed, not played; nothing more is cut.
        call.twilio.feed(mark(names[2]))
        call.openai.feed(done("resp_1", "cancelled"))
        await settle()
        assert len(call.openai.of_type("conversation.item.truncate")) == 1
        assert call.bridge.tracker.stats.get("marks_cleared") == 1
        call.twilio.feed(stop())
        await call.end()

    run(body)


def test_barge_in_before_any_mark_echo_deletes_the_unheard_item() -> None:
    async def body() -> None:
        call = Call(BridgeConfig(greeting="hi", mark_every_ms=0))
        await call.begin()
        await call.respond("resp_1")
        call.openai.feed(audio("resp_1", "item_1", CHUNK_A))
        await until(lambda: call.twilio.of_type("mark"))
        call.openai.feed(speech_started())
        await until(lambda: call.openai.of_type("conversation.item.delete"))
        assert not call.openai.of_type("conversation.item.truncate")  # a 0 ms truncate is refused
        [delete] = call.openai.of_type("conversation.item.delete")
        assert delete["item_id"] == "item_1"
        call.twilio.feed(stop())
        await call.end()

    run(body)


def test_barge_in_clear_is_written_at_once_when_nothing_waits_ahead_of_it() -> None:
    """With a socket that can write without awaiting, the ``clear`` goes out while the
    ``speech_started`` is handled, not on the writer task's turn (the barge-in reaction)."""

    async def body() -> None:
        call = Call(BridgeConfig(greeting="hi", mark_every_ms=0), twilio_nowait=True)
        twilio = call.twilio
        assert isinstance(twilio, NowaitSocket)
        await call.begin()
        await call.respond("resp_1")
        call.openai.feed(audio("resp_1", "item_1", CHUNK_A))
        await until(lambda: twilio.of_type("mark"))
        await settle()
        assert twilio.nowait_calls == []  # media and marks take their usual ways
        call.openai.feed(speech_started())
        await until(lambda: twilio.of_type("clear"))
        assert [json.loads(m)["event"] for m in twilio.nowait_sent] == ["clear"]
        assert twilio.of_type("clear") == [{"event": "clear", "streamSid": STREAM}]
        await settle()
        assert len(twilio.of_type("clear")) == 1  # not sent again by the writer
        call.twilio.feed(stop())
        await call.end()

    run(body)


def test_barge_in_clear_keeps_its_place_behind_frames_not_yet_written() -> None:
    """The Twilio peer stops reading: media frames wait in the writer's queue (and one in the
    writer's blocked ``send``).  The ``clear`` then queues behind them instead of overtaking,
    and they all arrive in order once the peer reads again."""

    async def body() -> None:
        call = Call(BridgeConfig(greeting="hi", mark_every_ms=0), twilio_nowait=True)
        twilio = call.twilio
        assert isinstance(twilio, NowaitSocket)
        await call.begin()
        twilio._reading.clear()
        await call.respond("resp_1")
        call.openai.feed(*(audio("resp_1", "item_1", c) for c in (CHUNK_A, CHUNK_B, CHUNK_C)))
        await until(lambda: call.report.media_out == 3, "three deltas handled")
        call.openai.feed(speech_started())
        await until(lambda: call.openai.of_type("conversation.item.delete"), "the barge-in")
        await settle()
        assert not twilio.of_type("clear") and twilio.nowait_calls == []
        twilio._reading.set()
        await until(lambda: twilio.of_type("clear"), "clear")
        events = [m["event"] for m in twilio.messages()]
        assert events == ["media", "mark"] * 3 + ["clear"]
        assert twilio.nowait_sent == []
        call.twilio.feed(stop())
        await call.end()

    run(body)


def test_text_barge_in_order_on_the_wire() -> None:
    async def body() -> None:
        call = Call(BridgeConfig(greeting="hi", accept_text_messages=True))
        await call.begin()
        await call.respond("resp_1")
        call.openai.feed(audio("resp_1", "item_1", CHUNK_A))
        await until(lambda: call.twilio.of_type("media"))
        call.twilio.feed(typed("wait, what about Tuesday?"))
        await until(lambda: call.twilio.of_type("clear") and call.openai.of_type("response.cancel"))
        await settle()
        # Held until the interrupted response is really over: no item, no create yet.
        assert not call.openai.of_type("conversation.item.create")
        assert len(call.openai.of_type("response.create")) == 1
        call.openai.feed(done("resp_1", "cancelled"))
        await until(lambda: len(call.openai.of_type("response.create")) == 2, "the new create")
        await settle()
        cancel = call.wire_index("openai", is_type("response.cancel"))
        clear = call.wire_index("twilio", is_event("clear"))
        item = call.wire_index("openai", is_type("conversation.item.create"))
        creates = call.wire_index("openai", is_type("response.create"))
        assert len(cancel) == len(clear) == len(item) == 1 and len(creates) == 2
        assert cancel[0] < clear[0] < item[0] < creates[1]
        [item_msg] = call.openai.of_type("conversation.item.create")
        GA_CLIENT.validate_python(item_msg)
        assert item_msg["item"]["content"] == [
            {"type": "input_text", "text": "wait, what about Tuesday?"}
        ]
        assert call.openai.of_type("response.cancel")[0]["response_id"] == "resp_1"
        assert call.report.user_texts_sent == 1
        call.twilio.feed(stop())
        report = await call.end()
        assert report.undelivered_texts == []

    run(body)


# ---------------------------------------------------------------------------- user text channels


@pytest.mark.parametrize("dtmf_as_text", [True, False])
def test_dtmf_becomes_user_text(dtmf_as_text: bool) -> None:
    async def body() -> None:
        call = Call(BridgeConfig(dtmf_as_text=dtmf_as_text))
        await call.begin()
        call.twilio.feed(dtmf("5"))
        await settle()
        kinds = [m["type"] for m in call.openai.messages()]
        if not dtmf_as_text:
            assert kinds == ["session.update"]
        else:
            assert kinds == ["session.update", "conversation.item.create", "response.create"]
            item = call.openai.of_type("conversation.item.create")[0]["item"]
            assert item["role"] == "user"
            assert item["content"] == [{"type": "input_text", "text": "DTMF 5"}]
            assert call.report.user_texts_sent == 1
        call.twilio.feed(stop())
        await call.end()

    run(body)


@pytest.mark.parametrize("accept", [False, True])
def test_text_event_is_only_accepted_when_opted_in(accept: bool) -> None:
    async def body() -> None:
        call = Call(BridgeConfig(accept_text_messages=accept))
        await call.begin()
        call.twilio.feed(typed("book a table"), typed("   "))
        await settle()
        items = call.openai.of_type("conversation.item.create")
        if accept:
            assert [i["item"]["content"][0]["text"] for i in items] == ["book a table"]
            assert call.report.bad_frames == {"twilio:unknown_event": 1}  # the blank one
        else:
            assert items == [] and not call.openai.of_type("response.create")
            assert call.report.bad_frames == {"twilio:unknown_event": 2}
        assert call.running
        call.twilio.feed(stop())
        await call.end()

    run(body)

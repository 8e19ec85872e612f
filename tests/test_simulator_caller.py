"""The fake Twilio caller (the Media Streams protocol as Twilio speaks it, marks, clears, DTMF,
typed text, hang-ups) and the two fakes together through a bridge.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from test_simulator import JSON, _vad_session, assert_valid_shapes, b64, run
from waiting import poller
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from realtime_fsm.testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    HangUp,
    ScriptedReply,
    Speak,
    TagScanner,
    TypeText,
    find_audio_tags,
    make_audio_tag,
    mulaw_decode,
    rms_level,
    tone,
    twilio_signature,
)

# --- fake Twilio caller -----------------------------------------------------------------------


@asynccontextmanager
async def bridge_stub(
    behaviour: Callable[[ServerConnection, list[JSON]], Awaitable[None]],
) -> AsyncIterator[tuple[str, list[JSON]]]:
    """A tiny websocket server in the bridge's place: records what the caller sends and runs
    ``behaviour`` (which plays the bridge's outbound side)."""
    received: list[JSON] = []

    async def handler(ws: ServerConnection) -> None:
        async def reader() -> None:
            try:
                async for message in ws:
                    event = json.loads(message)
                    event["_at"] = time.monotonic()
                    received.append(event)
            except ConnectionClosed:
                pass

        task = asyncio.get_running_loop().create_task(reader())
        try:
            await behaviour(ws, received)
            await task
        finally:
            task.cancel()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/media-stream", received


async def _wait_for(received: list[JSON], event: str, timeout: float = 3.0) -> JSON:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in received:
            if message["event"] == event:
                return message
        await asyncio.sleep(0.005)
    raise AssertionError(f"no {event}")


_media_until = poller(10.0, 0.002)


def _media(sid: str, data: bytes) -> str:
    return json.dumps({"event": "media", "streamSid": sid, "media": {"payload": b64(data)}})


def _mark(sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": name}})


def test_caller_connects_like_twilio_and_streams_media_every_20_ms() -> None:
    async def idle(_ws: ServerConnection, _r: list[JSON]) -> None:
        return

    async def scenario() -> None:
        async with bridge_stub(idle) as (url, received):
            config = FakeCallerConfig(custom_parameters={"FirstName": "Jane"}, auth_token="tok")
            async with FakeTwilioCaller(url, config) as caller:
                # About 0.25 s of media (a condition, not a sleep: a loaded machine runs late).
                await _media_until(lambda: sum(m["event"] == "media" for m in received) >= 12)
            await _wait_for(received, "stop")
        connected, start = received[0], received[1]
        assert connected == {
            "event": "connected",
            "protocol": "Call",
            "version": "1.0.0",
            "_at": connected["_at"],
        }
        assert start["sequenceNumber"] == "1"
        sid = start["streamSid"]
        assert sid == start["start"]["streamSid"] == caller.stream_sid
        assert sid.startswith("MZ") and len(sid) == 34
        assert start["start"]["callSid"].startswith("CA")
        assert start["start"]["customParameters"] == {"FirstName": "Jane"}
        assert start["start"]["mediaFormat"] == {
            "encoding": "audio/x-mulaw",
            "sampleRate": 8000,
            "channels": 1,
        }
        media = [m for m in received if m["event"] == "media"]
        assert 10 <= len(media) <= 16  # ~0.25 s at one frame per 20 ms
        assert [m["media"]["chunk"] for m in media[:3]] == ["1", "2", "3"]
        assert [m["media"]["timestamp"] for m in media[:3]] == ["0", "20", "40"]
        assert [m["sequenceNumber"] for m in media[:2]] == ["2", "3"]
        assert all(base64.b64decode(m["media"]["payload"]) == b"\xff" * 160 for m in media)
        gaps = [b["_at"] - a["_at"] for a, b in itertools.pairwise(media)]
        assert 0.015 < sum(gaps) / len(gaps) < 0.03
        stop = received[-1]
        assert stop["event"] == "stop" and stop["streamSid"] == sid
        assert stop["stop"] == {"accountSid": caller.account_sid, "callSid": caller.call_sid}
        assert caller.closed and caller.violations == []

    run(scenario())


def test_caller_speaks_non_silent_frames_for_the_duration() -> None:
    async def idle(_ws: ServerConnection, _r: list[JSON]) -> None:
        return

    async def scenario() -> None:
        async with bridge_stub(idle) as (url, received):
            config = FakeCallerConfig(speed=4, script=(Speak(0.2, 0.2), HangUp(0.6)))
            caller = FakeTwilioCaller(url, config)
            await caller.start()
            await caller.wait_closed(timeout=3)
            await caller.hang_up()
        payloads = [
            base64.b64decode(m["media"]["payload"]) for m in received if m["event"] == "media"
        ]
        loud = [rms_level(mulaw_decode(p)) > 0.1 for p in payloads]
        assert sum(loud) == 10  # 200 ms of speech = 10 frames
        first = loud.index(True)
        assert loud[first : first + 10] == [True] * 10 and first >= 5
        assert caller.speech_frames_sent == 10
        assert len(caller.speech_started_at) == 1

    run(scenario())


def test_caller_echoes_marks_only_after_playing_the_audio_before_them() -> None:
    async def bridge(ws: ServerConnection, received: list[JSON]) -> None:
        sid = (await _wait_for(received, "start"))["streamSid"]
        await ws.send(_mark(sid, "nothing-buffered"))
        await ws.send(_media(sid, make_audio_tag(1, 0) + tone(300)[12:]))  # 300 ms
        await ws.send(_mark(sid, "after-300ms"))
        await _wait_for(received, "stop", timeout=5)

    async def scenario() -> None:
        async with (
            bridge_stub(bridge) as (url, received),
            FakeTwilioCaller(url, FakeCallerConfig(speed=2)) as caller,
        ):
            await caller.wait_until(lambda: len(caller.marks_echoed) == 2, timeout=3)
            echoes = {e.name: e for e in caller.marks_echoed}
            first_audio = caller.media_received[0].at
            assert echoes["nothing-buffered"].at < first_audio + 0.05
            elapsed = echoes["after-300ms"].at - first_audio
            # 300 ms of audio at speed 2 = 150 ms: the lower bound proves the mark waited for its
            # audio; the upper bound is generous for a loaded machine (it only says "not stuck").
            assert 0.13 < elapsed < 1.0
            assert caller.played_ms == 300 and not caller.is_playing
            assert [t.tag.ordinal for t in caller.tags_played] == [1]
        marks = [m for m in received if m["event"] == "mark"]
        assert [m["mark"]["name"] for m in marks] == ["nothing-buffered", "after-300ms"]
        assert all(int(m["sequenceNumber"]) > 1 for m in marks)

    run(scenario())


def test_caller_clear_flushes_audio_and_echoes_pending_marks_at_once() -> None:
    async def bridge(ws: ServerConnection, received: list[JSON]) -> None:
        sid = (await _wait_for(received, "start"))["streamSid"]
        for i in range(5):  # 5 x 200 ms, a mark after each
            await ws.send(_media(sid, make_audio_tag(7, i) + tone(200)[12:]))
            await ws.send(_mark(sid, f"m{i}"))
        await asyncio.sleep(0.15)
        await ws.send(json.dumps({"event": "clear", "streamSid": sid}))
        await asyncio.sleep(0.05)
        await ws.send(_media(sid, make_audio_tag(8, 0) + tone(100)[12:]))
        await ws.send(_mark(sid, "next"))
        await _wait_for(received, "stop", timeout=5)

    async def scenario() -> None:
        async with bridge_stub(bridge) as (url, _received), FakeTwilioCaller(url) as caller:
            await caller.wait_until(lambda: len(caller.marks_echoed) == 6, timeout=3)
            clear = caller.clears[0]
            assert clear.marks_released == ("m0", "m1", "m2", "m3", "m4")
            assert 0.8 * 8000 < clear.flushed_bytes <= 8000  # up to 150 ms had played
            released = [e for e in caller.marks_echoed if e.cleared]
            assert [e.name for e in released] == ["m0", "m1", "m2", "m3", "m4"]
            assert all(e.at - clear.at < 0.02 for e in released)  # immediately
            assert caller.marks_echoed[-1].name == "next" and not caller.marks_echoed[-1].cleared
            assert caller.tags_played_after(clear.at, 7) == []
            assert [t.tag.ordinal for t in caller.tags_played_after(clear.at)] == [8]
            assert caller.played_ms < 250  # at most the 20 ms pieces before the clear + 100

    run(scenario())


def test_caller_reports_messages_twilio_would_reject() -> None:
    async def bridge(ws: ServerConnection, received: list[JSON]) -> None:
        sid = (await _wait_for(received, "start"))["streamSid"]
        await ws.send(b"\x00\x01")
        await ws.send(
            json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": ""}})
        )
        await ws.send(json.dumps({"event": "mark", "streamSid": sid}))
        await ws.send(json.dumps({"event": "speak", "streamSid": sid}))
        await ws.send(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": "@@"}}))
        await _wait_for(received, "stop", timeout=5)

    async def scenario() -> None:
        async with bridge_stub(bridge) as (url, _received), FakeTwilioCaller(url) as caller:
            await caller.wait_until(lambda: len(caller.violations) == 5, timeout=3)
            assert "31950" in caller.violations[0]
            assert "mismatch" in caller.violations[1]
            assert "mark.name" in caller.violations[2]
            assert "'speak'" in caller.violations[3]
            assert "base64" in caller.violations[4]

    run(scenario())


def test_typed_text_needs_an_explicit_channel() -> None:
    async def idle(_ws: ServerConnection, received: list[JSON]) -> None:
        await _wait_for(received, "stop", timeout=5)

    async def scenario() -> None:
        async with bridge_stub(idle) as (url, received), FakeTwilioCaller(url) as caller:
            with pytest.raises(RuntimeError, match="not a Twilio"):
                await caller.type_text("hello")
        hooked: list[str] = []

        async def hook(text: str) -> None:
            hooked.append(text)

        async with bridge_stub(idle) as (url, received):
            config = FakeCallerConfig(text_event="text")
            async with FakeTwilioCaller(url, config, on_text=hook) as caller:
                await caller.type_text("שלום")
                text = await _wait_for(received, "text")
        assert text["text"] == "שלום" and text["streamSid"] == caller.stream_sid
        assert hooked == ["שלום"]
        with pytest.raises(ValueError, match="not a Twilio feature"):
            FakeTwilioCaller(url, FakeCallerConfig(script=(TypeText(0.1, "x"),)))

    run(scenario())


def test_twilio_signature_matches_twilios_algorithm() -> None:
    # The vector from the twilio SDKs' RequestValidator tests (token 12345).
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675309",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_tag_scanner_finds_tags_split_across_pieces() -> None:
    stream = b"".join(make_audio_tag(3, i) + tone(20)[12:] for i in range(4))
    scanner = TagScanner()
    found = []
    for i in range(0, len(stream), 7):
        found += scanner.feed(stream[i : i + 7])
    assert [(t.ordinal, t.chunk) for t in found] == [(3, 0), (3, 1), (3, 2), (3, 3)]
    assert find_audio_tags(tone(1000)) == []


# --- both together ------------------------------------------------------------------------------


def test_caller_and_fake_server_through_a_minimal_pass_through_bridge() -> None:
    """A 40-line bridge: the simulator's two halves interoperate, and the tag/clear records are
    enough to prove "no audio of the cancelled response after its clear"."""

    async def scenario() -> None:
        config = FakeRealtimeConfig(realtime_factor=8, first_delta_delay_s=0.01, seed=3)
        replies: list[str | ScriptedReply] = [ScriptedReply("long greeting", audio_ms=3000), "ok"]
        async with FakeRealtimeServer(config, replies=replies) as ai:

            async def bridge(twilio: ServerConnection, received: list[JSON]) -> None:
                start = await _wait_for(received, "start")
                sid = start["streamSid"]
                async with connect(ai.url) as oa:
                    await oa.recv()
                    session = _vad_session(create=True, interrupt=True)
                    await oa.send(json.dumps({"type": "session.update", "session": session}))
                    await oa.send(json.dumps({"type": "response.create"}))
                    interrupted: set[str] = set()

                    async def uplink() -> None:
                        sent = 0
                        while True:
                            media = [m for m in received if m["event"] == "media"]
                            for m in media[sent:]:
                                audio = m["media"]["payload"]
                                await oa.send(
                                    json.dumps(
                                        {"type": "input_audio_buffer.append", "audio": audio}
                                    )
                                )
                            sent = len(media)
                            await asyncio.sleep(0.01)

                    up = asyncio.get_running_loop().create_task(uplink())
                    try:
                        async for raw in oa:
                            event = json.loads(raw)
                            if event["type"] == "input_audio_buffer.speech_started":
                                interrupted.update(r.id for r in ai.responses)
                                await twilio.send(json.dumps({"event": "clear", "streamSid": sid}))
                            elif (
                                event["type"] == "response.output_audio.delta"
                                and event["response_id"] not in interrupted
                            ):
                                await twilio.send(
                                    json.dumps(
                                        {
                                            "event": "media",
                                            "streamSid": sid,
                                            "media": {"payload": event["delta"]},
                                        }
                                    )
                                )
                    except ConnectionClosed:
                        pass
                    finally:
                        up.cancel()

            async with bridge_stub(bridge) as (url, _received), FakeTwilioCaller(url) as caller:
                await caller.wait_for_audio(300, timeout=3)
                await caller.speak(0.3)
                await ai.wait_until(lambda: len(ai.responses) == 2, timeout=3)
                await caller.wait_for_audio(100, timeout=3)
                first, second = ai.responses
                assert first.status == "cancelled" and first.reason == "turn_detected"
                clear_at = caller.clears[0].at
                assert caller.tags_received_after(clear_at, first.tag) == []
                assert caller.tags_received_after(clear_at, second.tag)
                assert any(t.tag.ordinal == first.tag for t in caller.tags_received)
            assert ai.error_counts == {}
            assert_valid_shapes(ai)

    run(scenario(), timeout=20)

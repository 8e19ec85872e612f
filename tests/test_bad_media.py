"""Caller audio that is not what Twilio sends is never forwarded to OpenAI (the server would
answer each frame with an error: an amplifier): invalid base64, an oversized payload, another
track.  Each is a counted bad frame; past ``max_bad_frames`` the call ends with 1008.  Over real
sockets: the built-in server between a raw WebSocket client playing Twilio and the simulator."""

from __future__ import annotations

import base64
import json

import attrs
import pytest
from test_e2e import bridge_config, bridge_server, run, short_replies, simulator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime_fsm.testing import FakeRealtimeServer

STREAM = "MZ" + "a" * 32
GOOD = base64.b64encode(bytes(range(96, 256))).decode()


def frame(event: str, **fields: object) -> str:
    return json.dumps({"event": event, "streamSid": STREAM, **fields})


def start() -> str:
    return frame(
        "start",
        start={
            "streamSid": STREAM,
            "callSid": "CA" + "b" * 32,
            "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    )


def media(payload: str, track: str = "inbound") -> str:
    return frame(
        "media", media={"track": track, "chunk": "1", "timestamp": "0", "payload": payload}
    )


BAD = {
    "not base64": media("@@@@not*base64!!"),
    "bad length": media(GOOD[:-1]),
    "oversized": media("A" * 12_000),
    "other track": media(GOOD, track="outbound"),
}


def appended(sim: FakeRealtimeServer) -> list[str]:
    return [e["audio"] for e in sim.client_events("input_audio_buffer.append")]


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_caller_audio_is_counted_and_never_forwarded(kind: str) -> None:
    async def scenario() -> None:
        sim = simulator(short_replies)
        async with sim, bridge_server(sim, bridge_config(greeting=None)) as bridge:
            async with connect(bridge.url) as twilio:
                await twilio.send(frame("connected", protocol="Call"))
                await twilio.send(start())
                await sim.wait_until(lambda: bool(sim.client_events("session.update")), 5)
                for _ in range(3):
                    await twilio.send(BAD[kind])
                await twilio.send(media(GOOD))  # a good frame after them still goes through
                await sim.wait_until(lambda: appended(sim) == [GOOD], 5, "the good frame")
                await twilio.send(frame("stop"))
            report = await bridge.report(sim)
        assert sum(report.bad_frames.values()) == 3
        assert report.media_in == 1
        assert sim.error_counts == {}  # nothing bad reached the server

    run(scenario())


def test_a_flood_of_bad_audio_ends_the_call_with_1008() -> None:
    async def scenario() -> None:
        sim = simulator(short_replies)
        config = attrs.evolve(bridge_config(greeting=None), max_bad_frames=20)
        async with sim, bridge_server(sim, config) as bridge:
            async with connect(bridge.url) as twilio:
                await twilio.send(start())
                await sim.wait_until(lambda: bool(sim.client_events("session.update")), 5)
                with pytest.raises(ConnectionClosed) as closed:
                    for _ in range(200):
                        await twilio.send(BAD["not base64"])
                    await twilio.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            report = await bridge.report(sim)
            await sim.wait_until(lambda: not sim.open_connections(), 5, "upstream closed")
        assert report.end_reason == "bad input: too many malformed frames from twilio"
        assert appended(sim) == [] and sim.error_counts == {}

    run(scenario())

"""Coalesced Twilio marks (``PlaybackTracker(mark_every_ms=...)``, ``BridgeConfig.mark_every_ms``).

With 20 ms audio deltas a mark after every ``media`` makes marks (sent, echoed, parsed) a third of
a call's messages; the load benchmark showed them as the largest cost the bridge adds to a bare
relay.  Coalescing must not lose the end of an item: the rest of its audio is marked as soon as
anything else comes from OpenAI, so every item is still heard to its end."""

from __future__ import annotations

import asyncio

from realtime_fsm.bridge import BridgeConfig, CallReport
from realtime_fsm.openai_realtime import SessionConfig
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ScriptedReply,
)
from realtime_fsm.twilio_media import MarkName, PlaybackTracker

CHUNK = 160  # 20 ms of mu-law


def test_default_marks_every_chunk_and_has_nothing_to_flush() -> None:
    tracker = PlaybackTracker()
    assert all(tracker.audio_sent("item_a", CHUNK) for _ in range(5))
    assert tracker.flush_mark() is None


def test_one_mark_per_interval_and_the_tail_on_flush() -> None:
    tracker = PlaybackTracker(mark_every_ms=100)
    names = [tracker.audio_sent("item_a", CHUNK) for _ in range(12)]  # 240 ms
    marks = [MarkName.parse(n) for n in names if n is not None]
    assert [m.end_ms for m in marks if m is not None] == [100, 200]
    assert names[4] is not None and names[9] is not None  # right after the 100 ms chunks
    tail = tracker.flush_mark()
    assert tail is not None and MarkName.parse(tail) == MarkName(0, 3, 240, "item_a")
    assert tracker.flush_mark() is None
    progress = tracker.mark_received(tail)  # echoes in order prove the earlier marks too
    assert [(p.item_id, p.played_ms) for p in progress] == [("item_a", 240)]
    assert tracker.played_ms("item_a") == tracker.sent_ms("item_a") == 240


def test_a_new_item_starts_its_own_interval_and_clear_drops_the_tail() -> None:
    tracker = PlaybackTracker(mark_every_ms=100)
    for _ in range(3):
        assert tracker.audio_sent("item_a", CHUNK) is None
    first = tracker.flush_mark()
    assert first is not None and MarkName.parse(first) == MarkName(0, 1, 60, "item_a")
    assert [tracker.audio_sent("item_b", CHUNK) is None for _ in range(5)] == [True] * 4 + [False]
    tracker.audio_sent("item_b", CHUNK)
    tracker.clear()  # a barge-in: the unmarked rest was never heard
    assert tracker.flush_mark() is None
    assert tracker.stats.get("marks_skipped_item_tail") is None


def test_bridge_with_coalesced_marks_hears_every_item_to_its_end() -> None:
    async def scenario() -> None:
        sim_config = FakeRealtimeConfig(realtime_factor=5.0, first_delta_delay_s=0.02, seed=3)
        reply = ScriptedReply("Hello there, this is a short greeting.", audio_ms=1040)
        reports: list[CallReport] = []
        async with FakeRealtimeServer(sim_config, replies=[reply]) as sim:
            bridge = BridgeConfig(
                session=SessionConfig(turn_detection=None),
                greeting="Greet the caller.",
                mark_every_ms=100,
            )
            server = await start_server(
                ServerConfig(public_url="http://127.0.0.1", realtime_url=sim.url, bridge=bridge),
                "127.0.0.1",
                0,
                reports=reports,
            )
            port = server.sockets[0].getsockname()[1]
            try:
                caller_config = FakeCallerConfig(speed=4.0, seed=1)
                url = f"ws://127.0.0.1:{port}/media-stream"
                async with FakeTwilioCaller(url, caller_config) as caller:
                    await sim.wait_until(
                        lambda: bool(sim.responses) and sim.responses[0].finished, 10.0
                    )
                    record = sim.responses[0]
                    await caller.wait_until(
                        lambda: (
                            caller.played_ms >= record.audio_ms
                            and not caller.pending_marks
                            and bool(caller.marks_echoed)
                        ),
                        10.0,
                        "the greeting to play out",
                    )
                    ends = [MarkName.parse(name) for _at, name in caller.marks_received]
            finally:
                server.close()
                await server.wait_closed()
        # One mark per 100 ms whatever the transcript deltas in between, and the last 40 ms
        # marked when the audio ended (response.output_audio.done), before response.done.
        assert record.status == "completed" and record.audio_deltas == 52
        assert [m.end_ms for m in ends if m is not None] == [*range(100, 1001, 100), 1040]
        assert not any(echo.cleared for echo in caller.marks_echoed)
        assert caller.violations == []

    asyncio.run(asyncio.wait_for(scenario(), 30))

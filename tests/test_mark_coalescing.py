"""Coalesced Twilio marks (``PlaybackTracker(mark_every_ms=...)``, ``BridgeConfig.mark_every_ms``).

With 20 ms audio deltas a mark after every ``media`` makes marks (sent, echoed, parsed) a third of
a call's messages; the load benchmark showed them as the largest cost the bridge adds to a bare
relay.  Coalescing must not lose the end of an item: the rest of its audio is marked as soon as
anything else comes from OpenAI, so every item is still heard to its end."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_call_session import Call, oa_audio, oa_session, oa_speech_started, tw_mark

from realtime_fsm.bridge import DEFAULT_MARK_EVERY_MS, BridgeConfig
from realtime_fsm.errors import LocalProtocolError
from realtime_fsm.openai_realtime import SessionConfig
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ScriptedReply,
)
from realtime_fsm.twilio_media import LedgerPlaybackTracker, MarkName, PlaybackTracker

CHUNK = 160  # 20 ms of mu-law


def marked_to(caller: FakeTwilioCaller) -> int:
    """The furthest end (ms) any mark the caller received names: the audio the bridge has
    marked so far."""
    ends = [MarkName.parse(name) for _at, name in caller.marks_received]
    return max((m.end_ms for m in ends if m is not None), default=0)


@contextlib.asynccontextmanager
async def greeted_call(
    reply: ScriptedReply, caller_config: FakeCallerConfig, **bridge: Any
) -> AsyncIterator[tuple[FakeRealtimeServer, FakeTwilioCaller]]:
    """A caller on the example server, bridged to a simulator whose one reply is a greeting
    (no turn detection), with ``BridgeConfig(**bridge)`` options."""
    sim_config = FakeRealtimeConfig(realtime_factor=5.0, first_delta_delay_s=0.02, seed=3)
    async with FakeRealtimeServer(sim_config, replies=[reply]) as sim:
        config = BridgeConfig(
            session=SessionConfig(turn_detection=None),
            greeting="Greet the caller.",
            **bridge,
        )
        server = await start_server(
            ServerConfig(public_url="http://127.0.0.1", realtime_url=sim.url, bridge=config),
            "127.0.0.1",
            0,
        )
        port = server.sockets[0].getsockname()[1]
        try:
            url = f"ws://127.0.0.1:{port}/media-stream"
            async with FakeTwilioCaller(url, caller_config) as caller:
                yield sim, caller
        finally:
            server.close()
            await server.wait_closed()


def test_default_marks_every_chunk_and_has_nothing_to_flush() -> None:
    tracker = PlaybackTracker()
    assert all(tracker.audio_sent("item_a", CHUNK) for _ in range(5))
    assert tracker.flush_mark() is None


def test_one_mark_per_interval_and_the_tail_on_flush() -> None:
    tracker = PlaybackTracker(mark_every_ms=100)
    names = [tracker.audio_sent("item_a", CHUNK) for _ in range(12)]  # 240 ms
    marks = [MarkName.parse(n) for n in names if n is not None]
    # The item's first chunk is marked at once (its echo says when the item began to play),
    # then one mark per 100 ms from there.
    assert [m.end_ms for m in marks if m is not None] == [20, 120, 220]
    assert all(names[i] is not None for i in (0, 5, 10))
    tail = tracker.flush_mark()
    assert tail is not None and MarkName.parse(tail) == MarkName(0, 4, 240, "item_a")
    assert tracker.flush_mark() is None
    progress = tracker.mark_received(tail)  # echoes in order prove the earlier marks too
    assert [(p.item_id, p.played_ms) for p in progress] == [("item_a", 240)]
    assert tracker.played_ms("item_a") == tracker.sent_ms("item_a") == 240


def test_a_new_item_starts_its_own_interval_and_clear_drops_the_tail() -> None:
    tracker = PlaybackTracker(mark_every_ms=100)
    start = tracker.audio_sent("item_a", CHUNK)
    assert start is not None and MarkName.parse(start) == MarkName(0, 1, 20, "item_a")
    for _ in range(2):
        assert tracker.audio_sent("item_a", CHUNK) is None
    first = tracker.flush_mark()
    assert first is not None and MarkName.parse(first) == MarkName(0, 2, 60, "item_a")
    unmarked = [tracker.audio_sent("item_b", CHUNK) is None for _ in range(6)]
    assert unmarked == [False] + [True] * 4 + [False]  # its start, then 100 ms on
    tracker.audio_sent("item_b", CHUNK)
    tracker.clear()  # a barge-in: the unmarked rest was never heard
    assert tracker.flush_mark() is None
    assert tracker.stats.get("marks_skipped_item_tail") is None


def test_bridge_with_coalesced_marks_hears_every_item_to_its_end() -> None:
    async def scenario() -> None:
        reply = ScriptedReply("Hello there, this is a short greeting.", audio_ms=1040)
        caller_config = FakeCallerConfig(speed=4.0, seed=1)
        async with greeted_call(reply, caller_config, mark_every_ms=100) as (sim, caller):
            await sim.wait_until(lambda: bool(sim.responses) and sim.responses[0].finished, 10.0)
            record = sim.responses[0]
            # The simulator's response.done says nothing about the caller: the bridge sends
            # the end mark when it reads response.output_audio.done, and on a loaded loop that
            # mark is still on its way when the audio before it has long played out.  Wait for
            # it (if it never came, this times out): then for every mark to be echoed.
            await caller.wait_until(
                lambda: marked_to(caller) >= record.audio_ms and not caller.pending_marks,
                10.0,
                "the greeting's end mark, echoed",
            )
            assert caller.played_ms >= record.audio_ms
            ends = [MarkName.parse(name) for _at, name in caller.marks_received]
        # The first chunk marked, then one mark per 100 ms whatever the transcript deltas in
        # between, and the last 20 ms marked when the audio ended (response.output_audio.done),
        # before response.done.
        assert record.status == "completed" and record.audio_deltas == 52
        assert [m.end_ms for m in ends if m is not None] == [20, *range(120, 1021, 100), 1040]
        assert not any(echo.cleared for echo in caller.marks_echoed)
        assert caller.violations == []

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_the_default_is_a_mark_per_500_ms_and_the_greeting_ends_with_its_tail() -> None:
    """``BridgeConfig()`` coalesces marks: a production bridge does not mark every 20 ms."""
    assert BridgeConfig().mark_every_ms == DEFAULT_MARK_EVERY_MS == 500

    async def scenario() -> None:
        reply = ScriptedReply("Hello there, this is a short greeting.", audio_ms=1040)
        caller_config = FakeCallerConfig(speed=4.0, seed=1)
        async with greeted_call(reply, caller_config) as (sim, caller):
            await sim.wait_until(lambda: bool(sim.responses) and sim.responses[0].finished, 10.0)
            await caller.wait_until(
                lambda: marked_to(caller) >= 1040 and not caller.pending_marks,
                10.0,
                "the greeting's end mark, echoed",
            )
            ends = [MarkName.parse(name) for _at, name in caller.marks_received]
        assert [m.end_ms for m in ends if m is not None] == [20, 520, 1020, 1040]
        assert caller.violations == []

    asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.mark.parametrize("bad", [-1, 1.5, True, "500", None])
def test_a_bad_mark_interval_is_refused_when_the_config_is_built(bad: object) -> None:
    with pytest.raises(ValueError, match="mark_every_ms must be a non-negative int"):
        BridgeConfig(mark_every_ms=bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------- playback estimate between echoes


def test_estimate_runs_on_from_the_last_echo_up_to_the_next_mark() -> None:
    tracker = PlaybackTracker(mark_every_ms=100)
    assert tracker.estimate(5.0) is None  # no echo yet: nothing is known to be playing
    names = [tracker.audio_sent("item_a", CHUNK) for _ in range(15)]  # 300 ms, marks 20..220
    _start, first, second = (n for n in names if n is not None)
    third = tracker.flush_mark()  # the last 80 ms, marked at 300
    assert third is not None
    tracker.mark_received(first)  # no time given: proves 120 ms, anchors nothing
    assert tracker.estimate(5.0) is None
    tracker.mark_received(second, now=10.0)
    assert tracker.played_ms("item_a") == 220
    assert tracker.estimate(10.0) is None  # exactly the echo: nothing beyond it
    est = tracker.estimate(10.037)
    assert est is not None and (est.item_id, est.played_ms) == ("item_a", 257)
    est = tracker.estimate(11.0)  # the 300 ms mark has not come back: not all of it was heard
    assert est is not None and est.played_ms == 299
    assert tracker.estimate(9.0) is None  # a clock that went back proves nothing
    tracker.mark_received(third, now=11.0)
    assert tracker.estimate(12.0) is None  # everything sent was heard; nothing to add
    tracker.clear()
    assert tracker.estimate(12.0) is None


def test_estimate_never_runs_into_audio_sent_after_the_echo() -> None:
    """An underrun: the echo found Twilio's buffer empty, so later audio may have started late
    and the time since the echo says nothing about it."""
    tracker = PlaybackTracker()
    name = tracker.audio_sent("item_a", CHUNK * 5)  # 100 ms
    assert name is not None
    tracker.mark_received(name, now=1.0)
    tracker.audio_sent("item_a", CHUNK * 50)  # a second later, another second of audio
    assert tracker.estimate(2.5) is None  # capped at the 100 ms sent when the echo came


def test_estimate_counts_the_unmarked_tail_sent_before_the_echo() -> None:
    tracker = PlaybackTracker(mark_every_ms=100)
    names = [tracker.audio_sent("item_a", CHUNK) for _ in range(7)]  # 140 ms, marks at 20, 120
    [_start, name] = [n for n in names if n is not None]
    tracker.mark_received(name, now=0.0)  # 20 ms more already at Twilio, unmarked
    est = tracker.estimate(0.01)
    assert est is not None and est.played_ms == 130
    est = tracker.estimate(1.0)
    assert est is not None and est.played_ms == 140  # all of it: no mark is still due


# Audio sent after an echo counts once it provably reached Twilio before playback ran out.


class _Sender:
    """A tracker fed as the call feeds it: ``audio_sent`` with the time of each frame; for the
    ledger tracker, the machine's ledger counts the delta first."""

    def __init__(self, ledger: bool, mark_every_ms: int = 500) -> None:
        self.ledger: dict[str, list[int]] = {}
        self.tracker: PlaybackTracker = (
            LedgerPlaybackTracker(self.ledger, mark_every_ms=mark_every_ms)
            if ledger
            else PlaybackTracker(mark_every_ms=mark_every_ms)
        )
        self.marks: list[str] = []

    def send(self, item_id: str, byte_count: int, now: float) -> None:
        self.ledger.setdefault(item_id, [0, 0])[0] += byte_count
        name = self.tracker.audio_sent(item_id, byte_count, now)
        if name is not None:
            self.marks.append(name)


@pytest.mark.parametrize("ledger", [False, True])
def test_estimate_counts_audio_sent_after_an_early_echo_while_playback_lagged(ledger: bool) -> None:
    """``realtime-fsm demo``'s first call: the greeting's first mark (20 ms) is echoed when
    little of it was sent, and the rest comes faster than it plays.  The cap follows the
    sending, so the estimate is the time since the echo, not the audio sent by then."""
    sender = _Sender(ledger)
    tracker = sender.tracker
    sender.send("item_a", CHUNK, 0.0)  # plays at once: 20 ms heard at 0.02
    for i in range(1, 100):  # 2 s of audio, a 20 ms frame every 10 ms: twice real time
        if i == 4:
            tracker.mark_received(sender.marks[0], now=0.035)  # 80 ms sent by then
        sender.send("item_a", CHUNK, i * 0.01)
    for now in (0.1, 0.3, 0.5):
        est = tracker.estimate(now)
        # Exactly the echo's mark plus the time since its echo: 15 ms early (its trip back),
        # never beyond what played (``now`` * 1000 ms: the audio never ran out).
        assert est is not None and est.played_ms == 20 + round((now - 0.035) * 1000)
        assert est.played_ms <= now * 1000
    est = tracker.estimate(2.0)  # the 520 ms mark has not come back: not all of it was heard
    assert est is not None and est.played_ms == 519


@pytest.mark.parametrize("ledger", [False, True])
def test_estimate_holds_its_cap_when_audio_came_after_playback_could_have_run_out(
    ledger: bool,
) -> None:
    """An underrun: 100 ms sent at once, then nothing until 0.2 s, when playback may have
    played all 100 ms and waited.  The time since the echo says nothing about the rest."""
    sender = _Sender(ledger)
    for _ in range(5):
        sender.send("item_a", CHUNK, 0.0)
    sender.tracker.mark_received(sender.marks[0], now=0.03)
    for i in range(20):
        sender.send("item_a", CHUNK, 0.2 + i * 0.02)  # real time from 0.2: 300 ms heard at 0.4
    est = sender.tracker.estimate(0.4)
    assert est is not None and est.played_ms == 100  # not 20 + 370: the cap held


@pytest.mark.parametrize(("resumed", "cap"), [(0.095, 120), (0.105, 100)])
def test_the_cap_rises_only_if_the_audio_came_before_playback_could_reach_it(
    resumed: float, cap: int
) -> None:
    """100 ms at once, then one frame at ``resumed``: before 0.1 s it follows the first 100 ms
    without a gap (the cap rises to 120); after, playback may have waited for it."""
    sender = _Sender(ledger=False)
    for _ in range(5):
        sender.send("item_a", CHUNK, 0.0)
    sender.tracker.mark_received(sender.marks[0], now=0.03)
    sender.send("item_a", CHUNK, resumed)
    est = sender.tracker.estimate(1.0)
    assert est is not None and est.played_ms == cap


def test_a_bound_never_spans_another_item_s_audio() -> None:
    """Audio of another item between the echoed item's audio: the echoed item's later audio
    plays after it, so nothing sent after the other item lifts the cap."""
    sender = _Sender(ledger=False)
    for _ in range(5):
        sender.send("item_a", CHUNK, 0.0)
    sender.tracker.mark_received(sender.marks[0], now=0.03)
    sender.send("item_b", CHUNK * 50, 0.031)  # a second of another item, queued after item_a
    for i in range(10):
        sender.send("item_a", CHUNK, 0.032 + i * 0.001)
    est = sender.tracker.estimate(0.09)
    assert est is not None and est.played_ms == 80  # 20 + 60: below the held cap, as before
    est = sender.tracker.estimate(1.0)
    assert est is not None and est.played_ms == 100


def test_without_times_audio_sent_after_the_echo_is_not_counted() -> None:
    sender = _Sender(ledger=False)
    for _ in range(5):
        sender.send("item_a", CHUNK, 0.0)
    sender.tracker.mark_received(sender.marks[0], now=0.03)
    for _ in range(20):
        assert sender.tracker.audio_sent("item_a", CHUNK) is None  # no ``now``: no evidence
    est = sender.tracker.estimate(0.3)
    assert est is not None and est.played_ms == 100  # what was sent when the echo came


# The estimate against a simulated Twilio player: never beyond what it played.

_FRAME = st.tuples(
    st.sampled_from([False] * 9 + [True]),  # the first frame of the next item
    st.sampled_from([False] * 9 + [True]),  # another message from OpenAI first: a flush
    st.one_of(st.sampled_from([0.0, 0.005, 0.01, 0.02]), st.floats(0, 0.3)),  # wait before it
    st.sampled_from([8, 80, 160, 320, 800]),  # 1 to 100 ms of mu-law
)


@settings(max_examples=300, deadline=None)
@given(
    every=st.sampled_from([0, 20, 100, 500]),
    ledger=st.booleans(),
    frames=st.lists(_FRAME, min_size=1, max_size=150),
    echo_delays=st.lists(st.floats(0, 0.2), min_size=1, max_size=20),
    queries=st.lists(st.floats(0, 15), max_size=40),
)
def test_the_estimate_is_never_beyond_what_a_simulated_player_played(
    every: int,
    ledger: bool,
    frames: list[tuple[bool, bool, float, int]],
    echo_delays: list[float],
    queries: list[float],
) -> None:
    """Frames sent at random times (bursts, real time, stalls), items in turn, marks echoed
    after random delays: Twilio plays its queue continuously while it has audio (a frame
    reaches it when sent) and echoes a mark when the audio before it has played.  At random
    times, the estimate (and every confirmed ms) is at most what the player had played."""
    sender = _Sender(ledger, every)
    tracker = sender.tracker
    events: list[tuple[float, int, str, Any]] = []
    order = itertools.count()
    t = 0.0
    for new, flush, wait, size in frames:
        t += wait
        heapq.heappush(events, (t, next(order), "frame", (new, flush, size)))
    for at in queries:
        heapq.heappush(events, (at, next(order), "query", None))
    plays: dict[str, list[tuple[float, float]]] = {}  # item -> (start, seconds) per frame
    queue_end = 0.0  # when Twilio's queue runs out
    last_echo = 0.0  # echoes come back in order
    delays = itertools.cycle(echo_delays)
    item = "item_0"

    def marked(name: str | None, now: float) -> None:
        nonlocal last_echo
        if name is not None:  # the mark plays once the audio before it has
            last_echo = max(last_echo, max(queue_end, now) + next(delays))
            heapq.heappush(events, (last_echo, next(order), "echo", name))

    def heard_ms(item_id: str, now: float) -> float:
        return sum(min(max(now - s, 0.0), d) for s, d in plays.get(item_id, [])) * 1000

    while events:
        now, _, kind, data = heapq.heappop(events)
        if kind == "frame":
            new, flush, size = data
            if new or flush:
                marked(tracker.flush_mark(), now)
            if new:
                item = f"item_{len(plays)}"
            sender.ledger.setdefault(item, [0, 0])[0] += size
            name = tracker.audio_sent(item, size, now)
            start = max(now, queue_end)
            plays.setdefault(item, []).append((start, size / 8000))
            queue_end = start + size / 8000
            marked(name, now)
        elif kind == "echo":
            for progress in tracker.mark_received(data, now):
                assert progress.played_ms <= heard_ms(progress.item_id, now) + 1e-6
        else:
            est = tracker.estimate(now)
            if est is not None:
                assert est.played_ms <= heard_ms(est.item_id, now) + 1e-6, (est, now)


@pytest.mark.parametrize("estimate", [True, False])
def test_sparse_marks_still_truncate_a_barge_in_at_what_the_caller_heard(estimate: bool) -> None:
    """Marks every 500 ms, playback at real time, typed text ~400 ms after the last echo: the
    truncate point is what the caller had heard when the ``clear`` arrived (to within the
    delays on the way), not the last echoed mark."""

    async def scenario() -> tuple[int, float]:
        reply = ScriptedReply("A long greeting that the caller will interrupt.", audio_ms=4000)
        caller_config = FakeCallerConfig(speed=1.0, seed=1, text_event="text")
        async with greeted_call(
            reply,
            caller_config,
            mark_every_ms=500,
            estimate_playback=estimate,
            accept_text_messages=True,
        ) as (sim, caller):
            await caller.wait_until(lambda: caller.played_ms >= 1400, 10.0, "1.4 s")
            await caller.type_text("wait, stop there")
            await caller.wait_until(lambda: bool(caller.clears), 5.0, "the clear")
            await sim.wait_until(lambda: bool(sim.client_events("conversation.item.truncate")), 5.0)
            [truncate] = sim.client_events("conversation.item.truncate")
            clear_at = caller.clears[0].at
            heard = sum(len(p.data) for p in caller.played if p.ended_at <= clear_at)
        return truncate["audio_end_ms"], heard / 8

    end_ms, heard_ms = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert heard_ms >= 1400
    if estimate:
        # Early by the echo's and the text's trip only; never past what was heard (+ the
        # 20 ms piece playing when the clear came).
        assert heard_ms - 120 <= end_ms <= heard_ms + 20
    else:
        # The last echoed mark: the item's start mark at 20 ms, then every 500 ms.
        assert (end_ms - 20) % 500 == 0 and end_ms <= heard_ms - 100


# -------------------------------------------------- the per-frame shortcut of audio_sent


class _FullPathTracker(PlaybackTracker):
    """The tracker without its per-frame shortcut: every frame takes the full computation.
    The shortcut must be invisible next to it."""

    __slots__ = ()

    def audio_sent(self, item_id: str, byte_count: int, now: float | None = None) -> str | None:
        return self._audio_sent_full(item_id, byte_count, now)


_ITEM_IDS = [f"item_{n}" for n in range(70)]  # more than the tracker keeps (64): evictions
_AUDIO = st.tuples(
    st.just("audio"),
    st.one_of(st.sampled_from(_ITEM_IDS[:2]), st.sampled_from(_ITEM_IDS)),
    # Small counts walk the byte total over every value, so that it meets a mark's threshold
    # exactly (where ``<`` against ``<=`` is decided); 160 is 20 ms of mu-law.
    st.one_of(st.sampled_from([160, 0, 1, 2, 7, 8, 9, 800]), st.integers(0, 9000)),
)
_STEP = st.one_of(
    _AUDIO,
    _AUDIO,
    _AUDIO,
    st.tuples(st.just("bad"), st.sampled_from(["", 7, None]), st.sampled_from([-1, 1.5, "x"])),
    st.tuples(st.just("flush")),
    st.tuples(st.just("echo"), st.integers(0, 10_000), st.floats(0, 100)),
    st.tuples(st.just("stray"), st.sampled_from(["g0:1:20:item_0", "nonsense", "g9:9:9:x"])),
    st.tuples(st.just("clear")),
    st.tuples(st.just("estimate"), st.floats(0, 100)),
)


def _apply(tracker: PlaybackTracker, step: tuple[Any, ...], names: list[str]) -> object:
    kind = step[0]
    try:
        if kind == "audio":
            name = tracker.audio_sent(step[1], step[2])
            if name is not None:
                names.append(name)
            return name
        if kind == "bad":
            return tracker.audio_sent(step[1], step[2])
        if kind == "flush":
            name = tracker.flush_mark()
            if name is not None:
                names.append(name)
            return name
        if kind == "echo":
            return tracker.mark_received(names[step[1] % len(names)], step[2]) if names else ()
        if kind == "stray":
            return tracker.mark_received(step[1])
        if kind == "clear":
            tracker.clear()
            return None
        return tracker.estimate(step[1])
    except LocalProtocolError as exc:
        return ("raised", str(exc))


def _observe(tracker: PlaybackTracker) -> object:
    return (
        {item: (tracker.sent_ms(item), tracker.played_ms(item)) for item in _ITEM_IDS},
        tracker.pending_marks,
        tracker.playing,
        tracker.generation,
        dict(tracker.stats),
    )


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    every=st.sampled_from([0, 1, 2, 20, 100]),
    bytes_per_ms=st.sampled_from([1, 8, 48]),
    max_pending=st.sampled_from([3, 10_000]),
    steps=st.lists(_STEP, min_size=50, max_size=300),
)
def test_audio_sent_shortcut_answers_as_the_full_path_does(
    every: int, bytes_per_ms: int, max_pending: int, steps: list[tuple[Any, ...]]
) -> None:
    """Random frames of a few items (and of enough others to evict), marks echoed in and out
    of order, strays, flushes, clears and bad input: every answer, exception and observable
    field is the same with the shortcut as without it."""
    options = {"mark_every_ms": every, "bytes_per_ms": bytes_per_ms, "max_pending": max_pending}
    fast, full = PlaybackTracker(**options), _FullPathTracker(**options)
    fast_names: list[str] = []
    full_names: list[str] = []
    for step in steps:
        assert _apply(fast, step, fast_names) == _apply(full, step, full_names), step
        assert _observe(fast) == _observe(full), step
    assert fast.flush_mark() == full.flush_mark()


def test_audio_sent_takes_the_shortcut_between_marks() -> None:
    """The shortcut is taken (the full path is not called) for the frames between two marks,
    so that the per-frame cost the load benchmark measures is the short one."""
    calls = 0

    class Counting(PlaybackTracker):
        __slots__ = ()

        def _audio_sent_full(self, item_id: str, byte_count: int, now: float | None) -> str | None:
            nonlocal calls
            calls += 1
            return super()._audio_sent_full(item_id, byte_count, now)

    tracker = Counting(mark_every_ms=100)
    names = [tracker.audio_sent("item_a", CHUNK) for _ in range(50)]  # 1 s of 20 ms frames
    # The start mark, then one per 100 ms (120 ... 920); the last 80 ms are flushed later.
    assert [n is not None for n in names].count(True) == 10
    assert calls == 10  # each mark only (the first frame is the start mark, armed from there)


def test_the_demo_s_first_barge_in_is_truncated_at_what_the_caller_heard() -> None:
    """``realtime-fsm demo``'s first call, on a clock the test holds (the call layer, no
    sockets): the greeting comes twice as fast as it plays, its first mark is echoed 35 ms in
    (80 ms of it sent by then), and the caller speaks 0.5 s in, before the next mark's echo.
    OpenAI is told 485 ms: the echo's 20 ms plus the time since it, early by that echo's trip
    back only (it used to be the 80 ms sent when the echo came)."""
    c = Call(BridgeConfig(greeting="Greet the caller.", mark_every_ms=500)).start()
    c.oa(oa_session())
    c.answer(c.creates()[-1], "resp_g")
    start = c.t
    for i in range(50):  # a 20 ms delta every 10 ms: playing from ``start``, never running out
        if i == 4:
            [first] = [m["mark"]["name"] for m in c.twilio if m["event"] == "mark"]
            c.at(start + 0.035).tw(tw_mark(first))
        c.at(start + i * 0.01).oa(oa_audio("resp_g", "item_g"))
    c.at(start + 0.5).oa(oa_speech_started("u1"))
    assert [m["event"] for m in c.twilio].count("clear") == 1  # the greeting stops playing
    [truncate] = [e for e in c.sent if e["type"] == "conversation.item.truncate"]
    assert (truncate["item_id"], truncate["audio_end_ms"]) == ("item_g", 485)  # heard: 500

"""Rotation over real sockets: the simulator caps each session at a few seconds, the bridge
replaces its sessions before that.

As ``test_reconnect.py``: a :class:`FakeTwilioCaller` dials the real server, which bridges it to
a :class:`FakeRealtimeServer` whose ``session_max_s`` is the 60-minute cap made short.  Each
connection to the simulator is a fresh session, so what a rotation carries over is what the
next connection received.  Every caller frame carries a time stamp (``stamp_source``), so the
simulator's ``on_append`` hook tells which session heard which frame: none lost, none twice.

Nothing waits on a fixed sleep; timings measured here are printed (``pytest -s``) and bounded
only generously.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import attrs
import pytest
from test_reconnect import (
    CALLER,
    bridge_config,
    bridge_server,
    heard,
    items_created,
    replies,
    run,
    wait_playing,
    wait_served,
)
from waiting import poller

from realtime_fsm.bridge import CallBridge, CallReport
from realtime_fsm.table import CallState
from realtime_fsm.testing import (
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ReplyContext,
    ScriptedReply,
)
from realtime_fsm.testing.audio import read_time_stamp
from realtime_fsm.testing.fake_realtime import ResponseRecord

#: The simulator's session cap, and the bridge's rotation well inside it (the cap is there to
#: be never reached, also on a loaded machine).
CAP_S = 20.0
ROTATE_S = 1.5
REASON_KEY = "rtfsm_reason"
#: For what the bridge knows (its session's number, its report): polled.
until = poller(10.0, 0.01)


class Ears:
    """Which simulator connection heard which caller frame (by the frame's time stamp)."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, int]] = []  # (connection, stamp ns), in arrival order

    def __call__(self, connection: int, audio: bytes, _at: float) -> None:
        stamp = read_time_stamp(audio)
        if stamp is not None:
            self.frames.append((connection, stamp[1]))

    def of(self, connection: int) -> list[int]:
        return [ns for conn, ns in self.frames if conn == connection]


def simulator(ears: Ears | None = None, **config: Any) -> FakeRealtimeServer:
    base = FakeRealtimeConfig(
        realtime_factor=5.0,
        first_delta_delay_s=0.02,
        transcription_delay_s=0.01,
        seed=5,
        session_max_s=CAP_S,
    )
    return FakeRealtimeServer(attrs.evolve(base, **config), replies=replies, on_append=ears)


def rotating_config(**overrides: Any) -> Any:
    rotation: dict[str, Any] = {
        "rotate_after": ROTATE_S,
        "rotate_quiet_window": 5.0,
        "rotate_retry_delay": 0.2,
    }
    return bridge_config(**{**rotation, **overrides})


def live_bridge(bridges: list[CallBridge]) -> CallBridge:
    assert len(bridges) == 1
    return bridges[0]


def assert_no_session_expired(sim: FakeRealtimeServer, report: CallReport) -> None:
    lives = [
        (conn.index, conn.expired, round((conn.closed_at or 0) - conn.opened_at, 2))
        for conn in sim.connections
    ]
    assert not any(conn.expired for conn in sim.connections), lives
    assert sim.injected_error_counts.get("session_expired", 0) == 0
    assert "session_expired" not in report.server_errors
    assert report.reconnects == 0


def assert_make_before_break(sim: FakeRealtimeServer, rotations: int) -> None:
    """Each session was open before the one it replaced closed, and nothing was cut off."""
    conns = sim.connections
    for old, new in itertools.pairwise(conns[: rotations + 1]):
        assert old.closed_at is not None
        assert new.opened_at < old.closed_at
    replaced = [record for record in sim.responses if record.connection < rotations]
    for record in replaced:
        assert not record.socket_dropped and record.finished and record.done_sent, record


def assert_audio_once(caller: FakeTwilioCaller) -> None:
    """No piece of the assistant's audio reached the caller twice (nothing retold)."""
    tags = [(t.tag.ordinal, t.tag.chunk) for t in caller.tags_received]
    assert len(tags) == len(set(tags))


def assert_caller_heard_once(ears: Ears, forwarded: int, rotations: int) -> None:
    """The first ``forwarded`` frames the bridge took from the caller each reached exactly
    one session, in order, over at least ``rotations`` switches: every frame before a switch
    went to the old session, every one after it to the new."""
    frames = ears.frames[:forwarded]
    stamps = [ns for _, ns in frames]
    assert len(set(stamps)) == len(stamps) == forwarded
    assert stamps == sorted(stamps)
    connections = [conn for conn, _ in frames]
    assert connections == sorted(connections)
    assert set(connections) == set(range(max(connections) + 1))
    assert max(connections) >= rotations


async def wait_answer(
    sim: FakeRealtimeServer, caller: FakeTwilioCaller, *, after: int
) -> ResponseRecord:
    """The first response (index >= ``after``), on whichever session, completed and heard in
    full by the caller (a rotation may switch sessions between a question and its answer)."""
    found: list[ResponseRecord] = []

    def check() -> bool:
        for record in sim.responses[after:]:
            if (
                record.status == "completed"
                and record.audio_deltas > 0
                and heard(caller, record) >= record.audio_deltas
            ):
                found.append(record)
                return True
        return False

    await caller.wait_until(check, 10.0, "an answer heard")
    return found[0]


def history_restored(sim: FakeRealtimeServer, connection: int) -> list[tuple[str, str]]:
    """``(role, text)`` of the history items (``<prefix>_history_<n>``) a session got."""
    return [
        (event["item"]["role"], part["text"])
        for event in sim.client_events("conversation.item.create", connection=connection)
        if event["event_id"].startswith("rtfsm_history_")
        for part in event["item"]["content"]
    ]


async def close_all(sim: FakeRealtimeServer) -> None:
    """No socket left open: every connection the simulator accepted is closed."""
    await sim.wait_until(lambda: not sim.open_connections(), 10.0, "every socket closed")


# --- quiet moments --------------------------------------------------------------------------


def test_three_rotations_at_quiet_moments_with_turns_and_barge_ins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Typed turns and spoken barge-ins, session after session: each rotation waits for a
    quiet moment, the new session gets the conversation so far, the cap is never reached."""
    caplog.set_level(logging.INFO, logger="realtime_fsm")
    ears = Ears()

    async def scenario() -> None:
        sim = simulator(ears)
        async with sim, bridge_server(sim, rotating_config()) as bridge:
            async with FakeTwilioCaller(bridge.url, attrs.evolve(CALLER, stamp_source=1)) as caller:
                live: CallBridge | None = None
                await wait_served(sim, caller, connection=0)  # the greeting
                live = live_bridge(bridge.bridges)
                latencies: list[float] = []
                turn = 0
                # Turns until three sessions have been replaced (on a slow machine a session
                # may be replaced before the turns meant for it are done: fewer turns then).
                while live.session.generation < 3:
                    turn += 1
                    generation = live.session.generation
                    # A typed turn, answered in full.
                    await caller.wait_for_quiet()
                    sim.queue_transcript(f"spoken {turn}")
                    typed_at = time.monotonic()
                    after = len(sim.responses)
                    await caller.type_text(f"Typed turn {turn}.")
                    served = await wait_answer(sim, caller, after=after)
                    assert served.first_audio_at is not None
                    latencies.append(served.first_audio_at - typed_at)
                    # Another, spoken over while it plays: a barge-in, then the turn answered.
                    await caller.wait_for_quiet()
                    after = len(sim.responses)
                    await caller.type_text(f"Tell me more, {turn}.")
                    await sim.wait_until(
                        lambda after=after: len(sim.responses) > after, 5.0, "an answer"
                    )
                    spoken_over = sim.responses[after]
                    await caller.wait_until(lambda r=spoken_over: heard(caller, r) >= 3)
                    await caller.speak(0.3)
                    await sim.wait_until(
                        lambda r=spoken_over: r.finished, 5.0, "the spoken-over answer done"
                    )
                    assert spoken_over.status == "cancelled"
                    await wait_answer(sim, caller, after=after + 1)
                    # Quiet: the rotation (due by now or soon) takes over.
                    await caller.wait_for_quiet()
                    await until(
                        lambda generation=generation: live.session.generation > generation,
                        f"a rotation after turn {turn}",
                    )
                await sim.wait_until(lambda: bool(ears.of(3)), 5.0, "audio on the last session")
                forwarded = live.report.media_in
                await sim.wait_until(lambda: len(ears.frames) >= forwarded, 5.0, "caller audio")
                print(
                    "\nanswer latency (typed -> first audio) per session:",
                    " ".join(f"{x * 1000:.0f}ms" for x in latencies),
                )
            report = await bridge.report(sim)
            await close_all(sim)

        rotations = report.rotations  # 3, or more if another came before the hang-up
        assert report.end_reason == "telephony stop"
        assert rotations >= 3 and report.rotations_at_boundary == 0
        assert report.rotation_failures == 0
        assert_no_session_expired(sim, report)
        assert len(sim.connections) in (rotations + 1, rotations + 2)  # + one being opened
        assert_make_before_break(sim, rotations)
        assert_audio_once(caller)
        assert_caller_heard_once(ears, forwarded, 3)
        assert report.media_dropped == 0
        # The restore: every message a replaced session had (restored or new) went to the
        # session after it as history, every answer it completed too; and no session was
        # asked to retell anything.
        for conn in range(1, 4):  # (a later one's restore may have met the hang-up)
            had = set(items_created(sim, conn - 1))
            answers = {
                ("assistant", r.text)
                for r in sim.responses
                if r.connection == conn - 1 and r.status == "completed"
            }
            assert had | answers <= set(history_restored(sim, conn)), conn
            creates = sim.client_events("response.create", connection=conn)
            assert all(c["response"]["metadata"][REASON_KEY] != "reconnect" for c in creates)
        # Answers on the new sessions came as fast as on the first (generously bounded).
        assert max(latencies) < 5.0, latencies
        assert report.undelivered_texts == [] and report.given_up == []
        assert sim.protocol_error_total == 0, sim.error_counts
        assert caller.violations == []
        steps = [r.getMessage() for r in caplog.records if "[SESSION_ROTATE]" in r.getMessage()]
        # One line per step (another rotation may have begun before the caller hung up).
        for step in ("] due:", "open: session.update sent", "ready", "is current"):
            assert sum(step in m for m in steps) in (rotations, rotations + 1), (step, steps)
        assert sum("switched at a quiet moment" in m for m in steps) == rotations, steps

    run(scenario(), timeout=90.0)


# --- no quiet moment ------------------------------------------------------------------------


def test_continuous_answers_rotate_at_a_response_boundary() -> None:
    """The application keeps an answer queued behind the one playing, and the caller's
    playback never drains: no quiet moment.  Past the window, the done of an answer is the
    boundary: the queued request goes to the new session, nothing is cut or retold."""

    def long_replies(ctx: ReplyContext) -> ScriptedReply:
        return ScriptedReply(f"Chapter {ctx.number} of a long story.", audio_ms=1500)

    async def scenario() -> None:
        sim = simulator(session_max_s=CAP_S)
        sim.set_reply_source(long_replies)
        config = rotating_config(rotate_quiet_window=0.5)
        async with sim, bridge_server(sim, config) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                await sim.wait_until(lambda: bool(sim.responses), 5.0, "the greeting")
                live = live_bridge(bridge.bridges)
                asked = 0

                def new_answer_heard() -> bool:
                    return live.session.generation >= 1 and any(
                        r.connection >= 1 and r.finished and heard(caller, r) >= r.audio_deltas
                        for r in sim.responses
                    )

                # Keep one request queued behind each answer, until an answer of the new
                # session has been heard in full.
                while not new_answer_heard():
                    if len(sim.responses) > asked:
                        asked = len(sim.responses)
                        live.request_response(reason="more")
                    seen = len(sim.responses)
                    await caller.wait_until(
                        lambda seen=seen: len(sim.responses) > seen or new_answer_heard(),
                        10.0,
                        "another answer",
                    )
            report = await bridge.report(sim)
            await close_all(sim)

        assert report.rotations >= 1 and report.rotations_at_boundary >= 1
        assert_no_session_expired(sim, report)
        assert_make_before_break(sim, 1)
        assert_audio_once(caller)
        first_new = next(r for r in sim.responses if r.connection == 1)
        assert first_new.metadata is not None
        assert first_new.metadata[REASON_KEY] == "more"  # carried, not a retelling
        assert not any(m["event"] == "clear" for _, m in caller.sent)  # nothing cleared
        assert caller.clears == []
        # The caller's playback ran on across the switch: the longest silence between two
        # pieces of audio, the switch included, is bounded (generously).
        pieces = sorted(caller.played, key=lambda p: p.started_at)
        gaps = [b.started_at - a.ended_at for a, b in itertools.pairwise(pieces)]
        print(f"\nlongest playback gap around a boundary rotation: {max(gaps) * 1000:.0f} ms")
        assert max(gaps) < 1.0
        assert sim.protocol_error_total == 0, sim.error_counts

    run(scenario(), timeout=60.0)


# --- the current session lost while the next is ready ------------------------------------


def test_a_session_lost_while_the_next_is_ready_switches_to_it_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Make before break pays off: the current session drops (no close frame) in the middle
    of an answer while the next one waits, ready, for a quiet moment.  The next one takes
    over at once (no reconnect), gets the conversation up to the drop, and is asked for the
    cut-off answer again; the typed text reached the model once."""
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    def slow_then_short(ctx: ReplyContext) -> ScriptedReply:
        # Long on the first session (still generating when it drops), short after.
        audio_ms = 8000 if ctx.connection == 0 else 1200
        return ScriptedReply(f"Answer {ctx.number} on connection {ctx.connection}.", audio_ms)

    async def scenario() -> None:
        sim = simulator(realtime_factor=1.0)
        sim.set_reply_source(slow_then_short)
        config = rotating_config(rotate_quiet_window=60.0)
        async with sim, bridge_server(sim, config) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                await sim.wait_until(lambda: bool(sim.responses), 5.0, "the greeting")
                live = live_bridge(bridge.bridges)
                await until(
                    lambda: live.session.call_state is CallState.READY_TO_SWITCH,
                    "the next session ready",
                )
                after = len(sim.responses)
                await caller.type_text("Where is my parcel?")  # over the greeting
                cut = await wait_playing(sim, caller, after=after)
                assert cut.connection == 0 and not cut.finished
                assert live.session.call_state is CallState.READY_TO_SWITCH
                assert len(sim.connections) == 2
                live.request_response(reason="queued")
                sim.connections[0].drop()
                await until(lambda: live.session.generation == 1, "the ready session current")
                retold = await wait_served(sim, caller, connection=1, timeout=20.0)
            report = await bridge.report(sim)
            await close_all(sim)

        assert report.reconnects == report.reconnects_to_ready == 1
        assert report.reconnect_failures == 0 and report.rotations in (0, 1)
        moves = [r.getMessage() for r in caplog.records if "call transition=" in r.getMessage()]
        assert not any("->reconnecting" in m for m in moves), moves
        assert any("session_lost ready_to_switch->running" in m for m in moves), moves
        # The cut-off answer asked again, first, with the queued request; heard in full.
        assert retold.metadata is not None
        assert retold.metadata[REASON_KEY].split("+") == ["reconnect", "queued"]
        assert retold.tag != cut.tag
        # The new session got the conversation up to the drop, the text once (as history).
        assert ("user", "Where is my parcel?") in history_restored(sim, 1)
        delivered = [
            event
            for event in sim.client_events("conversation.item.create")
            if not event["event_id"].startswith("rtfsm_history_")
            and any(p.get("text") == "Where is my parcel?" for p in event["item"]["content"])
        ]
        assert len(delivered) == 1
        assert report.undelivered_texts == [] and report.given_up == []
        assert report.media_dropped == 0
        assert "session_expired" not in report.server_errors
        assert sim.protocol_error_total == 0, sim.error_counts
        assert caller.violations == []

    run(scenario(), timeout=90.0)


# --- push-to-talk across a rotation ---------------------------------------------------------


class FrameEars(Ears):
    """``Ears`` that also find the stamps of caller frames re-sent together in one append
    (a switch carries push-to-talk audio re-cut into larger appends)."""

    def __call__(self, connection: int, audio: bytes, _at: float) -> None:
        for offset in range(0, len(audio), 160):  # Twilio's 20 ms frames
            stamp = read_time_stamp(audio, offset)
            if stamp is not None:
                self.frames.append((connection, stamp[1]))


def test_a_push_to_talk_turn_spanning_a_rotation_is_committed_whole() -> None:
    """Without turn detection the turn is the input buffer at the commit.  The caller's turn
    begins (the previous commit) on the first session and is committed on the next one: that
    session's buffer starts with every frame the first one got since the previous commit, in
    order, once, then the frames after the switch."""
    ears = FrameEars()
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        sim = simulator(ears)
        ptt = attrs.evolve(bridge_config().session, turn_detection=None, silence_duration_ms=None)
        config = rotating_config(session=ptt, rotate_after=6.0)
        async with sim, bridge_server(sim, config) as bridge:
            async with FakeTwilioCaller(bridge.url, attrs.evolve(CALLER, stamp_source=1)) as caller:
                await wait_served(sim, caller, connection=0)  # the greeting
                live = live_bridge(bridge.bridges)
                live.commit_user_turn()  # the previous turn: the new one begins now
                committed_at = live.report.media_in
                assert live.session.generation == 0
                await wait_served(sim, caller, connection=0, after=1)  # its answer
                await until(lambda: live.session.generation == 1, "the rotation")
                await caller.wait_until(
                    lambda: len(ears.of(1)) > len(ears.of(0)) - committed_at + 10,
                    10.0,
                    "audio after the switch",
                )
                after = len(sim.responses)
                live.commit_user_turn()  # on the new session
                await wait_served(sim, caller, connection=1, after=after)
            seen["report"] = await bridge.report(sim)
            await close_all(sim)
        seen["committed_at"] = committed_at

    run(scenario(), timeout=90.0)
    committed_at, report = seen["committed_at"], seen["report"]
    first, second = ears.of(0), ears.of(1)
    start = first.index(second[0])
    carried = first[start:]
    # Since the previous commit, give or take the frames on the wire with it.
    assert abs(start - committed_at) <= 5, (start, committed_at)
    assert len(carried) >= 50  # a second and more of the turn was spoken before the switch
    assert second[: len(carried)] == carried
    assert len(set(second)) == len(second) and second == sorted(second)
    assert report.rotations >= 1 and report.reconnects == 0
    assert report.push_to_talk_audio_dropped == 0 and report.media_dropped == 0
    assert report.turns_lost == 0


# --- the next session fails -----------------------------------------------------------------


@pytest.mark.slow
def test_a_next_session_that_cannot_open_keeps_the_call_and_the_cap_reconnects() -> None:
    """Every attempt at a next session is refused (HTTP 503): the call stays on its session
    (a turn is answered there meanwhile), and when the cap ends it, the reconnect takes over."""

    async def scenario() -> None:
        sim = simulator(session_max_s=10.0)
        config = rotating_config(rotate_attempts=2, rotate_retry_delay=0.3)
        async with sim, bridge_server(sim, config) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                await sim.wait_for_connection()
                sim.refuse_connections()  # every next session, from the first
                await wait_served(sim, caller, connection=0)
                live = live_bridge(bridge.bridges)
                await until(lambda: live.report.rotation_failures == 2, "two failed attempts")
                assert live.session.generation == 0 and sim.refused == 2
                sim.accept_connections()
                await caller.type_text("Still on the first session?")
                await wait_served(sim, caller, connection=0, after=1)
                # The cap: session_expired, then the reconnect.
                await sim.wait_until(lambda: sim.connections[0].expired, 15.0, "the cap")
                await sim.wait_until(lambda: len(sim.connections) == 2, 10.0, "a reconnect")
                await caller.type_text("And now?")
                answer = await wait_served(sim, caller, connection=1)
                assert answer.metadata is not None
            report = await bridge.report(sim)
            await close_all(sim)

        assert report.rotations == 0 and report.rotation_failures == 2
        assert report.reconnects == 1
        assert report.server_errors == {"session_expired": 1}
        assert report.end_reason == "telephony stop"
        assert ("user", "Still on the first session?") in items_created(sim, 1)
        assert report.undelivered_texts == []
        assert sim.protocol_error_total == 0, sim.error_counts

    run(scenario(), timeout=60.0)


def test_a_call_ending_while_the_next_session_waits_closes_it() -> None:
    """The next session is ready, but the caller keeps talking (no quiet moment) and hangs
    up: both OpenAI sockets are closed."""

    async def scenario() -> None:
        sim = simulator()
        config = rotating_config(rotate_quiet_window=60.0)
        async with sim, bridge_server(sim, config) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                # The caller talks over the greeting and goes on: never a quiet moment.
                await caller.wait_for_audio()
                speaking = asyncio.create_task(caller.speak(30.0))
                live = live_bridge(bridge.bridges)
                await until(
                    lambda: live.session.call_state is CallState.READY_TO_SWITCH,
                    "the next session ready",
                )
                assert live.session.generation == 0 and len(sim.connections) == 2
                await caller.hang_up()
                speaking.cancel()
            report = await bridge.report(sim)
            await close_all(sim)

        assert report.rotations == 0 and report.end_reason == "telephony stop"
        assert all(conn.closed for conn in sim.connections)

    run(scenario(), timeout=60.0)

"""Property test: the real machine against a rude reference server, over a slow network.

The world (``tests/lifecycle_world.py``) wires one :class:`~realtime_fsm.ResponseLifecycle` to
the reference server through two FIFO queues and keeps the books of every promise; this module
draws random interleavings of app, caller, server, network and clock actions on it with
hypothesis, for every turn-detection mode and every server profile (polite, slow or lost cancel
acknowledgements, late ``response.created``, the old busy wording without echoed event ids,
refused and swallowed creates, all of it at once).  The same world drives the exhaustive
bounded check in ``test_lifecycle_exhaustive.py`` and the long search of
``benchmarks/property_search.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from lifecycle_world import ACTIVE, MODES, PROFILES, Mode, Profile, World

#: Slow, so a plain ``pytest`` deselects it; CI runs it (``pytest -m ''``):
#: hypothesis drives the world through every mode and server profile.
pytestmark = pytest.mark.slow

# ------------------------------------------------------------------------- the hypothesis test


class LifecycleAgainstServer(RuleBasedStateMachine):
    """Random interleavings of app, user, server, network and clock actions on a :class:`World`."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World(MODES[0])
        self.mixed = True

    @initialize(
        mode=st.sampled_from(MODES),
        profile=st.sampled_from(PROFILES),
        audio_chunks=st.integers(1, 3),
        transcript_chunks=st.integers(0, 2),
        always_silent=st.sampled_from([False, False, False, True]),
        mixed=st.sampled_from([True, True, False]),
    )
    def setup(
        self,
        mode: Mode,
        profile: Profile,
        audio_chunks: int,
        transcript_chunks: int,
        always_silent: bool,
        mixed: bool,
    ) -> None:
        # Unmixed runs have no user input, no server-created responses, no silent spells and no
        # close: all app requests, network and clock, so response lifecycles run long (the
        # watchdog lives there; in mixed runs barge-ins end most responses first).
        self.mixed = mixed
        self.world = World(
            mode,
            profile,
            audio_chunks=audio_chunks,
            transcript_chunks=transcript_chunks,
            always_silent=always_silent,
        )

    @precondition(lambda self: self.world.open)
    @rule(
        instructions=st.sampled_from([None, None, "be brief"]),
        out_of_band=st.sampled_from([False, False, False, True]),
    )
    def app_requests_response(self, instructions: str | None, out_of_band: bool) -> None:
        self.world.request(instructions, out_of_band)

    @precondition(lambda self: self.mixed and self.world.open)
    @rule()
    def user_types_text(self) -> None:
        self.world.user_text()

    @precondition(lambda self: self.mixed and self.world.can_speak())
    @rule()
    def user_starts_speaking(self) -> None:
        self.world.speech_started()

    @precondition(lambda self: self.world.can_stop_speaking())
    @rule()
    def user_stops_speaking(self) -> None:
        self.world.speech_stopped()

    @precondition(lambda self: self.mixed and self.world.can_idle_timeout())
    @rule()
    def server_idle_timeout(self) -> None:
        self.world.idle_timeout()

    @precondition(lambda self: self.world.can_ack_cancel())
    @rule(index=st.integers(0, 2), first=st.sampled_from([False, False, True]))
    def server_acts_on_a_cancel(self, index: int, first: bool) -> None:
        self.world.ack_cancel(index, first)

    @precondition(lambda self: self.world.can_release())
    @rule()
    def server_sends_a_late_created(self) -> None:
        self.world.release_created()

    @precondition(lambda self: self.world.open and self.world.profile.refusals)
    @rule(roll=st.integers(0, 3))
    def server_refuses_the_next_create(self, roll: int) -> None:
        if roll == 0:
            self.world.refuse_next()

    @precondition(lambda self: self.world.open and self.world.profile.swallows)
    @rule(roll=st.integers(0, 3))
    def server_swallows_the_next_create(self, roll: int) -> None:
        if roll == 0:
            self.world.swallow_next()

    @precondition(lambda self: self.world.can_stream())
    @rule(index=st.integers(0, 3))
    def server_step(self, index: int) -> None:
        self.world.stream(index)

    @precondition(lambda self: self.world.can_send())
    @rule()
    def deliver_client_to_server(self) -> None:
        self.world.send()

    @precondition(lambda self: self.world.can_receive())
    @rule()
    def deliver_server_to_client(self) -> None:
        self.world.receive()

    @precondition(lambda self: self.world.open)
    @rule(moves=st.lists(st.sampled_from(["send", "receive", "stream"]), min_size=1, max_size=8))
    def network_runs(self, moves: list[str]) -> None:
        """Several deliveries in a row: keeps conversations moving between interleavings."""
        world = self.world
        for move in moves:
            if move == "send" and world.can_send():
                world.send()
            elif move == "receive" and world.can_receive():
                world.receive()
            elif move == "stream" and world.can_stream():
                world.stream()
            world.check()

    @precondition(lambda self: self.world.can_send() or self.world.can_receive())
    @rule()
    def network_round_trip(self) -> None:
        """A whole round trip in one step: long conversations (watchdog, cooldown) fit."""
        self.world.round_trip()

    @precondition(lambda self: self.world.open)
    @rule()
    def next_response_silent(self) -> None:
        self.world.silence_next()

    @precondition(lambda self: self.world.open)
    @rule(seconds=st.sampled_from([0.02, 0.1, 0.5, 1.0, 3.5]))
    def time_passes(self, seconds: float) -> None:
        self.world.advance(seconds)

    @precondition(lambda self: self.world.can_tick())
    @rule(late_by=st.sampled_from([0.0, 0.0, 0.1, 2.0, 13.0]), roll=st.integers(0, 3))
    def timer_fires(self, late_by: float, roll: int) -> None:
        # The no-audio watchdog's deadline always fires; the others (stall, creating and
        # cancelling timeouts) only now and then, or they would end most waits before the
        # network delivers (the silent-server rule covers them thoroughly).
        m = self.world.m
        if roll == 0 or (m.state is ACTIVE and m.transcript_deltas and not m.audio_deltas):
            self.world.tick(late_by)

    @precondition(lambda self: self.world.open and bool(self.world.playable_items()))
    @rule(index=st.integers(0, 3), fraction=st.sampled_from([0.0, 0.3, 0.5, 1.0]))
    def playback_progress(self, index: int, fraction: float) -> None:
        self.world.playback(index, fraction)

    @precondition(lambda self: self.world.open)
    @rule(
        index=st.integers(0, 7),
        kind=st.sampled_from(
            ["done", "created", "audio", "transcript", "early_tick", "duplicate_created"]
        ),
        out_of_band=st.booleans(),
    )
    def stale_event(self, index: int, kind: str, out_of_band: bool) -> None:
        self.world.stale(index, kind, out_of_band)

    @precondition(lambda self: self.mixed and self.world.open)
    @rule(roll=st.integers(0, 3))
    def server_goes_silent(self, roll: int) -> None:
        if roll == 0:  # rarer than the other rules: it jumps far ahead in time
            self.world.settle_silent()

    @precondition(lambda self: self.mixed and self.world.open)
    @rule(roll=st.integers(0, 15))
    def connection_closes(self, roll: int) -> None:
        if roll == 0:  # rare: nothing interesting happens after it
            self.world.close()

    @precondition(lambda self: self.world.closed)
    @rule()
    def closed_machine_refuses_events(self) -> None:
        self.world.after_close()

    @invariant()
    def invariants_hold(self) -> None:
        self.world.check()

    def teardown(self) -> None:
        self.world.quiesce()


class SilentServerAppOnly(LifecycleAgainstServer):
    """The same machine, unmixed, with every response silent: app requests, the network and
    the clock only, so most runs see the no-audio watchdog fire, retry and meet its cooldown."""

    @initialize(
        mode=st.sampled_from(MODES),
        profile=st.sampled_from(PROFILES),
        audio_chunks=st.just(1),
        transcript_chunks=st.integers(0, 2),
        always_silent=st.just(True),
        mixed=st.just(False),
    )
    def setup(
        self,
        mode: Mode,
        profile: Profile,
        audio_chunks: int,
        transcript_chunks: int,
        always_silent: bool,
        mixed: bool,
    ) -> None:
        super().setup(mode, profile, audio_chunks, transcript_chunks, always_silent, mixed)


_SETTINGS = settings(
    max_examples=400,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
LifecycleAgainstServer.TestCase.settings = _SETTINGS
SilentServerAppOnly.TestCase.settings = settings(_SETTINGS, max_examples=150)
TestLifecycleAgainstServer = LifecycleAgainstServer.TestCase
TestSilentServerAppOnly = SilentServerAppOnly.TestCase

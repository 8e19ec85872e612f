"""End-to-end over real sockets on 127.0.0.1, the example bridge between the simulator and the fake
caller: both turn-taking modes and push-to-talk, out-of-order and duplicated events, and the end
of the call.  The harness is test_e2e's; tests/test_trace.py replays every scenario's trace.
"""

from __future__ import annotations

import attrs
import pytest
from test_e2e import (
    CALLER,
    HOST,
    REASON_KEY,
    SPEECH_S,
    assert_clean_end,
    assert_no_cancelled_audio_heard,
    bridge_config,
    bridge_server,
    create_reasons,
    received_at,
    run,
    sent_at,
    server_user_texts,
    short_replies,
    simulator,
    typed,
    wait_finished,
    wait_playing,
    wait_served,
)

from realtime_fsm.bridge import CallBridge, CallReport
from realtime_fsm.openai_realtime import SessionConfig
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import (
    LIFECYCLE_EVENT_TYPES,
    FakeTwilioCaller,
    ResponseFaults,
    ResponseRecord,
)

# --- both turn-taking modes ---------------------------------------------------------------------


def test_turn_taking_app_creates_responses() -> None:
    """``create_response`` off: each spoken turn is answered by the bridge's own
    ``response.create``, sent after ``input_audio_buffer.committed``; speech over a response
    makes the bridge cancel it."""

    async def scenario() -> None:
        sim = simulator()
        config = bridge_config(server_creates=False, greeting=None)
        async with sim, bridge_server(sim, config) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                await sim.wait_for_event("session.updated")
                await caller.speak(SPEECH_S)
                first = await wait_playing(sim, caller)
                await caller.speak(SPEECH_S)
                second = await wait_served(sim, caller, after=1)
            report = await bridge.report(sim)

        assert sim.responses == [first, second]
        assert all(r.origin == "client" for r in sim.responses)
        assert first.status == "cancelled" and first.reason == "client_cancelled"
        assert len(sim.client_events("response.cancel")) == 1
        # One create per committed turn, each sent after the server committed that turn.
        committed = [at for at, _ in sent_at(sim, "input_audio_buffer.committed")]
        creates = [at for at, _ in received_at(sim, "response.create")]
        assert len(committed) == len(creates) == 2
        assert committed[0] < creates[0] < committed[1] < creates[1]
        assert create_reasons(sim) == ["user_turn", "user_turn"]
        vad = sim.connections[0].session["audio"]["input"]["turn_detection"]
        assert vad["create_response"] is False and vad["interrupt_response"] is False
        assert_no_cancelled_audio_heard(sim, caller)
        assert sim.error_counts == {}, sim.error_counts
        assert_clean_end(report, caller)
        assert report.given_up == []

    run(scenario())


def test_push_to_talk_a_dtmf_key_ends_the_callers_turn() -> None:
    """No turn detection: the caller speaks, then presses ``#`` (``commit_on_dtmf``).  The
    bridge commits the input audio; the server's ``committed`` gets the turn its answer, and
    the key is not sent as text.  A second turn ended by the application
    (``commit_user_turn``) while the first answer plays is answered after it, not over it."""
    bridges: list[CallBridge] = []

    async def scenario() -> None:
        sim = simulator(short_replies)
        config = attrs.evolve(
            bridge_config(greeting=None),
            session=SessionConfig(instructions="You are a test assistant.", turn_detection=None),
            commit_on_dtmf="#",
        )
        reports: list[CallReport] = []
        async with sim:
            server_config = ServerConfig(
                public_url=f"http://{HOST}", realtime_url=sim.url, bridge=config
            )
            server = await start_server(
                server_config, HOST, 0, reports=reports, on_bridge=bridges.append
            )
            port = server.sockets[0].getsockname()[1]
            try:
                url = f"ws://{HOST}:{port}/media-stream"
                async with FakeTwilioCaller(url, CALLER) as caller:
                    await sim.wait_for_event("session.updated")
                    await caller.speak(SPEECH_S)
                    await caller.send_dtmf("#")
                    first = await wait_playing(sim, caller)
                    await caller.speak(SPEECH_S)
                    bridges[0].commit_user_turn()
                    await wait_served(sim, caller, after=1)
                await sim.wait_until(lambda: bool(reports), 5.0, "the report")
            finally:
                server.close()
                await server.wait_closed()
        report = reports[0]
        commits = sim.client_events("input_audio_buffer.commit")
        assert [c["event_id"] for c in commits] == ["rtfsm_commit_1", "rtfsm_commit_2"]
        assert len(sent_at(sim, "input_audio_buffer.committed")) == 2
        assert create_reasons(sim) == ["user_turn", "user_turn"]
        # No turn detection, so no barge-in: the second turn waited for the first answer.
        assert first.status == "completed"
        first_done = sent_at(sim, "response.done")[0][0]
        assert received_at(sim, "response.create")[1][0] > first_done
        assert server_user_texts(sim) == []  # "#" ended a turn; it was not typed text
        assert sim.connections[0].session["audio"]["input"]["turn_detection"] is None
        assert sim.error_counts == {}, sim.error_counts
        assert_clean_end(report, caller)

    run(scenario())


def test_turn_taking_server_creates_responses() -> None:
    """``create_response`` and ``interrupt_response`` on: the server answers and interrupts
    spoken turns itself; the bridge only clears the caller's playback (no ``response.cancel``,
    no ``response.create`` for a turn).  Typed text is still the bridge's to answer."""

    async def scenario() -> None:
        sim = simulator()
        config = bridge_config(server_creates=True, greeting=None)
        async with sim, bridge_server(sim, config) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                await sim.wait_for_event("session.updated")
                await caller.speak(SPEECH_S)
                first = await wait_playing(sim, caller)
                clears = len(caller.clears)
                await caller.speak(SPEECH_S)
                second = await wait_served(sim, caller, after=1)
                assert len(caller.clears) == clears + 1
                await caller.wait_for_quiet(5.0)
                assert sim.client_events("response.create") == []
                await caller.type_text("And one more thing.")
                third = await wait_served(sim, caller, after=2)
            report = await bridge.report(sim)

        assert sim.responses == [first, second, third]
        assert [r.origin for r in sim.responses] == ["server_vad", "server_vad", "client"]
        assert first.status == "cancelled" and first.reason == "turn_detected"
        assert sim.client_events("response.cancel") == []
        assert create_reasons(sim) == ["user_text"]
        vad = sim.connections[0].session["audio"]["input"]["turn_detection"]
        assert vad["create_response"] is True and vad["interrupt_response"] is True
        assert report.lifecycle_stats.get("server_created_responses") == 2
        assert_no_cancelled_audio_heard(sim, caller)
        assert sim.error_counts == {}, sim.error_counts
        assert server_user_texts(sim) == typed(caller)
        assert_clean_end(report, caller)
        assert report.given_up == []

    run(scenario())


def test_server_creates_turn_committed_while_cancelling_is_not_raced() -> None:
    """Server-creates mode, text barge-in, and the caller speaks (and stops) before the
    cancelled response's ``response.done``: the server answers the turn when the slot frees, so
    the bridge must not race it with a create of its own for the held text."""

    async def scenario() -> None:
        sim = simulator(short_replies)
        sim.fault_next_response(ResponseFaults(cancel_ack_delay_s=1.0))
        config = bridge_config(server_creates=True, cancel_timeout=3.0)
        async with sim, bridge_server(sim, config) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                greeting = await wait_playing(sim, caller)
                await caller.type_text("one")
                await caller.speak(SPEECH_S)
                await sim.wait_for_event("input_audio_buffer.committed", timeout=5.0)
                if greeting.finished:  # the scenario is not the one described
                    raise RuntimeError("the turn was committed after the cancelled response ended")
                await sim.wait_until(lambda: greeting.finished, 5.0)
                # Both the spoken turn and the typed text get answered.
                await sim.wait_until(
                    lambda: (
                        any(r.origin == "server_vad" and r.finished for r in sim.responses)
                        and any(
                            "user_text" in (r.metadata or {}).get(REASON_KEY, "") and r.finished
                            for r in sim.responses
                        )
                    ),
                    10.0,
                    "answers to the turn and to the text",
                )
            report = await bridge.report(sim)

        assert server_user_texts(sim) == ["one"]
        assert all(r.status == "completed" for r in sim.responses[1:])
        assert_clean_end(report, caller)
        assert sim.error_counts == {}, sim.error_counts  # the bug: one busy error

    run(scenario())


# --- out-of-order and duplicated events ---------------------------------------------------------


@pytest.mark.parametrize("server_creates", [False, True], ids=["app_creates", "server_creates"])
def test_duplicated_and_late_events_change_nothing(server_creates: bool) -> None:
    """Every response's lifecycle events come twice, each old response's stale audio, transcript
    and ``response.done`` arrive right after the next ``response.created``, and three audio
    deltas follow every cancel: the call goes exactly as it would without them."""
    faults = ResponseFaults(
        duplicate_events=LIFECYCLE_EVENT_TYPES, late_events=True, deltas_after_cancel=3
    )
    rounds = ["text", "speech", "two_texts", "speech"]

    async def scenario() -> None:
        sim = simulator(faults=faults)
        async with sim, bridge_server(sim, bridge_config(server_creates=server_creates)) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                interrupted: list[ResponseRecord] = []
                for number, kind in enumerate(rounds):
                    record = await wait_playing(sim, caller)
                    if kind == "speech":
                        await caller.speak(SPEECH_S)
                    else:
                        await caller.type_text(f"typed {number}")
                    if kind == "two_texts":
                        await caller.type_text(f"typed {number} again")
                    await wait_finished(sim, record)
                    interrupted.append(record)
                # The answer to the last barge-in plays out; then one typed question in silence.
                index = sim.responses.index(interrupted[-1])
                answer = await wait_served(sim, caller, after=index + 1)
                await caller.wait_for_quiet(5.0)
                await caller.type_text("final")
                final = await wait_served(sim, caller, after=sim.responses.index(answer) + 1)
            report = await bridge.report(sim)

        assert sim.error_counts == {}, sim.error_counts
        assert server_user_texts(sim) == typed(caller)
        assert sim.responses == [*interrupted, answer, final]
        assert all(r.status == "cancelled" for r in interrupted)
        assert_no_cancelled_audio_heard(sim, caller)
        # Nothing was heard twice, and the completed answers were heard in full.
        for record in (answer, final):
            heard = [t for t in caller.tags_received if t.tag.ordinal == record.tag]
            assert len(heard) == record.audio_deltas, record
        # A duplicated or stale response.done never made the bridge create or cancel again.
        assert len(sim.client_events("response.create")) == sum(
            r.origin == "client" for r in sim.responses
        )
        client_cancelled = [r for r in sim.responses if r.reason == "client_cancelled"]
        assert len(sim.client_events("response.cancel")) == len(client_cancelled)
        # The faults did reach the bridge (and were recognised as stale).
        stats = report.lifecycle_stats
        assert stats.get("stale_done", 0) > 0 and stats.get("stale_created", 0) > 0, stats
        assert stats.get("dropped_audio_deltas", 0) > 0, stats
        assert "lost_done" not in stats, stats
        assert_clean_end(report, caller)
        assert report.given_up == []
        assert report.server_errors == {}

    run(scenario())


# --- the end of the call --------------------------------------------------------------------------


def test_hang_up_right_after_typing_ends_the_call_and_hands_the_text_back() -> None:
    """The caller types over the assistant and hangs up at once, while the text is still held
    (the server is slow to acknowledge the cancel): the bridge ends the call promptly, closes
    the telephony socket cleanly, and hands the undelivered text back in its report."""

    async def scenario() -> None:
        sim = simulator()
        sim.fault_next_response(ResponseFaults(cancel_ack_delay_s=1.0))
        async with sim, bridge_server(sim, bridge_config()) as bridge:
            caller = FakeTwilioCaller(bridge.url, CALLER)
            await caller.start()
            try:
                await wait_playing(sim, caller)
                await caller.type_text("Actually, never mind.")
            finally:
                await caller.hang_up()
            report = await bridge.report(sim)
            assert caller.close_code == 1000, caller.close_code

        assert report.end_reason == "telephony stop", report
        assert report.undelivered_texts == ["Actually, never mind."]
        assert server_user_texts(sim) == []
        assert caller.violations == []

    run(scenario(), timeout=20.0)

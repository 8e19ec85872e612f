"""End to end: the example bridge's server between the simulator's two halves.

Every test runs a whole phone call over real websockets on 127.0.0.1: a
:class:`~realtime_fsm.testing.FakeTwilioCaller` dials the server that ``examples/twilio_bridge.py``
runs (:func:`realtime_fsm.server.start_server`, unmodified, configured only through its public
config classes), which bridges it to a :class:`~realtime_fsm.testing.FakeRealtimeServer`.
What is asserted is what users care about and can observe from the outside:

* what the fake OpenAI server received and counted (protocol errors, user text items,
  ``response.create`` / ``response.cancel`` and their timing relative to server events);
* what the caller received (every audio delta carries a tag naming its response, so "no audio
  of a cancelled response after its ``clear``" is a fact, not an estimate);
* the bridge's :class:`~realtime_fsm.bridge.CallReport` and, where the issue names a log line,
  the log.

No sleeps decide anything: the tests wait on facts with the simulator's ``wait_until`` helpers
and generous timeouts, and the lifecycle timeouts are shortened so recovery paths take well
under a second.  Typed text uses the bridge's opt-in ``{"event": "text"}`` side channel
(``accept_text_messages=True``); Twilio itself carries no text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import attrs
import pytest

from realtime_fsm.bridge import BridgeConfig, CallReport
from realtime_fsm.config import LifecycleConfig
from realtime_fsm.openai_realtime import SessionConfig
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ReplyContext,
    ReplySource,
    ResponseFaults,
    ResponseRecord,
    ScriptedReply,
    find_audio_tags,
)

HOST = "127.0.0.1"
BUSY = "conversation_already_has_active_response"
#: The chunk number the simulator writes into the tag of a *late* audio delta (an old response's
#: stale audio, sent by ``ResponseFaults(late_events=True)``).
LATE_CHUNK = 0xFFFF
#: Metadata key under which the machine names why it sent a ``response.create``.
REASON_KEY = "rtfsm_reason"
#: The caller's clock runs 4x real time (media cadence, playback, speech durations).
CALLER = FakeCallerConfig(text_event="text", speed=4.0, seed=11)
#: Caller seconds of speech for one barge-in (300 ms of audio: VAD hears it as a turn).
SPEECH_S = 0.3
#: Audio chunks (20 ms each) the caller must have received before it interrupts a response.
PLAYING_CHUNKS = 10

JSON = dict[str, Any]


# --- harness ------------------------------------------------------------------------------------


def run(scenario: Coroutine[Any, Any, None], timeout: float = 30.0) -> None:
    """Each test owns its event loop and a hard bound on its run time."""
    asyncio.run(asyncio.wait_for(scenario, timeout))


def long_replies(ctx: ReplyContext) -> ScriptedReply:
    """Four seconds of speech per response (0.8 s at the simulator's pace): long enough to be
    interrupted with a wide margin, short enough that a final answer plays out quickly."""
    return ScriptedReply(
        f"Answer number {ctx.number}: let me explain this in some detail, step by step.",
        audio_ms=4000,
    )


def short_replies(ctx: ReplyContext) -> ScriptedReply:
    return ScriptedReply(f"Answer number {ctx.number}, in a few words.", audio_ms=1200)


def simulator(
    replies: ReplySource = long_replies, faults: ResponseFaults | None = None
) -> FakeRealtimeServer:
    config = FakeRealtimeConfig(
        realtime_factor=5.0,
        first_delta_delay_s=0.02,
        transcription_delay_s=0.01,
        faults=faults or ResponseFaults(),
        seed=5,
    )
    return FakeRealtimeServer(config, replies=replies)


def session(*, server_creates: bool) -> SessionConfig:
    """Server VAD either way; who creates (and cancels) responses is the turn-taking mode."""
    return SessionConfig(
        instructions="You are a test assistant.",
        create_response=server_creates,
        interrupt_response=server_creates,
        silence_duration_ms=200,
    )


def bridge_config(
    *,
    server_creates: bool = False,
    greeting: str | None = "Greet the caller.",
    **lifecycle: Any,
) -> BridgeConfig:
    base = LifecycleConfig(
        create_timeout=2.0,
        cancel_timeout=2.0,
        no_audio_timeout=0.3,
        watchdog_cooldown=60.0,
        stall_timeout=5.0,
    )
    return BridgeConfig(
        session=session(server_creates=server_creates),
        lifecycle=attrs.evolve(base, **lifecycle),
        greeting=greeting,
        accept_text_messages=True,
    )


class Bridge:
    """The example bridge's server, listening on 127.0.0.1 (a free port)."""

    def __init__(self, url: str, reports: list[CallReport]) -> None:
        self.url = url
        self.reports = reports

    async def report(self, sim: FakeRealtimeServer) -> CallReport:
        """The one call's report, once the bridge has torn the call down."""
        await sim.wait_until(lambda: bool(self.reports), 5.0, "the call report")
        assert len(self.reports) == 1, self.reports
        return self.reports[0]


@contextlib.asynccontextmanager
async def bridge_server(sim: FakeRealtimeServer, config: BridgeConfig) -> AsyncIterator[Bridge]:
    reports: list[CallReport] = []
    server_config = ServerConfig(public_url=f"http://{HOST}", realtime_url=sim.url, bridge=config)
    server = await start_server(server_config, HOST, 0, reports=reports)
    try:
        port = server.sockets[0].getsockname()[1]
        yield Bridge(f"ws://{HOST}:{port}/media-stream", reports)
    finally:
        server.close()
        await server.wait_closed()


# --- what the two ends saw ----------------------------------------------------------------------


def chunks_heard(caller: FakeTwilioCaller, record: ResponseRecord) -> set[int]:
    """Chunk numbers of ``record``'s audio the caller received (late audio excluded)."""
    return {
        t.tag.chunk
        for t in caller.tags_received
        if t.tag.ordinal == record.tag and t.tag.chunk != LATE_CHUNK
    }


def server_user_texts(sim: FakeRealtimeServer) -> list[str]:
    """User text items as the OpenAI side received them, in order."""
    texts: list[str] = []
    for event in sim.client_events("conversation.item.create"):
        item = event.get("item") or {}
        if item.get("role") == "user":
            for part in item.get("content") or []:
                if part.get("type") == "input_text":
                    texts.append(part["text"])
    return texts


def typed(caller: FakeTwilioCaller) -> list[str]:
    return [text for _at, text in caller.texts_typed]


def committed(sim: FakeRealtimeServer) -> int:
    """How many caller turns the server's VAD has committed so far."""
    return len(sim.server_events("input_audio_buffer.committed"))


def create_reasons(sim: FakeRealtimeServer) -> list[str]:
    """Why the bridge sent each ``response.create`` (the machine puts it in the metadata)."""
    return [
        str(((event.get("response") or {}).get("metadata") or {}).get(REASON_KEY))
        for event in sim.client_events("response.create")
    ]


def received_at(sim: FakeRealtimeServer, event_type: str) -> list[tuple[float, JSON]]:
    return [(r.at, r.event) for r in sim.received if r.event.get("type") == event_type]


def sent_at(sim: FakeRealtimeServer, event_type: str) -> list[tuple[float, JSON]]:
    return [(s.at, s.event) for s in sim.sent if s.event.get("type") == event_type]


def audio_chunks_sent_after(sim: FakeRealtimeServer, record: ResponseRecord, t: float) -> set[int]:
    """Chunk numbers of ``record``'s audio deltas the server sent after time ``t``."""
    chunks: set[int] = set()
    for s in sim.sent:
        event = s.event
        if s.at > t and event.get("response_id") == record.id and "audio.delta" in event["type"]:
            for tag in find_audio_tags(base64.b64decode(event["delta"])):
                chunks.add(tag.chunk)
    return chunks


def assert_no_cancelled_audio_heard(sim: FakeRealtimeServer, caller: FakeTwilioCaller) -> None:
    """The caller hears no audio of a cancelled response after the ``clear`` that cut it, no
    audio the server generated after it accepted the cancel, and no stale (late) audio at all."""
    late = [t for t in caller.tags_received if t.tag.chunk == LATE_CHUNK]
    assert late == [], f"stale audio of a finished response reached the caller: {late}"
    for record in sim.responses:
        if record.status != "cancelled":
            continue
        assert record.cancel_requested_at is not None
        heard = [
            t
            for t in caller.tags_received
            if t.tag.ordinal == record.tag and t.tag.chunk != LATE_CHUNK
        ]
        after_cancel = audio_chunks_sent_after(sim, record, record.cancel_requested_at)
        leaked = sorted({t.tag.chunk for t in heard} & after_cancel)
        assert leaked == [], (
            f"response {record.tag} ({record.reason}): chunks {leaked} were generated after the "
            "server accepted the cancel, yet reached the caller"
        )
        if not heard:
            continue
        clear = next((c for c in caller.clears if c.at >= heard[0].at), None)
        assert clear is not None, (
            f"response {record.tag} was cancelled ({record.reason}) while the caller had its "
            "audio, but no clear followed"
        )
        after_clear = caller.tags_received_after(clear.at, record.tag)
        assert after_clear == [], (
            f"audio of cancelled response {record.tag} after its clear: {after_clear}"
        )


def assert_clean_end(report: CallReport, caller: FakeTwilioCaller) -> None:
    assert caller.violations == [], caller.violations
    assert report.end_reason == "telephony stop", report
    assert report.undelivered_texts == [], report
    assert report.bad_frames == {}, report


# --- waiting on facts ---------------------------------------------------------------------------


async def wait_playing(
    sim: FakeRealtimeServer, caller: FakeTwilioCaller, timeout: float = 10.0
) -> ResponseRecord:
    """The newest response, once it is in progress and the caller has received some of it."""
    found: list[ResponseRecord] = []

    def check() -> bool:
        if not sim.responses:
            return False
        record = sim.responses[-1]
        if record.finished or record.cancel_requested_at is not None:
            return False
        if len(chunks_heard(caller, record)) < PLAYING_CHUNKS:
            return False
        found.append(record)
        return True

    await caller.wait_until(check, timeout, "a response playing to the caller")
    return found[0]


async def wait_served(
    sim: FakeRealtimeServer, caller: FakeTwilioCaller, *, after: int, timeout: float = 10.0
) -> ResponseRecord:
    """The first response at index >= ``after`` that completed with every one of its audio
    chunks received by the caller."""
    found: list[ResponseRecord] = []

    def check() -> bool:
        for record in sim.responses[after:]:
            if (
                record.status == "completed"
                and record.audio_deltas > 0
                and len(chunks_heard(caller, record)) >= record.audio_deltas
            ):
                found.append(record)
                return True
        return False

    await caller.wait_until(check, timeout, f"a response after #{after} served to the caller")
    return found[0]


async def wait_finished(sim: FakeRealtimeServer, record: ResponseRecord) -> None:
    await sim.wait_until(lambda: record.finished, 5.0, f"response {record.tag} to end")


async def wait_log(
    caller: FakeTwilioCaller, caplog: pytest.LogCaptureFixture, needle: str, timeout: float = 5.0
) -> None:
    await caller.wait_until(
        lambda: any(needle in r.getMessage() for r in caplog.records), timeout, repr(needle)
    )


# --- barge-in storm -----------------------------------------------------------------------------


@pytest.mark.parametrize("server_creates", [False, True], ids=["app_creates", "server_creates"])
def test_barge_in_storm(server_creates: bool) -> None:
    """Every response is interrupted, by speech, typed text or both, six times in a row; then the
    last answer plays out.  No busy error, each text reaches the model once and in order, and the
    caller never hears a cancelled response after its clear."""
    rounds = ["speech", "text", "text_then_speech", "two_texts", "speech", "text"]

    async def scenario() -> None:
        sim = simulator()
        async with sim, bridge_server(sim, bridge_config(server_creates=server_creates)) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                interrupted: list[ResponseRecord] = []
                spoken = 0
                for number, kind in enumerate(rounds):
                    record = await wait_playing(sim, caller)
                    if kind in ("text", "text_then_speech", "two_texts"):
                        await caller.type_text(f"typed {number}")
                    if kind == "two_texts":
                        await caller.type_text(f"typed {number} again")
                    if kind in ("speech", "text_then_speech"):
                        await caller.speak(SPEECH_S)
                        # The turn is committed after the VAD's silence window, which on a
                        # loaded machine can outlast the next round: then that turn is answered
                        # after the "final" answer (rightly: every committed turn is answered),
                        # and the rounds no longer line up.  The next round waits for it.
                        spoken += 1
                        await sim.wait_until(
                            lambda n=spoken: committed(sim) >= n, 10.0, "the turn's commit"
                        )
                    await wait_finished(sim, record)
                    interrupted.append(record)
                last = sim.responses.index(interrupted[-1])
                final = await wait_served(sim, caller, after=last + 1)
            report = await bridge.report(sim)

        # On a loaded machine a response's generation (0.8 s) can end before the interrupt
        # lands: the caller still hears it cut (clear + truncate), but there is nothing left to
        # cancel, and a cancel already on its way when the response.done crossed it is
        # answered with the benign response_cancel_not_active.  Such a race is allowed; it must
        # not be the rule, and the server must have finished the response by itself.
        raced = [r for r in sim.responses if r is not final and r.status == "completed"]
        assert all(r in interrupted and r.cancel_requested_at is None for r in raced)
        assert len(raced) < len(interrupted)
        late_cancels = sim.error_counts.get("response_cancel_not_active", 0)
        assert late_cancels <= len(raced)
        assert sim.error_counts[BUSY] == 0
        assert set(sim.error_counts) <= {"response_cancel_not_active"}, sim.error_counts
        assert server_user_texts(sim) == typed(caller)
        assert len(typed(caller)) == 5
        # Every response was interrupted but the final one, which played out in full.
        assert len(sim.responses) > len(rounds)
        # Said in full when it fails (it has, once, on a loaded CI machine): what each response
        # was, why it was created, and what the bridge gave up.
        story = [(r.tag, r.origin, r.status, r.reason) for r in sim.responses]
        why = f"{story} creates={create_reasons(sim)} given_up={report.given_up}"
        assert all(
            r.status == "cancelled" for r in sim.responses if r is not final and r not in raced
        ), why
        assert final is sim.responses[-1], why
        assert all(chunks_heard(caller, r) for r in interrupted)
        assert_no_cancelled_audio_heard(sim, caller)
        # One cancel per response the bridge stopped, none for what the server stopped itself.
        client_cancelled = [r for r in sim.responses if r.reason == "client_cancelled"]
        cancels = len(sim.client_events("response.cancel"))
        assert cancels == len(client_cancelled) + late_cancels
        stopped = [r for r in sim.responses if r is not final and r not in raced]
        if server_creates:
            reasons = {r.reason for r in stopped}
            assert reasons <= {"client_cancelled", "turn_detected"}
            assert "client_cancelled" in reasons  # typed text: only the bridge can stop it
            assert raced or reasons == {"client_cancelled", "turn_detected"}
            # The server answers committed turns itself; one it skips (committed while the slot
            # was busy, as its docs allow) the bridge answers after server_turn_grace, never more.
            ours = sum("user_turn" in reason for reason in create_reasons(sim))
            theirs = sum(r.origin == "server_vad" for r in sim.responses)
            assert ours <= committed(sim) - theirs, (ours, theirs, committed(sim))
            assert any(r.origin == "server_vad" for r in sim.responses)
        else:
            assert all(r.origin == "client" for r in sim.responses)
            assert all(r.reason == "client_cancelled" for r in stopped)
        assert_clean_end(report, caller)
        # A create for typed text can be interrupted by the caller's speech before it is
        # answered (on a loaded machine the speech lands later): reported given up as such, and
        # the text is answered by the response to the speech, which reads it.
        assert all(g.reason == "interrupted" for g in report.given_up), report.given_up
        assert report.lifecycle_stats.get("texts_delivered") == 5
        # The message counters (the load benchmark's unit of work) agree with the records.
        assert sim.messages_sent == len(sim.sent) > 0
        assert sim.messages_received == len(sim.received) > 0
        assert caller.messages_sent == caller.media_sent + len(caller.sent)
        heard = len(caller.media_received) + len(caller.marks_received) + len(caller.clears)
        assert caller.messages_received == heard > 0

    run(scenario())


# --- silent response ----------------------------------------------------------------------------


def test_silent_response_watchdog_fires_once_then_retries_after_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A transcript without audio: the watchdog fires once, cancels, and creates its retry only
    after the silent response's ``response.done``; the retry is heard.  A second silent response
    inside the cooldown is left alone (no second fire, no cancel) and the call goes on."""
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    async def scenario() -> None:
        sim = simulator(short_replies)
        # Never ends by itself, and is slow to acknowledge the cancel: a retry sent before the
        # response.done would be rejected as busy.
        sim.fault_next_response(
            ResponseFaults(silent=True, hold_open_s=None, cancel_ack_delay_s=0.3)
        )
        async with sim, bridge_server(sim, bridge_config()) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                retry = await wait_served(sim, caller, after=1)
                await caller.wait_for_quiet(5.0)
                # Inside the 60 s cooldown: silent for longer than no_audio_timeout, then ends.
                sim.fault_next_response(ResponseFaults(silent=True, hold_open_s=1.0))
                await caller.type_text("Are you still there?")
                await sim.wait_until(
                    lambda: len(sim.responses) >= 3 and sim.responses[2].finished,
                    5.0,
                    "the second silent response to end",
                )
                await caller.type_text("Hello?")
                after = await wait_served(sim, caller, after=3)
            report = await bridge.report(sim)

        silent, second_silent = sim.responses[0], sim.responses[2]
        assert retry is sim.responses[1] and after is sim.responses[3]
        fired = [
            r.getMessage() for r in caplog.records if "[NO_AUDIO_WATCHDOG] FIRED!" in r.getMessage()
        ]
        assert len(fired) == 1 and f"resp={silent.id}" in fired[0], fired
        assert report.lifecycle_stats.get("watchdog_fires") == 1
        assert report.lifecycle_stats.get("watchdog_suppressed") == 1
        assert any("not retried: inside the" in r.getMessage() for r in caplog.records)

        # The first silent response was cancelled by the watchdog and retried after its done.
        assert silent.status == "cancelled" and silent.reason == "client_cancelled"
        assert silent.audio_deltas == 0 and silent.text_deltas > 0
        done_sent_at = next(
            at for at, e in sent_at(sim, "response.done") if e["response"]["id"] == silent.id
        )
        creates = received_at(sim, "response.create")
        retry_creates = [
            at for at, e in creates if e["response"]["metadata"][REASON_KEY] == "no_audio_retry"
        ]
        assert len(retry_creates) == 1
        assert retry_creates[0] > done_sent_at, "the retry was sent before the silent response.done"
        assert not [at for at, _ in creates if silent.created_at < at < done_sent_at]
        assert retry.metadata is not None and retry.metadata[REASON_KEY] == "no_audio_retry"
        assert retry.audio_deltas > 0  # audio resumed, and the caller received all of it

        # The second one ran its course: nobody cancelled it.
        assert second_silent.status == "completed" and second_silent.audio_deltas == 0
        assert second_silent.cancel_requested_at is None
        assert len(sim.client_events("response.cancel")) == 1
        assert sim.error_counts == {}, sim.error_counts
        assert server_user_texts(sim) == typed(caller)
        assert_clean_end(report, caller)
        assert report.given_up == []

    run(scenario())


# --- the server goes quiet ----------------------------------------------------------------------


def test_server_quiet_after_create_recovers_through_the_timeouts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A swallowed ``response.create`` (no created, no error): at the create timeout it is sent
    once more, under a new event id, and served.  Text typed while a swallowed create is in
    flight interrupts it (its request given up, nothing to cancel): the wait for its answer ends
    at the create timeout, and the held text is delivered once and answered."""
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    async def scenario() -> None:
        sim = simulator(short_replies)
        # The caller's "three" must reach the bridge while the swallowed create is unanswered:
        # a create timeout of 2 s leaves a loaded machine room for that one hop.
        config = bridge_config(greeting=None, create_timeout=2.0, cancel_timeout=0.4)
        async with sim, bridge_server(sim, config) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                await sim.wait_for_event("session.updated")
                # 1. The create is swallowed; nothing else is going on: sent once more.
                sim.fault_next_response(ResponseFaults(ignore_create=True))
                await caller.type_text("one")
                await wait_log(caller, caplog, "sent once more")
                first = await wait_served(sim, caller, after=0)
                await caller.wait_for_quiet(5.0)
                # 2. Swallowed again, and the caller types while it is in flight.
                sim.fault_next_response(ResponseFaults(ignore_create=True))
                creates = len(sim.client_events("response.create"))
                await caller.type_text("two")
                await sim.wait_until(
                    lambda: len(sim.client_events("response.create")) == creates + 1,
                    5.0,
                    "the swallowed create",
                )
                await caller.type_text("three")
                second = await wait_served(sim, caller, after=1)
            report = await bridge.report(sim)

        assert [first, second] == sim.responses
        assert server_user_texts(sim) == ["one", "two", "three"]
        assert [g.reason for g in report.given_up] == ["interrupted"]
        assert report.lifecycle_stats.get("creates_resent") == 1
        assert report.lifecycle_stats.get("texts_held") == 1
        # Nothing was ever created for the swallowed creates, so there was nothing to cancel.
        assert sim.client_events("response.cancel") == []
        assert create_reasons(sim) == ["user_text"] * 4
        assert sim.error_counts == {}, sim.error_counts
        assert_clean_end(report, caller)

    run(scenario())


def test_server_quiet_after_cancel_recovers_through_the_cancel_timeout() -> None:
    """``response.done`` of a cancelled response never comes (the server freed its slot
    silently): the cancel timeout ends the wait, held text is delivered once, and both a typed
    and a spoken barge-in are answered."""

    async def scenario() -> None:
        sim = simulator(short_replies)
        sim.fault_next_response(ResponseFaults(drop_done=True))
        async with sim, bridge_server(sim, bridge_config(cancel_timeout=0.6)) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                # 1. Text barge-in on the greeting, whose done is lost.
                greeting = await wait_playing(sim, caller)
                await caller.type_text("one")
                answer = await wait_served(sim, caller, after=1)
                await caller.wait_for_quiet(5.0)
                # 2. Speech barge-in on a response whose done is lost, and text typed meanwhile.
                sim.fault_next_response(ResponseFaults(drop_done=True))
                await caller.type_text("two")
                spoken_over = await wait_playing(sim, caller)
                await caller.speak(SPEECH_S)
                await sim.wait_until(lambda: spoken_over.cancel_requested_at is not None, 5.0)
                await caller.type_text("three")
                last = await wait_served(sim, caller, after=sim.responses.index(spoken_over) + 1)
            report = await bridge.report(sim)

        assert greeting.status == "cancelled" and not greeting.done_sent
        assert spoken_over.status == "cancelled" and not spoken_over.done_sent
        assert sim.responses == [greeting, answer, spoken_over, last]
        assert server_user_texts(sim) == ["one", "two", "three"]
        assert report.lifecycle_stats.get("cancel_timeouts") == 2
        assert report.lifecycle_stats.get("texts_held") == 2
        # The turn and the held text were answered together, once.
        assert create_reasons(sim)[-1] in ("user_text+user_turn", "user_turn+user_text")
        assert_no_cancelled_audio_heard(sim, caller)
        assert sim.error_counts == {}, sim.error_counts
        assert_clean_end(report, caller)
        assert report.given_up == []

    run(scenario())


def test_cancel_acknowledged_after_the_cancel_timeout() -> None:
    """The server acknowledges a cancel only after the bridge stopped waiting for it.  The
    bridge's next create is (unavoidably) rejected as busy, but the late ``response.done`` of
    the response that holds the slot must free it: the held text is answered right after."""

    async def scenario() -> None:
        sim = simulator(short_replies)
        sim.fault_next_response(ResponseFaults(cancel_ack_delay_s=1.0))
        config = bridge_config(cancel_timeout=0.3, stall_timeout=30.0)
        async with sim, bridge_server(sim, config) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                greeting = await wait_playing(sim, caller)
                await caller.type_text("one")
                await sim.wait_until(lambda: greeting.finished, 5.0)
                # Well before stall_timeout: the late done is what frees the slot.
                await wait_served(sim, caller, after=1, timeout=3.0)
            report = await bridge.report(sim)

        assert server_user_texts(sim) == ["one"]
        # Each create after a cancel timeout cannot know better: the busy error it earns proves
        # the response alive, which is cancelled again and waited for, one cancel_timeout per
        # round (the acknowledgement takes 1.0 s, the timeout is 0.3 s).
        assert 1 <= sim.error_counts[BUSY] <= 4
        assert sim.error_counts["response_cancel_not_active"] == 0
        assert "stalled_responses" not in report.lifecycle_stats
        assert_clean_end(report, caller)

    run(scenario())

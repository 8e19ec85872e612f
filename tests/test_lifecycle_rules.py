"""Example tests: the four rules, the seed scenarios and every race of openai-realtime.md 8.4.

Each test plays the server's part by hand and checks the commands that come out, plus the
machine's own invariants after every step (``Driver.feed``).
"""

from __future__ import annotations

import logging

import attrs
import pytest

from realtime_fsm import (
    META_EVENT_ID,
    ClearPlayback,
    Command,
    DropResponseAudio,
    LifecycleConfig,
    PlaybackProgress,
    RequestGivenUp,
    RequestResponse,
    ResponseCreated,
    ResponseDone,
    ResponseLifecycle,
    ResponseState,
    SendItemDelete,
    SendResponseCancel,
    SendResponseCreate,
    SendTruncate,
    SendUserText,
    ServerError,
    SessionConfigured,
    SpeechStarted,
    Tick,
    UserText,
    UserTurnCommitted,
)
from realtime_fsm.events import Event
from realtime_fsm.table import CreateState

IDLE = ResponseState.IDLE
CREATING = ResponseState.CREATING
ACTIVE = ResponseState.ACTIVE
CANCELLING = ResponseState.CANCELLING
CLOSED = ResponseState.CLOSED

BUSY_MSG = (
    "Conversation already has an active response in progress: {rid}. Wait until the response"
    " is finished before creating a new one."
)


class Driver:
    """A machine plus a clock, checking the invariants after every event."""

    def __init__(self, **cfg: object) -> None:
        self.now = 0.0
        self.m = ResponseLifecycle(LifecycleConfig(**cfg), now=0.0)  # type: ignore[arg-type]
        self.log: list[Command] = []

    def feed(self, event: Event, dt: float = 0.01) -> list[Command]:
        self.now += dt
        out = self.m.handle(event, self.now)
        self.log.extend(out)
        assert self.m.check_invariants() == [], self.m.check_invariants()
        return out

    def at(self, t: float, event: Event) -> list[Command]:
        self.now = t
        return self.feed(event, dt=0.0)

    def tick_to_deadline(self) -> list[Command]:
        deadline = self.m.next_deadline
        assert deadline is not None
        return self.at(max(deadline, self.now), Tick())

    def audio(self, rid: str, item: str = "item_1", nbytes: int = 160) -> bool:
        self.now += 0.02
        return self.m.audio_delta(rid, item, nbytes, self.now)

    def created(self, out: list[Command], rid: str) -> list[Command]:
        """The server answers the create found in ``out``."""
        create = only(out, SendResponseCreate)
        return self.feed(ResponseCreated(rid, metadata={META_EVENT_ID: create.event_id}))

    def start_response(self, rid: str = "resp_1") -> SendResponseCreate:
        out = self.feed(RequestResponse())
        create = only(out, SendResponseCreate)
        self.created(out, rid)
        assert self.m.state is ACTIVE and self.m.response_id == rid
        return create


def of(out: list[Command], kind: type) -> list[object]:
    return [c for c in out if isinstance(c, kind)]


def only(out: list[Command], kind: type[Command]) -> Command:  # type: ignore[misc]
    found = of(out, kind)
    assert len(found) == 1, (kind, out)
    return found[0]  # type: ignore[return-value]


# ------------------------------------------------------------------ rule 1: single response


def test_create_only_leaves_idle_and_requests_are_coalesced() -> None:
    d = Driver()
    d.start_response("resp_1")
    assert d.feed(RequestResponse(reason="tool_output")) == []
    assert d.feed(RequestResponse(reason="nudge")) == []
    assert d.m.state is ACTIVE
    out = d.feed(ResponseDone("resp_1"))
    create = only(out, SendResponseCreate)
    assert create.reason == "tool_output+nudge"
    assert create.metadata[META_EVENT_ID] == create.event_id
    assert d.m.state is CREATING


def test_requests_with_their_own_instructions_are_not_merged() -> None:
    d = Driver()
    d.start_response("resp_1")
    d.feed(RequestResponse(reason="a", instructions="Say A"))
    d.feed(RequestResponse(reason="b", instructions="Say B"))
    d.feed(RequestResponse(reason="plain"))
    first = only(d.feed(ResponseDone("resp_1")), SendResponseCreate)
    assert first.instructions == "Say A" and first.reason == "a+plain"
    d.created([first], "resp_2")
    second = only(d.feed(ResponseDone("resp_2")), SendResponseCreate)
    assert second.instructions == "Say B"


def test_request_during_cancelling_waits_for_response_done() -> None:
    """Race 5: a create after the cancel but before its done would be rejected."""
    d = Driver()
    d.start_response("resp_1")
    out = d.feed(SpeechStarted())
    assert of(out, SendResponseCancel)
    assert d.m.state is CANCELLING
    assert d.feed(RequestResponse(reason="tool_output")) == []
    out = d.feed(ResponseDone("resp_1", status="cancelled", reason="client_cancelled"))
    assert only(out, SendResponseCreate).reason == "tool_output"


def test_user_turn_committed_requests_unless_server_creates() -> None:
    d = Driver()
    assert of(d.feed(UserTurnCommitted("item_u1")), SendResponseCreate)
    d2 = Driver()
    d2.feed(SessionConfigured("server_vad", create_response=True, interrupt_response=True))
    assert d2.feed(UserTurnCommitted("item_u1")) == []
    assert d2.m.state is IDLE


# ------------------------------------------------------------------------ rule 2: barge-in


def test_seed_scenario_1_text_barge_in(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="realtime_fsm")
    d = Driver(log_caller_content=True)  # the seed's log shows the typed text
    d.start_response("resp_abc123")
    for _ in range(10):
        assert d.audio("resp_abc123", "item_a1")
    d.feed(PlaybackProgress("item_a1", 120))
    out = d.feed(UserText("שלום"))
    assert [type(c) for c in out] == [
        SendResponseCancel,
        ClearPlayback,
        SendTruncate,
        DropResponseAudio,
    ]
    assert only(out, SendResponseCancel).response_id == "resp_abc123"
    assert only(out, SendTruncate).audio_end_ms == 120
    assert not of(out, SendUserText), "text must wait for response.done"
    assert d.audio("resp_abc123", "item_a1") is False
    out = d.feed(ResponseDone("resp_abc123", status="cancelled"))
    assert [type(c) for c in out] == [SendUserText, SendResponseCreate]
    assert only(out, SendUserText).text == "שלום"
    text = caplog.text
    assert "[TEXT_BARGE_IN] detected -> text='שלום' while AI active" in text
    assert "[TEXT_BARGE_IN] Pending text stored" in text
    assert (
        "[TEXT_BARGE_IN] Flow complete: detected -> cancel -> twilio_clear -> response.done"
        " -> response.create" in text
    )


def test_several_texts_during_one_cancellation_are_delivered_once_in_order() -> None:
    d = Driver()
    d.start_response("resp_1")
    d.feed(UserText("one"))
    d.feed(UserText("two"))
    d.feed(UserText("three"))
    assert not of(d.log, SendUserText)
    out = d.feed(ResponseDone("resp_1", status="cancelled"))
    assert [c.text for c in of(out, SendUserText)] == ["one", "two", "three"]  # type: ignore[attr-defined]
    assert len(of(out, SendResponseCreate)) == 1
    assert len(of(d.log, SendResponseCancel)) == 1, "one cancel for one response"


def test_text_in_idle_is_sent_at_once_with_a_response() -> None:
    d = Driver()
    out = d.feed(UserText("hello"))
    assert [type(c) for c in out] == [SendUserText, SendResponseCreate]


def test_truncate_is_clamped_to_audio_received() -> None:
    # The response is still generating: the server has made audio past what reached us, so an
    # item the caller heard in full (by marks that overshoot, as wall-clock estimates do) is
    # still cut, at what was received, never at the overshooting mark.
    d = Driver()
    d.start_response("resp_1")
    for _ in range(5):  # 100 ms received
        d.audio("resp_1", "item_1")
    d.feed(PlaybackProgress("item_1", 60))
    d.m.playback_progress("item_1", 400)  # a mark count that overshoots what was received
    out = d.feed(SpeechStarted())
    assert only(out, SendTruncate).audio_end_ms == 100
    # Odd chunk sizes: 805 bytes = 100.6 ms, floored to whole ms.
    d2 = Driver()
    d2.start_response("resp_1")
    for _ in range(5):
        d2.audio("resp_1", "item_1", nbytes=161)
    d2.feed(PlaybackProgress("item_1", 100))
    out = d2.feed(SpeechStarted())
    assert only(out, SendTruncate).audio_end_ms == 100
    # Once the response is over, an item heard in full has nothing unheard: no cut at all.
    d3 = Driver()
    d3.start_response("resp_1")
    for _ in range(5):
        d3.audio("resp_1", "item_1")
    d3.feed(ResponseDone("resp_1"))
    d3.m.playback_progress("item_1", 400)
    out = d3.feed(SpeechStarted())
    assert not of(out, SendTruncate) and not of(out, SendItemDelete)


def test_server_interrupt_response_means_no_client_cancel() -> None:
    d = Driver()
    d.feed(SessionConfigured("server_vad", create_response=True, interrupt_response=True))
    d.start_response("resp_1")
    d.audio("resp_1")
    out = d.feed(SpeechStarted())
    assert not of(out, SendResponseCancel)
    assert of(out, ClearPlayback) and of(out, DropResponseAudio)
    assert d.m.state is CANCELLING
    d.feed(ResponseDone("resp_1", status="cancelled", reason="turn_detected"))
    assert d.m.state is IDLE


def test_playback_outlives_generation_barge_in_in_idle() -> None:
    """Race 8: the response is done, the caller still hears it: clear + truncate, no cancel."""
    d = Driver()
    d.start_response("resp_1")
    for _ in range(50):  # 1 s of audio
        d.audio("resp_1", "item_1")
    d.feed(ResponseDone("resp_1"))
    assert d.m.state is IDLE and d.m.caller_hearing
    d.feed(PlaybackProgress("item_1", 300))
    out = d.feed(SpeechStarted())
    assert [type(c) for c in out] == [ClearPlayback, SendTruncate]
    assert only(out, SendTruncate).audio_end_ms == 300
    assert not d.m.caller_hearing
    assert d.feed(SpeechStarted()) == [], "nothing left to interrupt"


def test_fully_played_audio_is_not_interrupted() -> None:
    d = Driver()
    d.start_response("resp_1")
    for _ in range(5):
        d.audio("resp_1", "item_1")
    d.feed(ResponseDone("resp_1"))
    d.feed(PlaybackProgress("item_1", 100))
    assert not d.m.caller_hearing
    assert d.feed(SpeechStarted()) == []


def test_multiple_items_truncate_the_heard_one_and_delete_the_unheard() -> None:
    """Race 9: several audio items; only what was heard stays in the conversation."""
    d = Driver()
    d.start_response("resp_1")
    for _ in range(5):
        d.audio("resp_1", "item_1")
    for _ in range(5):
        d.audio("resp_1", "item_2")
    d.feed(PlaybackProgress("item_1", 40))
    out = d.feed(SpeechStarted())
    assert only(out, SendTruncate).item_id == "item_1"
    assert only(out, SendItemDelete).item_id == "item_2"


def test_barge_in_before_created_cancels_by_id_when_it_arrives() -> None:
    """Race 4: a cancel while the create is pending would be a no-op error."""
    d = Driver()
    out = d.feed(RequestResponse())
    out2 = d.feed(UserText("wait"))
    assert not of(out2, SendResponseCancel)
    assert d.m.state is CANCELLING
    out3 = d.created(out, "resp_1")
    assert only(out3, SendResponseCancel).response_id == "resp_1"
    assert of(out3, DropResponseAudio)
    assert d.audio("resp_1") is False
    out4 = d.feed(ResponseDone("resp_1", status="cancelled"))
    assert [c.text for c in of(out4, SendUserText)] == ["wait"]  # type: ignore[attr-defined]


def test_barge_in_before_created_then_create_rejected() -> None:
    d = Driver()
    out = d.feed(RequestResponse())
    event_id = only(out, SendResponseCreate).event_id
    out = d.feed(UserText("hi"))
    # The caller interrupted what the create asked for: the app hears it is given up now.
    given_up = only(out, RequestGivenUp)
    assert given_up.reason == "interrupted" and given_up.request_reasons == ("app",)
    out = d.feed(ServerError(code="invalid_value", message="bad", event_id=event_id))
    assert d.m.state is CREATING
    assert not of(out, RequestGivenUp) and [c.text for c in of(out, SendUserText)] == ["hi"]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ rule 3: no-audio watchdog


def silent_response(d: Driver, rid: str, deltas: int = 3) -> None:
    for _ in range(deltas):
        d.now += 0.05
        d.m.transcript_delta(rid, d.now)


def test_seed_scenario_2_watchdog(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="realtime_fsm")
    d = Driver(no_audio_timeout=2.0)
    d.start_response("resp_abc123")
    silent_response(d, "resp_abc123")
    out = d.tick_to_deadline()
    assert [type(c) for c in out] == [SendResponseCancel, DropResponseAudio]
    assert d.m.state is CANCELLING
    assert not of(out, SendResponseCreate), "the retry waits for response.done"
    out = d.feed(ResponseDone("resp_abc123", status="cancelled"))
    retry = only(out, SendResponseCreate)
    assert retry.reason == "no_audio_retry"
    d.created(out, "resp_retry")
    assert d.audio("resp_retry")
    d.feed(ResponseDone("resp_retry"))
    text = caplog.text
    assert "[NO_AUDIO_WATCHDOG] FIRED! resp=resp_abc123 transcript_deltas=3 audio_deltas=0" in text
    assert "[NO_AUDIO_WATCHDOG] Recovery result: success" in text


def test_watchdog_rechecks_elapsed_time_on_early_ticks() -> None:
    d = Driver(no_audio_timeout=2.0)
    d.start_response("resp_1")
    silent_response(d, "resp_1")
    assert d.feed(Tick(), dt=0.1) == []
    assert d.m.state is ACTIVE


def test_watchdog_never_fires_for_audio_text_only_or_function_calls() -> None:
    d = Driver(no_audio_timeout=1.0)
    d.start_response("resp_1")
    silent_response(d, "resp_1")
    d.audio("resp_1")
    d.at(d.now + 5, Tick())
    assert d.m.stats.get("watchdog_fires") is None
    # text-only response: never armed
    d2 = Driver(no_audio_timeout=1.0)
    out = d2.feed(RequestResponse())
    create = only(out, SendResponseCreate)
    d2.feed(
        ResponseCreated(
            "resp_t", metadata={META_EVENT_ID: create.event_id}, output_modalities=["text"]
        )
    )
    silent_response(d2, "resp_t")
    d2.at(d2.now + 5, Tick())
    assert d2.m.stats.get("watchdog_fires") is None
    # function call: no transcript at all, so nothing to fire on
    d3 = Driver(no_audio_timeout=1.0)
    d3.start_response("resp_f")
    d3.m.touch("resp_f", d3.now + 1)
    d3.at(d3.now + 5, Tick())
    assert d3.m.stats.get("watchdog_fires") is None


def test_watchdog_cooldown_and_single_retry() -> None:
    d = Driver(no_audio_timeout=1.0, watchdog_cooldown=12.0)
    d.start_response("resp_1")
    silent_response(d, "resp_1")
    d.tick_to_deadline()
    fired_at = d.now
    out = d.feed(ResponseDone("resp_1", status="cancelled"))
    d.created(out, "resp_retry")
    silent_response(d, "resp_retry")  # the retry is silent too: never retried again
    d.at(d.now + 3, Tick())
    assert d.m.stats["watchdog_fires"] == 1 and d.m.state is ACTIVE
    d.feed(ResponseDone("resp_retry"))
    # A new silent response inside the cooldown: suppressed, not fired.
    d.start_response("resp_2")
    silent_response(d, "resp_2")
    d.at(d.now + 2, Tick())
    assert d.now - fired_at < 12
    assert d.m.stats["watchdog_fires"] == 1 and d.m.stats["watchdog_suppressed"] == 1
    d.feed(ResponseDone("resp_2"))
    # After the cooldown, a silent response fires again.
    d.at(fired_at + 13, RequestResponse())
    out = d.log[-1:]
    d.created(out, "resp_3")
    silent_response(d, "resp_3")
    d.tick_to_deadline()
    assert d.m.stats["watchdog_fires"] == 2


# ------------------------------------------------------------------ rule 4: clean recovery


def test_create_timeout_retries_once_then_returns_to_idle_and_reports() -> None:
    d = Driver(create_timeout=5.0)
    first = only(d.feed(RequestResponse(reason="greeting")), SendResponseCreate)
    out = d.tick_to_deadline()  # swallowed: sent once more, under a new event id
    again = only(out, SendResponseCreate)
    assert d.m.state is CREATING and again.event_id != first.event_id
    assert again.reason == "greeting" and again.metadata[META_EVENT_ID] == again.event_id
    assert not of(out, RequestGivenUp) and d.m.stats["creates_resent"] == 1
    out = d.tick_to_deadline()
    assert d.m.state is IDLE
    given_up = only(out, RequestGivenUp)
    assert given_up.reason == "create_timeout" and given_up.request_reasons == ("greeting",)
    assert given_up.event_id == again.event_id


SESSION_CREATED = SessionConfigured("server_vad", create_response=False, interrupt_response=False)


def test_a_create_sent_while_the_socket_opens_is_timed_from_session_created() -> None:
    """The greeting goes out with Twilio's ``start``, before the OpenAI socket is open: no
    answer can come before ``session.created``, the server's first event, so the create's wait
    counts from there.  Found by the soak on a loaded machine: the connect took most of
    ``create_timeout``, the caller typed over the greeting, and the machine gave the
    greeting up at once (its deadline had passed while connecting), sent the text's create
    and hit the greeting's response, answered 0.7 s after session.created, in the slot."""
    d = Driver(create_timeout=1.0, cancel_timeout=1.0)
    greeting = only(d.at(0.0, RequestResponse(reason="greeting")), SendResponseCreate)
    assert d.at(0.9, SESSION_CREATED) == []  # the socket took 0.9 s to open
    assert d.m.next_deadline == pytest.approx(1.9)
    assert d.at(1.0, Tick()) == [] and d.m.create_state is CreateState.SENT  # not resent
    d.at(1.2, UserText("hello?"))  # typed over the greeting not answered yet: held
    assert d.m.state is CANCELLING and d.m.next_deadline == pytest.approx(1.9)
    assert d.at(1.3, Tick()) == [] and d.m.state is CANCELLING  # not abandoned
    out = d.at(1.6, ResponseCreated("resp_1", metadata={META_EVENT_ID: greeting.event_id}))
    assert only(out, SendResponseCancel).response_id == "resp_1"  # never heard
    assert not of(out, SendResponseCreate)  # the slot is the greeting's until its done
    out = d.at(1.7, ResponseDone("resp_1", status="cancelled"))
    assert [type(c) for c in out] == [SendUserText, SendResponseCreate]
    # Only session.created restarts the wait: session.updated answers our update on a session
    # that was already reading.
    d = Driver(create_timeout=1.0)
    d.at(0.0, RequestResponse(reason="greeting"))
    d.at(0.9, attrs.evolve(SESSION_CREATED, updated=True))
    assert d.m.next_deadline == pytest.approx(1.0)


def test_cancel_timeout_returns_to_idle_and_delivers_held_text() -> None:
    d = Driver(cancel_timeout=5.0)
    d.start_response("resp_1")
    d.feed(UserText("are you there?"))
    out = d.tick_to_deadline()
    assert [type(c) for c in out] == [SendUserText, SendResponseCreate]
    assert d.m.state is CREATING
    # The late done of the abandoned response changes nothing.
    assert d.feed(ResponseDone("resp_1", status="cancelled")) == []
    assert d.m.state is CREATING


def test_stalled_active_response_is_cancelled() -> None:
    d = Driver(stall_timeout=20.0)
    d.start_response("resp_1")
    out = d.tick_to_deadline()
    assert of(out, SendResponseCancel) and d.m.state is CANCELLING
    d.tick_to_deadline()
    assert d.m.state is IDLE


def test_idle_holds_nothing_after_any_response() -> None:
    d = Driver()
    d.start_response("resp_1")
    silent_response(d, "resp_1")
    d.audio("resp_1")
    d.feed(ResponseDone("resp_1"))
    m = d.m
    assert m.state is IDLE and m.response_id is None and m.inflight is None
    assert m.audio_deltas == 0 and m.transcript_deltas == 0 and not m.response_is_retry

"""Example tests of the response lifecycle: every race of the Realtime protocol (openai-realtime.md
8.4), API misuse, and the fixes found end to end.  The ``Driver`` is test_lifecycle_rules'.
"""

from __future__ import annotations

import pytest
from test_lifecycle_rules import (
    ACTIVE,
    BUSY_MSG,
    CANCELLING,
    CLOSED,
    CREATING,
    IDLE,
    Driver,
    of,
    only,
)

from realtime_fsm import (
    META_EVENT_ID,
    ConnectionClosed,
    DropResponseAudio,
    LifecycleConfig,
    LocalProtocolError,
    PlaybackProgress,
    RequestGivenUp,
    RequestResponse,
    ResponseCreated,
    ResponseDone,
    ResponseLifecycle,
    ResponseState,
    ReturnUndeliveredText,
    SendResponseCancel,
    SendResponseCreate,
    SendUserText,
    ServerError,
    SessionConfigured,
    SpeechStarted,
    Tick,
    UserText,
    UserTurnCommitted,
)

# --------------------------------------------------------------------- races of section 8.4


def test_race1_stale_and_unknown_done_are_ignored() -> None:
    d = Driver()
    d.start_response("resp_1")
    d.feed(ResponseDone("resp_1"))
    d.start_response("resp_2")
    assert d.feed(ResponseDone("resp_1")) == []
    assert d.feed(ResponseDone("resp_unknown")) == []
    assert d.m.state is ACTIVE and d.m.response_id == "resp_2"
    assert d.m.stats["stale_done"] == 2


def test_race1_duplicate_created_is_ignored() -> None:
    d = Driver()
    d.start_response("resp_1")
    assert d.feed(ResponseCreated("resp_1")) == []
    d.feed(ResponseDone("resp_1"))
    assert d.feed(ResponseCreated("resp_1")) == []
    assert d.m.state is IDLE


def test_race2_server_created_response_takes_the_slot_and_ours_is_requeued() -> None:
    d = Driver()
    out = d.feed(RequestResponse(reason="tool_output"))
    create = only(out, SendResponseCreate)
    d.feed(ResponseCreated("resp_vad"))  # server VAD beat us
    assert d.m.state is ACTIVE and d.m.response_id == "resp_vad"
    busy = BUSY_MSG.format(rid="resp_vad")
    out = d.feed(
        ServerError("conversation_already_has_active_response", busy, event_id=create.event_id)
    )
    assert out == [] and d.m.state is ACTIVE
    out = d.feed(ResponseDone("resp_vad"))
    assert only(out, SendResponseCreate).reason == "tool_output"


def test_race2_server_response_then_ours_accepted_after_it() -> None:
    """The server response finished before our create reached the server: ours is created."""
    d = Driver()
    out = d.feed(RequestResponse())
    d.feed(ResponseCreated("resp_vad"))
    assert d.feed(ResponseDone("resp_vad")) == []
    assert d.m.state is CREATING
    d.created(out, "resp_ours")
    assert d.m.state is ACTIVE and d.m.response_id == "resp_ours"


def test_race2_server_response_in_idle() -> None:
    d = Driver()
    d.feed(ResponseCreated("resp_vad"))
    assert d.m.state is ACTIVE
    assert d.audio("resp_vad")
    d.feed(ResponseDone("resp_vad"))
    assert d.m.state is IDLE


def test_busy_rejection_without_an_earlier_created_is_requeued_not_lost() -> None:
    d = Driver()
    out = d.feed(RequestResponse(reason="greeting"))
    event_id = only(out, SendResponseCreate).event_id
    busy = BUSY_MSG.format(rid="resp_hidden")
    d.feed(ServerError("conversation_already_has_active_response", busy, event_id=event_id))
    assert d.m.state is ACTIVE and d.m.response_id == "resp_hidden"
    out = d.feed(ResponseDone("resp_hidden"))
    assert only(out, SendResponseCreate).reason == "greeting"


def test_race13_busy_error_with_null_event_id_matches_the_pending_create() -> None:
    d = Driver()
    d.feed(RequestResponse(reason="greeting"))
    d.feed(ServerError(None, "Conversation already has an active response", event_id=None))
    assert d.m.state is ACTIVE and d.m.response_id is None
    # The unknown busy response: its id is learnt from its next event.
    assert d.audio("resp_x") is True
    out = d.feed(ResponseDone("resp_x"))
    assert only(out, SendResponseCreate).reason == "greeting"


def test_race3_cancel_racing_completion_accepts_completed() -> None:
    d = Driver()
    d.start_response("resp_1")
    out = d.feed(UserText("stop"))
    cancel = only(out, SendResponseCancel)
    out = d.feed(ResponseDone("resp_1", status="completed"))
    assert d.m.state is CREATING and of(out, SendUserText)
    d.feed(
        ServerError(
            "response_cancel_not_active",
            "Cancellation failed: no active response found",
            event_id=cancel.event_id,
        )
    )
    assert d.m.state is CREATING and d.m.stats["benign_errors"] == 1


def test_race6_vad_auto_cancel_plus_client_cancel_is_benign() -> None:
    d = Driver()
    d.start_response("resp_1")
    out = d.feed(SpeechStarted())
    cancel = only(out, SendResponseCancel)
    d.feed(ResponseDone("resp_1", status="cancelled", reason="turn_detected"))
    d.feed(ServerError("response_cancel_not_active", "Cancellation failed", cancel.event_id))
    assert d.m.state is IDLE and d.m.stats["benign_errors"] == 1


def test_race7_deltas_after_interrupt_are_dropped_and_counted() -> None:
    d = Driver()
    d.start_response("resp_1")
    d.feed(SpeechStarted())
    assert d.audio("resp_1") is False
    d.feed(ResponseDone("resp_1", status="cancelled"))
    assert d.audio("resp_1") is False
    assert d.audio("resp_never_seen") is False
    assert d.m.stats["dropped_audio_deltas"] == 2
    assert d.m.stats["unknown_audio_deltas"] == 1


def test_race10_tool_turn_coalesces_with_a_racing_vad_response() -> None:
    d = Driver()
    d.start_response("resp_tool")
    d.feed(ResponseDone("resp_tool"))
    d.feed(ResponseCreated("resp_vad"))  # VAD response raced in before the tool output
    assert d.feed(RequestResponse(reason="function_call_output")) == []
    out = d.feed(ResponseDone("resp_vad"))
    assert only(out, SendResponseCreate).reason == "function_call_output"


def test_race12_out_of_band_responses_never_block_the_slot() -> None:
    d = Driver()
    d.start_response("resp_main")
    out = d.feed(RequestResponse(reason="classify", out_of_band=True))
    oob = only(out, SendResponseCreate)
    assert oob.out_of_band
    d.feed(ResponseCreated("resp_oob", out_of_band=True, metadata=dict(oob.metadata)))
    assert d.m.state is ACTIVE and d.m.response_id == "resp_main"
    d.feed(ResponseDone("resp_oob"))
    assert d.m.state is ACTIVE
    d.feed(ResponseDone("resp_main"))
    assert d.m.state is IDLE


def test_race14_close_hands_back_texts_and_gives_up_requests() -> None:
    d = Driver()
    d.start_response("resp_1")
    d.feed(UserText("one"))
    d.feed(UserText("two"))
    d.feed(RequestResponse(reason="tool_output"))
    out = d.feed(ConnectionClosed("twilio stop"))
    assert only(out, ReturnUndeliveredText).texts == ("one", "two")
    assert only(out, RequestGivenUp).request_reasons[-1] == "tool_output"
    assert d.m.state is CLOSED
    assert d.feed(ConnectionClosed()) == []
    with pytest.raises(LocalProtocolError):
        d.feed(UserText("too late"))
    assert d.audio("resp_1") is False


def test_lost_done_is_recovered_when_a_newer_response_appears() -> None:
    d = Driver()
    d.start_response("resp_1")
    d.feed(ResponseCreated("resp_2"))
    assert d.m.response_id == "resp_2" and d.m.stats["lost_done"] == 1


# --------------------------------------------------------------------------- API misuse


def test_time_must_not_go_backwards() -> None:
    m = ResponseLifecycle(now=10.0)
    with pytest.raises(LocalProtocolError):
        m.handle(Tick(), now=9.0)


def test_unknown_event_types_are_a_typed_error() -> None:
    m = ResponseLifecycle()
    with pytest.raises(LocalProtocolError, match=r"^not a lifecycle event: 'response\.done'$"):
        m.handle("response.done", now=1.0)  # type: ignore[arg-type]


def test_events_validate_their_fields() -> None:
    with pytest.raises(TypeError):
        ResponseDone(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        UserText("   ")
    with pytest.raises(TypeError):
        ResponseCreated("resp_1", metadata={"k": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        PlaybackProgress("item", -5)


# ------------------------------------------------------------- fixes found end to end


def test_server_vad_turn_committed_while_busy_is_not_raced_by_our_create() -> None:
    """With create_response on, the server answers a turn committed during a response as soon
    as the slot frees: the held text waits for that response instead of racing it."""
    d = Driver()
    d.feed(SessionConfigured("server_vad", create_response=True, interrupt_response=True))
    d.start_response("resp_1")
    d.feed(UserText("typed"))
    d.feed(UserTurnCommitted("item_u1"))  # the caller also spoke
    out = d.feed(ResponseDone("resp_1", status="cancelled"))
    assert [c.text for c in of(out, SendUserText)] == ["typed"]  # type: ignore[attr-defined]
    assert not of(out, SendResponseCreate), "the server's VAD response comes first"
    assert d.feed(RequestResponse(reason="tool_output")) == []
    d.feed(ResponseCreated("resp_vad"))
    out = d.feed(ResponseDone("resp_vad"))
    assert only(out, SendResponseCreate).reason == "user_text+tool_output"


def test_server_vad_response_that_never_comes_times_out() -> None:
    d = Driver(create_timeout=2.0)
    d.feed(SessionConfigured("server_vad", create_response=True, interrupt_response=True))
    d.feed(UserTurnCommitted("item_u1"))
    assert d.feed(UserText("hello?"))[1:] == []  # the item goes out, the create waits
    out = d.tick_to_deadline()
    # The server left the turn unanswered: we answer it, with the text that waited.
    assert only(out, SendResponseCreate).reason == "user_text+user_turn"
    assert d.m.stats["server_response_overdue"] == 1


def test_busy_error_naming_an_abandoned_response_waits_for_its_done() -> None:
    d = Driver(cancel_timeout=1.0, stall_timeout=20.0)
    d.start_response("resp_slow")
    d.feed(UserText("stop"))
    out = d.tick_to_deadline()  # the cancel is not acknowledged in time
    create = only(out, SendResponseCreate)
    busy = BUSY_MSG.format(rid="resp_slow")
    out = d.feed(
        ServerError("conversation_already_has_active_response", busy, event_id=create.event_id)
    )
    assert d.m.state is CANCELLING and only(out, SendResponseCancel).response_id == "resp_slow"
    assert d.audio("resp_slow") is False, "its audio stays dropped"
    assert d.m.next_deadline is not None and d.m.next_deadline >= d.now + 0.9
    out = d.feed(ResponseDone("resp_slow", status="cancelled"))
    assert only(out, SendResponseCreate).reason == "user_text"


@pytest.mark.parametrize("named", [True, False], ids=["named", "old-wording"])
def test_an_interrupted_create_rejected_busy_cancels_the_response_that_won(named: bool) -> None:
    """The caller types while our create is unanswered (cancel deferred); the server rejects
    the create as busy with a response we never saw created.  The caller interrupted that one
    as much as ours: it is cancelled by the id the error names and its audio dropped, and the
    held text goes after its done.  The old wording names no id: nothing to cancel it by, so
    it is adopted and the text waits for its done, as before."""
    d = Driver()
    create = only(d.feed(RequestResponse(reason="tool")), SendResponseCreate)
    out = d.feed(UserText("no, Tuesday"))
    assert d.m.state is CANCELLING and not of(out, SendResponseCancel)  # deferred
    given_up = only(out, RequestGivenUp)
    assert given_up.reason == "interrupted" and given_up.request_reasons == ("tool",)
    message = (
        BUSY_MSG.format(rid="resp_won") if named else "Conversation already has an active response"
    )
    out = d.feed(
        ServerError("conversation_already_has_active_response", message, event_id=create.event_id)
    )
    assert not of(out, RequestGivenUp)
    if named:
        assert d.m.state is CANCELLING
        assert only(out, SendResponseCancel).response_id == "resp_won"
        assert only(out, DropResponseAudio).response_id == "resp_won"
        assert d.audio("resp_won") is False, "never heard"
        assert d.m.stats["busy_response_cancelled"] == 1
        assert d.m.check_invariants() == []
        out = d.feed(ResponseDone("resp_won", status="cancelled"))
    else:
        assert d.m.state is ACTIVE and not of(out, SendResponseCancel)
        assert d.audio("resp_won") is True
        out = d.feed(ResponseDone("resp_won"))
    assert [c.text for c in out if isinstance(c, SendUserText)] == ["no, Tuesday"]
    assert only(out, SendResponseCreate).reason == "user_text"
    assert d.m.state is CREATING


def test_an_unseen_busy_response_that_may_answer_the_interrupting_turn_is_kept() -> None:
    """Server VAD creates: our create is unanswered, the caller speaks over it (cancel
    deferred) and the server commits the turn.  A busy error naming a response we have not seen
    created may be the server's answer to that turn: it is adopted and played, not cancelled
    (cancelled, the turn would never be answered: the server creates no second response)."""
    d = Driver()
    d.feed(SessionConfigured("server_vad", create_response=True, interrupt_response=True))
    create = only(d.feed(RequestResponse(reason="tool")), SendResponseCreate)
    assert only(d.feed(SpeechStarted("item_u2")), RequestGivenUp).reason == "interrupted"
    d.feed(UserTurnCommitted("item_u2"))
    assert d.m.state is CANCELLING and d.m.awaiting_server_response()
    busy = BUSY_MSG.format(rid="resp_vad")
    out = d.feed(
        ServerError("conversation_already_has_active_response", busy, event_id=create.event_id)
    )
    assert not of(out, RequestGivenUp) and not of(out, SendResponseCancel)
    assert d.m.state is ACTIVE and d.m.response_id == "resp_vad"
    assert d.audio("resp_vad") is True, "the answer to the caller's turn is heard"
    d.feed(ResponseCreated("resp_vad"))  # late: the same response, nothing changes
    assert d.m.state is ACTIVE and d.audio("resp_vad") is True
    assert not d.m.awaiting_server_response(), "the answer is here: no wait for another"
    out = d.feed(ResponseDone("resp_vad"))
    assert d.m.state is IDLE and "busy_response_cancelled" not in d.m.stats
    create = only(d.feed(RequestResponse(reason="app")), SendResponseCreate)  # at once
    assert create.reason == "app" and "server_response_overdue" not in d.m.stats


def test_rejected_events_leave_no_reference_cycle() -> None:
    import gc

    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for _ in range(200):
            m = ResponseLifecycle()
            m.handle(ResponseDone("resp_stale"), now=1.0)  # no row for done in idle
            m.handle(Tick(), now=2.0)
            del m
        assert gc.collect() == 0, "something survived only through a cycle"
        assert len(gc.get_objects()) - before < 50
    finally:
        gc.enable()


def test_retired_ids_are_a_bounded_ring_of_hashes() -> None:
    from realtime_fsm.lifecycle import _RETIRED_MAX, _RecentIds

    ring = _RecentIds(3)
    assert "resp_a" not in ring and ring.why("resp_a") is None
    ring.add("resp_a", "done")
    ring.add("resp_b", "dropped")
    ring.add("resp_a", "abandoned")  # re-retired: the reason changes, the position does not
    assert ring.why("resp_a") == "abandoned" and ring.why("resp_b") == "dropped"
    ring.add("resp_c", "done")
    ring.add("resp_d", "superseded")  # full: the first retired (resp_a) is forgotten
    assert "resp_a" not in ring
    assert [ring.why(r) for r in ("resp_b", "resp_c", "resp_d")] == [
        "dropped",
        "done",
        "superseded",
    ]
    even = _RecentIds(4)  # every slot of an even-sized ring is used before one is reused
    for k in range(4):
        even.add(f"resp_{k}", "done")
    assert all(f"resp_{k}" in even for k in range(4))
    even.add("resp_4", "done")
    assert [f"resp_{k}" in even for k in range(5)] == [False, True, True, True, True]

    # In a machine: a stale response.done of a response retired _RETIRED_MAX responses ago is
    # still recognised as stale; the memory per call stays a fixed-size ring.
    m = ResponseLifecycle(LifecycleConfig())
    now = 0.0
    for k in range(_RETIRED_MAX + 1):
        now += 1.0
        m.handle(RequestResponse(), now)
        assert m.inflight is not None
        m.handle(ResponseCreated(f"resp_{k}", metadata={META_EVENT_ID: m.inflight.event_id}), now)
        m.handle(ResponseDone(f"resp_{k}"), now)
    assert m._retired.capacity == _RETIRED_MAX
    assert "resp_0" not in m._retired and f"resp_{_RETIRED_MAX}" in m._retired
    m.handle(ResponseDone("resp_1"), now + 1)
    assert m.stats.get("stale_done") == 1 and m.state is ResponseState.IDLE


def test_the_given_up_creates_and_the_playback_ledger_are_bounded() -> None:
    """Both forget their oldest entry, and only when full: a call that gives up creates or
    plays items for hours holds at most GIVEN_UP_MAX and PLAYBACK_MAX of them."""
    from realtime_fsm.lifecycle.ledgers import GIVEN_UP_MAX, PLAYBACK_MAX

    m = ResponseLifecycle(LifecycleConfig())
    for k in range(GIVEN_UP_MAX):
        m._remember_given_up(f"evt_{k}", answer_owed=False)
    assert list(m._given_up) == [f"evt_{k}" for k in range(GIVEN_UP_MAX)]
    m._remember_given_up("evt_last", answer_owed=True)
    assert len(m._given_up) == GIVEN_UP_MAX
    assert "evt_0" not in m._given_up and m._given_up["evt_last"] is True

    m.handle(RequestResponse(), 1.0)
    assert m.inflight is not None
    m.handle(ResponseCreated("resp_1", metadata={META_EVENT_ID: m.inflight.event_id}), 1.0)
    for k in range(PLAYBACK_MAX):
        assert m.audio_delta("resp_1", f"item_{k}", 160, 1.0)
    assert list(m._play) == [f"item_{k}" for k in range(PLAYBACK_MAX)]
    assert m.audio_delta("resp_1", "item_last", 160, 1.0)
    assert len(m._play) == PLAYBACK_MAX
    assert "item_0" not in m._play and m._play["item_last"] == [160, 0]


def test_text_barge_in_on_a_server_response_also_cancels_our_create_in_flight() -> None:
    """Server VAD's response took the slot while our create was in flight; the caller types.
    Both responses are interrupted: the held text must not wait through ours as well."""
    m = ResponseLifecycle(LifecycleConfig())
    out = m.handle(RequestResponse(reason="tool"), 1.0)
    create = next(c for c in out if isinstance(c, SendResponseCreate))
    m.handle(ResponseCreated("resp_vad"), 1.1)  # no metadata: the server's own
    out = m.handle(UserText("stop, I meant Tuesday"), 1.2)
    assert [c.response_id for c in out if isinstance(c, SendResponseCancel)] == ["resp_vad"]
    assert m.state is ResponseState.CANCELLING
    out = m.handle(ResponseDone("resp_vad", status="cancelled"), 1.3)
    # Ours is still unanswered: the text stays held until it is cancelled or rejected.
    assert m.state is ResponseState.CANCELLING and not out
    out = m.handle(ResponseCreated("resp_ours", metadata={META_EVENT_ID: create.event_id}), 1.4)
    assert [c.response_id for c in out if isinstance(c, SendResponseCancel)] == ["resp_ours"]
    assert not m.audio_delta("resp_ours", "item_1", 160, 1.45)  # never heard
    out = m.handle(ResponseDone("resp_ours", status="cancelled"), 1.5)
    assert [c.text for c in out if isinstance(c, SendUserText)] == ["stop, I meant Tuesday"]
    assert any(isinstance(c, SendResponseCreate) for c in out)


def test_the_watchdog_cooldown_ends_exactly_at_its_length() -> None:
    """A silent answer exactly ``watchdog_cooldown`` after the last fire is retried (the
    cooldown is ``[fire, fire + cooldown)``); all times here are exact binary fractions."""
    m = ResponseLifecycle(LifecycleConfig())

    def answer(at: float) -> str:
        m.handle(RequestResponse(), at)
        assert m.inflight is not None
        m.handle(ResponseCreated(f"resp_{at}", metadata={META_EVENT_ID: m.inflight.event_id}), at)
        m.transcript_delta(f"resp_{at}", at + 0.5)
        return f"resp_{at}"

    answer(0.0)
    fired = m.handle(Tick(), 4.0)  # 3.5 s of transcript and no audio: the watchdog fires
    assert m.watchdog_last_fire == 4.0 and any(isinstance(c, SendResponseCancel) for c in fired)
    retry = m.handle(ResponseDone("resp_0.0", status="cancelled"), 4.5)
    assert [c.reason for c in retry if isinstance(c, SendResponseCreate)] == ["no_audio_retry"]
    assert m.inflight is not None
    m.handle(ResponseCreated("resp_retry", metadata={META_EVENT_ID: m.inflight.event_id}), 4.5)
    m.audio_delta("resp_retry", "item_retry", 160, 4.75)
    m.handle(ResponseDone("resp_retry"), 5.0)

    rid = answer(8.0)
    silent = m.handle(ResponseDone(rid), 16.0)  # silent, and exactly 12 s after the fire
    assert [c.reason for c in silent if isinstance(c, SendResponseCreate)] == ["no_audio_retry"]
    assert m.watchdog_last_fire == 16.0

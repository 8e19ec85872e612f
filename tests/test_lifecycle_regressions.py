"""Regression tests: each replays one interleaving in which the core once broke a promise.

An independent review drove the machine against a strict model of the server, with messages
crossing both ways, and found seven ways to break the core's promises.  Each test below replays
one of them, in the world of ``tests/lifecycle_world.py`` (the real machine, the rude reference
server, both queues, the clock), which checks every promise after every step; then it asserts
the specific outcome the bug got wrong.  The tests after them pin the queue order, the watchdog
retry after an unacknowledged cancel, the stall timer on long audio and the truncate clamp.
"""

from __future__ import annotations

from collections.abc import Callable

from lifecycle_world import MODES, PROFILE, Mode, Profile, World
from test_lifecycle_rules import Driver, of, only, silent_response

from realtime_fsm import (
    META_EVENT_ID,
    DropResponseAudio,
    PlaybackProgress,
    RequestResponse,
    ResponseCreated,
    ResponseDone,
    ResponseState,
    SendResponseCancel,
    SendResponseCreate,
    SendTruncate,
    ServerError,
    SpeechStarted,
    Tick,
    UserText,
)

IDLE = ResponseState.IDLE
CREATING = ResponseState.CREATING
ACTIVE = ResponseState.ACTIVE
CANCELLING = ResponseState.CANCELLING
_MODE = {mode.name: mode for mode in MODES}


class Script:
    """A world driven step by step, every promise checked after each step."""

    def __init__(self, mode: Mode, profile: Profile = PROFILE["polite"], **kw: int) -> None:
        self.w = World(mode, profile, **kw)

    def __call__(self, action: Callable[..., object], *args: object) -> None:
        action(*args)
        self.w.check()

    def until_idle(self) -> None:
        self.w.quiesce()


# ------------------------------------------------------------------------------ bug 1


def test_bug1_create_interrupted_while_a_server_response_holds_the_slot_is_never_heard() -> None:
    """Server VAD with create_response and interrupt_response.  The app asks for a response (our
    create on the wire) while an idle-timeout response holds the slot; the caller starts
    speaking; the server cancels its own response; our create lands in the free slot.  Its
    response is the one the caller interrupted: cancelled on creation, never played, and the
    request reported given up (interrupted)."""
    s = Script(_MODE["vad"])
    w = s.w
    s(w.request)  # app1: our create goes out (slow uplink: still in flight)
    s(w.idle_timeout)  # the server's own response takes the slot
    s(w.receive)  # response.created of resp_1: the machine sees it
    assert w.m.state is ACTIVE and w.m.inflight is not None
    s(w.speech_started)  # the caller speaks: the server cancels resp_1 itself
    s(w.send)  # our create reaches the server, the slot is free: resp_2, ours
    s(w.receive)  # speech_started: barge-in on resp_1 *and* on our create
    assert w.requests["app1"] == "given_up:interrupted"
    s(w.receive)  # response.done of resp_1
    s(w.receive)  # response.created of resp_2 (ours): cancelled at once
    assert "resp_2" in w.dropped
    while "resp_2" in w.server.streaming():  # it streams on until the cancel lands
        s(w.stream)
        s(w.receive)  # none of it is forwarded (the world checks every delta)
    s(w.advance, 0.3)
    s(w.speech_stopped)  # 0.3 s of speech: the turn is committed
    s.until_idle()
    assert not any(item for item in w.forwarded if item == "item_2")


# ------------------------------------------------------------------------------ bug 2


def test_bug2_a_turn_the_server_leaves_unanswered_is_answered_by_us() -> None:
    """create_response on, interrupt_response off.  A response is playing; the caller talks over
    it; we cancel; the turn is committed while the slot is still busy and the server, busy at
    speech stop, creates no answer.  Once the slot frees the machine waits a short grace for the
    server's answer and then asks for one itself: the turn is answered."""
    s = Script(_MODE["vad_create_only"], PROFILE["slow_cancel"], audio_chunks=3)
    w = s.w
    s(w.request)
    s(w.send)
    s(w.receive)  # resp_1, ours, playing
    s(w.stream)
    s(w.receive)
    s(w.speech_started)  # no interrupt_response: the server keeps generating
    s(w.receive)  # the machine cancels it itself
    assert w.m.state is CANCELLING
    s(w.send)  # the cancel arrives; the server is slow to act on it
    s(w.speech_stopped)  # committed while resp_1 still holds the slot: VAD skips the answer
    assert w.server.notes.get("vad_create_skipped") == 1
    s(w.receive)  # speech_stopped
    s(w.receive)  # committed: the machine knows the server owes the answer
    assert w.m.awaiting_server_response()
    s(w.ack_cancel)
    s(w.receive)  # response.done (cancelled): the slot is free
    assert w.m.state is IDLE and w.m.next_deadline is not None
    assert w.m.next_deadline - w.now <= w.cfg.server_turn_grace + 1e-9
    s(w.tick)  # no answer came: we answer the turn
    assert w.m.stats["server_response_overdue"] == 1
    assert w.c2s and isinstance(w.c2s[-1], SendResponseCreate)
    assert w.c2s[-1].reason == "user_turn"
    s.until_idle()  # and quiesce checks that the caller's turn got a completed answer


# ------------------------------------------------------------------------------ bug 3


def test_bug3_a_slow_cancel_acknowledgement_costs_no_dead_air_after_it() -> None:
    """No VAD, default timeouts.  A long answer; the caller types at 1 s; the server takes 8 s
    to confirm the cancel.  At the 5 s cancel timeout the text and a create go out; the caller
    types again 5 ms later; the create is rejected as busy, naming the still-alive response.
    The machine cancels that response again and waits for it: its real response.done frees the
    slot, and the held text and its create go out at that very moment."""
    s = Script(_MODE["no_vad"], PROFILE["slow_cancel"], audio_chunks=40)
    w = s.w
    s(w.request)
    s(w.send)
    s(w.receive)  # resp_1: a long answer
    for _ in range(4):
        s(w.stream)
        s(w.receive)
    s(w.advance, 1.0)
    s(w.user_text)  # t1 at 1 s: cancel, hold
    s(w.send)  # the cancel reaches the server, which sits on it
    s(w.advance, 5.0)  # the cancel timeout: t1 and a create go out
    assert w.m.state is CREATING and w.sent_texts == ["t1"]
    s(w.advance, 0.005)
    s(w.user_text)  # t2, 5 ms later: the create is interrupted before it is answered
    while w.c2s:
        s(w.send)  # the unheard item deleted, t1's item, the create: busy, naming resp_1
    s(w.receive)
    assert w.m.state is CANCELLING and w.m.response_id == "resp_1"
    assert w.m.stats["abandoned_response_still_active"] == 1
    s(w.advance, 2.0)
    s(w.ack_cancel)  # 8 s after the cancel: response.done at last
    done_at = w.now
    while w.server.outbox:
        s(w.receive)
    assert w.m.state is CREATING, "the slot is free: no dead air"
    assert w.sent_texts == ["t1", "t2"]
    assert w.c2s[-1].reason == "user_text"  # type: ignore[union-attr]
    assert w.now == done_at
    s.until_idle()


# ------------------------------------------------------------------------------ bug 4


def test_bug4_a_given_up_response_named_by_a_busy_error_is_never_played() -> None:
    """No VAD.  The server takes the slot at once but sends response.created 6 s later; the
    caller types at 0.5 s (cancel deferred until created); at 5 s the create is given up, the
    text and a new create go out; the busy error names the pending response before its
    response.created.  When that created finally comes it answers the given-up create: it is
    cancelled and none of its audio reaches the caller."""
    s = Script(_MODE["no_vad"], PROFILE["late_created"], audio_chunks=3)
    w = s.w
    s(w.request)
    s(w.send)  # resp_1 takes the slot; its events are held back
    s(w.advance, 0.5)
    s(w.user_text)  # t1: the create is interrupted (its request given up now)
    assert w.requests["app1"] == "given_up:interrupted"
    s(w.advance, 4.5)  # 5 s after the create: no answer, forgotten
    assert w.m.state is CREATING and w.sent_texts == ["t1"]
    s(w.send)  # t1's item
    s(w.send)  # the new create: busy, naming resp_1 before its response.created
    s(w.receive)
    assert w.m.state is ACTIVE and w.m.response_id == "resp_1"
    s(w.advance, 1.0)
    s(w.release_created)  # 6 s: response.created of resp_1, metadata of the given-up create
    s(w.receive)
    assert w.m.state is CANCELLING and "resp_1" in w.dropped
    while w.server.outbox:
        s(w.receive)  # its audio: dropped, never forwarded (the world checks every delta)
    s.until_idle()
    assert "item_1" not in w.forwarded


# ------------------------------------------------------------------------------ bug 5


def test_bug5_a_spurious_busy_then_our_response_serves_the_request_once() -> None:
    """A faulty server: a busy error without an id (old wording, no event_id), then
    response.created carrying our create's metadata.  The machine trusts the first answer to
    each create: the request was re-queued, so the response created for it anyway is cancelled
    unheard, and the request is served exactly once, by the next create."""
    d = Driver()
    first = only(d.feed(RequestResponse(reason="greeting")), SendResponseCreate)
    d.feed(ServerError(code=None, message="Conversation already has an active response"))
    assert d.m.state is ACTIVE and d.m.pending[0].reason == "greeting"
    out = d.feed(ResponseCreated("resp_1", metadata={META_EVENT_ID: first.event_id}))
    assert only(out, SendResponseCancel).response_id == "resp_1"
    assert only(out, DropResponseAudio).response_id == "resp_1"
    assert d.audio("resp_1") is False
    out = d.feed(ResponseDone("resp_1", status="cancelled"))
    second = only(out, SendResponseCreate)
    assert second.reason == "greeting" and second.event_id != first.event_id
    d.created(out, "resp_2")
    assert d.m.response_requests[0].reason == "greeting" and d.audio("resp_2")
    served = [c for c in d.log if isinstance(c, SendResponseCreate) and c.reason == "greeting"]
    assert len(served) == 2 and d.m.stats["late_responses_cancelled"] == 1


# ------------------------------------------------------------------------------ bug 6


def test_bug6_a_swallowed_create_for_a_callers_turn_is_sent_once_more() -> None:
    """Turn detection without create_response: the machine answers each committed turn.  The
    server swallows the create (no response.created, no error).  After create_timeout it is
    sent once more, under a new event id, and the turn is answered."""
    s = Script(_MODE["vad_manual"], PROFILE["refusing"])
    w = s.w
    s(w.speech_started)
    s(w.speech_stopped)
    s(w.swallow_next)
    while w.server.outbox:
        s(w.receive)  # committed: the machine asks for the answer
    first = w.c2s[-1]
    assert isinstance(first, SendResponseCreate) and first.reason == "user_turn"
    s(w.send)  # swallowed
    s(w.advance, 5.0)
    again = w.c2s[-1]
    assert isinstance(again, SendResponseCreate) and again.reason == "user_turn"
    assert again.event_id != first.event_id and w.m.stats["creates_resent"] == 1
    s.until_idle()
    assert not w.given_up_creates and not w.reported_at, "nothing given up"


def test_bug6_a_late_answer_to_the_first_create_is_cancelled_not_heard() -> None:
    """The same, but the server was only slow: the first create's response comes after the
    retry went out.  It is cancelled and its audio dropped; the turn is answered once."""
    s = Script(_MODE["vad_manual"], PROFILE["late_created"], audio_chunks=2)
    w = s.w
    s(w.speech_started)
    s(w.speech_stopped)
    while w.server.outbox:
        s(w.receive)
    s(w.send)  # the first create: resp_1 takes the slot, its events held back
    s(w.advance, 5.0)  # no answer in time: sent once more
    s(w.send)  # busy, naming resp_1
    s(w.receive)
    s(w.release_created)
    while w.server.outbox:
        s(w.receive)
    assert "resp_1" in w.dropped and "item_1" not in w.forwarded
    s.until_idle()
    answers = [r for r in w.server.responses.values() if r.status == "completed"]
    assert len(answers) == 1


# ------------------------------------------------------------------------------ bug 7


def test_bug7_a_short_silent_answer_is_counted_and_retried() -> None:
    """A response that streams transcript but no audio and finishes before no_audio_timeout:
    the caller heard nothing, so it is a silent response too, counted and retried once; the
    retry is never judged; inside the cooldown the next one is only counted."""
    d = Driver(no_audio_timeout=3.0, watchdog_cooldown=12.0)
    d.start_response("resp_1")
    silent_response(d, "resp_1", deltas=2)  # 0.1 s of transcript, no audio
    out = d.feed(ResponseDone("resp_1"))
    assert d.m.stats["watchdog_fires"] == 1
    retry = only(out, SendResponseCreate)
    assert retry.reason == "no_audio_retry"
    d.created(out, "resp_retry")
    silent_response(d, "resp_retry", deltas=2)
    d.feed(ResponseDone("resp_retry"))  # silent again: never retried twice
    assert d.m.stats["watchdog_fires"] == 1 and d.m.state is IDLE
    d.start_response("resp_2")
    silent_response(d, "resp_2", deltas=2)
    out = d.feed(ResponseDone("resp_2"))
    assert not of(out, SendResponseCreate) and d.m.stats["watchdog_suppressed"] == 1
    # A cancelled or text-only response with no audio is not silent.
    d2 = Driver()
    d2.start_response("resp_x")
    silent_response(d2, "resp_x", deltas=2)
    d2.feed(UserText("stop"))
    d2.feed(ResponseDone("resp_x", status="cancelled"))
    assert "watchdog_fires" not in d2.m.stats


# ------------------------------------------------------------------------------ the rest


def test_the_watchdog_retry_and_a_held_texts_request_go_before_queued_requests() -> None:
    """At the silent response's done, the retry and the held text's request take the head of
    the queue, ahead of a request with its own instructions that was waiting."""
    d = Driver(no_audio_timeout=1.0)
    d.start_response("resp_1")
    silent_response(d, "resp_1")
    d.feed(RequestResponse(reason="survey", instructions="Ask for a rating."))
    d.tick_to_deadline()  # fired: cancel
    d.feed(UserText("hello?"))  # held
    out = d.feed(ResponseDone("resp_1", status="cancelled"))
    create = only(out, SendResponseCreate)
    assert create.reason == "user_text+no_audio_retry"
    assert [r.reason for r in d.m.pending] == ["survey"]


def test_the_watchdog_retries_after_its_cancel_timed_out() -> None:
    d = Driver(no_audio_timeout=1.0, cancel_timeout=2.0)
    d.start_response("resp_1")
    silent_response(d, "resp_1")
    d.tick_to_deadline()
    assert d.m.state is CANCELLING
    out = d.tick_to_deadline()  # no response.done within cancel_timeout
    assert d.m.state is CREATING and only(out, SendResponseCreate).reason == "no_audio_retry"
    assert d.m.stats["cancel_timeouts"] == 1


def test_the_stall_timer_spares_long_audio_and_catches_a_hung_response() -> None:
    d = Driver(stall_timeout=20.0)
    d.start_response("resp_1")
    for _ in range(60):  # a minute of audio, a delta a second
        d.now += 1.0
        assert d.m.audio_delta("resp_1", "item_1", 8000, d.now)
        if d.m.next_deadline is not None and d.now >= d.m.next_deadline:
            d.feed(Tick(), dt=0.0)
    assert d.m.state is ACTIVE and "stalled_responses" not in d.m.stats
    out = d.at(d.now + 20.0, Tick())  # then nothing for the stall timeout
    assert only(out, SendResponseCancel).response_id == "resp_1"
    assert d.m.stats["stalled_responses"] == 1


def test_the_truncate_clamp_takes_effect_on_the_item_still_being_generated() -> None:
    """Marks say the caller heard more than reached us (a wall-clock estimate overshoots):
    the live item is truncated at what was received, not at the overshooting mark."""
    d = Driver()
    d.start_response("resp_1")
    for _ in range(10):
        d.audio("resp_1", "item_1")  # 200 ms
    d.feed(PlaybackProgress("item_1", 5000))
    out = d.feed(SpeechStarted())
    assert only(out, SendTruncate).audio_end_ms == 200

"""Multi-item and reasoning responses under hypothesis: a barge-in at any point cuts exactly what
the caller did not hear, and the timers never cut thinking or an open tool call while still
catching silence.  The frames and the ``Phone`` are test_multi_item_responses'.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_call_session import (
    Call,
    oa_audio_done,
    oa_done,
    oa_speech_started,
    oa_transcript,
)
from test_multi_item_responses import (
    CHUNK_MS,
    Phone,
    ask,
    cuts,
    oa_item_added,
    oa_item_done,
    oa_session_updated,
    server,
)

from realtime_fsm import (
    META_EVENT_ID,
    LifecycleConfig,
    RequestResponse,
    ResponseCreated,
    ResponseDone,
    ResponseLifecycle,
    ResponseState,
    SendResponseCancel,
    SendResponseCreate,
    Tick,
)
from realtime_fsm.call import BridgeConfig
from realtime_fsm.config import thinking_scale
from realtime_fsm.openai_realtime import (
    SessionConfig,
)

# ==================================================== 5. property: barge-in at any point


_PLAY = st.sampled_from([0.0, 0.0, 0.0, 7.0, 20.0, 35.0, 60.0, 150.0])


def _script(data: st.DataObject, items: list[str]) -> list[tuple[str, int]]:
    """One response's server events, item after item, in the order the server sends them."""
    events: list[tuple[str, int]] = []
    for index in range(len(items)):
        chunks = data.draw(st.integers(1, 12), label=f"chunks of {items[index]}")
        events += [("added", index), ("transcript", index)]
        events += [("audio", index)] * chunks
        events += [("audio_done", index), ("item_done", index)]
    events.append(("done", -1))
    return events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_barge_in_at_any_point_cuts_exactly_what_the_caller_did_not_hear(
    data: st.DataObject,
) -> None:
    """One response of 1-3 spoken items; the caller's phone plays in real time with mark echoes
    interleaved at random; the caller speaks at a random point (or never).  The cut equals what
    the phone played, per item: an item heard in full and finished is left alone, one heard in
    part is truncated at most at what was heard (at least at what the marks proved), one
    heard not at all is deleted, never truncated at 0, never truncated past its audio; items
    the caller never got a byte of (no audio yet, or audio only after the barge-in) are
    deleted once the response is over."""
    every = data.draw(st.sampled_from([0, 100, 500]), label="mark_every_ms")
    server_cancels = data.draw(st.booleans(), label="interrupt_response")
    c = Call(
        BridgeConfig(session=SessionConfig(interrupt_response=server_cancels), mark_every_ms=every)
    ).start()
    c.oa(oa_session_updated())
    if not server_cancels:
        c.oa(
            server(
                {
                    "type": "session.updated",
                    "session": {
                        "type": "realtime",
                        "audio": {
                            "input": {
                                "format": {"type": "audio/pcmu"},
                                "turn_detection": {
                                    "type": "server_vad",
                                    "create_response": True,
                                    "interrupt_response": False,
                                },
                            },
                            "output": {"format": {"type": "audio/pcmu"}},
                        },
                    },
                }
            )
        )
    p = Phone(c)
    ask(c, "resp_1")
    items = [f"item_{n}" for n in range(data.draw(st.integers(1, 3), label="items"))]
    events = _script(data, items)
    barge_at = data.draw(st.integers(0, len(events)) | st.none(), label="barge-in before event")
    if barge_at is not None and barge_at < len(events):
        # The server stops soon after the barge-in: a random part of the rest still arrives.
        rest = data.draw(st.integers(0, len(events) - barge_at - 1), label="late events")
        events = [*events[: barge_at + rest], ("done", -1)]
    received: dict[str, int] = {}  # ms of each item sent to the caller before the barge-in
    item_done: set[str] = set()
    response_done = False
    snapshot: dict[str, tuple[float, int]] | None = None  # item -> (heard, proved by marks)
    seen_late: set[str] = set()  # items that showed up (added, or audio) after the barge-in
    for position, (kind, index) in enumerate(events):
        p.play(data.draw(_PLAY, label="play ms"))
        if position == barge_at:
            snapshot = {i: (p.heard.get(i, 0.0), c.s.tracker.played_ms(i)) for i in received}
            c.oa(oa_speech_started())
            p.take()
        item = items[index] if index >= 0 else ""
        late = snapshot is not None
        if kind == "added":
            c.oa(oa_item_added("resp_1", item, index))
            if late:
                seen_late.add(item)
        elif kind == "transcript":
            c.oa(oa_transcript("resp_1", item, "words "))
        elif kind == "audio":
            forwarded = p.audio("resp_1", item)
            assert forwarded is not late
            if late:
                seen_late.add(item)
            else:
                received[item] = received.get(item, 0) + CHUNK_MS
        elif kind == "audio_done":
            c.oa(oa_audio_done("resp_1", item))
            p.take()
        elif kind == "item_done":
            c.oa(oa_item_done("resp_1", item, index, "incomplete" if late else "completed"))
            if not late:
                item_done.add(item)
        else:
            status = "cancelled" if late else "completed"
            c.oa(oa_done("resp_1", status, "turn_detected" if late else None))
            response_done = not late
    if barge_at == len(events):  # after the response's done
        snapshot = {i: (p.heard.get(i, 0.0), c.s.tracker.played_ms(i)) for i in received}
        c.oa(oa_speech_started())
    p.play(5000)
    truncated, deleted = cuts(c)
    assert len(deleted) == len(set(deleted)), deleted
    assert not set(truncated) & set(deleted)
    if snapshot is None:
        assert truncated == {} and deleted == []
        assert p.heard == {i: float(ms) for i, ms in received.items()}
        return
    for end_ms in truncated.values():
        assert end_ms > 0
    want_deleted = set()
    for item, sent_ms in received.items():
        heard, proved = snapshot[item]
        assert not (proved == 0 and heard >= CHUNK_MS), (item, heard)  # its start mark echoed
        finished = item in item_done or response_done
        if heard >= sent_ms and finished:
            assert item not in truncated and item not in deleted, (item, heard, sent_ms)
        elif proved == 0:
            want_deleted.add(item)
        else:
            # Heard in part, or in full while the server was still generating it (it has more
            # than reached us): truncated between what the marks proved and what was heard
            # (early, never late: audio sent after the last echo may have started late).
            assert item in truncated, (item, heard, proved, truncated)
            assert proved <= truncated[item] <= min(heard, sent_ms), (item, truncated, heard)
    late_only = seen_late - set(received)
    known_unheard = {
        item
        for n, item in enumerate(items)
        if item not in received and any(e == ("added", n) for e in events[: barge_at or 0])
    }
    if not response_done:
        want_deleted |= late_only | known_unheard
    assert set(deleted) == want_deleted, (deleted, want_deleted, snapshot, received)
    assert set(truncated) <= set(received)


# ============================================= 6. property: timers of a thinking response


_EFFORTS = [None, "minimal", "low", "medium", "high", "xhigh"]
_STEP = st.one_of(
    st.tuples(st.just("gap"), st.sampled_from([0.5, 2.0, 4.0, 15.0, 25.0, 45.0, 90.0])),
    st.tuples(st.just("added"), st.sampled_from(["message", "message", "function_call"])),
    st.tuples(st.just("item_done"), st.just("")),
    st.tuples(st.just("transcript"), st.just("")),
    st.tuples(st.just("audio"), st.just("")),
)


@settings(max_examples=400, deadline=None)
@given(effort=st.sampled_from(_EFFORTS), steps=st.lists(_STEP, max_size=25))
def test_timers_never_cut_thinking_or_a_tool_call_and_still_catch_silence(
    effort: str | None, steps: list[tuple[str, Any]]
) -> None:
    """A reasoning response on the core machine alone: items open and close, transcript and
    audio come or not, and the model thinks in silence for random spells.  A cancel only ever
    comes for a response that is hung (silent past the thinking allowance with no item open,
    past ``stall_timeout`` with one open) or silent (transcript and no audio for
    ``no_audio_timeout``); never while a function call is open.  A silent response is always
    caught: by the watchdog, or at its done."""
    cfg = LifecycleConfig(reasoning_effort=effort)
    think = cfg.stall_timeout * thinking_scale(effort)
    m = ResponseLifecycle(cfg, now=0.0)
    [create] = [c for c in m.handle(RequestResponse(), 0.0) if isinstance(c, SendResponseCreate)]
    now = 0.1
    m.handle(ResponseCreated("resp_1", metadata={META_EVENT_ID: create.event_id}), now)
    open_items: list[tuple[str, str]] = []  # (item, kind), oldest first
    last_activity = now
    first_transcript: float | None = None
    audio = 0
    n = 0

    def justified(at: float) -> str | None:
        if any(kind == "function_call" for _item, kind in open_items):
            return None
        if first_transcript is not None and not audio and at >= first_transcript + 3.0:
            return "silent"
        limit = cfg.stall_timeout if open_items else think
        return "hung" if at >= last_activity + limit - 1e-9 else None

    for kind, arg in steps:
        if kind == "gap":
            target = now + arg
            while True:
                deadline = m.next_deadline
                if deadline is None or deadline > target:
                    break
                now = max(now, deadline)
                out = m.handle(Tick(), now)
                if any(isinstance(c, SendResponseCancel) for c in out):
                    assert justified(now) is not None, (now, open_items, last_activity)
                    return
                assert m.state is ResponseState.ACTIVE
            now = target
            # Nothing overdue is let pass: a due watchdog or stall (no call open) has fired.
            assert justified(now) is None, (now, open_items, last_activity, first_transcript)
            continue
        spoken = [item for item, k in open_items if k == "message"]
        if (kind == "item_done" and not open_items) or (
            kind in ("transcript", "audio") and not spoken
        ):
            continue  # nothing the server could send now
        now += 0.01
        last_activity = now
        if kind == "added":
            n += 1
            open_items.append((f"item_{n}", arg))
            m.item_added("resp_1", f"item_{n}", arg, now)
        elif kind == "item_done":
            item, _kind = open_items.pop(0)
            m.item_done("resp_1", item, now)
        else:
            if kind == "transcript":
                m.transcript_delta("resp_1", now)
                first_transcript = first_transcript if first_transcript is not None else now
            else:
                audio += 1
                assert m.audio_delta("resp_1", spoken[-1], 160, now)
    fires = m.stats.get("watchdog_fires", 0)
    m.handle(ResponseDone("resp_1"), now + 0.01)
    if first_transcript is not None and not audio:
        assert m.stats.get("watchdog_fires", 0) == fires + 1  # caught at its done
    else:
        assert m.stats.get("watchdog_fires", 0) == 0

"""One playback ledger: the call's tracker reads each item's byte total from the response
lifecycle's ledger (the machine counted the delta when it accepted it) instead of counting the
same bytes again, and places exactly the marks the counting tracker places."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_fsm import LifecycleConfig, RequestResponse, ResponseCreated, ResponseLifecycle
from realtime_fsm.commands import SendResponseCreate
from realtime_fsm.twilio_media import LedgerPlaybackTracker, PlaybackTracker

Step = tuple[str, int]

steps = st.lists(
    st.one_of(
        st.tuples(st.just("audio"), st.integers(0, 3)),  # a 20-ish ms delta of item n
        st.tuples(st.just("echo"), st.integers(0, 50)),  # echo the n-th pending mark
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("clear"), st.just(0)),  # a barge-in: the item's audio stops
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(steps, st.sampled_from([0, 100, 500]), st.integers(1, 400))
def test_the_ledger_tracker_places_the_marks_the_counting_tracker_places(
    script: list[Step], every: int, chunk: int
) -> None:
    counting = PlaybackTracker(mark_every_ms=every)
    ledger: dict[str, list[int]] = {}
    reading = LedgerPlaybackTracker(ledger, mark_every_ms=every)
    item_of = 0  # items after a clear are new ones: a cleared item's audio never follows
    sent: list[str] = []
    t = 0.0
    for kind, n in script:
        t += 0.02
        if kind == "audio":
            item = f"item_{item_of}_{n}"
            ledger.setdefault(item, [0, 0])[0] += chunk  # what the machine does first
            a = counting.audio_sent(item, chunk, t)  # with times: the estimate's cap may rise
            b = reading.audio_sent(item, chunk, t)
            assert a == b
            if a is not None:
                sent.append(a)
        elif kind == "echo" and sent:
            name = sent.pop(n % len(sent))
            assert counting.mark_received(name, t) == reading.mark_received(name, t)
            assert counting.estimate(t + 0.01) == reading.estimate(t + 0.01)
        elif kind == "flush":
            a, b = counting.flush_mark(), reading.flush_mark()
            assert a == b
            if a is not None:
                sent.append(a)
        elif kind == "clear":
            counting.clear()
            reading.clear()
            item_of += 1
            sent = []
    assert counting.stats == reading.stats
    assert reading._sent == {}  # counted once, by the ledger's owner


def test_the_call_s_tracker_reads_the_machine_s_ledger() -> None:
    machine = ResponseLifecycle(LifecycleConfig(call_id="ledger"), now=0.0)
    [create] = [
        c
        for c in machine.handle(RequestResponse("greeting"), 0.0)
        if isinstance(c, SendResponseCreate)
    ]
    machine.handle(ResponseCreated("resp_1", metadata={"rtfsm_event_id": create.event_id}), 0.1)
    tracker = LedgerPlaybackTracker(machine.playback, mark_every_ms=100)
    names = []
    for i in range(19):  # 20 ms of mu-law each: 160 bytes
        assert machine.audio_delta("resp_1", "item_a", 160, 0.2 + i * 0.02)
        name = tracker.audio_sent("item_a", 160)
        if name is not None:
            names.append(name)
    assert machine.playback["item_a"][0] == 3040
    assert [n.split(":")[2] for n in names] == ["20", "120", "220", "320"]
    assert tracker.flush_mark() == "g0:5:380:item_a"
    # A new machine (a new session): the tracker follows its ledger.
    fresh = ResponseLifecycle(LifecycleConfig(call_id="ledger"), now=1.0)
    tracker.clear()
    tracker.follow(fresh.playback)
    assert tracker.sent_ms("item_a") == 0

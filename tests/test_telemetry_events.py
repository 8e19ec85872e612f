"""The times and details the call puts on its application events for observers (telemetry):
``requested_at``, ``first_audio_at``, token usage, and the events added for it
(``ResponseCancelling``, ``AudioTruncated``, ``ResponseRequestGivenUp``, ``PlaybackStarted``).

Sans-IO, on a fake clock, through the test driver of ``test_call_session``: every time asserted
is one this test passed in.
"""

from __future__ import annotations

from typing import Any

from test_call_session import (
    Call,
    _server,
    oa_audio,
    oa_audio_done,
    oa_committed,
    oa_created,
    oa_done,
    oa_session,
    oa_speech_started,
    tw_mark,
)

from realtime_fsm.bridge import BridgeConfig
from realtime_fsm.call import (
    AudioTruncated,
    BargeIn,
    CallEnded,
    PlaybackStarted,
    ResponseCancelling,
    ResponseFinished,
    ResponseRequestGivenUp,
    ResponseStarted,
)
from realtime_fsm.config import LifecycleConfig


def of(c: Call, kind: type) -> list[Any]:
    return [e for e in c.events if type(e) is kind]


def marks(c: Call) -> list[str]:
    return [m["mark"]["name"] for m in c.twilio if m.get("event") == "mark"]


def playing(c: Call, rid: str, item: str, deltas: int, dt: float = 0.001) -> None:
    """``deltas`` 20 ms audio deltas of ``item``, ``dt`` apart."""
    for _ in range(deltas):
        assert c.oa(oa_audio(rid, item), dt) is not None


def test_an_answer_heard_carries_when_it_was_asked_sent_and_heard() -> None:
    c = Call().start()
    c.oa(oa_session())
    c.at(1.0)
    c.s.request_response(c.t, reason="greet")
    c.drain()
    c.at(1.2).answer(c.creates()[-1], "resp_1")
    c.at(1.5)
    playing(c, "resp_1", "item_1", 30)  # 600 ms: a mark at 500 ms, then the tail
    c.oa(oa_audio_done("resp_1", "item_1"))
    done = {
        "type": "response.done",
        "response": {
            "id": "resp_1",
            "object": "realtime.response",
            "status": "completed",
            "output": [],
            "usage": {"total_tokens": 57, "input_tokens": 12, "output_tokens": 45},
        },
    }
    c.at(2.0).oa(_server(done))
    started = of(c, ResponseStarted)[0]
    assert started == ResponseStarted("resp_1", True, ("greet",))
    assert (started.at, started.requested_at) == (1.2, 1.0)
    finished = of(c, ResponseFinished)[0]
    assert finished.at == 2.0
    assert finished.first_audio_at == 1.501  # the first delta, not the response's creation
    assert (finished.input_tokens, finished.output_tokens) == (12, 45)

    # The first echo (the item's start mark: 20 ms of item_1 played) comes back at 2.12:
    # playback began at 2.1.
    start, regular, tail = marks(c)
    assert c.at(2.12).tw(tw_mark(start)) is None  # an event to hand out, not NOTHING
    assert of(c, PlaybackStarted) == [PlaybackStarted("resp_1", "item_1")]
    assert abs(of(c, PlaybackStarted)[0].at - 2.1) < 1e-9
    assert c.at(2.62).tw(tw_mark(regular)) == ""  # told once: later echoes are plain again
    assert c.at(2.7).tw(tw_mark(tail)) == ""
    assert len(of(c, PlaybackStarted)) == 1


def test_playback_start_is_never_before_the_audio_went_out() -> None:
    c = Call().start()
    c.oa(oa_created("resp_vad"))
    c.at(5.0)
    playing(c, "resp_vad", "item_1", 30, dt=0.0)
    # An echo only 0.1 s after the audio went out, confirming 520 ms (Twilio's clock ran
    # ahead of ours): dated at the send, not 0.42 s before it.
    c.at(5.1).tw(tw_mark(marks(c)[1]))
    assert [e.at for e in of(c, PlaybackStarted)] == [5.0]


def test_a_server_response_was_requested_by_the_turn_it_answers() -> None:
    c = Call().start()
    c.oa(oa_session())
    c.at(3.0).oa(oa_committed("u1"))
    c.at(3.4).oa(oa_created("resp_vad"))
    c.at(3.5).oa(oa_created("resp_vad_2"))  # no new turn: not known what asked for it
    first, second = of(c, ResponseStarted)
    assert (first.ours, first.at, first.requested_at) == (False, 3.4, 3.0)
    assert (second.at, second.requested_at) == (3.5, None)


def test_a_barge_in_tells_when_what_it_cancelled_and_what_it_cut() -> None:
    # The server's VAD interrupts the response itself (the default): no response.cancel of
    # ours, but the response machine is cancelling all the same.
    c = Call().start()
    c.oa(oa_session())
    c.s.request_response(c.t, reason="greet")
    c.drain()
    c.answer(c.creates()[-1], "resp_1")
    playing(c, "resp_1", "item_1", 50)  # 1000 ms sent
    c.at(2.0).tw(tw_mark(marks(c)[1]))  # 520 ms heard (the item's start mark at 20, then 520)
    c.at(2.2).oa(oa_speech_started("u1"))
    barge = of(c, BargeIn)[0]
    assert (barge.source, barge.response_id, barge.at) == ("speech", "resp_1", 2.2)
    cancelling = of(c, ResponseCancelling)
    assert cancelling == [ResponseCancelling("resp_1")] and cancelling[0].at == 2.2
    (cut,) = of(c, AudioTruncated)
    # Heard: 520 ms echoed + 200 ms estimated since the echo (playback runs on); the
    # response is live, so the rest of what was received is cut.
    assert (cut.item_id, cut.response_id, cut.at) == ("item_1", "resp_1", 2.2)
    assert cut.audio_end_ms == 720 and cut.unheard_ms == 280
    c.oa(oa_done("resp_1", "cancelled", "client_cancelled"))
    assert of(c, ResponseFinished)[0].status == "cancelled"


def test_given_up_requests_are_told_with_the_report() -> None:
    config = BridgeConfig(lifecycle=LifecycleConfig(create_timeout=1.0))
    c = Call(config).start()
    c.oa(oa_session())
    c.s.request_response(c.t, reason="app")
    c.drain()
    c.tick(c.t + 1.5)  # no response.created: resent once
    c.tick(c.t + 1.5)  # and given up
    c.s.end_call("bye", c.t)
    c.close()
    told = of(c, ResponseRequestGivenUp)
    assert [(g.reason, g.request_reasons) for g in told] == [
        (g.reason, g.request_reasons) for g in c.s.report.given_up
    ]
    assert told and told[0].reason == "create_timeout"
    assert type(c.events[-1]) is CallEnded and c.events[-1].at == c.t

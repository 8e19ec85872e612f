"""``CallSession`` driven by hand (no sockets, no asyncio, a float clock): losing the OpenAI
session and restoring it, and the custody of user text across it.  The frames and the ``Call``
driver are test_call_session's, validated by the ``openai`` package's types on both sides.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_call_session import (
    STREAM,
    Call,
    oa_audio,
    oa_audio_done,
    oa_committed,
    oa_created,
    oa_done,
    oa_error,
    oa_input_transcript,
    oa_session,
    oa_speech_started,
    oa_transcript,
    reasons,
    tw_mark,
)

from realtime_fsm.call import (
    BridgeConfig,
    ResponseFinished,
    SessionLost,
    SessionRestored,
)
from realtime_fsm.table import CallState

# ======================================================================= 2. loss and restore


def _lose(c: Call, reason: str = "openai closed", dt: float = 10.0) -> None:
    c.t += dt
    c.s.openai_lost(reason, c.t)
    c.drain()


def _reopen(c: Call, dt: float = 0.0) -> list[dict[str, Any]]:
    c.t += dt
    before = len(c.sent)
    c.s.session_opened(c.t)
    c.drain()
    return c.sent[before:]


def test_openai_lost_goes_reconnecting_with_delay_zero() -> None:
    c = Call().start()
    _lose(c, dt=10.0)
    assert c.s.call_state is CallState.RECONNECTING
    assert c.s.connect_delay == 0.0
    assert c.s.active
    assert c.s.next_deadline is None
    assert any(isinstance(e, SessionLost) and e.reason == "openai closed" for e in c.events)


def test_short_lived_session_is_backed_off() -> None:
    c = Call().start()
    _lose(c, dt=1.0)
    assert c.s.call_state is CallState.RECONNECTING
    assert c.s.connect_delay == pytest.approx(BridgeConfig().reconnect_base_delay)


def test_openai_lost_without_reconnect_ends_the_call() -> None:
    c = Call(can_reconnect=False).start()
    _lose(c, "openai closed")
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == "openai closed"


@pytest.mark.parametrize("status", [401, 403])
def test_connect_refused_ends_the_call(status: int) -> None:
    c = Call().start()
    _lose(c)
    c.s.connect_failed("InvalidStatus", c.t, status=status)
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == f"openai reconnect refused (HTTP {status})"
    assert c.s.connect_delay is None
    assert c.s.report.reconnect_failures == 1


def test_repeated_connect_failures_back_off_then_end() -> None:
    cfg = BridgeConfig(reconnect_attempts=3, reconnect_base_delay=0.5, reconnect_max_delay=0.75)
    c = Call(cfg).start()
    _lose(c)
    c.s.connect_failed("OSError", c.t)
    assert c.s.call_state is CallState.RECONNECTING
    assert c.s.connect_delay == pytest.approx(0.5)
    c.s.connect_failed("InvalidStatus", c.t, status=503)
    assert c.s.call_state is CallState.RECONNECTING
    assert c.s.connect_delay == pytest.approx(0.75)  # capped
    c.s.connect_failed("OSError", c.t)
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == "openai reconnect failed after 3 attempts"
    assert c.s.report.reconnect_failures == 3


def test_session_opened_restores_config_history_and_carried_texts() -> None:
    c = Call().start()
    c.oa(oa_session())
    c.s.send_user_text("my order is 42", c.t)
    c.drain()
    c.answer(c.creates()[-1], "resp_t")
    c.oa(oa_audio("resp_t", "item_t"))
    c.oa(oa_transcript("resp_t", "item_t", "Got it."))
    c.oa(oa_done("resp_t"))
    # The caller's turn, transcribed; and an answer to it, completed.
    c.oa(oa_speech_started("u1"), 1.0)
    c.oa(oa_committed("u1"))
    c.oa(oa_input_transcript("u1", "where is it"))
    c.oa(oa_created("resp_vad"))
    c.oa(oa_audio("resp_vad", "item_a"))
    c.oa(oa_transcript("resp_vad", "item_a", "It ships "))
    c.oa(oa_transcript("resp_vad", "item_a", "today."))
    c.oa(oa_done("resp_vad"))
    _lose(c, dt=10.0)
    c.s.send_user_text("typed while reconnecting", c.t)
    c.drain()
    assert not any(
        e["type"] == "conversation.item.create"
        and "typed while reconnecting" in json.dumps(e)
        and e is not None
        for e in c.sent
    )
    new = _reopen(c, dt=0.5)
    assert c.s.call_state is CallState.RUNNING
    assert new[0]["type"] == "session.update"
    texts = [
        (e["item"]["role"], e["item"]["content"][0]["text"])
        for e in new
        if e["type"] == "conversation.item.create"
    ]
    assert texts == [
        ("user", "my order is 42"),
        ("assistant", "Got it."),
        ("user", "where is it"),
        ("assistant", "It ships today."),
        ("user", "typed while reconnecting"),
    ]
    creates = [e for e in new if e["type"] == "response.create"]
    assert len(creates) == 1 and reasons(creates[0]) == ["user_text"]
    assert c.s.report.reconnects == 1
    assert c.s.report.reconnect_times == [pytest.approx(0.5)]
    restored = [e for e in c.events if isinstance(e, SessionRestored)]
    assert restored == [SessionRestored(pytest.approx(0.5), 4, 1)]
    c.close()
    assert c.s.report.user_texts_sent == 2
    assert c.s.report.undelivered_texts == []


def test_response_cut_off_mid_answer_is_retold() -> None:
    c = Call().start()
    c.oa(oa_session())
    c.s.request_response(c.t, reason="app", instructions="Say the weather")
    c.drain()
    (create,) = c.creates()
    c.answer(create, "resp_1")
    c.oa(oa_audio("resp_1", "item_1"))
    c.oa(oa_transcript("resp_1", "item_1", "It is sun"))
    _lose(c)
    assert {"event": "clear", "streamSid": STREAM} in c.twilio  # the half answer stops
    new = _reopen(c)
    creates = [e for e in new if e["type"] == "response.create"]
    assert len(creates) == 1
    assert reasons(creates[0]) == ["reconnect"]
    assert creates[0]["response"]["instructions"] == "Say the weather"
    # The cut-off answer is not history: it is asked for again.
    assert "It is sun" not in json.dumps(new)


def test_create_in_flight_when_lost_is_carried() -> None:
    c = Call().start()
    c.s.request_response(c.t, reason="timer")
    c.drain()
    _lose(c)
    new = _reopen(c)
    creates = [e for e in new if e["type"] == "response.create"]
    assert len(creates) == 1 and reasons(creates[0]) == ["timer"]


def test_request_while_reconnecting_is_carried() -> None:
    c = Call().start()
    _lose(c)
    c.s.request_response(c.t, reason="timer")
    c.drain()
    assert c.creates() == []
    new = _reopen(c)
    creates = [e for e in new if e["type"] == "response.create"]
    assert len(creates) == 1 and reasons(creates[0]) == ["timer"]


def test_max_reconnects_ends_the_call() -> None:
    c = Call(BridgeConfig(max_reconnects=1)).start()
    _lose(c, "openai closed")
    _reopen(c)
    c.oa(oa_session())
    _lose(c, "openai closed")
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == "openai session lost (openai closed) after 1 reconnects"


def test_max_reconnects_zero_ends_at_first_loss_and_returns_texts() -> None:
    c = Call(BridgeConfig(max_reconnects=0)).start()
    c.write_texts = False
    c.s.send_user_text("unsent", c.t)
    c.drain()
    _lose(c)
    assert c.s.call_state is CallState.ENDING
    c.close()
    assert c.s.report.undelivered_texts == ["unsent"]


def test_session_dropped_before_created_counts_as_failed_attempt() -> None:
    c = Call(BridgeConfig(reconnect_attempts=2)).start()
    _lose(c)
    _reopen(c)  # no session.created: unproven
    _lose(c, dt=10.0)
    assert c.s.call_state is CallState.RECONNECTING
    c.s.connect_failed("OSError", c.t)
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason is not None and "after 2 attempts" in c.s.end_reason


def test_session_expired_error_asks_for_a_new_session() -> None:
    c = Call().start()
    c.oa(oa_error("session_expired", "Your session hit the maximum duration of 60 minutes."))
    assert c.s.lost_reason == "openai error session_expired"
    c.s.openai_lost(c.s.lost_reason, c.t)
    assert c.s.call_state is CallState.RECONNECTING
    assert c.s.lost_reason is None


def test_fatal_error_ends_the_call() -> None:
    c = Call().start()
    c.oa(oa_error("invalid_api_key", "bad key"))
    assert c.s.call_state is CallState.ENDING
    assert c.s.end_reason == "openai error invalid_api_key"


def test_openai_frames_while_reconnecting_are_ignored() -> None:
    c = Call().start()
    _lose(c)
    assert c.oa(oa_audio("resp_old", "item_old")) is None
    assert c.sent == [c.sent[0]] and c.s.call_state is CallState.RECONNECTING


# ========================================================================== 3. text custody


def test_unwritten_texts_come_back_once_in_order() -> None:
    c = Call().start()
    c.write_texts = False
    for text in ("one", "two", "three"):
        c.s.send_user_text(text, c.t)
        c.drain()
    assert len(c.unwritten) == 1  # the others barge in: held by the machine
    c.s.end_call("bye", c.t)
    c.close()
    assert c.s.report.undelivered_texts == ["one", "two", "three"]
    assert c.s.report.user_texts_sent == 0
    assert [t for batch in c.s.returned_texts for t in batch] == ["one", "two", "three"]
    c.close()
    assert c.s.report.undelivered_texts == ["one", "two", "three"]


def test_a_written_text_is_counted_once_and_not_returned() -> None:
    c = Call().start()
    c.write_texts = False
    c.s.send_user_text("hello", c.t)
    c.drain()
    (frame,) = c.unwritten
    c.s.text_written(frame)
    c.s.text_written(frame)  # reported twice: still once
    c.close()
    assert c.s.report.user_texts_sent == 1
    assert c.s.report.undelivered_texts == []


def test_texts_taken_back_on_loss_are_resent_not_returned() -> None:
    c = Call().start()
    c.write_texts = False
    c.s.send_user_text("first", c.t)
    c.s.send_user_text("second", c.t)
    c.drain()
    old = list(c.unwritten)
    c.unwritten.clear()
    _lose(c)
    for frame in old:  # the writer of the lost socket reports late: not counted
        c.s.text_written(frame)
    assert c.s.report.user_texts_sent == 0
    new = _reopen(c)
    items = [
        e["item"]["content"][0]["text"] for e in new if e["type"] == "conversation.item.create"
    ]
    assert items == ["first", "second"]
    assert [f.text for f in c.unwritten] == ["first", "second"]
    for frame in c.unwritten:
        c.s.text_written(frame)
    c.close()
    assert c.s.report.user_texts_sent == 2
    assert c.s.report.undelivered_texts == []


@pytest.mark.parametrize("written", [False, True])
def test_text_and_its_create_in_flight_at_loss_delivered_once(written: bool) -> None:
    c = Call().start()
    c.oa(oa_session())
    c.write_texts = written
    c.s.send_user_text("hello", c.t)
    c.drain()
    _lose(c)
    new = _reopen(c)
    items = [e for e in new if e["type"] == "conversation.item.create"]
    creates = [e for e in new if e["type"] == "response.create"]
    assert [e["item"]["content"][0]["text"] for e in items] == ["hello"]
    # Written: replayed as history; not written: delivered now.  Either way one answer.
    assert items[0]["event_id"].split("_")[1] == ("history" if written else "restore")
    assert len(creates) == 1 and reasons(creates[0]) == ["user_text"]
    c.write_texts = True
    for frame in c.unwritten:
        c.s.text_written(frame)
    c.close()
    assert c.s.report.user_texts_sent == 1 and c.s.report.undelivered_texts == []


def test_cut_off_greeting_is_retold_alone_then_the_held_text_answered() -> None:
    c = Call(BridgeConfig(greeting="Greet warmly")).start()
    c.oa(oa_session())
    assert reasons(c.creates()[-1]) == ["greeting"]
    c.answer(c.creates()[-1], "resp_g")
    c.oa(oa_audio("resp_g", "item_g"))
    _lose(c)
    c.s.send_user_text("hi", c.t)
    new = _reopen(c)
    creates = [e for e in new if e["type"] == "response.create"]
    assert len(creates) == 1
    assert reasons(creates[0]) == ["reconnect"]
    assert creates[0]["response"]["instructions"] == "Greet warmly"
    c.answer(creates[0], "resp_g2")
    c.oa(oa_audio("resp_g2", "item_g2"))
    c.oa(oa_done("resp_g2"))
    assert reasons(c.creates()[-1]) == ["user_text"]
    assert "instructions" not in c.creates()[-1]["response"]


def test_heard_ms_comes_from_mark_echoes() -> None:
    c = Call().start()
    c.oa(oa_session())
    c.s.request_response(c.t)
    c.drain()
    c.answer(c.creates()[-1], "resp_1")
    for _ in range(3):
        c.oa(oa_audio("resp_1", "item_1"))  # 3 x 20 ms
        c.oa(oa_transcript("resp_1", "item_1", "la "))
    c.oa(oa_audio_done("resp_1", "item_1"))
    marks = [m["mark"]["name"] for m in c.twilio if m["event"] == "mark"]
    assert marks
    for name in marks:
        c.tw(tw_mark(name), 0.06)
    c.oa(oa_done("resp_1"))
    (finished,) = [e for e in c.events if isinstance(e, ResponseFinished)]
    assert finished.heard_ms == 60


def test_texts_held_while_reconnecting_come_back_when_the_call_ends() -> None:
    c = Call().start()
    _lose(c)
    c.s.send_user_text("a", c.t)
    c.s.send_user_text("b", c.t)
    c.s.connect_failed("InvalidStatus", c.t, status=401)
    c.close()
    assert c.s.report.undelivered_texts == ["a", "b"]
    assert c.s.report.user_texts_sent == 0


def test_text_during_barge_in_is_held_then_sent_once() -> None:
    c = Call().start()
    c.oa(oa_session())
    c.s.request_response(c.t)
    c.drain()
    (create,) = c.creates()
    c.answer(create, "resp_1")
    c.oa(oa_audio("resp_1", "item_1"))
    c.s.send_user_text("stop, I meant 43", c.t)
    new = c.drain()
    assert "response.cancel" in c.types(new)
    assert not any(e["type"] == "conversation.item.create" for e in new)  # held
    c.oa(oa_done("resp_1", "cancelled", "client_cancelled"))
    texts = [e for e in c.sent if e["type"] == "conversation.item.create"]
    assert len(texts) == 1
    assert reasons(c.creates()[-1]) == ["user_text"]
    c.close()
    assert c.s.report.user_texts_sent == 1 and c.s.report.undelivered_texts == []

"""A session lost during a rotation, sans-IO: the ready next session takes over at once.

Make before break pays off when the current session dies first: the next one is open and
configured, so it serves the call in the same step, restored as a reconnected session is (the
history up to the loss, held text once, a cut-off answer asked for again, queued requests
carried), and no connection is opened.  A next session still being opened is dropped and the
reconnect rows run (``test_rotation.py``).  Over real sockets: ``test_rotation_e2e.py``.
"""

from __future__ import annotations

import attrs
from test_call_session import (
    oa_audio,
    oa_audio_done,
    oa_done,
    oa_transcript,
    reasons,
    tw_mark,
)
from test_rotation import CONFIG, Rotating, answering, busy_and_ready

from realtime_fsm.call import SessionLost, SessionRestored
from realtime_fsm.table import CallState


def test_lost_while_ready_the_next_session_takes_over_with_the_reconnect_custody() -> None:
    c = busy_and_ready()
    # After the next session was prepared: an answer completes (history it never saw) but
    # still plays, another is cut off mid-way, a request waits behind it.
    c.oa(oa_transcript("resp_2", "item_2", "Part two."))
    c.oa(oa_audio_done("resp_2", "item_2"))
    c.oa(oa_done("resp_2"))
    c.s.request_response(c.t, reason="second")
    c.drain()
    c.answer(c.creates()[-1], "resp_3")
    c.oa(oa_audio("resp_3", "item_3"))
    c.s.request_response(c.t, reason="third")
    c.drain()
    assert c.s.call_state is CallState.READY_TO_SWITCH
    mark, marks_before = len(c.sent), len(c.twilio)
    c.s.openai_lost("openai closed", c.t, audio_dropped=3)
    c.drain()
    # No reconnect: the ready session is current in this very step.
    assert c.s.call_state is CallState.RUNNING
    assert (c.s.generation, c.s.next_generation, c.s.connect_delay) == (1, None, None)
    new = c.since(mark)
    items = [e["item"] for e in new if e["type"] == "conversation.item.create"]
    texts = [item["content"][0]["text"] for item in items]
    assert texts == ["my order is 42", "It ships today.", "Part two."]
    # No second session.update: the next session has this config already.
    assert "session.update" not in c.types(new)
    (create,) = [e for e in new if e["type"] == "response.create"]
    assert reasons(create) == ["reconnect", "third"]  # the cut-off answer first
    assert c.types(new)[-1] == "response.create"
    # Half an answer must not play on over its retelling.
    assert [m["event"] for m in c.twilio[marks_before:]] == ["clear"]
    report = c.s.report
    assert (report.reconnects, report.reconnects_to_ready, report.reconnect_times) == (1, 1, [0.0])
    assert report.rotations == 0 and report.media_dropped == 0  # the driver sends that audio
    assert report.given_up == []
    lost = [e for e in c.events if isinstance(e, SessionLost)]
    restored = [e for e in c.events if isinstance(e, SessionRestored)]
    assert lost == [SessionLost("openai closed")]
    assert restored == [SessionRestored(0.0, 3, 0)]
    # The new session serves the call: the retelling plays on it.
    c.answer(create, "resp_new")
    assert c.oa(oa_audio("resp_new", "item_new")) is not None
    # The next rotation is due rotate_after after the new session opened.
    assert c.s.next_deadline is not None and c.s.next_deadline > c.t


def test_lost_while_ready_a_held_text_is_delivered_once_on_the_new_session() -> None:
    c = busy_and_ready()
    sent_before = c.s.report.user_texts_sent
    c.write_texts = False  # the old socket never wrote what it was given
    c.s.send_user_text("cancel my order", c.t)  # a barge-in: held until resp_2's done
    c.drain()
    assert c.s.call_state is CallState.READY_TO_SWITCH
    mark = len(c.sent)
    c.s.openai_lost("openai closed", c.t)
    c.write_texts = True
    c.drain()
    assert c.s.generation == 1
    new = c.since(mark)
    delivered = [
        e
        for e in new
        if e["type"] == "conversation.item.create" and e["event_id"].startswith("rtfsm_restore_")
    ]
    assert [e["item"]["content"][0]["text"] for e in delivered] == ["cancel my order"]
    (create,) = [e for e in new if e["type"] == "response.create"]
    assert "user_text" in reasons(create)
    assert c.s.report.user_texts_sent == sent_before + 1
    c.close()
    assert c.s.report.undelivered_texts == [] and c.s.returned_texts == []


def test_lost_while_ready_with_the_reconnects_used_up_ends_the_call() -> None:
    c = Rotating(attrs.evolve(CONFIG, max_reconnects=0)).start()
    answering(c, "resp_1")
    c.ready()
    assert c.s.call_state is CallState.READY_TO_SWITCH
    c.s.openai_lost("openai closed", c.t)
    assert c.s.call_state is CallState.ENDING and c.s.next_generation is None
    assert c.s.report.reconnects_to_ready == 0


def test_a_switch_on_loss_then_a_rotation_later() -> None:
    """The session that took over is rotated in its turn, rotate_after after it opened."""
    c = busy_and_ready()
    c.s.openai_lost("openai closed", c.t)
    c.drain()
    (create,) = [e for e in c.sent if e["type"] == "response.create"][-1:]
    c.answer(create, "resp_r")
    c.oa(oa_audio("resp_r", "item_r"))
    c.oa(oa_audio_done("resp_r", "item_r"))
    c.oa(oa_done("resp_r"))
    for m in [m for m in c.twilio if m["event"] == "mark"]:
        c.tw(tw_mark(m["mark"]["name"]))
    c.ready()
    assert c.s.call_state is CallState.RUNNING and c.s.generation == 2
    assert (c.s.report.reconnects_to_ready, c.s.report.rotations) == (1, 1)

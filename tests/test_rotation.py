"""Rotation, sans-IO: the rows of ``running -> rotating -> ready_to_switch -> running``.

A :class:`CallSession` driven by hand (the ``Call`` driver of ``test_call_session``): the clock
a float, the next session's socket a list of frames.  Every frame the session emits for either
OpenAI socket is validated with the ``openai`` package's client-event type, every server frame
fed with its server-event type.  The end-to-end behaviour over real sockets is in
``test_rotation_e2e.py``.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from test_call_session import (
    CLIENT_EVENT,
    Call,
    oa_audio,
    oa_audio_done,
    oa_committed,
    oa_created,
    oa_done,
    oa_error,
    oa_function_call,
    oa_input_transcript,
    oa_session,
    oa_speech_started,
    oa_speech_stopped,
    oa_transcript,
    reasons,
    tw_mark,
    tw_media,
)

from realtime_fsm.call import BridgeConfig, SessionLost, SessionRotated
from realtime_fsm.config import LifecycleConfig
from realtime_fsm.table import CallState

ROTATE = 100.0
#: The lifecycle's own timers far away: the tests move the clock by whole rotations.
SLOW = LifecycleConfig(
    create_timeout=1e4, cancel_timeout=1e4, no_audio_timeout=1e4, stall_timeout=1e4
)
CONFIG = BridgeConfig(
    lifecycle=SLOW,
    tool_timeout=1e4,
    rotate_after=ROTATE,
    rotate_quiet_window=20.0,
    rotate_retry_delay=5.0,
)


def oa_session_updated(fmt: str = "audio/pcmu") -> str:
    frame = json.loads(oa_session("session.updated"))
    frame["session"]["audio"]["output"]["format"] = {"type": fmt}
    if fmt != "audio/pcmu":
        frame["session"]["audio"]["output"]["format"]["rate"] = 24000
    return json.dumps(frame)


class Rotating(Call):
    """``Call`` with the next session's socket: its frames out, and frames fed from it."""

    def __init__(self, config: BridgeConfig = CONFIG, **kw: Any) -> None:
        super().__init__(config, **kw)
        self.next_sent: list[dict[str, Any]] = []

    def due(self) -> None:
        """Time passes to the rotation's deadline and the driver ticks."""
        deadline = self.s.next_deadline
        assert deadline is not None
        self.tick(deadline)

    def open_next(self) -> int | None:
        generation = self.s.next_session_opened(self.t)
        for frame in self.s.out_next:
            CLIENT_EVENT.validate_json(frame)
            self.next_sent.append(json.loads(frame))
        self.s.out_next.clear()
        self.drain()
        return generation

    def next_frame(self, frame: str) -> None:
        self.s.next_session_frame(frame, self.t)
        self.drain()

    def ready(self) -> None:
        """Due, opened, configured: ``ready_to_switch`` (or switched, if quiet already)."""
        self.due()
        assert self.s.call_state is CallState.ROTATING
        assert self.open_next() == self.s.generation + 1
        self.next_frame(oa_session("session.created"))
        assert self.s.call_state is CallState.ROTATING  # the defaults say nothing
        self.next_frame(oa_session_updated())

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.sent[mark:]


def converse(c: Call) -> None:
    """One typed turn and its answer, heard in full: history for the next session."""
    c.oa(oa_session("session.updated"))
    c.s.send_user_text("my order is 42", c.t)
    c.drain()
    c.answer(c.creates()[-1], "resp_1")
    c.oa(oa_audio("resp_1", "item_1"))
    c.oa(oa_transcript("resp_1", "item_1", "It ships today."))
    c.oa(oa_audio_done("resp_1", "item_1"))
    c.oa(oa_done("resp_1"))
    for mark in [m for m in c.twilio if m["event"] == "mark"]:
        c.tw(tw_mark(mark["mark"]["name"]))


def answering(c: Call, response_id: str) -> None:
    """The session configured, and a response of ours created and answered: ``response_id``
    holds the slot."""
    c.oa(oa_session("session.updated"))
    c.s.request_response(c.t)
    c.drain()
    c.answer(c.creates()[-1], response_id)


def busy_and_ready() -> Rotating:
    """A call with history, ready to switch while an answer is generating (never quiet)."""
    c = Rotating().start()
    converse(c)
    c.s.request_response(c.t, reason="first")
    c.drain()
    c.answer(c.creates()[-1], "resp_2")
    c.oa(oa_audio("resp_2", "item_2"))
    c.ready()
    assert c.s.call_state is CallState.READY_TO_SWITCH
    return c


def test_rotation_is_due_at_rotate_after_and_opens_a_next_session() -> None:
    c = Rotating().start()
    assert c.s.next_deadline == pytest.approx(ROTATE)
    c.tick(ROTATE - 1.0)
    assert c.s.call_state is CallState.RUNNING and c.s.next_generation is None
    c.tick(ROTATE)
    assert c.s.call_state is CallState.ROTATING
    assert c.s.next_generation == 1 and c.s.generation == 0
    # The current session goes on: caller audio, frames, the application's calls.
    assert c.tw(tw_media()) is not None
    assert c.s.active
    # Opened: the same session.update, with an event id of its own.
    mark = len(c.sent)
    assert c.open_next() == 1
    (update,) = c.next_sent
    assert update["type"] == "session.update"
    assert update["session"] == c.sent[0]["session"]
    assert update["event_id"] != c.sent[0]["event_id"]
    assert c.since(mark) == []  # nothing for the current socket


def test_a_quiet_session_switches_as_soon_as_the_next_is_ready() -> None:
    c = Rotating().start()
    converse(c)
    mark = len(c.sent)
    c.ready()
    assert c.s.call_state is CallState.RUNNING and c.s.generation == 1
    assert c.s.next_generation is None
    new = c.since(mark)
    # No second session.update (the next session has it), no response: only the history.
    assert [e["type"] for e in new] == ["conversation.item.create"] * 2
    assert [(e["item"]["role"], e["item"]["content"][0]["text"]) for e in new] == [
        ("user", "my order is 42"),
        ("assistant", "It ships today."),
    ]
    assert all(e["event_id"].startswith("rtfsm_history_") for e in new)
    assert not any(m["event"] == "clear" for m in c.twilio)
    report = c.s.report
    assert (report.rotations, report.rotations_at_boundary, report.reconnects) == (1, 0, 0)
    rotated = [e for e in c.events if isinstance(e, SessionRotated)]
    assert rotated == [SessionRotated("quiet", 0.0, 2, 0)]
    # The next rotation is due rotate_after after the new session opened.
    assert c.s.next_deadline == pytest.approx(c.t + ROTATE)
    # The new session serves the call: a response on it plays.
    c.s.request_response(c.t)
    c.drain()
    c.answer(c.creates()[-1], "resp_2")
    assert c.oa(oa_audio("resp_2", "item_2")) is not None


def test_the_switch_waits_for_the_response_and_the_playback() -> None:
    c = Rotating().start()
    converse(c)
    c.s.request_response(c.t)
    c.drain()
    c.answer(c.creates()[-1], "resp_2")
    c.oa(oa_audio("resp_2", "item_2"))
    c.ready()
    assert c.s.call_state is CallState.READY_TO_SWITCH  # a response is generating
    c.oa(oa_transcript("resp_2", "item_2", "More."))
    c.oa(oa_audio_done("resp_2", "item_2"))
    c.oa(oa_done("resp_2"))
    # Done, but the caller still hears it: its mark is out.
    assert c.s.call_state is CallState.READY_TO_SWITCH
    marks = [m["mark"]["name"] for m in c.twilio if m["event"] == "mark"]
    c.tw(tw_mark(marks[-1]))
    assert c.s.call_state is CallState.RUNNING and c.s.report.rotations == 1


def test_the_switch_waits_while_the_callers_turn_is_in_the_making() -> None:
    """From ``speech_started`` to the turn's commit the caller's words are only in the
    current session's input buffer; after it, the turn is answered there, and its transcript
    goes into the history before the switch."""
    c = Rotating().start()
    c.oa(oa_session("session.updated"))
    c.oa(oa_speech_started("u1"))
    c.ready()
    assert c.s.call_state is CallState.READY_TO_SWITCH
    c.tick(c.t + 1.0)
    c.oa(oa_speech_stopped("u1"))
    assert c.s.call_state is CallState.READY_TO_SWITCH  # its commit is still to come
    c.oa(oa_committed("u1"))
    assert c.s.call_state is CallState.READY_TO_SWITCH  # the server owes it an answer
    c.oa(oa_created("resp_vad"))
    c.oa(oa_audio("resp_vad", "item_vad"))
    c.oa(oa_transcript("resp_vad", "item_vad", "Sure."))
    c.oa(oa_audio_done("resp_vad", "item_vad"))
    c.oa(oa_done("resp_vad"))
    marks = [m["mark"]["name"] for m in c.twilio if m["event"] == "mark"]
    c.tw(tw_mark(marks[-1]))
    assert c.s.call_state is CallState.READY_TO_SWITCH  # the turn's words are not in yet
    mark = len(c.sent)
    c.oa(oa_input_transcript("u1", "what time is it"))
    assert c.s.call_state is CallState.RUNNING and c.s.report.rotations == 1
    restored = [e["item"]["content"][0]["text"] for e in c.since(mark)]
    assert restored == ["Sure.", "what time is it"]  # in arrival order, as documented


def test_an_open_tool_call_holds_the_switch() -> None:
    c = Rotating().start()
    answering(c, "resp_t")
    c.oa(oa_function_call("resp_t", "call_1"))
    c.oa(oa_done("resp_t"))
    c.ready()
    assert c.s.call_state is CallState.READY_TO_SWITCH  # the call's output belongs here
    c.s.submit_tool_output("call_1", "{}", c.t, respond=False)
    c.drain()
    c.tick(c.t + 0.1)
    assert c.s.call_state is CallState.RUNNING and c.s.generation == 1


def test_past_the_window_a_response_boundary_carries_the_queue_over() -> None:
    """Responses back to back: never quiet.  Past the window, the done of the current one is
    the boundary: the create its drain made for the old session is withdrawn and asked of the
    new one; the answer still playing is not cleared."""
    c = busy_and_ready()
    c.at(c.t + CONFIG.rotate_quiet_window - 1.0)
    c.s.request_response(c.t, reason="second")  # queued behind resp_2
    c.drain()
    c.oa(oa_transcript("resp_2", "item_2", "Part two."))
    c.oa(oa_done("resp_2"))
    # Inside the window: the next response goes out on the current session.
    assert c.s.call_state is CallState.READY_TO_SWITCH
    assert reasons(c.creates()[-1]) == ["second"]
    c.answer(c.creates()[-1], "resp_3")
    c.oa(oa_audio("resp_3", "item_3"))
    c.at(c.t + 2.0)
    c.s.request_response(c.t, reason="third")
    c.drain()
    mark = len(c.sent)
    c.oa(oa_transcript("resp_3", "item_3", "Part three."))
    c.oa(oa_done("resp_3"))
    assert c.s.call_state is CallState.RUNNING and c.s.generation == 1
    new = c.since(mark)
    kinds = [e["type"] for e in new]
    # Restore, then the carried request: one create, on the new session.
    assert kinds.count("response.create") == 1 and kinds[-1] == "response.create"
    assert reasons(new[-1]) == ["third"]
    items = [e["item"] for e in new if e["type"] == "conversation.item.create"]
    texts = [item["content"][0]["text"] for item in items]
    assert texts[-2:] == ["Part two.", "Part three."]
    assert not any(m["event"] == "clear" for m in c.twilio)
    report = c.s.report
    assert (report.rotations, report.rotations_at_boundary) == (1, 1)
    (rotated,) = [e for e in c.events if isinstance(e, SessionRotated)]
    assert rotated.moment == "boundary" and rotated.requests_carried == 1
    assert report.given_up == []


def test_a_boundary_with_the_answer_still_playing_clears_it_on_a_barge_in() -> None:
    """Switched at a boundary with nothing queued: the old answer plays on at Twilio, and the
    new session's machine knows nothing of it.  The caller speaking over it clears it."""
    c = Rotating().start()
    answering(c, "resp_1")
    c.oa(oa_audio("resp_1", "item_1"))
    c.ready()
    c.at(c.t + CONFIG.rotate_quiet_window)
    c.oa(oa_audio_done("resp_1", "item_1"))
    c.oa(oa_done("resp_1"))
    assert c.s.call_state is CallState.RUNNING and c.s.report.rotations_at_boundary == 1
    assert not any(m["event"] == "clear" for m in c.twilio)
    c.oa(oa_speech_started("u_new"))
    assert [m["event"] for m in c.twilio][-1] == "clear"
    before = len(c.twilio)
    c.oa(oa_speech_stopped("u_new"))
    c.oa(oa_speech_started("u_again"))
    assert len(c.twilio) == before  # once: nothing of the old session plays any more


def test_a_boundary_waits_for_a_turn_the_server_owes() -> None:
    c = Rotating().start()
    answering(c, "resp_1")
    c.oa(oa_audio("resp_1", "item_1"))
    c.ready()
    c.at(c.t + CONFIG.rotate_quiet_window)
    # The caller's turn committed while the answer plays: the server owes it an answer.
    c.oa(oa_speech_started("u1"))
    c.oa(oa_speech_stopped("u1"))
    c.oa(json.dumps(_committed("u1")))
    c.oa(oa_input_transcript("u1", "and the second one"))
    c.oa(oa_done("resp_1", "cancelled", "turn_detected"))
    assert c.s.call_state is CallState.READY_TO_SWITCH
    assert c.s.report.turns_lost == 0


def _committed(item: str) -> dict[str, Any]:
    return {
        "type": "input_audio_buffer.committed",
        "event_id": "event_c1",
        "item_id": item,
        "previous_item_id": None,
    }


def test_a_failed_next_session_keeps_the_call_and_retries_then_gives_up() -> None:
    c = Rotating(attrs.evolve(CONFIG, rotate_attempts=2)).start()
    c.due()
    c.s.next_session_failed("OSError", c.t)
    assert c.s.call_state is CallState.RUNNING and c.s.generation == 0
    assert c.s.next_generation is None
    assert c.s.next_deadline == pytest.approx(c.t + CONFIG.rotate_retry_delay)
    c.due()
    assert c.s.call_state is CallState.ROTATING
    c.open_next()
    c.next_frame(oa_error("server_error", "try again"))
    assert c.s.call_state is CallState.RUNNING
    assert c.s.report.rotation_failures == 2
    assert c.s.next_deadline is None  # given up for this session
    # A late frame of the dropped socket changes nothing.
    c.next_frame(oa_session_updated())
    assert c.s.call_state is CallState.RUNNING and c.s.report.rotations == 0
    # The cap comes: the reconnect rows take over, as without rotation.
    c.oa(oa_error("session_expired", "Your session hit the maximum duration of 60 minutes."))
    assert c.s.lost_reason == "openai error session_expired"
    c.s.openai_lost("openai error session_expired", c.t)
    assert c.s.call_state is CallState.RECONNECTING


def test_a_next_session_on_the_wrong_audio_is_not_switched_to() -> None:
    c = Rotating().start()
    c.due()
    c.open_next()
    c.next_frame(oa_session_updated("audio/pcm"))
    assert c.s.call_state is CallState.RUNNING
    assert c.s.report.rotation_failures == 1 and c.s.report.rotations == 0


def test_an_error_naming_the_next_sessions_update_fails_it_not_the_call() -> None:
    c = Rotating().start()
    c.due()
    c.open_next()
    event_id = c.next_sent[0]["event_id"]
    c.next_frame(oa_error("invalid_value", "bad", event_id=event_id))
    assert c.s.call_state is CallState.RUNNING and c.s.end_reason is None
    assert c.s.report.server_errors == {"invalid_value": 1}


def test_a_session_lost_while_the_next_is_being_configured_drops_it_and_reconnects() -> None:
    """Not ready yet: the next session is dropped and the reconnect rows run (a loss with the
    next one ready is in ``test_rotation_loss.py``)."""
    c = Rotating().start()
    c.due()
    assert c.open_next() == 1
    assert c.s.call_state is CallState.ROTATING
    c.s.openai_lost("openai closed", c.t, audio_dropped=2)
    c.drain()
    assert c.s.call_state is CallState.RECONNECTING and c.s.next_generation is None
    assert any(isinstance(e, SessionLost) for e in c.events)
    c.s.session_opened(c.t)
    c.drain()
    assert c.s.call_state is CallState.RUNNING and c.s.generation == 1
    assert c.s.report.reconnects == 1 and c.s.report.rotations == 0
    assert c.s.report.reconnects_to_ready == 0 and c.s.report.media_dropped == 2
    assert c.s.next_deadline == pytest.approx(c.t + ROTATE)
    # The dropped next socket's late frames change nothing.
    c.next_frame(oa_session_updated())
    assert c.s.call_state is CallState.RUNNING and c.s.generation == 1


def test_ending_while_rotating_drops_the_next_session() -> None:
    c = Rotating().start()
    c.due()
    c.s.end_call("bye", c.t)
    assert c.s.call_state is CallState.ENDING and c.s.next_generation is None
    assert c.s.next_session_opened(c.t) is None  # a socket opened too late is not wanted


def test_a_config_change_after_the_next_session_was_configured_is_sent_at_the_switch() -> None:
    c = Rotating().start()
    answering(c, "resp_1")
    c.ready()
    c.s.update_session(c.t, session=attrs.evolve(CONFIG.session, instructions="Be terse."))
    c.drain()
    mark = len(c.sent)
    c.oa(oa_done("resp_1"))
    assert c.s.generation == 1
    new = c.since(mark)
    assert new[0]["type"] == "session.update"
    assert new[0]["session"]["instructions"] == "Be terse."


def test_caller_audio_is_forwarded_to_the_current_session_throughout() -> None:
    c = Rotating().start()
    c.oa(oa_speech_started("u1"))
    assert c.tw(tw_media(1)) is not None
    c.due()
    assert c.tw(tw_media(2)) is not None
    c.open_next()
    c.next_frame(oa_session_updated())
    assert c.s.call_state is CallState.READY_TO_SWITCH
    assert c.tw(tw_media(3)) is not None
    c.oa(oa_speech_stopped("u1"))
    assert c.tw(tw_media(4)) is not None
    c.oa(oa_committed("u1"))
    assert c.tw(tw_media(5)) is not None
    assert c.s.report.media_in == 5 and c.s.report.media_dropped == 0


@pytest.mark.parametrize(
    "config, can_reconnect",
    [(attrs.evolve(CONFIG, rotate_after=None), True), (CONFIG, False)],
    ids=["rotate_after=None", "no connector"],
)
def test_no_rotation_without_rotate_after_or_a_connector(
    config: BridgeConfig, can_reconnect: bool
) -> None:
    c = Rotating(config, can_reconnect=can_reconnect).start()
    assert c.s.next_deadline is None
    c.tick(10 * ROTATE)
    assert c.s.call_state is CallState.RUNNING and c.s.next_generation is None


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_rotate_after_must_be_positive(value: float) -> None:
    with pytest.raises(ValueError, match="rotate_after"):
        BridgeConfig(rotate_after=value)

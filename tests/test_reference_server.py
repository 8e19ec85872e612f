"""Unit tests of the reference server model itself (``tests/reference_server.py``).

The property tests trust the model's rules; these pin them down one at a time, each asserting the
exact events the model emits, so a change to a rule shows up here before it quietly changes what
the lifecycle tests explore.  Responses are kept short (one transcript chunk, one audio chunk)."""

from __future__ import annotations

from typing import Any

import pytest
from reference_server import (
    BUSY_CODE,
    CANCEL_NOT_ACTIVE_CODE,
    CANCEL_NOT_ACTIVE_MESSAGE,
    OLD_BUSY_MESSAGE,
    REFUSED_MESSAGE,
    ReferenceServer,
    ServerEvent,
    Turn,
    busy_message,
)

from realtime_fsm import (
    META_EVENT_ID,
    AudioDelta,
    ResponseCreated,
    ResponseDone,
    SendResponseCancel,
    SendResponseCreate,
    SendUserText,
    ServerError,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    UserTurnCommitted,
)


def server(**kwargs: Any) -> ReferenceServer:
    kwargs.setdefault("audio_chunks", 1)
    kwargs.setdefault("transcript_chunks", 1)
    return ReferenceServer(**kwargs)


def create(event_id: str, *, out_of_band: bool = False) -> SendResponseCreate:
    return SendResponseCreate(
        event_id=event_id,
        reason="app",
        metadata={META_EVENT_ID: event_id},
        out_of_band=out_of_band,
    )


def cancel(event_id: str, response_id: str | None = None) -> SendResponseCancel:
    return SendResponseCancel(event_id=event_id, response_id=response_id)


def drain(srv: ReferenceServer) -> list[ServerEvent]:
    """Everything the server has sent so far, in order (and an empty outbox)."""
    events = list(srv.outbox)
    srv.outbox.clear()
    return events


def created(rid: str, event_id: str) -> ResponseCreated:
    return ResponseCreated(rid, metadata={META_EVENT_ID: event_id})


def body(rid: str, item_id: str) -> list[ServerEvent]:
    """A one-chunk response's deltas: transcript first, then audio."""
    return [TranscriptDelta(rid, item_id), AudioDelta(rid, item_id, 160)]


def stream_all(srv: ReferenceServer, rid: str) -> None:
    while rid in srv.streaming():
        srv.step(rid)


def busy(rid: str, event_id: str | None) -> ServerError:
    return ServerError(code=BUSY_CODE, message=busy_message(rid), event_id=event_id)


def not_active(event_id: str | None) -> ServerError:
    return ServerError(
        code=CANCEL_NOT_ACTIVE_CODE, message=CANCEL_NOT_ACTIVE_MESSAGE, event_id=event_id
    )


# ----------------------------------------------------------------------- today's behaviour


def test_default_response_is_created_streamed_and_completed() -> None:
    srv = server()
    srv.receive(create("e1"))
    assert srv.streaming() == ["resp_1"]
    stream_all(srv, "resp_1")
    assert drain(srv) == [
        created("resp_1", "e1"),
        *body("resp_1", "item_1"),
        ResponseDone("resp_1", status="completed"),
    ]
    resp = srv.responses["resp_1"]
    assert (resp.status, resp.cancel_source) == ("completed", None)
    assert (resp.started_seq, resp.ended_seq) == (2, 5)  # receive is 1, then four events
    assert srv.default is None and srv.seq == 5


def test_prompt_cancel_ends_the_response_at_once() -> None:
    srv = server()
    srv.receive(create("e1"))
    srv.receive(cancel("c1", "resp_1"))
    assert drain(srv) == [
        created("resp_1", "e1"),
        ResponseDone("resp_1", status="cancelled", reason="client_cancelled"),
    ]
    assert srv.responses["resp_1"].cancel_source == "client"
    assert srv.responses["resp_1"].status == "cancelled"
    assert srv.pending_cancels() == []
    with pytest.raises(ValueError):
        srv.ack_cancel()


def test_cancel_with_nothing_active_is_an_error() -> None:
    srv = server()
    srv.receive(cancel("c1"))
    assert drain(srv) == [not_active("c1")]


def test_busy_error_names_the_active_response() -> None:
    srv = server()
    srv.receive(create("e1"))
    srv.receive(create("e2"))
    assert drain(srv) == [created("resp_1", "e1"), busy("resp_1", "e2")]
    assert [v.kind for v in srv.violations] == ["create_while_active"]


def test_old_busy_wording_has_no_code_and_no_id() -> None:
    srv = server(old_busy_wording=True)
    srv.receive(create("e1"))
    srv.receive(create("e2"))
    assert drain(srv) == [
        created("resp_1", "e1"),
        ServerError(code=None, message=OLD_BUSY_MESSAGE, event_id="e2"),
    ]


def test_old_busy_wording_without_echo() -> None:
    srv = server(old_busy_wording=True, echo_event_ids=False)
    srv.receive(create("e1"))
    srv.receive(create("e2"))
    assert drain(srv)[1] == ServerError(code=None, message=OLD_BUSY_MESSAGE, event_id=None)


def test_unknown_cancel_ack_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        ReferenceServer(cancel_ack="eventually")


# ------------------------------------------------------------------------ slow and lost acks


@pytest.mark.parametrize("mode", ["slow", "lost"])
def test_requested_cancel_keeps_the_slot_and_the_stream(mode: str) -> None:
    srv = server(cancel_ack=mode)
    srv.receive(create("e1"))
    srv.receive(cancel("c1", "resp_1"))
    assert srv.pending_cancels() == ["resp_1"]
    assert srv.streaming() == ["resp_1"]
    srv.receive(create("e2"))  # still busy: the create is rejected, naming it
    srv.step("resp_1")
    assert drain(srv) == [
        created("resp_1", "e1"),
        busy("resp_1", "e2"),
        TranscriptDelta("resp_1", "item_1"),
    ]
    assert srv.responses["resp_1"].status == "in_progress"


@pytest.mark.parametrize("mode", ["slow", "lost"])
def test_a_second_cancel_changes_nothing(mode: str) -> None:
    srv = server(cancel_ack=mode)
    srv.receive(create("e1"))
    srv.receive(cancel("c1", "resp_1"))
    srv.receive(cancel("c2"))  # id-less: the same default response
    srv.receive(cancel("c3", "resp_1"))
    assert drain(srv) == [created("resp_1", "e1")]
    assert srv.pending_cancels() == ["resp_1"]
    assert srv.notes == {"cancel_requested": 1, "cancel_repeated": 2}


def test_slow_ack_ends_the_response_cancelled() -> None:
    srv = server(cancel_ack="slow")
    srv.receive(create("e1"))
    srv.receive(cancel("c1"))
    srv.ack_cancel()
    assert drain(srv) == [
        created("resp_1", "e1"),
        ResponseDone("resp_1", status="cancelled", reason="client_cancelled"),
    ]
    resp = srv.responses["resp_1"]
    assert (resp.status, resp.cancel_source, resp.ended_seq) == ("cancelled", "client", srv.seq)
    assert srv.pending_cancels() == [] and srv.default is None and srv.streaming() == []


def test_lost_ack_ends_the_response_without_response_done() -> None:
    srv = server(cancel_ack="lost")
    srv.receive(create("e1"))
    srv.receive(cancel("c1", "resp_1"))
    srv.ack_cancel("resp_1")
    assert drain(srv) == [created("resp_1", "e1")]
    resp = srv.responses["resp_1"]
    assert (resp.status, resp.cancel_source) == ("cancelled", "client")
    assert resp.ended_seq == srv.seq == 3  # receive, created, receive: no event for the end
    assert srv.default is None and srv.pending_cancels() == []
    srv.receive(create("e2"))  # the slot is free again
    assert drain(srv) == [created("resp_2", "e2")]


@pytest.mark.parametrize("mode", ["slow", "lost"])
def test_cancel_racing_completion_ends_completed(mode: str) -> None:
    srv = server(cancel_ack=mode)
    srv.receive(create("e1"))
    srv.receive(cancel("c1", "resp_1"))
    stream_all(srv, "resp_1")
    assert drain(srv) == [
        created("resp_1", "e1"),
        *body("resp_1", "item_1"),
        ResponseDone("resp_1", status="completed"),
    ]
    assert srv.pending_cancels() == []
    assert srv.responses["resp_1"].cancel_source is None
    with pytest.raises(ValueError):
        srv.ack_cancel("resp_1")


@pytest.mark.parametrize("mode", ["slow", "lost"])
def test_finish_first_completes_and_drops_the_cancel(mode: str) -> None:
    srv = server(cancel_ack=mode)
    srv.receive(create("e1"))
    srv.receive(cancel("c1"))
    srv.finish_first()
    assert drain(srv) == [created("resp_1", "e1"), ResponseDone("resp_1", status="completed")]
    assert srv.responses["resp_1"].status == "completed"
    assert srv.pending_cancels() == [] and srv.default is None


def test_pending_cancels_are_kept_oldest_first_across_conversations() -> None:
    srv = server(cancel_ack="slow")
    srv.receive(create("o1", out_of_band=True))
    srv.receive(create("e1"))
    srv.receive(cancel("c1", "resp_2"))
    srv.receive(cancel("c2", "resp_1"))  # out-of-band: cancelled by id
    assert srv.pending_cancels() == ["resp_2", "resp_1"]
    srv.ack_cancel("resp_1")
    srv.ack_cancel()
    assert drain(srv)[2:] == [
        ResponseDone("resp_1", status="cancelled", reason="client_cancelled"),
        ResponseDone("resp_2", status="cancelled", reason="client_cancelled"),
    ]


def test_idless_cancel_never_reaches_out_of_band_in_slow_mode() -> None:
    srv = server(cancel_ack="slow")
    srv.receive(create("o1", out_of_band=True))
    srv.receive(cancel("c1"))
    assert drain(srv)[1:] == [not_active("c1")]
    assert srv.pending_cancels() == []


def test_ack_for_a_response_without_a_pending_cancel_is_refused() -> None:
    srv = server(cancel_ack="slow")
    srv.receive(create("e1"))
    with pytest.raises(ValueError):
        srv.ack_cancel("resp_1")
    with pytest.raises(ValueError):
        srv.finish_first()


@pytest.mark.parametrize("mode", ["slow", "lost"])
def test_vad_interrupt_ends_a_cancel_requested_response(mode: str) -> None:
    srv = server(cancel_ack=mode, turn_detection=True, interrupt_response=True)
    srv.receive(create("e1"))
    srv.receive(cancel("c1"))
    srv.speech_started()
    assert drain(srv) == [
        created("resp_1", "e1"),
        SpeechStarted(item_id="item_user_1"),
        ResponseDone("resp_1", status="cancelled", reason="turn_detected"),
    ]
    assert srv.responses["resp_1"].cancel_source == "vad"
    assert srv.pending_cancels() == []


# ---------------------------------------------------------------------------- late created


def test_withheld_response_takes_the_slot_and_is_overtaken_by_the_busy_error() -> None:
    srv = server(late_created=True)
    srv.receive(create("e1"))
    assert drain(srv) == []
    assert srv.withheld() == ["resp_1"]
    assert srv.default is not None and srv.default.id == "resp_1"
    assert srv.streaming() == []
    assert not srv.step()  # nothing streamable
    srv.receive(create("e2"))
    assert drain(srv) == [busy("resp_1", "e2")]
    srv.release_created()
    assert srv.withheld() == [] and srv.streaming() == ["resp_1"]
    stream_all(srv, "resp_1")
    assert drain(srv) == [
        created("resp_1", "e1"),
        *body("resp_1", "item_1"),
        ResponseDone("resp_1", status="completed"),
    ]


def test_withheld_events_count_when_made_not_when_released() -> None:
    srv = server(late_created=True)
    srv.receive(create("e1"))  # seq 1, its response.created withheld at seq 2
    srv.receive(create("e2"))  # seq 3, busy error seq 4
    srv.release_created("resp_1")
    assert srv.responses["resp_1"].started_seq == 2
    assert srv.seq == 4


def test_prompt_cancel_of_a_withheld_response_flushes_it_first() -> None:
    srv = server(late_created=True)
    srv.receive(create("e1"))
    srv.receive(cancel("c1"))
    assert drain(srv) == [
        created("resp_1", "e1"),
        ResponseDone("resp_1", status="cancelled", reason="client_cancelled"),
    ]
    assert srv.withheld() == []


def test_vad_interrupt_of_a_withheld_response_flushes_it_first() -> None:
    srv = server(late_created=True, turn_detection=True, interrupt_response=True)
    srv.receive(create("e1"))
    srv.speech_started()
    assert drain(srv) == [
        SpeechStarted(item_id="item_user_1"),
        created("resp_1", "e1"),
        ResponseDone("resp_1", status="cancelled", reason="turn_detected"),
    ]
    assert srv.withheld() == []


def test_slow_ack_of_a_withheld_response_flushes_it_first() -> None:
    srv = server(late_created=True, cancel_ack="slow")
    srv.receive(create("e1"))
    srv.receive(cancel("c1"))
    assert drain(srv) == []
    srv.ack_cancel()
    assert drain(srv) == [
        created("resp_1", "e1"),
        ResponseDone("resp_1", status="cancelled", reason="client_cancelled"),
    ]


def test_lost_ack_of_a_withheld_response_sends_only_its_withheld_events() -> None:
    srv = server(late_created=True, cancel_ack="lost")
    srv.receive(create("e1"))
    srv.receive(cancel("c1"))
    srv.ack_cancel()
    assert drain(srv) == [created("resp_1", "e1")]
    assert srv.withheld() == [] and srv.default is None


def test_finish_first_of_a_withheld_response_flushes_it_first() -> None:
    srv = server(late_created=True, cancel_ack="slow")
    srv.receive(create("e1"))
    srv.receive(cancel("c1"))
    srv.finish_first()
    assert drain(srv) == [created("resp_1", "e1"), ResponseDone("resp_1", status="completed")]


def test_released_response_buffers_nothing_more() -> None:
    srv = server(late_created=True)
    srv.receive(create("e1"))
    srv.release_created("resp_1")
    srv.step()
    assert drain(srv) == [created("resp_1", "e1"), TranscriptDelta("resp_1", "item_1")]
    with pytest.raises(ValueError):
        srv.release_created()
    with pytest.raises(ValueError):
        srv.release_created("resp_1")


def test_server_and_out_of_band_responses_are_never_withheld() -> None:
    srv = server(late_created=True, turn_detection=True, create_response=True)
    srv.receive(create("o1", out_of_band=True))
    srv.speech_started()
    srv.speech_stopped()
    assert drain(srv) == [
        ResponseCreated("resp_1", out_of_band=True, metadata={META_EVENT_ID: "o1"}),
        SpeechStarted(item_id="item_user_1"),
        SpeechStopped(item_id="item_user_1"),
        UserTurnCommitted(item_id="item_user_1"),
        ResponseCreated("resp_2"),
    ]
    stream_all(srv, "resp_2")
    srv.idle_timeout()
    assert drain(srv)[-1] == ResponseCreated("resp_3")
    assert srv.withheld() == []


# ------------------------------------------------------------------ refused and swallowed


def test_refused_create_gets_an_error_and_no_response() -> None:
    srv = server(refuse_next_create="invalid_value")
    srv.receive(create("e1"))
    assert drain(srv) == [ServerError(code="invalid_value", message=REFUSED_MESSAGE, event_id="e1")]
    assert srv.refuse_next_create is None and srv.default is None and srv.responses == {}
    srv.receive(create("e2"))
    assert drain(srv) == [created("resp_1", "e2")]


def test_refused_create_without_echo() -> None:
    srv = server(refuse_next_create="invalid_value", echo_event_ids=False)
    srv.receive(create("e1"))
    assert drain(srv) == [ServerError(code="invalid_value", message=REFUSED_MESSAGE)]


def test_a_busy_create_does_not_use_up_the_refusal() -> None:
    srv = server()
    srv.receive(create("e1"))
    srv.refuse_next_create = "invalid_value"
    srv.receive(create("e2"))
    assert srv.refuse_next_create == "invalid_value"
    stream_all(srv, "resp_1")
    srv.receive(create("e3"))
    events = drain(srv)
    assert events[1] == busy("resp_1", "e2")
    assert events[-1] == ServerError(code="invalid_value", message=REFUSED_MESSAGE, event_id="e3")
    assert srv.refuse_next_create is None


def test_out_of_band_creates_are_not_refused_or_swallowed() -> None:
    srv = server(refuse_next_create="invalid_value", swallow_next_create=True)
    srv.receive(create("o1", out_of_band=True))
    assert drain(srv) == [
        ResponseCreated("resp_1", out_of_band=True, metadata={META_EVENT_ID: "o1"})
    ]
    assert srv.refuse_next_create == "invalid_value" and srv.swallow_next_create


def test_swallowed_create_gets_no_answer_at_all() -> None:
    srv = server(swallow_next_create=True)
    srv.receive(create("e1"))
    assert drain(srv) == []
    assert srv.default is None and srv.responses == {} and srv.violations == []
    assert not srv.swallow_next_create and srv.notes == {"swallowed": 1}
    srv.receive(create("e2"))
    assert drain(srv) == [created("resp_1", "e2")]


def test_swallowed_create_while_busy_gets_no_busy_error() -> None:
    srv = server()
    srv.receive(create("e1"))
    srv.swallow_next_create = True
    srv.receive(create("e2"))
    assert drain(srv) == [created("resp_1", "e1")]
    assert srv.default is not None and srv.default.id == "resp_1"


# ------------------------------------------------------------------------------ idle timeout


def test_idle_timeout_needs_turn_detection_when_enforced() -> None:
    with pytest.raises(ValueError):
        server(idle_timeout_needs_vad=True).idle_timeout()
    srv = server(idle_timeout_needs_vad=True, turn_detection=True)
    assert srv.idle_timeout()
    assert drain(srv) == [ResponseCreated("resp_1")]
    assert srv.responses["resp_1"].origin == "idle_timeout"


def test_idle_timeout_without_turn_detection_still_works_by_default() -> None:
    srv = server()
    assert srv.idle_timeout()
    assert not srv.idle_timeout()  # the slot is busy
    assert drain(srv) == [ResponseCreated("resp_1")]


# ------------------------------------------------------------------------------ bookkeeping


def test_turns_texts_and_responses_are_stamped_with_seq() -> None:
    srv = server(turn_detection=True, create_response=True, interrupt_response=True)
    srv.speech_started()  # 1 speech_started
    srv.speech_stopped()  # 2 speech_stopped, 3 committed, 4 response.created
    srv.receive(SendUserText(event_id="u1", text="hi"))  # 5
    srv.speech_started()  # 6 speech_started, 7 response.done (turn_detected)
    srv.speech_stopped()  # 8, 9, 10 response.created
    stream_all(srv, "resp_2")  # 11, 12, 13 response.done
    assert srv.turns == [Turn("item_user_1", 3), Turn("item_user_2", 9)]
    assert srv.user_texts == ["hi"] and srv.user_text_seqs == [5]
    first, second = srv.responses["resp_1"], srv.responses["resp_2"]
    assert (first.started_seq, first.ended_seq, first.status, first.cancel_source) == (
        4,
        7,
        "cancelled",
        "vad",
    )
    assert (second.started_seq, second.ended_seq, second.status, second.cancel_source) == (
        10,
        13,
        "completed",
        None,
    )
    assert srv.seq == 13
    assert [type(e).__name__ for e in drain(srv)] == [
        "SpeechStarted",
        "SpeechStopped",
        "UserTurnCommitted",
        "ResponseCreated",
        "SpeechStarted",
        "ResponseDone",
        "SpeechStopped",
        "UserTurnCommitted",
        "ResponseCreated",
        "TranscriptDelta",
        "AudioDelta",
        "ResponseDone",
    ]


def test_running_response_has_no_end_yet() -> None:
    srv = server()
    srv.receive(create("e1"))
    resp = srv.responses["resp_1"]
    assert (resp.status, resp.ended_seq, resp.cancel_source) == ("in_progress", None, None)

"""``CallSession`` driven by hand (no sockets, no asyncio, a float clock): tool calls, the
application's events, and the regressions these sans-IO tests found.  The frames and the ``Call``
driver are test_call_session's.
"""

from __future__ import annotations

import json

import pytest
from test_call_session import (
    STREAM,
    Call,
    oa_audio,
    oa_audio_done,
    oa_committed,
    oa_created,
    oa_done,
    oa_function_call,
    oa_output_added,
    oa_session,
    oa_speech_started,
    oa_speech_stopped,
    oa_transcript,
    reasons,
    tw_dtmf,
)
from test_call_session_loss import _lose, _reopen

from realtime_fsm.call import (
    AssistantTranscript,
    AudioTruncated,
    BargeIn,
    BridgeConfig,
    CallEnded,
    CallStarted,
    ResponseFinished,
    ResponseStarted,
    ToolCall,
    ToolResult,
)
from realtime_fsm.errors import LocalProtocolError
from realtime_fsm.table import CallState

# ================================================================================= 4. tools


def _tool_call(c: Call, rid: str = "resp_1", calls: tuple[str, ...] = ("call_1",)) -> None:
    c.oa(oa_session())
    c.s.request_response(c.t)
    c.drain()
    c.answer(c.creates()[-1], rid)
    for call_id in calls:
        c.oa(oa_function_call(rid, call_id, arguments='{"order": 42}'))


def test_completed_function_call_is_a_tool_call() -> None:
    c = Call().start()
    _tool_call(c)
    (call,) = c.s.tool_calls
    assert call == ToolCall("call_1", "lookup", '{"order": 42}', "resp_1")
    assert call in c.events
    assert c.s.report.tool_calls == 1


def test_incomplete_function_call_is_not_run() -> None:
    c = Call().start()
    c.s.request_response(c.t)
    c.drain()
    c.answer(c.creates()[-1], "resp_1")
    c.oa(oa_function_call("resp_1", "call_1", arguments='{"ord', status="incomplete"))
    assert c.s.tool_calls == []
    assert c.s.report.tool_calls == 0
    with pytest.raises(LocalProtocolError):
        c.s.submit_tool_output("call_1", "{}", c.t)


def test_unknown_call_id_raises() -> None:
    c = Call().start()
    with pytest.raises(LocalProtocolError):
        c.s.submit_tool_output("call_nope", "{}", c.t)


def test_output_now_follow_up_after_calling_response_done() -> None:
    c = Call().start()
    _tool_call(c)
    c.s.submit_tool_output("call_1", '{"status": "shipped"}', c.t + 0.5)
    new = c.drain()
    assert new == [
        {
            "type": "conversation.item.create",
            "event_id": new[0]["event_id"],
            "item": {
                "type": "function_call_output",
                "call_id": "call_1",
                "output": '{"status": "shipped"}',
            },
        }
    ]
    assert len(c.creates()) == 1  # not yet: the calling response still holds the slot
    c.oa(oa_output_added("call_1"))
    c.oa(oa_done("resp_1"))
    assert len(c.creates()) == 2
    assert reasons(c.creates()[-1]) == ["tool"]
    (result,) = [e for e in c.events if isinstance(e, ToolResult)]
    assert result.call_id == "call_1" and result.ok
    with pytest.raises(LocalProtocolError):  # already answered
        c.s.submit_tool_output("call_1", "{}", c.t)


def test_output_after_done_asks_at_once() -> None:
    c = Call().start()
    _tool_call(c)
    c.oa(oa_done("resp_1"))
    assert len(c.creates()) == 1
    c.s.submit_tool_output("call_1", "{}", c.t)
    c.drain()
    assert c.types()[-2:] == ["conversation.item.create", "response.create"]
    assert reasons(c.creates()[-1]) == ["tool"]


def test_two_parallel_calls_one_follow_up() -> None:
    c = Call().start()
    _tool_call(c, calls=("call_1", "call_2"))
    c.oa(oa_done("resp_1"))
    c.s.submit_tool_output("call_2", "b", c.t)
    c.drain()
    assert len(c.creates()) == 1
    c.s.submit_tool_output("call_1", "a", c.t)
    c.drain()
    assert len(c.creates()) == 2
    assert reasons(c.creates()[-1]) == ["tool"]


def test_unanswered_call_gets_an_error_output_at_next_deadline() -> None:
    c = Call(BridgeConfig(tool_timeout=5.0)).start()
    _tool_call(c)
    c.oa(oa_done("resp_1"))
    deadline = c.s.next_deadline
    assert deadline == pytest.approx(c.t + 5.0 + 1.0)
    c.tick(deadline - 0.01)
    assert len(c.creates()) == 1
    c.tick(deadline)
    out = [e for e in c.sent if e["type"] == "conversation.item.create"]
    assert out[-1]["item"]["call_id"] == "call_1"
    assert "did not answer in time" in out[-1]["item"]["output"]
    assert c.s.report.tool_failures == 1
    assert reasons(c.creates()[-1]) == ["tool"]
    with pytest.raises(LocalProtocolError):
        c.s.submit_tool_output("call_1", "late", c.t)


def test_vad_response_after_outputs_added_withdraws_the_follow_up() -> None:
    c = Call().start()
    _tool_call(c)
    c.oa(oa_done("resp_1"))
    # The caller talks while the tool runs: the server's VAD owes the turn an answer.
    c.oa(oa_speech_started("u1"))
    c.oa(oa_speech_stopped("u1"))
    c.oa(oa_committed("u1"))
    c.s.submit_tool_output("call_1", "{}", c.t)
    c.drain()
    assert len(c.creates()) == 1  # queued behind the server's answer
    c.oa(oa_output_added("call_1"))
    c.oa(oa_created("resp_vad"))  # after the output was added: it answers it
    c.oa(oa_done("resp_vad"))
    c.tick(c.t + 30.0)
    assert len(c.creates()) == 1  # withdrawn: no second answer


def test_vad_response_before_output_added_keeps_the_follow_up() -> None:
    c = Call().start()
    _tool_call(c)
    c.oa(oa_done("resp_1"))
    c.oa(oa_speech_started("u1"))
    c.oa(oa_committed("u1"))
    c.s.submit_tool_output("call_1", "{}", c.t)
    c.drain()
    c.oa(oa_created("resp_vad"))  # the output not yet in the conversation
    c.oa(oa_output_added("call_1"))
    c.oa(oa_done("resp_vad"))
    assert len(c.creates()) == 2
    assert "tool" in reasons(c.creates()[-1])


def test_open_tool_calls_die_with_the_session() -> None:
    c = Call().start()
    _tool_call(c)
    _lose(c)
    with pytest.raises(LocalProtocolError):
        c.s.submit_tool_output("call_1", "{}", c.t)
    _reopen(c)
    with pytest.raises(LocalProtocolError):
        c.s.submit_tool_output("call_1", "{}", c.t)


# ============================================================================ 5. app events


def test_app_events_of_a_simple_call() -> None:
    c = Call().start(params={"caller": "Jane"})
    c.oa(oa_session())
    c.s.request_response(c.t, reason="greet")
    c.drain()
    c.answer(c.creates()[-1], "resp_1")
    media = c.oa(oa_audio("resp_1", "item_1"))
    assert media is not None and json.loads(media)["event"] == "media"
    c.oa(oa_transcript("resp_1", "item_1", "Hello "))
    c.oa(oa_transcript("resp_1", "item_1", "Jane."))
    c.oa(oa_audio_done("resp_1", "item_1"))
    c.oa(oa_done("resp_1"))
    # Still playing at Twilio when the caller talks: a barge-in (playback cleared).
    c.oa(oa_speech_started("u1"), 0.01)
    c.s.end_call("bye", c.t)
    c.close()
    kinds = [type(e) for e in c.events]
    assert kinds == [
        CallStarted,
        ResponseStarted,
        AssistantTranscript,
        AssistantTranscript,
        AssistantTranscript,
        ResponseFinished,
        BargeIn,
        AudioTruncated,
        CallEnded,
    ]
    started = c.events[0]
    assert started.custom_parameters == {"caller": "Jane"}
    assert started.encoding == "audio/x-mulaw" and started.sample_rate == 8000
    assert c.events[1] == ResponseStarted("resp_1", True, ("greet",))
    assert c.events[2:5] == [
        AssistantTranscript("resp_1", "Hello ", False),
        AssistantTranscript("resp_1", "Jane.", False),
        AssistantTranscript("resp_1", "Hello Jane.", True),
    ]
    assert c.events[5].response_id == "resp_1" and c.events[5].status == "completed"
    assert c.events[6].source == "speech"
    # Nothing of item_1 was heard (no mark echo): deleted, all its audio unheard.
    assert c.events[7] == AudioTruncated("item_1", 0, 20, "resp_1")
    assert {"event": "clear", "streamSid": STREAM} in c.twilio
    assert c.events[-1].reason == "bye" and c.events[-1].report is c.s.report


def test_server_response_is_not_ours() -> None:
    c = Call().start()
    c.oa(oa_created("resp_vad"))
    assert c.events[-1] == ResponseStarted("resp_vad", False, ())


def test_no_events_unless_asked() -> None:
    c = Call()
    c.s.emit_events = False
    c.start()
    c.close()
    assert c.events == []


# ============================================= regressions: bugs this file found, fixed


@pytest.mark.parametrize("how", ["refused", "end_call", "max_reconnects"])
def test_lifecycle_stats_not_double_counted_after_a_loss(how: str) -> None:
    c = Call(BridgeConfig(max_reconnects=0 if how == "max_reconnects" else 20)).start()
    c.oa(oa_session())
    c.oa(oa_created("resp_vad"))
    c.oa(oa_audio("resp_vad", "item_1"))
    c.oa(oa_done("resp_vad"))
    assert c.s.machine is not None
    live = dict(c.s.machine.stats)
    assert live.get("server_created_responses") == 1
    _lose(c)
    if how == "refused":
        c.s.connect_failed("InvalidStatus", c.t, status=401)
    elif how == "end_call":
        c.s.end_call("bye", c.t)
    assert c.s.call_state is CallState.ENDING
    c.close()
    assert c.s.report.lifecycle_stats == live


@pytest.mark.parametrize("when", ["ended", "ending_after_loss"])
def test_dtmf_after_the_end_does_not_raise(when: str) -> None:
    c = Call().start()
    if when == "ended":
        c.s.end_call("bye", c.t)
        c.close()
    else:
        _lose(c)
        c.s.connect_failed("InvalidStatus", c.t, status=401)
    c.tw(tw_dtmf("5"))  # peer input: never raises
    c.close()
    assert c.s.report.undelivered_texts in ([], ["DTMF 5"])


def test_function_call_reported_twice_runs_once() -> None:
    c = Call().start()
    _tool_call(c)
    c.s.submit_tool_output("call_1", "{}", c.t)
    c.drain()
    c.oa(oa_function_call("resp_1", "call_1", arguments='{"order": 42}'))  # the same item again
    c.oa(oa_done("resp_1"))
    assert len(c.s.tool_calls) == 1
    assert c.s.report.tool_calls == 1
    assert reasons(c.creates()[-1]) == ["tool"]

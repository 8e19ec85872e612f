"""Responses of the current reasoning models, frame by frame: several output items per response
(a spoken preamble, then a tool call or a second message), silent thinking before the first
item and between items, and the server VAD's idle timeout (``openai-realtime.md`` §5, §8.4,
§10, §11).

Sans-IO: every OpenAI frame is validated by the ``openai`` package's server-event union and
fed to a :class:`~realtime_fsm.call.CallSession` (``test_call_session.Call``); Twilio's side is
:class:`Phone`, which plays the media it is sent in order and in real time on the test's clock
and echoes each mark when the audio before it has played.  What the caller *heard* is the
phone's count, not the bridge's.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from test_call_session import (
    PAYLOAD,
    SERVER_EVENT,
    Call,
    oa_audio,
    oa_audio_done,
    oa_committed,
    oa_created,
    oa_done,
    oa_speech_started,
    oa_speech_stopped,
    oa_transcript,
    tw_mark,
)

from realtime_fsm import (
    IdleTimeoutTriggered,
    SessionConfigured,
)
from realtime_fsm.call import BridgeConfig
from realtime_fsm.openai_realtime import (
    FunctionCallDone,
    OutputItemAdded,
    OutputItemDone,
    ResponseActivity,
    SessionConfig,
    parse_server_event,
)

_SEQ = iter(range(1, 1 << 62))
#: ``PAYLOAD`` is 160 bytes of mu-law: 20 ms.
CHUNK_MS = 20


def server(event: dict[str, Any]) -> str:
    event = {"event_id": f"event_mi_{next(_SEQ)}", **event}
    SERVER_EVENT.validate_python(event)
    return json.dumps(event)


# ------------------------------------------------------------------------- OpenAI frames


def oa_item_added(rid: str, item: str, index: int, kind: str = "message") -> str:
    body: dict[str, Any] = {
        "id": item,
        "type": kind,
        "status": "in_progress",
        "object": "realtime.item",
    }
    if kind == "message":
        body.update(role="assistant", content=[])
    else:
        body.update(call_id=f"call_{item}", name="lookup", arguments="")
    return server(
        {
            "type": "response.output_item.added",
            "response_id": rid,
            "output_index": index,
            "item": body,
        }
    )


def oa_item_done(rid: str, item: str, index: int, status: str = "completed") -> str:
    body = {
        "id": item,
        "type": "message",
        "role": "assistant",
        "status": status,
        "object": "realtime.item",
        "content": [{"type": "output_audio", "transcript": "..."}],
    }
    return server(
        {
            "type": "response.output_item.done",
            "response_id": rid,
            "output_index": index,
            "item": body,
        }
    )


def oa_call_delta(rid: str, item: str, index: int, delta: str = '{"a":') -> str:
    return server(
        {
            "type": "response.function_call_arguments.delta",
            "response_id": rid,
            "item_id": item,
            "output_index": index,
            "call_id": f"call_{item}",
            "delta": delta,
        }
    )


def oa_call_done(rid: str, item: str, index: int, status: str = "completed") -> str:
    return server(
        {
            "type": "response.output_item.done",
            "response_id": rid,
            "output_index": index,
            "item": {
                "type": "function_call",
                "id": item,
                "call_id": f"call_{item}",
                "name": "lookup",
                "arguments": "{}",
                "status": status,
            },
        }
    )


def oa_text(rid: str, item: str, index: int, delta: str) -> str:
    return server(
        {
            "type": "response.output_text.delta",
            "response_id": rid,
            "item_id": item,
            "output_index": index,
            "content_index": 0,
            "delta": delta,
        }
    )


def oa_timeout_triggered(item: str = "item_idle_1") -> str:
    return server(
        {
            "type": "input_audio_buffer.timeout_triggered",
            "audio_start_ms": 4000,
            "audio_end_ms": 10000,
            "item_id": item,
        }
    )


def oa_session_updated(
    *, effort: str | None = None, create_response: bool = True, idle_timeout_ms: int | None = None
) -> str:
    turn: dict[str, Any] = {
        "type": "server_vad",
        "create_response": create_response,
        "interrupt_response": True,
    }
    if idle_timeout_ms is not None:
        turn["idle_timeout_ms"] = idle_timeout_ms
    session: dict[str, Any] = {
        "type": "realtime",
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "turn_detection": turn},
            "output": {"format": {"type": "audio/pcmu"}},
        },
    }
    if effort is not None:
        session["reasoning"] = {"effort": effort}
    return server({"type": "session.updated", "session": session})


# ------------------------------------------------------------------------------ the phone


@attrs.define
class _Queued:
    kind: str  # "media" or "mark"
    item: str = ""
    ms: float = 0.0
    name: str = ""


class Phone:
    """Twilio's media stream for one call: what the bridge sends is queued and played in order
    at real-time pace on the call's clock; a mark is echoed the moment the audio sent before it
    has played; a ``clear`` drops what is queued (and echoes its marks, as Twilio does)."""

    def __init__(self, call: Call) -> None:
        self.c = call
        self.queue: list[_Queued] = []
        self.seen = 0  # how many of call.twilio are queued already
        #: ms of each item the caller has heard.
        self.heard: dict[str, float] = {}
        #: Items in the order their first audio was sent.
        self.order: list[str] = []

    def audio(self, rid: str, item: str, dt: float = 0.0) -> bool:
        """One audio delta from OpenAI; returns whether the bridge sent it to the caller."""
        media = self.c.oa(oa_audio(rid, item), dt)
        if media is not None:
            assert json.loads(media)["event"] == "media"
            if item not in self.order:
                self.order.append(item)
            self.queue.append(_Queued("media", item, CHUNK_MS))
        self.take()
        return media is not None

    def take(self) -> None:
        """Queue the marks and clears the bridge wrote since (after the media it returned)."""
        twilio = self.c.twilio
        while self.seen < len(twilio):
            message = twilio[self.seen]
            self.seen += 1
            if message["event"] == "mark":
                self.queue.append(_Queued("mark", name=message["mark"]["name"]))
            elif message["event"] == "clear":
                cleared = [q.name for q in self.queue if q.kind == "mark"]
                self.queue.clear()
                for name in cleared:  # Twilio echoes the marks a clear flushed
                    self.c.tw(tw_mark(name))

    def play(self, ms: float) -> None:
        """``ms`` of wall time pass: the caller hears queued audio, marks come back."""
        self.take()
        left = ms
        while True:
            while self.queue and self.queue[0].kind == "mark":
                self.c.tw(tw_mark(self.queue.pop(0).name))
                self.take()
            if not self.queue or left <= 0:
                break
            head = self.queue[0]
            step = min(head.ms, left)
            head.ms -= step
            left -= step
            self.heard[head.item] = self.heard.get(head.item, 0.0) + step
            self.c.at(self.c.t + step / 1000)
            if head.ms <= 1e-9:
                self.queue.pop(0)
        if left > 0:
            self.c.at(self.c.t + left / 1000)

    def idle(self) -> bool:
        return not any(q.kind == "media" for q in self.queue)


def cuts(c: Call) -> tuple[dict[str, int], list[str]]:
    """Every truncate (item -> audio_end_ms) and delete (items) the bridge sent so far."""
    truncated = {
        e["item_id"]: e["audio_end_ms"] for e in c.sent if e["type"] == "conversation.item.truncate"
    }
    deleted = [e["item_id"] for e in c.sent if e["type"] == "conversation.item.delete"]
    return truncated, deleted


def started(config: BridgeConfig | None = None, **updated: Any) -> Call:
    c = Call(config).start()
    c.oa(oa_session_updated(**updated))
    return c


def ask(c: Call, rid: str) -> None:
    """The app asks for a response and the server answers it with ``rid``."""
    c.s.request_response(c.t)
    c.drain()
    c.answer(c.creates()[-1], rid)


def spoken_item(
    p: Phone, rid: str, item: str, index: int, chunks: int, *, done: bool = True
) -> None:
    c = p.c
    c.oa(oa_item_added(rid, item, index))
    c.oa(oa_transcript(rid, item, "words "))
    for _ in range(chunks):
        p.audio(rid, item)
    if done:
        c.oa(oa_audio_done(rid, item))
        c.oa(oa_item_done(rid, item, index))
        p.take()


# ================================================================ 1. several audio items


def test_audio_of_every_item_reaches_the_caller_in_order() -> None:
    c = started()
    p = Phone(c)
    ask(c, "resp_1")
    spoken_item(p, "resp_1", "item_pre", 0, 5)
    spoken_item(p, "resp_1", "item_ans", 1, 8)
    c.oa(oa_done("resp_1"))
    p.play(1000)
    assert p.order == ["item_pre", "item_ans"]
    assert p.heard == {"item_pre": 100, "item_ans": 160}
    tracker = c.s.tracker
    assert (tracker.played_ms("item_pre"), tracker.played_ms("item_ans")) == (100, 160)


def test_barge_in_mid_item_2_of_3_truncates_2_deletes_3_leaves_1() -> None:
    c = started(BridgeConfig(mark_every_ms=0))
    p = Phone(c)
    ask(c, "resp_1")
    spoken_item(p, "resp_1", "item_1", 0, 5)  # 100 ms
    spoken_item(p, "resp_1", "item_2", 1, 10)  # 200 ms
    spoken_item(p, "resp_1", "item_3", 2, 5, done=False)  # still generating
    p.play(100 + 130)  # item_1 in full, 130 ms of item_2
    c.oa(oa_speech_started())
    truncated, deleted = cuts(c)
    assert truncated == {"item_2": 130}
    assert deleted == ["item_3"]


def test_barge_in_while_the_model_thinks_after_a_heard_preamble_cuts_nothing() -> None:
    """The preamble was heard in full and its audio is done; the response is still thinking
    (no second item yet).  Truncating the preamble would cut its transcript from the model's
    context though the caller heard every word of it."""
    c = started(BridgeConfig(mark_every_ms=0))
    p = Phone(c)
    ask(c, "resp_1")
    spoken_item(p, "resp_1", "item_pre", 0, 5)
    p.play(500)
    assert p.heard == {"item_pre": 100}
    c.oa(oa_speech_started())
    truncated, deleted = cuts(c)
    assert truncated == {} and deleted == []


def test_barge_in_300_ms_into_the_second_item_with_sparse_marks_truncates_it() -> None:
    """Marks every 500 ms: the second item's first regular mark is not back yet when the
    caller speaks 300 ms into it.  The caller heard 300 ms of it: it is truncated there, not
    deleted as unheard."""
    c = started(BridgeConfig(mark_every_ms=500))
    p = Phone(c)
    ask(c, "resp_1")
    spoken_item(p, "resp_1", "item_pre", 0, 10)  # 200 ms
    spoken_item(p, "resp_1", "item_ans", 1, 50)  # 1 s
    c.oa(oa_done("resp_1"))
    p.play(200 + 300)
    c.oa(oa_speech_started())
    truncated, deleted = cuts(c)
    assert deleted == []
    assert 280 <= truncated["item_ans"] <= 300
    assert "item_pre" not in truncated


def test_an_item_that_starts_after_the_barge_in_is_deleted_once_the_response_is_done() -> None:
    """The server was already generating item 3 when the caller spoke: its audio reaches us
    after the barge-in and is dropped, so nobody hears it, but the item is in the conversation
    with its transcript.  It is deleted once the response is over."""
    c = started(BridgeConfig(mark_every_ms=0))
    p = Phone(c)
    ask(c, "resp_1")
    spoken_item(p, "resp_1", "item_1", 0, 5)
    spoken_item(p, "resp_1", "item_2", 1, 10)
    p.play(150)
    c.oa(oa_speech_started())
    assert cuts(c) == ({"item_2": 50}, [])
    c.oa(oa_item_added("resp_1", "item_3", 2))
    c.oa(oa_transcript("resp_1", "item_3", "late words"))
    assert not p.audio("resp_1", "item_3")
    c.oa(oa_item_done("resp_1", "item_3", 2, status="incomplete"))
    c.oa(oa_done("resp_1", "cancelled", "turn_detected"))
    truncated, deleted = cuts(c)
    assert truncated == {"item_2": 50}
    assert deleted == ["item_3"]


def test_an_item_with_transcript_and_no_audio_yet_at_the_barge_in_is_deleted() -> None:
    c = started(BridgeConfig(mark_every_ms=0))
    p = Phone(c)
    ask(c, "resp_1")
    spoken_item(p, "resp_1", "item_1", 0, 10)
    c.oa(oa_item_added("resp_1", "item_2", 1))
    c.oa(oa_transcript("resp_1", "item_2", "not yet spoken"))
    p.play(60)
    c.oa(oa_speech_started())
    c.oa(oa_done("resp_1", "cancelled", "turn_detected"))
    truncated, deleted = cuts(c)
    assert truncated == {"item_1": 60}
    assert deleted == ["item_2"]


def test_a_heard_reply_is_not_cut_when_the_caller_speaks_while_the_next_one_thinks() -> None:
    """The last reply was heard in full; the server's next response (VAD) is thinking, with no
    audio yet.  The finished reply is nobody's "live" item any more."""
    c = started(BridgeConfig(mark_every_ms=0))
    p = Phone(c)
    ask(c, "resp_1")
    spoken_item(p, "resp_1", "item_1", 0, 5)
    p.play(300)  # heard in full while its response is still open
    c.oa(oa_done("resp_1"))
    c.oa(oa_created("resp_vad"))  # no metadata: the server's own
    c.oa(oa_speech_started())
    assert cuts(c) == ({}, [])


def test_items_of_a_response_created_after_an_early_barge_in_are_deleted_at_its_done() -> None:
    """The caller spoke before our create was answered: its response is cancelled by id when
    created, and what it generated meanwhile (heard by nobody) is deleted once it is over."""
    c = started(BridgeConfig(session=SessionConfig(interrupt_response=False)))
    p = Phone(c)
    c.s.request_response(c.t)
    c.drain()
    c.oa(oa_speech_started())
    c.answer(c.creates()[-1], "resp_1")
    assert [e["response_id"] for e in c.sent if e["type"] == "response.cancel"] == ["resp_1"]
    c.oa(oa_item_added("resp_1", "item_1", 0))
    assert not p.audio("resp_1", "item_1")
    c.oa(oa_item_done("resp_1", "item_1", 0, status="incomplete"))
    assert cuts(c) == ({}, [])
    c.oa(oa_done("resp_1", "cancelled", "client_cancelled"))
    assert cuts(c) == ({}, ["item_1"])


def test_no_truncate_at_zero_for_an_unheard_item() -> None:
    c = started(BridgeConfig(mark_every_ms=0))
    p = Phone(c)
    ask(c, "resp_1")
    spoken_item(p, "resp_1", "item_1", 0, 5)
    spoken_item(p, "resp_1", "item_2", 1, 5)
    c.oa(oa_done("resp_1"))
    c.oa(oa_speech_started())  # nothing played yet
    truncated, deleted = cuts(c)
    assert truncated == {}
    assert deleted == ["item_1", "item_2"]


# ============================================================ 2. the no-audio watchdog


def test_a_text_only_preamble_then_thinking_then_audio_is_not_silent() -> None:
    c = started()
    p = Phone(c)
    ask(c, "resp_1")
    c.oa(oa_item_added("resp_1", "item_pre", 0))
    c.oa(oa_text("resp_1", "item_pre", 0, "Let me check."))
    c.oa(oa_item_done("resp_1", "item_pre", 0))
    c.tick(c.t + 6.0)  # thinking; the watchdog's 3 s pass
    spoken_item(p, "resp_1", "item_ans", 1, 5)
    c.oa(oa_done("resp_1"))
    assert c.s.machine is not None
    assert c.s.machine.stats.get("watchdog_fires", 0) == 0
    assert [e for e in c.sent if e["type"] == "response.cancel"] == []


def test_a_response_whose_items_all_have_transcript_and_no_audio_is_silent() -> None:
    c = started()
    ask(c, "resp_1")
    for index, item in enumerate(["item_1", "item_2"]):
        c.oa(oa_item_added("resp_1", item, index))
        c.oa(oa_transcript("resp_1", item, "words without sound"))
        c.oa(oa_item_done("resp_1", item, index))
    c.tick(c.t + 3.5)
    assert [e["type"] for e in c.sent if e["type"] == "response.cancel"] == ["response.cancel"]
    assert c.s.machine is not None and c.s.machine.stats["watchdog_fires"] == 1


def test_one_spoken_item_makes_the_response_not_silent() -> None:
    """The watchdog judges the response: a spoken preamble, then an item whose audio never
    comes, is not a silent response (the caller heard the model)."""
    c = started()
    p = Phone(c)
    ask(c, "resp_1")
    spoken_item(p, "resp_1", "item_pre", 0, 5)
    c.oa(oa_item_added("resp_1", "item_2", 1))
    c.oa(oa_transcript("resp_1", "item_2", "words"))
    c.tick(c.t + 4.0)
    c.oa(oa_done("resp_1"))
    assert c.s.machine is not None and c.s.machine.stats.get("watchdog_fires", 0) == 0


def test_the_watchdog_waits_while_a_function_call_is_open_then_catches_the_silence() -> None:
    """A silent preamble followed by a tool call being generated: the watchdog does not cancel
    the response mid-call (the call would come out cut off and never run); the silent
    preamble is still caught once the call is complete."""
    c = started()
    ask(c, "resp_1")
    c.oa(oa_item_added("resp_1", "item_pre", 0))
    c.oa(oa_transcript("resp_1", "item_pre", "Let me check."))
    c.oa(oa_item_done("resp_1", "item_pre", 0))
    c.oa(oa_item_added("resp_1", "item_call", 1, kind="function_call"))
    for _ in range(5):
        c.oa(oa_call_delta("resp_1", "item_call", 1), 1.0)
        c.tick()
    assert [e for e in c.sent if e["type"] == "response.cancel"] == []
    c.oa(oa_call_done("resp_1", "item_call", 1))
    c.oa(oa_done("resp_1"))
    assert c.s.machine is not None and c.s.machine.stats["watchdog_fires"] == 1
    assert [t.name for t in c.s.tool_calls] == ["lookup"]


# ===================================================================== 3. reasoning


def test_a_response_thinking_longer_than_the_stall_timeout_at_high_effort_is_not_stalled() -> None:
    c = started(effort="high")
    p = Phone(c)
    ask(c, "resp_1")
    c.tick(c.t + 25.0)  # 25 s of silent thinking: over stall_timeout (20 s)
    assert [e for e in c.sent if e["type"] == "response.cancel"] == []
    spoken_item(p, "resp_1", "item_1", 0, 5)
    c.oa(oa_done("resp_1"))
    assert c.s.machine is not None and c.s.machine.stats.get("stalled_responses", 0) == 0


def test_a_hung_response_is_still_cancelled_after_the_thinking_allowance() -> None:
    c = started(effort="high")
    ask(c, "resp_1")
    deadline = c.s.next_deadline
    assert deadline is not None and deadline >= c.t + 3 * 20.0 - 1e-6
    c.tick(deadline)
    assert [e["type"] for e in c.sent if e["type"] == "response.cancel"] == ["response.cancel"]
    assert c.s.machine is not None and c.s.machine.stats["stalled_responses"] == 1


def test_without_reasoning_the_stall_timeout_is_unchanged() -> None:
    c = started()
    ask(c, "resp_1")
    assert c.s.next_deadline == c.t + 20.0
    c.tick(c.t + 20.0)
    assert c.s.machine is not None and c.s.machine.stats["stalled_responses"] == 1


def test_no_stall_while_a_function_call_item_is_open() -> None:
    c = started()
    ask(c, "resp_1")
    c.oa(oa_item_added("resp_1", "item_call", 0, kind="function_call"))
    c.oa(oa_call_delta("resp_1", "item_call", 0))
    c.tick(c.t + 30.0)
    assert [e for e in c.sent if e["type"] == "response.cancel"] == []
    c.oa(oa_call_done("resp_1", "item_call", 0))
    c.oa(oa_done("resp_1"))
    assert [t.name for t in c.s.tool_calls] == ["lookup"]


# ================================================================= 4. idle timeout


def test_idle_timeout_ms_is_sent_in_the_session_update() -> None:
    cfg = BridgeConfig(session=SessionConfig(idle_timeout_ms=6000))
    c = Call(cfg).start()
    turn = c.sent[0]["session"]["audio"]["input"]["turn_detection"]
    assert turn["idle_timeout_ms"] == 6000


def test_the_idle_timeout_response_is_the_servers_own_even_without_create_response() -> None:
    """``create_response`` off: our own turn commits are answered by us, but the idle timeout's
    commit is answered by the server (the docstring: "a model response will be generated").
    A create of ours would only collide with it."""
    cfg = BridgeConfig(session=SessionConfig(create_response=False, idle_timeout_ms=6000))
    c = Call(cfg).start()
    c.oa(oa_session_updated(create_response=False, idle_timeout_ms=6000))
    c.oa(oa_timeout_triggered("item_idle_1"))
    c.oa(oa_committed("item_idle_1"))
    assert c.creates() == []
    c.oa(oa_created("resp_idle"))
    assert c.s.machine is not None and c.s.machine.response_id == "resp_idle"
    c.oa(oa_done("resp_idle"))
    assert c.creates() == []


def test_a_request_right_after_the_idle_timeout_waits_for_the_servers_response() -> None:
    c = started(idle_timeout_ms=6000)
    c.oa(oa_timeout_triggered("item_idle_1"))
    c.s.request_response(c.t, reason="nudge")
    c.drain()
    assert c.creates() == []  # would race the server's own response
    c.oa(oa_committed("item_idle_1"))
    c.oa(oa_created("resp_idle"))
    assert c.creates() == []
    c.oa(oa_done("resp_idle"))
    [create] = c.creates()
    assert create["response"]["metadata"]["rtfsm_reason"] == "nudge"


def test_speech_after_an_idle_timeout_still_works() -> None:
    c = started(idle_timeout_ms=6000)
    c.oa(oa_timeout_triggered("item_idle_1"))
    c.oa(oa_committed("item_idle_1"))
    c.oa(oa_created("resp_idle"))
    c.oa(oa_done("resp_idle"))
    c.oa(oa_speech_started("item_user_2"))
    c.oa(oa_speech_stopped("item_user_2"))
    c.oa(oa_committed("item_user_2"))
    c.oa(oa_created("resp_vad"))
    assert c.s.machine is not None and c.s.machine.response_id == "resp_vad"
    assert c.creates() == []


def test_payload_is_20_ms() -> None:
    import base64

    assert len(base64.b64decode(PAYLOAD)) == CHUNK_MS * 8


# ========================================================================= 7. parsing


def test_timeout_triggered_is_parsed() -> None:
    event = parse_server_event(oa_timeout_triggered("item_idle_7"))
    assert event == IdleTimeoutTriggered(
        item_id="item_idle_7", audio_start_ms=4000, audio_end_ms=10000
    )


def test_output_items_are_parsed_with_their_id_and_type() -> None:
    assert parse_server_event(oa_item_added("resp_1", "item_1", 0)) == OutputItemAdded(
        "resp_1", "item_1", "message"
    )
    added = parse_server_event(oa_item_added("resp_1", "item_c", 1, kind="function_call"))
    assert added == OutputItemAdded("resp_1", "item_c", "function_call")
    assert parse_server_event(oa_item_done("resp_1", "item_1", 0)) == OutputItemDone(
        "resp_1", "item_1"
    )
    done = parse_server_event(oa_call_done("resp_1", "item_c", 1))
    assert isinstance(done, FunctionCallDone) and done.item_id == "item_c"
    # An item without an id is only a sign of life of its response.
    bare = json.dumps(
        {"type": "response.output_item.added", "response_id": "resp_1", "item": {"type": "message"}}
    )
    assert parse_server_event(bare) == ResponseActivity("resp_1", "response.output_item.added")


def test_the_sessions_reasoning_effort_is_read_from_session_updated() -> None:
    event = parse_server_event(oa_session_updated(effort="xhigh"))
    assert isinstance(event, SessionConfigured) and event.reasoning_effort == "xhigh"
    event = parse_server_event(oa_session_updated())
    assert isinstance(event, SessionConfigured) and event.reasoning_effort is None
    odd = json.loads(oa_session_updated())
    odd["session"]["reasoning"] = "high"  # not the documented shape: not stated
    event = parse_server_event(json.dumps(odd))
    assert isinstance(event, SessionConfigured) and event.reasoning_effort is None
    assert event.turn_detection == "server_vad"


def test_the_effort_configured_is_assumed_until_the_server_states_one() -> None:
    cfg = BridgeConfig(session=SessionConfig(reasoning_effort="medium"))
    c = Call(cfg).start()
    assert c.sent[0]["session"]["reasoning"] == {"effort": "medium"}
    c.oa(oa_session_updated())  # no reasoning stated: medium still holds
    ask(c, "resp_1")
    assert c.s.next_deadline == c.t + 2 * 20.0
    c.oa(oa_session_updated(effort="high"), 0.5)  # the server says: from now on, high
    assert c.s.next_deadline == c.t - 0.5 + 3 * 20.0
    c.oa(oa_item_added("resp_1", "item_1", 0), 0.5)  # not thinking: an item is open
    assert c.s.next_deadline == c.t + 20.0
    c.oa(oa_item_done("resp_1", "item_1", 0), 0.5)  # thinking again, from its last sign of life
    assert c.s.next_deadline == c.t + 3 * 20.0

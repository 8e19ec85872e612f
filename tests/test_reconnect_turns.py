"""Which answers a lost session's turns get (re-review regressions), over in-memory sockets: a
cut-off answer to a known turn is retold, what else it served is retold without the lost turn,
a cut-off greeting goes first, and what a session knew of its turns does not outlive it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from test_reconnect import JSON, REASON_KEY, run
from test_reconnect_memory import (
    _awaiting,
    _created,
    _done,
    _memory_config,
    _reasons,
    _ServerSession,
    _spoken_turn,
    _state,
    _transcript,
    _Twilio,
    _until,
)

from realtime_fsm.bridge import CallBridge, CallReport
from realtime_fsm.openai_realtime import SessionConfig

# --- which answers a lost session's turns get (re-review regressions) -----------------------------


def _bridge_on(
    sessions: list[_ServerSession], session: SessionConfig, **overrides: Any
) -> tuple[_Twilio, CallBridge, asyncio.Task[CallReport]]:
    """A bridge on ``sessions[0]`` whose reconnects get the next ones, in order."""
    spare = iter(sessions[1:])

    async def connector() -> _ServerSession:
        return next(spare)

    twilio = _Twilio()
    config = _memory_config(session=session, **overrides)
    bridge = CallBridge(twilio, sessions[0], config, reconnect=connector)
    return twilio, bridge, asyncio.create_task(bridge.run())


PTT = SessionConfig(turn_detection=None)
VAD = SessionConfig(create_response=True, interrupt_response=True)


def _committed(item_id: str | None) -> JSON:
    return {"type": "input_audio_buffer.committed", "item_id": item_id}


def _server_created(response_id: str) -> JSON:
    return {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}}


async def _ends(twilio: _Twilio, task: asyncio.Task[CallReport]) -> CallReport:
    await asyncio.sleep(0.05)  # room for a wrong create to show
    twilio.hang_up()
    return await asyncio.wait_for(task, 10.0)


def test_a_cut_off_answer_to_a_known_turn_is_retold_when_a_later_turn_is_lost() -> None:
    """Push-to-talk: the answer to turn 1 (transcribed) plays; turn 2 is committed and queued
    behind it, and the session is lost before turn 2's words came.  Turn 1's answer is retold;
    only turn 2, whose words are unknown, is dropped and counted."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _bridge_on([old, new], PTT)
        await _until(lambda: old.sent, "the session.update")
        bridge.commit_user_turn()
        old.feed(_committed("item_1"), _transcript("item_1", "Book me for Monday."))
        await _until(lambda: old.events("response.create"), "turn 1's answer asked for")
        old.feed(old.answer("resp_1", 0))
        await _until(lambda: _state(bridge) == "active", "turn 1's answer playing")
        bridge.commit_user_turn()
        old.feed(_committed("item_2"))
        await _until(lambda: bool(bridge.machine and bridge.machine.pending), "turn 2 queued")
        old.lose()
        await _until(lambda: new.events("response.create"), "the retelling")
        await asyncio.sleep(0.05)
        assert _reasons(new) == ["reconnect"]
        new.feed(new.answer("resp_2", 0))
        new.feed(_done("resp_2"))
        report = await _ends(twilio, task)
        assert _reasons(new) == ["reconnect"], "turn 2 is not answered from turn 1's words"
        assert report.turns_lost == 1

    run(scenario())


def test_what_else_the_cut_off_answer_served_is_retold_without_the_lost_turn() -> None:
    """One response served the caller's turn and a tool's request together; the turn's words
    never came.  The tool's request is retold on the new session (not dropped with the turn,
    and not lost without a report)."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _bridge_on([old, new], PTT)
        await _until(lambda: old.sent, "the session.update")
        bridge.request_response("warm_up")
        await _until(lambda: old.events("response.create"), "the first create")
        old.feed(old.answer("resp_0", 0))
        await _until(lambda: _state(bridge) == "active", "resp_0 playing")
        bridge.commit_user_turn()
        old.feed(_committed("item_1"))
        bridge.request_response("tool")
        old.feed(_done("resp_0"))
        await _until(lambda: len(old.events("response.create")) == 2, "the coalesced create")
        assert _reasons(old)[0] == "warm_up"
        assert sorted(_reasons(old)[1].split("+")) == ["tool", "user_turn"]
        old.feed(old.answer("resp_1", 1))
        await _until(lambda: _state(bridge) == "active", "resp_1 playing")
        old.lose()
        await _until(lambda: new.events("response.create"), "the retelling")
        report = await _ends(twilio, task)
        assert _reasons(new) == ["reconnect"]
        assert report.turns_lost == 1

    run(scenario())


def test_a_greeting_cut_off_is_retold_on_its_own_before_the_callers_turn() -> None:
    """Push-to-talk: the greeting plays, the caller's turn is committed and transcribed and
    waits behind it; the session is lost.  The greeting is retold with its instructions,
    alone; the caller's turn is answered after it, with the session's own instructions."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _bridge_on([old, new], PTT, greeting="Greet the caller.")
        await _until(lambda: old.events("response.create"), "the greeting's create")
        old.feed(old.answer("resp_g", 0))
        await _until(lambda: _state(bridge) == "active", "the greeting playing")
        bridge.commit_user_turn()
        old.feed(_committed("item_1"), _transcript("item_1", "Are you open today?"))
        await _until(lambda: len(bridge.history) == 1, "the transcript")
        old.lose()
        await _until(lambda: new.events("response.create"), "the retold greeting")
        await asyncio.sleep(0.05)
        (greeting,) = new.events("response.create")
        assert greeting["response"]["instructions"] == "Greet the caller."
        assert greeting["response"]["metadata"][REASON_KEY] == "reconnect"
        new.feed(_created("resp_2", greeting["response"]["metadata"]), _done("resp_2"))
        await _until(lambda: len(new.events("response.create")) == 2, "the turn's answer")
        answer = new.events("response.create")[1]["response"]
        assert "instructions" not in answer and answer["metadata"][REASON_KEY] == "user_turn"
        report = await _ends(twilio, task)
        assert report.turns_lost == 0

    run(scenario())


def test_each_unconfirmed_or_unnamed_turn_counts_and_a_refused_commit_does_not() -> None:
    """Two commits the session never confirmed are two lost turns; a commit the server refused
    as empty is no turn at all; a ``committed`` without an item id cannot be matched with a
    transcript, so its words count as unknown (and a transcript of an older item does not
    stand in for them)."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _bridge_on([old, new], PTT)
        await _until(lambda: old.sent, "the session.update")
        bridge.commit_user_turn()  # refused as empty
        await _until(lambda: old.events("input_audio_buffer.commit"), "commit 1")
        detail = {
            "type": "invalid_request_error",
            "code": "input_audio_buffer_commit_empty",
            "message": "Buffer too small.",
            "event_id": "rtfsm_commit_1",
        }
        old.feed({"type": "error", "event_id": "event_1", "error": detail})
        old.feed(_transcript("item_0", "An older turn."))
        bridge.commit_user_turn()  # confirmed, but without an item id
        await _until(lambda: len(old.events("input_audio_buffer.commit")) == 2, "commit 2")
        old.feed(_committed(None))
        await _until(lambda: old.events("response.create"), "its answer asked for")
        bridge.commit_user_turn()
        bridge.commit_user_turn()  # two never confirmed
        await _until(lambda: len(old.events("input_audio_buffer.commit")) == 4, "commits 3, 4")
        old.lose()
        await _until(lambda: new.sent, "the new session.update")
        report = await _ends(twilio, task)
        assert "response.create" not in new.types()
        assert report.turns_lost == 3

    run(scenario())


def test_the_servers_cut_off_answer_to_an_unknown_turn_is_not_retold() -> None:
    """Server VAD answers by itself: its answer to a turn whose words never came is cut off.
    Retold, it would answer the turn before; it is not, and the turn is counted."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _bridge_on([old, new], VAD)
        await _until(lambda: old.sent, "the session.update")
        old.feed(*_spoken_turn("item_1"), _server_created("resp_1"))
        await _until(lambda: _state(bridge) == "active", "the server's answer playing")
        old.lose()
        await _until(lambda: new.sent, "the new session.update")
        report = await _ends(twilio, task)
        assert new.types() == ["session.update"]
        assert report.turns_lost == 1

    run(scenario())


def test_what_a_session_knew_of_its_turns_does_not_outlive_it() -> None:
    """Session 1 loses an untranscribed turn (counted once).  Session 2 is cut off in the
    middle of a response the server made by itself, with no turn of its own: that response
    is retold on session 3, and session 1's lost turn is not counted again."""

    async def scenario() -> None:
        one, two, three = _ServerSession(), _ServerSession(), _ServerSession()
        twilio, bridge, task = _bridge_on([one, two, three], VAD)
        await _until(lambda: one.sent, "session 1's update")
        one.feed(*_spoken_turn("item_1"))
        await _until(lambda: _awaiting(bridge), "the turn committed")
        one.lose()
        await _until(lambda: two.sent, "session 2's update")
        await _until(lambda: bridge.report.turns_lost == 1, "the lost turn counted")
        two.feed(_server_created("resp_9"))
        await _until(lambda: _state(bridge) == "active", "the server's response playing")
        two.lose()
        await _until(lambda: three.events("response.create"), "the retelling on session 3")
        report = await _ends(twilio, task)
        assert _reasons(three) == ["reconnect"]
        assert report.turns_lost == 1

    run(scenario())

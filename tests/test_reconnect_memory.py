"""Reconnect races driven over in-memory sockets (review regressions): a text lost with its create,
event ids of restored history, caller audio of a lost session, sessions that drop soon after
starting, what a cut-off answer and an unanswered turn carry to the new session, hand commits,
and a new session's refused or wrong configuration.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import attrs
import pytest
from test_reconnect import (
    CALLER,
    JSON,
    REASON_KEY,
    SESSION_CREATED,
    START,
    _ShortLivedSocket,
    bridge_config,
    bridge_server,
    run,
    simulator,
)
from waiting import poller

from realtime_fsm.bridge import BridgeConfig, CallBridge, CallReport
from realtime_fsm.config import LifecycleConfig
from realtime_fsm.openai_realtime import Dialect, SessionConfig
from realtime_fsm.testing import (
    FakeTwilioCaller,
)
from realtime_fsm.webserver import WebSocketClosed

# --- in-memory reconnect races (review regressions) ---------------------------------------------


class _Twilio:
    """The telephony side in memory: ``hang_up`` ends the call."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[str] = []
        self.inbox.put_nowait(json.dumps(START))

    async def recv(self) -> str:
        frame = await self.inbox.get()
        if frame is None:
            raise WebSocketClosed(1000, "hung up")
        return frame

    async def send(self, message: str) -> None:
        self.sent.append(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.inbox.put_nowait(None)

    def media(self) -> None:
        self.inbox.put_nowait(json.dumps(MEDIA))

    def hang_up(self) -> None:
        self.inbox.put_nowait(None)


MEDIA: JSON = {
    "event": "media",
    "sequenceNumber": "2",
    "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
    "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "AAAA"},
}


class _Transport:
    """Never backed up: the bridge's direct send path is taken when the socket looks open."""

    def get_write_buffer_size(self) -> int:
        return 0


class _Session:
    """An OpenAI socket in memory whose session the test ends with ``lose``.

    ``stall_after``: sends after that many hang (a peer that stopped reading).
    ``fail_append``: an ``input_audio_buffer.append`` send waits for :attr:`release`, then
    fails, like a send on a closing socket (given a transport, so it is sent directly)."""

    def __init__(self, *, stall_after: int | None = None, fail_append: bool = False) -> None:
        self.sent: list[str] = []
        self.stall_after = stall_after
        #: Sends hanging in ``send`` (past ``stall_after``), for tests to wait on.
        self.stalled = 0
        self.fail_append = fail_append
        self.transport = _Transport() if fail_append else None
        self.append_started = asyncio.Event()
        self.release = asyncio.Event()
        self.lost = asyncio.Event()

    def lose(self) -> None:
        self.lost.set()

    async def recv(self) -> str:
        await self.lost.wait()
        raise WebSocketClosed(1006, "dropped")

    async def send(self, message: str) -> None:
        if self.fail_append and "input_audio_buffer.append" in message:
            self.append_started.set()
            await self.release.wait()
            raise WebSocketClosed(1006, "dropped")
        if self.stall_after is not None and len(self.sent) >= self.stall_after:
            self.stalled += 1
            await asyncio.Event().wait()
        self.sent.append(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.lost.set()

    def types(self) -> list[str]:
        return [json.loads(m)["type"] for m in self.sent]

    def events(self, kind: str) -> list[JSON]:
        return [e for e in map(json.loads, self.sent) if e["type"] == kind]


_until = poller(10.0, 0.002)


def _memory_config(**overrides: Any) -> BridgeConfig:
    config = BridgeConfig(
        session=SessionConfig(create_response=False, interrupt_response=False),
        reconnect_base_delay=0.01,
        reconnect_max_delay=0.02,
    )
    return attrs.evolve(config, **overrides)


def test_a_text_lost_with_its_create_is_answered_once_on_the_new_session() -> None:
    """The text and its ``response.create`` were queued for a socket that stopped reading when
    the session dropped: the new session gets the text once and one ``response.create``, and
    nothing is left pending to ask for a second answer after the first."""

    async def scenario() -> None:
        twilio, old, new = _Twilio(), _Session(stall_after=1), _Session()

        async def connector() -> _Session:
            return new

        bridge = CallBridge(twilio, old, _memory_config(), reconnect=connector)
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the first session.update")
        bridge.send_user_text("book a table")
        await _until(lambda: old.stalled, "the text frame stuck in the old socket's send")
        old.lose()
        await _until(lambda: new.events("response.create"), "the new session's create")
        await asyncio.sleep(0.05)  # room for a wrong second create to show
        assert new.types() == ["session.update", "conversation.item.create", "response.create"]
        item = new.events("conversation.item.create")[0]
        assert item["item"]["content"][0]["text"] == "book a table"
        assert item["event_id"].startswith("rtfsm_restore_")
        machine = bridge.machine
        assert machine is not None and machine.pending == []
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.reconnects == 1 and report.undelivered_texts == []
        # Written once (on the new session); the stuck write on the old one never completed.
        assert report.user_texts_sent == 1

    run(scenario())


def test_restored_history_and_re_delivered_text_have_distinct_event_id_kinds() -> None:
    """History replayed on a new session is ``<prefix>_history_<n>``; text held while
    reconnecting and delivered there for the first time is ``<prefix>_restore_<n>``.  The
    request carried over for the first text and the one for the held text make one create."""

    async def scenario() -> None:
        twilio, old, new = _Twilio(), _Session(), _Session()
        gate = asyncio.Event()

        async def connector() -> _Session:
            await gate.wait()
            return new

        config = _memory_config(lifecycle=LifecycleConfig(event_id_prefix="acme"))
        bridge = CallBridge(twilio, old, config, reconnect=connector)
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the first session.update")
        bridge.send_user_text("first")
        await _until(lambda: old.events("response.create"), "the first create")
        old.lose()
        await _until(lambda: bridge.reconnecting, "the reconnect")
        bridge.send_user_text("second")  # held: no session to take it
        gate.set()
        await _until(lambda: new.events("response.create"), "the new session's create")
        await asyncio.sleep(0.05)
        items = [
            (e["event_id"], e["item"]["role"], e["item"]["content"][0]["text"])
            for e in new.events("conversation.item.create")
        ]
        assert [(role, text) for _, role, text in items] == [("user", "first"), ("user", "second")]
        assert items[0][0].startswith("acme_history_")
        assert items[1][0].startswith("acme_restore_")
        creates = new.events("response.create")
        assert len(creates) == 1, creates
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.user_texts_sent == 2  # "first" on the old socket, "second" on the new

    run(scenario())


def test_caller_audio_whose_send_failed_on_the_lost_session_never_reaches_the_new_one() -> None:
    """A direct send of caller audio on the old socket fails after the session was replaced:
    the frame is dropped and counted, not queued ahead of the new session's session.update."""

    async def scenario() -> None:
        twilio, old, new = _Twilio(), _Session(fail_append=True), _Session()

        async def connector() -> _Session:
            old.release.set()  # the old socket's send fails while the new one is dialled
            await asyncio.sleep(0.02)
            return new

        bridge = CallBridge(twilio, old, _memory_config(), reconnect=connector)
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the first session.update")
        twilio.media()
        await asyncio.wait_for(old.append_started.wait(), 10.0)
        old.lose()
        await _until(lambda: new.sent, "the new session.update")
        twilio.media()  # the new session hears the caller again
        await _until(lambda: "input_audio_buffer.append" in new.types(), "audio on the new one")
        assert new.types()[0] == "session.update"
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.media_in == 2 and report.media_dropped == 1
        assert new.types().count("input_audio_buffer.append") == 1

    run(scenario())


def test_sessions_that_drop_soon_after_starting_are_backed_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each new session says ``session.created`` (so it is no failed attempt) and drops at
    once: the reconnects are spaced by the backoff delays instead of following at once."""
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    async def scenario() -> None:
        connected: list[_ShortLivedSocket] = []

        async def connector() -> _ShortLivedSocket:
            sock = _ShortLivedSocket(SESSION_CREATED)
            connected.append(sock)
            return sock

        config = BridgeConfig(reconnect_base_delay=0.01, reconnect_max_delay=0.04, max_reconnects=4)
        twilio = _Twilio()
        bridge = CallBridge(twilio, _ShortLivedSocket(SESSION_CREATED), config, reconnect=connector)
        report = await asyncio.wait_for(bridge.run(), 10.0)
        assert report.end_reason == "openai session lost (openai closed) after 4 reconnects"
        assert len(connected) == 4

    run(scenario())
    delays = [
        r.getMessage().rsplit(" ", 1)[-1]
        for r in caplog.records
        if "short in a row): reconnecting in" in r.getMessage()
    ]
    assert delays == ["0.01s", "0.02s", "0.04s", "0.04s"]


# --- what a cut-off answer and an unanswered turn carry to the new session ------------------------


class _ServerSession(_Session):
    """An OpenAI socket in memory that the test also speaks through, as the server."""

    def __init__(self) -> None:
        super().__init__()
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()

    def feed(self, *events: JSON) -> None:
        for event in events:
            self.inbox.put_nowait(json.dumps(event))

    def answer(self, response_id: str, create: int) -> JSON:
        """``response.created`` for the ``create``-th ``response.create`` sent here (its
        metadata echoed, so the bridge takes the response for its own)."""
        metadata = self.events("response.create")[create]["response"]["metadata"]
        return _created(response_id, metadata)

    def lose(self) -> None:
        self.inbox.put_nowait(None)

    async def recv(self) -> str:
        frame = await self.inbox.get()
        if frame is None:
            raise WebSocketClosed(1006, "dropped")
        return frame

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.inbox.put_nowait(None)


def _reasons(session: _ServerSession) -> list[str]:
    return [c["response"]["metadata"][REASON_KEY] for c in session.events("response.create")]


def _spoken_turn(item_id: str) -> list[JSON]:
    """The server's events for a caller turn its VAD detected and committed."""
    return [
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 100, "item_id": item_id},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": item_id},
        {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": None},
    ]


@pytest.mark.parametrize("transcribed", [True, False], ids=["transcribed", "not-transcribed"])
def test_a_turn_the_lost_session_never_answered_is_answered_when_its_words_are_known(
    transcribed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Server VAD committed the caller's turn; the session is lost before the server's answer
    began.  With the turn's transcript in hand the new session gets it as the last history item
    and one ``response.create`` for it; without one there is nothing to answer, and the loss is
    counted and logged instead of a made-up answer."""
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    async def scenario() -> None:
        twilio, old, new = _Twilio(), _ServerSession(), _ServerSession()

        async def connector() -> _ServerSession:
            return new

        session = SessionConfig(create_response=True, interrupt_response=True)
        bridge = CallBridge(twilio, old, _memory_config(session=session), reconnect=connector)
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the first session.update")
        old.feed(*_spoken_turn("item_turn_1"))
        await _until(lambda: _awaiting(bridge), "the commit")
        if transcribed:
            old.feed(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": "item_turn_1",
                    "content_index": 0,
                    "transcript": "What time do you open?",
                }
            )
            await _until(lambda: len(bridge.history) == 1, "the transcript")
        old.lose()
        await _until(lambda: new.sent, "the new session.update")
        await asyncio.sleep(0.05)  # room for a wrong create to show
        if transcribed:
            assert new.types() == [
                "session.update",
                "conversation.item.create",
                "response.create",
            ]
            item = new.events("conversation.item.create")[0]["item"]
            assert (item["role"], item["content"][0]["text"]) == ("user", "What time do you open?")
            create = new.events("response.create")[0]["response"]
            assert create["metadata"][REASON_KEY] == "user_turn"
        else:
            assert new.types() == ["session.update"]
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.reconnects == 1
        assert report.turns_lost == (0 if transcribed else 1)

    run(scenario())
    lost_logged = any(
        "caller turn(s) lost with the session" in r.getMessage() for r in caplog.records
    )
    assert lost_logged is not transcribed


def _awaiting(bridge: CallBridge) -> bool:
    machine = bridge.machine
    return machine is not None and machine.awaiting_server_response()


def test_an_answer_cut_off_with_a_request_queued_behind_it_is_asked_for_first() -> None:
    """The application asked for another response (other instructions) while one played; the
    session is lost.  The new session re-asks for the cut-off one, then the queued one after
    its ``response.done``: neither is lost, in the order they would have played."""

    async def scenario() -> None:
        twilio, old, new = _Twilio(), _ServerSession(), _ServerSession()

        async def connector() -> _ServerSession:
            return new

        bridge = CallBridge(twilio, old, _memory_config(), reconnect=connector)
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the first session.update")
        bridge.request_response("app", instructions="Tell the opening hours.")
        await _until(lambda: old.events("response.create"), "the first create")
        first = old.events("response.create")[0]
        old.feed(_created("resp_1", first["response"]["metadata"]))
        await _until(lambda: _state(bridge) == "active", "the response active")
        bridge.request_response("app", instructions="Say goodbye.")
        old.lose()
        await _until(lambda: new.events("response.create"), "the new session's create")
        await asyncio.sleep(0.05)
        creates = new.events("response.create")
        assert len(creates) == 1  # one at a time: the second waits for the first's done
        assert creates[0]["response"]["instructions"] == "Tell the opening hours."
        assert creates[0]["response"]["metadata"][REASON_KEY] == "reconnect"
        new.feed(_created("resp_2", creates[0]["response"]["metadata"]), _done("resp_2"))
        await _until(lambda: len(new.events("response.create")) == 2, "the queued create")
        second = new.events("response.create")[1]["response"]
        assert second["instructions"] == "Say goodbye."
        new.feed(_created("resp_3", second["metadata"]), _done("resp_3"))
        await _until(lambda: _state(bridge) == "idle", "both served")
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.reconnects == 1 and report.given_up == []

    run(scenario())


def _state(bridge: CallBridge) -> str | None:
    machine = bridge.machine
    return None if machine is None else machine.state.value


def _created(response_id: str, metadata: dict[str, str]) -> JSON:
    return {
        "type": "response.created",
        "event_id": f"event_{response_id}",
        "response": {
            "id": response_id,
            "object": "realtime.response",
            "status": "in_progress",
            "metadata": metadata,
            "output": [],
        },
    }


def _done(response_id: str) -> JSON:
    return {
        "type": "response.done",
        "event_id": f"event_done_{response_id}",
        "response": {
            "id": response_id,
            "object": "realtime.response",
            "status": "completed",
            "output": [],
        },
    }


STREAM = MEDIA["streamSid"]


def test_hand_commits_across_a_lost_session() -> None:
    """Push-to-talk around a lost session.  A turn the old session confirmed (``committed``)
    and transcribed is answered on the new one from its restored transcript.  A commit it
    never confirmed, and commits made while no session is up (by the application or the
    keypad), took their audio with it: nothing is committed on the new session for them and
    each such loss is counted."""

    async def scenario() -> None:
        twilio, old, new = _Twilio(), _ServerSession(), _ServerSession()
        gate = asyncio.Event()

        async def connector() -> _ServerSession:
            await gate.wait()
            return new

        config = _memory_config(session=SessionConfig(turn_detection=None), commit_on_dtmf="#")
        bridge = CallBridge(twilio, old, config, reconnect=connector)
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the first session.update")
        bridge.commit_user_turn()
        await _until(lambda: "input_audio_buffer.commit" in old.types(), "the commit")
        (commit,) = old.events("input_audio_buffer.commit")
        assert commit["event_id"] == "rtfsm_commit_1"
        transcript = {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_a",
            "content_index": 0,
            "transcript": "When do you open?",
        }
        old.feed(
            {"type": "input_audio_buffer.committed", "item_id": "item_a"},
            transcript,
        )
        await _until(lambda: old.events("response.create"), "the answer asked for")
        bridge.commit_user_turn()  # sent, never confirmed
        await _until(lambda: len(old.events("input_audio_buffer.commit")) == 2, "commit 2")
        old.lose()
        await _until(lambda: bridge.reconnecting, "the reconnect")
        bridge.commit_user_turn()
        key = {"track": "inbound_track", "digit": "#"}
        twilio.inbox.put_nowait(json.dumps({"event": "dtmf", "streamSid": STREAM, "dtmf": key}))
        await _until(lambda: bridge.report.turns_lost == 3, "all three counted")
        gate.set()
        await _until(lambda: new.events("response.create"), "the new session's answer")
        await asyncio.sleep(0.05)
        assert new.types() == ["session.update", "conversation.item.create", "response.create"]
        item = new.events("conversation.item.create")[0]["item"]
        assert (item["role"], item["content"][0]["text"]) == ("user", "When do you open?")
        assert _reasons(new) == ["user_turn"]
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.turns_lost == 3 and report.undelivered_texts == []

    run(scenario())


def _session_event(kind: str, input_format: str, output_format: str) -> JSON:
    audio = {
        "input": {"format": {"type": input_format}, "turn_detection": None},
        "output": {"format": {"type": output_format}},
    }
    return {"type": kind, "session": {"type": "realtime", "id": "sess_1", "audio": audio}}


def test_a_session_that_is_not_mu_law_after_our_update_ends_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``session.created`` shows the server's defaults (24 kHz PCM) before our update applies:
    no reason to act.  A ``session.updated`` still saying PCM would mean noise both ways (the
    bridge passes mu-law through untouched), so the call ends, with the reason and an ERROR
    line, instead of playing it."""
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    async def scenario() -> None:
        twilio, old = _Twilio(), _ServerSession()
        bridge = CallBridge(twilio, old, _memory_config())
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the session.update")
        old.feed(_session_event("session.created", "audio/pcm", "audio/pcm"))
        old.feed(_session_event("session.updated", "audio/pcmu", "audio/pcmu"))
        await asyncio.sleep(0.05)
        assert not task.done() and bridge.active
        old.feed(_session_event("session.updated", "audio/pcmu", "audio/pcm"))
        report = await asyncio.wait_for(task, 10.0)
        assert report.end_reason == "openai session audio is not mu-law (output pcm)"

    run(scenario())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        "call=CA0123456789abcdef0123456789abcdef openai session audio is not mu-law"
        " (output pcm): ending the call"
    ]


def test_a_refused_session_update_ends_the_call_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server answers our ``session.update`` (its own event id, ``<prefix>_session_<n>``)
    with an error: it refused the whole update, so the session runs on its defaults (PCM, its
    own turn detection).  The call ends with the code, and the server's message is logged; an
    error about another event does not end it."""
    caplog.set_level(logging.INFO, logger="realtime_fsm")

    def error(code: str, event_id: str) -> JSON:
        detail = {"type": "invalid_request_error", "code": code, "event_id": event_id}
        return {"type": "error", "event_id": "event_9", "error": {**detail, "message": "Bad."}}

    async def scenario() -> None:
        twilio, old = _Twilio(), _ServerSession()
        bridge = CallBridge(twilio, old, _memory_config())
        task = asyncio.create_task(bridge.run())
        await _until(lambda: old.sent, "the session.update")
        (update,) = old.events("session.update")
        assert update["event_id"] == "rtfsm_session_1"
        old.feed(error("invalid_value", "rtfsm_item_7"))
        await asyncio.sleep(0.05)
        assert not task.done()
        old.feed(error("invalid_value", update["event_id"]))
        report = await asyncio.wait_for(task, 10.0)
        assert report.end_reason == "openai refused session.update (invalid_value)"
        assert report.server_errors == {"invalid_value": 2}

    run(scenario())
    assert any(
        r.levelno == logging.ERROR
        and "openai refused session.update (invalid_value): Bad." in r.getMessage()
        for r in caplog.records
    )


def test_a_beta_bridge_on_a_ga_only_server_ends_the_call_at_its_refused_config() -> None:
    """Over real sockets: a bridge speaking beta to a server that only knows GA.  Its
    ``session.update`` is refused (``unknown_parameter``), and the call ends at once with that
    reason instead of running a session on the server's defaults."""

    async def scenario() -> None:
        sim = simulator(api="ga")
        async with sim, bridge_server(sim, bridge_config(Dialect.BETA, greeting=None)) as bridge:
            async with FakeTwilioCaller(bridge.url, CALLER) as caller:
                await caller.wait_closed(10.0)
            report = await bridge.report(sim)
        assert report.end_reason == "openai refused session.update (unknown_parameter)"
        assert sim.client_events("response.create") == []

    run(scenario())


def _vad_bridge(
    old: _ServerSession, new: _ServerSession, **overrides: Any
) -> tuple[_Twilio, CallBridge, asyncio.Task[CallReport]]:
    async def connector() -> _ServerSession:
        return new

    session = SessionConfig(create_response=True, interrupt_response=True)
    twilio = _Twilio()
    bridge = CallBridge(
        twilio, old, _memory_config(session=session, **overrides), reconnect=connector
    )
    return twilio, bridge, asyncio.create_task(bridge.run())


def _transcript(item_id: str, text: str) -> JSON:
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": item_id,
        "content_index": 0,
        "transcript": text,
    }


def test_an_older_transcript_is_not_taken_for_the_lost_turns_words() -> None:
    """The first turn was transcribed and answered; the caller's second turn was committed,
    and the session was lost before its transcript came.  The newest restored item is then the
    *first* turn's words: answering it would answer the wrong turn, so the second turn is
    counted lost and nothing is asked for."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _vad_bridge(old, new)
        await _until(lambda: old.sent, "the first session.update")
        old.feed(
            *_spoken_turn("item_1"),
            _transcript("item_1", "Book me for Monday."),
            {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
            _done("resp_1"),
            *_spoken_turn("item_2"),
        )
        await _until(lambda: _awaiting(bridge) and _state(bridge) == "idle", "turn 2 committed")
        old.lose()
        await _until(lambda: new.sent, "the new session.update")
        await asyncio.sleep(0.05)
        assert new.types() == ["session.update", "conversation.item.create"]
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        assert report.turns_lost == 1

    run(scenario())


def test_a_create_the_caller_interrupted_is_not_carried_into_the_turns_answer() -> None:
    """The greeting's create is unanswered when the caller speaks over it (its cancel
    deferred), and the server's VAD commits the turn, whose transcript arrives; the session is
    lost.  The greeting was interrupted: it is reported given up, not merged into the new
    session's answer, which answers the caller's words with the session's own instructions."""

    async def scenario() -> None:
        old, new = _ServerSession(), _ServerSession()
        twilio, bridge, task = _vad_bridge(old, new, greeting="Greet the caller.")
        await _until(lambda: old.events("response.create"), "the greeting's create")
        old.feed(*_spoken_turn("item_1"), _transcript("item_1", "What time do you open?"))
        await _until(lambda: len(bridge.history) == 1, "the transcript")
        old.lose()
        await _until(lambda: new.events("response.create"), "the new session's answer")
        await asyncio.sleep(0.05)
        (create,) = new.events("response.create")
        assert "instructions" not in create["response"]
        assert create["response"]["metadata"][REASON_KEY] == "user_turn"
        twilio.hang_up()
        report = await asyncio.wait_for(task, 10.0)
        # (The new session's create is still unanswered at the hang-up: given up as closed.)
        assert [(g.reason, g.request_reasons) for g in report.given_up] == [
            ("interrupted", ("greeting",)),
            ("closed:telephony closed", ("user_turn",)),
        ]
        assert report.turns_lost == 0

    run(scenario())

"""The simulator itself, over real websockets on 127.0.0.1.

The fake OpenAI server is driven by a raw websocket client playing the app's side; the fake
Twilio caller talks to a tiny scripted websocket server playing the bridge's side.  Every event
the fake server sends is also validated against OpenAI's own pydantic types (GA or beta), so the
simulator cannot drift from the real protocol's shapes unnoticed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from pydantic import TypeAdapter
from waiting import ReceivedEvents
from websockets.asyncio.client import ClientConnection, connect

from realtime_fsm.testing import (
    FakeRealtimeConfig,
    FakeRealtimeServer,
    ReplyContext,
    ResponseFaults,
    ScriptedReply,
    find_audio_tags,
    mulaw_decode,
    rms_level,
    silence,
    tone,
)

try:  # the shape check needs the SDK (a test extra), nothing else does
    from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
    from openai.types.realtime import RealtimeServerEvent as GaServerEvent

    _GA: TypeAdapter[Any] | None = TypeAdapter(GaServerEvent)
    _BETA: TypeAdapter[Any] | None = TypeAdapter(BetaServerEvent)
except ImportError:  # pragma: no cover
    _GA = _BETA = None

JSON = dict[str, Any]
FAST = FakeRealtimeConfig(realtime_factor=40, first_delta_delay_s=0.005, seed=7)
GA_SESSION: JSON = {
    "type": "realtime",
    "audio": {
        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
        "output": {"format": {"type": "audio/pcmu"}, "voice": "alloy"},
    },
}


def run(coro: Coroutine[Any, Any, None], timeout: float = 15.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def assert_valid_shapes(server: FakeRealtimeServer) -> None:
    if _GA is None or _BETA is None:  # pragma: no cover
        return
    for sent in server.sent:
        adapter = _BETA if server.connections[sent.connection].api == "beta" else _GA
        adapter.validate_python(sent.event)


class App(ReceivedEvents):
    """The app side of the Realtime protocol, in raw JSON."""

    until_timeout = 3.0
    drain_seconds = 0.1

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__()
        self.ws = ws
        self._n = 0

    async def send(self, event_type: str, **fields: Any) -> str:
        self._n += 1
        event_id = fields.pop("event_id", f"evt_{self._n}")
        await self.ws.send(json.dumps({"type": event_type, "event_id": event_id, **fields}))
        return str(event_id)

    async def recv(self, timeout: float = 3.0) -> JSON:
        event: JSON = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.events.append(event)
        return event


@asynccontextmanager
async def realtime(
    config: FakeRealtimeConfig = FAST,
    *,
    replies: Any = None,
    session: JSON | None = GA_SESSION,
    beta: bool = False,
) -> AsyncIterator[tuple[FakeRealtimeServer, App]]:
    """A started fake server and one connected, configured app client."""
    async with FakeRealtimeServer(config, replies=replies) as server:
        headers = {"Authorization": "Bearer test"}
        if beta:
            headers["OpenAI-Beta"] = "realtime=v1"
        async with connect(server.url + "?model=gpt-realtime", additional_headers=headers) as ws:
            app = App(ws)
            assert (await app.recv())["type"] == "session.created"
            if session is not None:
                await app.send("session.update", session=session)
                await app.until("session.updated")
            yield server, app
        assert_valid_shapes(server)


# --- session --------------------------------------------------------------------------------


def test_session_created_and_updated_with_effective_ga_config() -> None:
    async def scenario() -> None:
        async with realtime(session=None) as (server, app):
            created = app.events[0]
            assert created["session"]["type"] == "realtime"
            assert created["session"]["audio"]["input"]["turn_detection"]["create_response"]
            session = {
                "type": "realtime",
                "instructions": "Be brief.",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "turn_detection": {"type": "server_vad", "create_response": False},
                        "transcription": {"model": "whisper-1"},
                    },
                    "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
                },
            }
            await app.send("session.update", session=session)
            effective = (await app.until("session.updated"))["session"]
            assert effective["instructions"] == "Be brief."
            assert effective["audio"]["input"]["format"] == {"type": "audio/pcmu"}
            assert effective["audio"]["output"]["voice"] == "marin"
            vad = effective["audio"]["input"]["turn_detection"]
            assert vad["create_response"] is False and vad["interrupt_response"] is True
            assert vad["silence_duration_ms"] == 500  # defaults filled in, like the server
            assert effective["audio"]["input"]["transcription"] == {"model": "whisper-1"}

            eid = await app.send("session.update", session={"instructions": "x"})
            err = (await app.until("error"))["error"]
            assert err["code"] == "missing_required_parameter" and err["event_id"] == eid
            assert err["param"] == "session.type"
            await app.send("session.update", session={"type": "realtime", "voice": "alloy"})
            err = (await app.until("error"))["error"]
            assert err["code"] == "unknown_parameter" and err["param"] == "session.voice"
            assert server.error_counts == {"missing_required_parameter": 1, "unknown_parameter": 1}
            assert [e.event["type"] for e in server.received] == ["session.update"] * 3
            assert server.connections[0].headers["Authorization"] == "Bearer test"
            assert server.connections[0].session["model"] == "gpt-realtime"

    run(scenario())


def test_beta_on_request_flat_session_and_beta_names() -> None:
    async def scenario() -> None:
        beta_session = {
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_ulaw",
            "turn_detection": None,
            "modalities": ["text", "audio"],
        }
        async with realtime(session=beta_session, beta=True, replies=["Hello there"]) as (
            server,
            app,
        ):
            assert server.connections[0].api == "beta"
            updated = app.of("session.updated")[0]["session"]
            assert updated["output_audio_format"] == "g711_ulaw"
            assert updated["turn_detection"] is None
            await app.send("conversation.item.create", item=_user_text("hi"))
            await app.until("conversation.item.created")
            await app.send("response.create")
            await app.until("response.done")
            types = {e["type"] for e in app.events}
            assert {"response.audio.delta", "response.audio_transcript.delta"} <= types
            assert {"response.audio.done", "response.audio_transcript.done"} <= types
            assert not any(t.startswith("response.output_") and "item" not in t for t in types)
            assert "conversation.item.added" not in types
            assert "conversation.item.done" not in types
            created = app.of("response.created")[0]["response"]
            assert created["output_audio_format"] == "g711_ulaw"
            await app.send("session.update", session={"type": "realtime"})
            assert (await app.until("error"))["error"]["code"] == "unknown_parameter"

    run(scenario())


def test_ga_by_default_even_with_beta_keys_in_response_create() -> None:
    async def scenario() -> None:
        async with realtime() as (server, app):
            assert server.connections[0].api == "ga"
            await app.send("response.create", response={"modalities": ["text"]})
            err = (await app.until("error"))["error"]
            assert err["code"] == "unknown_parameter" and err["param"] == "response.modalities"
            assert not server.responses

    run(scenario())


# --- responses ------------------------------------------------------------------------------


def _user_text(text: str) -> JSON:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def test_create_streams_a_full_response_in_the_real_order() -> None:
    text = "Hello! How can I help you today?"

    async def scenario() -> None:
        async with realtime(replies=[text]) as (server, app):
            eid = await app.send("response.create", response={"metadata": {"client_event_id": "x"}})
            done = await app.until("response.done")
            types = [e["type"] for e in app.events[2:]]
            first = [t for i, t in enumerate(types) if t not in types[:i]]
            assert first == [
                "response.created",
                "rate_limits.updated",
                "response.output_item.added",
                "conversation.item.added",
                "response.content_part.added",
                "response.output_audio_transcript.delta",
                "response.output_audio.delta",
                "response.output_audio.done",
                "response.output_audio_transcript.done",
                "response.content_part.done",
                "response.output_item.done",
                "conversation.item.done",
                "response.done",
            ]
            created = app.of("response.created")[0]["response"]
            assert created["status"] == "in_progress"
            assert created["metadata"] == {"client_event_id": "x"}
            assert created["conversation_id"].startswith("conv_")
            assert created["id"].startswith("resp_") and len(created["id"]) == 26
            deltas = [base64.b64decode(e["delta"]) for e in app.of("response.output_audio.delta")]
            assert all(len(d) == 160 for d in deltas)  # 20 ms of mu-law each
            assert all(rms_level(mulaw_decode(d)) > 0.1 for d in deltas)  # not silence
            assert len(deltas) * 20 == len(text) * FAST.ms_per_char
            transcript = "".join(
                e["delta"] for e in app.of("response.output_audio_transcript.delta")
            )
            assert transcript == text
            assert done["response"]["status"] == "completed"
            assert done["response"]["status_details"] is None
            assert done["response"]["output"][0]["content"][0] == {
                "type": "output_audio",
                "transcript": text,
            }
            assert server.url.startswith("ws://127.0.0.1:") and server.port > 0
            record = server.responses[0]
            assert record.client_event_id == eid and record.origin == "client"
            assert record.first_audio_at is not None and record.last_audio_at is not None
            assert record.created_at <= record.first_audio_at <= record.last_audio_at
            assert record.audio_ms == len(deltas) * 20 and record.done_sent
            tags = find_audio_tags(b"".join(deltas))
            assert [t.chunk for t in tags] == list(range(len(deltas)))
            assert {t.ordinal for t in tags} == {record.tag}
            assert server.error_counts == {}

    run(scenario())


def test_pace_is_faster_than_real_time_and_configurable() -> None:
    async def scenario() -> None:
        config = FakeRealtimeConfig(realtime_factor=10, first_delta_delay_s=0)
        async with realtime(config, replies=[ScriptedReply("x", audio_ms=1000)]) as (_s, app):
            start = time.monotonic()
            await app.send("response.create")
            await app.until("response.done")
            elapsed = time.monotonic() - start
            # 1 s of audio at 10x real time: 0.1 s; the upper bound only says "faster than real
            # time", generous for a loaded machine.
            assert 0.07 < elapsed < 1.0

    run(scenario())


def test_second_create_gets_the_busy_error_and_no_response() -> None:
    async def scenario() -> None:
        async with realtime() as (server, app):
            await app.send("response.create")
            created = await app.until("response.created")
            rid = created["response"]["id"]
            eid = await app.send("response.create", event_id="second_create")
            err = await app.until("error")
            assert err["error"] == {
                "type": "invalid_request_error",
                "code": "conversation_already_has_active_response",
                "message": f"Conversation already has an active response in progress: {rid}. "
                "Wait until the response is finished before creating a new one.",
                "param": None,
                "event_id": eid,
            }
            await app.until("response.done")
            await app.drain(0.05)
            assert len(app.of("response.created")) == 1
            assert len(server.responses) == 1
            assert server.error_counts == {"conversation_already_has_active_response": 1}
            await app.send("response.create")  # the slot is free again after response.done
            await app.until("response.done")
            assert len(server.responses) == 2

    run(scenario())


def test_cancel_of_the_active_response() -> None:
    async def scenario() -> None:
        long = ScriptedReply("a long answer", audio_ms=3000)
        async with realtime(replies=[long]) as (server, app):
            await app.send("response.create")
            await app.until("response.output_audio.delta")
            await app.send("response.cancel")
            done = await app.until("response.done")
            assert done["response"]["status"] == "cancelled"
            assert done["response"]["status_details"] == {
                "type": "cancelled",
                "reason": "client_cancelled",
            }
            assert done["response"]["output"][0]["status"] == "incomplete"
            tail = [e["type"] for e in app.events[-6:]]
            assert tail == [
                "response.output_audio.done",
                "response.output_audio_transcript.done",
                "response.content_part.done",
                "response.output_item.done",
                "conversation.item.done",
                "response.done",
            ]
            record = server.responses[0]
            assert record.status == "cancelled" and record.reason == "client_cancelled"
            assert 0 < record.audio_ms < 3000
            cancel_at = next(r.at for r in server.received if r.event["type"] == "response.cancel")
            late = [
                s
                for s in server.sent
                if s.event["type"] == "response.output_audio.delta" and s.at > cancel_at
            ]
            assert late == []
            assert server.error_counts == {}

    run(scenario())


def test_cancel_with_nothing_active_and_of_a_finished_response() -> None:
    async def scenario() -> None:
        async with realtime(replies=["hi"]) as (server, app):
            eid = await app.send("response.cancel")
            err = (await app.until("error"))["error"]
            assert err["code"] == "response_cancel_not_active"
            assert err["message"] == "Cancellation failed: no active response found"
            assert err["event_id"] == eid
            await app.send("response.create")
            rid = (await app.until("response.done"))["response"]["id"]
            await app.send("response.cancel", response_id=rid)
            assert (await app.until("error"))["error"]["code"] == "response_cancel_not_active"
            assert server.error_counts == {"response_cancel_not_active": 2}

    run(scenario())


def test_create_after_cancel_but_before_done_is_rejected() -> None:
    async def scenario() -> None:
        slow = ResponseFaults(cancel_ack_delay_s=0.2)
        async with realtime(replies=[ScriptedReply("long", audio_ms=3000, faults=slow)]) as (
            server,
            app,
        ):
            await app.send("response.create")
            await app.until("response.output_audio.delta")
            t_cancel = time.monotonic()
            await app.send("response.cancel")
            await app.send("response.create")
            err = await app.until("error")
            assert err["error"]["code"] == "conversation_already_has_active_response"
            done = await app.until("response.done")
            assert time.monotonic() - t_cancel >= 0.19  # the slow acknowledgement
            assert done["response"]["status"] == "cancelled"
            assert [r.status for r in server.responses] == ["cancelled"]

    run(scenario())


def test_out_of_band_responses_run_in_parallel() -> None:
    async def scenario() -> None:
        replies = [ScriptedReply("default", audio_ms=2000), ScriptedReply("oob", audio_ms=200)]
        async with realtime(replies=replies) as (server, app):
            await app.send("response.create")
            await app.until("response.created")
            await app.send(
                "response.create", response={"conversation": "none", "metadata": {"k": "oob"}}
            )
            oob = await app.until("response.created", lambda e: e["response"]["metadata"])
            assert oob["response"]["conversation_id"] is None
            oob_id = oob["response"]["id"]
            oob_done = await app.until("response.done", lambda e: e["response"]["id"] == oob_id)
            assert oob_done["response"]["status"] == "completed"
            oob_items = [
                e
                for e in app.of("conversation.item.added")
                if e["item"]["id"] == oob_done["response"]["output"][0]["id"]
            ]
            assert oob_items == []  # out-of-band output is not added to the conversation
            await app.send("response.cancel")  # no id: the default response only
            done = await app.until("response.done")
            assert done["response"]["id"] == server.responses[0].id
            assert done["response"]["status"] == "cancelled"
            assert server.error_counts == {}
            assert server.responses[1].out_of_band

    run(scenario())


def test_truncate_is_validated_against_the_audio_actually_sent() -> None:
    async def scenario() -> None:
        replies = [ScriptedReply("spoken", audio_ms=400), ScriptedReply("silent", audio_ms=200)]
        async with realtime(replies=replies) as (server, app):
            await app.send("conversation.item.create", item=_user_text("hi"))
            user_item = (await app.until("conversation.item.added"))["item"]["id"]
            await app.send("response.create")
            done = await app.until("response.done")
            item_id = done["response"]["output"][0]["id"]

            await app.send(
                "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=410
            )
            err = (await app.until("error"))["error"]
            assert err["message"] == "Audio content of 400ms is already shorter than 410ms"
            await app.send(
                "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=250
            )
            truncated = await app.until("conversation.item.truncated")
            assert truncated["audio_end_ms"] == 250 and truncated["item_id"] == item_id
            # Events already sent are not rewritten by later server state (the transcript is
            # deleted server-side by the truncate, not in the recorded response.done).
            recorded = server.server_events("response.done")[0]["response"]["output"][0]
            assert recorded["content"][0]["transcript"] == "spoken"
            await app.send(
                "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=300
            )
            err = (await app.until("error"))["error"]
            assert err["message"] == "Audio content of 250ms is already shorter than 300ms"
            await app.send(
                "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=-1
            )
            assert (await app.until("error"))["error"]["code"] == "integer_below_min_value"

            await app.send(
                "conversation.item.truncate", item_id=user_item, content_index=0, audio_end_ms=0
            )
            err = (await app.until("error"))["error"]
            assert err["message"] == "Only model output audio messages can be truncated"
            server.fault_next_response(ResponseFaults(silent=True))
            await app.send("response.create")
            silent_done = await app.until("response.done")
            silent_item = silent_done["response"]["output"][0]["id"]
            await app.send(
                "conversation.item.truncate", item_id=silent_item, content_index=0, audio_end_ms=0
            )
            err = (await app.until("error"))["error"]
            assert err["message"] == "Only model output audio messages can be truncated"
            await app.send(
                "conversation.item.truncate", item_id="item_nope", content_index=0, audio_end_ms=0
            )
            assert (await app.until("error"))["error"]["code"] == "item_not_found"
            await app.send("conversation.item.delete", item_id=user_item)
            assert (await app.until("conversation.item.deleted"))["item_id"] == user_item
            await app.send("conversation.item.delete", item_id=user_item)
            assert (await app.until("error"))["error"]["code"] == "item_not_found"

    run(scenario())


def test_truncate_of_items_without_audio() -> None:
    async def scenario() -> None:
        async with realtime(replies=["hold on", "in text"]) as (server, app):
            server.fault_next_response(ResponseFaults(stall_after_deltas=0))
            await app.send("response.create")
            added = await app.until("response.content_part.added")
            await app.send("response.cancel")  # interrupted before its first audio delta
            done = await app.until("response.done")
            assert done["response"]["status"] == "cancelled"
            assert not app.of("response.output_audio.delta")
            await app.send(
                "conversation.item.truncate",
                item_id=added["item_id"],
                content_index=0,
                audio_end_ms=0,
            )
            err = (await app.until("error"))["error"]
            assert err["message"] == "Only model output audio messages can be truncated"

            await app.send("response.create", response={"output_modalities": ["text"]})
            done = await app.until("response.done")
            assert done["response"]["output_modalities"] == ["text"]
            assert "".join(e["delta"] for e in app.of("response.output_text.delta")) == "in text"
            item_id = done["response"]["output"][0]["id"]
            await app.send(
                "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=0
            )
            err = (await app.until("error"))["error"]
            assert err["message"] == "Only model output audio messages can be truncated"

    run(scenario())


def test_cancel_before_the_output_item_gives_an_empty_output() -> None:
    async def scenario() -> None:
        config = FakeRealtimeConfig(first_delta_delay_s=1.0)
        async with realtime(config) as (_server, app):
            await app.send("response.create")
            await app.until("response.created")
            await app.send("response.cancel")
            done = await app.until("response.done")
            assert done["response"]["status"] == "cancelled"
            assert done["response"]["output"] == []
            assert not app.of("response.output_item.added")

    run(scenario())


# --- server VAD -----------------------------------------------------------------------------


def _vad_session(*, create: bool, interrupt: bool, transcription: bool = False) -> JSON:
    return {
        "type": "realtime",
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "turn_detection": {
                    "type": "server_vad",
                    "silence_duration_ms": 200,
                    "prefix_padding_ms": 100,
                    "create_response": create,
                    "interrupt_response": interrupt,
                },
                "transcription": {"model": "whisper-1"} if transcription else None,
            },
            "output": {"format": {"type": "audio/pcmu"}},
        },
    }


def test_vad_from_energy_creates_a_server_response_at_speech_stopped() -> None:
    async def scenario() -> None:
        session = _vad_session(create=True, interrupt=True, transcription=True)
        async with realtime(session=session, replies=["Sure."]) as (server, app):
            server.queue_transcript("book a table for two")
            await app.send("input_audio_buffer.append", audio=b64(silence(1000)))
            assert await app.drain(0.05) == []  # silence is not speech
            await app.send("input_audio_buffer.append", audio=b64(tone(600) + silence(300)))
            started = await app.until("input_audio_buffer.speech_started")
            assert started["audio_start_ms"] == 900  # 1000 ms in, minus 100 ms prefix padding
            stopped = await app.until("input_audio_buffer.speech_stopped")
            assert stopped["item_id"] == started["item_id"]
            assert stopped["audio_end_ms"] == 1800  # speech end + silence_duration_ms
            committed = await app.until("input_audio_buffer.committed")
            assert committed["item_id"] == started["item_id"]
            user = await app.until("conversation.item.added")
            assert user["item"]["role"] == "user"
            created = await app.until("response.created")
            assert created["response"]["metadata"] is None
            assert created["response"]["conversation_id"].startswith("conv_")
            transcription = await app.until("conversation.item.input_audio_transcription.completed")
            assert transcription["transcript"] == "book a table for two"
            assert transcription["item_id"] == started["item_id"]
            # Transcription is asynchronous: it may come before or after the response events.
            if not app.of("response.done"):
                await app.until("response.done")
            assert server.responses[0].origin == "server_vad"
            assert server.error_counts == {}

    run(scenario())


def test_vad_interrupt_response_cancels_with_turn_detected_then_creates() -> None:
    async def scenario() -> None:
        session = _vad_session(create=True, interrupt=True)
        replies = [ScriptedReply("long", audio_ms=4000), "short"]
        async with realtime(session=session, replies=replies) as (server, app):
            await app.send("response.create")
            first = (await app.until("response.created"))["response"]["id"]
            await app.until("response.output_audio.delta")
            await app.send("input_audio_buffer.append", audio=b64(tone(300)))
            await app.until("input_audio_buffer.speech_started")
            done = await app.until("response.done")
            assert done["response"]["id"] == first
            assert done["response"]["status_details"]["reason"] == "turn_detected"
            await app.send("input_audio_buffer.append", audio=b64(silence(300)))
            await app.until("input_audio_buffer.speech_stopped")
            second = await app.until("response.created")
            assert second["response"]["id"] != first
            assert [r.origin for r in server.responses] == ["client", "server_vad"]

    run(scenario())


def test_vad_with_both_flags_off_only_reports_speech() -> None:
    async def scenario() -> None:
        session = _vad_session(create=False, interrupt=False)
        async with realtime(session=session, replies=[ScriptedReply("x", audio_ms=600)]) as (
            server,
            app,
        ):
            await app.send("response.create")
            await app.until("response.output_audio.delta")
            await app.send("input_audio_buffer.append", audio=b64(tone(200) + silence(300)))
            await app.until("input_audio_buffer.committed")
            done = await app.until("response.done")
            assert done["response"]["status"] == "completed"  # not interrupted
            await app.drain(0.1)
            assert len(server.responses) == 1  # and no server-created response

    run(scenario())


def test_manual_commit_and_clear_of_the_input_buffer() -> None:
    async def scenario() -> None:
        async with realtime() as (server, app):
            await app.send("input_audio_buffer.commit")
            err = (await app.until("error"))["error"]
            assert err["code"] == "input_audio_buffer_commit_empty"
            assert "buffer only has 0.00ms of audio" in err["message"]
            await app.send("input_audio_buffer.append", audio=b64(tone(200)))
            await app.send("input_audio_buffer.commit")
            await app.until("input_audio_buffer.committed")
            await app.send("input_audio_buffer.append", audio=b64(tone(200)))
            await app.send("input_audio_buffer.clear")
            await app.until("input_audio_buffer.cleared")
            assert not app.of("input_audio_buffer.speech_started")  # turn_detection is null
            assert server.error_counts == {"input_audio_buffer_commit_empty": 1}

    run(scenario())


# --- scripted replies -----------------------------------------------------------------------


def test_reply_callable_sees_the_context() -> None:
    seen: list[ReplyContext] = []

    def reply(ctx: ReplyContext) -> str:
        seen.append(ctx)
        return f"You said: {ctx.last_user_text}"

    async def scenario() -> None:
        async with realtime(replies=reply) as (_server, app):
            await app.send("conversation.item.create", item=_user_text("שלום"))
            await app.send("response.create", response={"instructions": "Echo."})
            done = await app.until("response.done")
            assert done["response"]["output"][0]["content"][0]["transcript"] == "You said: שלום"
            assert seen[0].instructions == "Echo." and seen[0].origin == "client"

    run(scenario())

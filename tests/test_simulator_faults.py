"""The fake OpenAI Realtime server's fault knobs (dropped, duplicated and late events, slow and lost
cancels, silent responses, errors, socket drops), over real sockets on 127.0.0.1.  The raw client
helpers are test_simulator's.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from test_simulator import FAST, realtime, run
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime_fsm.testing import (
    LIFECYCLE_EVENT_TYPES,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    ResponseFaults,
    ScriptedError,
    ScriptedReply,
)

# --- fault knobs ----------------------------------------------------------------------------


def test_silent_response_streams_a_transcript_without_audio_until_cancelled() -> None:
    async def scenario() -> None:
        async with realtime() as (server, app):
            server.fault_next_response(ResponseFaults(silent=True, hold_open_s=None))
            await app.send("response.create")
            await app.until("response.output_audio_transcript.delta")
            await app.drain(0.2)
            assert not app.of("response.done") and not app.of("response.output_audio.delta")
            assert len(app.of("response.output_audio_transcript.delta")) >= 1
            await app.send("response.cancel")
            done = await app.until("response.done")
            assert done["response"]["status"] == "cancelled"
            assert server.responses[0].audio_deltas == 0

    run(scenario())


def test_dropped_response_done_frees_the_slot_silently() -> None:
    async def scenario() -> None:
        async with realtime(replies=["one", "two"]) as (server, app):
            server.fault_next_response(ResponseFaults(drop_done=True))
            await app.send("response.create")
            await app.until("response.output_item.done")
            await app.drain(0.1)
            assert not app.of("response.done")
            assert server.responses[0].status == "completed" and not server.responses[0].done_sent
            await app.send("response.create")  # the server considers the slot free
            done = await app.until("response.done")
            assert done["response"]["id"] == server.responses[1].id
            assert server.error_counts == {}

    run(scenario())


def test_duplicated_events_repeat_with_the_same_event_id() -> None:
    async def scenario() -> None:
        async with realtime(replies=["dup"]) as (server, app):
            server.fault_next_response(ResponseFaults(duplicate_events=LIFECYCLE_EVENT_TYPES))
            await app.send("response.create")
            await app.until("response.done")
            await app.until("response.done")
            for name in ("response.created", "response.output_item.added", "response.done"):
                copies = app.of(name)
                assert len(copies) == 2 and copies[0] == copies[1]
            assert len(server.responses) == 1

    run(scenario())


def test_late_events_of_an_old_response_arrive_after_the_next_created() -> None:
    async def scenario() -> None:
        async with realtime(replies=["old", "new"]) as (server, app):
            server.fault_next_response(ResponseFaults(late_events=True))
            await app.send("response.create")
            old = (await app.until("response.done"))["response"]["id"]
            late_before = [e for e in await app.drain(0.1) if e.get("response_id") == old]
            assert late_before == []  # held back until the next response.created
            await app.send("response.create")
            new = (await app.until("response.created"))["response"]["id"]
            stale = [await app.recv() for _ in range(3)]
            assert [e["type"] for e in stale] == [
                "response.output_audio.delta",
                "response.output_audio_transcript.delta",
                "response.done",
            ]
            assert all(e.get("response_id", e.get("response", {}).get("id")) == old for e in stale)
            assert stale[2]["event_id"] != app.of("response.done")[0]["event_id"]
            done = await app.until("response.done", lambda e: e["response"]["id"] == new)
            assert done["response"]["status"] == "completed"
            assert server.injected_error_counts == {} and server.error_counts == {}

    run(scenario())


def test_late_events_after_a_delay() -> None:
    async def scenario() -> None:
        async with realtime(replies=["old"]) as (server, app):
            server.fault_next_response(ResponseFaults(late_events=True, late_events_delay_s=0.1))
            await app.send("response.create")
            old = (await app.until("response.done"))["response"]["id"]
            t0 = time.monotonic()
            late = await app.until("response.done")
            assert late["response"]["id"] == old and time.monotonic() - t0 >= 0.08
            assert any(s.injected for s in server.sent)

    run(scenario())


def test_deltas_already_on_the_wire_after_a_cancel() -> None:
    async def scenario() -> None:
        faults = ResponseFaults(deltas_after_cancel=3)
        async with realtime(replies=[ScriptedReply("x", audio_ms=3000, faults=faults)]) as (
            server,
            app,
        ):
            await app.send("response.create")
            await app.until("response.output_audio.delta")
            await app.send("response.cancel")
            await app.until("response.done")
            cancel_at = next(r.at for r in server.received if r.event["type"] == "response.cancel")
            after = [
                s
                for s in server.sent
                if s.event["type"] == "response.output_audio.delta" and s.at >= cancel_at
            ]
            assert len(after) == 3

    run(scenario())


def test_injected_errors_now_on_next_event_and_scripted() -> None:
    async def scenario() -> None:
        scripted = ScriptedError("server_error", "Scripted failure.", "server_error", at_s=0.05)
        config = FakeRealtimeConfig(realtime_factor=40, scripted_errors=(scripted,))
        async with realtime(config) as (server, app):
            assert (await app.until("error"))["error"]["message"] == "Scripted failure."
            server.inject_error("rate_limit_exceeded", "Slow down.", error_type="rate_limit_error")
            assert (await app.until("error"))["error"]["code"] == "rate_limit_exceeded"
            server.error_on_next("response.create", "server_error", "Try again.")
            eid = await app.send("response.create")
            err = (await app.until("error"))["error"]
            assert err["event_id"] == eid and err["message"] == "Try again."
            await app.drain(0.1)
            assert not server.responses  # swallowed, like a rejected create
            assert server.error_counts == {}
            assert server.injected_error_counts == {
                "server_error": 2,
                "rate_limit_exceeded": 1,
            }
            server.send_event({"type": "rate_limits.updated", "rate_limits": []})
            assert (await app.until("rate_limits.updated"))["rate_limits"] == []

    run(scenario())


def test_socket_drop_mid_response_closes_without_a_close_frame() -> None:
    async def scenario() -> None:
        async with realtime(replies=[ScriptedReply("x", audio_ms=2000)]) as (server, app):
            server.fault_next_response(ResponseFaults(drop_socket_after_deltas=3))
            await app.send("response.create")
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await app.recv()
            assert info.value.rcvd is None  # abrupt: no close frame
            assert len(app.of("response.output_audio.delta")) == 3
            await server.wait_until(lambda: server.connections[0].closed)
            assert server.responses[0].socket_dropped
            assert server.responses[0].status == "in_progress"  # never finished

    run(scenario())


def test_drop_connections_and_reconnect() -> None:
    async def scenario() -> None:
        async with FakeRealtimeServer(FAST) as server:
            async with connect(server.url) as ws:
                await ws.recv()
                server.drop_connections()
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 2)
            async with connect(server.url) as ws:  # the server itself keeps listening
                assert json.loads(await ws.recv())["type"] == "session.created"
            assert len(server.connections) == 2

    run(scenario())


def test_ignored_create_and_stall_go_quiet() -> None:
    async def scenario() -> None:
        async with realtime(replies=["kept for later"]) as (server, app):
            server.fault_next_response(ResponseFaults(ignore_create=True))
            await app.send("response.create")
            assert await app.drain(0.15) == []
            server.fault_next_response(ResponseFaults(stall_after_deltas=2))
            await app.send("response.create")
            await app.until("response.created")
            await app.drain(0.15)
            assert len(app.of("response.output_audio.delta")) == 2
            assert not app.of("response.done")
            await app.send("response.cancel")
            done = await app.until("response.done")
            assert done["response"]["status"] == "cancelled"
            assert server.responses[0].text == "kept for later"

    run(scenario())


def test_incomplete_outcome() -> None:
    async def scenario() -> None:
        faults = ResponseFaults(outcome="incomplete")
        async with realtime(replies=[ScriptedReply("a b c d", audio_ms=400, faults=faults)]) as (
            server,
            app,
        ):
            await app.send("response.create")
            done = await app.until("response.done")
            assert done["response"]["status"] == "incomplete"
            assert done["response"]["status_details"]["reason"] == "max_output_tokens"
            assert server.responses[0].audio_ms == 200

    run(scenario())


def test_every_client_event_is_recorded() -> None:
    async def scenario() -> None:
        async with realtime() as (server, app):
            await app.ws.send("not json")
            await app.send("no.such.event")
            await app.until("error")
            await app.until("error")
            assert server.client_events("no.such.event")
            assert server.received[-2].event == {"raw": "not json"}
            assert server.error_counts == {"invalid_json": 1, "invalid_value": 1}
            assert server.protocol_error_total == 2

    run(scenario())

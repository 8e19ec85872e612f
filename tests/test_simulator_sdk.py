"""The simulator driven by the real ``openai`` SDK client, every server event parsed with the
SDK's types (strictly: missing or undeclared fields fail, see ``tests/sdk_client.py``), and the
documented rules it must hold (reference ``openai-realtime.md``; ``openai`` 3.63.0 docstrings):

* a voice change after assistant audio is refused (``cannot_update_voice``);
* unknown parameters are refused at any depth (``unknown_parameter``), the whole update with them;
* ``max_output_tokens`` ends a response ``incomplete`` / ``max_output_tokens``, audio cut short;
* server VAD's ``idle_timeout_ms`` sends ``input_audio_buffer.timeout_triggered`` and creates a
  response; ``threshold``, ``prefix_padding_ms`` and ``silence_duration_ms`` are honoured;
* assistant items carry ``previous_item_id`` in ``conversation.item.added`` and ``.done``;
* ``response.done.usage`` has its input and output token details;
* streaming transcription models send ``...input_audio_transcription.delta`` before
  ``completed``, ``whisper-1`` only ``completed``.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Coroutine, Mapping
from typing import Any

import pytest
import typing_extensions
from openai.types.beta.realtime import response_create_event_param as beta_response
from openai.types.beta.realtime import session_update_event_param as beta_session
from openai.types.realtime import (
    realtime_response_create_params_param as ga_response,
)
from openai.types.realtime import (
    realtime_session_create_request_param as ga_session,
)
from openai.types.realtime.realtime_response_usage import RealtimeResponseUsage
from sdk_client import FAST, JSON, PHONE_SESSION, SdkClient, connected

from realtime_fsm.testing import FakeRealtimeServer, ScriptedReply, silence, tone
from realtime_fsm.testing._realtime_params import (
    BETA_RESPONSE,
    BETA_SESSION,
    GA_RESPONSE,
    GA_SESSION,
    Schema,
)


def run(coro: Coroutine[Any, Any, None], timeout: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def with_input(**changes: Any) -> JSON:
    """:data:`PHONE_SESSION` with ``audio.input`` entries replaced."""
    session = {**PHONE_SESSION, "audio": {**PHONE_SESSION["audio"]}}
    session["audio"]["input"] = {**PHONE_SESSION["audio"]["input"], **changes}
    return session


def errors(sdk: SdkClient) -> list[JSON]:
    return [e["error"] for e in sdk.of("error")]


# --- a representative session ------------------------------------------------------------------


def test_a_whole_session_through_the_sdk_parses_strictly() -> None:
    """Session, a VAD turn with transcription, a text turn cancelled and truncated, item
    create/delete, a tool call and its output, and the usual errors: every event the simulator
    sends parses with the SDK's types."""

    async def scenario() -> None:
        session = with_input(transcription={"model": "gpt-4o-mini-transcribe"})
        async with connected(session=session) as (server, sdk):
            conn = sdk.conn
            # A caller's turn: server VAD commits it and answers.
            await sdk.append(tone(600) + silence(400))
            vad = await sdk.until("response.created")
            await sdk.until("response.done", lambda e: e["response"]["id"] == vad["response"]["id"])
            await sdk.have("conversation.item.input_audio_transcription.completed")
            # A typed turn, cancelled mid-reply, its item truncated then deleted.
            server.queue_reply(ScriptedReply("A long story. " * 10, audio_ms=20_000))
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Tell me a story"}],
                }
            )
            await conn.response.create(event_id="evt_create")
            created = await sdk.until("response.created")
            delta = await sdk.until("response.output_audio.delta")
            await conn.response.cancel(event_id="evt_cancel")
            done = await sdk.until("response.done")
            assert done["response"]["status"] == "cancelled"
            assert done["response"]["status_details"]["reason"] == "client_cancelled"
            assert done["response"]["id"] == created["response"]["id"]
            item_id = delta["item_id"]
            await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=20)
            truncated = await sdk.until("conversation.item.truncated")
            assert truncated["audio_end_ms"] == 20
            await conn.conversation.item.delete(item_id=item_id)
            assert (await sdk.until("conversation.item.deleted"))["item_id"] == item_id
            # A tool call, its output and the answer.
            server.script_tool_call(
                "weather", name="get_weather", arguments={"city": "Paris"}, then_reply="Sunny."
            )
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "weather in Paris?"}],
                }
            )
            await conn.response.create()
            call = await sdk.until("response.function_call_arguments.done")
            await sdk.until("response.done")
            await conn.conversation.item.create(
                item={"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
            )
            await sdk.until(
                "conversation.item.done", lambda e: e["item"]["type"] == "function_call_output"
            )
            await conn.response.create()
            answer = await sdk.until("response.done")
            assert answer["response"]["output"][0]["content"][0]["transcript"] == "Sunny."
            # Errors, each naming the client event.
            await conn.response.cancel(event_id="evt_nothing")
            await conn.conversation.item.truncate(
                item_id=call["item_id"], content_index=0, audio_end_ms=10, event_id="evt_trunc"
            )
            await conn.conversation.item.delete(item_id="item_nope", event_id="evt_delete")
            await sdk.send_raw({"type": "response.bogus", "event_id": "evt_bogus"})
            await conn.response.create(event_id="evt_first")
            await conn.response.create(event_id="evt_second")
            await sdk.until("error", lambda e: e["error"]["event_id"] == "evt_second")
            await sdk.until("response.done")
            codes = {e["event_id"]: e["code"] for e in errors(sdk)}
            assert codes == {
                "evt_nothing": "response_cancel_not_active",
                "evt_trunc": "invalid_value",
                "evt_delete": "item_not_found",
                "evt_bogus": "invalid_value",
                "evt_second": "conversation_already_has_active_response",
            }
            seen = {e["type"] for e in sdk.events}
            assert {
                "session.created",
                "session.updated",
                "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed",
                "conversation.item.added",
                "conversation.item.done",
                "conversation.item.input_audio_transcription.delta",
                "conversation.item.input_audio_transcription.completed",
                "response.created",
                "rate_limits.updated",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_audio.delta",
                "response.output_audio_transcript.delta",
                "response.output_audio.done",
                "response.output_audio_transcript.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "conversation.item.truncated",
                "conversation.item.deleted",
                "response.done",
                "error",
            } <= seen

    run(scenario())


# --- a. the voice lock -------------------------------------------------------------------------


def test_a_voice_change_after_assistant_audio_is_refused() -> None:
    async def scenario() -> None:
        async with connected() as (server, sdk):
            conn = sdk.conn
            # Before any audio the voice may change.
            await conn.session.update(
                session={"type": "realtime", "audio": {"output": {"voice": "cedar"}}}
            )
            updated = await sdk.until("session.updated")
            assert updated["session"]["audio"]["output"]["voice"] == "cedar"
            await conn.response.create()
            await sdk.until("response.done")
            # After it, a different voice is refused, and the whole update with it.
            await conn.session.update(
                session={
                    "type": "realtime",
                    "instructions": "new",
                    "audio": {"output": {"voice": "marin"}},
                },
                event_id="evt_voice",
            )
            error = (await sdk.until("error"))["error"]
            assert error == {
                "type": "invalid_request_error",
                "code": "cannot_update_voice",
                "message": "Cannot update a conversation's voice if assistant audio is present.",
                "param": None,
                "event_id": "evt_voice",
            }
            assert server.connections[0].session["instructions"] == PHONE_SESSION["instructions"]
            assert server.connections[0].session["audio"]["output"]["voice"] == "cedar"
            # The same voice again (a bridge re-sending its whole config) is no change.
            await conn.session.update(
                session={
                    "type": "realtime",
                    "instructions": "new",
                    "audio": {"output": {"voice": "cedar"}},
                }
            )
            updated = await sdk.until("session.updated")
            assert updated["session"]["instructions"] == "new"

    run(scenario())


def test_a_text_only_response_does_not_lock_the_voice() -> None:
    async def scenario() -> None:
        async with connected() as (_server, sdk):
            await sdk.conn.response.create(response={"output_modalities": ["text"]})
            await sdk.until("response.done")
            await sdk.conn.session.update(
                session={"type": "realtime", "audio": {"output": {"voice": "ash"}}}
            )
            assert (await sdk.until("session.updated"))["session"]["audio"]["output"][
                "voice"
            ] == "ash"

    run(scenario())


# --- b. unknown parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"type": "realtime", "colour": "blue"}, "session.colour"),
        ({"type": "realtime", "voice": "alloy"}, "session.voice"),
        ({"type": "realtime", "temperature": 0.7}, "session.temperature"),
        ({"type": "realtime", "audio": {"inputs": {}}}, "session.audio.inputs"),
        ({"type": "realtime", "audio": {"input": {"vad": {}}}}, "session.audio.input.vad"),
        (
            {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcmu", "rate": 8000}}},
            },
            "session.audio.input.format.rate",
        ),
        (
            {"type": "realtime", "audio": {"output": {"voice": "ash", "pitch": 2}}},
            "session.audio.output.pitch",
        ),
        (
            {
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "whisper-1", "lang": "en"}}},
            },
            "session.audio.input.transcription.lang",
        ),
        (
            {
                "type": "realtime",
                "audio": {"input": {"noise_reduction": {"type": "near_field", "level": 1}}},
            },
            "session.audio.input.noise_reduction.level",
        ),
        (
            {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "eagerness": "low"}}},
            },
            "session.audio.input.turn_detection.eagerness",
        ),
        (
            {
                "type": "realtime",
                "audio": {
                    "input": {"turn_detection": {"type": "semantic_vad", "idle_timeout_ms": 5000}}
                },
            },
            "session.audio.input.turn_detection.idle_timeout_ms",
        ),
        (
            {"type": "realtime", "reasoning": {"effort": "low", "summary": "auto"}},
            "session.reasoning.summary",
        ),
        ({"type": "realtime", "tracing": {"workflow": "x"}}, "session.tracing.workflow"),
    ],
)
def test_b_unknown_session_parameters_are_refused(session: JSON, param: str) -> None:
    async def scenario() -> None:
        async with connected() as (server, sdk):
            before = server.connections[0].session
            await sdk.send_raw(
                {"type": "session.update", "event_id": "evt_bad", "session": session}
            )
            error = (await sdk.until("error"))["error"]
            assert error["code"] == "unknown_parameter"
            assert error["param"] == param
            assert error["message"] == f"Unknown parameter: '{param}'."
            assert error["event_id"] == "evt_bad"
            assert not [e for e in await sdk.drain(0.1) if e["type"] == "session.updated"]
            assert server.connections[0].session == before

    run(scenario())


@pytest.mark.parametrize(
    ("response", "param"),
    [
        ({"modalities": ["text"]}, "response.modalities"),
        ({"voice": "ash"}, "response.voice"),
        ({"audio": {"output": {"speed": 1.2}}}, "response.audio.output.speed"),
        ({"reasoning": {"budget": 3}}, "response.reasoning.budget"),
    ],
)
def test_b_unknown_response_parameters_are_refused(response: JSON, param: str) -> None:
    async def scenario() -> None:
        async with connected() as (server, sdk):
            await sdk.send_raw(
                {"type": "response.create", "event_id": "evt_bad", "response": response}
            )
            error = (await sdk.until("error"))["error"]
            assert (error["code"], error["param"], error["event_id"]) == (
                "unknown_parameter",
                param,
                "evt_bad",
            )
            assert not [e for e in await sdk.drain(0.1) if e["type"] == "response.created"]
            assert server.responses == []

    run(scenario())


def _sdk_keys(annotation: Any) -> Any:
    """The keys of a TypedDict (and of the TypedDicts inside it); unions merge their keys."""
    origin = typing.get_origin(annotation)
    if origin in (
        typing_extensions.Required,
        typing_extensions.NotRequired,
        typing_extensions.Annotated,
    ):
        return _sdk_keys(typing.get_args(annotation)[0])
    if origin is typing.Union or str(origin).endswith("UnionType"):
        merged: dict[str, Any] = {}
        for arg in typing.get_args(annotation):
            sub = _sdk_keys(arg)
            if isinstance(sub, dict):
                for key, value in sub.items():
                    merged[key] = merged.get(key) or value
        return merged or None
    if typing_extensions.is_typeddict(annotation):
        hints = typing.get_type_hints(annotation, include_extras=True)
        return {key: _sdk_keys(value) for key, value in hints.items()}
    return None


def _schema_keys(schema: Schema | None) -> Any:
    if schema is None:
        return None
    return {key: _schema_keys(value) for key, value in schema.items()}


def _without(tree: Any, leaves: tuple[str, ...]) -> Any:
    """``tree`` with the named keys (at the top) as leaves: entries the simulator leaves to
    the handlers (tools, item inputs) whose SDK types are large unions."""
    assert isinstance(tree, Mapping)
    return {k: (None if k in leaves else v) for k, v in tree.items()}


@pytest.mark.parametrize(
    ("schema", "sdk_type"),
    [
        (GA_SESSION, ga_session.RealtimeSessionCreateRequestParam),
        (GA_RESPONSE, ga_response.RealtimeResponseCreateParamsParam),
        (BETA_SESSION, beta_session.Session),
        (BETA_RESPONSE, beta_response.Response),
    ],
)
def test_b_the_accepted_parameters_are_the_sdk_types_keys(schema: Schema, sdk_type: Any) -> None:
    leaves = ("tools", "input", "include", "metadata", "tool_choice")
    assert _without(_schema_keys(schema), leaves) == _without(_sdk_keys(sdk_type), leaves)


# --- c. max_output_tokens ----------------------------------------------------------------------


def test_c_max_output_tokens_ends_the_response_incomplete_with_its_audio_cut() -> None:
    async def scenario() -> None:
        reply = ScriptedReply("One two three four five six seven eight nine ten.", audio_ms=2000)
        async with connected(replies=[reply, reply, reply]) as (server, sdk):
            conn = sdk.conn
            await conn.session.update(session={"type": "realtime", "max_output_tokens": 12})
            await sdk.until("session.updated")
            await conn.response.create()
            done = (await sdk.until("response.done"))["response"]
            assert done["status"] == "incomplete"
            assert done["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
            assert done["output"][0]["status"] == "incomplete"
            assert 0 < done["usage"]["output_tokens"] <= 12
            cut = server.responses[0]
            assert 0 < cut.audio_ms < 2000
            spoken = sdk.of("response.output_audio_transcript.done")[-1]["transcript"]
            assert spoken and reply.text.startswith(spoken) and spoken != reply.text
            # Per response: response.create's own limit wins over the session's.
            await conn.response.create(response={"max_output_tokens": "inf"})
            done = (await sdk.until("response.done"))["response"]
            assert done["status"] == "completed" and server.responses[1].audio_ms == 2000
            await conn.response.create(response={"max_output_tokens": 4})
            done = (await sdk.until("response.done"))["response"]
            assert done["status"] == "incomplete" and done["usage"]["output_tokens"] <= 4
            assert server.responses[2].audio_ms < cut.audio_ms
            # Out of the documented range (1..4096).
            await conn.response.create(response={"max_output_tokens": 5000}, event_id="evt_big")
            error = (await sdk.until("error"))["error"]
            assert (error["code"], error["param"]) == (
                "integer_above_max_value",
                "response.max_output_tokens",
            )

    run(scenario())


# --- d. idle timeout ---------------------------------------------------------------------------


def test_d_idle_timeout_triggers_a_response_after_the_playback_and_the_silence() -> None:
    async def scenario() -> None:
        session = with_input(
            turn_detection={
                "type": "server_vad",
                "silence_duration_ms": 200,
                "idle_timeout_ms": 1000,
            }
        )
        reply = ScriptedReply("Hello there.", audio_ms=600)
        async with connected(session=session, replies=[reply, "Are you still there?"]) as (
            server,
            sdk,
        ):
            conn = sdk.conn
            await sdk.append(silence(300))
            await conn.response.create()
            await sdk.until("response.done")
            # Playback is estimated to end 600 ms of audio after response.done (at 300 ms of
            # input): the timeout fires 1000 ms of silence after that, at 1900 ms.
            await sdk.append(silence(1500))
            assert not [
                e
                for e in await sdk.drain(0.2)
                if e["type"] == "input_audio_buffer.timeout_triggered"
            ]
            await sdk.append(silence(200))
            fired = await sdk.until("input_audio_buffer.timeout_triggered")
            assert (fired["audio_start_ms"], fired["audio_end_ms"]) == (900, 1900)
            committed = await sdk.until("input_audio_buffer.committed")
            assert committed["item_id"] == fired["item_id"]
            created = await sdk.until("response.created")
            done = await sdk.until("response.done")
            assert (
                done["response"]["output"][0]["content"][0]["transcript"] == "Are you still there?"
            )
            assert server.response(created["response"]["id"]).origin == "idle_timeout"
            # Speech before the deadline disarms it: no second timeout.
            await sdk.append(silence(500) + tone(400) + silence(300))
            await sdk.until("input_audio_buffer.speech_stopped")
            await sdk.until("response.done")
            responses = len(server.responses)
            await sdk.append(silence(400))
            assert not [
                e
                for e in await sdk.drain(0.2)
                if e["type"] == "input_audio_buffer.timeout_triggered"
            ]
            assert len(server.responses) == responses

    run(scenario())


# --- e. VAD parameters -------------------------------------------------------------------------


def test_e_prefix_padding_and_silence_duration_shape_the_turn() -> None:
    async def scenario() -> None:
        td = {
            "type": "server_vad",
            "prefix_padding_ms": 100,
            "silence_duration_ms": 300,
            "create_response": False,
        }
        async with connected(session=with_input(turn_detection=td)) as (_server, sdk):
            # Speech from 500 ms to 900 ms, a 200 ms pause (shorter than the silence), speech
            # to 1300 ms, then silence.
            await sdk.append(silence(500) + tone(400) + silence(200) + tone(200) + silence(400))
            started = await sdk.until("input_audio_buffer.speech_started")
            stopped = await sdk.until("input_audio_buffer.speech_stopped")
            assert started["audio_start_ms"] == 500 - 100
            assert stopped["audio_end_ms"] == 1300 + 300
            assert len(sdk.of("input_audio_buffer.speech_started")) == 1
            # A zero prefix is zero (not the 300 ms default).
            td_zero = {**td, "prefix_padding_ms": 0}
            await sdk.update(with_input(turn_detection=td_zero))
            await sdk.until("session.updated")
            await sdk.append(silence(200) + tone(200) + silence(400))
            started = await sdk.until("input_audio_buffer.speech_started")
            assert started["audio_start_ms"] == 1700 + 200

    run(scenario())


def test_e_threshold_decides_what_counts_as_speech() -> None:
    async def scenario() -> None:
        quiet, loud = tone(300, level=0.05), tone(300, level=0.3)
        td = {
            "type": "server_vad",
            "threshold": 0.7,
            "silence_duration_ms": 200,
            "create_response": False,
        }
        async with connected(session=with_input(turn_detection=td)) as (_server, sdk):
            await sdk.append(quiet + silence(300))
            assert not [
                e for e in await sdk.drain(0.2) if e["type"].startswith("input_audio_buffer.speech")
            ]
            await sdk.append(loud + silence(300))
            started = await sdk.until("input_audio_buffer.speech_started")
            assert started["audio_start_ms"] == 600 - 300
            # At the default threshold the quiet tone is speech.
            await sdk.update(with_input(turn_detection={**td, "threshold": 0.5}))
            await sdk.until("session.updated")
            await sdk.append(quiet + silence(300))
            await sdk.until("input_audio_buffer.speech_started")

    run(scenario())


def test_e_vad_values_out_of_range_are_refused() -> None:
    async def scenario() -> None:
        async with connected() as (_server, sdk):
            bad = with_input(turn_detection={"type": "server_vad", "threshold": 1.5})
            await sdk.send_raw({"type": "session.update", "session": bad})
            error = (await sdk.until("error"))["error"]
            assert (error["code"], error["param"]) == (
                "decimal_above_max_value",
                "session.audio.input.turn_detection.threshold",
            )

    run(scenario())


# --- f. previous_item_id -----------------------------------------------------------------------


def test_f_assistant_items_name_the_item_before_them() -> None:
    async def scenario() -> None:
        async with connected() as (_server, sdk):
            conn = sdk.conn
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Hi"}],
                }
            )
            user = (await sdk.until("conversation.item.done"))["item"]["id"]
            await conn.response.create()
            await sdk.until("response.done")
            added = sdk.of("conversation.item.added", lambda e: e["item"]["role"] == "assistant")
            done = sdk.of("conversation.item.done", lambda e: e["item"]["role"] == "assistant")
            assert [e["previous_item_id"] for e in added] == [user]
            assert [e["previous_item_id"] for e in done] == [user]
            assert added[0]["item"]["id"] == done[0]["item"]["id"]

    run(scenario())


# --- g. usage ----------------------------------------------------------------------------------


def test_g_response_done_carries_usage_with_token_details() -> None:
    async def scenario() -> None:
        async with connected() as (_server, sdk):
            await sdk.append(tone(800) + silence(300))
            first = (await sdk.until("response.done"))["response"]["usage"]
            await sdk.conn.response.create()
            second = (await sdk.until("response.done"))["response"]["usage"]
            for raw in (first, second):
                usage = RealtimeResponseUsage.model_validate(raw)
                inp, out = usage.input_token_details, usage.output_token_details
                assert inp is not None and out is not None and inp.cached_tokens_details is not None
                assert usage.input_tokens == (inp.text_tokens or 0) + (inp.audio_tokens or 0)
                assert usage.output_tokens == (out.text_tokens or 0) + (out.audio_tokens or 0)
                assert usage.total_tokens == (usage.input_tokens or 0) + (usage.output_tokens or 0)
                assert (out.audio_tokens or 0) > 0 and (out.text_tokens or 0) > 0
                assert inp.cached_tokens == (inp.cached_tokens_details.text_tokens or 0) + (
                    inp.cached_tokens_details.audio_tokens or 0
                )
            # The caller's audio is input audio; the second response re-reads the first turn.
            assert first["input_token_details"]["audio_tokens"] >= 8
            assert first["input_token_details"]["cached_tokens"] == 0
            assert second["input_tokens"] > first["input_tokens"]
            assert second["input_token_details"]["cached_tokens"] == first["input_tokens"]

    run(scenario())


# --- h. input transcription --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "streams"),
    [
        ("whisper-1", False),
        ("gpt-4o-transcribe", True),
        ("gpt-4o-mini-transcribe", True),
        ("gpt-transcribe", True),
        ("gpt-realtime-whisper", True),
    ],
)
def test_h_input_transcription_streams_deltas_for_streaming_models(
    model: str, streams: bool
) -> None:
    async def scenario() -> None:
        session = with_input(transcription={"model": model})
        async with connected(session=session) as (server, sdk):
            server.queue_transcript("What time do you close today?")
            await sdk.append(tone(600) + silence(300))
            completed = await sdk.until("conversation.item.input_audio_transcription.completed")
            deltas = sdk.of("conversation.item.input_audio_transcription.delta")
            assert completed["transcript"] == "What time do you close today?"
            if streams:
                assert len(deltas) > 1
                assert "".join(d["delta"] for d in deltas) == completed["transcript"]
                assert {d["item_id"] for d in deltas} == {completed["item_id"]}
            else:
                assert deltas == []
            billed_by_time = model in ("whisper-1", "gpt-realtime-whisper")
            assert completed["usage"]["type"] == ("duration" if billed_by_time else "tokens")

    run(scenario())


def test_the_fake_server_class_is_what_the_sdk_connects_to() -> None:
    """The SDK builds ``<websocket_base_url>/realtime?model=...``: the simulator sees the model."""

    async def scenario() -> None:
        async with connected(FAST, model="gpt-realtime-2", session=None) as (server, sdk):
            created = sdk.of("session.created")[0]
            assert created["session"]["model"] == "gpt-realtime-2"
            assert server.connections[0].path == "/v1/realtime?model=gpt-realtime-2"
            assert isinstance(server, FakeRealtimeServer)

    run(scenario())

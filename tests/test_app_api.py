"""The application's side of a call: typed events out (an async iterator, bounded), calls in
(typed text, a response with instructions, a tool's output, ending the call), a greeting made
from the call's custom parameters.  Over the memory sockets of ``test_bridge``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from test_bridge import (
    CHUNK_A,
    Call,
    audio,
    done,
    run,
    settle,
    speech_started,
    start,
    stop,
    transcript,
    until,
)

from realtime_fsm.bridge import BridgeConfig
from realtime_fsm.call import (
    AppEvent,
    AssistantTranscript,
    BargeIn,
    CallEnded,
    CallStarted,
    ResponseFinished,
    ResponseStarted,
)
from realtime_fsm.errors import CallNotActive
from realtime_fsm.openai_realtime import SessionConfig
from realtime_fsm.tools import function_tool


async def collect(call: Call, into: list[AppEvent]) -> None:
    async for event in call.bridge.events():
        into.append(event)


def test_a_call_tells_the_application_what_happened_in_order() -> None:
    async def body() -> None:
        call = Call(BridgeConfig(greeting="hi", mark_every_ms=0))
        events: list[AppEvent] = []
        reader = asyncio.create_task(collect(call, events))
        await call.begin()
        await call.respond("resp_1")
        call.openai.feed(transcript("resp_1", "item_1", "Hello there"))
        call.openai.feed(audio("resp_1", "item_1", CHUNK_A))
        await until(lambda: call.twilio.of_type("media"))
        call.openai.feed(speech_started())
        await until(lambda: call.twilio.of_type("clear"))
        call.openai.feed(done("resp_1", "cancelled"))
        await settle()
        call.twilio.feed(stop())
        report = await call.end()
        await asyncio.wait_for(reader, 2)
        kinds = [type(e).__name__ for e in events]
        assert kinds[0] == "CallStarted" and kinds[-1] == "CallEnded"
        started = events[0]
        assert isinstance(started, CallStarted)
        assert started.custom_parameters == {"caller": "+15550100"}
        assert started.encoding == "audio/x-mulaw" and started.sample_rate == 8000
        [response] = [e for e in events if isinstance(e, ResponseStarted)]
        assert response.ours and response.reasons == ("greeting",)
        [barge] = [e for e in events if isinstance(e, BargeIn)]
        assert barge.source == "speech" and barge.response_id == "resp_1"
        partial = [e for e in events if isinstance(e, AssistantTranscript) and not e.final]
        assert [p.text for p in partial] == ["Hello there"]
        [finished] = [e for e in events if isinstance(e, ResponseFinished)]
        assert finished.status == "cancelled"
        ended = events[-1]
        assert isinstance(ended, CallEnded) and ended.reason == "telephony stop"
        assert ended.report is report

    run(body)


def test_an_application_that_reads_nothing_never_slows_the_call() -> None:
    """Subscribed and never read: the queue is bounded, the rest dropped and counted, and the
    final CallEnded still gets in (the iterator ends)."""

    async def body() -> None:
        call = Call(BridgeConfig(greeting="hi", mark_every_ms=0, max_app_events=5))
        stream = call.bridge.events()
        await call.begin()
        await call.respond("resp_1")
        for n in range(40):
            call.openai.feed(transcript("resp_1", "item_1", f"word {n} "))
        await settle()
        call.twilio.feed(stop())
        report = await call.end()
        assert report.app_events_dropped > 30
        seen = [event async for event in stream]
        assert len(seen) == 5 and isinstance(seen[-1], CallEnded)

    run(body)


def test_the_greeting_is_made_from_the_call_s_custom_parameters() -> None:
    asked: list[Mapping[str, str]] = []

    def greet(params: Mapping[str, str]) -> str:
        asked.append(params)
        return f"Greet the caller from {params['caller']} by number."

    async def body() -> None:
        call = Call(BridgeConfig(greeting=greet))
        await call.begin()
        create = await call.respond("resp_1")
        assert create["response"]["instructions"] == "Greet the caller from +15550100 by number."
        call.twilio.feed(stop())
        await call.end()

    run(body)
    assert asked == [{"caller": "+15550100"}]


def test_a_greeting_function_that_raises_costs_the_greeting_not_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def greet(params: Mapping[str, str]) -> str:
        raise KeyError("name")

    async def body() -> None:
        call = Call(BridgeConfig(greeting=greet))
        await call.begin()
        await settle()
        assert call.openai.of_type("response.create") == []
        call.bridge.send_user_text("hello")
        await until(lambda: call.openai.of_type("response.create"))
        call.twilio.feed(stop())
        report = await call.end()
        assert report.end_reason == "telephony stop"

    run(body)
    assert "the greeting function failed" in caplog.text


def test_end_call_closes_both_sides_with_the_application_s_reason() -> None:
    async def body() -> None:
        call = Call(BridgeConfig())
        await call.begin()
        call.bridge.end_call("transferred to a human")
        report = await call.end()
        assert report.end_reason == "transferred to a human"
        assert call.twilio.closed and call.openai.closed
        with pytest.raises(CallNotActive):
            call.bridge.send_user_text("too late")

    run(body)


def test_app_calls_before_start_are_refused_and_take_nothing() -> None:
    async def body() -> None:
        call = Call(BridgeConfig())
        with pytest.raises(CallNotActive):
            call.bridge.send_user_text("early")
        with pytest.raises(CallNotActive):
            call.bridge.request_response(instructions="say hi")
        call.twilio.feed(start())
        await until(lambda: call.openai.sent)
        call.bridge.request_response(reason="app", instructions="Say hi.")
        create = await call.respond("resp_1")
        assert create["response"]["instructions"] == "Say hi."
        call.twilio.feed(stop())
        report = await call.end()
        assert report.undelivered_texts == []

    run(body)


def test_update_session_mid_call_sends_it_and_keeps_it_for_a_new_session() -> None:
    @function_tool
    async def lookup_order(order_id: str) -> str:
        """Find an order."""
        return "shipped"

    async def body() -> None:
        call = Call(BridgeConfig(commit_on_dtmf="#", session=SessionConfig(turn_detection=None)))
        await call.begin()
        call.bridge.update_session(
            session=SessionConfig(turn_detection=None, instructions="Be brief."),
            tools=(lookup_order,),
            tool_choice="auto",
        )
        await until(lambda: len(call.openai.of_type("session.update")) == 2)
        update = call.openai.of_type("session.update")[-1]["session"]
        assert update["instructions"] == "Be brief."
        assert [t["name"] for t in update["tools"]] == ["lookup_order"]
        assert update["tool_choice"] == "auto"
        # Server VAD with a push-to-talk key is refused, as at start: nothing is sent.
        with pytest.raises(ValueError, match="commit_on_dtmf"):
            call.bridge.update_session(session=SessionConfig(turn_detection="server_vad"))
        await settle()
        assert len(call.openai.of_type("session.update")) == 2
        assert call.bridge.config.session.instructions == "Be brief."
        call.twilio.feed(stop())
        await call.end()

    run(body)


def test_tools_run_by_the_call_join_the_session_s_own_tool_schemas() -> None:
    @function_tool
    async def lookup_order(order_id: str) -> str:
        """Find an order."""
        return "shipped"

    app_handled = {
        "type": "function",
        "name": "transfer",
        "description": "Transfer to a human.",
        "parameters": {"type": "object", "properties": {}},
    }
    shadowed = {**app_handled, "name": "lookup_order", "description": "old"}
    config = BridgeConfig(
        session=SessionConfig(tools=(app_handled, shadowed)),
        tools=(lookup_order,),
        tool_choice="required",
    )
    session = config.effective_session()
    assert [t["name"] for t in session.tools] == ["lookup_order", "transfer"]
    assert session.tools[0]["description"] == "Find an order."
    assert session.tool_choice == "required"
    with pytest.raises(ValueError, match="not in tools"):
        BridgeConfig(tools=(lookup_order,), tool_choice={"type": "function", "name": "nope"})

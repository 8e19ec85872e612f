"""``examples/fastapi_app.py`` end to end, served by uvicorn on 127.0.0.1 against the
simulator: Twilio's webhook for a known number gives a stream whose ``<Parameter>`` names the
caller, the greeting is made for them, the caller asks about an order, the model calls
``lookup_order`` and the caller hears the answer; and the same with the caller talking while
the tool runs, and with a VAD response racing the follow-up.  The example app is what a user
would run, driven as Twilio would drive it."""

from __future__ import annotations

import asyncio
import json
from types import ModuleType
from typing import Any

import attrs
import pytest
from test_asgi import (
    HOST,
    PUBLIC_URL,
    STREAM_URL,
    TOKEN,
    finished,
    load_example,
    run,
    serving,
)

from realtime_fsm import function_tool
from realtime_fsm.credentials import CREDENTIAL_PARAMETER
from realtime_fsm.server import ServerConfig
from realtime_fsm.testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ScriptedReply,
)
from realtime_fsm.testing import dial as dial_webhook

BUSY = "conversation_already_has_active_response"


def example(monkeypatch: pytest.MonkeyPatch, realtime_url: str) -> ModuleType:
    return load_example(monkeypatch, realtime_url, greeting=None)


def simulator() -> FakeRealtimeServer:
    config = FakeRealtimeConfig(realtime_factor=8.0, first_delta_delay_s=0.01, seed=9)
    return FakeRealtimeServer(
        config, replies=lambda ctx: ScriptedReply(f"Reply {ctx.number}.", audio_ms=600)
    )


async def dial(port: int, number: str) -> FakeCallerConfig:
    """Twilio's signed webhook for a call from ``number``; the caller the TwiML's stream
    describes (its parameters, the stream credential among them)."""
    dialed = await dial_webhook(
        f"http://{HOST}:{port}", public_url=PUBLIC_URL, auth_token=TOKEN, caller=number
    )
    assert dialed.stream_url == STREAM_URL
    assert CREDENTIAL_PARAMETER in dialed.parameters
    return dialed.caller_config(speed=4.0, seed=4)


def app_parameters(config: FakeCallerConfig) -> dict[str, str]:
    """The parameters the application put in the TwiML (the server's credential aside)."""
    return {k: v for k, v in config.custom_parameters.items() if k != CREDENTIAL_PARAMETER}


def answers(ai: FakeRealtimeServer, prefix: str) -> list[Any]:
    return [r for r in ai.responses if r.text.startswith(prefix) and r.done_sent]


def test_a_known_caller_is_greeted_by_name_and_hears_the_tool_s_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        async with simulator() as ai:
            app = example(monkeypatch, ai.url).app
            ai.script_tool_call(
                r"order",
                name="lookup_order",
                arguments={"order_id": "42"},
                then_reply=lambda outs: f"Order 42 is {json.loads(outs[0])['status']}.",
            )
            async with serving(app) as port:
                caller_config = await dial(port, "+15550100")
                assert app_parameters(caller_config) == {"name": "Ada"}
                async with FakeTwilioCaller(
                    f"ws://{HOST}:{port}/media-stream", caller_config
                ) as caller:
                    await caller.wait_for_audio(100, timeout=10)  # the greeting
                    ai.queue_transcript("where is my order forty two")
                    await caller.speak(0.4)
                    await ai.wait_until(lambda: bool(answers(ai, "Order 42")), 10, "the answer")
                    [answer] = answers(ai, "Order 42")
                    await caller.wait_until(
                        lambda: any(t.tag.ordinal == answer.tag for t in caller.tags_received),
                        5,
                    )
                await finished(ai, app.state.reports)
        creates = [e.event for e in ai.received if e.event.get("type") == "response.create"]
        assert "Greet Ada by name" in creates[0]["response"]["instructions"]
        assert answer.text == "Order 42 is shipped on Monday, arriving Thursday."
        assert ai.error_counts == {} and ai.responses_before_outputs == 0
        [report] = app.state.reports
        assert report.tool_calls == 1 and report.custom_parameters == {"name": "Ada"}

    run(scenario())


def test_an_unknown_caller_gets_the_plain_greeting(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with simulator() as ai:
            module = example(monkeypatch, ai.url)
            async with serving(module.app) as port:
                config = await dial(port, "+15559999")
                async with FakeTwilioCaller(f"ws://{HOST}:{port}/media-stream", config) as c:
                    await c.wait_for_audio(100, timeout=10)
                await finished(ai, module.app.state.reports)
        creates = [e.event for e in ai.received if e.event.get("type") == "response.create"]
        assert creates[0]["response"]["instructions"] == module.GREETING

    run(scenario())


@pytest.mark.parametrize("race", [False, True], ids=["barge_in_during_tool", "vad_race"])
def test_the_caller_talks_while_the_tool_runs(monkeypatch: pytest.MonkeyPatch, race: bool) -> None:
    """The tool is slow; the caller says something else meanwhile (the server's VAD answers
    it).  The output is still delivered, the follow-up waits its turn, never a create into a
    busy slot; with ``race`` the server also starts a VAD response just as the follow-up
    create arrives (refused busy, the server's rule), and the caller hears one answer."""
    release = asyncio.Event()

    @function_tool(name="lookup_order")
    async def slow_lookup(order_id: str) -> str:
        """Look up the status of an order."""
        await release.wait()
        return "shipped"

    async def scenario() -> None:
        async with simulator() as ai:
            module = example(monkeypatch, ai.url)
            config: ServerConfig = module.config_from_env()
            config = attrs.evolve(config, bridge=attrs.evolve(config.bridge, tools=(slow_lookup,)))
            app = module.create_app(config)
            ai.script_tool_call(
                r"order", name="lookup_order", arguments={"order_id": "42"}, then_reply="Done."
            )
            async with serving(app) as port:
                caller_config = await dial(port, "+15550100")
                async with FakeTwilioCaller(
                    f"ws://{HOST}:{port}/media-stream", caller_config
                ) as caller:
                    await caller.wait_for_audio(100, timeout=10)
                    ai.queue_transcript("where is my order")
                    await caller.speak(0.4)
                    await ai.wait_until(
                        lambda: bool(ai.tool_calls) and ai.tool_calls[0].status == "completed",
                        10,
                        "the call",
                    )
                    rid = ai.tool_calls[0].response_id
                    await ai.wait_until(
                        lambda: any(r.id == rid and r.done_sent for r in ai.responses), 10
                    )
                    ai.queue_transcript("are you still there")
                    await caller.speak(0.4)
                    await ai.wait_until(
                        lambda: any(
                            r.text.startswith("Reply") and r.done_sent
                            for r in ai.responses
                            if r.origin == "server_vad" and r.created_at > 0 and r.id != rid
                        ),
                        10,
                        "the VAD answer",
                    )
                    if race:
                        ai.race_vad_on_next_create()
                    release.set()
                    await ai.wait_until(lambda: bool(answers(ai, "Done")), 10, "the answer")
                    await ai.wait_until(lambda: all(r.done_sent for r in ai.responses), 10)
                await finished(ai, app.state.reports)
        assert [o.output for o in ai.tool_outputs] == ["shipped"]
        assert len(answers(ai, "Done")) == 1, [r.text for r in ai.responses]
        assert ai.error_counts == ({BUSY: 1} if race else {})

    run(scenario())

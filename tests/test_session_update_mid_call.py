"""``update_session`` mid-call against the simulator's documented rules, over real sockets.

The Realtime API refuses a voice change once the assistant has spoken on a session
(``cannot_update_voice``) and refuses a ``session.update`` whole when anything in it is wrong.
A voice change after the assistant spoke is refused by the call itself, before anything is sent
(``ValueError``: the call is unchanged); any other mid-call update the server refuses leaves the
settings it had in force, and the call goes on.  Only the session's first update, whose refusal
leaves the server's defaults, still ends the call.
"""

from __future__ import annotations

import asyncio

import attrs
import pytest
from test_e2e import CALLER, HOST, bridge_config, short_replies, simulator

from realtime_fsm.bridge import CallBridge, CallReport
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import FakeTwilioCaller


def test_mid_call_updates_never_end_the_call() -> None:
    async def main() -> None:
        bridges: list[CallBridge] = []
        reports: list[CallReport] = []
        sim = simulator(short_replies)
        config = bridge_config(greeting="Greet the caller.")
        async with sim:
            settings = ServerConfig(
                public_url=f"http://{HOST}", realtime_url=sim.url, bridge=config
            )
            server = await start_server(
                settings, HOST, 0, reports=reports, on_bridge=bridges.append
            )
            port = server.sockets[0].getsockname()[1]
            try:
                async with FakeTwilioCaller(f"ws://{HOST}:{port}/media-stream", CALLER) as caller:
                    await sim.wait_until(
                        lambda: bool(sim.responses) and sim.responses[0].finished, 10, "greeting"
                    )
                    [bridge] = bridges
                    await sim.wait_until(lambda: bridge.report.media_out > 0, 10, "audio sent")
                    sent = len(sim.client_events("session.update"))
                    # 1. A new voice after the assistant spoke: refused here, nothing sent.
                    new_voice = attrs.evolve(config.session, voice="cedar")
                    with pytest.raises(ValueError, match="cannot_update_voice"):
                        bridge.update_session(session=new_voice)
                    assert len(sim.client_events("session.update")) == sent
                    assert bridge.session.config.session.voice == config.session.voice
                    # 2. New instructions (same voice): sent and applied.
                    brief = attrs.evolve(config.session, instructions="Be brief now.")
                    bridge.update_session(session=brief)
                    await sim.wait_until(
                        lambda: len(sim.client_events("session.update")) == sent + 1, 5, "update"
                    )
                    # 3. An update the server refuses whole: the previous settings stay.
                    sim.error_on_next("session.update", "invalid_value", "Invalid value.")
                    worse = attrs.evolve(config.session, instructions="Refused instructions.")
                    bridge.update_session(session=worse)
                    await sim.wait_until(lambda: bool(sim.server_events("error")), 5, "the refusal")
                    await sim.wait_until(
                        lambda: bridge.session.config.session.instructions == "Be brief now.",
                        5,
                        "the rollback",
                    )
                    # The call goes on: a new response is still played to the caller.
                    heard = len(caller.media_received)
                    bridge.request_response("after the refusal")
                    await caller.wait_until(
                        lambda: len(caller.media_received) > heard, 10, "audio after refusal"
                    )
                    assert bridge.active
                await sim.wait_until(lambda: bool(reports), 10, "the report")
            finally:
                server.close()
                await server.wait_closed()
        [report] = reports
        assert report.end_reason == "telephony stop"
        assert report.server_errors == {"invalid_value": 1}

    asyncio.run(asyncio.wait_for(main(), 60))

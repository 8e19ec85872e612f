"""Streams that have not started are bounded in number (per client address and in total) as
well as in time: past the bound a new stream is closed with 1013 and one log line, before
anything is done for it; a stream that starts (or ends) frees its place.  Over real sockets
with the built-in server and the simulator."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from test_e2e import HOST, run, short_replies, simulator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from realtime_fsm.prestart import PreStartLimits
from realtime_fsm.server import ServerConfig, start_server

STREAM = "MZ" + "c" * 32


def start_frame(n: int) -> str:
    return json.dumps(
        {
            "event": "start",
            "streamSid": STREAM,
            "start": {
                "streamSid": STREAM,
                "callSid": f"CA{n:032d}",
                "tracks": ["inbound"],
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def test_the_limits_count_per_address_and_in_total() -> None:
    limits = PreStartLimits(max_total=3, max_per_client=2)
    assert limits.enter("10.0.0.1:5000") is None
    assert limits.enter("10.0.0.1:5001") is None
    assert "from this address" in (limits.enter("10.0.0.1:5002") or "")
    assert limits.enter("[::1]:6000") is None
    assert "3 streams already" in (limits.enter("10.0.0.2:1") or "")
    limits.leave("10.0.0.1:5000")
    assert limits.enter("10.0.0.2:1") is None
    assert limits.per_client == {"10.0.0.1": 1, "[::1]": 1, "10.0.0.2": 1}


async def refused(ws: ClientConnection) -> int | None:
    """The close code the server sent, waiting for it (bounded)."""
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    return closed.value.rcvd.code if closed.value.rcvd else None


def test_streams_waiting_for_start_are_bounded_per_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="realtime_fsm")

    async def scenario() -> None:
        sim = simulator(short_replies)
        async with sim:
            config = ServerConfig(
                public_url=f"http://{HOST}", realtime_url=sim.url, max_pre_start_per_client=3
            )
            server = await start_server(config, HOST, 0)
            url = f"ws://{HOST}:{server.sockets[0].getsockname()[1]}/media-stream"
            waiting = [await connect(url) for _ in range(3)]
            try:
                extra = await connect(url)
                assert await refused(extra) == 1013
                assert all(ws.state is State.OPEN for ws in waiting)
                assert sim.open_connections() == []  # none of them costs a session
                # One starts: its place is free, and a new stream is admitted.
                await waiting[0].send(start_frame(1))
                await sim.wait_until(lambda: len(sim.open_connections()) == 1, 5, "a session")
                admitted = await connect(url)
                await admitted.send(start_frame(2))
                await sim.wait_until(lambda: len(sim.open_connections()) == 2, 5, "another")
                await admitted.close()
            finally:
                for ws in waiting:
                    await ws.close()
                server.close()
                await server.wait_closed()

    run(scenario())
    lines = [r.getMessage() for r in caplog.records if "refusing media stream" in r.getMessage()]
    assert len(lines) == 1 and "3 streams from this address" in lines[0]

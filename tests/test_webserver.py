"""The single-port webhook + WebSocket server, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as sync_connect

from realtime_fsm.webserver import HttpRequest, HttpResponse, Routes, WebSocket, serve


async def _incoming(req: HttpRequest) -> HttpResponse:
    return HttpResponse(200, f"<Response>{req.method} {req.form()}</Response>".encode(), "text/xml")


async def _echo(ws: WebSocket) -> None:
    while True:
        await ws.send(await ws.recv())


async def _gate(req: HttpRequest) -> HttpResponse | None:
    return HttpResponse(403, b"bad signature") if "deny" in req.query else None


def run(body: Callable[[int], Awaitable[None]]) -> None:
    async def main() -> None:
        routes = Routes(
            http={"/incoming-call": _incoming},
            websocket={"/media-stream": _echo},
            gate=_gate,
            max_message_bytes=1000,
        )
        server = await serve(routes, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await asyncio.wait_for(body(port), timeout=20)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def _http(port: int, method: str, path: str, data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_post_and_get_webhook_on_the_same_port() -> None:
    async def body(port: int) -> None:
        status, text = await asyncio.to_thread(
            _http, port, "POST", "/incoming-call", b"CallSid=CA1&From=%2B1555"
        )
        assert status == 200 and b"POST {'CallSid': 'CA1', 'From': '+1555'}" in text
        status, text = await asyncio.to_thread(_http, port, "GET", "/incoming-call")
        assert status == 200 and text.startswith(b"<Response>GET")
        status, _ = await asyncio.to_thread(_http, port, "GET", "/nope")
        assert status == 404

    run(body)


def test_websocket_echo_and_oversized_message_closes_with_1009() -> None:
    async def body(port: int) -> None:
        async with connect(f"ws://127.0.0.1:{port}/media-stream") as client:
            for i in range(3):
                await client.send(f"hello{i}")
                assert await client.recv() == f"hello{i}"
            await client.send("x" * 2000)
            with pytest.raises(ConnectionClosed) as info:
                await client.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009

    run(body)


def test_gate_refuses_the_upgrade_before_any_frame() -> None:
    async def body(port: int) -> None:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{port}/media-stream?deny=1"):
                pass
        assert info.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{port}/elsewhere"):
                pass
        assert info.value.response.status_code == 404

    run(body)


def test_send_writes_the_frame_before_it_returns() -> None:
    """A frame goes to the socket in ``send`` itself, not at the end of the loop iteration: the
    handler below blocks its loop right after sending until a client in another thread has
    received the frame, which it could never do if the write waited for the loop."""
    received = threading.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.recv()
        await ws.send("frame")
        # Blocks the event loop on purpose: nothing scheduled for later can run meanwhile.
        got_it = received.wait(timeout=10)
        await ws.send("yes" if got_it else "no")

    def client(port: int) -> list[str | bytes]:
        with sync_connect(f"ws://127.0.0.1:{port}/media-stream", open_timeout=10) as ws:
            ws.send("go")
            first = ws.recv(timeout=10)
            received.set()
            return [first, ws.recv(timeout=10)]

    async def main() -> None:
        server = await serve(Routes(websocket={"/media-stream": handler}), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            started = time.monotonic()
            frames = await asyncio.wait_for(asyncio.to_thread(client, port), timeout=30)
            assert frames == ["frame", "yes"], (frames, time.monotonic() - started)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_send_nowait_writes_at_once_or_declines() -> None:
    """``send_nowait`` writes the frame before it returns (the loop is blocked right after, as
    above), and declines, sending nothing, whenever writing could not be done without waiting:
    another send under way, unread bytes in the transport, a closed connection."""
    received = threading.Event()
    answers: list[bool] = []

    async def handler(ws: WebSocket) -> None:
        await ws.recv()
        async with ws._send_lock:  # another send under way
            answers.append(ws.send_nowait("not now: locked"))
        transport = ws.transport
        transport.get_write_buffer_size = lambda: 7  # type: ignore[method-assign]
        answers.append(ws.send_nowait("not now: the peer is behind"))
        del transport.get_write_buffer_size  # type: ignore[attr-defined]
        answers.append(ws.send_nowait("frame"))
        got_it = received.wait(timeout=10)  # blocks the loop: the frame is already written
        await ws.send("yes" if got_it else "no")
        await ws.close()
        answers.append(ws.send_nowait("after the close"))

    def client(port: int) -> list[str | bytes]:
        with sync_connect(f"ws://127.0.0.1:{port}/media-stream", open_timeout=10) as ws:
            ws.send("go")
            first = ws.recv(timeout=10)
            received.set()
            frames = [first, ws.recv(timeout=10)]
            with pytest.raises(ConnectionClosed):
                frames.append(ws.recv(timeout=10))
            return frames

    async def main() -> None:
        server = await serve(Routes(websocket={"/media-stream": handler}), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            frames = await asyncio.wait_for(asyncio.to_thread(client, port), timeout=30)
            assert frames == ["frame", "yes"]
            for _ in range(100):
                if len(answers) == 4:
                    break
                await asyncio.sleep(0.02)
            assert answers == [False, False, True, False]
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())

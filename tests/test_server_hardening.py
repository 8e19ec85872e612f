"""The built-in server against hostile peers, over real sockets on 127.0.0.1.

* ``/incoming-call`` with a token configured: signed as Twilio signs it (configured URL, query
  string, every form field) it gets TwiML; a missing, wrong or other-URL signature gets 403 and
  one WARNING with the client's address.  A ``CallSid`` with a newline forges no log line.
* Malformed HTTP: 431 for an oversized head, 400 for a bad request line, header or
  ``Content-Length``, 413 for an oversized body; each answered with its status (read by a raw
  client), one log line, never an ERROR or a traceback.
* A text frame that is not UTF-8, before and after ``start``: close 1007, the call ends as a
  hang-up (its OpenAI socket closed), and a normal call beside it is still answered.
* A peer that floods pings and never reads is dropped within ``DRAIN_TIMEOUT`` with a logged
  reason, and its OpenAI socket is closed.

Every wait is on a condition with a generous bound; nothing sleeps for a guessed time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import attrs
import pytest
from test_server import raw_twilio
from twilio.request_validator import RequestValidator
from waiting import poller
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime_fsm import webserver
from realtime_fsm.bridge import BridgeConfig, CallReport
from realtime_fsm.openai_realtime import SessionConfig
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ScriptedReply,
)

HOST = "127.0.0.1"
PUBLIC_URL = "https://example.ngrok.app"
WEBHOOK_URL = "https://example.ngrok.app/incoming-call"
TOKEN = "twilio-token-DO-NOT-LOG-8d2e"
STREAM = "MZ18ad3ab5a668481ce02b83e7395059f0"

until = poller(10.0, 0.01)


def run(body: Callable[[], Awaitable[None]], timeout: float = 30.0) -> None:
    async def main() -> None:
        await asyncio.wait_for(body(), timeout)

    asyncio.run(main())


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="realtime_fsm")
    return caplog


def ours(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("realtime_fsm") and r.levelno >= level]


def assert_no_error(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in ours(caplog) if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


# --- a raw HTTP client ---------------------------------------------------------------------------


@attrs.frozen
class Answer:
    status: int
    body: bytes
    client: str  # our address as the server sees it ("127.0.0.1:<port>")


async def exchange(port: int, request: bytes) -> Answer:
    """Send ``request`` as is, read the response until the server closes."""
    reader, writer = await asyncio.open_connection(HOST, port)
    local = writer.get_extra_info("sockname")
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return Answer(status, body, f"{local[0]}:{local[1]}")


def post(
    form: list[tuple[str, str]], signature: str | None, target: str = "/incoming-call"
) -> bytes:
    body = urlencode(form).encode()
    head = (
        f"POST {target} HTTP/1.1\r\nHost: example.ngrok.app\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    if signature is not None:
        head += f"X-Twilio-Signature: {signature}\r\n"
    return (head + "\r\n").encode() + body


def get(target: str, signature: str | None) -> bytes:
    head = f"GET {target} HTTP/1.1\r\nHost: example.ngrok.app\r\n"
    if signature is not None:
        head += f"X-Twilio-Signature: {signature}\r\n"
    return (head + "\r\n").encode()


class _Multi(dict[str, str]):
    """What Twilio signs for a repeated field: every value (``RequestValidator.getall``)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs

    def getall(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]


def sign(url: str, form: list[tuple[str, str]] | None = None, token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, _Multi(form or [])))


@asynccontextmanager
async def webhook_server() -> AsyncIterator[int]:
    config = ServerConfig(public_url=PUBLIC_URL, twilio_auth_token=TOKEN)
    server = await start_server(config, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in ours(caplog, logging.WARNING)]


# --- the webhook's signature --------------------------------------------------------------------

FORM = [("CallSid", "CA1"), ("From", "+15550100"), ("Digits", "1"), ("Digits", "2")]


def test_a_signed_webhook_gets_twiml(logs: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with webhook_server() as port:
            answer = await exchange(port, post(FORM, sign(WEBHOOK_URL, FORM)))
            assert answer.status == 200, answer
            assert b"<Stream url=" in answer.body
            query = "CallSid=CA2&From=%2B15550100"
            url = f"{WEBHOOK_URL}?{query}"
            answer = await exchange(port, get(f"/incoming-call?{query}", sign(url)))
            assert answer.status == 200, answer
        assert refusals(logs) == []
        assert_no_error(logs)

    run(body)


@pytest.mark.parametrize(
    ("label", "request_bytes", "reason"),
    [
        ("missing", post(FORM, None), "missing X-Twilio-Signature"),
        ("wrong token", post(FORM, sign(WEBHOOK_URL, FORM, "other")), "invalid"),
        ("other URL", post(FORM, sign("https://evil.example/incoming-call", FORM)), "invalid"),
        ("one value of a repeated field", post(FORM, sign(WEBHOOK_URL, FORM[:3])), "invalid"),
        ("GET without its query", get("/incoming-call?CallSid=CA3", sign(WEBHOOK_URL)), "invalid"),
        ("GET missing", get("/incoming-call?CallSid=CA3", None), "missing"),
    ],
)
def test_an_unsigned_or_missigned_webhook_is_refused_with_403(
    logs: pytest.LogCaptureFixture, label: str, request_bytes: bytes, reason: str
) -> None:
    async def body() -> None:
        async with webhook_server() as port:
            answer = await exchange(port, request_bytes)
        assert answer.status == 403, (label, answer)
        assert b"<Stream" not in answer.body
        [line] = refusals(logs)
        assert answer.client in line and reason in line, line
        assert not any("incoming call" in r.getMessage() for r in ours(logs))
        assert_no_error(logs)

    run(body)


def test_a_callsid_with_a_newline_forges_no_log_line(logs: pytest.LogCaptureFixture) -> None:
    forged = "CA1\n2024-01-01 INFO realtime_fsm.server call=CAforged hung up"
    form = [("CallSid", forged), ("From", "+15550100")]

    async def body() -> None:
        async with webhook_server() as port:
            signed = await exchange(port, post(form, sign(WEBHOOK_URL, form)))
            unsigned = await exchange(port, post(form, None))
        assert (signed.status, unsigned.status) == (200, 403)

    run(body)
    messages = [r.getMessage() for r in ours(logs)]
    assert all("\n" not in m and "\r" not in m for m in messages), messages
    [incoming] = [m for m in messages if "incoming call" in m]
    assert "CA1\\n2024" in incoming  # escaped, on the one line
    assert_no_error(logs)


# --- malformed HTTP ------------------------------------------------------------------------------

_OK_START = b"POST /incoming-call HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    ("label", "request_bytes", "status"),
    [
        ("oversized head", _OK_START + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        ("huge head", _OK_START + b"X-Big: " + b"a" * 400_000 + b"\r\n\r\n", 431),
        ("bad request line", b"GARBAGE\r\n\r\n", 400),
        ("bad version", b"GET /incoming-call HTTP/9\r\n\r\n", 400),
        ("space in target", b"GET /incoming call HTTP/1.1\r\n\r\n", 400),
        ("header without colon", _OK_START + b"NoColonHere\r\n\r\n", 400),
        ("space before colon", _OK_START + b"Content-Length : 3\r\n\r\nabc", 400),
        ("folded header", _OK_START + b"X-A: 1\r\n  folded\r\n\r\n", 400),
        ("control in value", _OK_START + b"X-A: a\x01b\r\n\r\n", 400),
        ("Content-Length: abc", _OK_START + b"Content-Length: abc\r\n\r\n", 400),
        ("negative Content-Length", _OK_START + b"Content-Length: -5\r\n\r\n", 400),
        (
            "conflicting Content-Length",
            _OK_START + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            400,
        ),
        ("listed Content-Length", _OK_START + b"Content-Length: 1, 2\r\n\r\nab", 400),
        ("chunked", _OK_START + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        ("oversized body", _OK_START + b"Content-Length: 200000\r\n\r\n" + b"a" * 200_000, 413),
    ],
)
def test_a_malformed_request_gets_its_status_and_one_log_line(
    logs: pytest.LogCaptureFixture, label: str, request_bytes: bytes, status: int
) -> None:
    async def body() -> None:
        async with webhook_server() as port:
            answer = await exchange(port, request_bytes)
            assert answer.status == status, (label, answer)
            # The server is still fine: a good request right after is served.
            form = [("CallSid", "CA9")]
            assert (await exchange(port, post(form, sign(WEBHOOK_URL, form)))).status == 200
        lines = refusals(logs)
        assert len(lines) == 1, lines
        assert answer.client in lines[0] and str(status) in lines[0], lines
        assert "\n" not in lines[0]
        assert_no_error(logs)

    run(body)


def test_a_repeated_equal_content_length_is_accepted(logs: pytest.LogCaptureFixture) -> None:
    form = [("CallSid", "CA1")]
    data = urlencode(form).encode()
    request = (
        b"POST /incoming-call HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(data)}\r\nContent-Length: {len(data)}\r\n".encode()
        + f"X-Twilio-Signature: {sign(WEBHOOK_URL, form)}\r\n\r\n".encode()
        + data
    )

    async def body() -> None:
        async with webhook_server() as port:
            assert (await exchange(port, request)).status == 200

    run(body)
    assert_no_error(logs)


# --- WebSocket: invalid UTF-8 and a peer that does not read --------------------------------------


def twilio_start(call: str) -> list[str]:
    start = {
        "streamSid": STREAM,
        "callSid": call,
        "accountSid": "AC0123456789abcdef0123456789abcdef",
        "tracks": ["inbound"],
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    return [
        json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": STREAM, "start": start}),
    ]


@attrs.define
class Bridged:
    sim: FakeRealtimeServer
    port: int
    reports: list[CallReport]

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/media-stream"


@asynccontextmanager
async def bridged(greeting: str | None = "Greet the caller.") -> AsyncIterator[Bridged]:
    sim = FakeRealtimeServer(
        FakeRealtimeConfig(realtime_factor=20, first_delta_delay_s=0.01, seed=3),
        replies=lambda _ctx: ScriptedReply("Hello there, a short answer.", audio_ms=1200),
    )
    await sim.start()
    reports: list[CallReport] = []
    config = ServerConfig(
        public_url=f"http://{HOST}",
        realtime_url=sim.url,
        bridge=BridgeConfig(session=SessionConfig(instructions="test"), greeting=greeting),
    )
    server = await start_server(config, HOST, 0, reports=reports)
    try:
        yield Bridged(sim, server.sockets[0].getsockname()[1], reports)
    finally:
        server.close()
        await server.wait_closed()
        await sim.stop()


@pytest.mark.parametrize("after_start", [False, True], ids=["before start", "after start"])
def test_invalid_utf8_in_a_text_frame_closes_with_1007(
    logs: pytest.LogCaptureFixture, after_start: bool
) -> None:
    async def body() -> None:
        async with bridged() as b:
            good = FakeTwilioCaller(b.url, FakeCallerConfig(call_sid="CAgood", speed=4.0))
            await good.start()
            await until(lambda: len(b.sim.open_connections()) == 1, "the good call's session")
            async with connect(b.url) as ws:
                if after_start:
                    for frame in twilio_start("CAbad"):
                        await ws.send(frame)
                    await until(lambda: len(b.sim.open_connections()) == 2, "the bad session")
                await ws.send(b'{"event": "media", "x": "\xff\xfe"}', text=True)
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5.0)  # greeting audio may come first
                    while True:
                        await asyncio.wait_for(ws.recv(), 5.0)
            assert ws.close_code == 1007, (ws.close_code, ws.close_reason)
            await until(lambda: any(r.call_sid != "CAgood" for r in b.reports), "the bad call end")
            await until(lambda: len(b.sim.open_connections()) == 1, "the bad session closed")
            await good.wait_until(lambda: good.received_ms >= 200, 15.0, "the good call's audio")
            await good.hang_up()
            await until(lambda: len(b.reports) == 2, "the good call's end")
            assert not b.sim.open_connections()
            ends = {r.call_sid: r.end_reason for r in b.reports}
            assert ends["CAgood"] == "telephony stop", ends
            assert not any(e.startswith("internal error") for e in ends.values()), ends
        lines = [m for m in refusals(logs) if "1007" in m]
        assert len(lines) == 1 and "invalid UTF-8" in lines[0], refusals(logs)
        assert_no_error(logs)

    run(body)


def test_a_ping_flooding_peer_that_never_reads_is_dropped(
    logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webserver, "DRAIN_TIMEOUT", 0.5)
    monkeypatch.setattr(webserver, "CLOSE_TIMEOUT", 0.2)

    async def body() -> None:
        async with bridged(greeting=None) as b:
            loop = asyncio.get_running_loop()
            flood: asyncio.Task[Any] | None = None
            sock, client = await raw_twilio(b.url)
            try:
                for frame in twilio_start("CAflood"):
                    client.send_text(frame.encode())
                for chunk in client.data_to_send():
                    await loop.sock_sendall(sock, chunk)
                await until(lambda: len(b.sim.open_connections()) == 1, "the call's session")

                async def ping_forever() -> None:
                    with_payload = b"p" * 125
                    while True:  # ... and never read a pong
                        for _ in range(200):
                            client.send_ping(with_payload)
                        await loop.sock_sendall(sock, b"".join(client.data_to_send()))

                flood = asyncio.create_task(ping_forever())
                # DRAIN_TIMEOUT (0.5 s) plus room for a busy machine, far below the 10 s default.
                await until(lambda: b.reports, "the call to end", timeout=5.0)
                await until(lambda: not b.sim.open_connections(), "its session closed")
                await asyncio.wait_for(asyncio.gather(flood, return_exceptions=True), 5.0)
                assert isinstance(flood.exception(), OSError)  # the link was dropped
            finally:
                if flood is not None:
                    flood.cancel()
                sock.close()
            [report] = b.reports
            assert not report.end_reason.startswith("internal error"), report.end_reason
        lines = [m for m in refusals(logs) if "peer not reading" in m]
        assert len(lines) == 1, refusals(logs)
        assert_no_error(logs)

    run(body)

"""The Twilio bridge server over real sockets on 127.0.0.1, and the example's command line.

* ``/incoming-call`` (GET and POST) answers TwiML streaming to ``wss://<public host>/media-stream``.
* ``/media-stream`` checks ``X-Twilio-Signature`` against the configured ``wss://`` URL when a
  token is set, and refuses anything else with 403 before a single frame (twilio-media-streams.md
  section 4 lists which URLs must pass and fail).
* Neither the OpenAI API key nor the Twilio auth token ever reaches the logs, DEBUG included.
* ``examples/twilio_bridge.py``: flags and environment variables map onto ``ServerConfig``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import socket
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
from twilio.request_validator import RequestValidator
from waiting import poller
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State
from websockets.uri import parse_uri

from realtime_fsm import webserver
from realtime_fsm.bridge import BridgeConfig, CallReport
from realtime_fsm.openai_realtime import Dialect
from realtime_fsm.server import (
    DEFAULT_REALTIME_URL,
    ENV_SETTINGS,
    ServerConfig,
    start_server,
    twiml,
)
from realtime_fsm.testing import dial

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_URL = "https://example.ngrok.app"
STREAM_URL = "wss://example.ngrok.app/media-stream"
API_KEY = "sk-test-DO-NOT-LOG-3f9a1c7e5b"
TOKEN = "twilio-token-DO-NOT-LOG-8d2e"
STREAM = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA0123456789abcdef0123456789abcdef"
PAYLOAD = "//79/Pv6+fj39vX08/Lx8O/u7ezr6uno5+bl5OPi4eDf3t3c29rZ2NfW1dTT0tHQzw=="

#: The fake OpenAI server's own websockets logger: it would print the Authorization header it
#: receives at DEBUG, which is the test's doing, not the bridge's.
_QUIET = logging.getLogger("tests.fake_realtime")
_QUIET.setLevel(logging.CRITICAL)


def sign(url: str, token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, {}))


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run(body: Callable[[], Awaitable[None]], timeout: float = 10.0) -> None:
    async def main() -> None:
        await asyncio.wait_for(body(), timeout)

    asyncio.run(main())


until = poller(3.0, 0.005)


class FakeRealtime:
    """Just enough of an OpenAI Realtime server: records the upgrade and every client event."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.messages: list[dict[str, Any]] = []
        self.disconnects = 0
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        try:
            async for raw in ws:
                message = json.loads(raw)
                self.messages.append(message)
                if message["type"] == "session.update":
                    await ws.send(
                        json.dumps({"type": "session.updated", "event_id": "ev_1", "session": {}})
                    )
        except ConnectionClosed:
            pass
        finally:
            self.disconnects += 1

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeRealtime]:
        async with serve(self.handler, "127.0.0.1", 0, logger=_QUIET) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
            yield self


@asynccontextmanager
async def bridge_server(
    config: ServerConfig, reports: list[CallReport] | None = None
) -> AsyncIterator[int]:
    server = await start_server(config, "127.0.0.1", 0, reports=reports)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def http(
    port: int,
    method: str,
    path: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers or {}
    )
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


ACCOUNT = "AC0123456789abcdef0123456789abcdef"


async def credential_params(port: int, token: str | None) -> dict[str, str]:
    """The ``<Parameter>``s the signed webhook answers for call ``CALL`` (with a token: the
    per-call stream credential), as Twilio would pass them on in ``start``."""
    if token is None:
        return {}
    dialed = await dial(
        f"http://127.0.0.1:{port}",
        public_url=PUBLIC_URL,
        auth_token=token,
        call_sid=CALL,
        account_sid=ACCOUNT,
    )
    return dict(dialed.parameters)


def twilio_start(params: dict[str, str] | None = None) -> list[str]:
    return [
        json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": STREAM,
                "start": {
                    "streamSid": STREAM,
                    "callSid": CALL,
                    "accountSid": ACCOUNT,
                    "tracks": ["inbound"],
                    "customParameters": params or {},
                    "mediaFormat": {
                        "encoding": "audio/x-mulaw",
                        "sampleRate": 8000,
                        "channels": 1,
                    },
                },
            }
        ),
    ]


async def raw_twilio(url: str) -> tuple[socket.socket, ClientProtocol]:
    """A "Twilio" on a raw socket with a small receive buffer, upgraded to a WebSocket and
    nothing more read (the 101 response and not a byte after it), so a test decides when, or
    whether, it ever reads again.  The caller closes the socket."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    uri = parse_uri(url)
    await loop.sock_connect(sock, (uri.host, uri.port))
    client = ClientProtocol(uri)
    client.send_request(client.connect())
    for chunk in client.data_to_send():
        await loop.sock_sendall(sock, chunk)
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    client.receive_data(head)
    return sock, client


def assert_no_secrets(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "nothing was logged: the check would be vacuous"
    for record in caplog.records:
        text = record.getMessage() + repr(record.args)
        assert API_KEY not in text, f"API key logged by {record.name}: {text}"
        assert TOKEN not in text, f"Twilio token logged by {record.name}: {text}"
    assert API_KEY not in caplog.text and TOKEN not in caplog.text


# ------------------------------------------------------------------------------------- TwiML


@pytest.mark.parametrize(
    ("public_url", "stream_url"),
    [
        ("https://example.ngrok.app", "wss://example.ngrok.app/media-stream"),
        ("https://example.ngrok.app/", "wss://example.ngrok.app/media-stream"),
        ("https://host.example/voice/", "wss://host.example/voice/media-stream"),
        ("http://localhost:8080", "ws://localhost:8080/media-stream"),
        ("https://host.example/a&b", "wss://host.example/a&b/media-stream"),
    ],
)
def test_incoming_call_get_and_post_return_connect_stream_twiml(
    public_url: str, stream_url: str
) -> None:
    config = ServerConfig(public_url=public_url, twilio_auth_token=TOKEN)
    assert config.stream_url == stream_url

    async def body() -> None:
        async with bridge_server(config) as port:
            form = {"CallSid": "CA1", "From": "+15550100"}
            for method, data in (("GET", None), ("POST", b"CallSid=CA1&From=%2B15550100")):
                # Signed as Twilio signs it: the configured webhook URL and the form fields.
                signature = RequestValidator(TOKEN).compute_signature(
                    config.webhook_url, form if data else {}
                )
                status, ctype, xml = await asyncio.to_thread(
                    http, port, method, "/incoming-call", data, {"X-Twilio-Signature": signature}
                )
                assert status == 200, (method, xml)
                assert ctype.startswith("text/xml")
                root = ET.fromstring(xml)
                assert root.tag == "Response"
                [connect_el] = list(root)
                assert connect_el.tag == "Connect"
                [stream_el] = list(connect_el)
                assert stream_el.tag == "Stream"
                assert stream_el.attrib == {"url": stream_url}
            status, _, _ = await asyncio.to_thread(http, port, "PUT", "/incoming-call", b"")
            assert status == 405

    run(body)


# ------------------------------------------------------------------------ signature on the upgrade


def test_valid_signature_is_accepted_and_the_call_is_bridged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    reports: list[CallReport] = []

    async def body() -> None:
        fake = FakeRealtime()
        async with fake.running():
            config = ServerConfig(
                public_url=PUBLIC_URL,
                realtime_url=fake.url,
                api_key=API_KEY,
                twilio_auth_token=TOKEN,
            )
            async with bridge_server(config, reports) as port:
                headers = {"X-Twilio-Signature": sign(STREAM_URL)}
                url = f"ws://127.0.0.1:{port}/media-stream"
                params = await credential_params(port, TOKEN)
                async with connect(url, additional_headers=headers) as twilio:
                    for frame in twilio_start(params):
                        await twilio.send(frame)
                    media = {"event": "media", "streamSid": STREAM, "media": {"payload": PAYLOAD}}
                    await twilio.send(json.dumps(media))
                    await until(lambda: len(fake.messages) >= 2, "session.update + append")
                    assert fake.messages[0]["type"] == "session.update"
                    assert fake.messages[1] == {
                        "type": "input_audio_buffer.append",
                        "audio": PAYLOAD,
                    }
                    await twilio.send(json.dumps({"event": "stop", "streamSid": STREAM}))
                    await asyncio.wait_for(twilio.wait_closed(), 3)
                    assert twilio.close_code == 1000
                await until(lambda: reports, "the call report")
                await until(lambda: fake.disconnects == 1, "the OpenAI socket closed")
        [headers_seen] = fake.headers
        assert headers_seen["authorization"] == f"Bearer {API_KEY}"
        assert "openai-beta" not in headers_seen
        [report] = reports
        assert report.end_reason == "telephony stop"
        assert report.call_sid == CALL and report.media_in == 1

    run(body)
    assert_no_secrets(caplog)
    # Not vacuous: the OpenAI handshake was logged at DEBUG, with the header redacted.
    handshake = [r.getMessage() for r in caplog.records if r.name.startswith("websockets.client")]
    assert "> Authorization: [redacted]" in handshake


def test_beta_dialect_sends_the_beta_header_and_flat_session() -> None:
    async def body() -> None:
        fake = FakeRealtime()
        async with fake.running():
            config = ServerConfig(
                public_url=PUBLIC_URL,
                realtime_url=fake.url,
                api_key=API_KEY,
                bridge=BridgeConfig(dialect=Dialect.BETA),
            )
            async with (
                bridge_server(config) as port,
                connect(f"ws://127.0.0.1:{port}/media-stream") as twilio,
            ):
                for frame in twilio_start():
                    await twilio.send(frame)
                await until(lambda: fake.messages, "session.update")
                await twilio.send(json.dumps({"event": "stop", "streamSid": STREAM}))
                await asyncio.wait_for(twilio.wait_closed(), 3)
        assert fake.headers[0]["openai-beta"] == "realtime=v1"
        assert fake.messages[0]["session"]["input_audio_format"] == "g711_ulaw"

    run(body)


BAD_SIGNATURES = {
    "invalid": {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
    "empty": {"X-Twilio-Signature": ""},
    "missing": {},
    "wrong token": {"X-Twilio-Signature": sign(STREAM_URL, token="another-token")},
    "https scheme": {"X-Twilio-Signature": sign("https://example.ngrok.app/media-stream")},
    "ws scheme": {"X-Twilio-Signature": sign("ws://example.ngrok.app/media-stream")},
    "trailing slash": {"X-Twilio-Signature": sign(STREAM_URL + "/")},
    "query string": {"X-Twilio-Signature": sign(STREAM_URL + "?x=1")},
    "host case": {"X-Twilio-Signature": sign("wss://EXAMPLE.ngrok.app/media-stream")},
    "other host": {"X-Twilio-Signature": sign("wss://attacker.example/media-stream")},
}


@pytest.mark.parametrize("case", list(BAD_SIGNATURES))
def test_bad_signature_is_refused_with_403_before_any_frame(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def body() -> None:
        fake = FakeRealtime()
        async with fake.running():
            config = ServerConfig(
                public_url=PUBLIC_URL,
                realtime_url=fake.url,
                api_key=API_KEY,
                twilio_auth_token=TOKEN,
            )
            async with bridge_server(config) as port:
                url = f"ws://127.0.0.1:{port}/media-stream"
                with pytest.raises(InvalidStatus) as info:
                    async with connect(url, additional_headers=BAD_SIGNATURES[case]):
                        pytest.fail("the upgrade must be refused")
                assert info.value.response.status_code == 403
                assert info.value.response.body is not None
                assert info.value.response.body.startswith(b"forbidden")
            assert fake.headers == []  # refused before the bridge ever dialled OpenAI

    run(body)
    assert "refusing media stream" in caplog.text
    assert_no_secrets(caplog)


@pytest.mark.parametrize("signed_url", [STREAM_URL, STREAM_URL + "?x=1"])
def test_a_query_string_on_the_stream_url_is_refused(signed_url: str) -> None:
    """Stream URLs carry no query string; even a correct signature does not let one through."""

    async def body() -> None:
        config = ServerConfig(
            public_url=PUBLIC_URL,
            realtime_url=f"ws://127.0.0.1:{closed_port()}/",
            api_key=API_KEY,
            twilio_auth_token=TOKEN,
        )
        async with bridge_server(config) as port:
            url = f"ws://127.0.0.1:{port}/media-stream?x=1"
            headers = {"X-Twilio-Signature": sign(signed_url)}
            with pytest.raises(InvalidStatus) as info:
                async with connect(url, additional_headers=headers):
                    pytest.fail("the upgrade must be refused")
            assert info.value.response.status_code == 403

    run(body)


# ------------------------------------------------------------------ unreachable realtime server


@pytest.mark.parametrize("token", [TOKEN, None], ids=["signed", "no-token"])
def test_unreachable_realtime_server_closes_the_stream_and_logs_no_secret(
    token: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """With a token the signed upgrade passes; without one there is no check at all.  Either way
    the bridge then fails to reach OpenAI: 1011 to Twilio, a log line naming only the host."""
    caplog.set_level(logging.DEBUG)
    dead = closed_port()

    async def body() -> None:
        config = ServerConfig(
            public_url=PUBLIC_URL,
            # A key in the query string, as some deployments do: the URL must not be logged.
            realtime_url=f"ws://127.0.0.1:{dead}/v1/realtime?model=gpt-realtime&key={API_KEY}",
            api_key=API_KEY,
            twilio_auth_token=token,
        )
        async with bridge_server(config) as port:
            headers = {"X-Twilio-Signature": sign(STREAM_URL)} if token else {}
            url = f"ws://127.0.0.1:{port}/media-stream"
            params = await credential_params(port, token)
            async with connect(url, additional_headers=headers) as twilio:
                # No OpenAI session is opened before Twilio's start names the call.
                connected, start = twilio_start(params)
                await twilio.send(connected)
                await asyncio.sleep(0.05)
                assert twilio.state is State.OPEN
                await twilio.send(start)
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(twilio.recv(), 5)
                assert info.value.rcvd is not None
                assert info.value.rcvd.code == 1011
                assert info.value.rcvd.reason == "realtime server unreachable"

    run(body)
    assert f"cannot reach the realtime server at 127.0.0.1:{dead}" in caplog.text
    assert "refusing media stream" not in caplog.text
    assert_no_secrets(caplog)


# ------------------------------------------------------------------------ a peer that stops reading


class FloodingRealtime(FakeRealtime):
    """After ``session.update``: a server-created response and far more audio than a stuck
    telephony peer can absorb."""

    async def handler(self, ws: ServerConnection) -> None:
        try:
            async for raw in ws:
                if json.loads(raw)["type"] != "session.update":
                    continue
                created = {
                    "type": "response.created",
                    "response": {"id": "resp_1", "status": "in_progress", "output": []},
                }
                await ws.send(json.dumps(created))
                delta = {
                    "type": "response.output_audio.delta",
                    "response_id": "resp_1",
                    "item_id": "item_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": PAYLOAD * 100,
                }
                frame = json.dumps(delta)
                for _ in range(5_000):  # paced, so the bridge reads it all: no backlog here
                    await ws.send(frame)
                    await asyncio.sleep(0)
        except ConnectionClosed:
            pass


def _connections() -> list[asyncio.Task[Any]]:
    """The bridge server's per-connection tasks still running (``webserver.serve``)."""
    return [
        t for t in asyncio.all_tasks() if "on_connect" in getattr(t.get_coro(), "__qualname__", "")
    ]


def test_a_telephony_peer_that_stops_reading_is_dropped_not_held_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bridge ends the call when its queue to Twilio fills; the server must then let go of
    the connection (abort it) even though the peer will never read the close frame."""
    monkeypatch.setattr(webserver, "CLOSE_TIMEOUT", 0.2)
    reports: list[CallReport] = []

    async def body() -> None:
        fake = FloodingRealtime()
        async with fake.running():
            config = ServerConfig(
                public_url=PUBLIC_URL, realtime_url=fake.url, bridge=BridgeConfig(max_queue=50)
            )
            async with bridge_server(config, reports) as port:
                loop = asyncio.get_running_loop()
                sock, client = await raw_twilio(f"ws://127.0.0.1:{port}/media-stream")
                try:
                    assert len(_connections()) == 1
                    for frame in twilio_start():
                        client.send_text(frame.encode())
                    for chunk in client.data_to_send():
                        await loop.sock_sendall(sock, chunk)
                    # ... and from now on this "Twilio" never reads again.
                    await until(lambda: reports, "the call to end", timeout=1.5)
                    # The server let go: no task is left waiting to flush to this peer.
                    await until(lambda: not _connections(), "the link dropped", timeout=1.0)
                finally:
                    sock.close()
        [report] = reports
        assert report.end_reason == "telephony socket not keeping up (queue full)"

    run(body)


def test_secrets_are_not_in_the_config_repr() -> None:
    config = ServerConfig(public_url=PUBLIC_URL, api_key=API_KEY, twilio_auth_token=TOKEN)
    assert API_KEY not in repr(config) and TOKEN not in repr(config)


# ------------------------------------------------------------------ examples/twilio_bridge.py


def _example() -> ModuleType:
    path = ROOT / "examples" / "twilio_bridge.py"
    spec = importlib.util.spec_from_file_location("twilio_bridge_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "TWILIO_AUTH_TOKEN", *ENV_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    return _example()


def test_example_defaults(example: ModuleType) -> None:
    args = example.parse_args(["--public-url", PUBLIC_URL])
    assert (args.host, args.port) == ("127.0.0.1", 8080)
    config = example.build_config(args)
    assert isinstance(config, ServerConfig)
    assert config.public_url == PUBLIC_URL and config.stream_url == STREAM_URL
    assert config.realtime_url is None and config.connect_url == DEFAULT_REALTIME_URL
    assert config.provider == "openai" and config.model == "gpt-realtime-2.1"
    assert config.api_key == "" and config.twilio_auth_token is None
    bridge = config.bridge
    assert bridge.dialect is Dialect.GA
    assert bridge.greeting is None and bridge.accept_text_messages is False
    session = bridge.session
    assert session.turn_detection == "server_vad"
    assert session.create_response is True and session.interrupt_response is True
    assert session.voice is None and session.instructions is None
    assert bridge.lifecycle.no_audio_timeout == 3.0
    assert bridge.lifecycle.watchdog_cooldown == 12.0


def test_example_flags_map_onto_the_config(example: ModuleType) -> None:
    args = example.parse_args(
        [
            "--host", "0.0.0.0",
            "--port", "9000",
            "--public-url", "https://voice.example.com",
            "--turn-detection", "none",
            "--no-create-response",
            "--no-interrupt-response",
            "--dialect", "beta",
            "--voice", "marin",
            "--instructions", "Be brief.",
            "--greeting", "Greet the caller.",
            "--accept-text-messages",
            "--no-audio-timeout", "1.5",
            "--watchdog-cooldown", "6",
        ]
    )  # fmt: skip
    assert (args.host, args.port) == ("0.0.0.0", 9000)
    config = example.build_config(args)
    assert config.stream_url == "wss://voice.example.com/media-stream"
    bridge = config.bridge
    assert bridge.dialect is Dialect.BETA
    assert bridge.session.turn_detection is None
    assert bridge.session.create_response is False
    assert bridge.session.interrupt_response is False
    assert bridge.session.voice == "marin" and bridge.session.instructions == "Be brief."
    assert bridge.greeting == "Greet the caller." and bridge.accept_text_messages is True
    assert bridge.lifecycle.no_audio_timeout == 1.5
    assert bridge.lifecycle.watchdog_cooldown == 6.0
    # turn detection off: the machine must neither wait for the server to create nor to cancel
    expected = bridge.session.expected_session()
    assert expected.turn_detection is None
    assert not expected.create_response and not expected.interrupt_response


def test_example_reconnect_flags_map_onto_the_bridge_config(example: ModuleType) -> None:
    defaults = example.build_config(example.parse_args(["--public-url", PUBLIC_URL])).bridge
    assert (defaults.reconnect_attempts, defaults.max_reconnects) == (4, 20)
    assert (defaults.history_max_items, defaults.history_max_chars) == (40, 8000)
    # The example's defaults are the library's (the mark interval included: no copied literal).
    assert defaults == attrs.evolve(
        BridgeConfig(), session=defaults.session, lifecycle=defaults.lifecycle
    )
    args = example.parse_args(
        [
            "--public-url", PUBLIC_URL,
            "--reconnect-attempts", "2",
            "--max-reconnects", "0",
            "--history-max-items", "10",
            "--history-max-chars", "0",
        ]
    )  # fmt: skip
    bridge = example.build_config(args).bridge
    assert (bridge.reconnect_attempts, bridge.max_reconnects) == (2, 0)
    assert (bridge.history_max_items, bridge.history_max_chars) == (10, 0)
    every = example.parse_args(["--public-url", PUBLIC_URL, "--mark-every-ms", "0"])
    assert example.build_config(every).bridge.mark_every_ms == 0
    assert defaults.rotate_after == 55 * 60.0
    for value, rotate_after in (("600", 600.0), ("0", None)):
        rotate = example.parse_args(["--public-url", PUBLIC_URL, "--rotate-after", value])
        assert example.build_config(rotate).bridge.rotate_after == rotate_after
    for flag, bad in (
        ("--reconnect-attempts", "0"),
        ("--max-reconnects", "-1"),
        ("--history-max-items", "x"),
        ("--history-max-chars", "-5"),
        ("--mark-every-ms", "-1"),
        ("--rotate-after", "-1"),
        ("--rotate-after", "inf"),
    ):
        with pytest.raises(SystemExit):
            example.parse_args(["--public-url", PUBLIC_URL, flag, bad])


def test_example_push_to_talk_flag(example: ModuleType) -> None:
    base = ["--public-url", PUBLIC_URL]
    assert example.build_config(example.parse_args(base)).bridge.commit_on_dtmf is None
    args = example.parse_args([*base, "--turn-detection", "none", "--commit-on-dtmf", "#"])
    bridge = example.build_config(args).bridge
    assert bridge.commit_on_dtmf == "#" and bridge.session.turn_detection is None
    for bad in (
        ["--commit-on-dtmf", "#"],
        ["--no-create-response", "--commit-on-dtmf", "*"],  # VAD still commits turns itself
        ["--turn-detection", "none", "--commit-on-dtmf", "A"],
    ):
        with pytest.raises(SystemExit):
            example.parse_args([*base, *bad])


def test_example_semantic_vad_and_explicit_create(example: ModuleType) -> None:
    args = example.parse_args(
        ["--public-url", PUBLIC_URL, "--turn-detection", "semantic_vad", "--create-response"]
    )
    session = example.build_config(args).bridge.session
    assert session.turn_detection == "semantic_vad" and session.create_response is True
    args = example.parse_args(["--public-url", PUBLIC_URL, "--no-create-response"])
    session = example.build_config(args).bridge.session
    assert session.turn_detection == "server_vad" and session.create_response is False
    assert session.interrupt_response is True


def test_example_environment(example: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_REALTIME_URL", "ws://127.0.0.1:8765/v1/realtime")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    config = example.build_config(example.parse_args(["--public-url", PUBLIC_URL]))
    assert config.realtime_url == "ws://127.0.0.1:8765/v1/realtime"
    assert config.api_key == API_KEY and config.twilio_auth_token == TOKEN
    # the flag wins over the environment
    args = example.parse_args(
        ["--public-url", PUBLIC_URL, "--realtime-url", "ws://127.0.0.1:9999/rt"]
    )
    assert example.build_config(args).realtime_url == "ws://127.0.0.1:9999/rt"
    # an empty token means no signature check, not a check against ""
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "")
    config = example.build_config(example.parse_args(["--public-url", PUBLIC_URL]))
    assert config.twilio_auth_token is None


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--public-url", PUBLIC_URL, "--turn-detection", "push_to_talk"],
        ["--public-url", PUBLIC_URL, "--dialect", "v2"],
        ["--public-url", PUBLIC_URL, "--port", "eighty"],
    ],
)
def test_example_rejects_bad_arguments(
    example: ModuleType, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        example.parse_args(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_stream_parameters_become_escaped_twiml_parameters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Per-call data rides in ``<Parameter>``s (the stream URL takes no query string); values
    from the webhook are escaped, and a parameters function that fails costs only them."""
    body = twiml("wss://x/media-stream", {"name": 'A"da <&>'})
    stream = ET.fromstring(body).find("./Connect/Stream")
    assert stream is not None
    [param] = stream.findall("Parameter")
    assert (param.get("name"), param.get("value")) == ("name", 'A"da <&>')
    config = ServerConfig(public_url=PUBLIC_URL, stream_parameters=lambda w: {"n": w["From"]})
    assert config.parameters_for({"From": "+1555"}) == {"n": "+1555"}
    assert config.parameters_for({}) == {}  # KeyError: logged, no parameters
    bad = ServerConfig(public_url=PUBLIC_URL, stream_parameters=lambda w: {"n": 5})  # type: ignore[arg-type,dict-item,return-value]
    assert bad.parameters_for({}) == {}
    assert "stream_parameters failed" in caplog.text

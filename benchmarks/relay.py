"""The bare relay: the physical floor of the bridge's design, for the load benchmark.

The same process plumbing as ``examples/twilio_bridge.py`` (our :func:`realtime_fsm.webserver.serve`
for the Twilio side, a ``websockets`` client to the realtime URL, the same parsers, the same
``input_audio_append_json`` re-wrapping and ``media_message``), and nothing else: no response
lifecycle, no marks, no barge-in handling, no writer queues.  Twilio ``media`` becomes
``input_audio_buffer.append``; audio deltas become Twilio ``media``.  A naive relay still has to
greet the caller and pass typed text on, so ``--greeting`` sends one ``response.create`` at the
start and ``--accept-text-messages`` turns ``{"event": "text"}`` into ``conversation.item.create``
plus ``response.create`` (unguarded: the server rejects it while a response is active, which is
exactly what the lifecycle machine exists to prevent).

Same command-line shape as the example bridge::

    python -m benchmarks.relay --port 8081 --public-url http://127.0.0.1:8081 \\
        --realtime-url ws://127.0.0.1:9000/v1/realtime --log-level WARNING
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime_fsm.errors import RemoteProtocolError
from realtime_fsm.malloc_tuning import tune_malloc_for_sockets
from realtime_fsm.openai_realtime import (
    DEFAULT_MAX_FRAME_SIZE,
    Dialect,
    OpenAIRealtimeCodec,
    OutputAudioDelta,
    SessionConfig,
    input_audio_append_json,
)
from realtime_fsm.server import DEFAULT_REALTIME_URL
from realtime_fsm.twilio_media import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Media,
    Start,
    Stop,
    UnknownMessage,
    media_message,
    parse_message,
)
from realtime_fsm.webserver import (
    Routes,
    WebSocket,
    WebSocketClosed,
    serve,
    serve_until_signalled,
)

log = logging.getLogger("realtime_fsm.bench.relay")
_CLOSED = (ConnectionClosed, WebSocketClosed, ConnectionError, OSError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--public-url", required=True, help="accepted for symmetry; unused")
    p.add_argument(
        "--realtime-url", default=os.environ.get("OPENAI_REALTIME_URL", DEFAULT_REALTIME_URL)
    )
    p.add_argument("--greeting", default=None, help="instructions for a first response")
    p.add_argument("--accept-text-messages", action="store_true")
    p.add_argument(
        "--tune-malloc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="as the example bridge: keep socket read buffers off mmap (glibc)",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


class Relay:
    """One call: two reader tasks, each sending straight to the other socket."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.codec = OpenAIRealtimeCodec(dialect=Dialect.GA, max_frame_size=DEFAULT_MAX_FRAME_SIZE)
        self.session = SessionConfig(turn_detection="server_vad")

    async def run(self, twilio: WebSocket) -> None:
        stream_sid = await self._await_start(twilio)
        if stream_sid is None:
            return
        headers = (
            {"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"}
            if os.environ.get("OPENAI_API_KEY")
            else {}
        )
        try:
            openai = await connect(
                self.args.realtime_url,
                additional_headers=headers,
                max_size=DEFAULT_MAX_FRAME_SIZE,
                open_timeout=10,
                compression=None,
            )
        except (OSError, asyncio.TimeoutError, Exception) as exc:
            log.error("call=%s realtime server unreachable: %s", stream_sid, type(exc).__name__)
            return
        async with openai:
            await openai.send(json.dumps(self.codec.session_update(self.session)))
            if self.args.greeting is not None:
                greeting = {"instructions": self.args.greeting}
                await openai.send(json.dumps({"type": "response.create", "response": greeting}))
            tasks = [
                asyncio.create_task(self._up(twilio, openai)),
                asyncio.create_task(self._down(openai, twilio, stream_sid)),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _await_start(self, twilio: WebSocket) -> str | None:
        while True:
            try:
                frame = await asyncio.wait_for(twilio.recv(), 15.0)
                message = parse_message(frame, max_message_size=DEFAULT_MAX_MESSAGE_SIZE)
            except RemoteProtocolError:
                continue
            except (asyncio.TimeoutError, *_CLOSED):
                return None
            if isinstance(message, Start):
                return message.stream_sid
            if isinstance(message, Stop):
                return None

    async def _up(self, twilio: WebSocket, openai: ClientConnection) -> None:
        """Twilio -> OpenAI: media as ``input_audio_buffer.append``, typed text unguarded."""
        accept_text = self.args.accept_text_messages
        while True:
            try:
                frame = await twilio.recv()
            except _CLOSED:
                return
            try:
                message = parse_message(frame, max_message_size=DEFAULT_MAX_MESSAGE_SIZE)
            except RemoteProtocolError:
                continue
            kind = type(message)
            try:
                if kind is Media:
                    assert isinstance(message, Media)
                    await openai.send(input_audio_append_json(message.payload))
                elif kind is Stop:
                    return
                elif kind is UnknownMessage and accept_text:
                    data = json.loads(frame)
                    text = data.get("text")
                    if data.get("event") == "text" and isinstance(text, str):
                        await openai.send(json.dumps(_user_text(text)))
                        await openai.send(json.dumps({"type": "response.create"}))
            except _CLOSED:
                return

    async def _down(self, openai: ClientConnection, twilio: WebSocket, stream_sid: str) -> None:
        """OpenAI -> Twilio: audio deltas as ``media``; everything else is dropped."""
        codec = self.codec
        while True:
            try:
                frame = await openai.recv()
            except _CLOSED:
                return
            try:
                message = codec.parse(frame)
            except RemoteProtocolError:
                continue
            if type(message) is OutputAudioDelta:
                assert isinstance(message, OutputAudioDelta)
                try:
                    await twilio.send(media_message(stream_sid, message.payload))
                except _CLOSED:
                    return


def _user_text(text: str) -> dict[str, object]:
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        },
    }


async def serve_forever(args: argparse.Namespace) -> None:
    async def media(ws: WebSocket) -> None:
        await Relay(args).run(ws)

    routes = Routes(websocket={"/media-stream": media}, max_message_bytes=DEFAULT_MAX_MESSAGE_SIZE)
    await serve_until_signalled(await serve(routes, args.host, args.port))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if args.tune_malloc:
        tune_malloc_for_sockets()  # the same process plumbing as the example bridge
    asyncio.run(serve_forever(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

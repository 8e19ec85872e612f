"""The real ``openai`` SDK client pointed at the simulator, with every server event checked
against the SDK's own types.

``connected()`` starts a :class:`FakeRealtimeServer` on 127.0.0.1 and opens
``openai.AsyncOpenAI(websocket_base_url="ws://127.0.0.1:<port>/v1").realtime.connect(model=...)``
(the SDK appends ``/realtime?model=...``).  :class:`SdkClient` reads raw frames and validates
each one with ``TypeAdapter(openai.types.realtime.RealtimeServerEvent)``: a missing required
field fails there, and a field the types do not have fails :func:`strict` (the SDK's models
accept extra fields, so that check walks the parsed model for them).  The one allowance:
``session.created`` / ``session.updated`` carry ``id``, ``object`` and ``expires_at``, which the
real server sends (they are ``RealtimeSessionCreateResponse`` fields) while the events are typed
with ``RealtimeSessionCreateRequest`` (reference 13).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import openai
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeServerEvent
from openai.types.realtime.realtime_session_create_request import RealtimeSessionCreateRequest
from openai.types.realtime.realtime_session_create_response import RealtimeSessionCreateResponse
from pydantic import BaseModel, TypeAdapter
from waiting import ReceivedEvents

from realtime_fsm.testing import FakeRealtimeConfig, FakeRealtimeServer

JSON = dict[str, Any]
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
#: Sent by the real server in session events, typed only on the response model.
SESSION_EXTRAS = frozenset(
    f".session.{k}"
    for k in set(RealtimeSessionCreateResponse.model_fields)
    - set(RealtimeSessionCreateRequest.model_fields)
)
FAST = FakeRealtimeConfig(
    realtime_factor=40, first_delta_delay_s=0.005, transcription_delay_s=0.02, seed=21
)
#: A telephony session as a Twilio bridge configures it (GA shape).
PHONE_SESSION: JSON = {
    "type": "realtime",
    "instructions": "You are a helpful phone agent.",
    "audio": {
        "input": {
            "format": {"type": "audio/pcmu"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 200},
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
}


def extra_fields(value: Any, path: str = "") -> list[str]:
    """Paths of the fields a parsed model holds that its type does not declare."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{path}.{k}" for k in value.model_extra or {}]
        for name in type(value).model_fields:
            found += extra_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, entry in enumerate(value):
            found += extra_fields(entry, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, entry in value.items():
            found += extra_fields(entry, f"{path}.{key}")
    return found


def strict(event: JSON) -> Any:
    """``event`` parsed with the SDK's server-event union; fails on any undeclared field."""
    model = SERVER_EVENT.validate_python(event)
    assert model.type == event["type"]
    allowed = SESSION_EXTRAS if event["type"] in ("session.created", "session.updated") else ()
    unexpected = [p for p in extra_fields(model) if p not in allowed]
    assert not unexpected, f"{event['type']}: fields the SDK types lack: {unexpected}"
    return model


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class SdkClient(ReceivedEvents):
    """The SDK connection, reading raw frames and checking each one with :func:`strict`."""

    def __init__(self, conn: AsyncRealtimeConnection) -> None:
        super().__init__()
        self.conn = conn
        self.received_at: list[float] = []

    async def recv(self, timeout: float = 5.0) -> JSON:
        raw = await asyncio.wait_for(self.conn.recv_bytes(), timeout)
        event: JSON = json.loads(raw)
        strict(event)
        self.events.append(event)
        self.received_at.append(time.monotonic())
        return event

    async def have(
        self, event_type: str, pred: Callable[[JSON], bool] | None = None, timeout: float = 10.0
    ) -> JSON:
        """The first event of ``event_type`` received so far, or the next one."""
        for event in self.of(event_type, pred):
            return event
        return await self.until(event_type, pred, timeout)

    def at(self, event: JSON) -> float:
        """When ``event`` (one of :attr:`events`) was received."""
        return self.received_at[next(i for i, e in enumerate(self.events) if e is event)]

    async def send_raw(self, event: JSON) -> None:
        """Send ``event`` as is (for parameters the SDK's types do not have)."""
        await self.conn.send(cast(Any, event))

    async def update(self, session: JSON, event_id: str | None = None) -> None:
        """``session.update`` through the SDK's method (``session`` built as a plain dict)."""
        if event_id is None:
            await self.conn.session.update(session=cast(Any, session))
        else:
            await self.conn.session.update(session=cast(Any, session), event_id=event_id)

    async def append(self, audio: bytes) -> None:
        await self.conn.input_audio_buffer.append(audio=b64(audio))


@asynccontextmanager
async def connected(
    config: FakeRealtimeConfig = FAST,
    *,
    model: str = "gpt-realtime",
    session: JSON | None = PHONE_SESSION,
    replies: Any = None,
) -> AsyncIterator[tuple[FakeRealtimeServer, SdkClient]]:
    """A started simulator and the SDK client connected to it, the session configured."""
    async with FakeRealtimeServer(config, replies=replies) as server:
        client = openai.AsyncOpenAI(
            api_key="test", websocket_base_url=f"ws://127.0.0.1:{server.port}/v1"
        )
        try:
            async with client.realtime.connect(model=model) as conn:
                sdk = SdkClient(conn)
                await sdk.until("session.created")
                if session is not None:
                    await sdk.update(session, event_id="evt_session")
                    await sdk.until("session.updated")
                yield server, sdk
        finally:
            await client.close()
        # Every event the simulator sent, read by the client or not, is a valid SDK event.
        for sent in server.sent:
            strict(sent.event)

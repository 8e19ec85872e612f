"""The simulator's per-frame fast paths give exactly what the plain versions gave.

The load benchmark runs the fake server and many fake callers in one process, so the per-frame
work of the simulator was made cheaper (time stamps by byte translation, cached VAD levels, media
messages built as text and written without a task switch).  These tests pin that the bytes on
the wire and the values computed are the same as the straightforward versions."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve

from realtime_fsm.testing import FakeCallerConfig, FakeTwilioCaller
from realtime_fsm.testing.audio import (
    STAMP_SIZE,
    make_time_stamp,
    mulaw_decode,
    mulaw_rms_level,
    read_time_stamp,
    rms_level,
    silence,
    tone,
)

_MAGIC = b"\xf5\xfa\xf5\xfa"


def _reference_stamp(source: int, ns: int) -> bytes:
    value = ((source & 0xFFFF) << 64) | (ns & 0xFFFFFFFFFFFFFFFF)
    return _MAGIC + bytes(0xF0 | ((value >> shift) & 0xF) for shift in range(76, -1, -4))


def _reference_read(data: bytes, offset: int = 0) -> tuple[int, int] | None:
    end = offset + STAMP_SIZE
    if len(data) < end or data[offset : offset + 4] != _MAGIC:
        return None
    value = 0
    for byte in data[offset + 4 : end]:
        if byte & 0xF0 != 0xF0:
            return None
        value = (value << 4) | (byte & 0xF)
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


@given(st.integers(0, 2**20), st.integers(0, 2**70), st.binary(max_size=6))
def test_time_stamp_bytes_are_unchanged(source: int, ns: int, prefix: bytes) -> None:
    stamp = make_time_stamp(source, ns)
    assert stamp == _reference_stamp(source, ns)
    data = prefix + stamp + b"\xff\xff"
    assert read_time_stamp(data, len(prefix)) == _reference_read(data, len(prefix))
    assert read_time_stamp(data, len(prefix)) == (source & 0xFFFF, ns & 0xFFFFFFFFFFFFFFFF)


@given(st.integers(0, 0xFFFF), st.integers(0, 2**64 - 1), st.integers(4, 23), st.integers(0, 255))
def test_damaged_time_stamps_read_as_the_plain_reader_reads_them(
    source: int, ns: int, index: int, byte: int
) -> None:
    data = bytearray(make_time_stamp(source, ns))
    data[index] = byte
    assert read_time_stamp(bytes(data)) == _reference_read(bytes(data))


@given(st.binary(max_size=200))
def test_read_time_stamp_on_any_bytes(data: bytes) -> None:
    assert read_time_stamp(data) == _reference_read(data)
    assert read_time_stamp(_MAGIC + data) == _reference_read(_MAGIC + data)


@given(st.binary(max_size=200))
def test_cached_mulaw_level_is_the_plain_level(data: bytes) -> None:
    expected = rms_level(mulaw_decode(data))
    assert mulaw_rms_level(data) == expected
    assert mulaw_rms_level(data) == expected  # again, from the cache


def test_caller_media_messages_are_what_json_dumps_gives() -> None:
    """Media built as text: same keys, order, spacing and payloads as json.dumps of the dict,
    sequence numbers shared with the other messages, stamped payloads over the fixed frames."""

    async def scenario() -> list[str]:
        received: list[str] = []
        done = asyncio.Event()

        async def handler(ws: ServerConnection) -> None:
            async for message in ws:
                assert isinstance(message, str)
                received.append(message)
                if sum('"media"' in m for m in received) >= 30:
                    done.set()

        async with serve(handler, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            config = FakeCallerConfig(stream_sid='MZ"odd\u00e9', stamp_source=7, seed=3)
            caller = FakeTwilioCaller(f"ws://127.0.0.1:{port}/media-stream", config)
            await caller.start()
            await caller.speak(0.1)  # five loud frames among the silent ones
            await asyncio.wait_for(done.wait(), 20.0)
            await caller.hang_up()
        return received

    texts = asyncio.run(scenario())
    messages: list[dict[str, Any]] = [json.loads(t) for t in texts]
    assert [m["event"] for m in messages[:2]] == ["connected", "start"]
    numbers = [int(m["sequenceNumber"]) for m in messages if "sequenceNumber" in m]
    assert numbers == list(range(1, len(numbers) + 1))
    speech, quiet = tone(20), silence(20)
    loud = 0
    for text, message in zip(texts, messages, strict=True):
        if message["event"] != "media":
            continue
        assert text == json.dumps(message)
        assert list(message) == ["event", "sequenceNumber", "media", "streamSid"]
        assert list(message["media"]) == ["track", "chunk", "timestamp", "payload"]
        assert message["streamSid"] == 'MZ"odd\u00e9'
        chunk = int(message["media"]["chunk"])
        assert message["media"]["timestamp"] == str((chunk - 1) * 20)
        data = base64.b64decode(message["media"]["payload"], validate=True)
        stamp = read_time_stamp(data)
        assert stamp is not None and stamp[0] == 7
        assert data[STAMP_SIZE:] in (speech[STAMP_SIZE:], quiet[STAMP_SIZE:])
        loud += data[STAMP_SIZE:] == speech[STAMP_SIZE:]
    assert loud == 5

"""The streaming of one fake Realtime response's output items: the message items it says (one,
or several with ``ScriptedReply.items``), then its tool calls (:mod:`.fake_tools`).

Why apart from :mod:`._realtime_responses`: that module decides *whether* a response exists
(the single-active-response rule, cancels, how it ends); this one decides what goes on the wire
while it runs, item by item, with the faults that bend it.

Per message item: ``response.output_item.added``, ``conversation.item.added`` (with the
``previous_item_id`` of the item before it), ``response.content_part.added``, the paced
transcript (or text) and audio deltas, then ``response.output_audio.done``,
``response.output_audio_transcript.done`` (or ``response.output_text.done``),
``response.content_part.done``, ``response.output_item.done`` and ``conversation.item.done``
(the same ``previous_item_id``).  Items follow each other with increasing ``output_index``;
an item is added only once the one before it is done, so a cancel mid item 2 of 3 leaves item
1 ``completed``, item 2 ``incomplete`` and no item 3.  The faults (``stop`` at half the audio,
``stall_after_deltas``, ``drop_socket_after_deltas``, ``deltas_after_cancel``) count the
deltas of the whole response, across its items.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
import time
from typing import Literal

import attrs

from ._conversation import JSON
from ._conversation import Item as _Item
from ._realtime_base import _ConnectionBase, _Live, _Message
from ._realtime_usage import output_audio_tokens, text_tokens
from ._support import openai_id, settle
from .audio import (
    STAMP_SIZE,
    TAG_SIZE,
    bytes_per_ms,
    make_audio_tag,
    make_time_stamp,
    tone,
)
from .fake_tools import stream_calls

_WORD_RE = re.compile(r"\S+\s*|\s+")

Outcome = Literal["completed", "cancelled", "ended_early", "dropped"]


@attrs.define
class _Progress:
    """Counters of one response's streaming, across its message items."""

    #: Deltas (chunks) sent so far: the audio tag's chunk number and the faults' count.
    chunk: int = 0
    #: Chunks after which a response with ``faults.outcome`` other than completed stops.
    stop_at: int = 0
    #: ``faults.deltas_after_cancel`` still to send.
    after_cancel: int = 0


class _ItemStreaming(_ConnectionBase):
    """The per-response streaming task and the done events of each message item."""

    async def _finish(self, live: _Live, *, ended_early: bool = False) -> None:
        raise NotImplementedError  # _ResponseHandling ends responses

    async def _pause(self, live: _Live, seconds: float) -> bool:
        """Sleep ``seconds`` unless a cancel arrives first; True if cancelled."""
        if live.cancel_event.is_set():
            await asyncio.sleep(0)
            return True
        if seconds <= 0:
            await asyncio.sleep(0)
            return live.cancel_event.is_set()
        # A timer and a future rather than wait_for, which wraps the wait in a task: this runs
        # between every two audio deltas of every response.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        live.pause_waiter = waiter
        timer = loop.call_later(seconds, settle, waiter, False)
        try:
            return await waiter
        finally:
            timer.cancel()
            live.pause_waiter = None

    def _content_type(self, audio: bool) -> str:
        if self.api == "ga":
            return "output_audio" if audio else "output_text"
        return "audio" if audio else "text"

    def _chunks(self, message: _Message) -> int:
        return max(1, math.ceil(message.audio_ms / self._server.config.audio_delta_ms))

    async def _stream(self, live: _Live) -> None:
        """Generate one response's events; ends with :meth:`_finish` unless the socket drops."""
        config = self._server.config
        faults = live.record.faults
        delay = config.first_delta_delay_s + live.reasoning_delay_s
        if await self._pause(live, delay) and faults.deltas_after_cancel == 0:
            await self._finish(live)
            return
        total = sum(self._chunks(m) for m in live.messages)
        progress = _Progress(
            stop_at=total if faults.outcome == "completed" else max(1, total // 2),
            after_cancel=faults.deltas_after_cancel,
        )
        outcome: Outcome = "completed"
        last = len(live.messages) - 1
        for index, message in enumerate(live.messages):
            if index > 0 and live.cancel_event.is_set():
                break  # the items not started yet are never added
            outcome = await self._stream_message(live, message, index, progress, index == last)
            if outcome == "dropped":
                return
            if outcome != "completed":
                break
            if index < last:
                self._finish_item(live, message, "completed")
        if live.tools is not None and outcome == "completed" and not live.cancel_event.is_set():
            if live.messages:
                self._finish_item(live, live.messages[-1], "completed")  # the preamble
            await stream_calls(self, live, len(live.messages))
        await self._finish(live, ended_early=outcome == "ended_early")

    async def _stream_message(
        self, live: _Live, message: _Message, output_index: int, progress: _Progress, last: bool
    ) -> Outcome:
        """Add one message item and stream its deltas; how its streaming ended."""
        config = self._server.config
        record = live.record
        faults = record.faults
        item_id = openai_id("item", self._server.rng)
        record.item_ids.append(item_id)
        if record.item_id is None:
            record.item_id = item_id
        item_json: JSON = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        item = _Item(
            id=item_id,
            item=item_json,
            bytes_per_ms=bytes_per_ms(live.output_format),
            assistant_audio=message.audio,
        )
        message.item = item
        message.output_index = output_index
        message.previous_item_id = next(reversed(self._items), None)
        if record.out_of_band:
            self._oob_items[item_id] = item
        else:
            self._items[item_id] = item
        live.output.append(item_json)
        self._emit_for(
            live,
            {
                "type": "response.output_item.added",
                "response_id": record.id,
                "output_index": output_index,
                "item": dict(item_json),
            },
        )
        if not record.out_of_band:
            self._emit_for(
                live,
                {
                    "type": "conversation.item.added",
                    "previous_item_id": message.previous_item_id,
                    "item": dict(item_json),
                },
            )
        audio = message.audio
        ids = {
            "response_id": record.id,
            "item_id": item_id,
            "output_index": output_index,
            "content_index": 0,
        }
        part: JSON = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        self._emit_for(live, {"type": "response.content_part.added", **ids, "part": part})
        item_json["content"] = [
            {"type": self._content_type(audio), ("transcript" if audio else "text"): ""}
        ]

        chunk_ms = config.audio_delta_ms
        n_chunks = self._chunks(message)
        words = _WORD_RE.findall(message.text)
        per_chunk: list[list[str]] = [[] for _ in range(n_chunks)]
        for j, word in enumerate(words):
            per_chunk[min(n_chunks - 1, j * n_chunks // max(1, len(words)))].append(word)
        interval = chunk_ms / 1000 / config.realtime_factor
        send_audio = audio and not faults.silent
        frame = tone(chunk_ms, audio_format=live.output_format) if send_audio else b""
        text_type = (
            "response.output_audio_transcript.delta" if audio else "response.output_text.delta"
        )
        limit = live.max_output_tokens
        # Chunks are paced against a schedule, not by a sleep after each: on a loaded event
        # loop every wake-up comes late, and a sleep per chunk stretched a 2.6 s answer at x10
        # (0.26 s) to 12 s.  Behind schedule, the next chunk follows at once, as audio a real
        # server generates faster than it plays does.
        loop = asyncio.get_running_loop()
        due = loop.time()
        for index in range(n_chunks):
            if live.cancel_event.is_set():
                if progress.after_cancel <= 0:
                    return "cancelled"
                progress.after_cancel -= 1
            if progress.chunk >= progress.stop_at:
                return "ended_early"
            if (
                faults.stall_after_deltas is not None
                and progress.chunk >= faults.stall_after_deltas
            ):
                await live.cancel_event.wait()
                return "cancelled"
            chunk_text = sum(text_tokens(w) for w in per_chunk[index])
            audio_after = live.audio_ms_sent + (chunk_ms if send_audio else 0)
            if isinstance(limit, int) and (
                live.text_tokens + chunk_text + output_audio_tokens(audio_after) > limit
            ):
                live.out_of_tokens = True
                return "ended_early"
            for word in per_chunk[index]:
                message.transcript_sent += word
                record.text_deltas += 1
                self._emit_for(live, {"type": text_type, **ids, "delta": word})
            live.text_tokens += chunk_text
            if send_audio:
                self._send_audio(live, item, ids, frame, progress.chunk)
            progress.chunk += 1
            self._server._notifier.notify()
            if (
                faults.drop_socket_after_deltas is not None
                and progress.chunk >= faults.drop_socket_after_deltas
            ):
                self.drop()
                return "dropped"
            due += interval
            ahead = due - loop.time()
            if ahead > 0:
                await self._pause(live, ahead)
        if last:
            if faults.hold_open_s is None:
                await live.cancel_event.wait()
            elif faults.hold_open_s > 0:
                await self._pause(live, faults.hold_open_s)
        return "completed"

    def _send_audio(self, live: _Live, item: _Item, ids: JSON, frame: bytes, chunk: int) -> None:
        record = live.record
        data = make_audio_tag(record.tag, chunk) + frame[TAG_SIZE:]
        if self._server.config.stamp_audio:
            stamp = make_time_stamp(self.index, time.monotonic_ns())
            data = data[:TAG_SIZE] + stamp + data[TAG_SIZE + STAMP_SIZE :]
        self._emit_for(
            live,
            {
                "type": "response.output_audio.delta",
                **ids,
                "delta": base64.b64encode(data).decode("ascii"),
            },
        )
        self._voice_locked = True
        live.audio_ms_sent += self._server.config.audio_delta_ms
        record.audio_bytes += len(data)
        record.audio_deltas += 1
        record.last_audio_at = time.monotonic()
        if record.first_audio_at is None:
            record.first_audio_at = record.last_audio_at
        item.audio_bytes += len(data)

    def _finish_item(self, live: _Live, message: _Message, status: str) -> None:
        """The done events of one message item, which ends with ``status``."""
        item = message.item
        if item is None or message.finished:
            return
        message.finished = True
        record = live.record
        audio = message.audio
        ids = {
            "response_id": record.id,
            "item_id": item.id,
            "output_index": message.output_index,
            "content_index": 0,
        }
        text = message.transcript_sent
        if audio:
            self._emit_for(live, {"type": "response.output_audio.done", **ids})
            self._emit_for(
                live,
                {"type": "response.output_audio_transcript.done", **ids, "transcript": text},
            )
            part: JSON = {"type": "audio", "transcript": text}
        else:
            self._emit_for(live, {"type": "response.output_text.done", **ids, "text": text})
            part = {"type": "text", "text": text}
        self._emit_for(live, {"type": "response.content_part.done", **ids, "part": part})
        key = "transcript" if audio else "text"
        item.item["status"] = status
        item.item["content"] = [{"type": self._content_type(audio), key: text}]
        self._emit_for(
            live,
            {
                "type": "response.output_item.done",
                "response_id": record.id,
                "output_index": message.output_index,
                "item": dict(item.item),
            },
        )
        if not record.out_of_band:
            self._emit_for(
                live,
                {
                    "type": "conversation.item.done",
                    "previous_item_id": message.previous_item_id,
                    "item": dict(item.item),
                },
            )

    def _schedule_late(self, live: _Live) -> None:
        record = live.record
        item_id = record.item_id or openai_id("item", self._server.rng)
        ids = {"response_id": record.id, "item_id": item_id, "output_index": 0, "content_index": 0}
        chunk_ms = self._server.config.audio_delta_ms
        frame = tone(chunk_ms, audio_format=live.output_format)
        chunk = make_audio_tag(record.tag, 0xFFFF) + frame[TAG_SIZE:]
        # GA names: _emit renames them for beta sessions.  Fresh event ids: these are late
        # events, not duplicates of earlier ones.
        events: list[JSON] = [
            {
                "type": "response.output_audio.delta",
                **ids,
                "delta": base64.b64encode(chunk).decode("ascii"),
            },
            {"type": "response.output_audio_transcript.delta", **ids, "delta": " (late)"},
        ]
        if live.done_event is not None:
            stale_done = {k: v for k, v in live.done_event.items() if k != "event_id"}
            events.append(stale_done)
        delay = record.faults.late_events_delay_s
        if delay is None:
            self._pending_late.extend((event, True) for event in events)
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            for event in events:
                self._emit(event, injected=True)
            self._server._notifier.notify()

        self._spawn(later())

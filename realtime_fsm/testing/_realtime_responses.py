"""Responses of a fake Realtime connection: the single-active-response rule, cancels and the
streaming of each response's events (tool calls are delegated to :mod:`.fake_tools`)."""

from __future__ import annotations

import asyncio
import base64
import math
import re
import time
from typing import Literal

from ._conversation import JSON
from ._conversation import Item as _Item
from ._conversation import ProtocolError as _ProtocolError
from ._realtime_base import _ConnectionBase, _Live
from ._realtime_session import (
    _BETA_ONLY_RESPONSE_KEYS,
    _GA_ONLY_RESPONSE_KEYS,
    _ga_format,
    _parse_beta_format,
    _parse_ga_format,
    _validate_metadata,
)
from ._realtime_types import ReplyContext, ResponseRecord, ScriptedReply
from ._support import openai_id, settle
from .audio import (
    STAMP_SIZE,
    TAG_SIZE,
    bytes_per_ms,
    make_audio_tag,
    make_time_stamp,
    tone,
)
from .fake_tools import (
    before_client_create,
    stream_calls,
)

_WORD_RE = re.compile(r"\S+\s*|\s+")


class _ResponseHandling(_ConnectionBase):
    """``response.create`` / ``response.cancel`` and the streaming of each response."""

    def _on_response_create(self, event: JSON, client_event_id: str | None) -> None:
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise _ProtocolError(
                "invalid_type", "Invalid type for 'response': expected an object.", "response"
            )
        if self.api == "ga":
            self._reject_keys(params, _BETA_ONLY_RESPONSE_KEYS, "response")
        else:
            self._reject_keys(params, _GA_ONLY_RESPONSE_KEYS, "response")
        conversation = params.get("conversation", "auto")
        if conversation not in ("auto", "none"):
            raise _ProtocolError(
                "invalid_value",
                f"Invalid value: '{conversation}'. Supported values are: 'auto' and 'none'.",
                "response.conversation",
            )
        _validate_metadata(params.get("metadata"))
        if conversation == "auto":
            before_client_create(self)
        if conversation == "auto" and self._active is not None:
            raise _ProtocolError(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress: "
                f"{self._active.record.id}. Wait until the response is finished before "
                "creating a new one.",
            )
        self._start_response(origin="client", params=params, client_event_id=client_event_id)

    def _on_response_cancel(self, event: JSON, _eid: str | None) -> None:
        response_id = event.get("response_id")
        live = self._live.get(response_id) if response_id else self._active
        if live is None or live.record.finished:
            raise _ProtocolError(
                "response_cancel_not_active", "Cancellation failed: no active response found"
            )
        if live.cancel_reason is None:
            self._request_cancel(live, "client_cancelled")
        # A second cancel while the first is being acknowledged changes nothing.

    def _request_cancel(self, live: _Live, reason: str) -> None:
        live.cancel_reason = reason
        live.record.cancel_requested_at = time.monotonic()
        live.cancel_event.set()
        if live.pause_waiter is not None:
            settle(live.pause_waiter, True)

    def _start_response(
        self, *, origin: Literal["client", "server_vad"], params: JSON, client_event_id: str | None
    ) -> None:
        server = self._server
        config = server.config
        out_of_band = params.get("conversation") == "none"
        response_id = openai_id("resp", server.rng)
        session = self._session
        instructions = params.get("instructions")
        metadata = _validate_metadata(params.get("metadata"))
        number = server._response_number + 1
        ctx = ReplyContext(
            response_id=response_id,
            connection=self.index,
            number=number,
            origin=origin,
            out_of_band=out_of_band,
            instructions=instructions if isinstance(instructions, str) else session.instructions,
            metadata=metadata,
            last_user_text=self._last_user_text,
        )
        plan = server._tools.plan(self.index, origin, out_of_band)
        scripted = None if plan is None or plan.text is None else ScriptedReply(plan.text)
        chosen = server._next_reply(ctx, scripted)
        if chosen is None:  # ResponseFaults.ignore_create: the server goes quiet
            return
        reply, faults = chosen
        server._response_number = number
        if self.api == "ga":
            modalities = params.get("output_modalities") or session.output_modalities
            audio_out = (params.get("audio") or {}).get("output") or {}
            output_format = (
                _parse_ga_format(audio_out["format"], "response.audio.output.format")
                if "format" in audio_out
                else session.output_format
            )
            voice = audio_out.get("voice", session.voice)
            max_tokens = params.get("max_output_tokens", session.max_output_tokens)
        else:
            modalities = params.get("modalities") or session.output_modalities
            output_format = (
                _parse_beta_format(params["output_audio_format"], "response.output_audio_format")
                if "output_audio_format" in params
                else session.output_format
            )
            voice = params.get("voice", session.voice)
            max_tokens = params.get("max_response_output_tokens", session.max_output_tokens)
        audio_ms = (
            reply.audio_ms
            if reply.audio_ms is not None
            else max(config.audio_delta_ms, len(reply.text) * config.ms_per_char)
        )
        record = ResponseRecord(
            id=response_id,
            connection=self.index,
            tag=number,
            origin=origin,
            out_of_band=out_of_band,
            metadata=metadata,
            client_event_id=client_event_id if origin == "client" else None,
            text=reply.text,
            modalities=tuple(modalities),
            faults=faults,
            created_at=time.monotonic(),
            audio_bytes_per_ms=bytes_per_ms(output_format),
        )
        live = _Live(
            record=record,
            text=reply.text,
            audio_ms=audio_ms,
            output_format=output_format,
            voice=str(voice),
            max_output_tokens=max_tokens,
            tools=plan if plan is not None and plan.calls else None,
        )
        server.responses.append(record)
        self._live[response_id] = live
        if not out_of_band:
            self._active = live
        self._emit_for(live, {"type": "response.created", "response": self._render(live)})
        late, self._pending_late = self._pending_late, []
        for late_event, _ in late:
            self._emit(late_event, injected=True)
        if faults.drop_socket_after_deltas == 0:
            self.drop()
            return
        if config.rate_limits_events:
            self._emit(
                {
                    "type": "rate_limits.updated",
                    "rate_limits": [
                        {
                            "name": "requests",
                            "limit": 5000,
                            "remaining": 4999,
                            "reset_seconds": 0.012,
                        },
                        {
                            "name": "tokens",
                            "limit": 400000,
                            "remaining": 395000,
                            "reset_seconds": 0.7,
                        },
                    ],
                }
            )
        task = asyncio.get_running_loop().create_task(self._stream(live))
        live.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _render(
        self, live: _Live, *, status: str = "in_progress", reason: str | None = None
    ) -> JSON:
        record = live.record
        output: list[JSON] = [live.item.item] if live.item is not None else []
        output += live.extra_output
        details: JSON | None = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": reason}
        elif status == "incomplete":
            details = {"type": "incomplete", "reason": reason}
        elif status == "failed":
            details = {
                "type": "failed",
                "error": {
                    "type": "server_error",
                    "code": "server_error",
                    "message": "The server had an error while processing your request.",
                },
            }
        usage: JSON | None = None
        if status != "in_progress":
            out_tokens = len(live.transcript_sent.split()) * 2
            usage = {"total_tokens": out_tokens, "input_tokens": 0, "output_tokens": out_tokens}
        body: JSON = {
            "object": "realtime.response",
            "id": record.id,
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": None if record.out_of_band else self._conversation_id,
            "usage": usage,
            "metadata": record.metadata,
        }
        if self.api == "ga":
            body["output_modalities"] = list(record.modalities)
            body["max_output_tokens"] = live.max_output_tokens
            body["audio"] = {
                "output": {"format": _ga_format(live.output_format), "voice": live.voice}
            }
        else:
            body["modalities"] = list(record.modalities)
            body["max_output_tokens"] = live.max_output_tokens
            body["output_audio_format"] = live.output_format
            body["voice"] = live.voice
            body["temperature"] = self._session.temperature
        return body

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

    async def _stream(self, live: _Live) -> None:
        """Generate one response's events; ends with :meth:`_finish` unless the socket drops."""
        config = self._server.config
        record = live.record
        faults = record.faults
        audio_mode = "audio" in record.modalities
        send_audio = audio_mode and not faults.silent
        chunk_ms = config.audio_delta_ms
        n_chunks = max(1, math.ceil(live.audio_ms / chunk_ms))
        words = _WORD_RE.findall(live.text)
        per_chunk: list[list[str]] = [[] for _ in range(n_chunks)]
        for j, word in enumerate(words):
            per_chunk[min(n_chunks - 1, j * n_chunks // max(1, len(words)))].append(word)
        interval = chunk_ms / 1000 / config.realtime_factor
        frame = tone(chunk_ms, audio_format=live.output_format)
        stop_at = n_chunks if faults.outcome == "completed" else max(1, n_chunks // 2)

        if await self._pause(live, config.first_delta_delay_s) and faults.deltas_after_cancel == 0:
            await self._finish(live)
            return
        if live.tools is not None and not live.tools.preamble:  # calls only, no message item
            await stream_calls(self, live, 0)
            await self._finish(live)
            return
        item_id = openai_id("item", self._server.rng)
        record.item_id = item_id
        item_json: JSON = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        live.item = _Item(
            id=item_id,
            item=item_json,
            bytes_per_ms=bytes_per_ms(live.output_format),
            assistant_audio=audio_mode,
        )
        previous = next(reversed(self._items), None)
        if record.out_of_band:
            self._oob_items[item_id] = live.item
        else:
            self._items[item_id] = live.item
        ids = {"response_id": record.id, "item_id": item_id, "output_index": 0, "content_index": 0}
        self._emit_for(
            live,
            {
                "type": "response.output_item.added",
                "response_id": record.id,
                "output_index": 0,
                "item": dict(item_json),
            },
        )
        if not record.out_of_band:
            self._emit_for(
                live,
                {
                    "type": "conversation.item.added",
                    "previous_item_id": previous,
                    "item": dict(item_json),
                },
            )
        part_type = "audio" if audio_mode else "text"
        part: JSON = (
            {"type": part_type, "transcript": ""} if audio_mode else {"type": "text", "text": ""}
        )
        self._emit_for(live, {"type": "response.content_part.added", **ids, "part": part})
        item_json["content"] = [
            {"type": self._content_type(audio_mode), ("transcript" if audio_mode else "text"): ""}
        ]

        after_cancel_budget = faults.deltas_after_cancel
        ended_early = False
        for index in range(n_chunks):
            if live.cancel_event.is_set():
                if after_cancel_budget <= 0:
                    break
                after_cancel_budget -= 1
            if index >= stop_at:
                ended_early = True
                break
            if faults.stall_after_deltas is not None and index >= faults.stall_after_deltas:
                await live.cancel_event.wait()
                break
            for word in per_chunk[index]:
                live.transcript_sent += word
                record.text_deltas += 1
                text_type = (
                    "response.output_audio_transcript.delta"
                    if audio_mode
                    else "response.output_text.delta"
                )
                self._emit_for(live, {"type": text_type, **ids, "delta": word})
            if send_audio:
                chunk = make_audio_tag(record.tag, index) + frame[TAG_SIZE:]
                if config.stamp_audio:
                    stamp = make_time_stamp(self.index, time.monotonic_ns())
                    chunk = chunk[:TAG_SIZE] + stamp + chunk[TAG_SIZE + STAMP_SIZE :]
                self._emit_for(
                    live,
                    {
                        "type": "response.output_audio.delta",
                        **ids,
                        "delta": base64.b64encode(chunk).decode("ascii"),
                    },
                )
                record.audio_bytes += len(chunk)
                record.audio_deltas += 1
                record.last_audio_at = time.monotonic()
                if record.first_audio_at is None:
                    record.first_audio_at = record.last_audio_at
                live.item.audio_bytes += len(chunk)
            self._server._notifier.notify()
            if (
                faults.drop_socket_after_deltas is not None
                and index + 1 >= faults.drop_socket_after_deltas
            ):
                self.drop()
                return
            await self._pause(live, interval)
        else:
            if faults.hold_open_s is None:
                await live.cancel_event.wait()
            elif faults.hold_open_s > 0:
                await self._pause(live, faults.hold_open_s)
        if live.tools is not None and not ended_early and not live.cancel_event.is_set():
            self._finish_item(live, "completed")  # the preamble, then the calls
            await stream_calls(self, live, 1)
        await self._finish(live, ended_early=ended_early)

    async def _finish(self, live: _Live, *, ended_early: bool = False) -> None:
        record = live.record
        faults = record.faults
        if live.cancel_reason is not None:
            status, reason = "cancelled", live.cancel_reason
            if faults.cancel_ack_delay_s > 0:
                await asyncio.sleep(faults.cancel_ack_delay_s)
        elif ended_early and faults.outcome == "incomplete":
            status, reason = "incomplete", "max_output_tokens"
        elif ended_early and faults.outcome == "failed":
            status, reason = "failed", None
        else:
            status, reason = "completed", None
        if live.item is not None and not live.item_finished:
            self._finish_item(live, "completed" if status == "completed" else "incomplete")
        record.status = status
        record.reason = reason
        record.done_at = time.monotonic()
        done: JSON = {
            "type": "response.done",
            "response": self._render(live, status=status, reason=reason),
        }
        live.done_event = done
        if self._active is live:
            self._active = None
        self._live.pop(record.id, None)
        if not faults.drop_done:
            record.done_sent = True
            self._emit_for(live, done)
        if faults.late_events:
            self._schedule_late(live)
        self._server._notifier.notify()
        if self._server_create_pending and self._active is None:
            self._server_create_pending = False
            self._start_response(origin="server_vad", params={}, client_event_id=None)

    def _finish_item(self, live: _Live, status: str) -> None:
        """The done events of the response's message item, which end with ``status``."""
        item = live.item
        if item is None:
            return
        live.item_finished = True
        record = live.record
        audio_mode = "audio" in record.modalities
        ids = {
            "response_id": record.id,
            "item_id": item.id,
            "output_index": 0,
            "content_index": 0,
        }
        text = live.transcript_sent
        if audio_mode:
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
        key = "transcript" if audio_mode else "text"
        item.item["status"] = status
        item.item["content"] = [{"type": self._content_type(audio_mode), key: text}]
        self._emit_for(
            live,
            {
                "type": "response.output_item.done",
                "response_id": record.id,
                "output_index": 0,
                "item": dict(item.item),
            },
        )
        if not record.out_of_band:
            self._emit_for(
                live,
                {
                    "type": "conversation.item.done",
                    "previous_item_id": None,
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

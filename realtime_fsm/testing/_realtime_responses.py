"""Responses of a fake Realtime connection: the single-active-response rule, cancels, how each
response starts (its reply, context and limits) and how it ends (status, ``usage``).  What it
says while it runs is streamed by :mod:`._realtime_streaming`; tool calls by
:mod:`.fake_tools`.

``max_output_tokens`` (session, or per ``response.create``) is enforced on the token model of
:mod:`._realtime_usage`: the delta that would pass the limit is not sent, the item being said
ends ``incomplete`` with the audio and transcript sent so far, no later item is added, and
``response.done`` says ``incomplete`` / ``max_output_tokens``.

Reasoning models (``gpt-realtime-2*``) "think before they speak": with
``FakeRealtimeConfig.reasoning_delay_s`` set, a response stays silent that long (scaled by its
``reasoning.effort``) between ``response.created`` and its first output item; a cancel in the
gap ends it ``cancelled`` with no output, as when the caller interrupts mid-thought.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from ._conversation import JSON
from ._conversation import Item as _Item
from ._conversation import ProtocolError as _ProtocolError
from ._realtime_base import _Live, _Message
from ._realtime_params import BETA_RESPONSE, GA_RESPONSE, check_keys, check_max_output_tokens
from ._realtime_session import (
    REASONING_MODEL_PREFIX,
    _ga_format,
    _parse_beta_format,
    _parse_ga_format,
    _validate_metadata,
)
from ._realtime_streaming import _ItemStreaming
from ._realtime_types import Origin, ReplyContext, ResponseRecord, ScriptedReply
from ._realtime_usage import InputTokens, context_tokens, render_usage
from ._support import openai_id, settle
from .audio import bytes_per_ms
from .fake_tools import before_client_create

#: ``reasoning.effort`` -> multiple of ``FakeRealtimeConfig.reasoning_delay_s`` (``medium``).
EFFORT_SCALE = {"minimal": 0.25, "low": 0.5, "medium": 1.0, "high": 2.0, "xhigh": 4.0}
#: The effort assumed when none is set (third-party pages say ``low``; the types state none).
DEFAULT_EFFORT = "low"


class _ResponseHandling(_ItemStreaming):
    """``response.create`` / ``response.cancel``, and the start and end of each response."""

    def _on_response_create(self, event: JSON, client_event_id: str | None) -> None:
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise _ProtocolError(
                "invalid_type", "Invalid type for 'response': expected an object.", "response"
            )
        self._check_response_params(params)
        conversation = params.get("conversation", "auto")
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

    def _check_response_params(self, params: JSON) -> None:
        """The real server's checks of ``response.create``'s ``response``, before anything."""
        if self.api == "ga":
            check_keys(params, GA_RESPONSE, "response")
            audio_out = (params.get("audio") or {}).get("output") or {}
            if "format" in audio_out:
                _parse_ga_format(audio_out["format"], "response.audio.output.format")
            if "max_output_tokens" in params:
                check_max_output_tokens(params["max_output_tokens"], "response.max_output_tokens")
        else:
            check_keys(params, BETA_RESPONSE, "response")
            if "output_audio_format" in params:
                _parse_beta_format(params["output_audio_format"], "response.output_audio_format")
            if "max_response_output_tokens" in params:
                check_max_output_tokens(
                    params["max_response_output_tokens"], "response.max_response_output_tokens"
                )
        conversation = params.get("conversation", "auto")
        if conversation not in ("auto", "none"):
            raise _ProtocolError(
                "invalid_value",
                f"Invalid value: '{conversation}'. Supported values are: 'auto' and 'none'.",
                "response.conversation",
            )
        _validate_metadata(params.get("metadata"))

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

    def _start_response(self, *, origin: Origin, params: JSON, client_event_id: str | None) -> None:
        server = self._server
        config = server.config
        out_of_band = params.get("conversation") == "none"
        response_id = openai_id("resp", server.rng)
        session = self._session
        instructions = params.get("instructions")
        instructions = instructions if isinstance(instructions, str) else session.instructions
        metadata = _validate_metadata(params.get("metadata"))
        number = server._response_number + 1
        ctx = ReplyContext(
            response_id=response_id,
            connection=self.index,
            number=number,
            origin=origin,
            out_of_band=out_of_band,
            instructions=instructions,
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
        tools = plan if plan is not None and plan.calls else None
        messages = [] if tools is not None and not tools.preamble else self._messages(reply, record)
        context = self._context(params, instructions)
        live = _Live(
            record=record,
            output_format=output_format,
            voice=voice,
            max_output_tokens=max_tokens,
            messages=messages,
            context=context.after(None if out_of_band else self._last_context),
            reasoning_delay_s=self._reasoning_delay(params),
            tools=tools,
        )
        record.reasoning_delay_s = live.reasoning_delay_s
        server.responses.append(record)
        self._live[response_id] = live
        if not out_of_band:
            self._active = live
            self._last_context = context
            self._idle_from_ms = None  # a new response: the idle timer restarts at its end
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

    def _messages(self, reply: ScriptedReply, record: ResponseRecord) -> list[_Message]:
        """The message items ``reply`` is said as (one, or ``reply.items``)."""
        config = self._server.config
        audio_mode = "audio" in record.modalities

        def length(text: str, audio_ms: int | None) -> int:
            if audio_ms is not None:
                return audio_ms
            return max(config.audio_delta_ms, len(text) * config.ms_per_char)

        if not reply.items:
            return [_Message(reply.text, audio_mode, length(reply.text, reply.audio_ms))]
        return [
            _Message(i.text, audio_mode and i.modality == "audio", length(i.text, i.audio_ms))
            for i in reply.items
        ]

    def _context(self, params: JSON, instructions: str) -> InputTokens:
        """The input of a response: the conversation, or ``response.input`` when given."""
        raw_input = params.get("input")
        items: Iterable[_Item]
        if isinstance(raw_input, list):
            picked: list[_Item] = []
            for entry in raw_input:
                if not isinstance(entry, dict):
                    continue
                if entry.get("type") == "item_reference":
                    found = self._items.get(str(entry.get("id")))
                    if found is not None:
                        picked.append(found)
                else:
                    picked.append(_Item(id=str(entry.get("id", "")), item=entry))
            items = picked
        else:
            items = self._items.values()
        return context_tokens(instructions, self._session.tools, items)

    def _reasoning_delay(self, params: JSON) -> float:
        """The silent gap before the first output item (reasoning models only)."""
        base = self._server.config.reasoning_delay_s
        if base <= 0 or not self._session.model.startswith(REASONING_MODEL_PREFIX):
            return 0.0
        reasoning = params.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
        effort = effort or self._session.reasoning_effort or DEFAULT_EFFORT
        return base * EFFORT_SCALE.get(str(effort), 1.0)

    def _render(
        self, live: _Live, *, status: str = "in_progress", reason: str | None = None
    ) -> JSON:
        record = live.record
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
        body: JSON = {
            "object": "realtime.response",
            "id": record.id,
            "status": status,
            "status_details": details,
            "output": list(live.output),
            "conversation_id": None if record.out_of_band else self._conversation_id,
            "usage": record.usage if status != "in_progress" else None,
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

    async def _finish(self, live: _Live, *, ended_early: bool = False) -> None:
        record = live.record
        faults = record.faults
        if live.cancel_reason is not None:
            status, reason = "cancelled", live.cancel_reason
            if faults.cancel_ack_delay_s > 0:
                await asyncio.sleep(faults.cancel_ack_delay_s)
        elif ended_early and (live.out_of_tokens or faults.outcome == "incomplete"):
            status, reason = "incomplete", "max_output_tokens"
        elif ended_early and faults.outcome == "failed":
            status, reason = "failed", None
        else:
            status, reason = "completed", None
        for message in live.messages:
            self._finish_item(live, message, "completed" if status == "completed" else "incomplete")
        record.status = status
        record.reason = reason
        record.done_at = time.monotonic()
        record.usage = render_usage(live.context, live.text_tokens, live.audio_tokens)
        done: JSON = {
            "type": "response.done",
            "response": self._render(live, status=status, reason=reason),
        }
        live.done_event = done
        if self._active is live:
            self._active = None
            if not self._speaking:
                # Idle timeout: playback is estimated to end this response's audio later.
                self._idle_from_ms = self._audio_ms + live.audio_ms_sent
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

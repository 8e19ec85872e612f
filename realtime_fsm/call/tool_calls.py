"""Function calling through the machine: the model's calls out, the tools' outputs in.

The rules (``../shared/reference/openai-realtime.md`` §11, and what peers got wrong):

* only a ``function_call`` item whose ``status`` is ``completed`` is run: a barge-in can cut
  one off mid-arguments, and its JSON is then a fragment;
* an output goes in at once as a ``function_call_output`` item (``conversation.item.create``
  is not gated by the response slot), but the follow-up ``response.create`` is a request to
  the response machine like any other: queued while anything holds the slot (the calling
  response until its ``response.done``, a server VAD response, a cancel), coalesced with the
  rest, never a second create into a busy slot;
* parallel calls of one response are answered with one request, when the last is answered;
* a response the server creates (its VAD, the caller talking) *after* the server added every
  output of the round answers with them in view: the queued follow-up is withdrawn, so the
  caller does not hear the answer twice;
* a call nobody answers within ``tool_timeout`` gets an error output, so the model can
  recover; call ids live in one session, so a lost session's open calls are dropped.
"""

from __future__ import annotations

import json
from typing import Final

from .. import events as ev
from ..commands import META_REASON
from ..errors import LocalProtocolError
from ..logsafe import safe
from ..openai_realtime import dumps, render_function_call_output
from . import app_events as ae
from .fields import OpenCall, log
from .rotation import SessionRotation

#: The reason of the request that asks for the model's answer after its tool calls.
TOOL_REASON: Final = "tool"
#: How long past a tool's timeout the call waits for its runner before answering itself.
TOOL_GRACE_S: Final = 1.0
#: Answered call ids remembered per session, so a call reported twice is run once.
MAX_ANSWERED_CALLS: Final = 64


class ToolCalls(SessionRotation):
    """The call's tool-call ledger and its two operations."""

    def function_call_done(
        self, response_id: str, call_id: str, name: str, arguments: str, status: str | None
    ) -> None:
        """A ``function_call`` output item is done (``response.output_item.done``)."""
        if not call_id or status != "completed":
            log.info(
                "call=%s tool call %s (%s) ended %s: not run",
                self.call_label,
                safe(call_id or "-"),
                safe(name),
                safe(status),
            )
            return
        if call_id in self._open_calls or call_id in self._answered_calls:
            return  # the same item reported twice: one call, run once
        call = ae.ToolCall(call_id=call_id, name=name, arguments=arguments, response_id=response_id)
        self.report.tool_calls += 1
        # A driver's runner is bounded by the tool's own timeout (or ``tool_timeout``); the call
        # itself answers a second after that, for a tool nobody runs or a runner that hangs.
        timeout = self.config.tool_timeout
        for spec in self.config.tools:
            if spec.name == name:
                timeout = getattr(spec, "timeout", None) or timeout
        deadline = self._now + timeout + TOOL_GRACE_S
        self._open_calls[call_id] = OpenCall(call, self._now, deadline)
        self._tool_rounds.setdefault(response_id, []).append(call_id)
        log.info("call=%s tool call %s: %s", self.call_label, safe(call_id), safe(name))
        self.tool_calls.append(call)
        if self.emit_events:
            self.events.append(call)

    def submit_tool_output(
        self, call_id: str, output: str, now: float, *, respond: bool = True, ok: bool = True
    ) -> None:
        """The answer to tool call ``call_id``: sent now as a ``function_call_output`` item;
        when it is the last open call of its response and any of them asked to ``respond``,
        the model is asked to answer (through the response machine).

        :class:`~realtime_fsm.errors.LocalProtocolError` for a call id this session does not
        have open (never made, already answered, or made on a session since lost: the new
        one does not know its id); :class:`~realtime_fsm.errors.CallNotActive` when the call
        is not running."""
        if not isinstance(output, str):
            raise TypeError(f"a tool output is a string, got {type(output).__name__}")
        self._check_active()
        self._advance(now)
        open_call = self._open_calls.pop(call_id, None)
        if open_call is None:
            raise LocalProtocolError(f"no open tool call {call_id!r} on this session")
        answered = self._answered_calls
        answered[call_id] = None
        if len(answered) > MAX_ANSWERED_CALLS:
            del answered[next(iter(answered))]
        call = open_call.call
        if not ok:
            self.report.tool_failures += 1
        event_id = self.mint_id("tool")
        self.out_openai.append(
            dumps(render_function_call_output(call_id, output, event_id=event_id))
        )
        took = self._now - open_call.made_at
        log.info(
            "call=%s tool output for %s (%s) sent: ok=%s after %.3fs",
            self.call_label,
            safe(call_id),
            safe(call.name),
            ok,
            took,
        )
        if self.emit_events:
            self.events.append(ae.ToolResult(call_id, call.name, ok, took))
        self._round_unconfirmed.add(call_id)
        rid = call.response_id
        if rid in self._tool_rounds:
            self._round_wants_response[rid] = self._round_wants_response.get(rid, False) or respond
            self._maybe_follow_up(rid)

    def _maybe_follow_up(self, response_id: str) -> None:
        """One request for a round: once its response is done (no more calls can come) and
        every call of it is answered."""
        round_ = self._tool_rounds[response_id]
        if response_id not in self._rounds_closed or any(c in self._open_calls for c in round_):
            return
        del self._tool_rounds[response_id]
        self._rounds_closed.discard(response_id)
        if self._round_wants_response.pop(response_id, False):
            self._follow_up_queued = True
            self.handle_event(ev.RequestResponse(reason=TOOL_REASON))

    def output_item_added(self, call_id: str) -> None:
        """The server added a ``function_call_output`` of ours to the conversation."""
        self._round_unconfirmed.discard(call_id)

    def _server_response_began(self) -> None:
        """A response the server created began: if it came after every output of ours was in
        the conversation, it answers them, and a follow-up still queued is withdrawn."""
        if not self._follow_up_queued or self._round_unconfirmed:
            return
        machine = self.machine
        assert machine is not None
        if machine.withdraw(TOOL_REASON):
            log.info(
                "call=%s tool follow-up withdrawn: a server response answers the outputs",
                self.call_label,
            )
        self._follow_up_queued = False

    def _response_done(self, event: ev.ResponseDone) -> None:
        super()._response_done(event)
        if event.response_id in self._tool_rounds:
            self._rounds_closed.add(event.response_id)
            self._maybe_follow_up(event.response_id)

    def _response_created(self, event: ev.ResponseCreated) -> None:
        super()._response_created(event)
        reasons = event.metadata.get(META_REASON)
        if reasons is None:
            if not event.out_of_band:
                self._server_response_began()
        elif TOOL_REASON in reasons.split("+"):
            self._follow_up_queued = False  # ours answers them

    def expire_tool_calls(self) -> None:
        """Calls past their deadline get an error output the model can recover from."""
        now = self._now
        late = [c for c in self._open_calls.values() if c.deadline <= now]
        for open_call in late:
            call = open_call.call
            log.warning(
                "call=%s tool call %s (%s) unanswered after %.1fs: error output sent",
                self.call_label,
                safe(call.call_id),
                safe(call.name),
                self.config.tool_timeout,
            )
            error = {"error": f"{call.name} did not answer in time"}
            self.submit_tool_output(call.call_id, json.dumps(error), now, ok=False)

"""Function calling for the fake Realtime server: scripted tool calls, their outputs, the races.

Why it exists: tool turns are where a bridge's single-response bookkeeping breaks (reference
``openai-realtime.md`` §11.2).  The response that calls a tool is still active until its
``response.done``; the client must add one ``function_call_output`` per completed call and then
send *one* ``response.create``; and server VAD may create a response of its own meanwhile, so
the client's create is rejected with ``conversation_already_has_active_response``.  A bridge can
only be tested against those rules with a server that calls tools, checks the outputs the way
the real one does and can be made to race.

What it models (the protocol as documented in §11.1 and the ``openai.types.realtime`` types):

* A :class:`ToolCallRule` matched against the caller's latest input (the transcript of the
  committed audio turn, or the text of a user message item) turns the next response into
  ``[preamble message?] + function_call item(s)``: for each call ``response.output_item.added``
  (``status: in_progress``, ``arguments: ""``), ``conversation.item.added``,
  ``response.function_call_arguments.delta`` (several), ``.done`` (with ``name``),
  ``response.output_item.done`` and ``conversation.item.done``; ``response.done`` lists every
  item.  On a cancel the item being streamed ends ``incomplete`` with the arguments sent so far
  (the done events are "also emitted when a Response is interrupted ... or cancelled"), and
  the calls not yet started are never added.
* A ``function_call_output`` item is accepted only for a ``call_id`` of a ``function_call``
  item in this session's conversation (beta ``ConversationItem.call_id``: "the server will check
  that a ``function_call`` item with the same ID exists"), once, with a string ``output``.
* The first response after every completed call of a tool turn has its output (a client
  create, or one by server VAD) says the rule's ``then_reply``.

The server's modules call in through a few hooks (``ToolScript.note_user_input`` and
``ToolScript.plan``, ``stream_calls``, ``accept_output``, ``before_client_create``); this module
reaches into the connection only through the private helpers its own handlers use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import attrs

from ._conversation import JSON, Item, ProtocolError
from ._support import openai_id

if TYPE_CHECKING:
    from ._realtime_base import _Live
    from ._realtime_responses import _ResponseHandling
    from ._realtime_streaming import _ItemStreaming

__all__ = [
    "ToolCallRecord",
    "ToolCallRule",
    "ToolOutput",
    "ToolPlan",
    "ToolScript",
    "ToolScripting",
]

#: Characters of the arguments JSON per ``response.function_call_arguments.delta``.
ARGUMENT_CHUNK_CHARS = 8


class ToolOutput(NamedTuple):
    """A ``function_call_output`` the server accepted."""

    call_id: str
    name: str
    output: str


@attrs.define(eq=False)
class ToolCallRecord:
    """One ``function_call`` item the server emitted, updated as it streams."""

    call_id: str
    item_id: str
    name: str
    #: The arguments streamed so far (the whole JSON once ``status`` is ``completed``).
    arguments: str
    response_id: str
    connection: int
    status: Literal["in_progress", "completed", "incomplete"] = "in_progress"


def _arguments_json(arguments: Mapping[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(dict(arguments))


@attrs.frozen
class ToolCallRule:
    """When the caller's latest input matches ``when``, the next response calls ``calls``."""

    when: str | re.Pattern[str] | Callable[[str], bool]
    #: ``(name, arguments JSON)`` per call, in output order (several = parallel tool calls).
    calls: tuple[tuple[str, str], ...]
    #: Spoken before the calls, as an audio message item of the same response.
    preamble: str | None = None
    #: What the response after the outputs says; a callable gets the outputs' strings in call
    #: order.  ``None``: the server's usual reply (queue, reply source or default).
    then_reply: str | Callable[[list[str]], str] | None = None
    #: How many user inputs it may fire on; ``None`` = every matching one.
    times: int | None = 1

    def matches(self, text: str) -> bool:
        when = self.when
        if isinstance(when, str):
            return re.search(when, text, re.IGNORECASE) is not None
        if isinstance(when, re.Pattern):
            return when.search(text) is not None
        return bool(when(text))


@attrs.frozen
class ToolPlan:
    """What :func:`plan_response` decided for one response."""

    #: The message text (preamble or ``then_reply``); ``None``: the server's usual reply.
    text: str | None
    #: Calls to stream after the message (if any); empty for a ``then_reply`` answer.
    calls: tuple[tuple[str, str], ...] = ()
    #: Whether the response opens with a message item (a preamble) before its calls.
    preamble: bool = False
    #: The rule's ``then_reply``, for the answer to these calls' outputs.
    then_reply: str | Callable[[list[str]], str] | None = None


@attrs.define(eq=False)
class _Turn:
    """The calls of one response and whether the answer to their outputs was given."""

    connection: int
    calls: list[ToolCallRecord]
    then_reply: str | Callable[[list[str]], str] | None
    answered: bool = False


@attrs.define(eq=False)
class _RuleState:
    rule: ToolCallRule
    left: int | None


class ToolScript:
    """Server-wide tool scripting state: rules, what was called and answered, the race knob."""

    def __init__(self) -> None:
        self.rules: list[_RuleState] = []
        self.calls: list[ToolCallRecord] = []
        self.outputs: list[ToolOutput] = []
        self.responses_before_outputs = 0
        self.race_next_create = False
        self.race_with_speech = True
        self._turns: list[_Turn] = []
        #: Per connection: (serial of the latest user input, its text).
        self._inputs: dict[int, tuple[int, str]] = {}
        #: Per connection: the serial of the input a rule last fired on.
        self._fired: dict[int, int] = {}
        self._serial = 0

    def note_user_input(self, connection: int, text: str) -> None:
        """The caller said or typed ``text``: the input the next rule is matched against."""
        self._serial += 1
        self._inputs[connection] = (self._serial, text)

    def plan(self, connection: int, origin: str, out_of_band: bool) -> ToolPlan | None:
        """The tool part of a new response, or None for an ordinary one."""
        if out_of_band:  # an out-of-band response neither answers outputs nor calls tools
            return None
        outputs = {o.call_id: o.output for o in self.outputs}
        waiting = False
        for turn in self._turns:
            if turn.connection != connection or turn.answered:
                continue
            done = [c for c in turn.calls if c.status == "completed"]
            missing = [c for c in done if c.call_id not in outputs]
            if missing or any(c.status == "in_progress" for c in turn.calls):
                waiting = waiting or bool(missing)
                continue
            given = [outputs[c.call_id] for c in turn.calls if c.call_id in outputs]
            if not given:  # every call was cut short and none was answered: nothing to say
                continue
            turn.answered = True
            then = turn.then_reply
            return ToolPlan(text=then(given) if callable(then) else then)
        if waiting and origin == "client":
            self.responses_before_outputs += 1
        latest = self._inputs.get(connection)
        if latest is None or self._fired.get(connection) == latest[0]:
            return None
        for state in self.rules:
            if state.left == 0 or not state.rule.matches(latest[1]):
                continue
            if state.left is not None:
                state.left -= 1
            self._fired[connection] = latest[0]
            rule = state.rule
            preamble = rule.preamble is not None
            return ToolPlan(
                text=rule.preamble or "",
                calls=rule.calls,
                preamble=preamble,
                then_reply=rule.then_reply,
            )
        return None

    def open_turn(self, connection: int, plan: ToolPlan) -> _Turn | None:
        """Remember a calling response's calls, to answer their outputs later."""
        if not plan.calls:
            return None
        turn = _Turn(connection=connection, calls=[], then_reply=plan.then_reply)
        self._turns.append(turn)
        return turn


# --- hooks called by the server ---------------------------------------------------------------


def accept_output(conn: _ResponseHandling, raw: JSON) -> None:
    """Check a ``function_call_output`` item as the real server does, and record it.

    Raises the server's error (and adds nothing) for a missing or unknown ``call_id``, a second
    output for the same call, or an ``output`` that is not a string.
    """
    call_id = raw.get("call_id")
    if not isinstance(call_id, str):
        raise ProtocolError(
            "missing_required_parameter",
            "Missing required parameter: 'item.call_id'.",
            "item.call_id",
        )
    output = raw.get("output")
    if not isinstance(output, str):
        raise ProtocolError(
            "invalid_type",
            f"Invalid type for 'item.output': expected a string, but got {type(output).__name__}"
            " instead.",
            "item.output",
        )
    items = [i.item for i in conn._items.values()]
    call = next(
        (i for i in items if i.get("type") == "function_call" and i.get("call_id") == call_id),
        None,
    )
    if call is None:
        # The observed message (reference §4); its code was not captured, so none is invented.
        raise ProtocolError(None, f"Tool call ID '{call_id}' not found in conversation.")
    if any(i.get("type") == "function_call_output" and i.get("call_id") == call_id for i in items):
        raise ProtocolError(None, f"Tool call ID '{call_id}' already has an output.")
    conn._server._tools.outputs.append(ToolOutput(call_id, str(call.get("name", "")), output))


def before_client_create(conn: _ResponseHandling) -> None:
    """The race knob: start a server-VAD response just before the client's create is handled,
    so the create meets the real ``conversation_already_has_active_response``."""
    script = conn._server._tools
    if not script.race_next_create:
        return
    script.race_next_create = False
    if conn._active is not None:
        return  # the slot is taken already: the create loses without help
    if script.race_with_speech:
        item_id = openai_id("item", conn._server.rng)
        end_ms = conn._audio_ms
        start = {"audio_start_ms": max(0, end_ms - 100), "item_id": item_id}
        conn._emit({"type": "input_audio_buffer.speech_started", **start})
        conn._emit(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": end_ms,
                "item_id": item_id,
            }
        )
        conn._commit(item_id, 100)
    conn._start_response(origin="server_vad", params={}, client_event_id=None)


async def stream_calls(conn: _ItemStreaming, live: _Live, first_index: int) -> None:
    """Stream the planned calls of ``live`` as ``function_call`` items from ``first_index``."""
    plan = live.tools
    if plan is None:
        return
    turn = conn._server._tools.open_turn(conn.index, plan)
    budget = live.record.faults.stall_after_deltas if not plan.preamble else None
    for offset, (name, arguments) in enumerate(plan.calls):
        if live.cancel_event.is_set():
            return
        record = await _stream_call(conn, live, first_index + offset, name, arguments, budget)
        budget = None
        if turn is not None:
            turn.calls.append(record)


async def _stream_call(
    conn: _ItemStreaming,
    live: _Live,
    index: int,
    name: str,
    arguments: str,
    stall_after: int | None,
) -> ToolCallRecord:
    server = conn._server
    response_id = live.record.id
    item_id = openai_id("item", server.rng)
    call_id = openai_id("call", server.rng)[:21]
    item: JSON = {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": "in_progress",
        "call_id": call_id,
        "name": name,
        "arguments": "",
    }
    record = ToolCallRecord(call_id, item_id, name, "", response_id, conn.index)
    server._tools.calls.append(record)
    previous = next(reversed(conn._items), None)
    conn._items[item_id] = Item(id=item_id, item=item)
    live.output.append(item)
    conn._emit_for(
        live,
        {
            "type": "response.output_item.added",
            "response_id": response_id,
            "output_index": index,
            "item": dict(item),
        },
    )
    conn._emit_for(
        live, {"type": "conversation.item.added", "previous_item_id": previous, "item": dict(item)}
    )
    ids = {"response_id": response_id, "item_id": item_id, "output_index": index}
    interval = server.config.audio_delta_ms / 1000 / server.config.realtime_factor
    chunks = [
        arguments[i : i + ARGUMENT_CHUNK_CHARS]
        for i in range(0, len(arguments), ARGUMENT_CHUNK_CHARS)
    ] or [""]
    for n, chunk in enumerate(chunks):
        if live.cancel_event.is_set():
            break
        if stall_after is not None and n >= stall_after:
            await live.cancel_event.wait()
            break
        record.arguments += chunk
        conn._emit_for(
            live,
            {
                "type": "response.function_call_arguments.delta",
                **ids,
                "call_id": call_id,
                "delta": chunk,
            },
        )
        server._notifier.notify()
        await conn._pause(live, interval)
    # Cut short (a cancel, or a stall ended by one): the arguments are a fragment.
    status: Literal["completed", "incomplete"] = (
        "completed" if record.arguments == arguments else "incomplete"
    )
    item["arguments"] = record.arguments
    item["status"] = record.status = status
    conn._emit_for(
        live,
        {
            "type": "response.function_call_arguments.done",
            **ids,
            "call_id": call_id,
            "name": name,
            "arguments": record.arguments,
        },
    )
    conn._emit_for(
        live,
        {
            "type": "response.output_item.done",
            "response_id": response_id,
            "output_index": index,
            "item": dict(item),
        },
    )
    conn._emit_for(
        live, {"type": "conversation.item.done", "previous_item_id": previous, "item": dict(item)}
    )
    server._notifier.notify()
    return record


# --- the public face, mixed into FakeRealtimeServer --------------------------------------------


class ToolScripting:
    """Tool-call scripting methods of :class:`~realtime_fsm.testing.FakeRealtimeServer`."""

    _tools: ToolScript

    def script_tool_call(
        self,
        when: str | re.Pattern[str] | Callable[[str], bool],
        name: str | None = None,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        calls: Sequence[tuple[str, Mapping[str, Any] | str]] | None = None,
        preamble: str | None = None,
        then_reply: str | Callable[[list[str]], str] | None = None,
        times: int | None = 1,
    ) -> ToolCallRule:
        """Make the next response after a matching caller input call a tool (or several).

        ``when`` is matched against the caller's latest input: the transcript of the committed
        audio turn (the queued transcript, taken at commit time as the model "hears" the turn)
        or the text of a user message item.  Give one call as ``name`` / ``arguments`` (a dict
        or a raw JSON string, sent as is), or several as ``calls=[(name, arguments), ...]``
        (parallel tool calls, one response).  ``preamble``: an audio message spoken first, in
        the same response.  ``then_reply``: what the first response after all outputs says.
        Rules are tried in the order added; a rule fires at most once per user input.
        """
        if (name is None) == (calls is None):
            raise ValueError("give either name (and arguments) or calls")
        if calls is None:
            assert name is not None
            calls = [(name, arguments if arguments is not None else {})]
        if not calls:
            raise ValueError("calls must not be empty")
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None, got {times}")
        rule = ToolCallRule(
            when=when,
            calls=tuple((n, _arguments_json(a)) for n, a in calls),
            preamble=preamble,
            then_reply=then_reply,
            times=times,
        )
        self._tools.rules.append(_RuleState(rule, times))
        return rule

    def race_vad_on_next_create(self, *, speech: bool = True) -> None:
        """When the next client ``response.create`` arrives, start a server-VAD response first.

        As if the caller had just finished a turn (``speech``: ``speech_started``,
        ``speech_stopped``, ``committed`` and the user item are sent first), so the client's
        create gets the real ``conversation_already_has_active_response``: the "VAD response
        races the follow-up create after a tool" pattern (reference §11.2, 2).  Nothing extra
        happens if a response already holds the slot.
        """
        self._tools.race_next_create = True
        self._tools.race_with_speech = speech

    @property
    def tool_calls(self) -> list[ToolCallRecord]:
        """Every ``function_call`` item emitted, in order."""
        return self._tools.calls

    @property
    def tool_outputs(self) -> list[ToolOutput]:
        """Every ``function_call_output`` accepted, in order: ``(call_id, name, output)``."""
        return self._tools.outputs

    @property
    def responses_before_outputs(self) -> int:
        """Client ``response.create``s served while a completed call still had no output: a
        client asking too early (the model answers without the tool's result)."""
        return self._tools.responses_before_outputs

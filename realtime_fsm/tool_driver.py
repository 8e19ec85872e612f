"""The asyncio driver's tool runner: the tool calls a :class:`~realtime_fsm.call.CallSession`
reports are run off the reading loops, each in its own task, and their outputs fed back.

A call whose name has a :class:`~realtime_fsm.tools.Tool` in ``BridgeConfig.tools`` is run
here (:func:`~realtime_fsm.tool_runner.run_tool`: bounded, errors become outputs the model can
recover from).  Any other call is the application's: it hears a
:class:`~realtime_fsm.call.ToolCall` event and answers with :meth:`submit_tool_output`; with no
application listening, the call gets an "unknown tool" output at once rather than the timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .call import CallSession, ToolCall
from .errors import CallNotActive, LocalProtocolError
from .logsafe import safe
from .tool_runner import run_tool
from .tools import Tool

if TYPE_CHECKING:
    from .call import BridgeConfig

log = logging.getLogger("realtime_fsm.tools")


class ToolDriver:
    """Mixin of :class:`~realtime_fsm.bridge.CallBridge`: runs tools, takes their outputs."""

    session: CallSession
    config: BridgeConfig
    clock: Callable[[], float]
    _events: asyncio.Queue[Any] | None

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._register_tools()
        self._tool_tasks: set[asyncio.Task[None]] = set()

    def _register_tools(self) -> None:
        self._tools = {tool.name: tool for tool in self.config.tools if isinstance(tool, Tool)}

    def submit_tool_output(self, call_id: str, output: str, *, respond: bool = True) -> None:
        """Answer tool call ``call_id`` (from a :class:`~realtime_fsm.call.ToolCall` event)
        with ``output`` (free text, JSON by convention).  ``respond``: ask the model to answer
        once every call of that response has its output (one request for all of them, queued
        behind whatever holds the response slot).  Raises
        :class:`~realtime_fsm.errors.LocalProtocolError` for a call id not open on the current
        session, :class:`~realtime_fsm.errors.CallNotActive` when the call is over."""
        self.session.submit_tool_output(call_id, output, self.clock(), respond=respond)
        self._after()

    def _after(self) -> None:  # pragma: no cover - CallBridge's
        raise NotImplementedError

    def _start_tools(self, calls: list[ToolCall]) -> None:
        taken = calls[:]
        calls.clear()
        for call in taken:
            tool = self._tools.get(call.name)
            if tool is None and self._events is not None:
                continue  # the application's: it hears the ToolCall event
            task = asyncio.create_task(self._run(tool, call), name=f"tool:{call.name}")
            self._tool_tasks.add(task)
            task.add_done_callback(self._tool_tasks.discard)

    async def _run(self, tool: Tool | None, call: ToolCall) -> None:
        outcome = await run_tool(
            tool, call.name, call.arguments, default_timeout=self.config.tool_timeout
        )
        try:
            self.session.submit_tool_output(
                call.call_id, outcome.output, self.clock(), ok=outcome.ok
            )
        except (LocalProtocolError, CallNotActive) as exc:
            # The session that made the call is gone (its ids with it), or the call ended.
            log.info(
                "call=%s output of tool call %s (%s) not delivered: %s",
                self.session.call_label,
                safe(call.call_id),
                safe(call.name),
                safe(exc),
            )
            return
        self._after()

    def _cancel_tools(self) -> None:
        for task in list(self._tool_tasks):
            task.cancel()

"""Running one function-tool call: the asyncio edge around :mod:`realtime_fsm.tools`.

Whatever happens, a call the model made needs a ``function_call_output`` (reference §11: the
conversation wants a matching output, and the model can only recover from what it is told), so
:func:`run_tool` never raises for the tool's sake: an unknown name, arguments that do not fit, a
function that raises and one that hangs past its timeout all become a :class:`ToolOutcome` with
``ok`` false and an output that tells the model what went wrong.  Only cancellation of the
caller's task propagates (the call is being torn down), and it cancels the tool with it.

A sync function runs in a worker thread (``asyncio.to_thread``): awaiting it on the loop would
stop every event of the call, barge-in included, for as long as it runs (twilio-agent-connect
does that, reference §11.2).  A thread cannot be stopped: a sync function past its timeout runs
on in the background and its result is dropped; until it returns it holds one of the default
executor's few workers (``min(32, cpus + 4)``), and ``asyncio.run`` waits for it at shutdown.

The bound is ``asyncio.wait({task}, timeout=...)`` and an explicit cancel, never
``asyncio.wait_for``: before Python 3.12 ``wait_for`` can swallow a cancellation that arrives as
the inner task finishes (python/cpython#86296), and a swallowed cancellation leaves a call
that was told to stop still running.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from typing import Any

import attrs

from .errors import ToolArgumentsError
from .logsafe import safe
from .tools import MAX_ERROR_CHARS, Tool

__all__ = ["ToolOutcome", "run_tool"]

log = logging.getLogger("realtime_fsm.tools")


@attrs.frozen
class ToolOutcome:
    """What one call came to.

    ``output`` is the ``function_call_output.output`` to send, in every case.  ``error`` is
    ``None`` when ``ok``, else the short reason (the same text the output gives the model).
    ``duration_s`` is wall time from the call to its outcome."""

    output: str
    ok: bool
    error: str | None
    duration_s: float


def _failed(reason: str, started: float) -> ToolOutcome:
    output = json.dumps({"error": reason}, ensure_ascii=False)
    return ToolOutcome(output=output, ok=False, error=reason, duration_s=_since(started))


def _since(started: float) -> float:
    return time.monotonic() - started


def _short(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    text = " ".join(text.split())  # one line, in the output and in the log
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    message = str(exc)
    name = type(exc).__name__
    return _short(f"{name}: {message}" if message else name)


async def _call(tool: Tool, kwargs: dict[str, Any]) -> str:
    if tool.is_async:
        result = await tool.func(**kwargs)
    else:
        result = await asyncio.to_thread(tool.func, **kwargs)
    if inspect.isawaitable(result):  # a sync wrapper handing back a coroutine
        result = await result
    return tool.format_output(result)


def _reap(task: asyncio.Future[Any]) -> None:
    """Done callback of a task we abandoned: retrieve its end so asyncio does not log
    'exception was never retrieved' for a tool that failed after we stopped waiting."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("abandoned tool call ended with %r", task.exception())


async def run_tool(
    tool: Tool | None, call_name: str, arguments: str, *, default_timeout: float
) -> ToolOutcome:
    """Run the tool the model called and return what to answer it.

    ``tool`` is the tool registered under ``call_name`` (``None``: there is none);
    ``arguments`` is the call's JSON text; ``default_timeout`` (seconds) bounds a tool without
    a timeout of its own.  Never raises for the tool's sake; a cancellation of the caller
    cancels the tool and propagates.
    """
    started = time.monotonic()
    if tool is None:
        shown = _short(repr(call_name), 80)
        log.warning("tool call to unknown tool %s", shown)
        return _failed(f"unknown tool {shown}: no function of that name exists", started)
    name = tool.name

    try:
        kwargs = tool.parse_arguments(arguments)
    except ToolArgumentsError as exc:
        log.warning("tool %s: arguments rejected: %s", name, safe(exc.message))
        return _failed(exc.message, started)
    except Exception as exc:  # a user's validator broke; the model can only be told it failed
        return _raised(name, exc, started)

    timeout = tool.timeout if tool.timeout is not None else default_timeout
    task = asyncio.ensure_future(_call(tool, kwargs))
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:  # our caller is cancelled: the tool goes with it
        task.cancel()
        task.add_done_callback(_reap)
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_reap)
        log.warning("tool %s timed out after %.3f s", name, _since(started))
        return _failed(f"{name} timed out after {timeout:g} s and was abandoned", started)
    if task.cancelled():
        # Not by us (we only cancel after leaving): the tool cancelled itself, e.g. let an
        # inner task's CancelledError escape.  That is the tool failing, not us being cancelled.
        return _raised(name, asyncio.CancelledError(), started)
    failure = task.exception()
    if failure is not None:
        return _raised(name, failure, started)
    duration = _since(started)
    log.debug("tool %s ok in %.3f s", name, duration)
    return ToolOutcome(output=task.result(), ok=True, error=None, duration_s=duration)


def _raised(name: str, exc: BaseException, started: float) -> ToolOutcome:
    reason = _describe(exc)
    duration = _since(started)
    # One line, no argument values; the traceback only at DEBUG.
    log.warning("tool %s raised after %.3f s: %s", name, duration, safe(reason))
    log.debug("tool %s traceback", name, exc_info=exc)
    return _failed(reason, started)

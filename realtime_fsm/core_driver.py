"""An asyncio driver for apps that own their sockets and want only the core.

:class:`~realtime_fsm.lifecycle.ResponseLifecycle` is sans-IO: it never sleeps and never reads a
clock, so whoever drives it must wake it with a :class:`~realtime_fsm.events.Tick` when
:attr:`~realtime_fsm.lifecycle.ResponseLifecycle.next_deadline` passes.  That deadline does not
only move on :meth:`~realtime_fsm.lifecycle.ResponseLifecycle.handle`: the first
``transcript_delta`` of a response arms the no-audio watchdog, and audio or transcript of a
response the machine has not seen created adopts it, both by the per-frame fast paths.  A timer
that only re-arms after ``handle()`` sleeps straight past the watchdog.  :class:`LifecycleDriver`
wraps every call that can move the deadline, so its timer always knows.

It also executes the commands the machine returns, through the app's one ``execute`` callback,
strictly in order: a callback that is a coroutine function is awaited before the next command
starts, and commands produced meanwhile (by the timer, by the app, by the callback itself) queue
behind it.  The machine counts a command as sent when it hands it out, so no command is ever
dropped: :meth:`LifecycleDriver.close` executes whatever is still queued, then the
:class:`~realtime_fsm.commands.ReturnUndeliveredText` the close produces.

Threading: every method must be called from the thread running the event loop (the machine is
single-owner, and the driver keeps no locks).  Nothing here is part of the core, which imports no
asyncio; the bridge (:mod:`realtime_fsm.bridge`) has its own timer and does not use this.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType

from .commands import Command
from .events import ConnectionClosed, Event, Tick
from .lifecycle import ResponseLifecycle
from .table import CLOSED

log = logging.getLogger("realtime_fsm.core_driver")

#: What the app's callback may be: plain (``None``) or returning an awaitable (a coroutine
#: function), which the driver awaits before the next command.
Execute = Callable[[Command], Awaitable[None] | None]

#: Never spin: a deadline that a tick did not move (or one already due when armed) is retried
#: after this pause, as the bridge's timer does.
MIN_PAUSE = 0.005
#: A tick that raised (a bug, or an app clock that went backwards) is retried this much later,
#: so a persistent fault logs once a second instead of 200 times.
ERROR_PAUSE = 1.0
#: How long :meth:`LifecycleDriver.close` lets queued commands run before it cancels them.
CLOSE_TIMEOUT = 5.0

_NOT_RUNNING = -math.inf  # no deadline compares below it: a stopped driver never arms
_UNARMED = math.inf  # every deadline compares below it: a running driver arms on the next one


class LifecycleDriver:
    """Runs the timer of one :class:`ResponseLifecycle` and executes its commands in order.

    Start it with ``async with LifecycleDriver(...)``, :meth:`start` (then :meth:`close`), or
    ``await driver.run()`` in a task of your own.  Feed it through its methods, never the
    machine's: each one passes ``clock()`` as the time and re-checks ``next_deadline`` after.

    The timer is an event-loop timer (``loop.call_later``), not a task: a tick runs the moment
    its deadline passes, even while an async ``execute`` is still awaiting a slow socket, and
    its commands queue behind that one.  It is re-armed only when the deadline moves earlier
    than the one it sleeps for; when the deadline moves later (every audio frame pushes the stall
    timeout out) it wakes at the old one, sees nothing due and sleeps again.

    Cost per frame, on the current response (CPython 3.11, ``timeit``, best of 5 x 1e6, clock
    ``time.monotonic``, both sides reading it): ``audio_delta`` 0.20 us on the machine, 0.42 us
    through the driver; ``transcript_delta`` 0.15 / 0.37 us; ``touch`` 0.12 / 0.38 us.  The
    0.22-0.25 us added is the ``next_deadline`` property and one comparison: about 11 us per
    second of a call's 50 frames/s, the price of never missing a deadline that moved.

    ``execute`` raising is logged (logger ``realtime_fsm.core_driver``) and counted in
    :attr:`execute_errors`; the next command runs as if it had succeeded, because the machine
    already believes it was sent (a failed send is the app's to report, e.g. as
    ``ConnectionClosed``).
    """

    def __init__(
        self,
        machine: ResponseLifecycle,
        execute: Execute,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._machine = machine
        self._execute = execute
        self._clock = clock
        self._queue: deque[Command] = deque()
        self._busy = False  # a command is executing right now (an async one may be awaiting)
        self._more = asyncio.Event()  # set when the queue gains a command, or on close
        self._idle = asyncio.Event()  # set while the queue is empty and nothing executes
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: The deadline the timer sleeps for; ``_UNARMED`` / ``_NOT_RUNNING`` otherwise.
        self._armed_for = _NOT_RUNNING
        self._closed = False
        #: ``execute`` calls that raised.
        self.execute_errors = 0
        #: Ticks that raised inside the machine (a bug, or a clock that went backwards).
        self.tick_errors = 0
        #: Ticks handled (a deadline had passed).
        self.ticks = 0

    # ------------------------------------------------------------------------------- feeding

    @property
    def machine(self) -> ResponseLifecycle:
        """The machine, for reading (state, stats); feed it through the driver only."""
        return self._machine

    @property
    def queued(self) -> int:
        """Commands handed out by the machine and not yet executed (the one executing counts)."""
        return len(self._queue) + int(self._busy)

    def handle(self, event: Event) -> None:
        """Apply ``event`` now and queue its commands for ``execute``.

        Synchronous: the machine's state has changed when it returns (so an audio frame right
        after a barge-in is already dropped), the commands run soon after on the driver's task.
        ``await drain()`` to wait for them.  Raises what the machine raises (a closed machine,
        an event that is not one)."""
        machine = self._machine
        commands = machine.handle(event, self._clock())
        if commands:
            self._enqueue(commands)
        deadline = machine.next_deadline
        if deadline is not None and deadline < self._armed_for:
            self._arm(deadline)

    def audio_delta(self, response_id: str, item_id: str, byte_count: int) -> bool:
        """:meth:`ResponseLifecycle.audio_delta` now: True if the frame should reach the caller.
        Re-checks the deadline: audio of a response never seen created adopts it."""
        machine = self._machine
        forward = machine.audio_delta(response_id, item_id, byte_count, self._clock())
        deadline = machine.next_deadline
        if deadline is not None and deadline < self._armed_for:
            self._arm(deadline)
        return forward

    def transcript_delta(self, response_id: str) -> None:
        """:meth:`ResponseLifecycle.transcript_delta` now.  The first one of a response arms the
        no-audio watchdog, which moves the deadline *earlier*: the reason this driver exists."""
        machine = self._machine
        machine.transcript_delta(response_id, self._clock())
        deadline = machine.next_deadline
        if deadline is not None and deadline < self._armed_for:
            self._arm(deadline)

    def touch(self, response_id: str) -> None:
        """:meth:`ResponseLifecycle.touch` now (text or function-call deltas, item events)."""
        machine = self._machine
        machine.touch(response_id, self._clock())
        deadline = machine.next_deadline
        if deadline is not None and deadline < self._armed_for:
            self._arm(deadline)

    def item_added(self, response_id: str, item_id: str, item_type: str) -> None:
        """:meth:`ResponseLifecycle.item_added` now.  A function call opening takes the
        response's timers off; the deadline is re-read."""
        machine = self._machine
        machine.item_added(response_id, item_id, item_type, self._clock())
        deadline = machine.next_deadline
        if deadline is not None and deadline < self._armed_for:
            self._arm(deadline)

    def item_done(self, response_id: str, item_id: str) -> None:
        """:meth:`ResponseLifecycle.item_done` now.  A function call closing puts the
        response's timers back, possibly already due."""
        machine = self._machine
        machine.item_done(response_id, item_id, self._clock())
        deadline = machine.next_deadline
        if deadline is not None and deadline < self._armed_for:
            self._arm(deadline)

    def playback_progress(self, item_id: str, played_ms: int) -> None:
        """:meth:`ResponseLifecycle.playback_progress` (from telephony marks)."""
        machine = self._machine
        machine.playback_progress(item_id, played_ms)
        deadline = machine.next_deadline
        if deadline is not None and deadline < self._armed_for:
            self._arm(deadline)

    # --------------------------------------------------------------------------- lifecycle

    def start(self) -> asyncio.Task[None]:
        """Start the driver's task (commands) and timer; call from a running event loop."""
        if self._task is not None:
            raise RuntimeError("the driver was already started")
        if self._closed:
            raise RuntimeError("the driver is closed")
        self._loop = asyncio.get_running_loop()
        call_id = self._machine.config.call_id
        self._task = self._loop.create_task(self._executor(), name=f"{call_id}:core-driver")
        self._armed_for = _UNARMED
        deadline = self._machine.next_deadline
        if deadline is not None:
            self._arm(deadline)
        return self._task

    async def run(self) -> None:
        """Start, and return when :meth:`close` has run every command.  Cancelling the task
        that awaits this cancels the driver's own task and propagates."""
        task = self._task if self._task is not None else self.start()
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.cancelled():
            if self._closed:
                return  # close() gave up on a stuck execute: that is how run() ends then
            raise asyncio.CancelledError  # someone cancelled the driver's own task
        error = task.exception()
        if error is not None:
            raise error

    async def drain(self) -> None:
        """Wait until every command queued so far (and any queued meanwhile) was executed.

        Raises RuntimeError when nothing would ever execute them: the driver is not started,
        its task ended, or this is called from inside ``execute`` (it would wait for itself)."""
        while self._queue or self._busy:
            task = self._task
            if task is None or task.done():
                raise RuntimeError("the driver is not running: queued commands wait for close()")
            if task is asyncio.current_task():
                raise RuntimeError("drain() from inside execute would wait for itself")
            waiter = asyncio.ensure_future(self._idle.wait())
            try:
                await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    async def close(self, reason: str = "closed", *, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop the timer, feed ``ConnectionClosed(reason)`` and execute what is left, then the
        :class:`~realtime_fsm.commands.ReturnUndeliveredText` it produces, through ``execute``.

        Commands still queued run first, in order: the machine already counts them as sent, so
        skipping one would lose a user text.  If they take longer than ``timeout`` the task is
        cancelled and the rest run here.  Called from inside ``execute`` it returns at once and
        the driver's task finishes the queue.  A second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self._disarm()
        self._armed_for = _NOT_RUNNING
        if self._machine.state is not CLOSED:
            self._enqueue(self._machine.handle(ConnectionClosed(reason), self._clock()))
        self._more.set()  # the task returns once the queue is empty
        task = self._task
        if task is not None and not task.done():
            if task is asyncio.current_task():
                return
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                log.warning(
                    "call=%s execute still busy after %.1fs at close; cancelling it",
                    self._machine.config.call_id,
                    timeout,
                )
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=timeout)
                if not done:  # execute swallows cancellations: running the rest would interleave
                    log.error("call=%s execute ignores cancellation", self._machine.config.call_id)
                    return
        while self._queue:  # never started, cancelled, or gave up above
            await self._run_one(self._queue.popleft())
        self._idle.set()

    async def __aenter__(self) -> LifecycleDriver:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -------------------------------------------------------------------------- internals

    def _enqueue(self, commands: list[Command]) -> None:
        self._queue.extend(commands)
        self._idle.clear()
        self._more.set()

    async def _executor(self) -> None:
        """The driver's task: execute queued commands one at a time, in order, until closed."""
        queue = self._queue
        try:
            while True:
                while queue:
                    await self._run_one(queue.popleft())
                self._idle.set()
                if self._closed:
                    return
                self._more.clear()
                await self._more.wait()
        finally:
            self._disarm()
            self._armed_for = _NOT_RUNNING  # commands handled from now on wait for close()

    async def _run_one(self, command: Command) -> None:
        """Execute one command; its failure is logged and counted, a cancellation propagates."""
        self._busy = True
        try:
            result = self._execute(command)
            if result is not None and inspect.isawaitable(result):  # a stray return is no error
                await result
        except Exception:
            self.execute_errors += 1
            log.exception(
                "call=%s execute(%s) failed (%d so far); going on with the next command",
                self._machine.config.call_id,
                type(command).__name__,
                self.execute_errors,
            )
        finally:
            self._busy = False

    def _arm(self, deadline: float) -> None:
        """Sleep until ``deadline`` (at least :data:`MIN_PAUSE` from now), replacing any timer."""
        loop = self._loop
        assert loop is not None  # _armed_for is _NOT_RUNNING until start() sets the loop
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = deadline
        delay = max(deadline - self._clock(), MIN_PAUSE)
        self._timer = loop.call_later(delay, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = _UNARMED

    def _on_timer(self) -> None:
        """The timer fired: tick if the deadline has passed, then sleep for the next one."""
        self._timer = None
        self._armed_for = _UNARMED
        machine = self._machine
        deadline = machine.next_deadline
        if deadline is None:
            return
        if self._clock() < deadline:  # it moved later meanwhile (or the loop woke us early)
            self._arm(deadline)
            return
        try:
            self.ticks += 1
            self.handle(Tick())  # queues the commands and re-arms for the next deadline
        except Exception:
            self.tick_errors += 1
            log.exception(
                "call=%s tick failed; retrying in %.1fs", machine.config.call_id, ERROR_PAUSE
            )
            self._arm(self._clock() + ERROR_PAUSE)


__all__ = ["LifecycleDriver"]

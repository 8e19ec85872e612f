"""The asyncio driver's side of a rotation: the next OpenAI socket opened, configured and
switched to while the current one serves the call (see :mod:`realtime_fsm.call.rotation`).

The session decides; this mixin does what it says.  While ``session.next_generation`` is set
and no socket is being opened, one task opens it with the connector (bounded by
``reconnect_timeout``), writes the session's ``out_next`` to it and reads it into
``next_session_frame`` until the session stops ``rotating`` (ready, or failed).  When the
session's ``generation`` becomes that socket's number, the switch is one synchronous step
(:meth:`RotationDriver._switch_sockets`): the new socket becomes the current one, gets the
session's frames (its restore) and then the caller audio still queued for the old socket, and
the old socket's reader and writer stop (a frame it still delivers is never fed) and it is
closed in the background.  A next socket the session no longer wants is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from .bounded import bounded, close_quietly
from .call import CallSession, TextFrame
from .call.config import BridgeConfig
from .errors import UpstreamUnreachable
from .sockets import Connector, MessageSocket, Outbound, direct_probe, drain, handshake_status
from .table import ROTATING
from .tool_driver import ToolDriver

log = logging.getLogger("realtime_fsm.bridge")

TAG: Final = "[SESSION_ROTATE]"


class RotationDriver(ToolDriver):
    """Mixin of :class:`~realtime_fsm.bridge.CallBridge`: the next session's socket."""

    session: CallSession
    config: BridgeConfig
    clock: Callable[[], float]
    reconnect: Connector | None
    openai: MessageSocket | None
    _to_openai: asyncio.Queue[Outbound]
    _closers: set[asyncio.Task[None]]
    _openai_direct: Callable[[], bool]
    _wake: asyncio.Event
    _send_openai: Callable[[str | TextFrame], bool]

    def __init__(self) -> None:
        super().__init__()
        #: The next session's socket once open, and the session number it carries.
        self._next: MessageSocket | None = None
        self._next_generation: int | None = None
        #: The task opening and configuring it (one at a time).
        self._next_task: asyncio.Task[None] | None = None
        #: Set by a switch: the old socket's reader and writer stop (``_serve_session``).
        self._switched = asyncio.Event()

    def _rotation_step(self) -> None:
        """After every input while a next session is wanted or held: open it, switch to it,
        or close it, as the session says."""
        session = self.session
        sock = self._next
        if sock is not None:
            if session.generation == self._next_generation:
                self._switch_sockets(sock)
            elif session.next_generation != self._next_generation:
                self._next = self._next_generation = None
                self._close_later(sock)  # dropped: the call ends, or its session was lost
            return
        task = self._next_task
        if session.next_generation is not None and (task is None or task.done()):
            self._next_task = asyncio.create_task(
                self._prepare_next(), name=f"{session.call_label}:openai-next"
            )

    async def _prepare_next(self) -> None:
        """Open the next socket, send its ``session.update``, read it until it is ready."""
        session = self.session
        connector = self.reconnect
        assert connector is not None
        clock = self.clock
        timeout = self.config.reconnect_timeout
        sock: MessageSocket | None = None
        try:
            sock = await bounded(connector(), timeout)
            generation = session.next_session_opened(clock())
            if generation is not None:
                self._next, self._next_generation = sock, generation
                await self._configure_next(sock, generation, clock() + timeout)
        except asyncio.CancelledError:
            if sock is not None and sock is not self.openai:
                self._close_later(sock)
            raise
        except Exception as exc:  # the connector's or the socket's failure, whatever its type
            # The type (and an HTTP status) only: some clients put the URL in the text.
            what = str(exc) if isinstance(exc, UpstreamUnreachable) else type(exc).__name__
            session.next_session_failed(what, clock(), status=handshake_status(exc))
        self._after()  # a failure or a drop closes the socket there (or below)
        if sock is not None and sock is not self._next and sock is not self.openai:
            self._close_later(sock)

    async def _configure_next(self, sock: MessageSocket, generation: int, deadline: float) -> None:
        session = self.session
        clock = self.clock
        frames = session.out_next[:]
        session.out_next.clear()
        for update in frames:
            await sock.send(update)
        while session.next_generation == generation and session.call_state is ROTATING:
            frame = await bounded(sock.recv(), max(0.0, deadline - clock()))
            session.next_session_frame(frame, clock())
            self._after()

    def _switch_sockets(self, new: MessageSocket) -> None:
        """The session switched to the next session: make its socket the current one, in this
        very step, so that no frame goes to the wrong socket."""
        session = self.session
        self._next = self._next_generation = None
        # Caller audio the old socket never got goes to the new one, after the session's
        # restore; anything else queued for the old session is moot (its text is back in
        # the session's custody and in the restore).
        queued = self._to_openai.qsize()
        audio = drain(self._to_openai)
        self._to_openai = asyncio.Queue(self.config.max_queue)
        self._use_openai(new)
        self._switched.set()
        frames = session.out_openai[:]
        session.out_openai.clear()
        for item in frames:
            if not self._send_openai(item):
                return
        if not session.input_audio_resent:  # else that audio is in the session's frames
            self._carry_audio(audio)
        log.info(
            "call=%s %s socket of session %d is current: %d queued caller audio frame(s)"
            " moved to it, %d other frame(s) for the old socket dropped; the old socket closes",
            session.call_label,
            TAG,
            session.generation,
            0 if session.input_audio_resent else len(audio),
            queued - len(audio),
        )

    def _carry_audio(self, audio: list[str]) -> None:
        """Caller audio the old socket never got, to the socket now current (after the
        session's restore, before any later audio)."""
        for message in audio:
            if not self._send_openai(message):
                return

    def _use_openai(self, sock: MessageSocket) -> None:
        """``sock`` is the current session's socket from now on."""
        self.openai = sock
        self._openai_direct = direct_probe(self._to_openai, sock)
        self._wake.set()

    def _close_later(self, sock: MessageSocket, after: Iterable[asyncio.Task[Any]] = ()) -> None:
        """Close ``sock`` in the background (the call's end waits for it), once the tasks
        still using it are done."""
        closer = asyncio.create_task(_close_after(sock, tuple(after)), name="openai-close")
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)

    async def _stop_rotation(self) -> None:
        """The call is over: no next socket stays open."""
        task, self._next_task = self._next_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        sock, self._next = self._next, None
        if sock is not None and sock is not self.openai:
            await close_quietly(sock)


async def _close_after(sock: MessageSocket, tasks: tuple[asyncio.Task[Any], ...]) -> None:
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    await close_quietly(sock)

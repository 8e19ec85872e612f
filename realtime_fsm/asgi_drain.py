"""uvicorn, drained: the first SIGTERM drains the voice routes before uvicorn shuts down.

On SIGTERM (or Ctrl-C) uvicorn stops listening and *fails every open WebSocket with 1012*
(``uvicorn.Server.shutdown`` calls each connection's ``shutdown``), and only then runs the app's
lifespan shutdown.  A ``drain()`` in the lifespan therefore comes too late for the calls in
progress: they are cut when the signal arrives.  :class:`DrainingServer` is ``uvicorn.Server``
with one change: the first signal starts :meth:`TwilioVoiceRoutes.drain
<realtime_fsm.asgi.TwilioVoiceRoutes.drain>` (readiness false, new calls refused, calls in
progress go on until they end or the drain deadline) and uvicorn's own shutdown runs when the
drain is done; a second signal shuts down at once, as uvicorn does::

    voice = TwilioVoiceRoutes(config)
    app = FastAPI()
    app.router.routes.extend([*voice.routes, *voice.health_routes])
    server = DrainingServer(uvicorn.Config(app, host="0.0.0.0", port=8080), voice)
    asyncio.run(server.serve())

Needs uvicorn (not a dependency of this package: it is the app's choice of server).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import FrameType
from typing import Any

try:
    import uvicorn
except ImportError as exc:  # pragma: no cover - exercised only without uvicorn
    raise ImportError("realtime_fsm.asgi_drain needs uvicorn: pip install uvicorn") from exc

from .asgi import TwilioVoiceRoutes
from .drain import DrainReport

log = logging.getLogger("realtime_fsm.asgi_drain")


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` whose first SIGTERM/SIGINT drains ``voice`` (one set of routes or
    several) before uvicorn's shutdown.  ``drain_timeout``: by default each routes' own
    ``config.drain_timeout``.  :attr:`reports` has each drain's report once it is done."""

    def __init__(
        self,
        config: uvicorn.Config,
        voice: TwilioVoiceRoutes | Sequence[TwilioVoiceRoutes],
        *,
        drain_timeout: float | None = None,
    ) -> None:
        super().__init__(config)
        self.voice = [voice] if isinstance(voice, TwilioVoiceRoutes) else list(voice)
        self.drain_timeout = drain_timeout
        self.reports: list[DrainReport] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        #: A first signal came: the drain is scheduled or running (later ones are uvicorn's).
        self._signalled = False
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """A signal (in the main thread, between two bytecodes): the first one schedules the
        drain on the loop; any later one is uvicorn's own (shut down now)."""
        loop = self._loop
        if loop is None or self._signalled or self.should_exit:
            super().handle_exit(sig, frame)
            return
        self._signalled = True
        loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            drains = [v.drain(self.drain_timeout) for v in self.voice]
            self.reports.extend(await asyncio.gather(*drains))
        except Exception:  # never keep the server up because a drain failed
            log.exception("drain failed; shutting down")
        finally:
            self.should_exit = True

"""An app that owns its sockets and uses only the core, through ``LifecycleDriver``.

Run it with ``python examples/core_only.py``.  The "socket" is an in-memory queue to a fake
server whose first answer streams a transcript but no audio.  Only ``transcript_delta`` moves
the deadline then; the driver's timer follows it, the no-audio watchdog cancels the response
and, after its ``response.done``, asks once more, and the retry speaks.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from realtime_fsm import (
    Command,
    LifecycleConfig,
    RequestResponse,
    ResponseCreated,
    ResponseDone,
    ResponseLifecycle,
    SendResponseCancel,
    SendResponseCreate,
)
from realtime_fsm.core_driver import LifecycleDriver

Frame = ResponseCreated | ResponseDone | tuple[str, str]


class FakeServer:
    """Plays OpenAI over an in-memory socket: the first response is silent, the next speaks."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Frame] = asyncio.Queue()
        self.created = 0

    async def send(self, command: Command) -> None:
        if isinstance(command, SendResponseCreate):
            self.created += 1
            rid = f"resp_{self.created}"
            await self.inbox.put(ResponseCreated(rid, metadata=command.metadata))
            if self.created == 1:
                await self.inbox.put(("transcript", rid))  # ...and never any audio
            else:
                await self.inbox.put(("audio", rid))
                await self.inbox.put(ResponseDone(rid))
        elif isinstance(command, SendResponseCancel) and command.response_id:
            await self.inbox.put(ResponseDone(command.response_id, status="cancelled"))


async def main() -> int:
    server = FakeServer()

    async def execute(command: Command) -> None:  # the app's own socket write
        print(f"    -> {type(command).__name__}")
        await server.send(command)

    config = LifecycleConfig(call_id="core-only", no_audio_timeout=0.3)
    machine = ResponseLifecycle(config, now=time.monotonic())
    async with LifecycleDriver(machine, execute) as driver:
        driver.handle(RequestResponse(reason="greeting"))
        while True:  # the app's socket reader
            frame = await server.inbox.get()
            if isinstance(frame, tuple):
                kind, rid = frame
                if kind == "transcript":
                    driver.transcript_delta(rid)  # moves the deadline: the driver follows
                elif driver.audio_delta(rid, "item_1", 160):
                    print(f"    audio of {rid} forwarded to the caller")
            else:
                driver.handle(frame)
                if isinstance(frame, ResponseDone) and frame.status == "completed":
                    break
    ok = machine.stats.get("watchdog_fires") == 1 and server.created == 2
    print(f"core only: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    raise SystemExit(asyncio.run(asyncio.wait_for(main(), 10)))

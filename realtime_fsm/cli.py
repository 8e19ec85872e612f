"""``realtime-fsm`` command line: ``demo`` runs a whole call offline, on 127.0.0.1.

``serve`` runs the Twilio bridge server (:mod:`realtime_fsm.serve_command`), ``replay`` checks
a call's trace, ``soak`` runs many simulated calls.

The demo starts the simulator (a fake OpenAI Realtime server), the example bridge's server
(:mod:`realtime_fsm.server`, exactly what ``examples/twilio_bridge.py`` runs) and a fake Twilio
caller, then plays the seed design note's two scenarios:

1. the caller interrupts the assistant mid-sentence (typed text: ``[TEXT_BARGE_IN]``);
2. the server streams a transcript with no audio (``[NO_AUDIO_WATCHDOG]``).

It prints the flow lines as they are logged and a summary, and exits 0 only if both flows
completed and the simulator saw zero protocol errors.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

import attrs

from .bridge import BridgeConfig
from .config import LifecycleConfig
from .openai_realtime import SessionConfig
from .openai_realtime.models import DEFAULT_REALTIME_MODEL
from .replay import add_parser as add_replay_parser
from .serve_command import add_serve_parser
from .server import ServerConfig, start_server
from .testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ResponseFaults,
)
from .testing.soak import add_soak_parser

_TAGS = ("[TEXT_BARGE_IN]", "[NO_AUDIO_WATCHDOG]", "[BARGE_IN]")
_FLOW_DONE = "[TEXT_BARGE_IN] Flow complete:"
_RECOVERY = "[NO_AUDIO_WATCHDOG] Recovery result:"


class _FlowLines(logging.Handler):
    """Prints the tagged flow lines as they happen and remembers them."""

    def __init__(self, echo: bool) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.echo = echo
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(tag in message for tag in _TAGS):
            text = message.split(" ", 1)[1] if message.startswith("call=") else message
            self.lines.append(text)
            if self.echo:
                print(f"  {text}", flush=True)
            self.changed.set()

    def seen(self, needle: str) -> str | None:
        return next((line for line in self.lines if needle in line), None)

    async def wait_for(self, needle: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while (found := self.seen(needle)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                return None
        return found


@attrs.define
class DemoResult:
    text_flow: str | None = None
    recovery: str | None = None
    barge_in_ms: float | None = None
    protocol_errors: dict[str, int] = attrs.field(factory=dict)
    texts_delivered: int = 0
    watchdog_fires: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.text_flow is not None
            and self.recovery is not None
            and "success" in self.recovery
            and not self.protocol_errors
        )


async def run_demo(
    *, echo: bool = True, verbose: bool = False, model: str = DEFAULT_REALTIME_MODEL
) -> DemoResult:
    """Run both scenarios; ``model`` is named in the session URL as against OpenAI (the
    simulator echoes it in ``session.created``; a deprecated one is warned about)."""
    started = time.monotonic()
    result = DemoResult()
    flows = _FlowLines(echo)
    pkg_log = logging.getLogger("realtime_fsm")
    pkg_log.addHandler(flows)
    old_level, old_propagate = pkg_log.level, pkg_log.propagate
    pkg_log.setLevel(logging.INFO)
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    warnings.addFilter(lambda record: not any(tag in record.getMessage() for tag in _TAGS))
    if not verbose:
        # The flow lines are printed by ``flows``; the rest of INFO stays out of the way.
        pkg_log.propagate = False
        pkg_log.addHandler(warnings)
    replies = [
        "Hello! Thanks for calling. I can help you with bookings, changes and cancellations,"
        " and I can also answer questions about opening hours and prices.",
        "Of course. What would you like to ask?",
        "Sure, let me check that for you.",
        "Here is the answer you were waiting for.",
    ]
    sim = FakeRealtimeServer(FakeRealtimeConfig(realtime_factor=4.0, seed=7), replies=replies)
    try:
        await sim.start()
        reports: list[object] = []
        config = ServerConfig(
            public_url="http://127.0.0.1",
            base_url=sim.url,
            model=model,
            bridge=BridgeConfig(
                session=SessionConfig(instructions="You are a friendly receptionist."),
                # A simulated caller: its words are no one's personal data, and the demo
                # exists to show the [TEXT_BARGE_IN] flow, typed text included.
                lifecycle=LifecycleConfig(no_audio_timeout=1.0, log_caller_content=True),
                greeting="Greet the caller.",
                accept_text_messages=True,
            ),
        )
        server = await start_server(config, "127.0.0.1", 0, reports=reports)  # type: ignore[arg-type]
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/media-stream"
        caller_cfg = FakeCallerConfig(text_event="text", custom_parameters={"demo": "1"})

        if echo:
            print("\n=== Scenario 1: the caller interrupts the assistant mid-sentence ===")
        async with FakeTwilioCaller(url, caller_cfg) as caller:
            await caller.wait_for_audio(600, timeout=10)
            typed_at = time.monotonic()
            await caller.type_text("Sorry, can I ask something first?")
            await caller.wait_until(lambda: bool(caller.clears), timeout=5)
            if caller.clears:
                result.barge_in_ms = (caller.clears[0].at - typed_at) * 1000
            result.text_flow = await flows.wait_for(_FLOW_DONE, 8)
            await caller.wait_for_audio(caller.received_ms + 200, timeout=10)

        if echo:
            print("\n=== Scenario 2: the server sends a silent response ===")
        sim.fault_next_response(ResponseFaults(silent=True, hold_open_s=None))
        async with FakeTwilioCaller(url, caller_cfg) as caller:
            result.recovery = await flows.wait_for(_RECOVERY, 15)

        server.close()
        await server.wait_closed()
        result.protocol_errors = dict(sim.error_counts)
        result.texts_delivered = sum(
            1
            for event in sim.client_events("conversation.item.create")
            if event.get("item", {}).get("role") == "user"
        )
        result.watchdog_fires = sum(1 for line in flows.lines if "FIRED!" in line)
    finally:
        await sim.stop()
        pkg_log.removeHandler(flows)
        pkg_log.removeHandler(warnings)
        pkg_log.setLevel(old_level)
        pkg_log.propagate = old_propagate
    result.seconds = time.monotonic() - started
    return result


def _demo(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)
    demo = run_demo(echo=True, verbose=args.verbose, model=args.model)
    result = asyncio.run(asyncio.wait_for(demo, 60))
    print("\n=== Summary ===")
    print(f"  text barge-in flow complete : {'yes' if result.text_flow else 'NO'}")
    print(f"  watchdog recovery           : {result.recovery or 'NO'}")
    reaction = f"{result.barge_in_ms:.1f} ms" if result.barge_in_ms is not None else "n/a"
    print(f"  barge-in reaction (text -> Twilio clear at the caller): {reaction}")
    print(f"  user texts delivered        : {result.texts_delivered}")
    print(f"  watchdog fires              : {result.watchdog_fires}")
    print(f"  protocol errors seen        : {result.protocol_errors or 0}")
    print(f"  finished in {result.seconds:.1f} s: {'OK' if result.ok else 'FAILED'}")
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="realtime-fsm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the two seed scenarios offline, end to end")
    demo.add_argument("-v", "--verbose", action="store_true", help="log every transition")
    demo.add_argument(
        "--model",
        default=DEFAULT_REALTIME_MODEL,
        help=f"the Realtime model the sessions ask for (default {DEFAULT_REALTIME_MODEL})",
    )
    demo.set_defaults(func=_demo)
    add_replay_parser(sub)
    add_soak_parser(sub)
    add_serve_parser(sub)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    if args.command == "serve":
        args.serve_argv = raw[raw.index("serve") + 1 :]
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

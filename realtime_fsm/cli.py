"""``realtime-fsm`` command line: ``demo``, ``replay`` and ``soak``.

``demo`` plays three short calls offline (:mod:`realtime_fsm.demo`); ``replay`` checks a
recorded call's trace (:mod:`realtime_fsm.replay`) and draws its timeline
(:mod:`realtime_fsm.timeline_page`); ``soak`` runs many simulated calls with random faults
(:mod:`realtime_fsm.testing.soak`).

Every help text here is read in a terminal by someone new to the library: plain words, an
example, no markup (``tests/test_cli_help.py`` checks).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import textwrap
import time
from pathlib import Path
from typing import IO, Any

import realtime_fsm

from .demo import run_demo
from .openai_realtime.models import DEFAULT_REALTIME_MODEL
from .replay import check_file
from .serve_command import add_serve_parser
from .testing.soak import SoakConfig, SoakResult, run_soak
from .timeline import timeline_file
from .timeline_page import render_page
from .trace_format import TraceFormatError
from .trace_rules import DEFAULT_CROSSING, DEFAULT_SLACK, RULE_MEANINGS

_RAW = argparse.RawDescriptionHelpFormatter

DESCRIPTION = """\
Tools for realtime-fsm, the library that keeps a voice-AI phone call (Twilio on one side,
the OpenAI Realtime API on the other) from talking over the caller, losing what they typed,
or getting stuck."""

EPILOG = """\
examples:
  realtime-fsm demo                            see a caller interrupt the assistant (offline,
                                               no account or API key needed)
  realtime-fsm replay call.jsonl               check a recorded call for mistakes
  realtime-fsm replay call.jsonl --html c.html draw the call's timeline as a web page
  realtime-fsm soak --calls 200                200 simulated calls with random faults

Run "realtime-fsm COMMAND --help" for what a command does and its options."""

DEMO_HELP = "play three short phone calls offline and tell what the bridge does"
DEMO_DESCRIPTION = """\
Play three short phone calls through the real bridge, with a simulated caller and a
simulated OpenAI on this machine (no network, no account, no API key):

  1. the caller talks over the assistant's greeting;
  2. the caller types a message while the assistant speaks;
  3. OpenAI sends an answer with words but no sound.

It tells what happens in each call and exits with status 0 only if all three went as the
library promises."""
DEMO_EPILOG = """\
examples:
  realtime-fsm demo        the story of the three calls
  realtime-fsm demo -v     the same, with the bridge's own log lines on stderr
  realtime-fsm demo --trace-dir traces
                           the same, and a trace of each call in traces/ to try
                           realtime-fsm replay on"""

REPLAY_HELP = "check recorded calls for mistakes, or draw a call's timeline as a web page"
REPLAY_DESCRIPTION = """\
Check recorded calls against the rules the bridge must keep, and print each rule broken with
the line of the trace that shows it.  A trace is the file the bridge writes for each call
when you give it a trace directory (ServerConfig(trace_dir=...), or --trace-dir on
realtime-fsm serve and realtime-fsm demo); its format is described in docs/traces.md in
the source repository.

With --html, also draw one call as a web page: both sockets' traffic, the state of the
current answer over time, interruptions, and what the caller actually heard.

Exit status: 0 every trace clean, 1 a rule was broken, 2 a file could not be read."""


def _rules_epilog() -> str:
    width = max(len(rule) for rule in RULE_MEANINGS)
    rules = "\n".join(
        textwrap.fill(
            f"{rule:<{width}}  {meaning}",
            96,
            initial_indent="  ",
            subsequent_indent=" " * (width + 4),
        )
        for rule, meaning in RULE_MEANINGS.items()
    )
    return (
        f"the rules checked:\n{rules}\n\n"
        "examples:\n"
        "  realtime-fsm replay traces/CA123.jsonl\n"
        "  realtime-fsm replay traces/*.jsonl\n"
        "  realtime-fsm replay traces/CA123.jsonl --html CA123.html"
    )


SOAK_HELP = "run many simulated calls with random faults and report whether the bridge held up"
SOAK_DESCRIPTION = """\
Run many simulated phone calls through the example bridge at once, each with its own
simulated OpenAI and caller, and inject random faults: lost or late messages, slow
acknowledgements, silent and stalled answers, server errors, dropped connections, callers
hanging up mid-answer.  The report starts with PASS or FAIL and explains every error the
simulated OpenAI answered with; it fails if any typed text was lost or sent twice, a call
got stuck, or anything crashed.

While it runs, a progress line with an estimate of the time left is written to stderr."""
SOAK_EPILOG = """\
examples:
  realtime-fsm soak                        1,000 calls, 32 at a time (about 80 s)
  realtime-fsm soak --calls 200 --seed 7   a shorter run with another random draw"""


def _demo(args: argparse.Namespace) -> int:
    if args.verbose:
        # The package's log, one line per record: the demo's story goes to stdout.
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
        logging.getLogger("websockets").setLevel(logging.WARNING)
    print(
        "Three short phone calls through the real bridge, with a simulated caller and a"
        " simulated OpenAI on this machine."
    )
    before = _traces_in(args.trace_dir)
    demo = run_demo(echo=True, verbose=args.verbose, model=args.model, trace_dir=args.trace_dir)
    result = asyncio.run(asyncio.wait_for(demo, 90))

    def verdict(ok: bool) -> str:
        return "OK" if ok else "FAILED"

    quiet = f"{result.speech_quiet_ms:.0f} ms" if result.speech_quiet_ms is not None else "never"
    typed = f"{result.barge_in_ms:.1f} ms" if result.barge_in_ms is not None else "never"
    recovered = result.recovery is not None and "success" in result.recovery
    refused = sum(result.protocol_errors.values())
    print("\nSummary")
    print(f"  Call 1, caller talks over the assistant : {verdict(result.speech_ok)}", end="")
    print(f" (quiet after {quiet})")
    print(
        f"  Call 2, caller types a message          : {verdict(result.text_flow is not None)}",
        end="",
    )
    print(f" (quiet after {typed}; {result.texts_delivered} message delivered)")
    print(f"  Call 3, answer without sound            : {verdict(recovered)}", end="")
    print(
        f" (watchdog fired {result.watchdog_fires} time{'s' if result.watchdog_fires != 1 else ''})"
    )
    print(f"  Requests the real OpenAI would refuse   : {refused}", end="")
    print(f" {result.protocol_errors}" if refused else "")
    print(f"  Finished in {result.seconds:.1f} s: {verdict(result.ok)}")
    if args.trace_dir is not None:
        # In the order the calls ended: call 1 first (the names are Twilio call ids).
        written = sorted(_traces_in(args.trace_dir) - before, key=lambda p: p.stat().st_mtime)
        print(f"\nThe calls' traces ({len(written)} files), in {args.trace_dir}:")
        for number, path in enumerate(written, 1):
            print(f"  Call {number}: {path}")
        if written:
            print(
                f"Check them with: realtime-fsm replay {args.trace_dir}/*.jsonl\n"
                f"Draw one as a web page: realtime-fsm replay {written[0]} --html call.html"
            )
    if not args.verbose:
        print(
            "\nRun with -v to see the bridge's own log lines; in production, search them"
            "\nfor [BARGE_IN], [TEXT_BARGE_IN] and [NO_AUDIO_WATCHDOG]."
        )
    return 0 if result.ok else 1


def _traces_in(directory: str | None) -> set[Path]:
    """The trace files in ``directory`` (none if it is not given or does not exist yet)."""
    return set(Path(directory).glob("*.jsonl")) if directory is not None else set()


def _add_replay_parser(sub: Any) -> None:
    replay = sub.add_parser(
        "replay",
        help=REPLAY_HELP,
        description=REPLAY_DESCRIPTION,
        epilog=_rules_epilog(),
        formatter_class=_RAW,
    )
    replay.add_argument(
        "traces", nargs="+", metavar="TRACE.jsonl", help="one or more recorded calls to check"
    )
    replay.add_argument(
        "--html",
        metavar="FILE",
        help="also write the call's timeline to FILE, a web page that needs nothing but a"
        " browser (give one trace)",
    )
    replay.add_argument(
        "--slack",
        type=float,
        default=DEFAULT_SLACK,
        help="seconds of leeway when judging the bridge's timeouts, for the time between a"
        " decision and its message reaching the socket (default %(default)s)",
    )
    replay.add_argument(
        "--crossing",
        type=float,
        default=DEFAULT_CROSSING,
        help="a message received this many seconds or less before the bridge sent something"
        " counts as not yet seen when it decided (default %(default)s)",
    )
    replay.set_defaults(func=_replay, parser=replay)


def _replay(args: argparse.Namespace) -> int:
    if args.html is not None and len(args.traces) != 1:
        args.parser.error("--html draws one call: give exactly one trace")
    status = 0
    for path in args.traces:
        try:
            violations, warnings = check_file(path, slack=args.slack, crossing=args.crossing)
        except (OSError, UnicodeDecodeError, TraceFormatError) as exc:
            print(f"{path}: cannot check: {exc}", file=sys.stderr)
            status = max(status, 2)
            continue
        except Exception as exc:  # a checker bug must not hide the other files' results
            print(
                f"{path}: cannot check: internal error ({type(exc).__name__}: {exc})",
                file=sys.stderr,
            )
            status = max(status, 2)
            continue
        for warning in warnings:
            print(f"{path}: warning: {warning}", file=sys.stderr)
        for violation in violations:
            print(violation.format(path))
        if violations:
            status = max(status, 1)
        else:
            print(f"{path}: ok")
    if args.html is not None and status < 2:
        try:
            page = render_page(timeline_file(args.traces[0]), source=args.traces[0])
            Path(args.html).write_text(page, encoding="utf-8")
        except OSError as exc:
            print(f"{args.html}: cannot write the timeline: {exc}", file=sys.stderr)
            return 2
        print(f"{args.traces[0]}: timeline written to {args.html}", file=sys.stderr)
    return status


class SoakProgress:
    """The soak's progress line on ``stream``: calls done, rate, estimated time left.

    On a terminal the line is rewritten in place at most every ``tty_interval`` seconds; to a
    file or a pipe (a CI log) a new line is written at most every ``plain_interval`` seconds,
    so the log shows the run is alive without a line per call.  :meth:`update` takes the calls
    done so far (the soak calls it per finished call); :meth:`tick` only redraws (a timer
    calls it, so the estimate moves while no call finishes)."""

    def __init__(
        self,
        total: int,
        stream: IO[str],
        *,
        tty: bool | None = None,
        clock: Any = time.monotonic,
        tty_interval: float = 0.25,
        plain_interval: float = 10.0,
    ) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.clock = clock
        self.interval = tty_interval if self.tty else plain_interval
        self.started = clock()
        self.done = 0
        self.last_shown: float | None = None
        self.width = 0

    def update(self, done: int) -> None:
        self.done = done
        self.tick(force=done >= self.total)

    def tick(self, *, force: bool = False) -> None:
        now = self.clock()
        due = self.last_shown is None or now - self.last_shown >= self.interval
        if not (due or force):
            return
        self.last_shown = now
        line = self.line(now)
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = now - self.started
        text = f"soak: {self.done}/{self.total} calls, {_duration(elapsed)} elapsed"
        if self.done >= self.total:
            return text + ", done"
        if self.done == 0:
            return text + ", estimating the time left..."
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        return text + f", {rate:.1f} calls/s, about {_duration(left)} left"

    def close(self) -> None:
        """End the line (a terminal's cursor is left after it)."""
        if self.tty and self.last_shown is not None:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest:02d} s"


async def soak_with_progress(config: SoakConfig, progress: SoakProgress) -> SoakResult:
    """:func:`~realtime_fsm.testing.soak.run_soak` with ``progress`` redrawn as it runs."""

    async def ticker() -> None:
        while True:
            await asyncio.sleep(min(progress.interval, 1.0))
            progress.tick()

    timer = asyncio.ensure_future(ticker())
    try:
        return await run_soak(config, progress=lambda done, _total: progress.update(done))
    finally:
        timer.cancel()
        progress.close()


def _add_soak_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "soak",
        help=SOAK_HELP,
        description=SOAK_DESCRIPTION,
        epilog=SOAK_EPILOG,
        formatter_class=_RAW,
    )
    defaults = SoakConfig()
    parser.add_argument(
        "--calls", type=int, default=defaults.calls, help="how many calls (default %(default)s)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=defaults.concurrency,
        help="how many calls at the same time (default %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="the random draw: the same seed gives the same calls and faults (default %(default)s)",
    )
    parser.add_argument(
        "--factor",
        type=float,
        default=defaults.realtime_factor,
        help="how much faster than real time the simulated OpenAI runs (default %(default)s)",
    )
    parser.add_argument(
        "--caller-speed",
        type=float,
        default=defaults.caller_speed,
        help="how much faster than real time the simulated callers talk and listen (default"
        " %(default)s)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print the bridge's warnings as they happen"
    )
    parser.set_defaults(func=_soak)


def _soak(args: argparse.Namespace) -> int:
    # The soak turns the package's loggers up to INFO to watch them; what is printed is set
    # on the handler, so that does not flood the terminal.
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING if args.verbose else logging.CRITICAL)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    config = SoakConfig(
        calls=args.calls,
        concurrency=args.concurrency,
        seed=args.seed,
        realtime_factor=args.factor,
        caller_speed=args.caller_speed,
    )
    progress = SoakProgress(config.calls, sys.stderr)
    result = asyncio.run(soak_with_progress(config, progress))
    print(result.format())
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="realtime-fsm", description=DESCRIPTION, epilog=EPILOG, formatter_class=_RAW
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"realtime-fsm {realtime_fsm.__version__}",
        help="print the version",
    )
    sub = parser.add_subparsers(dest="command", required=True, title="commands")
    demo = sub.add_parser(
        "demo",
        help=DEMO_HELP,
        description=DEMO_DESCRIPTION,
        epilog=DEMO_EPILOG,
        formatter_class=_RAW,
    )
    demo.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print the bridge's log (every state change) on stderr",
    )
    demo.add_argument(
        "--model",
        default=DEFAULT_REALTIME_MODEL,
        help=f"the OpenAI Realtime model the calls ask for (default {DEFAULT_REALTIME_MODEL})",
    )
    demo.add_argument(
        "--trace-dir",
        metavar="DIR",
        help="also record each call's trace in DIR (created if needed), to try realtime-fsm"
        " replay and its --html timeline on",
    )
    demo.set_defaults(func=_demo)
    _add_replay_parser(sub)
    _add_soak_parser(sub)
    add_serve_parser(sub)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    if args.command == "serve":
        args.serve_argv = raw[raw.index("serve") + 1 :]
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

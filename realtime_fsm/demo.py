"""``realtime-fsm demo``: three short phone calls through the real bridge, offline.

The demo starts the simulator (a fake OpenAI Realtime server), the example bridge's server
(:mod:`realtime_fsm.server`, exactly what ``examples/twilio_bridge.py`` runs) and a fake Twilio
caller, all on 127.0.0.1, and plays three calls:

1. the caller talks over the assistant's greeting (spoken barge-in);
2. the caller types a message while the assistant speaks (typed barge-in);
3. OpenAI streams an answer's words with no sound (the no-audio watchdog).

What it tells is what the simulated caller and the simulated OpenAI observed (when the phone
went quiet, what OpenAI was told the caller heard, which answer played), in words for someone
who does not know the library; the library's own log (``-v``) goes to stderr, one line each.
A call counts as OK only if it went as the library promises, and the simulator saw no request
the real OpenAI would have refused.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from .bridge import BridgeConfig
from .config import LifecycleConfig
from .openai_realtime import SessionConfig
from .openai_realtime.models import DEFAULT_REALTIME_MODEL
from .server import ServerConfig, start_server
from .testing import (
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ReplyContext,
    ResponseFaults,
    ResponseRecord,
)

_FLOW_DONE = "[TEXT_BARGE_IN] Flow complete:"
_RECOVERY = "[NO_AUDIO_WATCHDOG] Recovery result:"
_FIRED = "[NO_AUDIO_WATCHDOG] FIRED!"
_GREETING = (
    "Hello! Thanks for calling. I can help you with bookings, changes and cancellations, and I"
    " can also answer questions about opening hours and prices."
)
#: Seconds of speech the caller talks over the greeting.
_SPEECH_S = 0.8
_NO_AUDIO_TIMEOUT = 1.0


class _LogWatch(logging.Handler):
    """Remembers the bridge's tagged log lines (the watchdog's and the typed barge-in's), which
    say what the bridge itself decided.  Prints nothing: printing is the narration's job, and
    the log's own handler (``-v``) prints each line once."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "[TEXT_BARGE_IN]" in message or "[NO_AUDIO_WATCHDOG]" in message:
            self.lines.append(message.split(" ", 1)[1] if message.startswith("call=") else message)
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
    """What the three calls showed; :attr:`ok` only if each went as promised."""

    #: Call 1: ms from the caller starting to talk to the phone going quiet (Twilio ``clear``).
    speech_quiet_ms: float | None = None
    #: Call 1: where OpenAI was told the caller stopped hearing the greeting (ms), and how much
    #: of it OpenAI had sent by then (ms).
    speech_heard_ms: int | None = None
    speech_sent_ms: int | None = None
    speech_answered: bool = False
    #: Call 2: the bridge's own "[TEXT_BARGE_IN] Flow complete" line, and the reaction time.
    text_flow: str | None = None
    barge_in_ms: float | None = None
    texts_delivered: int = 0
    #: Call 3: the bridge's "[NO_AUDIO_WATCHDOG] Recovery result" line.
    recovery: str | None = None
    watchdog_fires: int = 0
    protocol_errors: dict[str, int] = attrs.field(factory=dict)
    seconds: float = 0.0

    @property
    def speech_ok(self) -> bool:
        return self.speech_quiet_ms is not None and self.speech_answered

    @property
    def ok(self) -> bool:
        return (
            self.speech_ok
            and self.text_flow is not None
            and self.recovery is not None
            and "success" in self.recovery
            and not self.protocol_errors
        )


class _Replies:
    """The simulated assistant's answers: each call queues what it should say next."""

    def __init__(self) -> None:
        self.queue: collections.deque[str] = collections.deque()

    def __call__(self, ctx: ReplyContext) -> str:
        return self.queue.popleft() if self.queue else "Is there anything else I can do?"


class _Story:
    """Prints the narration, wrapped, as it happens (or keeps quiet for tests)."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo

    def title(self, text: str) -> None:
        if self.echo:
            print(f"\n{text}", flush=True)

    def say(self, text: str) -> None:
        if self.echo:
            print(
                textwrap.fill(text, 96, initial_indent="  ", subsequent_indent="    "), flush=True
            )


def _quote(text: str, words: int = 9) -> str:
    split = text.split()
    return '"' + " ".join(split[:words]) + (' ..."' if len(split) > words else '"')


async def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _spoken_barge_in(
    url: str, sim: FakeRealtimeServer, replies: _Replies, story: _Story, result: DemoResult
) -> None:
    story.title("Call 1: the caller talks over the assistant")
    replies.queue.extend([_GREETING, "Sorry, go ahead, I'm listening."])
    first_response = len(sim.responses)
    async with FakeTwilioCaller(url, FakeCallerConfig(custom_parameters={"demo": "1"})) as caller:
        await caller.wait_for_audio(600, timeout=10)
        greeting = sim.responses[first_response]
        story.say(f"The assistant starts its greeting: {_quote(greeting.text)}")
        await caller.wait_until(lambda: caller.played_ms >= 500, timeout=10)
        story.say(
            f"After {caller.played_ms / 1000:.1f} s of it, the caller starts talking over the"
            " assistant."
        )
        connection = len(sim.connections) - 1
        await caller.speak(_SPEECH_S)
        if await _until(lambda: bool(caller.clears), 5):
            heard_voice = next(
                (
                    sent.at
                    for sent in sim.sent
                    if sent.connection == connection
                    and sent.event.get("type") == "input_audio_buffer.speech_started"
                ),
                caller.speech_started_at[0],
            )
            result.speech_quiet_ms = (caller.clears[0].at - heard_voice) * 1000
            story.say(
                "The simulated OpenAI hears the caller's voice"
                f" {(heard_voice - caller.speech_started_at[0]) * 1000:.0f} ms after they start,"
                f" and the assistant goes quiet on the phone {result.speech_quiet_ms:.0f} ms"
                f" after that: the {caller.clears[0].flushed_ms / 1000:.1f} s of greeting still"
                " waiting to play is dropped."
            )
        else:
            story.say("The assistant did NOT go quiet: the phone kept playing the greeting.")
        await _until(lambda: greeting.finished, 5)
        who = (
            "OpenAI stops the greeting itself (the session lets its speech detection interrupt)"
            if greeting.reason == "turn_detected"
            else "The bridge tells OpenAI to stop the greeting"
        )
        story.say(
            f"{who}; it had sent {greeting.audio_ms / 1000:.1f} s of it by then, more than the"
            " caller had heard."
        )
        result.speech_sent_ms = greeting.audio_ms
        await _until(lambda: bool(sim.client_events("conversation.item.truncate")), 5)
        truncates = sim.client_events("conversation.item.truncate")
        if truncates:
            heard = truncates[0].get("audio_end_ms")
            result.speech_heard_ms = heard if isinstance(heard, int) else None
            story.say(
                f"The bridge tells OpenAI the caller heard only the first {(heard or 0) / 1000:.1f}"
                " s, so the conversation does not pretend the rest was said."
            )
        answered = await _until(lambda: len(sim.responses) > first_response + 1, 10)
        if answered:
            answer = sim.responses[first_response + 1]
            start = caller.received_ms
            await caller.wait_until(lambda: caller.received_ms > start + 200, timeout=10)
            story.say(f"The assistant answers the caller: {_quote(answer.text)}")
            result.speech_answered = True
        else:
            story.say("The assistant did NOT answer the caller.")


async def _typed_barge_in(
    url: str,
    sim: FakeRealtimeServer,
    replies: _Replies,
    story: _Story,
    result: DemoResult,
    watch: _LogWatch,
) -> None:
    story.title("Call 2: the caller types a message while the assistant speaks")
    replies.queue.extend([_GREETING, "Of course. What would you like to ask?"])
    caller_cfg = FakeCallerConfig(text_event="text", custom_parameters={"demo": "1"})
    typed = "Sorry, can I ask something first?"
    async with FakeTwilioCaller(url, caller_cfg) as caller:
        await caller.wait_for_audio(600, timeout=10)
        story.say("The assistant starts its greeting again.")
        typed_at = time.monotonic()
        await caller.type_text(typed)
        story.say(f'The caller types: "{typed}"')
        await caller.wait_until(lambda: bool(caller.clears), timeout=5)
        if caller.clears:
            result.barge_in_ms = (caller.clears[0].at - typed_at) * 1000
            story.say(
                f"The assistant goes quiet on the phone {result.barge_in_ms:.1f} ms later, and"
                " the bridge tells OpenAI to stop the greeting."
            )
        result.text_flow = await watch.wait_for(_FLOW_DONE, 8)
        if result.text_flow is not None:
            story.say(
                "Once OpenAI confirms the greeting has stopped, the bridge hands it the typed"
                " message (never while the old answer is still running) and asks for an answer."
            )
        start = caller.received_ms
        await caller.wait_for_audio(200, timeout=10)
        if caller.received_ms > start:
            story.say(f"The assistant answers the message: {_quote(sim.responses[-1].text)}")
    result.texts_delivered = sum(
        1
        for event in sim.client_events("conversation.item.create")
        if event.get("item", {}).get("role") == "user"
    )


async def _silent_answer(
    url: str,
    sim: FakeRealtimeServer,
    replies: _Replies,
    story: _Story,
    result: DemoResult,
    watch: _LogWatch,
) -> None:
    story.title("Call 3: OpenAI sends an answer with no sound")
    replies.queue.extend([_GREETING, _GREETING])
    sim.fault_next_response(ResponseFaults(silent=True, hold_open_s=None))
    first_response = len(sim.responses)
    async with FakeTwilioCaller(url, FakeCallerConfig(custom_parameters={"demo": "1"})):
        fired = await watch.wait_for(_FIRED, 10)
        if fired is not None:
            story.say(
                "OpenAI sends the words of the greeting but no audio: the caller would hear"
                " only silence."
            )
            story.say(
                f"After {_NO_AUDIO_TIMEOUT:g} s of words without sound, the bridge's watchdog"
                " stops that answer and asks OpenAI for it again."
            )
        result.recovery = await watch.wait_for(_RECOVERY, 15)
        retries: list[ResponseRecord] = sim.responses[first_response + 1 :]
        if result.recovery is not None and "success" in result.recovery and retries:
            story.say(
                f"The second try comes with sound; the caller hears: {_quote(retries[0].text)}"
            )
        elif result.recovery is not None:
            story.say("The second try did NOT bring sound.")
    result.watchdog_fires = sum(1 for line in watch.lines if "FIRED!" in line)


async def run_demo(
    *,
    echo: bool = True,
    verbose: bool = False,
    model: str = DEFAULT_REALTIME_MODEL,
    trace_dir: str | Path | None = None,
) -> DemoResult:
    """Play the three calls; print the story as it happens when ``echo``.  ``model`` is named
    in the session URL as against OpenAI (the simulator echoes it in ``session.created``; a
    deprecated one is warned about).  ``verbose``: leave the package's log to its handlers
    (``-v`` sets one up); otherwise only its warnings reach stderr.  ``trace_dir``: record each
    call's trace there, as a server with ``ServerConfig.trace_dir`` does, so that someone
    without a phone number or an API key has real traces to try ``realtime-fsm replay`` on."""
    started = time.monotonic()
    result = DemoResult()
    story = _Story(echo)
    watch = _LogWatch()
    pkg_log = logging.getLogger("realtime_fsm")
    pkg_log.addHandler(watch)
    old_level, old_propagate = pkg_log.level, pkg_log.propagate
    pkg_log.setLevel(logging.INFO)
    warnings = logging.StreamHandler()
    warnings.setLevel(logging.WARNING)
    # A fire of the watchdog is logged as a warning, and call 3 is about it: told above.
    warnings.addFilter(lambda record: _FIRED not in record.getMessage())
    if not verbose:
        # The watcher only listens; of the rest of the INFO lines, only warnings are shown.
        pkg_log.propagate = False
        pkg_log.addHandler(warnings)
    replies = _Replies()
    sim = FakeRealtimeServer(FakeRealtimeConfig(realtime_factor=4.0, seed=7), replies=replies)
    try:
        await sim.start()
        config = ServerConfig(
            public_url="http://127.0.0.1",
            base_url=sim.url,
            model=model,
            trace_dir=trace_dir,
            bridge=BridgeConfig(
                session=SessionConfig(
                    instructions="You are a friendly receptionist.", silence_duration_ms=300
                ),
                # A simulated caller: its words are no one's personal data, and the demo
                # exists to show the typed barge-in, typed text included (with -v).
                lifecycle=LifecycleConfig(
                    no_audio_timeout=_NO_AUDIO_TIMEOUT, log_caller_content=True
                ),
                greeting="Greet the caller.",
                accept_text_messages=True,
            ),
        )
        server = await start_server(config, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}/media-stream"
            await _spoken_barge_in(url, sim, replies, story, result)
            await _typed_barge_in(url, sim, replies, story, result, watch)
            await _silent_answer(url, sim, replies, story, result, watch)
        finally:
            server.close()
            await server.wait_closed()
        result.protocol_errors = dict(sim.error_counts)
    finally:
        await sim.stop()
        pkg_log.removeHandler(watch)
        pkg_log.removeHandler(warnings)
        pkg_log.setLevel(old_level)
        pkg_log.propagate = old_propagate
    result.seconds = time.monotonic() - started
    return result

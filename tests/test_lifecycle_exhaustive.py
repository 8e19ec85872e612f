"""Exhaustive bounded check: every sequence of an abstract alphabet, up to a depth, by BFS.

The property test samples interleavings; this one enumerates all of them, for the same
:class:`~test_lifecycle_properties.World` (the real machine, the reference server and the two
FIFO queues between them) and the same invariants, checked after every step.  Each letter of the
alphabet is one world action: the app asks for a response (plain, with instructions, out of
band), the user types or starts/stops speaking, the server streams its next event or answers on
its own (idle timeout), the network delivers the oldest message in one direction (or does a
whole round trip), the caller hears half an item, the driver's timer fires at (or 13 s after)
the next deadline, or the connection closes.  The server's replies (``response.created``,
``response.done``, the busy error, ``response_cancel_not_active``, ...) come from the reference
server, so every reply is one the real server could send at that point.

One alphabet for everything would explode, so each :class:`Scenario` picks the letters for one
concern (text barge-in, server VAD in each turn-detection setting, the watchdog, coalescing,
errors without ``event_id``) with per-input caps, and searches every sequence up to its depth
(9 to 20).  States are deduplicated by an abstract signature: everything that can influence the
future (machine, server, both queues, and the books the invariants read), with times relative to
the clock and every id renamed in order of first appearance, so histories that differ only in
the names they minted are explored once.

Every distinct state is also probed with duplicate and late events of finished responses and an
early tick, which must change nothing; and every state at the depth bound is checked for
liveness: with the server silent the machine reaches ``idle`` within its timeouts, and with
everything delivered it settles in ``idle`` with every request served or given up for a
legitimate reason (inner states reach both by the search itself).
"""

from __future__ import annotations

import enum
import re
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

import attrs
import pytest
from lifecycle_world import MODES, PROFILE, Mode, Profile, World

#: Slow, so a plain ``pytest`` deselects it; CI runs it (``pytest -m ''``):
#: minutes: every interleaving up to the depth bound, 16 scenarios.
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Letter:
    """One letter of the alphabet: a world action and when it is enabled."""

    name: str
    enabled: Callable[[World], bool]
    run: Callable[[World], None]


LETTERS: dict[str, Letter] = {
    letter.name: letter
    for letter in (
        Letter("request", lambda w: w.open, lambda w: w.request()),
        Letter("request_instructed", lambda w: w.open, lambda w: w.request("be brief")),
        Letter("request_oob", lambda w: w.open, lambda w: w.request(out_of_band=True)),
        Letter("user_text", lambda w: w.open, lambda w: w.user_text()),
        Letter("speech_started", World.can_speak, World.speech_started),
        Letter("speech_stopped", World.can_stop_speaking, World.speech_stopped),
        Letter("idle_timeout", World.can_idle_timeout, World.idle_timeout),
        Letter("ack_cancel", World.can_ack_cancel, lambda w: w.ack_cancel(0)),
        Letter("finish_first", World.can_ack_cancel, lambda w: w.ack_cancel(0, first=True)),
        Letter("release", World.can_release, World.release_created),
        Letter("refuse", lambda w: w.open, World.refuse_next),
        Letter("swallow", lambda w: w.open, World.swallow_next),
        Letter("send", World.can_send, World.send),
        Letter("receive", World.can_receive, World.receive),
        Letter("stream", World.can_stream, lambda w: w.stream(0)),
        Letter("tick", World.can_tick, lambda w: w.tick(0.0)),
        Letter("late_tick", World.can_tick, lambda w: w.tick(13.0)),
        Letter(
            "playback", lambda w: w.open and bool(w.playable_items()), lambda w: w.playback(0, 0.5)
        ),
        Letter("close", lambda w: w.open, World.close),
        Letter("exchange", lambda w: w.can_send() or w.can_receive(), World.round_trip),
    )
}
NETWORK = ("send", "receive", "stream", "tick", "close")


@dataclass(frozen=True)
class Scenario:
    """One bounded search: a world, the letters it may use (inputs capped by ``limits``), and
    the depth: every sequence of up to ``depth`` letters is explored."""

    name: str
    mode: Mode
    letters: tuple[str, ...]
    limits: tuple[tuple[str, int], ...]
    depth: int
    always_silent: bool = False
    profile: Profile = PROFILE["polite"]

    def world(self) -> World:
        return World(
            self.mode,
            self.profile,
            audio_chunks=1,
            transcript_chunks=1,
            silent_chunks=1,
            always_silent=self.always_silent,
        )


_MODE = {mode.name: mode for mode in MODES}
SCENARIOS = (
    # Requests, text barge-ins, server-created responses, playback and truncation, timeouts.
    # (Idle-timeout responses need server VAD; the machine is told it neither creates nor
    # interrupts, so requests and texts are all the machine's to answer.)
    Scenario(
        "app_and_text",
        _MODE["vad_manual"],
        ("request", "user_text", "idle_timeout", "playback", *NETWORK),
        (("request", 2), ("user_text", 2), ("idle_timeout", 1)),
        depth=9,
    ),
    # An older server: the busy error's old wording (no response id), no echoed event_id.
    Scenario(
        "old_server",
        _MODE["vad_manual"],
        ("request", "user_text", "idle_timeout", *NETWORK),
        (("request", 2), ("user_text", 1), ("idle_timeout", 1)),
        depth=9,
        profile=PROFILE["old_server"],
    ),
    # Cancel acknowledgements that come late (up to twice cancel_timeout), or as completed
    # because the response finished first; text barge-ins meanwhile (bug: dead air after a slow
    # acknowledgement).
    Scenario(
        "slow_cancel_text",
        _MODE["no_vad"],
        ("request", "user_text", "ack_cancel", "finish_first", "late_tick", *NETWORK),
        (("request", 1), ("user_text", 2), ("late_tick", 1)),
        depth=10,
        profile=PROFILE["slow_cancel"],
    ),
    # Cancel acknowledgements that never come.
    Scenario(
        "lost_cancel_text",
        _MODE["no_vad"],
        ("request", "user_text", "ack_cancel", *NETWORK),
        (("request", 1), ("user_text", 2)),
        depth=10,
        profile=PROFILE["lost_cancel"],
    ),
    # response.created held back while errors overtake it (bug: a given-up response played).
    Scenario(
        "late_created",
        _MODE["no_vad"],
        ("request", "user_text", "release", "late_tick", *NETWORK),
        (("request", 2), ("user_text", 1), ("late_tick", 1)),
        depth=10,
        profile=PROFILE["late_created"],
    ),
    # Creates rejected (not as busy) or swallowed (bug: a swallowed create gave the turn up).
    Scenario(
        "refused_and_swallowed",
        _MODE["no_vad"],
        ("request", "user_text", "refuse", "swallow", "late_tick", *NETWORK),
        (("request", 2), ("user_text", 1), ("refuse", 1), ("swallow", 1), ("late_tick", 1)),
        depth=9,
        profile=PROFILE["refusing"],
    ),
    # VAD creates but does not interrupt: the caller talks over a response and the server, busy
    # at speech stop, skips the answer (bug: a committed turn never answered); slow cancels.
    Scenario(
        "vad_skips_busy_turn",
        _MODE["vad_create_only"],
        ("request", "speech_started", "speech_stopped", "ack_cancel", *NETWORK),
        (("request", 1), ("speech_started", 2)),
        depth=10,
        profile=PROFILE["slow_cancel"],
    ),
    # VAD creates and interrupts; the app asks for a response while a server response holds the
    # slot (bug: an interrupted create played over the caller).
    Scenario(
        "vad_interrupts_app_create",
        _MODE["vad"],
        ("request", "idle_timeout", "speech_started", "speech_stopped", *NETWORK),
        (("request", 1), ("idle_timeout", 1), ("speech_started", 1)),
        depth=10,
    ),
    # Server VAD cancels and creates by itself, and the machine knows.
    Scenario(
        "server_vad",
        _MODE["vad"],
        ("request", "user_text", "speech_started", "speech_stopped", *NETWORK),
        (("request", 1), ("user_text", 1), ("speech_started", 1)),
        depth=10,
    ),
    # Server VAD the machine was not told about: it cancels and asks for responses itself too.
    Scenario(
        "unannounced_vad",
        _MODE["vad_unannounced"],
        ("request", "user_text", "speech_started", "speech_stopped", *NETWORK),
        (("request", 1), ("user_text", 1), ("speech_started", 1)),
        depth=10,
    ),
    # The other turn-detection settings: interrupt only, create only, neither.
    *(
        Scenario(
            name,
            _MODE[name],
            ("request", "user_text", "speech_started", "speech_stopped", *NETWORK),
            (("request", 1), ("user_text", 1), ("speech_started", 1)),
            depth=9,
        )
        for name in ("vad_interrupt_only", "vad_create_only", "vad_manual")
    ),
    # Every response is silent and the network a round trip, so sequences reach far in time:
    # the watchdog, its retry, its cooldown.
    Scenario(
        "silent_round_trips",
        _MODE["no_vad"],
        ("request", "exchange", "stream", "tick", "late_tick"),
        (("request", 2), ("late_tick", 1)),
        depth=18,
        always_silent=True,
    ),
    # Requests with and without instructions, out-of-band ones: coalescing never drops one.
    Scenario(
        "coalescing_round_trips",
        _MODE["no_vad"],
        ("request", "request_instructed", "request_oob", "exchange", "stream", "tick"),
        (("request", 2), ("request_instructed", 1), ("request_oob", 1)),
        depth=10,
    ),
    # Every response is silent: the watchdog, its retry, its cooldown.
    Scenario(
        "silent_server",
        _MODE["no_vad"],
        ("request", "user_text", "late_tick", *NETWORK),
        (("request", 2), ("user_text", 1), ("late_tick", 1)),
        depth=11,
        always_silent=True,
    ),
)

_ID = re.compile(r"\b(?:resp_\d+|item_user_\d+|item_\d+|rtfsm_[a-z]+_\d+|t\d+|app\d+)\b")


T = TypeVar("T")
_ATOMIC: set[type] = {type(None), bool, int, float, str, MappingProxyType}
_FIELDS: dict[type, tuple[bool, tuple[str, ...]]] = {}


def clone(obj: T) -> T:
    """A deep copy of a world that shares every immutable value (``copy.deepcopy`` cannot copy
    the read-only metadata mappings of events and commands, and would copy them needlessly)."""
    return _clone(obj, {})  # type: ignore[no-any-return]


def _layout(cls: type) -> tuple[bool, tuple[str, ...]]:
    """(shared as is?, slot names) for a class, computed once."""
    layout = _FIELDS.get(cls)
    if layout is None:
        # Enums and frozen attrs values (hashable: events, commands, config) are immutable.
        atomic = issubclass(cls, enum.Enum) or (attrs.has(cls) and cls.__hash__ is not None)
        slots = tuple(
            name
            for klass in cls.__mro__
            for name in getattr(klass, "__slots__", ())
            if name != "__weakref__"
        )
        layout = _FIELDS[cls] = (atomic, slots)
    return layout


def _clone(obj: Any, memo: dict[int, Any]) -> Any:
    cls = type(obj)
    if cls in _ATOMIC:
        return obj
    key = id(obj)
    if key in memo:
        return memo[key]  # shared references stay shared (server.default is in responses)
    atomic = _ATOMIC
    new: Any
    if cls is list or cls is deque:
        new = memo[key] = cls(x if type(x) in atomic else _clone(x, memo) for x in obj)
    elif cls is dict:
        new = memo[key] = {
            k if type(k) in atomic else _clone(k, memo): v if type(v) in atomic else _clone(v, memo)
            for k, v in obj.items()
        }
    elif cls is array:
        new = array(obj.typecode, obj)
    elif cls is bytearray:
        new = bytearray(obj)
    elif cls is set or cls is tuple or cls is frozenset:
        new = cls(x if type(x) in atomic else _clone(x, memo) for x in obj)
        if cls is set:
            memo[key] = new
    else:
        shared, slots = _layout(cls)
        if shared:
            return obj
        new = memo[key] = object.__new__(cls)
        if hasattr(obj, "__dict__"):
            for name, value in vars(obj).items():
                object.__setattr__(new, name, _clone(value, memo))
        for name in slots:
            if hasattr(obj, name):
                object.__setattr__(new, name, _clone(getattr(obj, name), memo))
    return new


def _rel(value: float | None, now: float, floor: float | None = None) -> float | None:
    """A time relative to the clock (only differences matter), optionally capped below."""
    if value is None:
        return None
    rel = round(value - now, 6)
    return rel if floor is None else max(rel, floor)


def signature(world: World, used: tuple[int, ...]) -> str:
    """Everything that can influence the future, with ids renamed in order of appearance.

    The *core* is the live state: the machine, the server's in-progress responses, both queues.
    The books and the machine's memory of old ids (retired responses, given-up creates) are
    history; only their entries for ids the core still mentions can matter, so only those are
    kept.  Times are relative to the clock; a watchdog fire older than the cooldown is "old"."""
    m = world.m
    now = world.now
    cfg = world.cfg
    inflight = m.inflight
    server = world.server
    state = m.state.value
    core = repr(
        (
            used,
            state,
            (m.create_state.value, m.turn_state.value, m.recovery_state.value),
            m.response_id,
            None if inflight is None else (inflight.event_id, inflight.reasons()),
            [(r.reason, r.instructions) for r in m.pending],
            [t.text for t in m.held_texts],
            (m.audio_deltas, m.transcript_deltas, m.response_is_retry, m._current_unseen),
            sorted(m.oob_responses),
            _rel(m.watchdog_last_fire, now, -cfg.watchdog_cooldown),
            _rel(m._first_transcript_at, now),
            _rel(m._last_activity, now) if state == "active" else None,
            _rel(m._state_deadline, now),
            _rel(m._turn_deadline, now),
            (m._watchdog_skipped, m._server_creates, m._server_interrupts),
            sorted(m._play.items()),
            None
            if server.default is None
            else (
                server.default.id,
                server.default.origin,
                server.default.create_event_id,
                list(server.default.script),
            ),
            sorted((rid, r.create_event_id, list(r.script)) for rid, r in server.oob.items()),
            (server.speaking, server.next_silent),
            (server.pending_cancels(), server.withheld(), server.refuse_next_create),
            (server.swallow_next_create, world.refused),
            [_rel(world.cancel_since.get(r), now) for r in server.pending_cancels()],
            [_rel(world.withheld_since.get(r), now) for r in server.withheld()],
            # Only a busy machine's deadline is checked against it (an idle one owes nothing).
            _rel(world.quiet_since, now) if state != "idle" else None,
            list(world.c2s),
            list(server.outbox),
            [list(server._withheld[r]) for r in server.withheld()],
            world.finished[-1:],
            (len(world.typed), len(world.sent_texts), len(world.returned_texts)),
            len(server.user_texts),
            len(world.fires),
            _rel(world.fires[-1][0], now, -cfg.watchdog_cooldown) if world.fires else None,
            world.closed,
        )
    )
    live = set(_ID.findall(core))
    history = repr(
        (
            sorted((rid, m._retired.why(rid)) for rid in live if rid in m._retired),
            [(eid, owed) for eid, owed in m._given_up.items() if eid in live],
            sorted(
                (item, i.response_id, i.audio_bytes, i.deleted)
                for item, i in server.items.items()
                if item in live
            ),
            sorted(
                (rid, r.origin, r.create_event_id, r.status, r.metadata)
                for rid, r in server.responses.items()
                if rid in live
            ),
            sorted(live & world.known_active),
            sorted(live & world.created_delivered),
            sorted(live & world.given_up_creates),
            sorted(live & world.stopped_creates),
            sorted(live & world.abandoned),
            sorted(live & world.stalled),
            sorted(live & world.dropped),
            sorted(live & world.interrupted_creates),
            sorted((r, s) for r, s in world.requests.items() if r in live),
            sorted(
                (i, b, world.played.get(i), i in world.cleared)
                for i, b in world.forwarded.items()
                if i in live
            ),
            sorted(
                (eid, sorted(c.known_active), sorted(c.stopped), sorted(c.abandoned))
                for eid, c in world.contexts.items()
                if eid in live
            ),
            _answer_books(world),
        )
    )
    names: dict[str, str] = {}

    def rename(match: re.Match[str]) -> str:
        return names.setdefault(match.group(0), f"#{len(names)}")

    return _ID.sub(rename, core + history)


def _answer_books(world: World) -> object:
    """What the caller-answered promise reads: the last input and what came after it, plus
    whether a response in progress started after it (it may complete later)."""
    server = world.server
    default = server.default
    inputs = [turn.seq for turn in server.turns] + list(server.user_text_seqs)
    pending = default is not None and bool(inputs) and default.started_seq > max(inputs)
    return (world.answer_books(), pending)


def _probe_stale(world: World) -> None:
    """Duplicate and late events of finished responses, a duplicate ``response.created`` of the
    current one and an early tick change nothing (:meth:`World.stale` checks it); they are
    probes, not letters, because they lead nowhere."""
    if world.closed:
        return
    mark = len(world.trace)
    world.stale(0, "early_tick")
    world.stale(0, "duplicate_created")
    if world.finished:
        oob = [rid for rid in world.finished if world.server.responses[rid].out_of_band]
        for rid in dict.fromkeys([world.finished[-1], *oob[-1:]]):
            index = world.finished.index(rid)
            for kind in ("done", "created", "audio", "transcript"):
                world.stale(index, kind)
    del world.trace[mark:]


def _liveness(world: World) -> None:
    """From a state at the depth bound: a silent server leaves the machine idle within the
    timeouts, and a server that answers everything leaves it idle with every request accounted
    for (from inner states the search itself walks both paths)."""
    if world.closed:
        return
    clone(world).settle_silent()
    clone(world).quiesce()


def explore(scenario: Scenario) -> tuple[int, int]:
    """BFS over every letter sequence up to the scenario's depth; (distinct states, steps)."""
    letters = [LETTERS[name] for name in scenario.letters]
    limits = dict(scenario.limits)
    caps = [limits.get(letter.name) for letter in letters]
    start = scenario.world()
    start.check()
    unused = (0,) * len(letters)
    seen = {signature(start, unused)}
    frontier = [(start, unused)]
    transitions = 0
    for level in range(1, scenario.depth + 1):
        next_frontier: list[tuple[World, tuple[int, ...]]] = []
        for world, used in frontier:
            for index, letter in enumerate(letters):
                cap = caps[index]
                if cap is not None and used[index] >= cap:
                    continue
                if not letter.enabled(world):
                    continue
                child = clone(world)
                letter.run(child)
                child.check()
                transitions += 1
                child_used = used
                if cap is not None:
                    child_used = (*used[:index], used[index] + 1, *used[index + 1 :])
                key = signature(child, child_used)
                if key in seen:
                    continue
                seen.add(key)
                _probe_stale(child)
                if level == scenario.depth:
                    _liveness(child)
                else:
                    next_frontier.append((child, child_used))
        frontier = next_frontier
    return len(seen), transitions


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_interleaving_up_to_the_depth_bound(scenario: Scenario) -> None:
    states, transitions = explore(scenario)
    assert states > 1000 and transitions > states  # the search really ran

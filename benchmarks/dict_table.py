"""Baselines for the core benchmark: the same machine on dict tables, on stock ``transitions``,
and a plain object.

:class:`DictTableLifecycle` is :class:`~realtime_fsm.lifecycle.ResponseLifecycle` with two methods
replaced: ``_fire`` (the slot machine) and ``_fire_in`` (the create, turn and recovery machines).
Instead of ``ENGINES[machine].events[name].trigger(self)`` (pytransitions) they look
``(state, trigger)`` up in plain dicts compiled once from the tables of
:data:`realtime_fsm.table.MACHINES`, and run the very same guard and action methods.  Every other
line of code (event dispatch, fast paths, guards, actions, logging) is shared, so any difference
a benchmark measures between the two is the engine and nothing else.

The compiled table reproduces the semantics of ``transitions`` 0.9 for this configuration
(``auto_transitions=False``, ``send_event=False``, ``queued=False``, no ``prepare``/``after``/
``on_exit`` callbacks, no machine-level hooks):

* rows for the same ``(source, trigger)`` are tried in table order; the first whose guards pass
  runs, and the trigger returns ``True``;
* guards are ``conditions`` (must return ``== True``) followed by ``unless`` (must return
  ``== False``), evaluated in order and short-circuited, as ``Condition.check`` does;
* ``before`` actions run first; then, unless ``dest`` is ``None`` (an internal transition), the
  state is set and the destination's ``on_enter`` actions run.  A row whose ``dest`` equals its
  source is *not* internal: ``on_enter`` runs again, exactly as in ``transitions``;
* a trigger with no row for the current state (``MachineError`` in ``transitions``) and a trigger
  whose rows all fail their guards both return ``False``.

``tests/test_dict_table_equivalence.py`` checks both the compiled table against the
``transitions`` machine's own objects and the two runtimes against each other on random event
sequences.

:class:`PlainCallState` is the memory yardstick of issue 5 ("a plain object of the same
fields"): an ordinary Python class (no ``__slots__``) whose ``__init__`` sets the same attributes
to the same initial values as ``ResponseLifecycle.__init__``, with no machine at all.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import ClassVar, Final, NamedTuple

import transitions

from realtime_fsm import events as ev
from realtime_fsm.commands import Command
from realtime_fsm.config import LifecycleConfig
from realtime_fsm.lifecycle import ResponseLifecycle
from realtime_fsm.lifecycle import log as lifecycle_log
from realtime_fsm.lifecycle.ledgers import Inflight
from realtime_fsm.table import (
    C_NONE,
    IDLE,
    MACHINES,
    R_NONE,
    T_NONE,
    CreateState,
    MachineSpec,
    RecoveryState,
    ResponseState,
    TurnState,
    machine_kwargs,
)

#: A guard method and the value it must compare equal to (True for ``conditions``, False for
#: ``unless``).
Guard = tuple[Callable[[ResponseLifecycle], object], bool]
Action = Callable[[ResponseLifecycle], object]


class Entry(NamedTuple):
    """One compiled row.  A plain tuple underneath: ``_fire`` unpacks it positionally."""

    guards: tuple[Guard, ...]
    dest: enum.Enum | None
    #: The row's ``before`` actions.
    actions: tuple[Action, ...]
    #: The ``on_enter`` actions of ``dest`` (empty for an internal transition).
    on_enter: tuple[Action, ...]


Table = dict[tuple[enum.Enum, str], tuple[Entry, ...]]


def compile_table(spec: MachineSpec, cls: type[ResponseLifecycle] = ResponseLifecycle) -> Table:
    """``(state, trigger) -> rows`` of one machine from its transitions config, callbacks bound
    to ``cls``'s unbound methods (looked up once, here, instead of by name on every trigger)."""

    def method(name: str) -> Action:
        func = getattr(cls, name)
        if not callable(func):  # pragma: no cover - the lifecycle checks names at import
            raise TypeError(f"{cls.__name__}.{name} is not callable")
        return func  # type: ignore[no-any-return]

    rows: dict[tuple[enum.Enum, str], list[Entry]] = {}
    for row in spec.rows:
        guards = tuple((method(n), True) for n in row["conditions"]) + tuple(
            (method(n), False) for n in row["unless"]
        )
        dest = row["dest"]
        actions = tuple(method(n) for n in row["before"])
        on_enter = tuple(method(n) for n in spec.on_enter.get(dest, ())) if dest is not None else ()
        entry = Entry(guards, dest, actions, on_enter)
        for source in row["source"]:
            rows.setdefault((source, row["trigger"]), []).append(entry)
    return {key: tuple(entries) for key, entries in rows.items()}


#: The compiled tables, one per machine, shared by every :class:`DictTableLifecycle`.
TABLES: Final[dict[str, Table]] = {spec.name: compile_table(spec) for spec in MACHINES}
#: The slot machine's table.
TABLE: Final[Table] = TABLES["slot"]
_ATTRIBUTE: Final[dict[str, str]] = {spec.name: spec.attribute for spec in MACHINES}


def _run(model: ResponseLifecycle, table: Table, attribute: str, trigger: str) -> bool:
    entries = table.get((getattr(model, attribute), trigger))
    if entries is None:
        return False
    for guards, dest, actions, on_enter in entries:
        for guard, target in guards:
            if guard(model) != target:
                break
        else:
            for action in actions:
                action(model)
            if dest is not None:
                setattr(model, attribute, dest)
                for action in on_enter:
                    action(model)
            return True
    return False


class DictTableLifecycle(ResponseLifecycle):
    """``ResponseLifecycle`` driven by :data:`TABLES` instead of ``transitions``.

    Same slots, same code, same logging; only ``_fire`` and ``_fire_in`` differ."""

    __slots__ = ()

    def _fire(self, trigger: str) -> bool:
        source = self.state
        done = _run(self, TABLE, "state", trigger)
        # The same log line as ResponseLifecycle._fire, so logging costs the same in both.
        if done and lifecycle_log.isEnabledFor(logging.INFO):
            lifecycle_log.info(
                "call=%s transition=%s %s->%s response=%s inflight=%s pending=%d held=%d",
                self._cfg.call_id,
                trigger,
                source.value,
                self.state.value,
                self.response_id,
                self.inflight.event_id if self.inflight else None,
                len(self.pending),
                len(self.held_texts),
            )
        return done

    def _fire_in(self, machine: str, trigger: str) -> None:
        attribute = _ATTRIBUTE[machine]
        source = getattr(self, attribute)
        if not _run(self, TABLES[machine], attribute, trigger):
            self._count("machine_refused")
            lifecycle_log.error(
                "call=%s machine=%s refused %s in %s (a gap in the transition table)",
                self._cfg.call_id,
                machine,
                trigger,
                source.value,
            )
            return
        dest = getattr(self, attribute)
        if dest is not source and lifecycle_log.isEnabledFor(logging.INFO):
            lifecycle_log.info(
                "call=%s machine=%s transition=%s %s->%s",
                self._cfg.call_id,
                machine,
                trigger,
                source.value,
                dest.value,
            )


#: Stock ``transitions.Machine`` engines built from the same tables and arguments as the
#: runtime's :data:`realtime_fsm.table.ENGINES` (``FrozenTableMachine``, which only dispatch
#: more leanly): the reference they are checked against and measured next to.
STOCK_MACHINES: Final = {
    spec.name: transitions.Machine(model=None, **machine_kwargs(spec)) for spec in MACHINES
}
STOCK_MACHINE: Final = STOCK_MACHINES["slot"]


class StockTransitionsLifecycle(ResponseLifecycle):
    """``ResponseLifecycle`` driven by unmodified ``transitions.Machine`` engines.

    Same slots, same code, same ``_fire``; only the engines' trigger functions differ."""

    __slots__ = ()
    _triggers: ClassVar[dict[str, dict[str, Callable[..., bool]]]] = {
        name: {trigger: event.trigger for trigger, event in machine.events.items()}
        for name, machine in STOCK_MACHINES.items()
    }


class PlainCallState:
    """The fields of ``ResponseLifecycle`` on an ordinary object: no machine, no ``__slots__``.

    Kept in step with ``ResponseLifecycle.__init__`` by a test (same attribute names)."""

    def __init__(self, config: LifecycleConfig | None = None, *, now: float = 0.0) -> None:
        cfg = config if config is not None else LifecycleConfig()
        self.state: ResponseState = IDLE
        self.create_state: CreateState = C_NONE
        self.turn_state: TurnState = T_NONE
        self.recovery_state: RecoveryState = R_NONE
        self._cfg = cfg
        self._server_creates = cfg.server_creates_response
        self._server_interrupts = cfg.server_interrupts_response
        self._think_limit = cfg.stall_timeout
        self._now = float(now)
        self._ev: object = None
        self._state_deadline: float | None = None
        self._turn_deadline: float | None = None
        self.watchdog_last_fire: float | None = None
        self.response_id: str | None = None
        self._current_unseen = False
        self.response_is_retry = False
        self.response_expects_audio = True
        self.response_requests: tuple[ev.RequestResponse, ...] = ()
        self.audio_deltas = 0
        self.transcript_deltas = 0
        self._first_transcript_at: float | None = None
        self._last_activity = self._now
        self._watchdog_skipped = False
        self._items: dict[str, int] = {}
        self._open_items = 0
        self._open_calls = 0
        self._cut_response: str | None = None
        self._cut_items: dict[str, bool] | None = None
        self._idle_timeout_item: str | None = None
        self.inflight: Inflight | None = None
        self._given_up: dict[str, bool] = {}
        self.pending: list[ev.RequestResponse] = []
        self.held_texts: list[ev.UserText] = []
        self.oob_responses: set[str] = set()
        self._retired: object = None
        self._play: dict[str, list[int]] = {}
        self._out: list[Command] = []
        self._seq = 0
        self._flow: list[str] | None = None
        self.stats: dict[str, int] = {}

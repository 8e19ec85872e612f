"""The ``transitions`` machine class the response table runs on: stock semantics, lean dispatch.

Why a subclass at all
---------------------
Stock ``transitions`` 0.9 resolves every guard and action *by name* on every trigger
(``getattr`` on the model, then a ``callable`` check), wraps each trigger in a
``functools.partial`` and an ``EventData``, pushes it through ``Machine._process`` and emits a
dozen ``logging`` calls (filtered, but each still a call): about 150 Python function calls and
8-12 us per control event here, twice the cost of decoding the event's JSON
(``docs/performance.md``).  A voice bridge handles a few control events per second per call, so
this is not a crisis, but it is pure overhead: the table never changes once built.

:class:`FrozenTableMachine` keeps ``transitions`` as the engine -- it is a ``Machine``; its
constructor builds and validates the states, events, transitions and conditions exactly as
stock does, ``machine.events[name].trigger(model)`` is still the API, and the diagram is drawn
from the same ``Transition`` objects -- but plugs in :class:`LeanEvent` through the
``event_cls`` extension point that ``transitions``' own ``LockedMachine`` and ``AsyncMachine``
use.  On the first trigger for a (model class, state) pair, ``LeanEvent`` compiles that state's
rows into tuples of plain functions looked up on the model's class (so a subclass that overrides
a guard is honoured), and every later trigger is a dict lookup and direct calls.

Semantics are stock ``transitions`` for what the table uses, and the class refuses what it
does not reproduce rather than silently diverge:

* rows for the current state are tried in order; ``conditions`` must return ``== True``, then
  ``unless`` must return ``== False``, short-circuited; the first row that passes runs
  ``prepare`` (before its guards, as stock does), ``before``, then -- unless ``dest`` is
  ``None`` -- the source's ``on_exit``, the state change and the destination's ``on_enter``
  (also for a reflexive row), then ``after``;
* no rows for the state: :class:`transitions.MachineError`, or ``False`` when the state or the
  machine ignores invalid triggers; rows whose guards all fail: ``False``;
* exceptions from callbacks propagate unchanged.

Refused (``ValueError`` at construction): queued processing, ``send_event=True`` and
machine-level hooks (``prepare_event``, ``before_state_change``, ``after_state_change``,
``finalize_event``, ``on_exception``, ``on_final``).  A trigger given extra arguments, or a
callback that is not the name of a plain method of the model's class, takes the stock path.  The
table is frozen after construction: adding states, transitions or models raises.
``tests/test_dict_table_equivalence.py`` runs a stock ``transitions.Machine`` built from the
same table side by side with this one on random event sequences and requires identical results.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from transitions import Event, Machine, MachineError, State

_Func = Callable[[Any], Any]
#: One compiled row: guards (function, required result), prepare, before, destination state
#: value (``None``: internal), source on_exit, destination on_enter, after.
_Row = tuple[
    tuple[tuple[_Func, bool], ...],
    tuple[_Func, ...],
    tuple[_Func, ...],
    Any,
    tuple[_Func, ...],
    tuple[_Func, ...],
    tuple[_Func, ...],
]

_HOOKS = (
    "prepare_event",
    "before_state_change",
    "after_state_change",
    "finalize_event",
    "on_exception",
    "on_final",
)


class _NotPlain(Exception):
    """A callback the fast path cannot call as ``function(model)``."""


class LeanEvent(Event):
    """``Event`` whose ``trigger`` runs rows compiled once per (model class, state)."""

    def __init__(self, name: str, machine: Machine) -> None:
        super().__init__(name, machine)
        self._compiled: dict[tuple[type, Any], tuple[bool, tuple[Any, ...]]] = {}
        self._stock: set[tuple[type, Any]] = set()

    def trigger(self, model: Any, *args: Any, **kwargs: Any) -> bool:
        if args or kwargs:
            return bool(super().trigger(model, *args, **kwargs))
        attribute = self.machine.model_attribute
        value = getattr(model, attribute)
        key = (type(model), value)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compile(key)
            if compiled is None:
                return bool(super().trigger(model))
        lean, rows = compiled
        if not rows:  # no row for this state at all (a state with rows compiles to some)
            return self._no_rows(value)
        if lean:
            # No prepare, on_exit or after callbacks in any row (the lifecycle's tables): the
            # same semantics with three empty loops fewer per row tried.
            for guards, before, dest, on_enter in rows:
                for guard, target in guards:
                    if not guard(model) == target:  # noqa: SIM201 - stock tests ``== target``
                        break
                else:
                    for func in before:
                        func(model)
                    if dest is not None:
                        setattr(model, attribute, dest)
                        for func in on_enter:
                            func(model)
                    return True
            return False
        for guards, prepare, before, dest, on_exit, on_enter, after in rows:
            for func in prepare:
                func(model)
            for guard, target in guards:
                if not guard(model) == target:  # noqa: SIM201 - stock tests ``== target``
                    break
            else:
                for func in before:
                    func(model)
                if dest is not None:
                    for func in on_exit:
                        func(model)
                    setattr(model, attribute, dest)
                    for func in on_enter:
                        func(model)
                for func in after:
                    func(model)
                return True
        return False

    def _no_rows(self, value: Any) -> bool:
        state: State = self.machine.get_state(value)
        ignore = (
            state.ignore_invalid_triggers
            if state.ignore_invalid_triggers is not None
            else self.machine.ignore_invalid_triggers
        )
        if ignore:
            return False
        raise MachineError(
            f"{self.machine.name}Can't trigger event {self.name} from state {state.name}!"
        )

    def _compile(self, key: tuple[type, Any]) -> tuple[bool, tuple[Any, ...]] | None:
        """``(lean, rows)`` for ``key``, or ``None`` when a callback needs the stock path.
        ``lean`` rows are ``(guards, before, dest, on_enter)``: no row has ``prepare``,
        ``on_exit`` or ``after`` callbacks."""
        if key in self._stock:
            return None
        cls, value = key
        machine = self.machine
        state: State = machine.get_state(value)
        transitions = self.transitions.get(state.name)
        if not transitions:
            self._compiled[key] = (True, ())
            return self._compiled[key]

        def plain(callbacks: Any) -> tuple[_Func, ...]:
            funcs = []
            for name in callbacks:
                func = getattr(cls, name, None) if isinstance(name, str) else None
                if not isinstance(func, types.FunctionType):
                    raise _NotPlain(name)
                funcs.append(func)
            return tuple(funcs)

        try:
            rows = []
            for trans in transitions:
                dest = None if trans.dest is None else machine.get_state(trans.dest)
                rows.append(
                    (
                        tuple(
                            zip(
                                plain([c.func for c in trans.conditions]),
                                [c.target for c in trans.conditions],
                                strict=True,
                            )
                        ),
                        plain(trans.prepare),
                        plain(trans.before),
                        None if dest is None else dest.value,
                        () if dest is None else plain(state.on_exit),
                        () if dest is None else plain(dest.on_enter),
                        plain(trans.after),
                    )
                )
        except _NotPlain:
            self._stock.add(key)
            return None
        if all(not (r[1] or r[4] or r[6]) for r in rows):
            compiled: tuple[bool, tuple[Any, ...]] = (
                True,
                tuple((r[0], r[2], r[3], r[5]) for r in rows),
            )
        else:
            compiled = (False, tuple(rows))
        self._compiled[key] = compiled
        return compiled


class FrozenTableMachine(Machine):
    """A ``transitions.Machine`` whose table is fixed at construction and dispatched leanly."""

    event_cls = LeanEvent

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._frozen = False
        super().__init__(*args, **kwargs)
        if self.has_queue:
            raise ValueError("FrozenTableMachine does not support queued processing")
        if self.send_event:
            raise ValueError("FrozenTableMachine does not support send_event=True")
        for hook in _HOOKS:
            if getattr(self, hook):
                raise ValueError(f"FrozenTableMachine does not support machine-level {hook}")
        self._frozen = True

    def _refuse(self, what: str) -> None:
        if self._frozen:
            raise RuntimeError(f"the table of a FrozenTableMachine is fixed; cannot {what}")

    def add_states(self, *args: Any, **kwargs: Any) -> None:
        self._refuse("add states")
        super().add_states(*args, **kwargs)

    def add_transition(self, *args: Any, **kwargs: Any) -> None:
        self._refuse("add transitions")
        super().add_transition(*args, **kwargs)

    def add_model(self, model: Any, initial: Any = None) -> None:
        self._refuse("register models (drive plain objects with events[name].trigger)")
        super().add_model(model, initial)

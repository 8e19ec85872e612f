"""``FrozenTableMachine`` keeps stock ``transitions`` semantics, and refuses what it can't keep.

The response table itself is checked against a stock machine in
``tests/test_dict_table_equivalence.py``; here a small table exercises the engine's corners the
response table does not use (``prepare``/``after``, ``on_exit``, reflexive rows, ignored
triggers, callbacks that are not plain methods, subclasses overriding a guard)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from transitions import Machine, MachineError

from realtime_fsm.engine import _HOOKS, FrozenTableMachine


class Model:
    def __init__(self, state: str = "a", ok: bool = True) -> None:
        self.state = state
        self.ok = ok
        self.log: list[str] = []
        # A callback found on the instance, not the class: the stock path resolves it.
        self.on_instance = lambda: self.log.append("on_instance")

    def guard(self) -> bool:
        self.log.append("guard")
        return self.ok

    def never(self) -> bool:
        self.log.append("never")
        return False

    def prep(self) -> None:
        self.log.append("prep")

    def act(self) -> None:
        self.log.append(f"act@{self.state}")

    def post(self) -> None:
        self.log.append(f"post@{self.state}")

    def enter_b(self) -> None:
        self.log.append("enter_b")

    def exit_a(self) -> None:
        self.log.append("exit_a")

    def boom(self) -> None:
        raise ValueError("boom")

    @property
    def prop_guard(self) -> bool:
        self.log.append("prop")
        return True


class Sub(Model):
    def guard(self) -> bool:
        self.log.append("sub_guard")
        return not self.ok


#: Where a callback given as a callable (not a name) leaves its mark.
_CALLED: list[object] = []


def _mark() -> None:
    _CALLED.append("called")


STATES: list[Any] = [
    {"name": "a", "on_exit": ["exit_a"]},
    {"name": "b", "on_enter": ["enter_b"]},
    {"name": "c", "ignore_invalid_triggers": True},
]
TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "go", "source": "a", "dest": "b", "conditions": ["never"]},
    {
        "trigger": "go",
        "source": "a",
        "dest": "b",
        "conditions": ["guard"],
        "prepare": ["prep"],
        "before": ["act"],
        "after": ["post"],
    },
    {"trigger": "go", "source": "b", "dest": "b", "before": ["act"]},  # reflexive: re-enters
    {"trigger": "stay", "source": "a", "dest": None, "unless": ["never"], "before": ["act"]},
    {"trigger": "fail", "source": "a", "dest": "b", "before": ["boom"]},
    {"trigger": "prop", "source": "a", "dest": "c", "conditions": ["prop_guard"]},
    # One kind of callback per row, so the lean path is never taken where it would skip one.
    {"trigger": "prep_only", "source": ["a", "b"], "dest": "c", "prepare": ["prep"]},
    {"trigger": "exit_only", "source": "a", "dest": "c"},  # a's on_exit, c has no on_enter
    {"trigger": "after_only", "source": ["a", "b"], "dest": "c", "after": ["post"]},
    {"trigger": "inside_after", "source": "a", "dest": None, "after": ["post"]},
    {"trigger": "callable", "source": ["a", "b"], "dest": "c", "before": [_mark]},
    {"trigger": "instance", "source": ["a", "b"], "dest": "c", "before": ["on_instance"]},
]


def machines() -> tuple[Machine, Machine]:
    kwargs: dict[str, Any] = {
        "states": STATES,
        "transitions": TRANSITIONS,
        "initial": "a",
        "auto_transitions": False,
    }
    return Machine(model=None, **kwargs), FrozenTableMachine(model=None, **kwargs)


def outcome(machine: Machine, model: Model, trigger: str) -> tuple[object, str, list[str]]:
    try:
        result: object = machine.events[trigger].trigger(model)
    except (MachineError, ValueError) as exc:
        result = (type(exc).__name__, str(exc))
    return result, model.state, model.log


@pytest.mark.parametrize("cls", [Model, Sub])
@pytest.mark.parametrize("start", ["a", "b", "c"])
@pytest.mark.parametrize("ok", [True, False])
@pytest.mark.parametrize(
    "trigger",
    [
        "go",
        "stay",
        "fail",
        "prop",
        "prep_only",
        "exit_only",
        "after_only",
        "inside_after",
        "callable",
        "instance",
    ],
)
def test_same_result_state_and_calls_as_stock(
    cls: type[Model], start: str, ok: bool, trigger: str
) -> None:
    stock, lean = machines()
    for _ in range(2):  # the second round runs the compiled rows
        _CALLED.clear()
        want = (outcome(stock, cls(start, ok), trigger), list(_CALLED))
        _CALLED.clear()
        got = (outcome(lean, cls(start, ok), trigger), list(_CALLED))
        assert got == want


def test_lean_path_is_taken_for_plain_methods() -> None:
    _, lean = machines()
    event = lean.events["go"]
    event.trigger(Model())
    assert event._compiled[Model, "a"][0] is False  # prepare and after: the full loop
    event.trigger(Model("b"))
    lean_flag, rows = event._compiled[Model, "b"]
    assert lean_flag is True  # only a before action: the lean loop
    assert rows == (((), (Model.act,), "b", (Model.enter_b,)),)
    lean.events["exit_only"].trigger(Model())
    assert lean.events["exit_only"]._compiled[Model, "a"][0] is False  # a's on_exit
    lean.events["prop"].trigger(Model())  # a property guard: the stock path, every time
    assert (Model, "a") in lean.events["prop"]._stock


def test_extra_arguments_take_the_stock_path() -> None:
    class WithArgs(Model):
        def act(self, *args: object) -> None:
            self.log.append(f"act{args}")

        def enter_b(self, *args: object) -> None:
            self.log.append(f"enter_b{args}")

    stock, lean = machines()
    a, b = WithArgs("b"), WithArgs("b")
    assert stock.events["go"].trigger(a, 1) == lean.events["go"].trigger(b, 1)
    assert a.log == b.log == ["act(1,)", "enter_b(1,)"]


def test_the_table_is_frozen() -> None:
    _, lean = machines()
    fixed = "the table of a FrozenTableMachine is fixed; cannot "
    with pytest.raises(RuntimeError, match=f"^{fixed}add transitions$"):
        lean.add_transition("x", "a", "b")
    with pytest.raises(RuntimeError, match=f"^{fixed}add states$"):
        lean.add_states(["d"])
    with pytest.raises(RuntimeError, match=re.escape(f"{fixed}register models (drive plain")):
        lean.add_model(Model())
    assert list(lean.states) == ["a", "b", "c"]
    assert "x" not in lean.events


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queued": True}, "does not support queued processing"),
        ({"send_event": True}, "does not support send_event=True"),
        *(({hook: "x"}, f"does not support machine-level {hook}") for hook in _HOOKS),
    ],
)
def test_unsupported_configurations_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^FrozenTableMachine {re.escape(message)}$"):
        FrozenTableMachine(model=None, states=["a"], initial="a", **kwargs)


def test_a_registered_model_positional_arguments_and_keyword_arguments_work_as_stock() -> None:
    """The runtime never registers a model or passes arguments, but the class is a
    ``transitions.Machine``: the stock ways of building and triggering it still work."""
    model = Model()
    lean = FrozenTableMachine(model, STATES, initial="b", transitions=TRANSITIONS)
    assert model.state == "b"
    assert model.trigger("go") is True  # transitions' convenience method, on the lean event
    assert model.log == ["act@b", "enter_b"]

    class WithKwargs(Model):
        def act(self, **kwargs: object) -> None:
            self.log.append(f"act{sorted(kwargs.items())}")

        def enter_b(self, **kwargs: object) -> None:
            self.log.append(f"enter_b{sorted(kwargs.items())}")

    other = WithKwargs("b")
    assert lean.events["go"].trigger(other, x=1) is True
    assert other.log == ["act[('x', 1)]", "enter_b[('x', 1)]"]


def test_a_machine_that_ignores_invalid_triggers_ignores_them_when_lean_too() -> None:
    kwargs: dict[str, Any] = {"states": STATES, "transitions": TRANSITIONS, "initial": "a"}
    stock = Machine(model=None, ignore_invalid_triggers=True, **kwargs)
    lean = FrozenTableMachine(model=None, ignore_invalid_triggers=True, **kwargs)
    for machine in (stock, lean):
        assert machine.events["stay"].trigger(Model("b")) is False  # no row in b: ignored

"""The package's layers, enforced: value types -> table/engine -> lifecycle -> protocol
adapters -> the call (sans-IO) -> asyncio drivers, servers, traces -> CLI, simulator.

Each module imports only modules of its own layer or below (no arrow back up), the top-level
modules import each other without a cycle, and nothing below the drivers imports asyncio,
sockets, threads or a clock: the sans-IO layers can be driven by any framework, a test, or a
trace replay, at any speed.  Read from the source (``ast``), so a lazy import inside a function
counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "realtime_fsm"

LAYERS: list[set[str]] = [
    {
        "errors",
        "_wire",
        "events",
        "commands",
        "config",
        "history",
        "tools",
        "malloc_tuning",
        "logsafe",
        "credentials",
        "admission",
        "states",
        "validators",
    },
    {"engine", "table", "diagram"},
    {"lifecycle"},
    {"openai_realtime", "twilio_media", "http_head"},
    {"call"},
    {
        "bounded",
        "prestart",
        "webserver",
        "sockets",
        "tool_runner",
        "tool_driver",
        "rotation_driver",
        "outbox",
        "core_driver",
        "bridge",
        "trace",
        "upstream",
        "drain",
        "server",
        "asgi",
        "telemetry",
        "asgi_drain",
    },
    {
        "replay",
        "trace_format",
        "trace_rules",
        "timeline",
        "timeline_page",
        "demo",
        "testing",
        "cli",
        "serve_command",
        "workers",
        "__main__",
        "__init__",
    },
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
#: The layer of the asyncio drivers: everything below it is sans-IO.
DRIVERS = RANK["bridge"]
#: What a sans-IO module must not import (I/O, concurrency, a clock of its own).
IO_MODULES = {
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "threading",
    "concurrent",
    "multiprocessing",
    "subprocess",
    "time",
    "websockets",
    "starlette",
    "uvicorn",
}


def _top(path: Path) -> str:
    """The top-level module (or package) of the package a source file belongs to."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level modules of this package, external top-level modules) ``path`` imports."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = ["realtime_fsm", *rel.parts]
    package = parts if path.name == "__init__.py" else parts[:-1]
    if path.name == "__init__.py":
        package = parts[:-1]
    ours: set[str] = set()
    external: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
            else:
                target = (node.module or "").split(".")
            if target[0] != "realtime_fsm":
                external.add(target[0])
            elif len(target) > 1:
                ours.add(target[1])
            else:  # ``from .. import events``: the names are the modules
                ours.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                head = alias.name.split(".")
                if head[0] == "realtime_fsm":
                    if len(head) > 1:
                        ours.add(head[1])
                else:
                    external.add(head[0])
    return ours, external


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    tops = {_top(path) for path in SOURCES}
    assert tops - RANK.keys() == set(), "a new module: put it in a layer of this test"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_arrow_back_up_and_no_io_below_the_drivers(path: Path) -> None:
    me = _top(path)
    ours, external = _imports(path)
    ours.discard(me)
    above = {name for name in ours if RANK[name] > RANK[me]}
    assert above == set(), f"{me} (layer {RANK[me]}) imports higher layers: {sorted(above)}"
    if RANK[me] < DRIVERS:
        io = external & IO_MODULES
        assert io == set(), f"{me} is below the drivers but imports {sorted(io)}"


def test_the_top_level_modules_import_each_other_without_a_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        me = _top(path)
        ours, _ = _imports(path)
        graph.setdefault(me, set()).update(ours - {me, "__init__"})
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 2:
            return
        assert state.get(node) != 1, f"import cycle: {' -> '.join([*trail, node])}"
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])

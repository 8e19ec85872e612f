"""The project's size rule, enforced: no module over 600 lines and no class over 500 in the
package, the benchmarks and the examples; no test module over 800 lines.

A module past the limit holds more than its name says, and gets split by what it holds (as
``benchmarks/bench_core.py`` and ``bench_load.py`` were); read from the source with ``ast``, so
a class's size runs from its ``class`` line to its last.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: (folder, most lines per module): the library and what ships beside it, and the tests.
LIMITS = (("realtime_fsm", 600), ("benchmarks", 600), ("examples", 600), ("tests", 800))
CLASS_LIMIT = 500
FILES = [
    (path, limit) for folder, limit in LIMITS for path in sorted((ROOT / folder).rglob("*.py"))
]


def test_every_folder_has_modules_to_check() -> None:
    """A folder renamed or moved would otherwise pass by holding nothing."""
    for folder, _limit in LIMITS:
        assert any(path.is_relative_to(ROOT / folder) for path, _ in FILES), folder


@pytest.mark.parametrize(
    ("path", "limit"), FILES, ids=[str(path.relative_to(ROOT)) for path, _ in FILES]
)
def test_module_and_its_classes_within_the_limits(path: Path, limit: int) -> None:
    source = path.read_text(encoding="utf-8")
    lines = len(source.splitlines())
    assert lines <= limit, f"{lines} lines, over {limit}: split it by what it holds"
    too_big = {
        node.name: size
        for node in ast.walk(ast.parse(source, filename=str(path)))
        if isinstance(node, ast.ClassDef)
        and (size := (node.end_lineno or node.lineno) - node.lineno + 1) > CLASS_LIMIT
    }
    assert not too_big, f"classes over {CLASS_LIMIT} lines: {too_big}"

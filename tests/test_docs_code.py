"""The Python blocks of README.md and docs/ work as written, as a reader copies them.

Every ``python`` block is type-checked with mypy against this package (each import, name,
attribute and call signature must exist), and every block that does something on its own is
run: the simulator example of docs/testing.md plays a whole call, the FastAPI example of
docs/bridge.md is served by uvicorn and its "test it in 15 lines" passes, the core example of
the README drives the machine through a barge-in and a timeout, the apps are built.

What a block leaves to the reader (their order service, their sockets, their parser) is
declared in :data:`READER_SUPPLIES`, with the block it belongs to; a block without an entry
fails here, so no example is added that nobody checks.  Imports are not the reader's: a block
that uses ``os`` or ``FastAPI`` imports them, since a copied block must run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(?:python|py)\n(.*?)^```", re.MULTILINE | re.DOTALL)


class Block(NamedTuple):
    page: str  # relative to the repository
    number: int  # the block's place among the page's Python blocks, from 0
    line: int  # where it starts in the page
    code: str

    @property
    def module(self) -> str:
        stem = Path(self.page).stem.replace("-", "_").lower()
        return f"doc_{stem}_{self.number}"


def blocks() -> list[Block]:
    found = []
    for path in PAGES:
        text = path.read_text()
        for number, match in enumerate(FENCE.finditer(text)):
            line = text.count("\n", 0, match.start()) + 1
            found.append(Block(str(path.relative_to(ROOT)), number, line, match.group(1)))
    return found


#: Per block (page, its number on the page): how it starts (so that a block moved or inserted
#: is noticed), and what the reader supplies, as declarations mypy and Python both accept.
READER_SUPPLIES: dict[tuple[str, int], tuple[str, str]] = {
    ("README.md", 0): ("import os\n\nfrom fastapi", "orders: Any"),
    ("README.md", 1): ("import time\n", ""),
    ("docs/app-api.md", 0): ("import asyncio\nimport logging", "orders: Any\ncrm: Any"),
    ("docs/app-api.md", 1): (
        "import time\n",
        "write_openai: Any\nwrite_twilio: Any\nhandle_event: Any",
    ),
    ("docs/bridge.md", 0): (
        "from realtime_fsm.openai_realtime import SessionConfig",
        "from realtime_fsm.tools import Tool\n\nlookup_order: Tool",
    ),
    ("docs/bridge.md", 1): ("import os\n\nfrom realtime_fsm.bridge", ""),
    # The app the next block tests, imported there as ``myapp``.
    ("docs/bridge.md", 2): ("import os\nfrom fastapi", ""),
    ("docs/bridge.md", 3): ("import asyncio, uvicorn\nfrom myapp import create_app", ""),
    ("docs/core.md", 0): (
        "import time\n",
        "my_openai_socket: Any\nrender: Any\nmy_openai_events: Any\nmy_phone: Any\n"
        "to_lifecycle_event: Any",
    ),
    ("docs/deploying.md", 0): ("import os\nfrom collections.abc", ""),
    # The same program as the block before it.
    ("docs/deploying.md", 1): ("import asyncio\n", "from doc_deploying_0 import app, voice"),
    ("docs/observability.md", 0): ("import asyncio\n", ""),
    ("docs/testing.md", 0): ("import asyncio\n", ""),
    # Inside the scenario of the block before it.
    ("docs/testing.md", 1): (
        "ai.script_tool_call(",
        "from realtime_fsm.testing import FakeRealtimeServer\n\nai: FakeRealtimeServer",
    ),
    ("docs/traces.md", 0): ("import os\n", ""),
}

#: Blocks not run: they serve until stopped, or are a fragment of another block's program.
NOT_RUN = {
    ("docs/bridge.md", 0): "uses the reader's lookup_order tool",
    ("docs/deploying.md", 1): "serves on port 8080 until a signal",
    ("docs/observability.md", 0): "serves on port 8080 until a signal",
    ("docs/testing.md", 1): "a part of a scenario",
}

#: Settings the blocks read from the environment, as a deployment would have them.
ENV = {
    "OPENAI_API_KEY": "sk-test",
    "TWILIO_AUTH_TOKEN": "test-token",
    "AZURE_OPENAI_API_KEY": "azure-test",
    "PUBLIC_URL": "https://voice.example.com",
}


def write_modules(directory: Path) -> dict[tuple[str, int], Path]:
    """Each block as a module: the reader's declarations, then the block as written."""
    paths = {}
    for block in blocks():
        _start, supplied = READER_SUPPLIES[(block.page, block.number)]
        head = "from typing import Any\n\n" + supplied + "\n\n" if supplied else ""
        source = head + block.code
        path = directory / f"{block.module}.py"
        path.write_text(source)
        paths[(block.page, block.number)] = path
    (directory / "myapp.py").write_text(paths[("docs/bridge.md", 2)].read_text())
    return paths


def test_every_block_is_known_and_starts_as_recorded() -> None:
    found = {(b.page, b.number): b for b in blocks()}
    unknown = sorted(set(found) - set(READER_SUPPLIES))
    assert not unknown, (
        f"Python blocks with no entry in READER_SUPPLIES: {unknown}; add one (what the reader"
        " supplies, often nothing) so that the block is checked"
    )
    gone = sorted(set(READER_SUPPLIES) - set(found))
    assert not gone, f"READER_SUPPLIES names blocks that are no longer there: {gone}"
    for key, block in found.items():
        start = READER_SUPPLIES[key][0]
        assert block.code.startswith(start), (
            f"{block.page}:{block.line}: the block starts {block.code[:60]!r}, not {start!r}:"
            " a block was moved or added; update READER_SUPPLIES"
        )


def test_every_block_is_python_a_script_can_hold() -> None:
    """No top-level ``await`` or ``async with``: pasted into a file, a block must compile."""
    for block in blocks():
        try:
            compile(block.code, f"{block.page}:{block.line}", "exec")
        except SyntaxError as exc:
            pytest.fail(f"{block.page}:{block.line + (exc.lineno or 0)}: {exc.msg}")


def test_the_blocks_type_check_against_the_package(tmp_path: Path) -> None:
    """mypy, as a reader's editor would run it: every name the blocks import exists, and every
    call matches its signature (errors inside the package itself are not this test's)."""
    pytest.importorskip("mypy")
    for needed in ("fastapi", "uvicorn", "pydantic", "docstring_parser"):
        pytest.importorskip(needed)
    paths = write_modules(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MYPYPATH"] = str(ROOT)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--check-untyped-defs",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--no-error-summary",
            *(str(p) for p in paths.values()),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    by_module = {paths[(b.page, b.number)].name: b for b in blocks()}
    report = []
    for line in done.stdout.splitlines():
        name, _, rest = line.partition(":")
        number, _, message = rest.partition(":")
        block = by_module.get(name)
        if block is None or not number.isdigit():
            report.append(line)
            continue
        # The module's line, less the reader's declarations, is the page's line.
        added = paths[(block.page, block.number)].read_text().count("\n") - block.code.count("\n")
        report.append(f"{block.page}:{block.line + int(number) - added}:{message}")
    assert done.returncode == 0, "\n".join(report) + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "key",
    [key for key in READER_SUPPLIES if key not in NOT_RUN and key != ("docs/bridge.md", 3)],
    ids=lambda key: f"{key[0]}-{key[1]}",
)
def test_the_block_runs(key: tuple[str, int], tmp_path: Path) -> None:
    """Each block that stands on its own runs to its end (the apps are built, the scenarios
    play, the core example drives the machine), with the settings it reads from the
    environment."""
    for needed in ("fastapi", "uvicorn", "pydantic", "docstring_parser", "twilio"):
        pytest.importorskip(needed)
    path = write_modules(tmp_path)[key]
    env = dict(os.environ, **ENV, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{key}: {done.stdout}\n{done.stderr}"


@pytest.mark.slow
def test_the_fastapi_test_of_bridge_md_passes(tmp_path: Path) -> None:
    """bridge.md's "test it with the simulator": its app served by uvicorn, a whole call."""
    for needed in ("fastapi", "uvicorn"):
        pytest.importorskip(needed)
    path = write_modules(tmp_path)[("docs/bridge.md", 3)]
    env = dict(os.environ, **ENV, PYTHONPATH=os.pathsep.join((str(ROOT), str(tmp_path))))
    done = subprocess.run(
        [sys.executable, "-c", f"import {path.stem} as t; t.test_a_whole_call(); print('passed')"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "passed" in done.stdout, done.stdout + done.stderr

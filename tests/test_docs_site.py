"""The documentation site (mkdocs.yml) is configured: every page of docs/ is in its navigation
and every navigation entry exists, the CLI reference hook renders each command's help, and (slow,
with the ``docs`` extra installed) ``mkdocs build --strict`` passes, as CI runs it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONFIG = (ROOT / "mkdocs.yml").read_text()
#: The configuration without its comments (which name what it leaves out).
SETTINGS = re.sub(r"(?m)^\s*#.*$", "", CONFIG)


def _nav_pages() -> list[str]:
    nav = CONFIG[CONFIG.index("\nnav:") :]
    return re.findall(r"^\s*-\s+(?:[^:\n]+:\s+)?(\S+\.md)\s*$", nav, flags=re.M)


def _hook() -> object:
    spec = importlib.util.spec_from_file_location(
        "cli_reference", DOCS / "_hooks" / "cli_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = _nav_pages()
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    missing = [page for page in nav if not (DOCS / page).is_file()]
    assert not missing, f"nav entries without a file: {missing}"
    pages = {
        str(path.relative_to(DOCS))
        for path in DOCS.rglob("*.md")
        if not path.relative_to(DOCS).parts[0].startswith("_")
    }
    orphans = sorted(pages - set(nav))
    assert not orphans, f"pages in docs/ that the site's nav does not reach: {orphans}"


def test_offline_and_strict_build_settings() -> None:
    """Nothing fetched at build time: no plugin that downloads (privacy, social, inventories),
    the theme's web fonts off; the API reference comes from the docstrings (mkdocstrings)."""
    for fetching in ("privacy", "social", "import:", "inventories"):
        assert fetching not in SETTINGS, fetching
    assert "font: false" in SETTINGS
    assert "mkdocstrings:" in SETTINGS
    api = "".join(p.read_text() for p in (DOCS / "reference" / "api").glob("*.md"))
    for module in ("realtime_fsm.lifecycle", "realtime_fsm.call", "realtime_fsm.bridge"):
        assert f"::: {module}" in api, module


def test_cli_reference_has_a_section_per_command() -> None:
    markdown = _hook().cli_reference()  # type: ignore[attr-defined]
    commands = re.search(r"\{([a-z,-]+)\}", markdown)
    assert commands is not None
    for command in commands.group(1).split(","):
        assert f"## realtime-fsm {command}\n" in markdown
    assert "usage: realtime-fsm demo" in markdown


def test_sphinx_roles_are_shown_as_code() -> None:
    html = "see :class:<code>~realtime_fsm.call.CallSession</code> and :func:<code>x.y</code>"
    cleaned = _hook().on_page_content(html)  # type: ignore[attr-defined]
    assert cleaned == "see <code>CallSession</code> and <code>x.y</code>"


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("griffe_sphinx")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "reference" / "api" / "core" / "index.html").is_file()
    cli = (tmp_path / "reference" / "cli" / "index.html").read_text()
    assert "realtime-fsm demo" in cli


def test_performance_page_stays_short() -> None:
    """The goals, the method, the latest figures and how to reproduce them; the round-by-round
    history lives in git, not on the page."""
    assert len((DOCS / "performance.md").read_text().splitlines()) <= 300


def test_the_metrics_reference_is_observability_md_s_table_with_its_links_fixed() -> None:
    table = _hook().observability_metrics(DOCS)  # type: ignore[attr-defined]
    assert "`realtime_fsm_calls_total`" in table and "--8<--" not in table
    for target in re.findall(r"\]\(([^)#]+)", table):
        assert target.startswith("../") and (DOCS / "reference" / target).resolve().is_file()

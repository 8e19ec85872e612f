"""MkDocs hooks for the documentation site.

- The CLI reference page shows ``realtime-fsm --help`` and each command's help, as the installed
  code prints them, so the page cannot drift from the parser.  A page asks for it with the line
  ``<!-- cli-help -->``; the commands are read from the top-level usage line
  (``{demo,replay,...}``), so a new command appears without editing this hook.
- The metrics reference shows the table of ``observability.md`` (kept there, where a test
  checks every metric is listed), between its ``--8<-- [start:metrics]`` and ``[end:metrics]``
  comments, at the line ``<!-- observability-metrics -->``, with its relative links made
  relative to the reference page.
- The docstrings use Sphinx roles (``:class:`~x.Y` ``), which Markdown renders as a stray
  ``:class:`` before the code: the API pages show the code alone (the last dotted part for
  ``~``).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path
from typing import Any

MARKER = "<!-- cli-help -->"
METRICS = "<!-- observability-metrics -->"
_LINK = re.compile(r"\]\((?![a-z]+:|#|/)([^)]+)\)")


def _help(argv: list[str]) -> str:
    from realtime_fsm.cli import main

    out = io.StringIO()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fixed, so builds agree
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main([*argv, "--help"])
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return out.getvalue().rstrip()


def cli_reference() -> str:
    """Markdown: the top-level help, then one section per command."""
    top = _help([])
    found = re.search(r"\{([a-z,-]+)\}", top)
    if found is None:
        raise RuntimeError(f"no command list in realtime-fsm --help:\n{top}")
    parts = ["## realtime-fsm", "", "```text", top, "```"]
    for command in found.group(1).split(","):
        parts += ["", f"## realtime-fsm {command}", "", "```text", _help([command]), "```"]
    return "\n".join(parts)


_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const):<code>(~?)([^<]*)</code>")


def _plain_role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(_plain_role, html)


def observability_metrics(docs_dir: Path) -> str:
    """The metrics section of observability.md, its links made relative to ``reference/``."""
    text = (docs_dir / "observability.md").read_text()
    start = text.index("--8<-- [start:metrics]")
    start = text.index("\n", start) + 1
    end = text.rindex("\n", 0, text.index("--8<-- [end:metrics]"))
    return _LINK.sub(lambda m: f"](../{m.group(1)})", text[start:end])


def on_page_markdown(markdown: str, config: Any, **kwargs: Any) -> str:
    if METRICS in markdown:
        markdown = markdown.replace(METRICS, observability_metrics(Path(config["docs_dir"])))
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_reference())
    return markdown

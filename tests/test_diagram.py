"""The state diagram in docs/ is generated from the table; this fails when it is stale."""

from __future__ import annotations

from realtime_fsm import diagram
from realtime_fsm.table import TRANSITIONS, ResponseState


def test_docs_diagram_is_up_to_date() -> None:
    current = diagram.DOC_PATH.read_text(encoding="utf-8")
    assert current == diagram.document(), (
        "docs/state-diagram.md is stale: run `python -m realtime_fsm.diagram --write`"
    )


def test_every_state_change_of_the_table_is_drawn() -> None:
    text = diagram.mermaid()
    for row in TRANSITIONS:
        if row["dest"] is None:
            continue
        for source in row["source"]:
            assert f"{source.name} --> {row['dest'].name}: " in text
    for state in ResponseState:
        assert f'state "{state.name}" as {state.name}' in text

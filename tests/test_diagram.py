"""The state diagram in docs/ is generated from the table; this fails when it is stale."""

from __future__ import annotations

import pytest

from realtime_fsm import diagram
from realtime_fsm.table import ALL_MACHINES, MachineSpec


def test_docs_diagram_is_up_to_date() -> None:
    current = diagram.DOC_PATH.read_text(encoding="utf-8")
    assert current == diagram.document(), (
        "docs/state-diagram.md is stale: run `python -m realtime_fsm.diagram --write`"
    )


@pytest.mark.parametrize("spec", ALL_MACHINES, ids=[spec.name for spec in ALL_MACHINES])
def test_every_state_change_of_every_machine_is_drawn(spec: MachineSpec) -> None:
    text = diagram.mermaid(spec)
    for row in spec.rows:
        if row["dest"] is None:
            continue
        for source in row["source"]:
            assert f"{source.name} --> {row['dest'].name}: " in text
    for state in spec.states:
        assert f'state "{state.name}" as {state.name}' in text
    assert f"## The {spec.name} machine" in diagram.document()

"""Hypothesis settings: derandomized under CI so a rare counterexample cannot make CI flaky;
random (and so still exploring) on developers' machines.  The mutation run
(``RTFSM_MUTATION=1 mutmut run``, README "Development") is derandomized too, and does not shrink: a
mutant is killed by the first failure, and shrinking it would only cost time."""

from __future__ import annotations

import os

import pytest
from hypothesis import Phase, settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile(
    "mutation",
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
)
if os.environ.get("RTFSM_MUTATION"):
    settings.load_profile("mutation")
elif os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    """The mutation run selects its tests by file (pyproject, ``[tool.mutmut]``) and must run all
    of them, the slow property test included: ``-m 'not slow'`` from ``addopts`` is lifted."""
    if os.environ.get("RTFSM_MUTATION"):
        config.option.markexpr = ""

"""Hypothesis settings: derandomized under CI so a rare counterexample cannot make CI flaky;
random (and so still exploring) on developers' machines."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

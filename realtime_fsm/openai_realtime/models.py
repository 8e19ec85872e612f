"""Realtime and transcription model names: the defaults, OpenAI's announced shutdowns, and
which models reason.

A pure table: the ``openai`` package is not a runtime dependency, so nothing here imports it.
The tables are copied from its types and checked against them by
``tests/test_models.py``, which parses the installed SDK's docstrings, so an SDK update that
deprecates another model fails that test instead of leaving this table stale.

Sources (``openai`` 3.63.0):

* ``openai/types/realtime/realtime_session_create_request.py``, field ``model``: the listed
  Realtime models and "Deprecated values: ... Announced shutdown date: 2027-01-20";
* ``openai/types/realtime/audio_transcription.py``, field ``model``: the input transcription
  models and "Deprecated values: ... Announced shutdown date: 2027-02-26";
* the ``reasoning`` and ``parallel_tool_calls`` docstrings ("reasoning-capable Realtime models
  such as ``gpt-realtime-2``") and the model pages of ``gpt-realtime-2.1`` and
  ``gpt-realtime-2.1-mini`` ("Reasoning token support"), for :data:`REASONING_MODELS`.

OpenAI points to https://developers.openai.com/api/docs/deprecations for its recommended
replacements; :attr:`Deprecation.replacement` is this library's suggestion (the current model
of the same size: openai-agents 0.24 and pipecat 1.14 default to ``gpt-realtime-2.1``), not a
quote from that page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

import attrs

#: The Realtime model a session runs when none is configured: current, GA, not deprecated.
DEFAULT_REALTIME_MODEL: Final = "gpt-realtime-2.1"
#: Input transcription for GA sessions when none is configured ("current options" of
#: ``audio_transcription.py`` that carry no shutdown date; it takes ``language``).
DEFAULT_GA_TRANSCRIPTION_MODEL: Final = "gpt-transcribe"
#: Beta sessions: the beta types list only ``whisper-1``, ``gpt-4o-transcribe`` and
#: ``gpt-4o-mini-transcribe``, all with a shutdown date, so there is no current choice; a beta
#: session logs the deprecation at start.
DEFAULT_BETA_TRANSCRIPTION_MODEL: Final = "whisper-1"

#: Where OpenAI lists its deprecations and recommended replacements.
DEPRECATIONS_URL: Final = "https://developers.openai.com/api/docs/deprecations"

_REALTIME_SHUTDOWN: Final = "2027-01-20"
_TRANSCRIPTION_SHUTDOWN: Final = "2027-02-26"

#: Realtime model -> announced shutdown date (ISO), exactly as the SDK's docstring lists them.
REALTIME_MODEL_SHUTDOWNS: Final[Mapping[str, str]] = {
    "gpt-realtime": _REALTIME_SHUTDOWN,
    "gpt-realtime-2025-08-28": _REALTIME_SHUTDOWN,
    "gpt-realtime-mini": _REALTIME_SHUTDOWN,
    "gpt-realtime-mini-2025-12-15": _REALTIME_SHUTDOWN,
    "gpt-audio-mini": _REALTIME_SHUTDOWN,
    "gpt-audio-mini-2025-12-15": _REALTIME_SHUTDOWN,
}
#: Transcription model -> announced shutdown date (ISO), as the SDK's docstring lists them.
TRANSCRIPTION_MODEL_SHUTDOWNS: Final[Mapping[str, str]] = {
    "whisper-1": _TRANSCRIPTION_SHUTDOWN,
    "gpt-4o-mini-transcribe": _TRANSCRIPTION_SHUTDOWN,
    "gpt-4o-mini-transcribe-2025-12-15": _TRANSCRIPTION_SHUTDOWN,
    "gpt-4o-transcribe": _TRANSCRIPTION_SHUTDOWN,
    "gpt-4o-transcribe-diarize": _TRANSCRIPTION_SHUTDOWN,
}

#: Listed Realtime models that reason (take ``reasoning`` and ``parallel_tool_calls``).
REASONING_MODELS: Final = frozenset({"gpt-realtime-2", "gpt-realtime-2.1", "gpt-realtime-2.1-mini"})
#: Listed Realtime models that do not.  With :data:`REASONING_MODELS` this is every model the
#: SDK lists (checked by the test), so a new listed model must be sorted into one of the two.
NON_REASONING_MODELS: Final = frozenset(
    {
        "gpt-realtime",
        "gpt-realtime-1.5",
        "gpt-realtime-2025-08-28",
        "gpt-4o-realtime-preview",
        "gpt-4o-realtime-preview-2024-10-01",
        "gpt-4o-realtime-preview-2024-12-17",
        "gpt-4o-realtime-preview-2025-06-03",
        "gpt-4o-mini-realtime-preview",
        "gpt-4o-mini-realtime-preview-2024-12-17",
        "gpt-realtime-mini",
        "gpt-realtime-mini-2025-10-06",
        "gpt-realtime-mini-2025-12-15",
        "gpt-audio-1.5",
        "gpt-audio-mini",
        "gpt-audio-mini-2025-10-06",
        "gpt-audio-mini-2025-12-15",
    }
)

#: Session fields only reasoning models take (the SessionConfig attribute names).
REASONING_ONLY_FIELDS: Final = ("reasoning_effort", "parallel_tool_calls")


@attrs.frozen
class Deprecation:
    """A model OpenAI announced a shutdown for, and what this library suggests instead."""

    model: str
    kind: Literal["realtime", "transcription"]
    #: ISO date, as announced.
    shutdown: str
    replacement: str

    def describe(self) -> str:
        """One log line's worth: the model, the date, the suggestion and where to check."""
        what = "Realtime model" if self.kind == "realtime" else "transcription model"
        return (
            f"{what} {self.model!r} is deprecated: OpenAI announced its shutdown for"
            f" {self.shutdown}; suggested replacement: {self.replacement!r}"
            f" (see {DEPRECATIONS_URL})"
        )


def realtime_deprecation(model: str) -> Deprecation | None:
    """The announced shutdown of Realtime ``model``, or ``None`` (not deprecated, or unknown)."""
    shutdown = REALTIME_MODEL_SHUTDOWNS.get(model)
    if shutdown is None:
        return None
    replacement = "gpt-realtime-2.1-mini" if "mini" in model else DEFAULT_REALTIME_MODEL
    return Deprecation(model, "realtime", shutdown, replacement)


def transcription_deprecation(model: str) -> Deprecation | None:
    """The announced shutdown of transcription ``model``, or ``None``."""
    shutdown = TRANSCRIPTION_MODEL_SHUTDOWNS.get(model)
    if shutdown is None:
        return None
    return Deprecation(model, "transcription", shutdown, DEFAULT_GA_TRANSCRIPTION_MODEL)


def takes_reasoning(model: str | None) -> bool:
    """Whether a session on ``model`` should be sent the reasoning-only fields.

    False only for a model the SDK lists as a non-reasoning one.  A model this table does not
    know (a newer release, an Azure deployment name, a proxy's alias) gets what the application
    configured: dropping a setting silently for a model that may well reason would be the
    worse failure, and a server that refuses it says so in an ``error`` the call reports
    (``openai refused session.update``)."""
    return model is None or model not in NON_REASONING_MODELS

"""Reading a call trace (``docs/traces.md``, version 1): the header, its settings, the lines.

Shared by the checker (:mod:`realtime_fsm.replay`) and the timeline drawing
(:mod:`realtime_fsm.timeline`), which must read a trace the same way: a line that is not a JSON
object is reported and skipped, never raised; a field of the wrong type reads as missing
(``as_str``, ``as_num`` ...), so a hand-edited or hostile trace is read as far as it can be.
Only a file whose first record is not a version-1 header is refused (:class:`TraceFormatError`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeVar

import attrs

from .config import LifecycleConfig
from .trace import FORMAT, VERSION

#: ``event_id`` of an item the bridge replays from the call's history into a new session:
#: ``<event_id_prefix>_history_<n>``.  Such an item is not a new delivery of the user's text.
_HISTORY_ID = re.compile(r"_history_[0-9]+\Z")

#: A trace header without a timing falls back to the bridge's default for it.
_LIFECYCLE_DEFAULTS: Final = LifecycleConfig()


class TraceFormatError(Exception):
    """The file is not a readable trace (no header, wrong format or version)."""


@attrs.frozen
class TraceConfig:
    """The header's ``config``: the lifecycle timings the rules are judged against."""

    create_timeout: float = _LIFECYCLE_DEFAULTS.create_timeout
    cancel_timeout: float = _LIFECYCLE_DEFAULTS.cancel_timeout
    no_audio_timeout: float = _LIFECYCLE_DEFAULTS.no_audio_timeout
    watchdog_cooldown: float = _LIFECYCLE_DEFAULTS.watchdog_cooldown
    stall_timeout: float = _LIFECYCLE_DEFAULTS.stall_timeout
    server_turn_grace: float = _LIFECYCLE_DEFAULTS.server_turn_grace
    dtmf_as_text: bool = True
    #: The key that ends a turn instead of being sent as text (``BridgeConfig.commit_on_dtmf``).
    commit_on_dtmf: str | None = None
    accept_text_messages: bool = True
    #: The bridge's ``LifecycleConfig.event_id_prefix``; ``None`` (older traces): any prefix.
    event_id_prefix: str | None = None

    @classmethod
    def from_header(cls, config: Any) -> TraceConfig:
        defaults = _LIFECYCLE_DEFAULTS
        config = config if isinstance(config, dict) else {}

        def num(key: str) -> float:
            value = as_num(config.get(key))
            return value if value is not None and value > 0 else float(getattr(defaults, key))

        def flag(key: str) -> bool:
            value = config.get(key)
            return value if isinstance(value, bool) else True

        return cls(
            create_timeout=num("create_timeout"),
            cancel_timeout=num("cancel_timeout"),
            no_audio_timeout=num("no_audio_timeout"),
            watchdog_cooldown=num("watchdog_cooldown"),
            stall_timeout=num("stall_timeout"),
            server_turn_grace=num("server_turn_grace"),
            dtmf_as_text=flag("dtmf_as_text"),
            commit_on_dtmf=as_str(config.get("commit_on_dtmf")),
            accept_text_messages=flag("accept_text_messages"),
            event_id_prefix=as_str(config.get("event_id_prefix")),
        )

    def is_history_replay(self, event_id: str | None) -> bool:
        """Whether an item with this ``event_id`` is history the bridge replayed into a new
        session (not a delivery of the user's text)."""
        if event_id is None or _HISTORY_ID.search(event_id) is None:
            return False
        prefix = self.event_id_prefix
        return prefix is None or event_id.startswith(f"{prefix}_history_")


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_num(value: Any) -> float | None:
    """A finite JSON number as a float (``None`` for anything else: bools, huge integers,
    NaN and infinities, which no timestamp or timeout is)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def read_trace(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line number, record)`` for each line, or ``(line number, why)`` for a line that is
    not a readable JSON object.  Blank lines and lines starting with ``#`` (comments in
    hand-written traces) are skipped."""
    for number, text in enumerate(lines, start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            record = json.loads(stripped)
        except RecursionError:
            yield number, "unreadable (nested too deeply)"
            continue
        except ValueError:  # JSONDecodeError, and integers past the digit limit
            yield number, "not a JSON object"
            continue
        yield number, record if isinstance(record, dict) else "not a JSON object"


def read_header(number: int, record: dict[str, Any] | str) -> TraceConfig:
    """The settings of a trace whose first record is ``record`` (on line ``number``); raises
    :class:`TraceFormatError` unless it is a version-1 header."""
    if isinstance(record, str) or record.get("kind") != "header":
        raise TraceFormatError(f"line {number}: the first record must be the header")
    if record.get("format") != FORMAT or record.get("version") != VERSION:
        raise TraceFormatError(f"line {number}: not a realtime-fsm-trace version 1")
    return TraceConfig.from_header(record.get("config"))


_Reader = TypeVar("_Reader")


def feed_trace(
    lines: Iterable[str],
    start: Callable[[int, dict[str, Any] | str], _Reader],
    line: Callable[[_Reader, int, dict[str, Any]], None],
    end: Callable[[_Reader, int, dict[str, Any]], None],
) -> tuple[_Reader, list[str]]:
    """One pass over a trace for a reader (the checker, the timeline): ``start`` makes it from
    the first record (and raises :class:`TraceFormatError` unless that is a header), then each
    record goes to ``line``, the trailer to ``end``.  A line that is not a JSON object, or that
    makes the reader raise, is a warning ``line N: ...; skipped`` and the pass goes on: a trace
    is untrusted input, and one bad line must not hide the rest of the call."""
    reader: _Reader | None = None
    warnings: list[str] = []
    for number, record in read_trace(lines):
        if reader is None:
            reader = start(number, record)
            continue
        if isinstance(record, str):
            warnings.append(f"line {number}: {record}; skipped")
            continue
        try:
            (end if record.get("kind") == "end" else line)(reader, number, record)
        except Exception as exc:
            # A shape no validation foresaw: that line is not read, the rest is.
            warnings.append(f"line {number}: unreadable ({type(exc).__name__}); skipped")
    if reader is None:
        raise TraceFormatError("empty trace: no header")
    return reader, warnings

"""One rule per kind of number for every configuration class (``realtime_fsm.validators``):
the wrong type is a ``TypeError``, out of range (NaN included) a ``ValueError``, with the
setting's name — raised when the configuration is built, never inside a call."""

from __future__ import annotations

import math
from typing import Any

import pytest

from realtime_fsm import BridgeConfig, LifecycleConfig
from realtime_fsm.admission import Admission
from realtime_fsm.credentials import StreamCredentials
from realtime_fsm.server import ServerConfig


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda v: LifecycleConfig(create_timeout=v), "create_timeout"),
        (lambda v: LifecycleConfig(watchdog_cooldown=v), "watchdog_cooldown"),
        (lambda v: BridgeConfig(reconnect_timeout=v), "reconnect_timeout"),
        (lambda v: BridgeConfig(tool_timeout=v), "tool_timeout"),
        (lambda v: BridgeConfig(rotate_after=v), "rotate_after"),
        (lambda v: ServerConfig(public_url="https://x.example", drain_timeout=v), "drain_timeout"),
        (lambda v: StreamCredentials.from_auth_token("token", ttl=v), "ttl"),
        (lambda v: Admission(hold=v), "hold"),
    ],
)
def test_positive_seconds(build: Any, name: str) -> None:
    build(0.5)
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=f"^{name} must be > 0"):
            build(bad)
    for wrong in ("5", True, None) if name != "rotate_after" else ("5", True):
        with pytest.raises(TypeError, match=f"^{name} must be a number"):
            build(wrong)


@pytest.mark.parametrize(
    ("build", "name", "zero_ok"),
    [
        (lambda v: BridgeConfig(reconnect_attempts=v), "reconnect_attempts", False),
        (lambda v: BridgeConfig(max_app_events=v), "max_app_events", False),
        (lambda v: BridgeConfig(max_reconnects=v), "max_reconnects", True),
        (lambda v: BridgeConfig(history_max_chars=v), "history_max_chars", True),
        (lambda v: LifecycleConfig(audio_bytes_per_ms=v), "audio_bytes_per_ms", False),
        (lambda v: Admission(max_calls=v), "max_calls", False),
    ],
)
def test_counts_are_ints(build: Any, name: str, zero_ok: bool) -> None:
    build(3)
    if zero_ok:
        build(0)
    else:
        with pytest.raises(ValueError, match=f"^{name} must be an int > 0"):
            build(0)
    with pytest.raises(ValueError, match=f"^{name} must be an int"):
        build(-1)
    for wrong in (2.0, True, "3"):
        with pytest.raises(TypeError, match=f"^{name} must be an int"):
            build(wrong)


def test_non_negative_delays() -> None:
    BridgeConfig(reconnect_base_delay=0)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"^reconnect_base_delay must be >= 0"):
            BridgeConfig(reconnect_base_delay=bad)
    with pytest.raises(TypeError, match=r"^rotate_quiet_window must be a number"):
        BridgeConfig(rotate_quiet_window="1")

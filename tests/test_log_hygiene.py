"""Log hygiene: untrusted strings cannot break a log line, caller content is redacted unless
``LifecycleConfig.log_caller_content`` is on, and secrets never reach a log.

Ids, codes and messages come from Twilio, from the OpenAI server or from the caller; each is
sent here with a newline, a carriage return, an ANSI escape and a Unicode line separator in
it, through the core and through a ``CallSession`` driven by hand (no sockets, a float clock).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from test_call_session import (
    CALL,
    Call,
    oa_created,
    oa_done,
    oa_error,
    oa_function_call,
    oa_input_transcript,
    oa_session,
    tw_connected,
)

from realtime_fsm import events as ev
from realtime_fsm.call import BridgeConfig
from realtime_fsm.config import LifecycleConfig
from realtime_fsm.lifecycle import ResponseLifecycle
from realtime_fsm.logsafe import caller_params, caller_text, redacted, safe

ROOT = Path(__file__).resolve().parents[1]
#: One of each way to break or forge a log line.
EVIL = "A\nB\rC\x1b[31mD\u2028E\u2029F\x85G\x00H"
EVIL_PARTS = ("\n", "\r", "\x1b", "\u2028", "\u2029", "\x85", "\x00")
#: A control character (C0, DEL, C1) or a Unicode line / paragraph separator.
RAW_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
SECRET_KEY = "sk-test-SECRET-0123456789"
SECRET_TOKEN = "twilio-auth-token-SECRET"


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def _assert_clean(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = _messages(caplog)
    assert messages
    for message in messages:
        assert not RAW_CONTROL.search(message), message
    return messages


# ---------------------------------------------------------------------------- the helpers


@pytest.mark.parametrize("part", EVIL_PARTS)
def test_safe_escapes_every_line_breaker(part: str) -> None:
    shown = safe(f"x{part}y")
    assert not RAW_CONTROL.search(shown)
    assert shown.startswith("x") and shown.endswith("y")


def test_safe_keeps_printable_text_and_cuts_long_text() -> None:
    assert safe("resp_abc123 שלום") == "resp_abc123 שלום"
    assert safe("x" * 250) == "x" * 200 + "...[+50 chars]"
    assert safe("x" * 20, limit=5) == "xxxxx...[+15 chars]"
    assert safe(None) == "None"


def test_redacted_shows_length_and_a_stable_short_hash_only() -> None:
    first = redacted("my card is 4111")
    assert re.fullmatch(r"<redacted len=15 sha=[0-9a-f]{8}>", first)
    assert redacted("my card is 4111") == first  # correlate lines of one call
    assert redacted("my card is 4112") != first
    assert "4111" not in first


def test_caller_text_and_params_follow_the_switch() -> None:
    assert caller_text("hi\nthere", True) == "'hi\\nthere'"
    assert caller_text("hi", False) == redacted("hi")
    shown = caller_params({"name\n": "Bob\r"}, True)
    assert shown == "{name\\n='Bob\\r'}"
    assert "Bob" not in caller_params({"name": "Bob"}, False)
    many = caller_params({str(i): "v" for i in range(25)}, True)
    assert many.endswith("...[+5 more]}")


def test_one_switch_default_off() -> None:
    assert LifecycleConfig().log_caller_content is False
    assert BridgeConfig().lifecycle.log_caller_content is False


def test_call_id_is_made_safe_once_in_the_config() -> None:
    assert LifecycleConfig(call_id="CA1\nforged").call_id == "CA1\\nforged"


# ------------------------------------------------------------------------------- the core


def _core_with_evil(caplog: pytest.LogCaptureFixture, show: bool) -> None:
    caplog.set_level(logging.INFO, logger="realtime_fsm")
    rid = f"resp_{EVIL}"
    m = ResponseLifecycle(LifecycleConfig(call_id=f"CA{EVIL}", log_caller_content=show), now=0.0)
    m.handle(ev.ResponseCreated(response_id=rid), now=0.1)
    m.audio_delta(rid, f"item_{EVIL}", 160, now=0.2)
    m.handle(ev.UserText(f"secret words {EVIL}"), now=0.3)
    m.handle(ev.ServerError(code=f"c{EVIL}", message=f"m{EVIL}", event_id=f"e{EVIL}"), now=0.4)
    m.handle(ev.ResponseDone(response_id=rid, status=f"s{EVIL}"), now=0.5)


@pytest.mark.parametrize("show", [False, True])
def test_core_lines_stay_one_line_each(caplog: pytest.LogCaptureFixture, show: bool) -> None:
    _core_with_evil(caplog, show)
    messages = _assert_clean(caplog)
    detected = [m for m in messages if "[TEXT_BARGE_IN] detected -> text=" in m]
    assert len(detected) == 1
    assert ("secret words" in detected[0]) is show
    if not show:
        assert not any("secret words" in m for m in messages)
    errors = [m for m in messages if "server error code=" in m]
    assert len(errors) == 1 and "mA\\nB" in errors[0]
    assert all(m.startswith("call=CAA\\nB\\rC") for m in messages)


# ------------------------------------------------------------------------------- the call


def _evil_call(caplog: pytest.LogCaptureFixture, show: bool) -> list[str]:
    caplog.set_level(logging.INFO, logger="realtime_fsm")
    config = BridgeConfig(
        lifecycle=LifecycleConfig(log_caller_content=show), accept_text_messages=False
    )
    c = Call(config)
    c.tw(tw_connected())
    start = {
        "accountSid": "AC1",
        "streamSid": f"MZ{EVIL}",
        "callSid": f"{CALL}{EVIL}",
        "tracks": ["inbound"],
        "customParameters": {f"who{EVIL}": f"caller secret {EVIL}"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    c.tw(json.dumps({"event": "start", "start": start, "streamSid": f"MZ{EVIL}"}))
    c.oa(oa_session())
    c.oa(oa_session("session.updated"))
    c.oa(oa_input_transcript("item_u1", f"caller secret spoken {EVIL}"))
    rid = f"resp_{EVIL}"
    c.oa(oa_created(rid))
    c.oa(oa_function_call(rid, f"call_{EVIL}", name=f"tool{EVIL}"))
    c.oa(oa_error(f"code{EVIL}", f"message{EVIL}", event_id=f"evt{EVIL}"))
    c.oa(oa_done(rid))
    c.oa(json.dumps({"type": f"unknown.{EVIL}", "event_id": "x"}))
    c.tw(json.dumps({"event": "text", "text": f"caller secret typed {EVIL}"}))
    c.close()
    return _assert_clean(caplog)


def test_call_lines_redact_caller_content_by_default(caplog: pytest.LogCaptureFixture) -> None:
    messages = _evil_call(caplog, show=False)
    assert not any("caller secret" in m for m in messages), messages
    said = [m for m in messages if "caller said:" in m]
    assert len(said) == 1 and "<redacted len=" in said[0]
    started = [m for m in messages if "stream started" in m]
    assert len(started) == 1 and "who" in started[0] and "<redacted len=" in started[0]
    assert any("unknown OpenAI Realtime event type 'unknown.A\\nB" in m for m in messages)
    assert any("tool call call_A\\nB" in m for m in messages)


def test_call_lines_show_caller_content_with_the_switch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = _evil_call(caplog, show=True)
    said = [m for m in messages if "caller said:" in m]
    assert len(said) == 1 and "'caller secret spoken A\\nB" in said[0]
    assert any("caller secret A\\nB" in m for m in messages if "stream started" in m)
    assert any("caller secret typed" in m for m in messages if "unknown Twilio event" in m)


# ------------------------------------------------------------------------------------ secrets
# (The demo turns caller content on: tests/test_demo.py checks its log shows the typed text.)


def test_secrets_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The call layer never holds the API key or the auth token; the config's repr (which a
    careless log line might print) hides them too."""
    caplog.set_level(logging.DEBUG, logger="realtime_fsm")
    _evil_call(caplog, show=True)
    from realtime_fsm.server import ServerConfig

    config = ServerConfig(
        public_url="https://example.test", api_key=SECRET_KEY, twilio_auth_token=SECRET_TOKEN
    )
    logging.getLogger("realtime_fsm.test").info("config %r %s", config, config)
    for message in _messages(caplog):
        assert SECRET_KEY not in message and SECRET_TOKEN not in message

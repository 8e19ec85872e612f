"""Traces and secrets: no API key or Twilio token reaches a trace, a log line or an error; the
example's ``--trace-dir`` flag and the server's trace size cap reach each call's trace.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import pytest
import test_e2e as e2e
from test_trace import records

from realtime_fsm.bridge import CallReport
from realtime_fsm.replay import check_file
from realtime_fsm.server import ServerConfig, start_server
from realtime_fsm.testing import FakeTwilioCaller, dial
from realtime_fsm.trace import (
    MAX_TRACE_BYTES,
)

# --- security -------------------------------------------------------------------------------------


API_KEY = "sk-test-DO-NOT-LEAK-4f1c2b9a7e"
TWILIO_TOKEN = "twilio-token-DO-NOT-LEAK-91ab"
PUBLIC = "https://example.ngrok.app"


class _Everything(logging.Handler):
    """Every log record of the process but the simulated OpenAI server's own (it logs the
    request headers it receives, the key included: in production that is OpenAI's machine)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.peer_ports: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            port = record.websocket.local_address[1]  # type: ignore[attr-defined]
        except Exception:
            port = None
        if port is None or port not in self.peer_ports:
            self.records.append(record)


def test_secrets_never_appear_in_traces_logs_or_errors(tmp_path: Path) -> None:
    """An API key and a Twilio token configured (signature checks on): a whole call with a
    barge-in, an error from OpenAI and a call whose realtime server is unreachable.  Neither
    secret is in any trace line, any log record (every logger, DEBUG, websockets' handshake
    included) or any error message."""
    handler = _Everything()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    reports: list[CallReport] = []

    async def call(realtime_url: str, sim: Any) -> None:
        config = ServerConfig(
            public_url=PUBLIC,
            realtime_url=realtime_url,
            api_key=API_KEY,
            twilio_auth_token=TWILIO_TOKEN,
            bridge=e2e.bridge_config(),
            trace_dir=tmp_path,
        )
        server = await start_server(config, e2e.HOST, 0, reports=reports)
        port = server.sockets[0].getsockname()[1]
        dialed = await dial(f"http://{e2e.HOST}:{port}", public_url=PUBLIC, auth_token=TWILIO_TOKEN)
        assert dialed.stream_url == "wss://example.ngrok.app/media-stream"
        caller_config = dialed.caller_config(e2e.CALLER)
        try:
            async with FakeTwilioCaller(f"ws://{e2e.HOST}:{port}/media-stream", caller_config) as c:
                if sim is None:
                    await c.wait_until(lambda: c.close_code is not None, 10.0, "the refusal")
                    return
                await e2e.wait_playing(sim, c)
                sim.inject_error("invalid_value", "Invalid value for 'voice'.")
                await c.type_text("stop please")
                await e2e.wait_served(sim, c, after=1)
            await sim.wait_until(lambda: bool(reports), 5.0, "the report")
        finally:
            server.close()
            await server.wait_closed()

    async def scenario() -> None:
        sim = e2e.simulator(e2e.short_replies)
        async with sim:
            handler.peer_ports.add(sim.port)
            await call(sim.url, sim)
            assert sim.connections[0].headers.get("Authorization") == f"Bearer {API_KEY}"
            unreachable = sim.url.replace(str(sim.port), "1")
        await call(unreachable, None)

    try:
        e2e.run(scenario())
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    traces = sorted(tmp_path.glob("*.jsonl"))
    assert len(traces) == 2  # the call, and the one refused for want of a realtime server
    assert all(check_file(p) == ([], []) for p in traces)
    assert any("stop please" in p.read_text() for p in traces)
    texts = [p.read_text() for p in traces]
    for record in handler.records:
        texts.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(repr(record.exc_info[1]))
    texts.extend(repr(report) for report in reports)
    assert any("cannot reach the realtime server" in t for t in texts)
    assert any("Authorization" in t for t in texts)  # the handshake was logged, redacted
    leaks = [t for t in texts if API_KEY in t or TWILIO_TOKEN in t]
    assert leaks == []


def test_example_trace_dir_flag(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "twilio_bridge_example_trace",
        Path(__file__).resolve().parents[1] / "examples/twilio_bridge.py",
    )
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    base = ["--public-url", PUBLIC]
    assert example.build_config(example.parse_args(base)).trace_dir is None
    args = example.parse_args([*base, "--trace-dir", str(tmp_path)])
    assert example.build_config(args).trace_dir == str(tmp_path)
    assert example.build_config(args).max_trace_bytes == MAX_TRACE_BYTES
    args = example.parse_args([*base, "--trace-max-mb", "0.5"])
    assert example.build_config(args).max_trace_bytes == 512 * 1024
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(SystemExit):
            example.parse_args([*base, "--trace-max-mb", bad])


def test_the_servers_trace_size_cap_reaches_each_calls_trace(tmp_path: Path) -> None:
    """``ServerConfig.max_trace_bytes`` caps every call's file: a whole call through the
    server leaves a file no bigger, ending in the truncation note and the call's trailer."""
    reports: list[CallReport] = []
    cap = 6_000

    async def scenario() -> None:
        sim = e2e.simulator(e2e.short_replies)
        async with sim:
            config = ServerConfig(
                public_url=PUBLIC,
                realtime_url=sim.url,
                bridge=e2e.bridge_config(),
                trace_dir=tmp_path,
                max_trace_bytes=cap,
            )
            server = await start_server(config, e2e.HOST, 0, reports=reports)
            port = server.sockets[0].getsockname()[1]
            try:
                url = f"ws://{e2e.HOST}:{port}/media-stream"
                async with FakeTwilioCaller(url, e2e.CALLER) as caller:
                    await e2e.wait_served(sim, caller, after=0)
                    for n in range(20):
                        await caller.type_text(f"text number {n}")
                await sim.wait_until(lambda: bool(reports), 5.0, "the report")
            finally:
                server.close()
                await server.wait_closed()

    e2e.run(scenario())
    (path,) = tmp_path.glob("*.jsonl")
    assert path.stat().st_size <= cap
    lines = records(path)
    assert lines[-2] == {**lines[-2], "side": "trace", "dir": "truncated", "max_trace_bytes": cap}
    assert lines[-1]["kind"] == "end" and lines[-1]["end_reason"] == reports[0].end_reason
    with pytest.raises(ValueError, match="max_trace_bytes"):
        ServerConfig(public_url=PUBLIC, max_trace_bytes=0)

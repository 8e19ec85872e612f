"""``realtime-fsm serve`` as a real process: SIGTERM drains, ``--workers`` shares the port.

A subprocess runs the command (``python -m realtime_fsm serve``) against the simulator on
127.0.0.1, with ``TWILIO_AUTH_TOKEN`` set; calls are dialed like Twilio does (the signed
webhook, :func:`realtime_fsm.testing.dial`, then a :class:`FakeTwilioCaller` on the stream the
TwiML names).  Asserted from the outside: the calls in progress at SIGTERM go on (the caller
speaks and hears a reply after the signal) and end normally when the caller hangs up, while
``/readyz`` says 503 and new webhooks are refused; the process then exits 0, long before its
drain deadline.  Four workers: calls spread over more than one of them (each worker logs how
many it served), one worker drained mid-run by a SIGTERM of its own and replaced by the parent,
and every call either served to its end or refused at the webhook (and dialed again), none lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from waiting import poller

from realtime_fsm.testing import (
    DialedCall,
    FakeCallerConfig,
    FakeRealtimeConfig,
    FakeRealtimeServer,
    FakeTwilioCaller,
    ScriptedReply,
    WebhookRefused,
    dial,
)

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
PUBLIC_URL = "https://voice.example.com"
TOKEN = "twilio-token-DO-NOT-LOG-0b3e"
CALLER = FakeCallerConfig(speed=4.0, seed=21)
#: Far beyond what the tests wait: a drain that ends sooner ended because its calls did.
DRAIN_TIMEOUT = 90

until = poller(60.0, 0.05)

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT and POSIX signals"
)


def run(body: Callable[[], Awaitable[None]], timeout: float = 180.0) -> None:
    async def main() -> None:
        await asyncio.wait_for(body(), timeout)

    asyncio.run(main())


def simulator() -> FakeRealtimeServer:
    config = FakeRealtimeConfig(realtime_factor=5.0, first_delta_delay_s=0.02, seed=8)
    return FakeRealtimeServer(config, replies=[ScriptedReply("Hello there.", audio_ms=400)])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def start_serve(port: int, realtime_url: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TWILIO_AUTH_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    env.pop("OPENAI_API_KEY", None)
    command = [
        sys.executable,
        "-m",
        "realtime_fsm",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--public-url",
        PUBLIC_URL,
        "--realtime-url",
        realtime_url,
        "--greeting",
        "Say hello.",
        "--drain-timeout",
        str(DRAIN_TIMEOUT),
        *extra,
    ]
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


async def http_get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET on a fresh connection (so from a fresh source port): status and the JSON body."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def http_text(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = await reader.read()
    finally:
        writer.close()
    return raw.partition(b"\r\n\r\n")[2].decode()


async def answers(port: int, path: str) -> tuple[int, dict[str, Any]] | None:
    try:
        return await http_get(port, path)
    except (OSError, ValueError, IndexError):
        return None


async def exited(proc: subprocess.Popen[bytes], timeout: float) -> int:
    await until(lambda: proc.poll() is not None, "the process to exit", timeout=timeout)
    code = proc.poll()
    assert code is not None
    return code


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


# --- one process ---------------------------------------------------------------------------------


def test_sigterm_drains_the_calls_in_progress_to_their_normal_end(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    port = free_port()
    server = f"http://{HOST}:{port}"
    url = f"ws://{HOST}:{port}/media-stream"

    async def body() -> None:
        async with simulator() as ai:
            proc = start_serve(port, ai.url, log, "--metrics-path", "/metrics")
            try:
                await wait_up(proc, port)
                callers = []
                for _ in range(3):
                    dialed = await dial(server, public_url=PUBLIC_URL, auth_token=TOKEN)
                    caller = FakeTwilioCaller(url, dialed.caller_config(CALLER))
                    await caller.start()
                    callers.append(caller)
                for caller in callers:
                    await caller.wait_for_audio(100, timeout=30)
                # The gauge the autoscaler reads (docs/deploying.md), from the same process.
                metrics = await http_text(port, "/metrics")
                assert re.search(r"^realtime_fsm_calls_active(\{[^}]*\})? 3(\.0)?$", metrics, re.M)
                signalled_at = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                _, figures = await wait_for_answer(port, "/readyz", 503)
                assert figures["draining"] and figures["active_calls"] == 3
                with pytest.raises(WebhookRefused) as refused:
                    await dial(server, public_url=PUBLIC_URL, auth_token=TOKEN)
                assert refused.value.status == 503
                # The calls go on: each speaks and hears a reply after the signal.
                for caller in callers:
                    heard = len(caller.media_received)
                    await caller.speak(0.3)
                    await caller.wait_until(lambda c=caller, h=heard: len(c.media_received) > h, 30)
                    assert not caller.closed
                assert proc.poll() is None  # still draining: calls in progress
                for caller in callers:
                    await caller.hang_up()
                    assert caller.close_code != 1001
                assert await exited(proc, 60) == 0
                assert time.monotonic() - signalled_at < DRAIN_TIMEOUT
            finally:
                stop(proc)

    run(body)
    text = log.read_text()
    assert "served 3 calls" in text, text[-3000:]
    assert "drain: 3 calls at the signal, 0 ended at the deadline" in text
    assert "Traceback" not in text and TOKEN not in text


async def wait_up(proc: subprocess.Popen[bytes], port: int) -> None:
    async def up() -> bool:
        assert proc.poll() is None, "the server exited while starting"
        return (await answers(port, "/healthz")) is not None

    await until_async(up, "the server to answer /healthz")


async def wait_for_answer(port: int, path: str, status: int) -> tuple[int, dict[str, Any]]:
    found: list[tuple[int, dict[str, Any]]] = []

    async def check() -> bool:
        answer = await answers(port, path)
        if answer is not None and answer[0] == status:
            found.append(answer)
            return True
        return False

    await until_async(check, f"{path} to answer {status}")
    return found[0]


async def until_async(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


# --- several workers -----------------------------------------------------------------------------

#: Calls dialed in all; at most this many at once; the worker drained after this many ended.
CALLS = 32
CONCURRENCY = 6
DRAIN_AFTER = 10


@pytest.mark.slow
def test_four_workers_share_the_port_and_one_drains_without_losing_a_call(
    tmp_path: Path,
) -> None:
    log = tmp_path / "workers.log"
    port = free_port()
    server = f"http://{HOST}:{port}"
    url = f"ws://{HOST}:{port}/media-stream"
    outcomes: dict[str, str] = {}
    webhook_refusals = 0
    drained: dict[str, int] = {}

    async def one_call(n: int, gate: asyncio.Semaphore) -> None:
        nonlocal webhook_refusals
        async with gate:
            dialed: DialedCall | None = None
            for _ in range(100):  # a refused webhook: never admitted, Twilio would retry
                try:
                    dialed = await dial(server, public_url=PUBLIC_URL, auth_token=TOKEN)
                    break
                except (WebhookRefused, ConnectionError) as exc:
                    if isinstance(exc, WebhookRefused):
                        assert exc.status == 503
                    webhook_refusals += 1
                    await asyncio.sleep(0.1)
            assert dialed is not None, f"call {n} never admitted"
            caller = FakeTwilioCaller(url, dialed.caller_config(CALLER))
            try:
                await caller.start()
                await caller.wait_for_audio(100, timeout=60)
                served = not caller.closed
            finally:
                await caller.hang_up()
            outcomes[dialed.call_sid] = "served" if served else f"cut {caller.close_code}"
            if len(outcomes) == DRAIN_AFTER and not drained:
                drained["pid"] = await drain_one_worker()

    async def drain_one_worker() -> int:
        _, figures = await wait_for_answer(port, "/readyz", 200)
        os.kill(figures["pid"], signal.SIGTERM)
        return int(figures["pid"])

    async def body() -> None:
        async with simulator() as ai:
            proc = start_serve(port, ai.url, log, "--workers", "4", "--log-level", "INFO")
            try:
                await wait_up(proc, port)
                workers: set[str] = set()

                async def all_four() -> bool:
                    answer = await answers(port, "/readyz")
                    if answer is not None:
                        workers.add(answer[1]["worker"])
                    return len(workers) == 4

                await until_async(all_four, "/readyz from four workers")
                gate = asyncio.Semaphore(CONCURRENCY)
                await asyncio.gather(*(one_call(n, gate) for n in range(CALLS)))
                assert drained, "no worker was drained"
                # The parent replaced the drained worker: four answer again, none the old pid.
                pids: dict[str, int] = {}

                async def replaced() -> bool:
                    answer = await answers(port, "/readyz")
                    if answer is not None:
                        pids[answer[1]["worker"]] = answer[1]["pid"]
                    return len(pids) == 4 and drained["pid"] not in pids.values()

                await until_async(replaced, "four workers, the drained one replaced")
                proc.send_signal(signal.SIGTERM)
                assert await exited(proc, 90) == 0
            finally:
                stop(proc)

    run(body, timeout=300)
    text = log.read_text()
    assert sorted(set(outcomes.values())) == ["served"], outcomes
    assert len(outcomes) == CALLS
    # Five processes exited (the drained one and the four at the end): every call was served
    # by exactly one of them, and more than one worker served calls.
    assert len(re.findall(r"exiting: served", text)) == 5, text[-4000:]
    totals = [int(c) for c in re.findall(r"exiting: served (\d+) calls", text)]
    assert sum(totals) == CALLS, (totals, webhook_refusals)
    assert len([c for c in totals if c]) > 1, totals
    print(f"calls served per worker process: {totals}; webhooks refused: {webhook_refusals}")
    assert "restarting" in text and "all workers stopped" in text
    assert "Traceback" not in text and TOKEN not in text

"""``tune_malloc_for_sockets``: socket reads stop faulting pages in a fresh process (glibc)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from realtime_fsm import malloc_tuning
from realtime_fsm.malloc_tuning import MAX_MMAP_THRESHOLD, tune_malloc_for_sockets

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

#: A fresh interpreter reading small messages with asyncio's 256 KiB ``recv``: minor page
#: faults per read, before and after tuning (counts from getrusage, not timings).
_PROBE = """
import importlib.util, json, resource, socket, sys
# By path, not through the package: importing realtime_fsm (attrs, transitions, ...) can raise
# glibc's threshold by itself, and the test must see what the call does.
spec = importlib.util.spec_from_file_location("malloc_tuning", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
a, b = socket.socketpair()
def faults_per_read(n=2000):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        a.send(b"x" * 300)
        assert len(b.recv(262144)) == 300
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n
untuned = faults_per_read()
tuned = module.tune_malloc_for_sockets()
json.dump({"untuned": untuned, "tuned": tuned, "after": faults_per_read()}, sys.stdout)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_reads_stop_faulting_pages_in_a_fresh_process() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, malloc_tuning.__file__],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(out.stdout)
    if result["untuned"] < 1:
        pytest.skip(f"this interpreter reads without faults untuned: {result}")
    # Untuned, a fresh process maps, faults in and unmaps each read buffer (2 faults per read
    # here); tuned, the buffer comes from the heap that is already there.
    assert result["tuned"] is True
    assert result["after"] < 0.05, result


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_idempotent() -> None:
    assert tune_malloc_for_sockets() is True
    assert tune_malloc_for_sockets() is True


def test_nothing_to_tune_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(malloc_tuning.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert tune_malloc_for_sockets() is False


@pytest.mark.parametrize("bad", [0, -1, MAX_MMAP_THRESHOLD + 1, 1.5, "1048576", True])
def test_bad_threshold_is_a_typed_error(bad: object) -> None:
    with pytest.raises(ValueError, match="mmap_threshold"):
        tune_malloc_for_sockets(bad)  # type: ignore[arg-type]

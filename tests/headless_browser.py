"""A real headless Chromium, driven over the DevTools protocol, for tests of generated pages.

No browser package from PyPI: the DevTools protocol is JSON over a websocket, and the project
already depends on ``websockets``.  The browser is Debian's ``chromium-headless-shell`` (or
``chromium``), which ``.ci/install-browser`` installs; ``RTFSM_BROWSER`` names another binary.
:func:`find_browser` returns ``None`` when there is none, so a test can skip with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def find_browser() -> str | None:
    named = os.environ.get("RTFSM_BROWSER")
    if named:
        return shutil.which(named) or (named if Path(named).exists() else None)
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class Browser:
    """One headless browser process and one page in it.

    ``console_errors`` collects every console error, uncaught exception and error log entry
    the page produced; ``dialogs`` every ``alert``/``confirm`` it opened (a page built from
    hostile input must open none)."""

    def __init__(self, binary: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory(prefix="rtfsm-browser-")
        args = [
            binary,
            "--headless",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile.name}",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.ws: ClientConnection | None = None
        self.stack = contextlib.ExitStack()
        self.next_id = 0
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []
        self.console_errors: list[str] = []
        self.dialogs: list[str] = []

    def __enter__(self) -> Browser:
        try:
            self._connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connect(self) -> None:
        assert self.process.stderr is not None
        deadline = time.monotonic() + self.timeout
        url = None
        seen: list[str] = []
        while url is None and time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                raise RuntimeError("the browser exited: " + "".join(seen[-20:]))
            seen.append(line)
            match = _LISTENING.search(line)
            url = match.group(1) if match else None
        if url is None:
            raise RuntimeError("the browser did not open its DevTools port: " + "".join(seen))
        # The rest of its stderr is drained, or a chatty browser would block on a full pipe.
        threading.Thread(target=self.process.stderr.read, daemon=True).start()
        self.ws = self.stack.enter_context(
            connect(url, max_size=64 * 1024 * 1024, open_timeout=self.timeout)
        )
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.call(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            session=False,
        )
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        # A desktop window: the default one is small enough to leave most of a page off screen.
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1600, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
        )

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = True
    ) -> Any:
        """Send one command and wait for its answer (events meanwhile are kept)."""
        assert self.ws is not None
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session is not None:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _receive(self, deadline: float) -> dict[str, Any]:
        assert self.ws is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer from the browser")
        message: dict[str, Any] = json.loads(self.ws.recv(timeout=remaining))
        if "method" in message:
            self._event(message)
        return message

    def _event(self, message: dict[str, Any]) -> None:
        self.events.append(message)
        method, params = message["method"], message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            self.console_errors.append(" ".join(str(a.get("value", a)) for a in args))
        elif method == "Runtime.exceptionThrown":
            self.console_errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.console_errors.append(params["entry"].get("text", ""))
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(params.get("message", ""))
            self.call("Page.handleJavaScriptDialog", {"accept": True})

    def open(self, path: Path) -> None:
        """Load a local file and wait for its load event."""
        self.events.clear()
        self.call("Page.navigate", {"url": path.resolve().as_uri()})
        deadline = time.monotonic() + self.timeout
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            self._receive(deadline)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values only)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def mouse_move(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stack.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.profile.cleanup()

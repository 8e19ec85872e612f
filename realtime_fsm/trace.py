"""Per-call JSONL traces of everything that crosses the bridge's two sockets.

A trace is recorded at the socket boundary, so it is exactly the *wire view*: what the bridge
read and wrote, in the order it did, with a monotonic timestamp.  ``realtime-fsm replay``
(:mod:`realtime_fsm.replay`) checks such a file against the response-lifecycle invariants, and
the same checker works on any log converted to this format (``docs/traces.md``).

Recording needs nothing of the bridge: :meth:`CallTrace.wrap` turns any
:class:`~realtime_fsm.bridge.MessageSocket` into one that records each frame in and out, so the
bridge runs unchanged and a connector that opens a new OpenAI socket mid-call (a reconnect)
wraps it the same way::

    trace = CallTrace.open(trace_dir, bridge_config, secrets=(api_key, token))
    twilio = trace.wrap(twilio, "twilio")
    openai = trace.wrap(openai, "openai")          # and every later OpenAI socket
    report = await CallBridge(twilio, openai, bridge_config).run()
    trace.finish(report)

Audio is never written: Twilio ``media.payload``, ``input_audio_buffer.append.audio`` and the
output audio deltas are replaced by ``{"elided_bytes": N}``.  Secrets handed to the recorder
(the API key, the Twilio token) are replaced by ``[redacted]`` wherever they would appear.
Recording never raises into the bridge: a frame the recorder cannot serialise (nested past the
recursion limit) is kept as a truncated raw line, and an I/O error or a file past
``max_trace_bytes`` is logged once and stops the recording; the call goes on either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import logging
import os
import re
import secrets as _secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Literal

from .config import LifecycleConfig

if TYPE_CHECKING:  # the bridge imports nothing of this module; keep it that way at runtime too
    from .bridge import BridgeConfig, CallReport, MessageSocket

log = logging.getLogger("realtime_fsm.trace")

FORMAT: Final = "realtime-fsm-trace"
VERSION: Final = 1
Side = Literal["twilio", "openai"]
SIDES: Final = ("twilio", "openai")

#: Lines kept in memory until Twilio's ``start`` names the call; past this the file is opened
#: under a generated name (a stream that never starts must not grow memory).
MAX_BUFFERED_LINES: Final = 500
#: Non-JSON and binary frames keep this much of their content (escaped), marked truncated.
MAX_RAW_CHARS: Final = 512
#: A JSON frame whose line would exceed this is recorded as a truncated raw frame instead.
MAX_FRAME_CHARS: Final = 256 * 1024
REDACTED: Final = "[redacted]"
#: Default cap on one trace file; past it recording stops with a final ``truncated`` line.
#: Audio elided, a call still writes a line per 20 ms frame each way (~250 bytes Twilio in,
#: ~180 the append out): ~80 MB an hour of caller audio alone, so this is 1.5-2.5 hours.
MAX_TRACE_BYTES: Final = 200 * 1024 * 1024
#: Written lines reach the disk at most this long after they were written (one timer per
#: batch, not a flush per frame on the event loop); the trailer and ``finish`` always flush.
FLUSH_INTERVAL: Final = 1.0
#: What the recorder writes, beyond the cap's own note line, is kept under the cap by this.
_CAP_RESERVE: Final = 4096

#: ``(side, event type)`` -> the path of the base64 audio field elided from that frame.
AUDIO_FIELDS: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("twilio", "media"): ("media", "payload"),
    ("openai", "input_audio_buffer.append"): ("audio",),
    ("openai", "response.output_audio.delta"): ("delta",),
    ("openai", "response.audio.delta"): ("delta",),
}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def base64_byte_count(data: str) -> int:
    """Decoded size of a base64 string, without decoding it."""
    n = len(data)
    if n == 0:
        return 0
    padding = 2 if data.endswith("==") else 1 if data.endswith("=") else 0
    return max(0, n * 3 // 4 - padding)


def elide_audio(side: str, frame: dict[str, Any]) -> str:
    """Replace the frame's audio field (if it has one) by ``{"elided_bytes": N}`` in place;
    return the frame's event type (``""`` if it has none)."""
    key = "event" if side == "twilio" else "type"
    kind = frame.get(key)
    kind = kind if isinstance(kind, str) else ""
    path = AUDIO_FIELDS.get((side, kind))
    if path is not None:
        holder: Any = frame
        for name in path[:-1]:
            holder = holder.get(name) if isinstance(holder, dict) else None
        if isinstance(holder, dict):
            value = holder.get(path[-1])
            if isinstance(value, str):
                holder[path[-1]] = {"elided_bytes": base64_byte_count(value)}
    return kind


def lifecycle_header(lifecycle: LifecycleConfig) -> dict[str, Any]:
    """The lifecycle settings the replay checker needs: the timings its rules are judged
    against, and the event-id prefix that marks history replayed into a new session."""
    return {
        "event_id_prefix": lifecycle.event_id_prefix,
        "create_timeout": lifecycle.create_timeout,
        "cancel_timeout": lifecycle.cancel_timeout,
        "no_audio_timeout": lifecycle.no_audio_timeout,
        "watchdog_cooldown": lifecycle.watchdog_cooldown,
        "stall_timeout": lifecycle.stall_timeout,
        "server_turn_grace": lifecycle.server_turn_grace,
    }


class CallTrace:
    """The trace writer of one call: wrap its sockets, then :meth:`finish` it with the report.

    Not thread-safe (one call, one event loop), like the bridge."""

    def __init__(
        self,
        directory: str | Path,
        config: dict[str, Any],
        *,
        secrets: Iterable[str | None] = (),
        clock: Callable[[], float] = time.monotonic,
        max_buffered_lines: int = MAX_BUFFERED_LINES,
        max_trace_bytes: int = MAX_TRACE_BYTES,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.directory = Path(directory)
        self.config = dict(config)
        self.clock = clock
        self.started = clock()
        self.started_wall = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        # Longest first, so a secret containing another is redacted whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._max_buffered = max_buffered_lines
        self.max_trace_bytes = max_trace_bytes
        self._flush_interval = flush_interval
        self._flush_timer: asyncio.TimerHandle | None = None
        self._dirty = False
        #: Bytes of lines written (or buffered to be written), the header included.
        self.bytes = 0
        #: Recording stopped at ``max_trace_bytes``.
        self.capped = False
        #: Frames that could not be serialised and were recorded as truncated raw text.
        self.unserialisable = 0
        self._buffer: list[str] = []
        self._file: IO[str] | None = None
        self._failed = False
        self._finished = False
        self._connections: dict[str, int] = {}
        self.call_id: str | None = None
        self.stream_sid: str | None = None
        #: Where the trace was written, once the file is open.
        self.path: Path | None = None
        self.lines = 0

    @classmethod
    def open(
        cls,
        directory: str | Path,
        bridge: BridgeConfig,
        *,
        secrets: Iterable[str | None] = (),
        clock: Callable[[], float] = time.monotonic,
        max_trace_bytes: int = MAX_TRACE_BYTES,
    ) -> CallTrace:
        """A trace for one call of a bridge configured with ``bridge`` (the server's entry)."""
        config: dict[str, Any] = lifecycle_header(bridge.lifecycle)
        config["dtmf_as_text"] = bridge.dtmf_as_text
        if bridge.commit_on_dtmf is not None:
            config["commit_on_dtmf"] = bridge.commit_on_dtmf
        config["accept_text_messages"] = bridge.accept_text_messages
        config["dialect"] = bridge.dialect.value
        return cls(directory, config, secrets=secrets, clock=clock, max_trace_bytes=max_trace_bytes)

    # ------------------------------------------------------------------------ recording API

    def wrap(self, socket: MessageSocket, side: Side) -> TracedSocket:
        """``socket`` recording every frame into this trace as ``side``; a later OpenAI socket
        (a reconnect) is wrapped the same way and recorded as connection 2, 3, ..."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        number = self._connections.get(side, 0) + 1
        self._connections[side] = number
        self.note(side, "open", conn=number)
        return TracedSocket(socket, self, side)

    def record(self, side: str, direction: str, frame: str | bytes) -> None:
        """One frame read (``in``) or written (``out``) on ``side``.  Never raises: the frame
        is the bridge's to handle whatever happens to its trace line."""
        if self._failed or self._finished or self.capped:
            return
        try:
            self._record(side, direction, frame)
        except Exception as exc:  # RecursionError from json.dumps, anything else unforeseen
            self._unserialisable(side, direction, frame, exc)

    def _record(self, side: str, direction: str, frame: str | bytes) -> None:
        line: dict[str, Any] = {"t": self._now(), "side": side, "dir": direction}
        if isinstance(frame, bytes):
            line.update(type=None, binary=True, bytes=len(frame))
            line["raw_hex"] = frame[: MAX_RAW_CHARS // 2].hex()
            line["truncated"] = len(frame) > MAX_RAW_CHARS // 2
            self._write(line)
            return
        try:
            data = json.loads(frame)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict) or len(frame) > MAX_FRAME_CHARS:
            line.update(type=None, bad_json=data is None, chars=len(frame))
            line["raw"] = frame[:MAX_RAW_CHARS]
            line["truncated"] = len(frame) > MAX_RAW_CHARS
            self._write(line)
            return
        kind = elide_audio(side, data)
        line["type"] = kind
        line["frame"] = data
        if side == "twilio" and direction == "in" and kind == "start" and self.call_id is None:
            self._learn_call(data)
        self._write(line)

    def note(self, side: str, what: str, **fields: Any) -> None:
        """A non-frame line (``dir`` = ``what``): a socket closing, a reconnect decision.
        Never raises; a note that cannot be written stops the recording."""
        if self._failed or self._finished:
            return
        try:
            self._write({"t": self._now(), "side": side, "dir": what, **fields})
        except Exception as exc:
            self._fail(exc)

    def finish(
        self, report: CallReport | None = None, *, end_reason: str | None = None
    ) -> Path | None:
        """Write the trailer (from the bridge's report) and close the file; idempotent."""
        if self._finished:
            return self.path
        try:
            self._finish(report, end_reason)
        except Exception as exc:  # never raise into the server's call cleanup
            self._fail(exc)
        self._finished = True
        return self.path

    def _finish(self, report: CallReport | None, end_reason: str | None) -> None:
        self._cancel_flush()
        trailer: dict[str, Any] = {"kind": "end", "t": self._now()}
        if report is not None:
            trailer.update(
                end_reason=report.end_reason,
                undelivered_texts=list(report.undelivered_texts),
                user_texts_sent=report.user_texts_sent,
                given_up=[g.reason for g in report.given_up],
                server_errors=dict(report.server_errors),
                bad_frames=dict(report.bad_frames),
                lifecycle_stats=dict(report.lifecycle_stats),
            )
        else:
            trailer["end_reason"] = end_reason or "unknown"
        if not self._failed:
            # Past the cap the trailer is still written: it is small, and says how the call ended.
            self._write(trailer, final=True)
            if self._file is None:
                self._open_file()
        self._finished = True
        if self._file is not None:
            try:
                self._file.close()  # flushes
            except OSError as exc:
                self._fail(exc)
            self._file = None

    # --------------------------------------------------------------------------- internals

    def _now(self) -> float:
        return round(self.clock() - self.started, 6)

    def _learn_call(self, data: dict[str, Any]) -> None:
        start = data.get("start")
        start = start if isinstance(start, dict) else {}
        call_sid = start.get("callSid")
        stream_sid = start.get("streamSid") or data.get("streamSid")
        self.stream_sid = stream_sid if isinstance(stream_sid, str) else None
        self.call_id = call_sid if isinstance(call_sid, str) and call_sid else self.stream_sid
        if self._file is None and not self._failed:
            self._open_file()

    def _header(self) -> dict[str, Any]:
        return {
            "kind": "header",
            "format": FORMAT,
            "version": VERSION,
            "call_id": self.call_id,
            "stream_sid": self.stream_sid,
            "started_at": self.started_wall,
            "config": self.config,
        }

    def _file_stem(self) -> str:
        if self.call_id:
            return _SAFE_NAME.sub("_", self.call_id)[:100]
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        return f"call-{stamp}-{_secrets.token_hex(4)}"

    def _open_file(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            stem = self._file_stem()
            path = self.directory / f"{stem}.jsonl"
            n = 1
            while True:
                try:
                    handle = open(path, "x", encoding="utf-8")  # noqa: SIM115 - closed in finish
                    break
                except FileExistsError:
                    n += 1
                    path = self.directory / f"{stem}-{n}.jsonl"
            self._file = handle
            self.path = path
            header = self._redact(_dumps(self._header())) + "\n"
            self.bytes += len(header.encode("utf-8"))
            handle.write(header)
            for line in self._buffer:
                handle.write(line)
            self._buffer = []
            handle.flush()
            log.info("call=%s trace recording to %s", self.call_id or "-", path)
        except (OSError, ValueError) as exc:
            self._fail(exc)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def _unserialisable(
        self, side: str, direction: str, frame: str | bytes, exc: Exception
    ) -> None:
        """The frame's line could not be built: keep its start as raw text, flagged, so the
        trace shows the frame was there; if even that fails, stop recording."""
        self.unserialisable += 1
        if self.unserialisable == 1:
            log.warning(
                "call=%s trace: a %s frame could not be recorded as JSON (%s); kept truncated",
                self.call_id or "-",
                side,
                type(exc).__name__,
            )
        text = frame if isinstance(frame, str) else frame.hex()
        line = {
            "t": self._now(),
            "side": side,
            "dir": direction,
            "type": None,
            "unserialisable": type(exc).__name__,
            "chars": len(frame),
            "raw": text[:MAX_RAW_CHARS],
            "truncated": len(text) > MAX_RAW_CHARS,
        }
        try:
            self._write(line)
        except Exception as again:
            self._fail(again)

    def _write(self, line: dict[str, Any], *, final: bool = False) -> None:
        if self._failed or (self.capped and not final):
            return
        text = self._redact(_dumps(line)) + "\n"
        size = len(text.encode("utf-8"))
        if not final and self.bytes + size > self.max_trace_bytes - _CAP_RESERVE:
            self._cap()
            return
        self.bytes += size
        self.lines += 1
        handle = self._file
        if handle is None:
            self._buffer.append(text)
            if len(self._buffer) >= self._max_buffered:
                self._open_file()
            return
        try:
            handle.write(text)
            if final:
                handle.flush()
            else:
                self._dirty = True
                self._schedule_flush()
        except (OSError, ValueError) as exc:
            self._fail(exc)

    def _cap(self) -> None:
        """``max_trace_bytes`` reached: one log line, one final note line, no more frames."""
        self.capped = True
        log.warning(
            "call=%s trace recording stopped at max_trace_bytes=%d (%d lines)",
            self.call_id or "-",
            self.max_trace_bytes,
            self.lines,
        )
        note = {"t": self._now(), "side": "trace", "dir": "truncated"}
        self._write({**note, "max_trace_bytes": self.max_trace_bytes}, final=True)

    def _schedule_flush(self) -> None:
        """Flush within ``flush_interval`` rather than per line: frames arrive every 20 ms per
        direction, and a flush per frame is a syscall per frame on the call's event loop."""
        if self._flush_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside a loop: nothing would ever fire the timer
            self._flush()
            return
        self._flush_timer = loop.call_later(self._flush_interval, self._timed_flush)

    def _timed_flush(self) -> None:
        self._flush_timer = None
        self._flush()

    def _flush(self) -> None:
        if not self._dirty or self._file is None:
            return
        self._dirty = False
        try:
            self._file.flush()
        except (OSError, ValueError) as exc:
            self._fail(exc)

    def _cancel_flush(self) -> None:
        timer, self._flush_timer = self._flush_timer, None
        if timer is not None:
            timer.cancel()

    def _fail(self, exc: BaseException) -> None:
        if not self._failed:
            # The exception text names the path only, and only for an OSError; never a frame.
            detail = (exc.strerror or "") if isinstance(exc, OSError) else ""
            log.error(
                "call=%s trace recording stopped: %s: %s",
                self.call_id or "-",
                type(exc).__name__,
                detail,
            )
        self._failed = True
        self._buffer = []
        self._cancel_flush()
        handle, self._file = self._file, None
        if handle is not None:
            with contextlib.suppress(OSError, ValueError):
                handle.close()


class TracedSocket:
    """A :class:`~realtime_fsm.bridge.MessageSocket` that records what passes through it.

    Frames are recorded when ``recv`` returns (the moment the bridge reads them) and when
    ``send`` is called (just before they go out), so the trace order is the bridge's order."""

    def __init__(self, inner: MessageSocket, trace: CallTrace, side: Side) -> None:
        self.inner = inner
        self.trace = trace
        self.side = side

    async def recv(self) -> str | bytes:
        try:
            frame = await self.inner.recv()
        except Exception as exc:
            self.trace.note(self.side, "closed", by="peer", error=type(exc).__name__)
            raise
        self.trace.record(self.side, "in", frame)
        return frame

    async def send(self, message: str) -> None:
        self.trace.record(self.side, "out", message)
        await self.inner.send(message)

    def send_nowait(self, message: str) -> bool:
        """The wrapped socket's ``send_nowait`` (see ``webserver.WebSocket``), recorded when it
        wrote the frame; without one, False (the bridge then queues the frame for ``send``).
        Defined here so that ``__getattr__`` cannot hand out the inner one unrecorded."""
        nowait = getattr(self.inner, "send_nowait", None)
        if nowait is None or not nowait(message):
            return False
        self.trace.record(self.side, "out", message)
        return True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.trace.note(self.side, "closed", by="bridge", code=code, reason=reason[:200])
        await self.inner.close(code, reason)

    def __getattr__(self, name: str) -> Any:
        # Anything else (state, close_code, ...) is the wrapped socket's.
        return getattr(self.inner, name)


def start_trace(
    trace_dir: str | Path | None,
    bridge: BridgeConfig,
    *,
    secrets: Iterable[str | None] = (),
    max_trace_bytes: int = MAX_TRACE_BYTES,
) -> CallTrace | None:
    """The server's one call: a new :class:`CallTrace`, or ``None`` when tracing is off."""
    if trace_dir is None or str(trace_dir) == "":
        return None
    return CallTrace.open(
        os.fspath(trace_dir), bridge, secrets=secrets, max_trace_bytes=max_trace_bytes
    )


def _dumps(line: dict[str, Any]) -> str:
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))

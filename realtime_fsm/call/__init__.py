"""The whole call as a sans-IO object (:class:`CallSession`), its settings, report and the
events it tells the application.  Drivers: :class:`realtime_fsm.bridge.CallBridge` (asyncio,
any two WebSockets), :mod:`realtime_fsm.asgi` (Starlette/FastAPI routes), the built-in server.
"""

from __future__ import annotations

from .app_events import (
    AppEvent,
    AssistantTranscript,
    AudioTruncated,
    BargeIn,
    CallEnded,
    CallerTranscript,
    CallStarted,
    PlaybackStarted,
    ProtocolError,
    ResponseCancelling,
    ResponseFinished,
    ResponseRequestGivenUp,
    ResponseStarted,
    SessionLost,
    SessionRestored,
    SessionRotated,
    ToolCall,
    ToolResult,
    WatchdogFired,
)
from .config import (
    DEFAULT_MARK_EVERY_MS,
    FATAL_ERROR_CODES,
    SESSION_LOST_ERROR_CODES,
    BridgeConfig,
    CallReport,
    ToolSpec,
    fatal_error,
)
from .handover import RETELLING_REASON
from .session import CallSession
from .texts import TextFrame

__all__ = [
    "DEFAULT_MARK_EVERY_MS",
    "FATAL_ERROR_CODES",
    "RETELLING_REASON",
    "SESSION_LOST_ERROR_CODES",
    "AppEvent",
    "AssistantTranscript",
    "AudioTruncated",
    "BargeIn",
    "BridgeConfig",
    "CallEnded",
    "CallReport",
    "CallSession",
    "CallStarted",
    "CallerTranscript",
    "PlaybackStarted",
    "ProtocolError",
    "ResponseCancelling",
    "ResponseFinished",
    "ResponseRequestGivenUp",
    "ResponseStarted",
    "SessionLost",
    "SessionRestored",
    "SessionRotated",
    "TextFrame",
    "ToolCall",
    "ToolResult",
    "ToolSpec",
    "WatchdogFired",
    "fatal_error",
]

"""realtime-fsm: the response lifecycle of a realtime voice-AI call as an explicit state machine.

The core is sans-IO: feed :class:`ResponseLifecycle` events and the current monotonic time, and
execute the commands it returns.  Adapters for the OpenAI Realtime and Twilio Media Streams
protocols build on it, and :class:`CallSession` is a whole call, sans-IO, on top of them.

The drivers are imported from their modules (they bring asyncio and sockets):
``realtime_fsm.bridge.CallBridge`` (any two WebSockets), ``realtime_fsm.asgi`` (Starlette /
FastAPI routes), ``realtime_fsm.server`` (the built-in server), ``realtime_fsm.core_driver``
(the core alone, for apps that own their sockets).
"""

from __future__ import annotations

from .call import (
    AppEvent,
    AssistantTranscript,
    AudioTruncated,
    BargeIn,
    BridgeConfig,
    CallEnded,
    CallerTranscript,
    CallReport,
    CallSession,
    CallStarted,
    PlaybackStarted,
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
from .call import ProtocolError as ProtocolErrorEvent
from .commands import (
    META_EVENT_ID,
    META_REASON,
    ClearPlayback,
    Command,
    DropResponseAudio,
    RequestGivenUp,
    ReturnUndeliveredText,
    SendItemDelete,
    SendResponseCancel,
    SendResponseCreate,
    SendTruncate,
    SendUserText,
)
from .config import LifecycleConfig
from .errors import (
    CallNotActive,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    ToolArgumentsError,
)
from .events import (
    AudioDelta,
    ConnectionClosed,
    Event,
    IdleTimeoutTriggered,
    PlaybackProgress,
    RequestResponse,
    ResponseCreated,
    ResponseDone,
    ServerError,
    SessionConfigured,
    SpeechStarted,
    SpeechStopped,
    Tick,
    TranscriptDelta,
    UserText,
    UserTurnCommitted,
)
from .lifecycle import ResponseLifecycle
from .table import CallState, ResponseState
from .tools import Tool, function_tool

__version__ = "0.1.0"

__all__ = [
    "META_EVENT_ID",
    "META_REASON",
    "AppEvent",
    "AssistantTranscript",
    "AudioDelta",
    "AudioTruncated",
    "BargeIn",
    "BridgeConfig",
    "CallEnded",
    "CallNotActive",
    "CallReport",
    "CallSession",
    "CallStarted",
    "CallState",
    "CallerTranscript",
    "ClearPlayback",
    "Command",
    "ConnectionClosed",
    "DropResponseAudio",
    "Event",
    "IdleTimeoutTriggered",
    "LifecycleConfig",
    "LocalProtocolError",
    "PlaybackProgress",
    "PlaybackStarted",
    "ProtocolError",
    "ProtocolErrorEvent",
    "RemoteProtocolError",
    "RequestGivenUp",
    "RequestResponse",
    "ResponseCancelling",
    "ResponseCreated",
    "ResponseDone",
    "ResponseFinished",
    "ResponseLifecycle",
    "ResponseRequestGivenUp",
    "ResponseStarted",
    "ResponseState",
    "ReturnUndeliveredText",
    "SendItemDelete",
    "SendResponseCancel",
    "SendResponseCreate",
    "SendTruncate",
    "SendUserText",
    "ServerError",
    "SessionConfigured",
    "SessionLost",
    "SessionRestored",
    "SessionRotated",
    "SpeechStarted",
    "SpeechStopped",
    "Tick",
    "Tool",
    "ToolArgumentsError",
    "ToolCall",
    "ToolResult",
    "TranscriptDelta",
    "UserText",
    "UserTurnCommitted",
    "WatchdogFired",
    "__version__",
    "function_tool",
]

"""realtime-fsm: the response lifecycle of a realtime voice-AI call as an explicit state machine.

The core is sans-IO: feed :class:`ResponseLifecycle` events and the current monotonic time, and
execute the commands it returns.  Adapters for the OpenAI Realtime and Twilio Media Streams
protocols, and an asyncio bridge, build on it.
"""

from __future__ import annotations

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
from .errors import CallNotActive, LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import (
    AudioDelta,
    ConnectionClosed,
    Event,
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
from .table import ResponseState

__version__ = "0.1.0"

__all__ = [
    "META_EVENT_ID",
    "META_REASON",
    "AudioDelta",
    "CallNotActive",
    "ClearPlayback",
    "Command",
    "ConnectionClosed",
    "DropResponseAudio",
    "Event",
    "LifecycleConfig",
    "LocalProtocolError",
    "PlaybackProgress",
    "ProtocolError",
    "RemoteProtocolError",
    "RequestGivenUp",
    "RequestResponse",
    "ResponseCreated",
    "ResponseDone",
    "ResponseLifecycle",
    "ResponseState",
    "ReturnUndeliveredText",
    "SendItemDelete",
    "SendResponseCancel",
    "SendResponseCreate",
    "SendTruncate",
    "SendUserText",
    "ServerError",
    "SessionConfigured",
    "SpeechStarted",
    "SpeechStopped",
    "Tick",
    "TranscriptDelta",
    "UserText",
    "UserTurnCommitted",
    "__version__",
]

"""OpenAI Realtime adapter: server frames in, typed results out; commands in, client events out.

Sans-IO: nothing here touches a socket.  A driver reads a text frame from the Realtime
WebSocket, calls :func:`parse_server_event` (or :meth:`OpenAIRealtimeCodec.parse`), feeds the
result to the :class:`~realtime_fsm.lifecycle.ResponseLifecycle`, and writes whatever
:func:`render_command` makes of the commands it gets back.

Both API generations are read, whatever the codec renders: the GA names
(``response.output_audio.delta``, ...) and the beta aliases (``response.audio.delta``, ...) map
to the same results, so a server that mixes them, or a proxy that rewrites one to the other,
cannot confuse the lifecycle.  Rendering has to pick one, because the two generations disagree
on field names (``output_modalities`` vs ``modalities``, nested vs flat session config).

Every event type of the ``openai`` package's GA and beta server-event unions is either parsed
or explicitly :class:`Ignored` with ``known=True``; anything else is ``Ignored`` with
``known=False`` (never an error: the server gains event types faster than clients).  What *is*
an error is a frame that is not a JSON object, lacks a string ``type``, is larger than the
configured limit, or has a missing or wrongly typed field that the lifecycle depends on: those
raise :class:`~realtime_fsm.errors.RemoteProtocolError` so a driver can log the frame and keep
the call alive.

The adapter is a package by what each part holds:

* :mod:`~realtime_fsm.openai_realtime.messages`: the value types, unions and event type sets;
* :mod:`~realtime_fsm.openai_realtime.parsing`: server event parsing (:func:`parse_server_event`);
* :mod:`~realtime_fsm.openai_realtime.rendering`: client event rendering and :func:`dumps`;
* :mod:`~realtime_fsm.openai_realtime.session`: :class:`SessionConfig` and ``session.update``;
* :mod:`~realtime_fsm.openai_realtime.session_fields`: checks and shapes of its pass-through
  settings (tools, ``tool_choice``, truncation, ``extra``...);
* :mod:`~realtime_fsm.openai_realtime.codec`: :class:`OpenAIRealtimeCodec`;
* :mod:`~realtime_fsm.openai_realtime.models`: the default model, announced shutdowns
  (:func:`realtime_deprecation`), which models reason (:func:`takes_reasoning`);
* :mod:`~realtime_fsm.openai_realtime.endpoint`: session URLs and auth headers for OpenAI and
  Azure OpenAI (:func:`openai_url`, :func:`azure_url`, :func:`auth_headers`).

Every public name is importable from here, as it was from the single module this replaced.
"""

from __future__ import annotations

from .codec import MAX_UNKNOWN_TYPES, OTHER_UNKNOWN, OpenAIRealtimeCodec
from .codec import log as log
from .endpoint import (
    OPENAI_REALTIME_BASE_URL,
    Provider,
    auth_headers,
    azure_url,
    openai_url,
)
from .messages import (
    ACTIVITY_TYPES,
    AUDIO_DELTA_TYPES,
    CLIENT_COMMANDS,
    IGNORED_TYPES,
    TRANSCRIPT_DELTA_TYPES,
    ClientCommand,
    Dialect,
    FunctionCallDone,
    Ignored,
    InputTranscript,
    InputTranscriptDelta,
    ItemAdded,
    LifecycleEvent,
    OutputAudioDelta,
    OutputItemAdded,
    OutputItemDone,
    OutputTranscriptDelta,
    ResponseActivity,
    ServerMessage,
)
from .models import (
    DEFAULT_REALTIME_MODEL,
    Deprecation,
    realtime_deprecation,
    takes_reasoning,
    transcription_deprecation,
)
from .parsing import (
    DEFAULT_MAX_FRAME_SIZE,
    KNOWN_TYPES,
    base64_decoded_size,
    parse_server_event,
)
from .rendering import (
    dumps,
    input_audio_append_json,
    is_client_command,
    render_command,
    render_function_call_output,
    render_input_audio_append,
    render_input_audio_commit,
    render_message_item,
)
from .session import (
    DEFAULT_TRANSCRIPTION_MODEL,
    Eagerness,
    SessionConfig,
    TurnDetection,
    render_session_update,
)
from .session_fields import NoiseReduction, ReasoningEffort

__all__ = [
    "ACTIVITY_TYPES",
    "AUDIO_DELTA_TYPES",
    "CLIENT_COMMANDS",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_REALTIME_MODEL",
    "DEFAULT_TRANSCRIPTION_MODEL",
    "IGNORED_TYPES",
    "KNOWN_TYPES",
    "MAX_UNKNOWN_TYPES",
    "OPENAI_REALTIME_BASE_URL",
    "OTHER_UNKNOWN",
    "TRANSCRIPT_DELTA_TYPES",
    "ClientCommand",
    "Deprecation",
    "Dialect",
    "Eagerness",
    "FunctionCallDone",
    "Ignored",
    "InputTranscript",
    "InputTranscriptDelta",
    "ItemAdded",
    "LifecycleEvent",
    "NoiseReduction",
    "OpenAIRealtimeCodec",
    "OutputAudioDelta",
    "OutputItemAdded",
    "OutputItemDone",
    "OutputTranscriptDelta",
    "Provider",
    "ReasoningEffort",
    "ResponseActivity",
    "ServerMessage",
    "SessionConfig",
    "TurnDetection",
    "auth_headers",
    "azure_url",
    "base64_decoded_size",
    "dumps",
    "input_audio_append_json",
    "is_client_command",
    "openai_url",
    "parse_server_event",
    "realtime_deprecation",
    "render_command",
    "render_function_call_output",
    "render_input_audio_append",
    "render_input_audio_commit",
    "render_message_item",
    "render_session_update",
    "takes_reasoning",
    "transcription_deprecation",
]

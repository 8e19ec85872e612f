"""Run whole calls offline: a fake OpenAI Realtime server and a fake Twilio caller.

A voice bridge sits between two websockets it does not control.  To test it as it runs in
production, without a Twilio number, an OpenAI key or a network, put it between these two:

* :class:`FakeRealtimeServer` listens on 127.0.0.1 and plays OpenAI's Realtime API: the
  session, conversation items, exactly one default-conversation response at a time (with the
  real ``conversation_already_has_active_response`` error), streamed audio and transcript,
  ``response.cancel`` and ``conversation.item.truncate`` rules, server VAD from the energy of
  the audio you append, input transcription, GA or beta event names.  Fault knobs
  (:class:`ResponseFaults`, :meth:`FakeRealtimeServer.error_on_next`, ...) make it misbehave.
* :class:`FakeTwilioCaller` connects to your bridge's media-stream endpoint like Twilio, streams
  20 ms mu-law frames (silence, or a tone while it "speaks"), plays back what the bridge sends in
  real time, echoes marks only when played, honours ``clear``, and records what it heard.

Both speak raw protocol JSON; neither imports the rest of this package, so they test any bridge.

Typical use in a test (no pytest plugin needed; ``start_my_bridge`` is your bridge, started on
127.0.0.1 and pointed at the fake server: the Testing page of the docs has it whole)::

    import asyncio
    from realtime_fsm.testing import FakeRealtimeConfig, FakeRealtimeServer, FakeTwilioCaller

    def test_barge_in() -> None:
        async def scenario() -> None:
            config = FakeRealtimeConfig(realtime_factor=10)
            async with FakeRealtimeServer(config, replies=["Hi! How can I help you today?"]) as ai:
                media_url = await start_my_bridge(openai_url=ai.url)  # your bridge's ws:// URL
                async with FakeTwilioCaller(media_url) as caller:
                    await caller.wait_for_audio(200)          # the assistant is talking
                    await caller.speak(0.8)                   # the caller barges in
                    await ai.wait_until(lambda: bool(ai.responses) and ai.responses[0].finished)
                    first = ai.responses[0]
                    assert first.status == "cancelled"
                    clear_at = caller.clears[-1].at
                    assert not caller.tags_received_after(clear_at, first.tag)
                assert ai.error_counts == {}                  # no protocol errors provoked

        asyncio.run(asyncio.wait_for(scenario(), 30))

Scripting tool calls (``realtime_fsm.testing.fake_tools``; reference §11)::

    ai.script_tool_call("order", name="lookup_order", arguments={"order_id": "42"},
                        preamble="Let me check.", then_reply=lambda outs: f"It is {outs[0]}.")
    ...  # the caller says "where is order 42": the response speaks the preamble, then calls
    assert [o.name for o in ai.tool_outputs] == ["lookup_order"]   # the bridge answered it
    assert ai.responses_before_outputs == 0      # ...and did not ask for a reply too early
    ai.race_vad_on_next_create()   # the bridge's follow-up create meets a VAD response

Things worth knowing:

* Both bind or connect on 127.0.0.1 only; the fake server's port is 0 (a free port) by default:
  read :attr:`FakeRealtimeServer.url` / :attr:`FakeRealtimeServer.port` after starting it.
* Every audio delta the fake server sends carries a small tag naming its response
  (:attr:`ResponseRecord.tag`); the caller finds the tags in what it receives and plays
  (:attr:`FakeTwilioCaller.tags_received`, :attr:`FakeTwilioCaller.tags_played`), which is how
  a test proves "no audio of the cancelled response after its clear".
* :attr:`FakeRealtimeServer.error_counts` counts the errors the server's *rules* produced;
  errors injected on purpose are counted in :attr:`FakeRealtimeServer.injected_error_counts`.
* Typed text is not a Twilio feature; :meth:`FakeTwilioCaller.type_text` only works through an
  opt-in channel (``FakeCallerConfig(text_event="text")`` and/or ``on_text=``).
* Server VAD works on the audio timeline: a test can append a second of speech at once.
  Set ``silence_duration_ms`` low in ``session.update`` to make turns end quickly.
* The ``openai`` SDK's own client connects to it too:
  ``AsyncOpenAI(api_key="test", websocket_base_url=f"ws://127.0.0.1:{server.port}/v1")
  .realtime.connect(model=...)``; the model in the URL is the session's model.
"""

from __future__ import annotations

from .audio import (
    MULAW_SILENCE,
    TAG_SIZE,
    AudioTag,
    TagScanner,
    bytes_per_ms,
    find_audio_tags,
    make_audio_tag,
    mulaw_decode,
    mulaw_encode,
    rms_level,
    silence,
    tone,
)
from .fake_realtime import (
    LIFECYCLE_EVENT_TYPES,
    FakeRealtimeConfig,
    FakeRealtimeConnection,
    FakeRealtimeServer,
    ReceivedEvent,
    ReplyContext,
    ReplyItem,
    ReplySource,
    ResponseFaults,
    ResponseRecord,
    ScriptedError,
    ScriptedReply,
    SentEvent,
    beta_event_name,
)
from .fake_tools import ToolCallRecord, ToolCallRule, ToolOutput
from .fake_twilio import (
    ClearRecord,
    FakeCallerConfig,
    FakeTwilioCaller,
    HangUp,
    HeardTag,
    MarkEcho,
    PlayedAudio,
    ReceivedMedia,
    ScriptStep,
    SendDtmf,
    Speak,
    TypeText,
    twilio_signature,
)
from .fake_webhook import DialedCall, WebhookRefused, dial, parse_twiml

__all__ = [
    "LIFECYCLE_EVENT_TYPES",
    "MULAW_SILENCE",
    "TAG_SIZE",
    "AudioTag",
    "ClearRecord",
    "DialedCall",
    "FakeCallerConfig",
    "FakeRealtimeConfig",
    "FakeRealtimeConnection",
    "FakeRealtimeServer",
    "FakeTwilioCaller",
    "HangUp",
    "HeardTag",
    "MarkEcho",
    "PlayedAudio",
    "ReceivedEvent",
    "ReceivedMedia",
    "ReplyContext",
    "ReplyItem",
    "ReplySource",
    "ResponseFaults",
    "ResponseRecord",
    "ScriptStep",
    "ScriptedError",
    "ScriptedReply",
    "SendDtmf",
    "SentEvent",
    "Speak",
    "TagScanner",
    "ToolCallRecord",
    "ToolCallRule",
    "ToolOutput",
    "TypeText",
    "WebhookRefused",
    "beta_event_name",
    "bytes_per_ms",
    "dial",
    "find_audio_tags",
    "make_audio_tag",
    "mulaw_decode",
    "mulaw_encode",
    "parse_twiml",
    "rms_level",
    "silence",
    "tone",
    "twilio_signature",
]

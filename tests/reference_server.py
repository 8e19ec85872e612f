"""A reference model of the OpenAI Realtime server's response behaviour, for property tests.

Pure Python, no I/O, no clock: the model is a set of rules about *what the server does with each
client event it receives*, written from ``shared/reference/openai-realtime.md`` (sections 2-5),
not from the machine under test.  It is deliberately small, but every rule the response
lifecycle depends on is here:

* one default-conversation response at a time.  A ``response.create`` while one is in progress is
  rejected with ``conversation_already_has_active_response`` (the real message, naming the busy
  ``resp_...``, with ``error.event_id`` set to the create's ``event_id``) and produces neither a
  ``response.created`` nor a ``response.done``;
* otherwise ``response.created`` (echoing the request's ``metadata``), then streamed audio and
  audio-transcript deltas (:meth:`ReferenceServer.step`), then ``response.done`` (``completed``);
* ``response.cancel`` of an in-progress response ends it with ``response.done`` (``cancelled``,
  ``client_cancelled``); a cancel with nothing to cancel is ``response_cancel_not_active``
  ("Cancellation failed: no active response found") and changes nothing;
* out-of-band creates (``conversation: "none"``) run in parallel and never block the slot;
* server VAD: ``speech_started`` with ``interrupt_response`` cancels the in-progress default
  response itself (``cancelled``, ``turn_detected``); ``speech_stopped`` commits the turn and,
  with ``create_response``, creates a response of its own (no metadata) if the slot is free;
  an idle timeout does the same without speech;
* silent responses: transcript deltas and no audio at all (the no-audio watchdog's case);
* ``conversation.item.truncate`` is validated against the audio actually sent for the item.

The model speaks the library's own value types as its wire format (client events are the
``Send*`` commands, server events are the :mod:`realtime_fsm.events` classes), so the tests need
no adapter; what is modelled is the server's *rules*, not JSON.

Every protocol violation it sees is recorded in :attr:`ReferenceServer.violations` instead of
raised, because some are legitimate (a create racing a server-created response is unavoidable)
and only the test, which knows what the client could have known, can tell which.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import attrs

from realtime_fsm import (
    META_EVENT_ID,
    AudioDelta,
    Command,
    ResponseCreated,
    ResponseDone,
    SendItemDelete,
    SendResponseCancel,
    SendResponseCreate,
    SendTruncate,
    SendUserText,
    ServerError,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    UserTurnCommitted,
)

#: Server events the model emits, in the order a client receives them.
ServerEvent = (
    ResponseCreated
    | AudioDelta
    | TranscriptDelta
    | ResponseDone
    | ServerError
    | SpeechStarted
    | SpeechStopped
    | UserTurnCommitted
)

BUSY_CODE = "conversation_already_has_active_response"
CANCEL_NOT_ACTIVE_CODE = "response_cancel_not_active"
CANCEL_NOT_ACTIVE_MESSAGE = "Cancellation failed: no active response found"


def busy_message(response_id: str) -> str:
    """The exact text of the real server's rejection (openai-realtime.md section 4)."""
    return (
        f"Conversation already has an active response in progress: {response_id}."
        " Wait until the response is finished before creating a new one."
    )


@attrs.frozen
class Violation:
    """One client event the real server would reject or that breaks the protocol's intent.

    ``kind`` is one of ``create_while_active``, ``text_while_active`` (a user item added while a
    default response is generating), ``truncate_beyond_audio``, ``truncate_at_zero``,
    ``truncate_in_progress``, ``unknown_item``, ``uncorrelated_create``, ``duplicate_event_id``
    or ``not_a_client_event``.  ``response_id`` names the response in the way, if any."""

    kind: str
    event_id: str | None
    response_id: str | None = None
    detail: str = ""


@attrs.define
class ServerResponse:
    """One response as the server sees it.  ``origin`` is ``client``, ``server_vad`` or
    ``idle_timeout``; ``create_event_id`` is the ``event_id`` of the create that made it."""

    id: str
    out_of_band: bool
    origin: str
    metadata: Mapping[str, str]
    create_event_id: str | None
    silent: bool
    item_id: str
    script: deque[str]
    status: str = "in_progress"


@attrs.define
class AudioItem:
    """An assistant item with output audio: what a truncate is checked against."""

    response_id: str
    audio_bytes: int = 0
    deleted: bool = False
    truncated_ms: int | None = None


@attrs.define
class ReferenceServer:
    """The server side of one Realtime session (see the module docstring for the rules).

    ``outbox`` is the server-to-client half of the connection: events are appended as the server
    emits them and the test delivers them from the left, in order.  Client events come in through
    :meth:`receive`, one at a time, in the order the client sent them."""

    turn_detection: bool = False
    create_response: bool = False
    interrupt_response: bool = False
    #: Audio and transcript chunks per response; each audio chunk is 20 ms of G.711 (160 bytes).
    audio_chunks: int = 2
    transcript_chunks: int = 2
    #: Transcript chunks of a silent response (the seed's log shows ``transcript_deltas=3``).
    silent_chunks: int = 3
    chunk_bytes: int = 160
    bytes_per_ms: int = 8

    outbox: deque[ServerEvent] = attrs.field(factory=deque)
    violations: list[Violation] = attrs.field(factory=list)
    responses: dict[str, ServerResponse] = attrs.field(factory=dict)
    default: ServerResponse | None = None
    oob: dict[str, ServerResponse] = attrs.field(factory=dict)
    items: dict[str, AudioItem] = attrs.field(factory=dict)
    #: User text items (``conversation.item.create``) in conversation order.
    user_texts: list[str] = attrs.field(factory=list)
    #: Counters of benign outcomes a test may want to see exercised.
    notes: dict[str, int] = attrs.field(factory=dict)
    speaking: bool = False
    #: The next default-conversation response is silent; with ``always_silent`` every one is.
    next_silent: bool = False
    always_silent: bool = False
    #: The GA server echoes the client's ``event_id`` in ``error.event_id``; older servers (and
    #: clients that set none) leave it null (openai-realtime.md 8.4, race 13).
    echo_event_ids: bool = True
    _seen_event_ids: set[str] = attrs.field(factory=set)
    _seq: int = 0
    _user_seq: int = 0

    # ------------------------------------------------------------------------- client events

    def receive(self, message: Command) -> None:
        """Apply one client event, as the server does when it arrives."""
        event_id = getattr(message, "event_id", None)
        if not isinstance(event_id, str):
            self._violate("not_a_client_event", None, detail=type(message).__name__)
            return
        if event_id in self._seen_event_ids:
            self._violate("duplicate_event_id", event_id)
        self._seen_event_ids.add(event_id)
        if isinstance(message, SendResponseCreate):
            self._on_create(message)
        elif isinstance(message, SendResponseCancel):
            self._on_cancel(message)
        elif isinstance(message, SendUserText):
            self._on_item_create(message)
        elif isinstance(message, SendTruncate):
            self._on_truncate(message)
        elif isinstance(message, SendItemDelete):
            self._on_item_delete(message)
        else:
            self._violate("not_a_client_event", event_id, detail=type(message).__name__)

    def _on_create(self, create: SendResponseCreate) -> None:
        if create.out_of_band:
            self._start(
                out_of_band=True,
                origin="client",
                metadata=create.metadata,
                create_event_id=create.event_id,
            )
            return
        if create.metadata.get(META_EVENT_ID) != create.event_id:
            self._violate("uncorrelated_create", create.event_id)
        busy = self.default
        if busy is not None:
            self._violate("create_while_active", create.event_id, busy.id)
            self._emit(
                ServerError(
                    code=BUSY_CODE, message=busy_message(busy.id), event_id=self._echo(create)
                )
            )
            return
        self._start(
            out_of_band=False,
            origin="client",
            metadata=create.metadata,
            create_event_id=create.event_id,
        )

    def _on_cancel(self, cancel: SendResponseCancel) -> None:
        target: ServerResponse | None
        if cancel.response_id is None:
            target = self.default  # an id-less cancel never reaches out-of-band responses
        elif self.default is not None and self.default.id == cancel.response_id:
            target = self.default
        else:
            target = self.oob.get(cancel.response_id)
        if target is None:
            self._note("cancel_not_active")
            self._emit(
                ServerError(
                    code=CANCEL_NOT_ACTIVE_CODE,
                    message=CANCEL_NOT_ACTIVE_MESSAGE,
                    event_id=self._echo(cancel),
                )
            )
            return
        self._finish(target, "cancelled", "client_cancelled")

    def _on_item_create(self, item: SendUserText) -> None:
        busy = self.default
        if busy is not None:
            # Legal for the server, but the item lands in the middle of a response: the client
            # meant to hold it until that response's response.done.
            self._violate("text_while_active", item.event_id, busy.id)
        self.user_texts.append(item.text)

    def _on_truncate(self, truncate: SendTruncate) -> None:
        item = self.items.get(truncate.item_id)
        if item is None or item.deleted:
            self._violate("unknown_item", truncate.event_id, detail=truncate.item_id)
            self._emit(
                ServerError(
                    code="item_not_found",
                    message=f"Item with item_id '{truncate.item_id}' not found.",
                    event_id=self._echo(truncate),
                )
            )
            return
        audio_ms = item.audio_bytes // self.bytes_per_ms
        if truncate.audio_end_ms > audio_ms:
            self._violate(
                "truncate_beyond_audio",
                truncate.event_id,
                item.response_id,
                detail=f"{truncate.audio_end_ms}ms > {audio_ms}ms",
            )
            self._emit(
                ServerError(
                    code="invalid_value",
                    message=(
                        f"Audio content of {audio_ms}ms is already shorter than"
                        f" {truncate.audio_end_ms}ms"
                    ),
                    event_id=self._echo(truncate),
                )
            )
            return
        if truncate.audio_end_ms <= 0:
            self._violate("truncate_at_zero", truncate.event_id, item.response_id)
            return
        if self.responses[item.response_id].status == "in_progress":
            # The client cut audio the server is still generating: it thinks the response was
            # interrupted while it was not.
            self._violate("truncate_in_progress", truncate.event_id, item.response_id)
        item.truncated_ms = truncate.audio_end_ms
        self._note("truncated")

    def _on_item_delete(self, delete: SendItemDelete) -> None:
        item = self.items.get(delete.item_id)
        if item is None or item.deleted:
            self._violate("unknown_item", delete.event_id, detail=delete.item_id)
            return
        if self.responses[item.response_id].status == "in_progress":
            self._violate("truncate_in_progress", delete.event_id, item.response_id)
        item.deleted = True
        self._note("deleted")

    # -------------------------------------------------------------- the server's own actions

    def streaming(self) -> list[str]:
        """Ids of responses with events still to emit: the default one first, then out-of-band."""
        ids = [self.default.id] if self.default is not None else []
        ids.extend(self.oob)
        return ids

    def step(self, response_id: str | None = None) -> bool:
        """Emit the next streaming event (delta or final ``response.done``) of one response."""
        ids = self.streaming()
        if not ids:
            return False
        resp = self.responses[response_id if response_id in ids else ids[0]]
        kind = resp.script.popleft()
        if kind == "audio":
            self.items[resp.item_id].audio_bytes += self.chunk_bytes
            self._emit(AudioDelta(resp.id, resp.item_id, self.chunk_bytes))
        elif kind == "transcript":
            self._emit(TranscriptDelta(resp.id, resp.item_id))
        else:
            self._finish(resp, "completed", None)
        return True

    def speech_started(self) -> None:
        """The caller starts talking (server VAD sees it in the input audio)."""
        if not self.turn_detection or self.speaking:
            raise ValueError("speech_started needs turn detection and a silent caller")
        self.speaking = True
        self._user_seq += 1
        self._emit(SpeechStarted(item_id=f"item_user_{self._user_seq}"))
        if self.interrupt_response and self.default is not None:
            self._finish(self.default, "cancelled", "turn_detected")

    def speech_stopped(self) -> None:
        """The caller stops: the turn is committed and, with ``create_response``, answered."""
        if not self.speaking:
            raise ValueError("speech_stopped without speech_started")
        self.speaking = False
        item_id = f"item_user_{self._user_seq}"
        self._emit(SpeechStopped(item_id=item_id))
        self._emit(UserTurnCommitted(item_id=item_id))  # input_audio_buffer.committed
        if self.create_response:
            if self.default is None:
                self._start(
                    out_of_band=False, origin="server_vad", metadata={}, create_event_id=None
                )
            else:
                self._note("vad_create_skipped")

    def idle_timeout(self) -> bool:
        """``idle_timeout_ms`` elapsed: the server commits silence and answers it by itself."""
        if self.default is not None:
            return False
        self._start(out_of_band=False, origin="idle_timeout", metadata={}, create_event_id=None)
        return True

    # ------------------------------------------------------------------------------ internals

    def _start(
        self,
        *,
        out_of_band: bool,
        origin: str,
        metadata: Mapping[str, str],
        create_event_id: str | None,
    ) -> None:
        self._seq += 1
        rid = f"resp_{self._seq}"
        item_id = f"item_{self._seq}"
        silent = False
        if not out_of_band and (self.next_silent or self.always_silent):
            silent, self.next_silent = True, False
        script: deque[str] = deque()
        audio = 0 if silent else self.audio_chunks
        transcript = max(self.silent_chunks, 1) if silent else self.transcript_chunks
        # Transcript first, then audio: the order that gives the watchdog its chance to misfire.
        for i in range(max(audio, transcript)):
            if i < transcript:
                script.append("transcript")
            if i < audio:
                script.append("audio")
        script.append("done")
        resp = ServerResponse(
            id=rid,
            out_of_band=out_of_band,
            origin=origin,
            metadata=dict(metadata),
            create_event_id=create_event_id,
            silent=silent,
            item_id=item_id,
            script=script,
        )
        self.responses[rid] = resp
        self.items[item_id] = AudioItem(response_id=rid)
        if out_of_band:
            self.oob[rid] = resp
        else:
            self.default = resp
        self._emit(ResponseCreated(rid, out_of_band=out_of_band, metadata=resp.metadata))

    def _finish(self, resp: ServerResponse, status: str, reason: str | None) -> None:
        resp.status = status
        resp.script.clear()
        if resp.out_of_band:
            del self.oob[resp.id]
        else:
            self.default = None
        self._emit(ResponseDone(resp.id, status=status, reason=reason))

    def _echo(self, message: SendResponseCreate | SendResponseCancel | SendTruncate) -> str | None:
        return message.event_id if self.echo_event_ids else None

    def _emit(self, event: ServerEvent) -> None:
        self.outbox.append(event)

    def _violate(
        self, kind: str, event_id: str | None, response_id: str | None = None, detail: str = ""
    ) -> None:
        self.violations.append(Violation(kind, event_id, response_id, detail))

    def _note(self, key: str) -> None:
        self.notes[key] = self.notes.get(key, 0) + 1

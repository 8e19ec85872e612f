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

By default the server is as polite as it can be: it acknowledges a cancel at once and emits every
event the moment the action that causes it happens.  Fields turn on the ruder behaviours the real
server is allowed (each field's comment says why it is allowed); every one is off by default:

* ``cancel_ack``: a cancel only *requests* the end of a response; the response keeps its slot and
  may keep streaming until the test acknowledges the cancel (:meth:`ReferenceServer.ack_cancel`),
  lets the response complete first (:meth:`ReferenceServer.finish_first`, or its script runs out:
  ``completed``, the cancel raced completion), or loses the acknowledgement (``"lost"``: the
  response ends server-side and no ``response.done`` ever arrives);
* ``late_created``: a client-created default response takes the slot at once but its events are
  withheld until :meth:`ReferenceServer.release_created`, so errors about later client events
  (a busy error naming it) overtake its ``response.created``;
* ``old_busy_wording``: the busy rejection has ``code`` null and no response id in its message;
* ``refuse_next_create``: the next default create on a free slot is rejected with that code;
* ``swallow_next_create``: the next default create gets no answer at all.

Bookkeeping for "was every caller turn answered": :attr:`ReferenceServer.seq` counts every event
the server emits or withholds and every client event it receives; committed user turns
(:attr:`ReferenceServer.turns`), user text items (:attr:`ReferenceServer.user_text_seqs`) and
responses (``started_seq`` / ``ended_seq``) are stamped with it.

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
#: The busy rejection's older wording (Jan 2025): ``code`` null, no response id (section 4).
OLD_BUSY_MESSAGE = "Conversation already has an active response"
#: The message of a create refused by :attr:`ReferenceServer.refuse_next_create`.
REFUSED_MESSAGE = "Invalid value for response.create (refused by the test server)"
#: The values of :attr:`ReferenceServer.cancel_ack`.
CANCEL_ACKS = ("prompt", "slow", "lost")
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


@attrs.frozen
class Turn:
    """One committed user turn: the user item and the :attr:`ReferenceServer.seq` of its
    ``input_audio_buffer.committed``, so a test can ask which responses started after it."""

    item_id: str
    seq: int


@attrs.define
class ServerResponse:
    """One response as the server sees it.  ``origin`` is ``client``, ``server_vad`` or
    ``idle_timeout``; ``create_event_id`` is the ``event_id`` of the create that made it.

    ``status`` is ``in_progress`` until the response ends, then ``completed`` or ``cancelled``.
    ``started_seq`` is the :attr:`ReferenceServer.seq` of its ``response.created`` as the server
    made it (emitted or withheld, not when a withheld one was released); ``ended_seq`` that of its
    ``response.done`` (or, when that acknowledgement is lost, the last ``seq`` before it ended).
    ``cancel_source`` says what cancelled it: ``None`` (it completed, or is still running),
    ``"client"`` (a ``response.cancel``) or ``"vad"`` (``turn_detected``)."""

    id: str
    out_of_band: bool
    origin: str
    metadata: Mapping[str, str]
    create_event_id: str | None
    silent: bool
    item_id: str
    script: deque[str]
    status: str = "in_progress"
    started_seq: int = 0
    ended_seq: int | None = None
    cancel_source: str | None = None


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

    # --- the ruder behaviours the real server is allowed; all off by default

    #: How a ``response.cancel`` of an in-progress response is acknowledged.  ``"prompt"``: it
    #: ends at once with ``response.done`` (``cancelled``, ``client_cancelled``), as section 2.3
    #: describes.  ``"slow"``: the cancel is only *requested*; the response keeps its slot (a
    #: create before its ``response.done`` is still busy, section 4 and race 5 of section 8.4)
    #: and may keep streaming, and either :meth:`ack_cancel` ends it (``cancelled``) or it
    #: completes first (:meth:`finish_first`, or its script runs out), ending ``completed``:
    #: cancel racing completion, race 3 of section 8.4 ("CANCELLING must accept any terminal
    #: status").  ``"lost"``: as ``"slow"``, but :meth:`ack_cancel` ends the response server-side
    #: without any ``response.done``.  Section 3.2 says ``response.done`` is "always emitted";
    #: this is the case section 8.2 still tells clients to survive ("If no ``response.done`` for
    #: the id arrives, fall back to IDLE rather than waiting forever"): the client must not wait
    #: for the acknowledgement forever.
    cancel_ack: str = attrs.field(default="prompt", validator=attrs.validators.in_(CANCEL_ACKS))
    #: A client-created default-conversation response takes the slot at once, but all its events
    #: (``response.created`` first) are withheld until :meth:`release_created`, while errors about
    #: later client events are emitted at once and so overtake them.  Allowed because nothing in
    #: the protocol orders an error about a later client event after the ``response.created`` of
    #: the response it concerns: section 4 notes that the busy error names the blocking
    #: ``resp_...`` so the client can resync, and section 8.2 says to parse it and "set
    #: ACTIVE(id, unknown) if you don't already have it", i.e. the busy error can be the first the
    #: client hears of that response.  If the response ends while withheld, its withheld events
    #: are sent at once, followed by its ``response.done``.  Server VAD and idle-timeout responses
    #: and out-of-band ones are never withheld.
    late_created: bool = False
    #: The busy rejection in its older wording (Jan 2025, section 4): ``code`` null and the
    #: message "Conversation already has an active response", naming no response.  Whether
    #: ``error.event_id`` is echoed still follows :attr:`echo_event_ids`.
    old_busy_wording: bool = False
    #: Reject the next default-conversation ``response.create`` that finds the slot free with an
    #: error of this code (and no response); reset to ``None`` once used.  A create that finds the
    #: slot busy gets the busy error as usual and leaves the refusal for the next one.  Allowed:
    #: section 4 lists other errors a create can get (``invalid_value``, rate limits, quota), and
    #: section 8.2 says a pending create rejected "with another code" fails and frees the slot.
    refuse_next_create: str | None = None
    #: Silently drop the next default-conversation ``response.create`` (no response, no error, the
    #: slot unchanged), then reset; counted in ``notes["swallowed"]``.  Not a documented server
    #: behaviour: it stands for a create whose answer never comes (a stall, a lost frame), which
    #: the ``CREATE_PENDING`` state of section 8.1 ("neither response.created nor an error seen
    #: yet") must time out of; nothing in the protocol bounds how long that answer takes.
    swallow_next_create: bool = False
    #: Enforce that :meth:`idle_timeout` needs :attr:`turn_detection` (``idle_timeout_ms`` is
    #: "currently only supported for server_vad mode", section 5).  Off by default only because
    #: the existing lifecycle tests fire idle timeouts in their ``no_vad`` mode.
    idle_timeout_needs_vad: bool = False

    # --- bookkeeping for "was every caller turn answered"

    #: Incremented on every event the server emits (or withholds) and every client event it
    #: receives; the clock the ``*_seq`` stamps below are read from.
    seq: int = 0
    #: Committed user turns (``speech_stopped``), in order.
    turns: list[Turn] = attrs.field(factory=list)
    #: The :attr:`seq` of each user text item, parallel to :attr:`user_texts`.
    user_text_seqs: list[int] = attrs.field(factory=list)

    _seen_event_ids: set[str] = attrs.field(factory=set)
    #: Ids of responses with a cancel requested but not yet acknowledged, in arrival order.
    _cancel_requests: list[str] = attrs.field(factory=list)
    #: Events of responses whose events are withheld (``late_created``), oldest response first.
    _withheld: dict[str, list[ServerEvent]] = attrs.field(factory=dict)
    _response_count: int = 0
    _user_seq: int = 0

    # ------------------------------------------------------------------------- client events

    def receive(self, message: Command) -> None:
        """Apply one client event, as the server does when it arrives."""
        self.seq += 1
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
        if self.swallow_next_create:
            # Lost before the server looked at it: no answer, no violation either.
            self.swallow_next_create = False
            self._note("swallowed")
            return
        if create.metadata.get(META_EVENT_ID) != create.event_id:
            self._violate("uncorrelated_create", create.event_id)
        busy = self.default
        if busy is not None:
            self._violate("create_while_active", create.event_id, busy.id)
            if self.old_busy_wording:
                code, message = None, OLD_BUSY_MESSAGE
            else:
                code, message = BUSY_CODE, busy_message(busy.id)
            self._emit(ServerError(code=code, message=message, event_id=self._echo(create)))
            return
        if self.refuse_next_create is not None:
            code, self.refuse_next_create = self.refuse_next_create, None
            self._note("refused")
            self._emit(ServerError(code=code, message=REFUSED_MESSAGE, event_id=self._echo(create)))
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
        if self.cancel_ack == "prompt":
            self._finish(target, "cancelled", "client_cancelled", cancel_source="client")
        elif target.id in self._cancel_requests:
            self._note("cancel_repeated")  # still active, so no error; and nothing new to do
        else:
            self._cancel_requests.append(target.id)
            self._note("cancel_requested")

    def _on_item_create(self, item: SendUserText) -> None:
        busy = self.default
        if busy is not None:
            # Legal for the server, but the item lands in the middle of a response: the client
            # meant to hold it until that response's response.done.
            self._violate("text_while_active", item.event_id, busy.id)
        self.user_texts.append(item.text)
        self.user_text_seqs.append(self.seq)

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
        """Ids of responses with events still to emit: the default one first, then out-of-band.
        A response whose events are withheld is not listed: it streams once released."""
        ids = [self.default.id] if self.default is not None else []
        ids.extend(self.oob)
        return [rid for rid in ids if rid not in self._withheld]

    def step(self, response_id: str | None = None) -> bool:
        """Emit the next streaming event (delta or final ``response.done``) of one response."""
        ids = self.streaming()
        if not ids:
            return False
        resp = self.responses[response_id if response_id in ids else ids[0]]
        kind = resp.script.popleft()
        if kind == "audio":
            self.items[resp.item_id].audio_bytes += self.chunk_bytes
            self._emit(AudioDelta(resp.id, resp.item_id, self.chunk_bytes), resp)
        elif kind == "transcript":
            self._emit(TranscriptDelta(resp.id, resp.item_id), resp)
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
            self._finish(self.default, "cancelled", "turn_detected", cancel_source="vad")

    def speech_stopped(self) -> None:
        """The caller stops: the turn is committed and, with ``create_response``, answered."""
        if not self.speaking:
            raise ValueError("speech_stopped without speech_started")
        self.speaking = False
        item_id = f"item_user_{self._user_seq}"
        self._emit(SpeechStopped(item_id=item_id))
        self._emit(UserTurnCommitted(item_id=item_id))  # input_audio_buffer.committed
        self.turns.append(Turn(item_id, self.seq))
        if self.create_response:
            if self.default is None:
                self._start(
                    out_of_band=False, origin="server_vad", metadata={}, create_event_id=None
                )
            else:
                self._note("vad_create_skipped")

    def idle_timeout(self) -> bool:
        """``idle_timeout_ms`` elapsed: the server commits silence and answers it by itself.

        Returns whether a response was created (not when the slot is busy).  With
        :attr:`idle_timeout_needs_vad`, raises ``ValueError`` without :attr:`turn_detection`:
        idle timeout is server_vad only (section 5)."""
        if self.idle_timeout_needs_vad and not self.turn_detection:
            raise ValueError("idle_timeout needs turn detection (server_vad only)")
        if self.default is not None:
            return False
        self._start(out_of_band=False, origin="idle_timeout", metadata={}, create_event_id=None)
        return True

    def pending_cancels(self) -> list[str]:
        """Ids of responses with a cancel requested and not yet acknowledged, oldest first
        (always empty with ``cancel_ack="prompt"``)."""
        return list(self._cancel_requests)

    def ack_cancel(self, response_id: str | None = None) -> None:
        """The server acts on a requested cancel (the oldest if ``response_id`` is None): the
        response ends ``cancelled`` (``client_cancelled``), and with ``cancel_ack="lost"`` its
        ``response.done`` is never sent.  ``ValueError`` if no such cancel is pending."""
        resp = self._pending_cancel(response_id)
        lost = self.cancel_ack == "lost"
        if lost:
            self._note("cancel_ack_lost")
        self._finish(
            resp, "cancelled", "client_cancelled", cancel_source="client", emit_done=not lost
        )

    def finish_first(self, response_id: str | None = None) -> None:
        """A response with a cancel requested (the oldest if ``response_id`` is None) completes
        before the cancel takes effect: ``response.done`` ``completed``, the cancel dropped (its
        remaining deltas are not sent; :meth:`step` first to send them).  ``ValueError`` if no
        such cancel is pending."""
        resp = self._pending_cancel(response_id)
        self._note("cancel_raced")
        self._finish(resp, "completed", None)

    def withheld(self) -> list[str]:
        """Ids of responses whose events are withheld (``late_created``), oldest first."""
        return list(self._withheld)

    def release_created(self, response_id: str | None = None) -> None:
        """Send a withheld response's events (the oldest if ``response_id`` is None), its
        ``response.created`` first; from then on its events flow normally.  ``ValueError`` if no
        such response is withheld."""
        if response_id is None:
            if not self._withheld:
                raise ValueError("no response is withheld")
            response_id = next(iter(self._withheld))
        buffered = self._withheld.pop(response_id, None)
        if buffered is None:
            raise ValueError(f"{response_id} is not withheld")
        self.outbox.extend(buffered)

    # ------------------------------------------------------------------------------ internals

    def _pending_cancel(self, response_id: str | None) -> ServerResponse:
        if response_id is None:
            if not self._cancel_requests:
                raise ValueError("no cancel is pending")
            response_id = self._cancel_requests[0]
        elif response_id not in self._cancel_requests:
            raise ValueError(f"no cancel is pending for {response_id}")
        return self.responses[response_id]

    def _start(
        self,
        *,
        out_of_band: bool,
        origin: str,
        metadata: Mapping[str, str],
        create_event_id: str | None,
    ) -> None:
        self._response_count += 1
        rid = f"resp_{self._response_count}"
        item_id = f"item_{self._response_count}"
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
            if self.late_created and origin == "client":
                self._withheld[rid] = []
        self._emit(ResponseCreated(rid, out_of_band=out_of_band, metadata=resp.metadata), resp)
        resp.started_seq = self.seq

    def _finish(
        self,
        resp: ServerResponse,
        status: str,
        reason: str | None,
        *,
        cancel_source: str | None = None,
        emit_done: bool = True,
    ) -> None:
        """End a response: free its slot, drop any cancel requested for it, send its withheld
        events (the client must see its ``response.created`` before its end), then its
        ``response.done`` unless the acknowledgement is lost (``emit_done`` false)."""
        resp.status = status
        resp.cancel_source = cancel_source
        resp.script.clear()
        if resp.id in self._cancel_requests:
            self._cancel_requests.remove(resp.id)
        if resp.out_of_band:
            del self.oob[resp.id]
        else:
            self.default = None
        self.outbox.extend(self._withheld.pop(resp.id, ()))
        if emit_done:
            self._emit(ResponseDone(resp.id, status=status, reason=reason))
        resp.ended_seq = self.seq

    def _echo(self, message: SendResponseCreate | SendResponseCancel | SendTruncate) -> str | None:
        return message.event_id if self.echo_event_ids else None

    def _emit(self, event: ServerEvent, resp: ServerResponse | None = None) -> None:
        """Send one event, or buffer it if it belongs to a response whose events are withheld."""
        self.seq += 1
        buffered = self._withheld.get(resp.id) if resp is not None else None
        if buffered is not None:
            buffered.append(event)
        else:
            self.outbox.append(event)

    def _violate(
        self, kind: str, event_id: str | None, response_id: str | None = None, detail: str = ""
    ) -> None:
        self.violations.append(Violation(kind, event_id, response_id, detail))

    def _note(self, key: str) -> None:
        self.notes[key] = self.notes.get(key, 0) + 1

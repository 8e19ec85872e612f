"""Every field of a :class:`~realtime_fsm.call.CallSession`, with why it is there.

The call machine's state is ``call_state`` (:class:`~realtime_fsm.table.CallState`); the
response machines live in ``machine`` (a :class:`~realtime_fsm.lifecycle.ResponseLifecycle`,
one per OpenAI session).  Every other field is data: the guards of the call machine's rows read
some of it (named at each field), and nothing else decides a transition.
"""

from __future__ import annotations

import logging
from typing import Final

from .. import events as ev
from ..admission import Admission
from ..credentials import StreamCredentials
from ..history import ConversationHistory
from ..lifecycle import ResponseLifecycle
from ..openai_realtime import OpenAIRealtimeCodec
from ..table import AWAITING_START, CallState
from ..twilio_media import LedgerPlaybackTracker, Start
from .app_events import AppEvent, ToolCall
from .config import BridgeConfig, CallReport
from .texts import TextCustody, TextFrame
from .uncommitted import UncommittedAudio

log = logging.getLogger("realtime_fsm.call")

#: Response transcripts being accumulated at once (one default response, plus stragglers).
MAX_PARTIALS: Final = 8
#: Input transcripts remembered per session, to tell whether a committed turn's words came.
MAX_TRANSCRIBED: Final = 32
#: A session lost sooner than this after it started is short-lived: consecutive ones are backed
#: off before the next connect, so a server that says ``session.created`` and drops is not
#: hammered.
SHORT_SESSION_S: Final = 3.0
#: HTTP statuses of a refused reconnect handshake that retrying cannot fix (bad key, no access).
FATAL_HANDSHAKE_STATUSES: Final = frozenset({401, 403})


class Transcript:
    """One response's transcript so far, cut at ``limit`` characters: the history keeps no
    more than that of it anyway, and a server streaming huge deltas (or never ending a
    response) must not grow the call's memory."""

    __slots__ = ("chars", "limit", "parts")

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.chars = 0
        self.limit = limit

    def add(self, delta: str) -> None:
        room = self.limit - self.chars
        if room > 0:
            piece = delta if len(delta) <= room else delta[:room]
            self.parts.append(piece)
            self.chars += len(piece)


class OpenCall:
    """A tool call the model made on the current session, not yet answered."""

    __slots__ = ("call", "deadline", "made_at")

    def __init__(self, call: ToolCall, made_at: float, deadline: float) -> None:
        self.call = call
        self.made_at = made_at
        self.deadline = deadline


class CallFields:
    """The data of one call; :class:`~realtime_fsm.call.CallSession` is the behaviour."""

    def __init__(
        self,
        config: BridgeConfig,
        *,
        now: float,
        peer: str,
        can_reconnect: bool,
        credentials: StreamCredentials | None = None,
        wall_offset: float = 0.0,
        admission: Admission | None = None,
    ) -> None:
        # --- The call machine.
        self.call_state: CallState = AWAITING_START
        # --- Settings.  ``can_reconnect`` is read by the guard of the same name.
        self.config = config
        #: Read per frame: an attribute of the session, not of its config.
        self.max_twilio_message = config.max_twilio_message
        self.can_reconnect_sessions = can_reconnect
        #: The telephony peer's address: until ``start`` names the call, the only thing that
        #: ties its log lines together.
        self.peer = peer
        self.call_label = f"-@{peer}" if peer else "-"
        # --- Time and the event being handled (the call machine's inputs, like the response
        # machine's ``_now``/``_ev``): the guards read them.
        self._now = float(now)
        #: Twilio's ``start`` being handled (the guard ``bad_media_format`` reads it).
        self._start: Start | None = None
        #: Why the call ends or the session was lost, for the row being run.
        self._reason = ""
        #: A refused reconnect's HTTP status (the guard ``connect_refused`` reads it).
        self._failed_status: int | None = None
        #: The server's stream credentials: ``start`` must carry one for this call (the guard
        #: ``credential_refused`` asks them); ``None``: the server checks none.
        self.credentials = credentials
        #: The server process's call capacity (``realtime_fsm.admission``): the guard
        #: ``not_admitted`` asks it whether this call's ``start`` is served; ``None``: no bound.
        self.admission = admission
        #: This call took a place in ``admission`` (given back once, when the call is closed);
        #: no guard reads it.
        self._admitted = False
        #: Wall-clock (Unix) time minus ``now``'s clock: credentials expire in wall time, which
        #: every worker shares, and the call is given no clock of its own.
        self.wall_offset = float(wall_offset)
        #: Twilio's ``start`` is due by then (the call machine's deadline in awaiting_start).
        self._start_deadline = self._now + config.start_timeout
        # --- Outputs, drained by the driver after every input.
        #: Frames for the OpenAI socket, in order (text frames carry their text, see texts.py).
        self.out_openai: list[str | TextFrame] = []
        #: Frames for the Twilio socket, in order.
        self.out_twilio: list[str] = []
        #: Application events, in order; built only while ``emit_events`` (a driver turns it on
        #: when the application listens), so an application that listens to nothing pays
        #: nothing for them.
        self.events: list[AppEvent] = []
        self.emit_events = False
        #: Tool calls for the driver to run (the ones it has a handler for).
        self.tool_calls: list[ToolCall] = []
        #: Undelivered texts for the application's callback (the report has them too).
        self.returned_texts: list[tuple[str, ...]] = []
        #: Set with the call machine's ``ending``: why, and the WebSocket close code.
        self.end_reason: str | None = None
        self.close_code = 1000
        #: The OpenAI session must be torn down (an error the server ends it with): the driver
        #: stops its reader and reports the loss back with :meth:`openai_lost`.
        self.lost_reason: str | None = None
        #: In ``reconnecting``: wait this long, then open a socket and report it.
        self.connect_delay: float | None = None
        # --- What happened (the application's, at the end; no guard reads it but
        # ``reconnects_exhausted``, which reads ``report.reconnects``).
        self.report = CallReport()
        self.custody = TextCustody()
        #: What a new session is told of the conversation so far.
        self.history = ConversationHistory(config.history_max_items, config.history_max_chars)
        # --- Built at ``start``, once the call has a name to log under.
        self.stream_sid = ""
        self.machine: ResponseLifecycle | None = None
        self.codec: OpenAIRealtimeCodec
        self.tracker: LedgerPlaybackTracker
        # --- Sessions and reconnects (the guards ``attempts_exhausted`` and
        # ``reconnects_exhausted`` read the counts).
        self._session_started_at = self._now
        self._short_sessions = 0
        #: Failed attempts not yet cleared by a session that proved itself (session.created).
        self._unproven_attempts = 0
        self._lost_at = 0.0
        #: Requests for the next session: carried from the lost one, or asked for meanwhile.
        self._held_requests: list[ev.RequestResponse] = []
        #: Lifecycle counters of the machines of lost sessions.
        self._stats_before: dict[str, int] = {}
        # --- Per session: ids and the caller's turns.
        self._partials: dict[str, Transcript] = {}
        #: Event ids minted by the call itself, counted per series (see ``mint_id``).
        self._id_seq: dict[str, int] = {}
        #: Push-to-talk commits sent and not yet confirmed or refused, oldest first.
        self._commits: list[str] = []
        #: The item of the newest committed caller turn on this session, and the items whose
        #: input transcript arrived (bounded): whether a turn's words can be restored.
        self._turn_item: str | None = None
        self._transcribed: dict[str, None] = {}
        #: This session's ``session.update``s not yet answered, oldest first (the server
        #: answers them in order, with ``session.updated`` or an ``error`` naming the id): each
        #: with the settings in force before it, which stay if the server refuses it; ``None``
        #: for the session's first, whose refusal leaves the server's defaults and ends the
        #: call.
        self._pending_updates: list[tuple[str, BridgeConfig | None]] = []
        #: ``report.media_out`` when the current session began: audio sent since means the
        #: assistant has spoken on it, after which the server refuses a voice change.
        self._media_out_at_session = 0
        # --- Tools: calls of this session not yet answered, by call id.
        self._open_calls: dict[str, OpenCall] = {}
        #: Calls of this session already answered (bounded): a duplicate done is not a call.
        self._answered_calls: dict[str, None] = {}
        #: Per response: its completed function calls (a round); the one follow-up request is
        #: made once the response is done and every call answered, if any asked for one.
        self._tool_rounds: dict[str, list[str]] = {}
        self._round_wants_response: dict[str, bool] = {}
        #: Responses of a round that are done: no more calls can join their round.
        self._rounds_closed: set[str] = set()
        #: Outputs of ours the server has not yet confirmed added to the conversation, and
        #: whether a follow-up request is queued: a response the server creates once every
        #: output is in answers with them in view (the follow-up is withdrawn).
        self._round_unconfirmed: set[str] = set()
        self._follow_up_queued = False
        # --- Playback per response, for ``ResponseFinished.heard_ms``.
        self._last_audio_item = ""
        self._response_items: dict[str, list[str]] = {}
        #: Watchdog counters last seen, to tell the application when it fires.
        self._watchdog_seen = (0, 0)
        # --- Observation only (``observations.py``), kept while ``emit_events``: the times and
        # details application events and telemetry report.  No guard reads them.
        #: When each of our ``response.create`` was handed out, by its event id.
        self._asked_at: dict[str, float] = {}
        #: When the server last committed a caller turn (what its own response answers).
        self._turn_at: float | None = None
        #: When each response's first audio was handed out, by response id.
        self._first_audio: dict[str, float] = {}
        #: The first audio item of each response not yet heard: item -> (response, sent at).
        #: Emptied by every ``clear`` (what was pending then is never heard), so a mark echo
        #: costs one truthiness test while no response waits to be heard.
        self._awaiting_play: dict[str, tuple[str, float]] = {}
        #: Item -> its response, for the truncates of a barge-in.
        self._item_response: dict[str, str] = {}
        #: The response machine's current stay in ``cancelling`` was told.
        self._cancel_told = False
        # --- Sessions by number, and rotation (see ``rotation.py``).
        #: The current OpenAI session's number (0 for the first, +1 per replacement): a driver
        #: tags each socket with the number it serves and feeds :meth:`openai_frame` only the
        #: current one's frames, so late frames of a replaced socket are told apart.
        self.generation = 0
        #: The number of the next session while one is being prepared for a rotation (the
        #: driver's socket for it is wanted while this is set), else ``None``.
        self.next_generation: int | None = None
        #: Frames for the next session's socket before it takes over (its ``session.update``).
        self.out_next: list[str] = []
        #: When the current session is due for rotation (the guard ``rotation_due``); ``None``:
        #: never (no connector, ``rotate_after=None``, or this session's attempts ran out).
        self._rotate_at: float | None = None
        #: Failed attempts at this rotation (the guard ``rotation_attempts_left``).
        self._rotation_failures = 0
        #: When this rotation became due (logs and the ``SessionRotated`` event only).
        self._rotation_due_at = 0.0
        #: When the next session's socket opened: its server-side age starts there.
        self._next_opened_at = 0.0
        #: When the next session was ready (the guard ``quiet_window_passed``).
        self._next_ready_at = 0.0
        #: The next session's ``session.update``: its event id (an error naming it fails the
        #: next session), and the config it carried (sent again at the switch if it changed).
        self._next_update_id: str | None = None
        self._next_config: BridgeConfig | None = None
        #: The next session's ``session.updated`` being handled (the guard
        #: ``next_audio_wrong``), and why a next session failed (logs only).
        self._next_configured: ev.SessionConfigured | None = None
        self._next_problem = ""
        #: What the ready next session said it applied (its ``session.updated``, read before
        #: the switch): the new machine learns the session's turn detection from it at the
        #: switch, as a machine does from its own session's.  No guard reads it.
        self._next_settings: ev.SessionConfigured | None = None
        #: The server's VAD said ``speech_started`` and has not committed that turn yet (its
        #: ``speech_stopped`` comes first): the caller's words are only in this session's
        #: input buffer (the rotation guards read it).
        self._caller_speaking = False
        #: The event being handled is the ``response.done`` that freed the slot, and anything
        #: it let the machine send has not left the call yet (the guard
        #: ``at_response_boundary``).
        self._boundary = False
        #: Push-to-talk with rotation on: the caller audio forwarded since the last commit
        #: (bounded), for the session that takes over; ``None`` otherwise (a ledger: no guard
        #: reads it).
        self._uncommitted: UncommittedAudio | None = None
        #: Set at each switch: the switch itself re-sent the uncommitted push-to-talk audio
        #: (in ``out_openai``), which includes any caller audio still queued for the old
        #: socket, so a driver drops that audio instead of moving it.  No guard reads it.
        self.input_audio_resent = False
        #: The tracker's generation when a session was replaced with its audio still playing
        #: at Twilio (the guard ``hearing_retired_audio``); ``None`` when none can be.
        self._retired_audio: int | None = None

"""Per-deployment settings of a call (:class:`BridgeConfig`) and what happened on one
(:class:`CallReport`), shared by the sans-IO :class:`~realtime_fsm.call.CallSession` and every
driver.  Value types only: nothing here changes a state machine's transition."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol

import attrs

from ..commands import RequestGivenUp
from ..config import LifecycleConfig
from ..openai_realtime import DEFAULT_MAX_FRAME_SIZE, Dialect, SessionConfig
from ..twilio_media import DEFAULT_MAX_MESSAGE_SIZE, check_mark_every_ms
from ..validators import (
    non_negative,
    non_negative_int,
    positive,
    positive_int,
    positive_or_none,
)

#: Server errors no new session can cure: a bad key, an account out of quota or credit, a
#: deactivated account (livekit-agents' ``_FATAL_ERROR_CODES``, reference section 4).  Matched
#: against ``error.code`` *or* ``error.type``, since OpenAI has changed such a code while keeping
#: the type.  The call ends with ``openai error <value>`` as its reason and one log line; it is
#: never reconnected (a new session would be refused the same way, and retrying a billing
#: failure for every live call is a storm).
FATAL_ERROR_CODES: Final = frozenset(
    {
        "invalid_api_key",
        "insufficient_quota",
        "credit_balance_exhausted",
        "billing_hard_limit_reached",
        "account_deactivated",
    }
)


def fatal_error(code: str | None, error_type: str | None) -> str | None:
    """Which of :data:`FATAL_ERROR_CODES` an ``error`` event carries (its code first, then its
    type), or ``None``."""
    for value in (code, error_type):
        if value is not None and value in FATAL_ERROR_CODES:
            return value
    return None


#: Server error codes that end the *session*, not the call (the 60-minute cap): with a
#: ``reconnect`` connector the call goes on with a new session; without one the call ends
#: with the code as its reason.
SESSION_LOST_ERROR_CODES: Final = frozenset({"session_expired"})


class ToolSpec(Protocol):
    """What the call needs of a tool: its name, and its entry in the session's ``tools``
    (:class:`realtime_fsm.tools.Tool` is one; so is any object with these two)."""

    @property
    def name(self) -> str: ...

    def schema(self) -> dict[str, Any]: ...


def _dtmf_key(_inst: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and (type(value) is not str or value not in _DTMF_KEYS):
        raise ValueError(f"{attribute.name} must be one DTMF key (0-9, *, #), got {value!r}")


_DTMF_KEYS: Final = frozenset("0123456789*#")


def _mark_every(_inst: object, _attribute: attrs.Attribute[Any], value: int) -> None:
    # The tracker's own check, run when the config is built: a bad deployment setting fails at
    # start-up instead of ending every call.
    check_mark_every_ms(value)


def _tool_tuple(tools: Iterable[ToolSpec]) -> tuple[ToolSpec, ...]:
    # A typed converter: with ``converter=tuple`` mypy types the ``tools`` argument as
    # ``Iterable[_T_co]`` and refuses every caller's ``tools=(my_tool,)``.
    return tuple(tools)


#: ``BridgeConfig.mark_every_ms``'s default: a Twilio ``mark`` per 500 ms of an item's audio.
DEFAULT_MARK_EVERY_MS: Final = 500


@attrs.frozen
class BridgeConfig:
    """Per-deployment settings; one call (a ``CallSession`` and its driver) is built from them."""

    session: SessionConfig = attrs.field(factory=SessionConfig)
    dialect: Dialect = Dialect.GA
    lifecycle: LifecycleConfig = attrs.field(factory=LifecycleConfig)
    #: Instructions for a first response as soon as the stream starts: a string, or a function
    #: of the call's custom parameters (TwiML ``<Parameter>``s, e.g. the caller's name) that
    #: returns one (``None``: no greeting for that call).  ``None``: wait for the caller.
    greeting: str | Callable[[Mapping[str, str]], str | None] | None = None
    #: Map each DTMF key to user text (``"DTMF 5"``), so keypad input reaches the model.
    dtmf_as_text: bool = True
    #: The keypad key that ends the caller's spoken turn (push-to-talk: the bridge commits the
    #: input audio, see :meth:`CallBridge.commit_user_turn`), for a session without turn
    #: detection (``SessionConfig(turn_detection=None)``); that key is then not sent as text.
    #: ``None``: no key does.
    commit_on_dtmf: str | None = attrs.field(default=None, validator=_dtmf_key)
    #: Accept ``{"event": "text", "text": ...}`` on the telephony socket as typed user text.
    #: Not a Twilio message: for simulators and custom telephony front-ends only.
    accept_text_messages: bool = False
    max_openai_frame: int = DEFAULT_MAX_FRAME_SIZE
    max_twilio_message: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Outbound messages buffered per socket before the call is ended as unable to keep up.
    max_queue: int = 2000
    #: Malformed frames tolerated per call before the offending socket is closed (1008).
    max_bad_frames: int = 100
    #: At most one Twilio ``mark`` per this many ms of an item's audio (plus one at its end);
    #: 0 = a mark after every ``media``.  With 20 ms deltas, per-delta marks are a third of a
    #: call's messages (each is sent, echoed and parsed); at 500 they are 1 in 25.  Truncation
    #: stays exact between marks while ``estimate_playback`` is on (the default); without it,
    #: truncation points have this granularity (always on the early side).
    mark_every_ms: int = attrs.field(default=DEFAULT_MARK_EVERY_MS, validator=_mark_every)
    #: Right before a barge-in (``speech_started``, user text), estimate how far the caller's
    #: playback got since the last mark echo (:meth:`PlaybackTracker.estimate`), so that the
    #: truncate point is what was heard, to within the echo's delay, however sparse the marks;
    #: False: truncate at the last echoed mark (early by up to ``mark_every_ms``).
    estimate_playback: bool = True
    #: How long to wait for Twilio's ``start`` before giving up on the stream.
    start_timeout: float = 15.0
    #: Connection attempts per lost session (the first at once, then with backoff) before the
    #: call ends with ``openai reconnect failed after N attempts``.  A new session that drops
    #: before its ``session.created``/``session.updated`` counts as a failed attempt.
    reconnect_attempts: int = attrs.field(default=4, validator=positive_int)
    #: Backoff before the second attempt; doubled for each further one, up to the cap.
    reconnect_base_delay: float = attrs.field(default=0.25, validator=non_negative)
    reconnect_max_delay: float = attrs.field(default=4.0, validator=non_negative)
    #: Bound on one connection attempt (the connector should have its own, shorter one).
    reconnect_timeout: float = attrs.field(default=10.0, validator=positive)
    #: Sessions a call may lose and replace in total (a 3-hour call needs 3 for the cap alone);
    #: past it the call ends rather than flap.
    max_reconnects: int = attrs.field(default=20, validator=non_negative_int)
    #: Replace the OpenAI session this many seconds after it opened, before the server's cap
    #: (60 minutes) ends it with ``session_expired`` and cuts off whatever it is saying: the
    #: next session is opened and configured while this one serves the call, and takes over
    #: at a quiet moment (nothing generating or queued, the caller's playback drained, the
    #: caller silent), so the caller hears no gap.  Needs a connector (``reconnect``).
    #: ``None``: never; a session that reaches the cap is then replaced after the fact.
    rotate_after: float | None = attrs.field(default=55 * 60.0, validator=positive_or_none)
    #: How long the next session, once ready, waits for a quiet moment before it takes over at
    #: a response boundary instead (the done of the current response; what was queued behind
    #: it goes to the next session; the answer the caller hears plays out).
    rotate_quiet_window: float = attrs.field(default=120.0, validator=non_negative)
    #: Attempts to open and configure the next session per rotation; a failed one keeps the
    #: call on the current session and is retried ``rotate_retry_delay`` later.  Past them,
    #: this session is left to reach the cap (and be reconnected after it).
    rotate_attempts: int = attrs.field(default=3, validator=positive_int)
    rotate_retry_delay: float = attrs.field(default=15.0, validator=non_negative)
    #: Push-to-talk (``turn_detection=None``) with rotation on: the caller audio forwarded
    #: since the last commit is kept, up to this many seconds (the newest), and appended to
    #: the session that takes over, so a turn spanning the switch keeps its beginning.  Audio
    #: past it is counted in :attr:`CallReport.push_to_talk_audio_dropped` at a switch.
    #: ``0``: nothing kept (such a turn loses what the old session had).
    rotate_carry_audio: float = attrs.field(default=30.0, validator=non_negative)
    #: Bounds of the conversation text kept for a restore (oldest dropped first).
    history_max_items: int = attrs.field(default=40, validator=non_negative_int)
    history_max_chars: int = attrs.field(default=8000, validator=non_negative_int)
    #: Function tools offered to the model (their schemas go into the session's ``tools``);
    #: a driver runs the ones it has a handler for, the application answers the rest
    #: (``submit_tool_output``).
    tools: tuple[ToolSpec, ...] = attrs.field(default=(), converter=_tool_tuple)
    #: The session's ``tool_choice`` (``"auto"``, ``"none"``, ``"required"``, or a function
    #: ``{"type": "function", "name": ...}``); ``None``: the server's default.
    tool_choice: str | dict[str, Any] | None = None
    #: A tool call with no output this long after the model made it gets an error output, so
    #: the model can recover (a driver's runner also cancels the tool then).
    tool_timeout: float = attrs.field(default=20.0, validator=positive)
    #: Application events buffered per call for a reader that is behind; past it the newest
    #: are dropped and counted (:attr:`CallReport.app_events_dropped`), never the call slowed.
    max_app_events: int = attrs.field(default=1000, validator=positive_int)

    def __attrs_post_init__(self) -> None:
        if self.commit_on_dtmf is not None and self.session.turn_detection is not None:
            raise ValueError(
                "commit_on_dtmf needs a session without turn detection"
                " (SessionConfig(turn_detection=None)): the server's VAD commits turns itself"
            )
        self.effective_session()  # a tool_choice naming no tool fails here, not mid-call

    def effective_session(self) -> SessionConfig:
        """The session as sent: ``session`` with the tools of :attr:`tools` added to its own
        (a name in both: this config's tool, whose handler runs) and :attr:`tool_choice`, when
        set, in place of its own."""
        if not self.tools and self.tool_choice is None:
            return self.session
        own = [tool.schema() for tool in self.tools]
        names = {entry.get("name") for entry in own}
        tools = (*own, *(t for t in self.session.tools if t.get("name") not in names))
        choice = self.tool_choice if self.tool_choice is not None else self.session.tool_choice
        return attrs.evolve(self.session, tools=tools, tool_choice=choice)


@attrs.define
class CallReport:
    """What happened on one call, for logs, metrics and the application."""

    call_sid: str | None = None
    stream_sid: str | None = None
    end_reason: str = ""
    undelivered_texts: list[str] = attrs.field(factory=list)
    given_up: list[RequestGivenUp] = attrs.field(factory=list)
    bad_frames: dict[str, int] = attrs.field(factory=dict)
    lifecycle_stats: dict[str, int] = attrs.field(factory=dict)
    #: User texts written to an OpenAI socket (not merely queued; once if re-sent on a new
    #: session; never for a text handed back undelivered).
    user_texts_sent: int = 0
    media_in: int = 0
    media_out: int = 0
    server_errors: dict[str, int] = attrs.field(factory=dict)
    #: OpenAI sessions lost and replaced during the call.
    reconnects: int = 0
    #: Connection attempts that failed while replacing a lost session.
    reconnect_failures: int = 0
    #: Seconds from each loss to the new session's socket being open.
    reconnect_times: list[float] = attrs.field(factory=list)
    #: Of ``reconnects``, those served by the next session of a rotation, ready when the
    #: current one was lost: it took over at once, no connection opened (``took`` 0).
    reconnects_to_ready: int = 0
    #: OpenAI sessions replaced before the server's cap (see ``BridgeConfig.rotate_after``);
    #: ``rotations_at_boundary`` of them at a response boundary, the rest at a quiet moment.
    rotations: int = 0
    rotations_at_boundary: int = 0
    #: Next sessions that could not be opened or configured (the call stayed where it was).
    rotation_failures: int = 0
    #: Push-to-talk caller audio frames (forwarded since the last commit) that a switch of
    #: session could not carry to the new one: the oldest, past
    #: :attr:`BridgeConfig.rotate_carry_audio`.
    push_to_talk_audio_dropped: int = 0
    #: Caller audio frames dropped because no OpenAI session was up (while reconnecting), or
    #: left over for a lost session (queued, or its send failed): never sent to the next one.
    media_dropped: int = 0
    #: Caller turns a lost session took with it: committed (by the server's VAD or by
    #: :meth:`CallBridge.commit_user_turn`) but not answered in full, with no transcript to
    #: restore; or committed by hand while no session was up or before the lost one
    #: confirmed it.  The new session cannot know what was said, so they are not answered
    #: (the caller, hearing nothing, repeats).  A turn whose transcript did arrive is
    #: answered on the new session.
    turns_lost: int = 0
    #: Tool calls the model made (completed ones; a call cut off by a barge-in is not run).
    tool_calls: int = 0
    #: Tool calls answered with an error output (raised, timed out, unknown tool, bad args).
    tool_failures: int = 0
    #: Application events dropped because the application's reader was behind.
    app_events_dropped: int = 0
    #: Custom parameters of Twilio's ``start`` (``<Parameter>`` in the TwiML).
    custom_parameters: dict[str, str] = attrs.field(factory=dict)

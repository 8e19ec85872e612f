"""The one custodian of the caller's typed text between the machine and the socket.

Once the application hands the call a text, it reaches the model exactly once or comes back to
the application undelivered, whatever happens to the sockets.  The response machine holds a text
during a barge-in; from the moment it says "send", the text is here until a driver reports the
frame written: in flight (handed to the driver, not yet written), held for the next session
(none up), or returned.  A lost session's unwritten frames are simply the ones still in flight:
the driver never has to hand texts back, only report what it wrote.
"""

from __future__ import annotations

from .. import events as ev


class UrgentFrame(str):
    """A Twilio frame the caller's ear waits for (the barge-in's ``clear``): a driver may write
    it ahead of its writer task when nothing is queued before it (the order never changes)."""

    __slots__ = ()


class TextFrame:
    """A user text item on its way to the OpenAI socket: the rendered JSON, with its text, so
    that a frame that never reaches a socket goes to the next session or back to the
    application.  Identity matters: the driver reports this very object written."""

    __slots__ = ("json", "source", "text")

    def __init__(self, json_text: str, text: str, source: str) -> None:
        self.json = json_text
        self.text = text
        self.source = source


class TextCustody:
    """User texts the call owns and the model has not received, oldest first.

    Not a state machine: no transition reads it.  Its three parts are disjoint and ordered
    among themselves (``in_flight`` older than ``held``: held texts arrive while no session is
    up, after everything sent to the lost one)."""

    __slots__ = ("_held", "_in_flight", "returned", "sent")

    def __init__(self) -> None:
        #: Frames handed to the driver for the current session, not yet reported written.
        self._in_flight: dict[TextFrame, None] = {}
        #: Texts for the next session (no session up, or taken back from a lost one).
        self._held: list[ev.UserText] = []
        #: Texts handed back to the application, in order (the report's list).
        self.returned: list[str] = []
        #: Texts written to a socket (once each).
        self.sent = 0

    def frame(self, json_text: str, text: str, source: str) -> TextFrame:
        """A frame for the current session; it stays in flight until :meth:`written`."""
        frame = TextFrame(json_text, text, source)
        self._in_flight[frame] = None
        return frame

    def written(self, frame: TextFrame) -> bool:
        """The driver wrote ``frame``; False if it was not in flight (already taken back for a
        new session or returned: a write the call no longer counts on)."""
        if self._in_flight.pop(frame, False) is None:
            self.sent += 1
            return True
        return False

    def take_back(self, held_by_machine: tuple[ev.UserText, ...] = ()) -> int:
        """The session is lost: every frame not written, then the machine's held texts, wait
        for the next session (ahead of texts already held).  Returns how many were taken."""
        texts = [ev.UserText(f.text, source=f.source) for f in self._in_flight]
        self._in_flight.clear()
        texts.extend(held_by_machine)
        self._held[0:0] = texts
        return len(texts)

    def hold(self, text: ev.UserText) -> None:
        """A text given while no session is up."""
        self._held.append(text)

    @property
    def held_count(self) -> int:
        return len(self._held)

    def pop_held(self) -> list[ev.UserText]:
        """The held texts, for delivery on a new session; none is held after."""
        held, self._held = self._held, []
        return held

    def give_back(self, texts: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """Texts that will not be delivered: recorded as returned; the caller notifies the
        application."""
        out = tuple(texts)
        self.returned.extend(out)
        return out

    def give_back_in_flight(self) -> tuple[str, ...]:
        """The call ends: the frames never written go back, oldest first."""
        texts = [f.text for f in self._in_flight]
        self._in_flight.clear()
        return self.give_back(texts)

    def give_back_held(self) -> tuple[str, ...]:
        """The call ends with texts held for a session that never came: they go back."""
        texts = [t.text for t in self._held]
        self._held = []
        return self.give_back(texts)

"""The call machine's guards and actions about the server's capacity and its drain.

A layer of the session over :class:`~realtime_fsm.call.call_actions.CallActions` (the rows
naming them are in :data:`realtime_fsm.table.CALL_TRANSITIONS`): whether a ``start`` is served
(``not_admitted``, :mod:`realtime_fsm.admission`), the place a served call holds, and the end of
a call whose server is going away.  Guards only read.
"""

from __future__ import annotations

from ..admission import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER
from .starting import Starting


class Admitting(Starting):
    """Admission guards and actions of the call machine."""

    def not_admitted(self) -> bool:
        return self._admission_refusal() is not None

    def _admission_refusal(self) -> str | None:
        """Why the server does not serve the ``start`` being handled (draining, or full and
        no place held for this call), or ``None``.  A stream that passed the credential row
        proved a webhook admitted it, somewhere: it is always served."""
        admission, start = self.admission, self._start
        if admission is None or start is None:
            return None
        return admission.stream_refusal(
            start.call_sid or "", self.credentials is not None, self._now + self.wall_offset
        )

    def end_not_admitted(self) -> None:
        assert self.admission is not None
        refusal = self._admission_refusal()
        self.admission.refused_stream()
        self.refuse_stream(f"not admitted, {refusal}", f"not admitted: {refusal}")
        self.close_code = CLOSE_TRY_AGAIN_LATER

    def take_place(self) -> None:
        """The call is served: it holds a place in the server's admission until closed."""
        start = self._start
        if self.admission is not None and start is not None:
            self.admission.enter(start.call_sid or "", self._now + self.wall_offset)
            self._admitted = True

    def end_going_away(self) -> None:
        self.note_end()
        self.close_code = CLOSE_GOING_AWAY

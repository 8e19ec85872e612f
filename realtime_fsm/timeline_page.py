"""A call's timeline as one self-contained HTML page: inline SVG, inline CSS, no assets.

``realtime-fsm replay TRACE.jsonl --html call.html`` writes it (:func:`render_page` of a
:class:`~realtime_fsm.timeline.Timeline`).  The page needs nothing but a browser: no external
file, no framework; its only script shows an element's details in a box while the pointer is
over it (each element also carries an SVG ``<title>``, the browser's own tooltip, so the page is
complete without scripts).

Every string that comes from the trace (ids, typed text, error messages, frame types) is
HTML-escaped here, once, where it is written into the page: a trace is untrusted input.
"""

from __future__ import annotations

import html
from typing import Final

from .timeline import STATES, Lane, Mark, Span, Timeline
from .trace_rules import RULE_MEANINGS

#: Pixels per second: wide enough to tell 20 ms frames apart on short calls, bounded for long
#: ones (the page scrolls sideways).
_MAX_SCALE: Final = 400.0
_MIN_SCALE: Final = 20.0
_TARGET_WIDTH: Final = 1600.0
#: Past this a browser may refuse to draw the SVG: a call of hours gets fewer pixels a second.
_MAX_WIDTH: Final = 200_000.0
_LANE_H: Final = 34
_AXIS_H: Final = 24
_LABEL_W: Final = 215
_MARK_W: Final = 2.0

_COLOURS: Final = {
    "idle": "#e5e7eb",
    "creating": "#fcd34d",
    "active": "#4ade80",
    "cancelling": "#f87171",
    "no-session": "#9ca3af",
}

_CSS: Final = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #111827; }
h1 { font-size: 20px; margin: 0 0 8px; }
table.facts td { padding: 1px 12px 1px 0; vertical-align: top; }
.chart { display: flex; border: 1px solid #d1d5db; margin: 12px 0; }
.labels { flex: none; background: #f9fafb; border-right: 1px solid #d1d5db; }
.scroll { overflow-x: auto; flex: 1; }
svg text { font: 12px system-ui, sans-serif; fill: #374151; }
.lane-bg { fill: #ffffff; }
.lane-bg.odd { fill: #f9fafb; }
.run.audio { fill: #93c5fd; }
.run.transcript { fill: #c4b5fd; }
.ev { fill: #374151; }
.ev.socket { fill: #6b7280; }
.ev.barge-in { fill: #dc2626; }
.ev.input { fill: #2563eb; }
.ev.watchdog { fill: #d97706; }
.ev.clear { fill: #7c3aed; }
.ev.violation { fill: #b91c1c; }
.ev.truncated { fill: #111827; }
.ev.truncate { fill: #b45309; }
.ev.flushed { fill: #9ca3af; }
.span.sent { fill: #bfdbfe; }
.span.heard { fill: #22c55e; }
.legend span { display: inline-block; margin-right: 14px; }
.swatch { display: inline-block; width: 12px; height: 12px; vertical-align: -1px;
          margin-right: 4px; border: 1px solid #9ca3af; }
#tip { position: fixed; display: none; max-width: 520px; background: #111827; color: #f9fafb;
       padding: 6px 8px; border-radius: 4px; font-size: 12px; pointer-events: none;
       white-space: pre-wrap; z-index: 10; }
.violations li { color: #b91c1c; }
"""

#: Shows the hovered element's ``<title>`` in a styled box (the page works without it).
_SCRIPT: Final = """
(function () {
  var tip = document.getElementById("tip");
  document.addEventListener("mousemove", function (e) {
    var el = e.target.closest ? e.target.closest("[data-tip]") : null;
    var title = el ? el.querySelector("title") : null;
    if (!title) { tip.style.display = "none"; return; }
    tip.textContent = title.textContent;
    tip.style.left = (e.clientX + 12) + "px";
    tip.style.top = (e.clientY + 12) + "px";
    tip.style.display = "block";
  });
})();
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def scale_for(duration: float) -> float:
    """Pixels per second for a call of ``duration`` seconds."""
    if duration <= 0:
        return _MAX_SCALE
    return min(max(_MIN_SCALE, min(_MAX_SCALE, _TARGET_WIDTH / duration)), _MAX_WIDTH / duration)


class _Axis:
    """Seconds to pixels, kept on the page: a time out of the trace's range (negative, or
    absurd in a hand-edited trace) is drawn at the page's edge, never at an infinite x."""

    def __init__(self, x0: float, scale: float, limit: float) -> None:
        self.x0, self.scale, self.limit = x0, scale, limit

    def __call__(self, t: float) -> float:
        return min(max(self.x0 + t * self.scale, 0.0), self.limit)


def _span(span: Span, lane: str, axis: _Axis, y: float) -> str:
    x = axis(span.start)
    width = max(_MARK_W, axis(span.end) - x)
    classes = f"run {span.kind}" if span.kind in ("audio", "transcript") else f"span {span.kind}"
    fill = _COLOURS.get(span.kind)
    style = f' style="fill:{fill}"' if lane == "machine" and fill is not None else ""
    if lane == "machine":
        classes = f"state state-{span.kind}"
    text = ""
    if lane in ("sent", "heard", "machine") and width > 60:
        text = (
            f'<text x="{x + 3:.1f}" y="{y + _LANE_H / 2 + 4:.1f}" pointer-events="none">'
            f"{_e(span.label[: max(1, int(width / 7))])}</text>"
        )
    top, height = y + 5, float(_LANE_H - 10)
    if span.kind in ("audio", "transcript"):  # both stream at once: audio above, words below
        height = height / 2
        top += height if span.kind == "transcript" else 0
    return (
        f'<g data-tip="1" data-line="{span.line}" data-count="{span.count}">'
        f'<rect class="{_e(classes)}" x="{x:.1f}" y="{top:.1f}" width="{width:.1f}"'
        f' height="{height:.1f}"{style}><title>{_e(span.detail)} (line {span.line})</title>'
        f"</rect>{text}</g>"
    )


#: Marks of the events lane that often fall on the same instant (a barge-in and the clear it
#: causes) get a third of the lane each, so that neither hides the other.
_EVENT_ROWS: Final = {"barge-in": 0, "input": 0, "clear": 1}


def _mark(mark: Mark, lane: str, axis: _Axis, y: float) -> str:
    x = axis(mark.t) - _MARK_W / 2
    top, height = y + 3, float(_LANE_H - 6)
    if lane == "events":
        height = height / 3
        top += height * _EVENT_ROWS.get(mark.kind, 2)
    return (
        f'<rect class="ev {_e(mark.kind)}" data-tip="1" data-line="{mark.line}"'
        f' data-label="{_e(mark.label)}" x="{x:.1f}" y="{top:.1f}" width="{_MARK_W}"'
        f' height="{height:.1f}"><title>{_e(mark.label)} at {mark.t:.3f} s (line'
        f" {mark.line}): {_e(mark.detail)}</title></rect>"
    )


def _lane(lane: Lane, index: int, axis: _Axis, width: float) -> str:
    y = _AXIS_H + index * _LANE_H
    odd = " odd" if index % 2 else ""
    parts = [
        f'<g class="lane" data-lane="{_e(lane.key)}">',
        f'<rect class="lane-bg{odd}" x="0" y="{y}" width="{width:.1f}" height="{_LANE_H}"/>',
    ]
    parts += [_span(span, lane.key, axis, y) for span in lane.spans]
    parts += [_mark(mark, lane.key, axis, y) for mark in lane.marks]
    parts.append("</g>")
    return "".join(parts)


def _axis(duration: float, x0: float, scale: float, height: float) -> str:
    # A tick every 60 pixels or more: at most a few thousand on the widest page.
    steps = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
    step = next((s for s in steps if s * scale >= 60), 60 / scale)
    parts = ['<g class="axis">']
    n = 0
    while n * step <= duration + 1e-9:
        x = x0 + n * step * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="{_AXIS_H - 6}" x2="{x:.1f}" y2="{height:.1f}"'
            ' stroke="#e5e7eb"/>'
            f'<text x="{x + 2:.1f}" y="{_AXIS_H - 9}">{n * step:g} s</text>'
        )
        n += 1
    parts.append("</g>")
    return "".join(parts)


def _svg(timeline: Timeline) -> tuple[str, str]:
    """(the lane labels' SVG, the chart's SVG)."""
    scale = scale_for(timeline.duration)
    x0 = 8.0
    width = x0 * 2 + max(timeline.duration, 0.001) * scale + 40
    height = _AXIS_H + len(timeline.lanes) * _LANE_H
    chart = [
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}"'
        f' height="{height}" data-scale="{scale:g}">',
        _axis(timeline.duration, x0, scale, height),
    ]
    axis = _Axis(x0, scale, width)
    chart += [_lane(lane, i, axis, width) for i, lane in enumerate(timeline.lanes)]
    chart.append("</svg>")
    labels = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_LABEL_W}" height="{height}">']
    for i, lane in enumerate(timeline.lanes):
        y = _AXIS_H + i * _LANE_H + _LANE_H / 2 + 4
        labels.append(f'<text x="8" y="{y:.1f}">{_e(lane.title)}</text>')
    labels.append("</svg>")
    return "".join(labels), "".join(chart)


def _legend() -> str:
    states = "".join(
        f'<span><i class="swatch" style="background:{_COLOURS[s]}"></i>{_e(s)}</span>'
        for s in STATES
    )
    kinds = (
        ("#93c5fd", "audio frames"),
        ("#c4b5fd", "transcript deltas"),
        ("#dc2626", "barge-in"),
        ("#2563eb", "caller input while nothing played"),
        ("#d97706", "no-audio watchdog"),
        ("#7c3aed", "clear (Twilio drops unplayed audio)"),
        ("#b45309", "truncation (what the caller heard, told to OpenAI)"),
        ("#22c55e", "heard by the caller"),
        ("#b91c1c", "rule broken"),
    )
    events = "".join(
        f'<span><i class="swatch" style="background:{c}"></i>{_e(t)}</span>' for c, t in kinds
    )
    return (
        f'<p class="legend"><b>Response slot:</b> {states}</p>'
        f'<p class="legend"><b>Marks:</b> {events}</p>'
    )


def _facts(timeline: Timeline) -> str:
    counts = {
        lane.key: len(lane.marks) + sum(s.count for s in lane.spans) for lane in timeline.lanes
    }
    events = timeline.lane("events").marks
    rows = [
        ("Call", timeline.call_id or "(unknown)"),
        ("Started", timeline.started_at or "(unknown)"),
        ("Length", f"{timeline.duration:.2f} s"),
        ("Ended", timeline.end_reason or "(no trailer: the recording stopped first)"),
        (
            "Frames",
            f"Twilio in {counts['twilio-in']}, out {counts['twilio-out']};"
            f" OpenAI in {counts['openai-in']}, out {counts['openai-out']}",
        ),
        (
            "Barge-ins",
            str(sum(1 for m in events if m.kind == "barge-in")),
        ),
        ("Watchdog fires", str(sum(1 for m in events if m.kind == "watchdog"))),
        ("Rules broken", str(len(timeline.violations))),
    ]
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{body}</table>'


def _problems(timeline: Timeline) -> str:
    parts: list[str] = []
    if timeline.violations:
        items = "".join(
            f"<li>line {v.line}: <b>{_e(v.rule)}</b>: {_e(RULE_MEANINGS.get(v.rule, ''))}"
            f" ({_e(v.message)})</li>"
            for v in timeline.violations
        )
        parts.append(f'<h2>Rules broken</h2><ul class="violations">{items}</ul>')
    else:
        parts.append("<p>The checker found no rule broken in this call.</p>")
    if timeline.warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in timeline.warnings)
        parts.append(f'<h2>Warnings</h2><ul class="warnings">{items}</ul>')
    return "".join(parts)


def render_page(timeline: Timeline, *, source: str = "") -> str:
    """The whole page, as text (UTF-8 when written)."""
    labels, chart = _svg(timeline)
    title = f"Call timeline: {timeline.call_id or source or 'trace'}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        + (f"<p>From <code>{_e(source)}</code>.</p>" if source else "")
        + _facts(timeline)
        + _legend()
        + '<div class="chart"><div class="labels">'
        + labels
        + '</div><div class="scroll">'
        + chart
        + "</div></div>"
        + "<p>The response slot is rebuilt from the frames on the wire, as the bridge saw"
        " them. “Heard” is proven by Twilio's mark echoes: audio counts as heard up to the"
        " last mark Twilio echoed before any clear. Hover over anything for its details and"
        " its line in the trace.</p>"
        + _problems(timeline)
        + f'<div id="tip"></div><script>{_SCRIPT}</script></body></html>\n'
    )

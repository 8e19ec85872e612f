"""``realtime-fsm replay TRACE --html``: a call's timeline as a self-contained web page.

* The model (:func:`realtime_fsm.timeline.build_timeline`), on a full trace recorded from a
  real end-to-end call with spoken and typed barge-ins: every frame of each socket direction
  is drawn exactly once (as a mark, or inside a run of audio frames), every barge-in, clear and
  truncation is there, the caller heard something, answers were stopped.
* The page: self-contained (no external URL, one inline script), every string from the trace
  escaped (a hostile trace cannot add markup), violations and warnings listed.
* In a real headless Chromium (slow): the page renders with no console error, the SVG has the
  elements of each lane in the counts the trace gives, and the hover box works.  Skipped when
  no browser is installed, except under CI, where ``.ci/install-browser`` must have put one.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from headless_browser import Browser, find_browser
from test_trace import E2E_CASES, RECONNECT_CASES, ROTATION_CASES, record_e2e
from test_trace_checker import _SMALL_TRACES, field_mutations

from realtime_fsm.cli import main as cli_main
from realtime_fsm.timeline import LANES, Timeline, build_timeline, timeline_file
from realtime_fsm.timeline_page import render_page
from realtime_fsm.trace_format import TraceFormatError

TRACES = Path(__file__).resolve().parent / "traces"
JSON = dict[str, Any]
_STREAMED = {
    "media",
    "input_audio_buffer.append",
    "response.output_audio.delta",
    "response.audio.delta",
    "response.output_audio_transcript.delta",
    "response.audio_transcript.delta",
    "response.output_text.delta",
    "response.text.delta",
}


class _Caplog:
    """What the e2e scenarios use of pytest's ``caplog`` (the recording runs at module scope)."""

    def set_level(self, level: int, logger: str | None = None) -> None:
        logging.getLogger(logger).setLevel(level)


@pytest.fixture(scope="module")
def barge_in_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full trace (audio lines and marks included) of a real call through the bridge in
    which the caller interrupts every answer, by speech and by typed text."""
    case = next(c for c in E2E_CASES if c.id == "barge_in_storm-server_creates")
    return record_e2e(case, tmp_path_factory.mktemp("trace"), _Caplog())


def _records(path: Path) -> list[JSON]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expected(records: list[JSON]) -> dict[str, int]:
    """What the trace says each lane must show, counted from the trace alone."""
    counts: Counter[str] = Counter()
    started = False
    for record in records[1:]:
        side, direction, kind = record.get("side"), record.get("dir"), record.get("type")
        if record.get("kind") == "end" or side not in ("twilio", "openai"):
            continue
        if direction in ("open", "closed"):
            counts[f"{side}-in:marks"] += 1  # a socket opened or closed: on its in lane
            continue
        lane = f"{side}-{direction}"
        counts[f"{lane}:{'streamed' if kind in _STREAMED else 'marks'}"] += 1
        frame = record.get("frame") or {}
        if (side, direction, kind) == ("twilio", "in", "start"):
            started = True
        elif (side, direction, kind) == ("twilio", "in", "text") and started:
            counts["caller_inputs"] += bool(str(frame.get("text", "")).strip())
        elif ((side, direction, kind) == ("twilio", "in", "dtmf") and started) or (
            kind == "input_audio_buffer.speech_started"
        ):
            counts["caller_inputs"] += 1
        elif (side, direction, kind) == ("twilio", "out", "clear"):
            counts["clears"] += 1
        elif kind in ("conversation.item.truncate", "conversation.item.delete"):
            counts["truncations"] += 1
        elif (side, direction, kind) == ("twilio", "out", "mark"):
            counts[f"item:{frame['mark']['name'].split(':', 3)[3]}"] = 1
    counts["items"] = sum(1 for key in counts if key.startswith("item:"))
    return dict(counts)


def model_counts(timeline: Timeline) -> dict[str, int]:
    """The same counts, read from the timeline."""
    counts: Counter[str] = Counter()
    for lane in timeline.lanes:
        counts[f"{lane.key}:marks"] = len(lane.marks)
        counts[f"{lane.key}:streamed"] = sum(
            s.count for s in lane.spans if s.kind in ("audio", "transcript")
        )
        for span in lane.spans:
            counts[f"{lane.key}:span:{span.kind}"] += 1
        for mark in lane.marks:
            counts[f"{lane.key}:mark:{mark.kind}"] += 1
    return dict(counts)


def test_the_timeline_of_a_real_call_draws_every_frame_once(barge_in_trace: Path) -> None:
    records = _records(barge_in_trace)
    want = expected(records)
    timeline = timeline_file(barge_in_trace)
    got = model_counts(timeline)
    assert [lane.key for lane in timeline.lanes] == [key for key, _ in LANES]
    for lane in ("twilio-in", "twilio-out", "openai-in", "openai-out"):
        assert got[f"{lane}:marks"] == want.get(f"{lane}:marks", 0), lane
        assert got[f"{lane}:streamed"] == want.get(f"{lane}:streamed", 0), lane
    assert want["twilio-in:streamed"] > 50 and want["openai-in:streamed"] > 50
    events = got.get("events:mark:barge-in", 0) + got.get("events:mark:input", 0)
    assert events == want["caller_inputs"] and got["events:mark:barge-in"] >= 5
    assert got["events:mark:clear"] == want["clears"] >= 5
    assert got["heard:mark:truncate"] == want["truncations"] >= 1
    assert got["sent:span:sent"] == want["items"] >= 2
    assert got["heard:span:heard"] >= 1  # the final answer played out
    assert got["machine:span:active"] >= 6 and got["machine:span:cancelling"] >= 1
    states = timeline.lane("machine").spans  # one after the other, no gap, no overlap
    assert all(a.end == pytest.approx(b.start) for a, b in itertools.pairwise(states))
    assert timeline.violations == () and timeline.warnings == ()
    assert timeline.end_reason == "telephony stop"


def test_watchdog_fires_and_violations_are_marked() -> None:
    watchdog = timeline_file(TRACES / "good-silent-response-watchdog.jsonl")
    assert [m.kind for m in watchdog.lane("events").marks].count("watchdog") == 1
    bad = timeline_file(TRACES / "bad-busy-errors.jsonl")
    rules = [m.label for m in bad.lane("events").marks if m.kind == "violation"]
    assert rules == ["create_races_server_response", "busy_error"]
    page = render_page(bad)
    assert "Rules broken</h2>" in page and "busy_error" in page
    assert "OpenAI refused a request" in page  # the rule explained in words


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.urls: list[str] = []
        self.attrs_seen: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs_seen += attrs
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]


HOSTILE = '<script>alert("x")</script>'


def hostile_trace() -> list[str]:
    """A trace whose every string field tries to break out of the page."""
    evil = f'{HOSTILE}"><img src=x onerror=alert(1)>'
    lines: list[JSON] = [
        {
            "kind": "header",
            "format": "realtime-fsm-trace",
            "version": 1,
            "call_id": evil,
            "started_at": evil,
            "config": {"accept_text_messages": True},
        },
        {"t": 0.0, "side": "openai", "dir": "open", "conn": 1},
        {"t": 0.01, "side": "twilio", "dir": "in", "type": "start", "frame": {"event": "start"}},
        {"t": 0.02, "side": "twilio", "dir": "in", "type": evil, "frame": {"event": evil}},
        {
            "t": 0.03,
            "side": "openai",
            "dir": "out",
            "type": "response.create",
            "frame": {"type": "response.create", "event_id": evil},
        },
        {
            "t": 0.04,
            "side": "openai",
            "dir": "in",
            "type": "response.created",
            "frame": {"type": "response.created", "response": {"id": evil}},
        },
        {
            "t": 0.05,
            "side": "twilio",
            "dir": "out",
            "type": "mark",
            "frame": {"event": "mark", "mark": {"name": f"g0:1:20:{evil}"}},
        },
        {
            "t": 0.06,
            "side": "twilio",
            "dir": "in",
            "type": "text",
            "frame": {"event": "text", "text": evil},
        },
        {
            "t": 0.07,
            "side": "openai",
            "dir": "in",
            "type": "error",
            "frame": {"type": "error", "error": {"code": evil, "message": evil}},
        },
    ]
    return [json.dumps(line) + "\n" for line in lines] + ["not json " + evil + "\n"]


def test_the_page_is_self_contained_and_escapes_everything_from_the_trace() -> None:
    timeline = build_timeline(hostile_trace())
    assert timeline.warnings  # the unreadable line is reported, not drawn
    page = render_page(timeline, source=HOSTILE)
    assert "<script>alert" not in page and "<img" not in page
    parser = _Tags()
    parser.feed(page)
    assert parser.tags["script"] == 1 and parser.tags["img"] == 0
    assert parser.urls == []  # no external asset of any kind
    assert not any(name.startswith("on") for name, _ in parser.attrs_seen)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_cli_replay_writes_the_timeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "call.html"
    trace = str(TRACES / "good-barge-in-storm.jsonl")
    assert cli_main(["replay", trace, "--html", str(out)]) == 0
    assert capsys.readouterr().out == f"{trace}: ok\n"
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<svg id="chart"' in page
    bad = str(TRACES / "bad-busy-errors.jsonl")
    assert cli_main(["replay", bad, "--html", str(out)]) == 1  # drawn, and still judged
    assert "busy_error" in out.read_text(encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["replay", trace, bad, "--html", str(out)])
    assert exit_info.value.code == 2
    assert "give exactly one trace" in capsys.readouterr().err


# --------------------------------------------------------------------------- in a browser


def _browser() -> str:
    binary = find_browser()
    if binary is None:
        reason = (
            "no headless Chromium (chromium-headless-shell or chromium; RTFSM_BROWSER names"
            " another): run .ci/install-browser"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    return binary


_DOM_COUNTS = """
(() => {
  const out = {};
  for (const lane of document.querySelectorAll("g.lane")) {
    const key = lane.dataset.lane;
    out[key + ":marks"] = lane.querySelectorAll("rect.ev").length;
    let streamed = 0;
    for (const g of lane.querySelectorAll("g[data-count]")) {
      if (g.querySelector("rect.run")) streamed += Number(g.dataset.count);
    }
    out[key + ":streamed"] = streamed;
    for (const rect of lane.querySelectorAll("rect.ev, rect.run, rect.span, rect.state")) {
      const kinds = [...rect.classList].filter(c => !["ev", "run", "span", "state"].includes(c));
      const what = rect.classList.contains("ev") ? "mark" : "span";
      const kind = kinds[0].replace(/^state-/, "");
      out[key + ":" + what + ":" + kind] = (out[key + ":" + what + ":" + kind] || 0) + 1;
    }
  }
  return out;
})()
"""


@pytest.mark.slow
def test_the_timeline_renders_in_a_real_browser(barge_in_trace: Path, tmp_path: Path) -> None:
    binary = _browser()
    timeline = timeline_file(barge_in_trace)
    want = expected(_records(barge_in_trace))
    page = tmp_path / "call.html"
    page.write_text(render_page(timeline, source=str(barge_in_trace)), encoding="utf-8")
    evil = tmp_path / "hostile.html"
    evil.write_text(render_page(build_timeline(hostile_trace()), source=HOSTILE), encoding="utf-8")
    with Browser(binary) as browser:
        browser.open(page)
        dom = browser.evaluate(_DOM_COUNTS)
        # Every lane is drawn, with what the model holds...
        assert set(key for key, _ in LANES) == {k.split(":")[0] for k in dom}
        model = model_counts(timeline)
        for key, value in model.items():
            assert dom.get(key, 0) == value, key
        # ...which is what the trace holds.
        for lane in ("twilio-in", "twilio-out", "openai-in", "openai-out"):
            assert dom[f"{lane}:marks"] == want.get(f"{lane}:marks", 0), lane
            assert dom[f"{lane}:streamed"] == want.get(f"{lane}:streamed", 0), lane
        inputs = dom.get("events:mark:barge-in", 0) + dom.get("events:mark:input", 0)
        assert inputs == want["caller_inputs"] and dom["events:mark:barge-in"] >= 5
        assert dom["events:mark:clear"] == want["clears"]
        assert dom["heard:mark:truncate"] == want["truncations"]
        assert dom["sent:span:sent"] == want["items"] and dom["heard:span:heard"] >= 1
        assert dom["machine:span:active"] >= 6 and dom["machine:span:cancelling"] >= 1
        # The SVG is laid out: the chart has a size, and the first barge-in is on screen.
        box = browser.evaluate(
            "(() => { const el = document.querySelector('rect.ev.barge-in');"
            " el.scrollIntoView({block: 'center', inline: 'center'});"
            " const r = el.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2, r.height]; })()"
        )
        assert box[2] > 5
        # Hovering shows the element's details in the box.
        browser.mouse_move(box[0], box[1])
        tip = browser.evaluate(
            "[getComputedStyle(document.getElementById('tip')).display,"
            " document.getElementById('tip').textContent]"
        )
        assert tip[0] == "block" and "barge-in" in tip[1], tip
        assert browser.console_errors == []
        # A hostile trace: nothing of it runs.
        browser.open(evil)
        assert browser.evaluate("document.scripts.length") == 1
        assert browser.evaluate("document.images.length") == 0
        assert browser.dialogs == [] and browser.console_errors == []
        assert HOSTILE in browser.evaluate("document.title")  # shown as text, not run


def test_odd_times_neither_crash_nor_blow_up_the_page() -> None:
    """Times out of order, negative, not numbers, or absurdly large: drawn as well as they can
    be, and the page stays a size a browser draws."""
    header = {"kind": "header", "format": "realtime-fsm-trace", "version": 1}
    lines = [
        header,
        {"t": 5.0, "side": "openai", "dir": "open", "conn": 1},
        {"t": 1.0, "side": "openai", "dir": "closed", "by": "peer"},
        {"t": -3.0, "side": "twilio", "dir": "in", "type": "start", "frame": {"event": "start"}},
        {"t": "soon", "side": "twilio", "dir": "in", "frame": {"event": "stop"}},
        {"t": 1e300, "side": "twilio", "dir": "out", "frame": {"event": "clear"}},
    ]
    timeline = build_timeline(json.dumps(line) for line in lines)
    assert timeline.duration == 1e300
    page = render_page(timeline)
    found = re.search(r'<svg id="chart" [^>]*width="([0-9.e+]+)"', page)
    assert found is not None and float(found.group(1)) <= 200_100


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_SMALL_TRACES)))
def test_the_timeline_reads_every_field_safely(index: int) -> None:
    """As the checker's own test: every node of every line of the hand-made traces replaced, in
    turn, by a value of every JSON type.  The timeline and its page never raise (but for a
    broken header), and never need the per-line safety net (``unreadable (SomeError)``)."""
    for number, path, value, mutated in field_mutations(_SMALL_TRACES[index]):
        try:
            timeline = build_timeline(mutated)
        except TraceFormatError:
            assert number == 0
            continue
        render_page(timeline)
        assert all(w.endswith("not a JSON object; skipped") for w in timeline.warnings), (
            number,
            path,
            value,
            timeline.warnings,
        )


@pytest.mark.parametrize(
    "case_id", ["rotation-response_boundary", "reconnect-socket_drop"], ids=str
)
def test_the_slot_across_sessions(
    case_id: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reconnect leaves the call with no OpenAI session between the drop and the next
    socket; a rotation never does (the next session is open before the old one closes, and
    the old socket's close, recorded once or twice, is no gap)."""
    case = next(c for c in [*E2E_CASES, *RECONNECT_CASES, *ROTATION_CASES] if c.id == case_id)
    path = record_e2e(case, tmp_path, caplog)
    records = _records(path)
    opens = [r for r in records if r.get("side") == "openai" and r.get("dir") == "open"]
    assert len(opens) >= 2
    timeline = timeline_file(path)
    spans = timeline.lane("machine").spans
    # (The call's own end closes its last session: that one runs to the end of the trace.)
    gaps = [
        s
        for s in spans
        if s.kind == "no-session" and s.start >= opens[0]["t"] and s.end < timeline.duration
    ]
    if case_id.startswith("rotation"):
        assert gaps == [], gaps
    else:
        assert gaps and all(s.end <= opens[-1]["t"] + 1e-9 for s in gaps), gaps
    assert all(a.end == pytest.approx(b.start) for a, b in itertools.pairwise(spans))
    want = expected(records)
    got = model_counts(timeline)
    for lane in ("twilio-in", "twilio-out", "openai-in", "openai-out"):
        assert got[f"{lane}:marks"] == want.get(f"{lane}:marks", 0), lane
        assert got[f"{lane}:streamed"] == want.get(f"{lane}:streamed", 0), lane
    assert timeline.violations == ()

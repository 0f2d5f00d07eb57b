"""A picture of one call on its own clock: who spoke when, what was cut, how long the bot took.

``timeline_svg(turns, events)`` draws an SVG (no JavaScript, no external assets) for the admin's
call page: a caller lane and a bot lane with one bar per turn on the call clock (ms since the
stream started), the unheard part of an interrupted bot turn hatched, a bracket from the end of
the caller's speech to the bot's first audio labelled with the voice-to-voice latency, and
markers for barge-ins (with the detection latency), keypresses and errors. Hovering a bar shows
its text.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any

WIDTH = 960
LEFT = 60  # room for the lane labels
RIGHT = 20
LANE_H = 26
CALLER_Y = 34
BOT_Y = CALLER_Y + LANE_H + 28
AXIS_Y = BOT_Y + LANE_H + 30
HEIGHT = AXIS_Y + 24
CUT_W = 10  # width of the stub marking the unsaid rest of an interrupted bot turn


def _tick_step(span_ms: int) -> int:
    for step in (500, 1000, 2000, 5000, 10000, 30000, 60000, 120000, 300000):
        if span_ms / step <= 12:
            return step
    return 600000


def _fmt_s(ms: int) -> str:
    return f"{ms / 1000:g} s"


def timeline_svg(turns: Iterable[Any], events: Iterable[Any]) -> str:
    """SVG markup for a call's turns and events (``Turn`` / ``CallEvent``-like objects).

    Turns without positions on the call clock (``audio_start_ms``) are left out. Returns an empty
    string when there is nothing to draw.
    """
    turns = [t for t in turns if t.audio_start_ms is not None]
    events = list(events)
    if not turns:
        return ""
    ends = [t.audio_end_ms or t.audio_start_ms for t in turns] + [e.audio_ms or 0 for e in events]
    end_ms = max(ends)
    span = max(end_ms, 1000)
    scale = (WIDTH - LEFT - RIGHT) / span

    def x(ms: int | None) -> float:
        return round(LEFT + (ms or 0) * scale, 1)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="call-timeline" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="call timeline" '
        'style="font: 11px sans-serif; background: #fff">',
        "<defs>"
        '<pattern id="unheard" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)">'
        '<rect width="6" height="6" fill="#fde2e2"/><line x1="0" y1="0" x2="0" y2="6" stroke="#e57373" '
        'stroke-width="2"/></pattern></defs>',
        f'<text x="4" y="{CALLER_Y + 17}">caller</text>',
        f'<text x="4" y="{BOT_Y + 17}">bot</text>',
    ]
    step = _tick_step(span)
    for tick in range(0, span + 1, step):
        out.append(
            f'<line x1="{x(tick)}" y1="{CALLER_Y - 6}" x2="{x(tick)}" y2="{AXIS_Y}" stroke="#eee"/>'
            f'<text x="{x(tick)}" y="{AXIS_Y + 14}" text-anchor="middle" fill="#666">{_fmt_s(tick)}</text>'
        )

    cuts: list[str] = []  # drawn after every bar, so a following turn cannot hide them
    for turn in turns:
        start = turn.audio_start_ms
        stop = turn.audio_end_ms if turn.audio_end_ms is not None else start
        width = max(x(stop) - x(start), 2)
        tip = escape(turn.text or "")
        if turn.role == "caller":
            out.append(
                f'<rect class="turn caller" x="{x(start)}" y="{CALLER_Y}" width="{width}" height="{LANE_H}" '
                f'rx="3" fill="#90caf9"><title>caller: {tip}</title></rect>'
            )
            continue
        cls = "turn bot interrupted" if turn.interrupted else "turn bot"
        # The bar spans the time the bot's audio played: all of it heard. Where a barge-in cut it, a
        # small hatched stub (not to scale: the axis stays time) holds the words it never said.
        out.append(
            f'<rect class="{cls}" x="{x(start)}" y="{BOT_Y}" width="{width}" height="{LANE_H}" rx="3" '
            f'fill="#a5d6a7"><title>bot: {escape(turn.heard_text or turn.text or "")}</title></rect>'
        )
        if turn.interrupted and turn.text:
            unsaid = " ".join(turn.text.split()[len((turn.heard_text or "").split()) :])
            cut = round(x(start) + width, 1)
            cuts.append(
                f'<rect class="unheard" x="{cut}" y="{BOT_Y + 4}" width="{CUT_W}" height="{LANE_H - 8}" '
                f'fill="url(#unheard)"><title>not said: {escape(unsaid)}</title></rect>'
                f'<text x="{cut + CUT_W + 2}" y="{BOT_Y + LANE_H - 2}" fill="#c62828">✂</text>'
            )
        if turn.speech_end_ms is not None and turn.first_audio_ms is not None:
            y = BOT_Y - 10
            a, b = x(turn.speech_end_ms), x(turn.first_audio_ms)
            out.append(
                f'<path class="v2v" d="M{a},{y + 6} V{y} H{b} V{y + 6}" stroke="#555" fill="none"/>'
                f'<text x="{b + 3}" y="{y}" fill="#555">{turn.voice_to_voice_ms} ms</text>'
            )

    out += cuts
    for event in events:
        if event.audio_ms is None:
            continue
        data = event.data or {}
        if event.kind == "barge_in":
            latency = data.get("detection_latency_ms")
            label = f"barge-in {latency} ms" if latency is not None else f"barge-in ({data.get('cause', '')})"
            at = x(event.audio_ms)
            out.append(
                f'<line class="barge-in" x1="{at}" y1="{CALLER_Y - 8}" x2="{at}" y2="{BOT_Y + LANE_H}" '
                f'stroke="#d32f2f" stroke-width="2"><title>{escape(label)}</title></line>'
                f'<text x="{at + 3}" y="{CALLER_Y - 10}" fill="#d32f2f">{escape(label)}</text>'
            )
        elif event.kind == "dtmf":
            digit = escape(str(data.get("digit", "")))
            out.append(
                f'<text class="dtmf" x="{x(event.audio_ms)}" y="{CALLER_Y + LANE_H + 16}" '
                f'text-anchor="middle" fill="#6a1b9a">⌨ {digit}</text>'
            )
        elif event.kind in ("error", "protocol_error"):
            stage = escape(str(data.get("stage") or data.get("reason") or event.kind))
            out.append(
                f'<circle class="error" cx="{x(event.audio_ms)}" cy="{AXIS_Y - 6}" r="4" fill="#f57c00">'
                f"<title>{escape(event.kind)}: {stage}</title></circle>"
            )
    out.append("</svg>")
    return "".join(out)

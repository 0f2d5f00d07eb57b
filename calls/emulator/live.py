"""Live output of a call for the shell: ``manage.py demo`` and ``manage.py place_call`` print it.

Both commands fetch snapshots of the call in the shape of ``GET /calls/<call_sid>`` (the
``CallDetailSerializer`` JSON: status, ``turns``, ``events``, …) every few hundred ms — the demo
over HTTP, ``place_call`` from the database — and feed them to ``CallPrinter``, which prints what
is new: status changes, caller and bot turns (a bot turn when its audio starts, with its latencies,
then ✂ and the heard text if it was cut), barge-ins with their detection latency, key presses,
tool calls, transfers and hang-ups. ``follow`` runs that loop until the call has ended and
``summary_lines`` gives the closing summary.

Call-clock times (``12.3 s``) are seconds since the media stream started.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from media_ws.providers.base import parse_dtmf_message

FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})

Snapshot = dict[str, Any]


def _clear_text(data: dict) -> str:
    """How the barge-in's ``clear`` went: its send time, or that none was needed (the caller spoke
    between two sentences, with nothing of the bot's queued at Twilio)."""
    if "clear_send_ms" in data and data["clear_send_ms"] is None:
        return "no clear needed (nothing unplayed)"
    return f"clear sent in {data.get('clear_send_ms', '?')} ms"

def _clock(ms: Any) -> str:
    return f"{ms / 1000:6.1f} s" if isinstance(ms, int | float) else " " * 8


def _quote(text: str, limit: int = 140) -> str:
    text = " ".join((text or "").split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return f"“{text}”"


def turn_latencies(turn: Snapshot) -> str:
    """A bot turn's latency chain from the end of the caller's speech, e.g. ``"STT final +1210 ms ·
    LLM first token +1212 ms · TTS first byte +1230 ms · first audio +1231 ms · voice-to-voice
    1231 ms"``; ``""`` when the turn answers no speech (greeting, fixed lines)."""
    end = turn.get("speech_end_ms")
    if end is None:
        return ""
    parts = []
    for key, label in (
        ("stt_final_ms", "STT final"),
        ("llm_first_token_ms", "LLM first token"),
        ("tts_first_byte_ms", "TTS first byte"),
        ("first_audio_ms", "first audio"),
    ):
        value = turn.get(key)
        if value is not None:
            parts.append(f"{label} +{value - end} ms")
    if turn.get("voice_to_voice_ms") is not None:
        parts.append(f"voice-to-voice {turn['voice_to_voice_ms']} ms")
    return " · ".join(parts)


class CallPrinter:
    """Prints what is new in each snapshot of one call through ``write`` (one line per call)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self._status = ""
        self._events_seen = 0
        self._turns: dict[int, Snapshot] = {}  # bot/caller turns printed, as printed

    def update(self, snapshot: Snapshot) -> None:
        """Print the changes since the previous snapshot."""
        lines: list[tuple[float, int, str]] = []
        status = snapshot.get("status", "")
        status_line = ""
        if status != self._status:
            self._status = status
            status_line = f"{'':8}  ☎  status {status}"
            if status not in FINAL_STATUSES:
                self.write(status_line)
                status_line = ""
        events = snapshot.get("events") or []
        for i, event in enumerate(events[self._events_seen :], start=self._events_seen):
            line = self._event_line(event)
            if line:
                lines.append((event.get("audio_ms") or 0, i, line))
        self._events_seen = len(events)
        barge_ins = [e.get("audio_ms") or 0 for e in events if e.get("kind") == "barge_in"]
        for turn in snapshot.get("turns") or []:
            for at, line in self._turn_lines(turn, barge_ins):
                # At the same call-clock ms an event (the barge-in, the key press) comes first.
                lines.append((at, 1 << 30, line))
        for _, _, line in sorted(lines, key=lambda item: (item[0], item[1])):
            self.write(line)
        if status_line:  # the end of the call comes after what led to it
            self.write(status_line)

    def _turn_lines(self, turn: Snapshot, barge_ins: list[int]) -> list[tuple[int, str]]:
        """New lines of ``turn`` with the call-clock ms each belongs at: the turn's start, except
        that a cut (✂) comes when the turn's audio ended, after the barge-in that caused it
        (``barge_ins``: the call-clock ms of the call's barge-ins)."""
        index = turn["index"]
        before = self._turns.get(index)
        start = turn.get("first_audio_ms") or turn.get("audio_start_ms") or 0
        out: list[tuple[int, str]] = []
        if turn["role"] == "caller":
            if before is None:
                self._turns[index] = dict(turn)
                if parse_dtmf_message(turn["text"]) is None:  # key presses have their own ⌨ line
                    mark = "  (offline STT, approximate)" if turn.get("approximate") else ""
                    out.append((start, f"{_clock(turn.get('audio_start_ms'))}  caller  "
                                       f"{_quote(turn['text'])}{mark}"))
            return out
        ended = turn.get("ended_at") is not None
        if before is None:
            if turn.get("first_audio_ms") is None and not ended:
                return out  # not speaking yet
            self._turns[index] = before = dict(turn, _printed_text=turn["text"], _closed=False)
            out.append((start, f"{_clock(turn.get('first_audio_ms'))}  bot     {_quote(turn['text'])}"))
            latencies = turn_latencies(turn)
            if latencies:
                out.append((start, f"{'':8}          ⏱  {latencies}"))
        if ended and not before["_closed"]:
            before["_closed"] = True
            if turn.get("interrupted"):
                heard = turn.get("heard_text") or ""
                cut = turn.get("audio_end_ms")
                if cut is None:  # not stored: the first barge-in after the turn started cut it
                    cut = min((ms for ms in barge_ins if ms >= start), default=start)
                out.append((cut, f"{'':8}          ✂  interrupted; the caller heard {_quote(heard)}"))
            elif turn["text"] != before["_printed_text"] and turn["text"].startswith(before["_printed_text"]):
                rest = turn["text"][len(before["_printed_text"]) :]
                out.append((start, f"{'':8}          …  {_quote(rest)}"))
        return out

    @staticmethod
    def _event_line(event: Snapshot) -> str:
        kind, data, at = event.get("kind"), event.get("data") or {}, _clock(event.get("audio_ms"))
        if kind == "barge_in":
            cause = data.get("cause", "speech")
            if data.get("detection_latency_ms") is not None:
                how = f"caller speech detected {data['detection_latency_ms']} ms after its onset"
            elif cause == "dtmf":
                how = "a key press"
            else:
                how = f"cause {cause}"
            cleared = data.get("cleared_marks", 0)
            return f"{at}  ⚡  barge-in: {how}; {_clear_text(data)}, {cleared} marks cleared"
        if kind == "dtmf":
            return f"{at}  ⌨  caller pressed {data.get('digit', '?')}"
        if kind == "tool_call" and "arguments" in data:
            return f"{at}  🛠  tool {data.get('name')}({data.get('arguments', {}).get('reason', '')})"
        if kind == "transfer":
            return f"{at}  ↪  transferred to {data.get('to', '?')}"
        if kind == "hangup":
            return f"{at}  ✆  hang-up ({data.get('reason', '')})"
        if kind == "silence":
            return f"{at}  …  silence: {data.get('action', '')} #{data.get('reprompts', '')}"
        if kind == "stream_stop":
            cause, reason = data.get("cause", ""), data.get("end_reason", "")
            return f"{at}  ■  stream stopped ({cause}, end reason {reason})"
        if kind == "error":
            return f"{at}  !  error in {data.get('stage', '?')}: {data.get('error', data.get('kind', ''))}"
        return ""


def call_finished(snapshot: Snapshot) -> bool:
    """Whether the call is over and its carrier has said so: a final status, and the carrier's
    final status callback (the emulator sends it after the recording is attached) or a final
    status that came some other way (the session, a Twilio failure at dial time)."""
    if snapshot.get("status") not in FINAL_STATUSES:
        return False
    for event in snapshot.get("events") or []:
        if event.get("kind") == "status" and (event.get("data") or {}).get("CallStatus") in FINAL_STATUSES:
            return True
    return snapshot.get("carrier") != "emulator" or bool(snapshot.get("error_code"))


def follow(
    fetch: Callable[[], Snapshot],
    write: Callable[[str], None],
    *,
    timeout_s: float,
    poll_s: float = 0.25,
    grace_s: float = 10.0,
) -> Snapshot:
    """Print a call live until it has finished (``call_finished``), then return the last snapshot.

    ``fetch`` returns the call's current snapshot. ``grace_s``: how long to wait, after the status
    became final, for the carrier's final callback before giving up waiting for it. Raises
    ``TimeoutError`` when the call is not over within ``timeout_s``.
    """
    printer = CallPrinter(write)
    deadline = time.monotonic() + timeout_s
    final_since: float | None = None
    while True:
        snapshot = fetch()
        printer.update(snapshot)
        if call_finished(snapshot):
            return snapshot
        if snapshot.get("status") in FINAL_STATUSES:
            final_since = final_since or time.monotonic()
            if time.monotonic() - final_since > grace_s:
                return snapshot
        if time.monotonic() > deadline:
            status = snapshot.get("status")
            raise TimeoutError(f"the call was not over within {timeout_s:.0f} s (status {status})")
        time.sleep(poll_s)


def summary_lines(snapshot: Snapshot, *, recording_path: str = "", admin_url: str = "") -> list[str]:
    """The closing summary: the call, its duration, turns, barge-ins (with detection latency and
    clear send time), the mean voice-to-voice latency, the recording and the admin page."""
    turns = snapshot.get("turns") or []
    events = snapshot.get("events") or []
    caller = sum(1 for t in turns if t["role"] == "caller")
    bot = len(turns) - caller
    barge_ins = [e for e in events if e.get("kind") == "barge_in"]
    duration = snapshot.get("duration_s")
    lines = [
        "Summary",
        f"  call          {snapshot.get('call_sid') or snapshot.get('id')} to {snapshot.get('to')}: "
        f"{snapshot.get('status')}, end reason {snapshot.get('end_reason') or '-'}"
        + (f", transferred to {snapshot['transfer_to']}" if snapshot.get("transfer_to") else ""),
        f"  duration      {duration if duration is not None else '?'} s",
        f"  turns         {len(turns)} ({caller} caller, {bot} bot)",
    ]
    if barge_ins:
        lines.append(f"  barge-ins     {len(barge_ins)}")
        for event in barge_ins:
            data = event.get("data") or {}
            if data.get("detection_latency_ms") is not None:
                what = f"caller speech, detected in {data['detection_latency_ms']} ms"
            else:
                what = {"dtmf": "key press"}.get(data.get("cause"), str(data.get("cause", "?")))
            lines.append(f"                at {(event.get('audio_ms') or 0) / 1000:.1f} s: {what}; "
                         f"{_clear_text(data)}")
    else:
        lines.append("  barge-ins     none")
    v2v = [t["voice_to_voice_ms"] for t in turns if t.get("voice_to_voice_ms") is not None]
    if v2v:
        shown = ", ".join(f"{v} ms" for v in v2v)
        lines.append(f"  voice-to-voice {shown} (end of the caller's speech → first bot audio)")
    if recording_path:
        lines.append(f"  recording     {recording_path} (stereo WAV: left the caller, right the bot)")
    elif snapshot.get("recording"):
        lines.append(f"  recording     {snapshot['recording']}")
    else:
        lines.append("  recording     none")
    if admin_url:
        lines.append(f"  admin         {admin_url}")
    return lines

"""Scoring a barge-in detector on test calls: onset latency against reference labels, false onsets.

Reusable by tests, the tuning sweep (``lab.tune_vad``) and benchmarks. A *detector* here is
anything with ``feed(pcm16, frame_ms) -> SpeechOnset | SpeechEnd | None`` (``media_ws.vad``'s
``BargeInDetector``, or ``PlainVadRule`` below, the naive webrtcvad rule peers use).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import webrtcvad

from lab.noise import CallAudio, call_frames
from media_ws.vad import FRAME_MS, SAMPLE_RATE, SpeechEnd, SpeechOnset

Event = SpeechOnset | SpeechEnd


class Detector(Protocol):
    def feed(self, pcm16: bytes, frame_ms: int) -> Event | None: ...


class PlainVadRule:
    """webrtcvad with a plain "``frames`` consecutive speech frames" onset rule and no gate.

    The baseline the gate is measured against: it fires on anything webrtcvad calls speech. Ends
    after ``end_silence_ms`` of frames webrtcvad calls non-speech.
    """

    def __init__(self, mode: int = 3, frames: int = 3, end_silence_ms: int = 500) -> None:
        self._vad = webrtcvad.Vad(mode)
        self.frames, self.end_silence_ms = frames, end_silence_ms
        self._run: list[int] = []
        self._speaking = False
        self._onset_ms = self._last_end_ms = 0

    def feed(self, pcm16: bytes, frame_ms: int) -> Event | None:
        voiced = self._vad.is_speech(pcm16, SAMPLE_RATE)
        end_ms = frame_ms + FRAME_MS
        if self._speaking:
            if voiced:
                self._last_end_ms = end_ms
            elif end_ms - self._last_end_ms >= self.end_silence_ms:
                self._speaking = False
                self._run = []
                return SpeechEnd(end_ms=self._last_end_ms, onset_ms=self._onset_ms)
            return None
        self._run = [*self._run, frame_ms] if voiced else []
        if len(self._run) >= self.frames:
            self._speaking = True
            self._onset_ms, self._last_end_ms = self._run[0], end_ms
            return SpeechOnset(onset_ms=self._run[0], decided_ms=end_ms)
        return None


def run(detector: Detector, frames: Iterable[tuple[bytes, int]]) -> list[Event]:
    """Feed every ``(pcm16, frame_ms)`` frame; return the events in order."""
    events: list[Event] = []
    for pcm, ms in frames:
        ev = detector.feed(pcm, ms)
        if ev is not None:
            events.append(ev)
    return events


def onsets(events: Sequence[Event]) -> list[SpeechOnset]:
    return [e for e in events if isinstance(e, SpeechOnset)]


def ends(events: Sequence[Event]) -> list[SpeechEnd]:
    return [e for e in events if isinstance(e, SpeechEnd)]


@dataclass
class CallScore:
    """How a detector did on one test call.

    ``latencies_ms[i]``: caller audio from reference onset ``i`` to the decision of the onset that
    detected it (``None``: missed). An onset event detects reference onset ``r`` when it is the
    first event decided after ``r - early_ms`` and before the reference utterance ends (so a breath
    just before the word still counts, with a small or negative latency). Every other onset event is
    a false onset. ``end_errors_ms[i]``: reported end minus reference end for the ``SpeechEnd``
    closing utterance ``i`` (``None``: no end reported before the next utterance). Unmatched onset
    events inside a reference utterance are ``split_onsets`` (the detector ended and restarted
    within one utterance, at a pause the reference did not count); the rest are ``false_onsets``.
    """

    latencies_ms: list[int | None] = field(default_factory=list)
    end_errors_ms: list[int | None] = field(default_factory=list)
    false_onsets: list[SpeechOnset] = field(default_factory=list)
    split_onsets: list[SpeechOnset] = field(default_factory=list)

    @property
    def missed(self) -> int:
        return sum(lat is None for lat in self.latencies_ms)


def score_call(events: Sequence[Event], call: CallAudio, early_ms: int = 200) -> CallScore:
    """Match ``events`` to ``call``'s reference onsets and ends (see ``CallScore``)."""
    score = CallScore()
    used: set[int] = set()
    ons = onsets(events)
    for i, (ref_on, ref_end) in enumerate(zip(call.onsets_ms, call.ends_ms, strict=True)):
        hit = next(
            (k for k, ev in enumerate(ons) if k not in used and ref_on - early_ms <= ev.decided_ms < ref_end),
            None,
        )
        if hit is None:
            score.latencies_ms.append(None)
        else:
            used.add(hit)
            score.latencies_ms.append(ons[hit].decided_ms - ref_on)
        nxt = call.onsets_ms[i + 1] if i + 1 < len(call.onsets_ms) else None
        end = next(
            (e for e in ends(events) if e.end_ms >= ref_on and (nxt is None or e.end_ms < nxt)),
            None,
        )
        score.end_errors_ms.append(None if end is None else end.end_ms - ref_end)
    for k, ev in enumerate(ons):
        if k in used:
            continue
        inside = any(on <= ev.onset_ms < end for on, end in zip(call.onsets_ms, call.ends_ms, strict=True))
        (score.split_onsets if inside else score.false_onsets).append(ev)
    return score


def score_audio(detector: Detector, call: CallAudio) -> CallScore:
    """Run ``detector`` over ``call``'s audio (μ-law round trip, 20 ms frames) and score it."""
    return score_call(run(detector, call_frames(call.audio)), call)


def false_onsets_per_minute(detector: Detector, audio: np.ndarray) -> tuple[int, float]:
    """Onsets fired on audio that holds no speech: ``(count, per minute of audio)``."""
    n = len(onsets(run(detector, call_frames(audio))))
    return n, n * 60.0 * SAMPLE_RATE / len(audio)


def summary(latencies: Sequence[int | None]) -> str:
    """``p50/max ms (missed)`` of a list of latencies."""
    got = [x for x in latencies if x is not None]
    missed = len(latencies) - len(got)
    if not got:
        return f"all {missed} missed"
    return f"{int(np.median(got))}/{max(got)} ms" + (f" ({missed} missed)" if missed else "")

"""The barge-in benchmark's test calls: real utterances placed after line noise at known positions.

The labelled set (``bench/data/labels.json``, made by ``bench.make_dataset``) lists real recordings
at phone quality with reference utterances (Silero on the clean originals). Here each utterance is
cut out with up to ``PRE_ROLL_MS`` of the recording's own sound before its reference onset and up
to ``POST_ROLL_MS`` after its end (never more than half the pause to the neighbouring utterance),
and utterances are placed on a call clock after gaps of line noise, so every reference onset
follows at least ``GAP_MS[0]`` of no speech: the situation of a caller who starts to talk while
the bot speaks. Each *pass* over the set uses its own order, gap lengths and sub-frame offset, so
the same utterance is measured at several positions relative to the 20 ms frames and to the noise.

Signals are float64 arrays at 8 kHz in [-1, 1], as in ``lab.noise``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from bench.common import ROOT
from lab import noise as N
from lab.telephone import SPEECH_LEVEL_DBFS, ulaw_to_float

LABELS = ROOT / "bench" / "data" / "labels.json"
RATE = N.RATE
MS = RATE // 1000  # samples per ms
PRE_ROLL_MS = 100  # the caller audio kept before a reference onset (Silero pads 30 ms)
POST_ROLL_MS = 300
FADE_MS = 10  # raised-cosine fade at each clip edge, so a cut never adds a click
LEAD_MS = 2000
GAP_MS = (1500, 2500)  # uniform random gap between utterances (ms)

#: Noises mixed under speech (and played alone for false barge-ins), by name.
NOISE_KINDS = ("white", "pink", "hum50", "hum60", "clicks", "dtmf", "babble")
SNRS_DB = (20.0, 10.0, 5.0)
#: A quiet line: band-limited white noise 45 dB below the -22 dBFS speech. Real calls carry the
#: caller's room and the line's own noise, never long runs of exact zeros; clicks and DTMF are
#: played over it, and the "quiet line" condition is it alone.
LINE_FLOOR_DBFS = SPEECH_LEVEL_DBFS - 45.0
#: Peak level of the set's speech (the median of its recordings' peaks, measured: -6.8 to -0.2
#: dBFS). Clicks are impulses, so their SNR is taken peak to peak: click peak = this − SNR.
SPEECH_PEAK_DBFS = -4.0
CLICK_CREST_DB = SPEECH_PEAK_DBFS - SPEECH_LEVEL_DBFS  # a click's peak over its level_dbfs


@dataclass(frozen=True)
class Clip:
    """One reference utterance cut from a recording: ``onset_ms``/``end_ms`` within ``audio``."""

    source: str
    index: int
    audio: np.ndarray
    onset_ms: int
    end_ms: int


@cache
def load_labels() -> dict:
    """``bench/data/labels.json``."""
    return json.loads(LABELS.read_text())


def load_source(name: str) -> np.ndarray:
    """A recording of the set at phone quality, as 8 kHz float samples."""
    entry = load_labels()["sources"][name]
    return ulaw_to_float((ROOT / entry["file"]).read_bytes())


def clips(names: Sequence[str] | None = None) -> list[Clip]:
    """Every reference utterance of the recordings ``names`` (default: all), cut as described above."""
    labels = load_labels()["sources"]
    out: list[Clip] = []
    for name in names if names is not None else list(labels):
        x = load_source(name)
        utts = labels[name]["utterances"]
        total_ms = len(x) // MS
        for i, u in enumerate(utts):
            prev_end = utts[i - 1]["end_ms"] if i else None
            next_on = utts[i + 1]["onset_ms"] if i + 1 < len(utts) else None
            pre = min(
                PRE_ROLL_MS, u["onset_ms"], (u["onset_ms"] - prev_end) // 2 if prev_end is not None else 10**9
            )
            post = min(
                POST_ROLL_MS, total_ms - u["end_ms"], (next_on - u["end_ms"]) // 2 if next_on else 10**9
            )
            start, stop = u["onset_ms"] - pre, u["end_ms"] + max(post, 0)
            seg = x[start * MS : stop * MS].copy()
            fade = min(FADE_MS * MS, len(seg) // 2)
            ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
            seg[:fade] *= ramp
            seg[len(seg) - fade :] *= ramp[::-1]
            out.append(Clip(name, i, seg, pre, pre + u["end_ms"] - u["onset_ms"]))
    return out


@dataclass(frozen=True)
class SpeechCall:
    """A test call: ``call`` holds the audio and the reference onsets/ends (ms on the call clock);
    ``starts_ms[i]`` is where the clip of onset ``i`` begins (its first sample of caller audio,
    up to ``PRE_ROLL_MS`` before the onset)."""

    call: N.CallAudio
    starts_ms: tuple[int, ...]


def speech_call(clip_list: Sequence[Clip], seed: int) -> SpeechCall:
    """One pass: every clip once, in a seeded random order, after ``LEAD_MS`` then random gaps;
    the whole call starts at a random 0–19 ms offset so onsets fall anywhere within the 20 ms
    frames. The audio is the speech alone (digital silence between clips)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clip_list))
    at_ms = LEAD_MS + int(rng.integers(0, 20))
    parts: list[np.ndarray] = [np.zeros(at_ms * MS)]
    onsets: list[int] = []
    ends: list[int] = []
    starts: list[int] = []
    for k in order:
        c = clip_list[k]
        starts.append(at_ms)
        onsets.append(at_ms + c.onset_ms)
        ends.append(at_ms + c.end_ms)
        parts.append(c.audio)
        at_ms += len(c.audio) // MS
        gap = int(rng.integers(GAP_MS[0], GAP_MS[1] + 1))
        parts.append(np.zeros(gap * MS))
        at_ms += gap
    return SpeechCall(N.CallAudio(np.concatenate(parts), tuple(onsets), tuple(ends)), tuple(starts))


def dtmf_bursts(n_samples: int, level_dbfs: float, seed: int) -> np.ndarray:
    """Keypresses as a caller makes them: bursts of 1–4 random digits (``lab.noise.dtmf``; tones
    60–150 ms, 60–150 ms apart) starting every 1.5–6 s, digital silence between. ``level_dbfs`` is
    the RMS over the samples where a tone sounds (the tone's own level), not over the silences."""
    rng = np.random.default_rng(seed)
    keys = list(N.DTMF_FREQS)
    x = np.zeros(n_samples)
    on = np.zeros(n_samples, dtype=bool)
    at = int(rng.integers(0, 3 * RATE))
    while at < n_samples:
        for _ in range(int(rng.integers(1, 5))):
            if at >= n_samples:
                break
            tone_ms = int(rng.integers(60, 151))
            burst = N.dtmf(keys[int(rng.integers(len(keys)))], -10.0, tone_ms=tone_ms, gap_ms=0)
            end = min(at + len(burst), n_samples)
            x[at:end] = burst[: end - at]
            on[at:end] = True
            at = end + int(rng.integers(60, 151)) * MS
        at += int(rng.integers(int(1.5 * RATE), 6 * RATE + 1))
    if on.any():
        x *= 10 ** ((level_dbfs - N.rms_dbfs(x[on])) / 20)
    return x


def noise(
    kind: str, n_samples: int, level_dbfs: float, seed: int, babble_sources: Sequence[np.ndarray]
) -> np.ndarray:
    """``n_samples`` of noise ``kind`` (see ``NOISE_KINDS``, or ``quiet``: the line floor alone,
    ``level_dbfs`` ignored) at ``level_dbfs``.

    white/pink/hum50/hum60 (``lab.noise.noise_like``) and babble (6 real voices from
    ``babble_sources``, ``lab.noise.babble``) are set by their RMS; clicks (``lab.noise.clicks``:
    3 per second, Poisson, random polarity, band-limited impulses) by their peak, which is
    ``level_dbfs + CLICK_CREST_DB`` (so the SNR is speech peak to click peak: peaks at -24, -14 and
    -9 dBFS for 20, 10 and 5 dB, never clipped); DTMF (``dtmf_bursts``) by the level of its tones.
    Clicks and DTMF sound over the quiet line (``LINE_FLOOR_DBFS``). Raises ``ValueError`` for an
    unknown kind.
    """
    seconds = n_samples / RATE
    if kind in ("white", "pink", "hum50", "hum60"):
        x = N.noise_like(kind, seconds, level_dbfs, seed=seed)
    elif kind == "quiet":
        x = N.white_noise(seconds, LINE_FLOOR_DBFS, seed=seed + 1)
    elif kind == "clicks":
        x = N.clicks(seconds, level_dbfs + CLICK_CREST_DB, per_second=3.0, seed=seed)
        x = x + N.white_noise(seconds, LINE_FLOOR_DBFS, seed=seed + 1)
    elif kind == "dtmf":
        x = dtmf_bursts(n_samples, level_dbfs, seed) + N.white_noise(seconds, LINE_FLOOR_DBFS, seed=seed + 1)
    elif kind == "babble":
        x = N.babble(babble_sources, seconds, level_dbfs, talkers=6, seed=seed)
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    return x[:n_samples]


def noise_level_dbfs(snr_db: float) -> float:
    """The noise level that gives ``snr_db`` against the set's -22 dBFS active speech level."""
    return SPEECH_LEVEL_DBFS - snr_db


def babble_sources() -> list[np.ndarray]:
    """Whole recordings of the set, the voices babble is made of."""
    return [load_source(name) for name in load_labels()["sources"]]

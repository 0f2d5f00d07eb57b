"""Make phone-line audio from studio recordings, the way a call would carry it.

A PSTN voice channel passes roughly 300–3400 Hz at 8 kHz and Twilio delivers it as G.711 μ-law
(twilio.com/docs/voice/media-streams/websocket-messages: ``audio/x-mulaw``, 8000 Hz, mono).
``to_phone_line`` applies that chain: band-pass, resample to 8 kHz, set the speech level, encode.
Signals are float arrays in [-1, 1] unless a name says otherwise.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import soxr
from scipy.signal import butter, sosfiltfilt

from media_ws.audio import pcm16_to_ulaw, ulaw_to_pcm16

PHONE_RATE = 8000
#: Active-speech level the fixtures are normalised to (dBFS RMS over voiced frames); typical of
#: a PSTN line (nominal speech levels sit between about -16 and -26 dBov).
SPEECH_LEVEL_DBFS = -22.0


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a mono 16-bit PCM WAV. Returns (samples as float64 in [-1, 1], sample rate in Hz)."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected mono 16-bit PCM")
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float64) / 32768.0, rate


def write_wav(path: str | Path, x: np.ndarray, rate: int) -> None:
    """Write float samples in [-1, 1] as mono 16-bit PCM WAV (clipped)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(float_to_pcm16(x))


def float_to_pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 32767 / 32768) * 32768.0).astype("<i2").tobytes()


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0


def telephone_band(x: np.ndarray, rate: int, low_hz: float = 300.0, high_hz: float = 3400.0) -> np.ndarray:
    """Zero-phase 4th-order Butterworth band-pass (zero phase keeps speech onsets where they were)."""
    sos = butter(4, [low_hz, high_hz], btype="bandpass", fs=rate, output="sos")
    return sosfiltfilt(sos, x)


def active_level_dbfs(x: np.ndarray, rate: int, frame_ms: int = 20, gate_db: float = 30.0) -> float:
    """RMS level in dBFS over the frames within ``gate_db`` of the loudest frame (active speech)."""
    n = rate * frame_ms // 1000
    frames = x[: len(x) // n * n].reshape(-1, n)
    rms = np.sqrt(np.mean(frames**2, axis=1) + 1e-20)
    db = 20 * np.log10(rms)
    active = frames[db > db.max() - gate_db]
    return float(10 * np.log10(np.mean(active**2) + 1e-20))


def to_phone_line(x: np.ndarray, rate: int, level_dbfs: float = SPEECH_LEVEL_DBFS) -> bytes:
    """Band-limit, resample to 8 kHz, set the active-speech level, and encode as μ-law bytes."""
    y = telephone_band(x, rate)
    if rate != PHONE_RATE:
        y = soxr.resample(y, rate, PHONE_RATE, quality="HQ")
    y = y * 10 ** ((level_dbfs - active_level_dbfs(y, PHONE_RATE)) / 20)
    return pcm16_to_ulaw(float_to_pcm16(y))


def ulaw_to_float(ulaw: bytes) -> np.ndarray:
    """Decode μ-law bytes to float samples at 8 kHz."""
    return pcm16_to_float(ulaw_to_pcm16(ulaw))

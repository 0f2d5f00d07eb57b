"""Phone-line noise lab: deterministic noises, real-speech test calls and mixing at an SNR.

Everything here is for tests and benchmarks of the barge-in detector, never for the running app.
Signals are float64 arrays at 8 kHz in [-1, 1] (0 dBFS = a full-scale square wave's RMS of 1.0, so
a full-scale sine reads -3 dBFS). Every generator takes a ``seed`` and returns the same samples for
the same arguments, so a false barge-in found once can be replayed exactly.

What a phone line carries is 300–3400 Hz (``lab.telephone.telephone_band``) coded as G.711 μ-law;
the generators band-limit by default and ``call_frames`` puts a signal through the μ-law round trip
and cuts it into the 20 ms PCM16 frames the detector is fed on a call.

Generators (levels are RMS dBFS unless a name says otherwise):

- ``white_noise`` / ``pink_noise``: stationary line noise (hiss).
- ``hum``: 50 or 60 Hz mains hum with its harmonics; after band-limiting only the buzz of the
  harmonics from 300 Hz up is left, which is what a ground loop sounds like on a phone.
- ``clicks``: isolated clicks and pops (single-sample impulses through the band-pass).
- ``dtmf``: keypad digits, ITU-T Q.23 tone pairs (low group 697/770/852/941 Hz, high group
  1209/1336/1477/1633 Hz) with tone and gap durations; Q.24 asks receivers to accept ≥ 40 ms tones.
- ``babble``: several time-shifted, level-reduced copies of real speech summed. Babble IS speech,
  and what we expect is that the barge-in detector hears it as speech once it is loud enough to
  pass the level gate: neither webrtcvad nor a noise floor can tell a room of voices from the
  caller (a known limit for TV or café backgrounds, measured by ``lab.tune_vad --part noise``).
- ``mix_at_snr``: add noise under speech so active speech level minus noise RMS is ``snr_db``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.telephone import PHONE_RATE, active_level_dbfs, float_to_pcm16, telephone_band, ulaw_to_float
from media_ws.audio import FRAME_MS, FRAME_SAMPLES, pcm16_to_ulaw, ulaw_to_pcm16

RATE = PHONE_RATE
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "audio"
LABELS_PATH = FIXTURES / "labels.json"

#: ITU-T Q.23 DTMF frequency pairs (low group, high group) in Hz, keypad layout.
DTMF_LOW_HZ = (697, 770, 852, 941)
DTMF_HIGH_HZ = (1209, 1336, 1477, 1633)
DTMF_KEYS = ("123A", "456B", "789C", "*0#D")
DTMF_FREQS: dict[str, tuple[int, int]] = {
    key: (DTMF_LOW_HZ[row], DTMF_HIGH_HZ[col])
    for row, keys in enumerate(DTMF_KEYS)
    for col, key in enumerate(keys)
}


# --- levels ---------------------------------------------------------------------------------------
def rms_dbfs(x: np.ndarray) -> float:
    """RMS level of ``x`` in dBFS (-inf for digital silence)."""
    ms = float(np.mean(np.square(x))) if len(x) else 0.0
    return 10 * np.log10(ms) if ms > 0 else float("-inf")


def set_rms_dbfs(x: np.ndarray, level_dbfs: float) -> np.ndarray:
    """Scale ``x`` so its RMS level is ``level_dbfs``. Raises ``ValueError`` on digital silence."""
    now = rms_dbfs(x)
    if not np.isfinite(now):
        raise ValueError("cannot set the level of digital silence")
    return x * 10 ** ((level_dbfs - now) / 20)


def _samples(duration_s: float) -> int:
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s} s")
    return round(duration_s * RATE)


def _band(x: np.ndarray, band_limit: bool) -> np.ndarray:
    return telephone_band(x, RATE) if band_limit else x


# --- stationary noise -----------------------------------------------------------------------------
def white_noise(duration_s: float, level_dbfs: float, seed: int = 0, band_limit: bool = True) -> np.ndarray:
    """Gaussian white noise (flat spectrum), band-limited to the phone band, at ``level_dbfs`` RMS."""
    rng = np.random.default_rng(seed)
    x = _band(rng.standard_normal(_samples(duration_s)), band_limit)
    return set_rms_dbfs(x, level_dbfs)


def pink_noise(duration_s: float, level_dbfs: float, seed: int = 0, band_limit: bool = True) -> np.ndarray:
    """1/f (pink) noise, -3 dB per octave, made by shaping white noise in the frequency domain."""
    rng = np.random.default_rng(seed)
    n = _samples(duration_s)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[1:] /= np.sqrt(f[1:])
    spectrum[0] = 0.0
    x = _band(np.fft.irfft(spectrum, n), band_limit)
    return set_rms_dbfs(x, level_dbfs)


def hum(
    duration_s: float,
    level_dbfs: float,
    mains_hz: float = 50.0,
    harmonics: int | None = None,
    seed: int = 0,
    band_limit: bool = True,
) -> np.ndarray:
    """Mains hum: ``mains_hz`` and its harmonics up to 3400 Hz (or ``harmonics`` of them).

    Harmonic ``k`` has amplitude ``1/k`` (a buzz, as rectifiers and ground loops make) and a random,
    seeded phase. After the phone band-pass the fundamental is gone and the harmonics from 300 Hz
    remain; the level is set after band-limiting, i.e. it is the level on the line.
    """
    if mains_hz <= 0:
        raise ValueError(f"mains frequency must be positive, got {mains_hz} Hz")
    rng = np.random.default_rng(seed)
    n = _samples(duration_s)
    t = np.arange(n) / RATE
    top = harmonics if harmonics is not None else int(3400 // mains_hz)
    x = np.zeros(n)
    for k in range(1, top + 1):
        x += np.sin(2 * np.pi * k * mains_hz * t + rng.uniform(0, 2 * np.pi)) / k
    return set_rms_dbfs(_band(x, band_limit), level_dbfs)


def clicks(
    duration_s: float,
    peak_dbfs: float = -10.0,
    per_second: float = 2.0,
    seed: int = 0,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Clicks and pops: single-sample impulses of random polarity through the phone band-pass.

    ``peak_dbfs`` is the peak of the band-limited click (0 dBFS = full scale); impulse times are a
    seeded Poisson process of ``per_second`` clicks per second, at least 30 ms apart. Added onto
    ``background`` if given (same length), else onto digital silence.
    """
    rng = np.random.default_rng(seed)
    n = _samples(duration_s)
    gap = int(0.03 * RATE)
    times: list[int] = []
    t = int(rng.exponential(RATE / per_second))
    while t < n:
        times.append(t)
        t += max(gap, int(rng.exponential(RATE / per_second)))
    # One band-limited impulse, scaled to the requested peak, copied to every click time.
    proto = telephone_band(np.eye(1, 81, 40).ravel(), RATE)
    proto *= 10 ** (peak_dbfs / 20) / np.max(np.abs(proto))
    x = np.zeros(n) if background is None else np.array(background, dtype=float)
    if len(x) != n:
        raise ValueError("background must have the same length as the clicks")
    for t in times:
        polarity = 1.0 if rng.random() < 0.5 else -1.0
        seg = x[max(t - 40, 0) : t + 41]
        lo = max(40 - t, 0)
        seg += polarity * proto[lo : lo + len(seg)]
    return x


# --- DTMF -----------------------------------------------------------------------------------------
def dtmf(
    digits: str,
    level_dbfs: float = -10.0,
    tone_ms: int = 100,
    gap_ms: int = 100,
    twist_db: float = 2.0,
    lead_ms: int = 0,
) -> np.ndarray:
    """Keypad digits as ITU-T Q.23 tone pairs: ``tone_ms`` of tone then ``gap_ms`` of silence each.

    ``level_dbfs`` is the RMS level of the low-group tone; the high group is ``twist_db`` louder
    (phones send the high group a little hotter to make up for line loss). Raises ``ValueError``
    for a character that is not a DTMF key.
    """
    unknown = set(digits) - set(DTMF_FREQS)
    if unknown:
        raise ValueError(f"not DTMF keys: {sorted(unknown)}")
    a_low = np.sqrt(2) * 10 ** (level_dbfs / 20)
    a_high = a_low * 10 ** (twist_db / 20)
    tone_n, gap_n = tone_ms * RATE // 1000, gap_ms * RATE // 1000
    t = np.arange(tone_n) / RATE
    parts = [np.zeros(lead_ms * RATE // 1000)]
    for key in digits:
        lo, hi = DTMF_FREQS[key]
        parts.append(a_low * np.sin(2 * np.pi * lo * t) + a_high * np.sin(2 * np.pi * hi * t))
        parts.append(np.zeros(gap_n))
    return np.concatenate(parts)


def dtmf_sequence(
    duration_s: float,
    level_dbfs: float = -10.0,
    seed: int = 0,
    tone_ms: tuple[int, int] = (40, 200),
    gap_ms: tuple[int, int] = (40, 400),
    twist_db: float = 2.0,
) -> np.ndarray:
    """Random digits with random tone (``tone_ms`` range) and gap lengths, filling ``duration_s``."""
    rng = np.random.default_rng(seed)
    n = _samples(duration_s)
    keys = list(DTMF_FREQS)
    parts: list[np.ndarray] = []
    total = 0
    while total < n:
        key = keys[int(rng.integers(len(keys)))]
        part = dtmf(
            key,
            level_dbfs,
            tone_ms=int(rng.integers(tone_ms[0], tone_ms[1] + 1)),
            gap_ms=int(rng.integers(gap_ms[0], gap_ms[1] + 1)),
            twist_db=twist_db,
        )
        parts.append(part)
        total += len(part)
    return np.concatenate(parts)[:n]


# --- speech-like noise ----------------------------------------------------------------------------
def babble(
    sources: Sequence[np.ndarray],
    duration_s: float,
    level_dbfs: float,
    talkers: int = 6,
    seed: int = 0,
) -> np.ndarray:
    """Babble: ``talkers`` copies of real speech, each looped from a random start, summed.

    Each talker is a random source from ``sources`` (8 kHz float arrays) starting at a random
    offset, so the voices overlap without lining up. The sum is set to ``level_dbfs`` RMS.
    """
    if not sources or talkers < 1:
        raise ValueError("babble needs at least one source and one talker")
    rng = np.random.default_rng(seed)
    n = _samples(duration_s)
    x = np.zeros(n)
    for _ in range(talkers):
        src = sources[int(rng.integers(len(sources)))]
        start = int(rng.integers(len(src)))
        reps = -(-(n + start) // len(src))
        x += np.tile(src, reps)[start : start + n] * 10 ** (rng.uniform(-6, 0) / 20)
    return set_rms_dbfs(x, level_dbfs)


# --- mixing ---------------------------------------------------------------------------------------
def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` under ``speech`` so that active speech level minus noise RMS is ``snr_db``.

    The speech level is the active level (``lab.telephone.active_level_dbfs``: frames within 30 dB
    of the loudest), the usual way SNR is stated for speech; the noise level is its plain RMS.
    Both arrays must have the same length.
    """
    if len(speech) != len(noise):
        raise ValueError(f"lengths differ: speech {len(speech)}, noise {len(noise)}")
    target = active_level_dbfs(speech, RATE) - snr_db
    return speech + set_rms_dbfs(noise, target)


def noise_like(kind: str, duration_s: float, level_dbfs: float, seed: int = 0) -> np.ndarray:
    """A stationary line noise by name: ``white``, ``pink``, ``hum50`` or ``hum60``."""
    if kind == "white":
        return white_noise(duration_s, level_dbfs, seed)
    if kind == "pink":
        return pink_noise(duration_s, level_dbfs, seed)
    if kind in ("hum50", "hum60"):
        return hum(duration_s, level_dbfs, mains_hz=float(kind[3:]), seed=seed)
    raise ValueError(f"unknown noise kind {kind!r}")


# --- real speech and test calls -------------------------------------------------------------------
def load_fixture(name: str) -> np.ndarray:
    """A committed caller recording (``tests/fixtures/audio/<name>.ulaw``) as 8 kHz float samples."""
    return ulaw_to_float((FIXTURES / f"{name}.ulaw").read_bytes())


def load_labels() -> dict:
    """The reference speech segments of the fixtures (``tests/fixtures/audio/labels.json``)."""
    return json.loads(LABELS_PATH.read_text())


@dataclass(frozen=True)
class CallAudio:
    """Caller audio of one test call with where speech truly starts, on the call clock (ms).

    ``onsets_ms`` are the reference onsets of utterances (each after a pause of at least the
    labels' ``min_pause_ms``), ``ends_ms`` the matching ends.
    """

    audio: np.ndarray
    onsets_ms: tuple[int, ...]
    ends_ms: tuple[int, ...]


def speech_call(
    names: Sequence[str],
    lead_ms: int = 1000,
    gap_ms: int = 1000,
    tail_ms: int = 1000,
    noise: str | None = None,
    snr_db: float | None = None,
    seed: int = 0,
    labels: dict | None = None,
) -> CallAudio:
    """Real speech placed on a call clock: ``lead_ms`` of line noise (or silence), then each
    fixture in ``names`` separated by ``gap_ms``, then ``tail_ms``.

    With ``noise`` (``white``/``pink``/``hum50``/``hum60``) and ``snr_db``, that noise runs under
    the whole call from frame 0, at ``snr_db`` below the active speech level. The reference onsets
    are the fixtures' labelled utterance onsets shifted by where each fixture was placed.
    """
    labels = labels if labels is not None else load_labels()
    parts: list[np.ndarray] = [np.zeros(lead_ms * RATE // 1000)]
    onsets: list[int] = []
    ends: list[int] = []
    at_ms = lead_ms
    for i, name in enumerate(names):
        x = load_fixture(name)
        for utt in labels["fixtures"][name]["utterances"]:
            onsets.append(at_ms + utt["onset_ms"])
            ends.append(at_ms + utt["end_ms"])
        parts.append(x)
        at_ms += len(x) * 1000 // RATE
        # Keep every placement on a whole ms (8 samples) so labels shift exactly.
        pad = (-len(x)) % 8
        if pad:
            parts.append(np.zeros(pad))
            at_ms += pad // 8
        if i < len(names) - 1:
            parts.append(np.zeros(gap_ms * RATE // 1000))
            at_ms += gap_ms
    parts.append(np.zeros(tail_ms * RATE // 1000))
    audio = np.concatenate(parts)
    if noise is not None:
        if snr_db is None:
            raise ValueError("noise needs snr_db")
        speech_only = audio
        audio = mix_at_snr(speech_only, noise_like(noise, len(audio) / RATE, -30.0, seed), snr_db)
    return CallAudio(audio, tuple(onsets), tuple(ends))


def phone_line(x: np.ndarray) -> np.ndarray:
    """``x`` after the G.711 μ-law round trip a call applies (clipped to full scale)."""
    return ulaw_to_float(pcm16_to_ulaw(float_to_pcm16(x)))


def call_frames(x: np.ndarray) -> Iterator[tuple[bytes, int]]:
    """Cut 8 kHz float audio into the detector's input: ``(320 bytes PCM16 LE, start ms)`` per 20 ms.

    The audio goes through μ-law first (``pcm16_to_ulaw`` then ``ulaw_to_pcm16``), as call audio
    does; a last partial frame is dropped.
    """
    pcm = ulaw_to_pcm16(pcm16_to_ulaw(float_to_pcm16(x)))
    step = FRAME_SAMPLES * 2
    for i in range(len(pcm) // step):
        yield pcm[i * step : (i + 1) * step], i * FRAME_MS

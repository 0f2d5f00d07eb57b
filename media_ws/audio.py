"""G.711 μ-law codec, 20 ms re-framing and resampling for 8 kHz telephone audio.

Twilio Media Streams carry ``audio/x-mulaw`` at 8000 Hz, mono, base64-encoded without a header
(twilio.com/docs/voice/media-streams/websocket-messages). One byte per sample, so 20 ms is
160 bytes of μ-law and 320 bytes of 16-bit little-endian PCM.

The codec is the C implementation in ``audioop`` (the standard library on Python 3.11/3.12, the
``audioop-lts`` package on 3.13+), which follows ITU-T G.711; a pure-Python table with the same
output stands in if neither is importable.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

with warnings.catch_warnings():
    # The stdlib module warns on import (PEP 594) until it is removed in 3.13.
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ModuleNotFoundError:  # pragma: no cover - only without audioop-lts on 3.13+
        audioop = None  # type: ignore[assignment]

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160 samples
ULAW_FRAME_BYTES = FRAME_SAMPLES  # 160 bytes of μ-law per 20 ms
PCM16_FRAME_BYTES = FRAME_SAMPLES * 2  # 320 bytes of PCM16 per 20 ms
BYTES_PER_MS = SAMPLE_RATE // 1000  # μ-law: 8 bytes per ms
ULAW_SILENCE = 0xFF  # decodes to 0


def _ulaw_code_to_linear(code: int) -> int:
    """G.711 μ-law expansion of one code (the same values ``audioop.ulaw2lin`` gives)."""
    u = ~code & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (0x84 - magnitude) if (u & 0x80) else (magnitude - 0x84)


_ULAW_TO_PCM16 = [(_ulaw_code_to_linear(c) & 0xFFFF).to_bytes(2, "little") for c in range(256)]


def _linear_to_ulaw_code(sample: int) -> int:
    """G.711 μ-law compression of one 16-bit sample, on its top 14 bits as ``audioop`` does."""
    v = sample >> 2
    mask = 0xFF
    if v < 0:
        v, mask = -v, 0x7F
    v = min(v, 8159) + 33  # clip, then add the bias (0x84 >> 2)
    segment = max(v.bit_length() - 6, 0)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((v >> (segment + 1)) & 0x0F)) ^ mask


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """Decode μ-law to 16-bit little-endian PCM: ``n`` bytes in, ``2n`` bytes out."""
    if audioop is not None:
        return audioop.ulaw2lin(ulaw, 2)
    return b"".join([_ULAW_TO_PCM16[b] for b in ulaw])


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Encode 16-bit little-endian PCM (even length) to μ-law: ``2n`` bytes in, ``n`` bytes out.

    Raises ``ValueError`` for an odd number of bytes.
    """
    if len(pcm) % 2:
        raise ValueError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
    if audioop is not None:
        return audioop.lin2ulaw(pcm, 2)
    samples = memoryview(pcm).cast("h")
    return bytes(_linear_to_ulaw_code(s) for s in samples)


def ulaw_duration_ms(ulaw: bytes | int) -> int:
    """Play time of μ-law audio at 8 kHz in ms (8 bytes per ms); accepts bytes or a byte count."""
    n = ulaw if isinstance(ulaw, int) else len(ulaw)
    return n // BYTES_PER_MS


class Reframer:
    """Cut a stream of μ-law payloads of any size into exact 20 ms frames (160 bytes).

    Each frame carries its position on the caller's clock: the ``timestamp`` (ms) of the media
    message its first byte came in, plus that byte's offset (8 bytes per ms). Twilio's timestamps
    can jump (a stream may skip silent chunks), so a frame's time comes from the message, not from
    counting bytes since the start.

    >>> r = Reframer()
    >>> [(len(f), ms) for f, ms in r.feed(bytes(100), 0)]
    []
    >>> [(len(f), ms) for f, ms in r.feed(bytes(300), 20)]
    [(160, 0), (160, 27)]
    """

    __slots__ = ("_buf", "_buf_ms", "frame_bytes")

    def __init__(self, frame_bytes: int = ULAW_FRAME_BYTES) -> None:
        self.frame_bytes = frame_bytes
        self._buf = bytearray()
        self._buf_ms = 0  # call-clock time of self._buf[0]

    @property
    def pending(self) -> int:
        """Bytes held back until the next frame is complete."""
        return len(self._buf)

    def feed(self, payload: bytes, timestamp_ms: int) -> list[tuple[bytes, int]]:
        """Add one message's payload; return the complete frames as ``(160 bytes, start ms)``."""
        if not self._buf:
            self._buf_ms = timestamp_ms
        self._buf += payload
        n = self.frame_bytes
        if len(self._buf) < n:
            return []
        frames = []
        # Bytes before this payload keep the old anchor; bytes from it on follow its timestamp.
        old = len(self._buf) - len(payload)
        pos = 0
        while len(self._buf) - pos >= n:
            ms = (
                self._buf_ms + pos // BYTES_PER_MS
                if pos < old
                else timestamp_ms + (pos - old) // BYTES_PER_MS
            )
            frames.append((bytes(self._buf[pos : pos + n]), ms))
            pos += n
        del self._buf[:pos]
        if pos < old:
            self._buf_ms += pos // BYTES_PER_MS
        else:
            self._buf_ms = timestamp_ms + (pos - old) // BYTES_PER_MS
        return frames


def chunk_bytes(data: bytes, size: int) -> Iterator[bytes]:
    """Split ``data`` into pieces of at most ``size`` bytes, in order."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample 16-bit little-endian mono PCM from ``from_rate`` to ``to_rate`` Hz.

    Uses libsoxr (the ``soxr`` package, high quality, with the anti-aliasing filter a drop to
    8 kHz needs). Whole-buffer: for a stream, use ``StreamResampler``.
    """
    if from_rate == to_rate:
        return pcm
    import numpy as np
    import soxr

    x = np.frombuffer(pcm, dtype="<i2")
    y = soxr.resample(x, from_rate, to_rate, quality="HQ")
    return np.asarray(y, dtype="<i2").tobytes()


class StreamResampler:
    """Resample a PCM16 stream chunk by chunk without clicks at chunk boundaries (libsoxr)."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        import soxr

        self.from_rate, self.to_rate = from_rate, to_rate
        self._stream = soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16", quality="HQ")

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        """Resample one chunk (16-bit LE mono); pass ``last=True`` with the final chunk to flush."""
        import numpy as np

        y = self._stream.resample_chunk(np.frombuffer(pcm, dtype="<i2"), last=last)
        return np.asarray(y, dtype="<i2").tobytes()

"""G.711 μ-law codec, exact 20 ms re-framing and resampling (media_ws/audio.py)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from media_ws import audio
from media_ws.audio import Reframer, StreamResampler, pcm16_to_ulaw, resample_pcm16, ulaw_to_pcm16

# Reference decodings from the G.711 μ-law table (ITU-T G.711, table 2a; values in 16-bit PCM,
# i.e. the 14-bit linear outputs times 4): positive and negative full scale, the smallest steps
# and a segment boundary, and both encodings of zero.
G711_REFERENCE = {
    0x80: 32124,
    0x00: -32124,
    0x8F: 16764,
    0x0F: -16764,
    0xF0: 120,
    0x70: -120,
    0xFE: 8,
    0x7E: -8,
    0xFF: 0,
    0x7F: 0,
}


def decode(codes: bytes) -> list[int]:
    pcm = ulaw_to_pcm16(codes)
    return list(struct.unpack(f"<{len(codes)}h", pcm))


def test_decoding_matches_the_g711_reference_values():
    assert decode(bytes(G711_REFERENCE)) == list(G711_REFERENCE.values())


def test_the_pure_python_table_is_bit_exact_with_the_c_codec_for_every_code_and_sample():
    codes = bytes(range(256))
    assert b"".join(audio._ULAW_TO_PCM16[c] for c in codes) == ulaw_to_pcm16(codes)
    samples = struct.pack("<65536h", *range(-32768, 32768))
    assert bytes(audio._linear_to_ulaw_code(s) for s in range(-32768, 32768)) == pcm16_to_ulaw(samples)


def test_encoding_a_decoded_code_gives_the_code_back():
    codes = bytes(c for c in range(256) if c != 0x7F)  # 0x7F is "negative zero": it encodes as 0xFF
    assert pcm16_to_ulaw(ulaw_to_pcm16(codes)) == codes
    assert pcm16_to_ulaw(ulaw_to_pcm16(b"\x7f")) == b"\xff"


def test_pcm_with_an_odd_number_of_bytes_is_refused():
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_ulaw(b"\x00\x01\x02")


# Payloads are whole milliseconds (8 bytes each), as Twilio's integer timestamps imply.
@pytest.mark.parametrize("sizes", [[160] * 5, [104, 296, 24, 216], [8, 152, 168, 312, 160], [1000, 64]])
def test_reframing_cuts_exact_20ms_frames_whatever_the_payload_sizes(sizes):
    payloads = [bytes((i * 7 + j) % 256 for j in range(n)) for i, n in enumerate(sizes)]
    reframer, frames, ms = Reframer(), [], 0
    for payload in payloads:
        frames += reframer.feed(payload, ms)
        ms += len(payload) // 8
    data = b"".join(payloads)
    assert all(len(f) == 160 for f, _ in frames)
    assert b"".join(f for f, _ in frames) == data[: len(frames) * 160]
    assert reframer.pending == len(data) % 160
    # Contiguous audio: frame i starts at 20 * i ms.
    assert [t for _, t in frames] == [20 * i for i in range(len(frames))]


def test_frame_times_follow_the_media_timestamps_across_a_gap():
    reframer = Reframer()
    assert reframer.feed(b"\x01" * 80, 0) == []  # 10 ms, then Twilio skips ahead to 500 ms
    frames = reframer.feed(b"\x02" * 400, 500)
    # The first frame keeps the old anchor; later ones follow the new message's timestamp.
    assert [(f[:1], f[-1:], t) for f, t in frames] == [
        (b"\x01", b"\x02", 0),
        (b"\x02", b"\x02", 510),
        (b"\x02", b"\x02", 530),
    ]
    assert reframer.pending == 0


def tone(freq_hz: float, rate: int, seconds: float = 0.5) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * 32767 * np.sin(2 * np.pi * freq_hz * t)).astype("<i2").tobytes()


def peak_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def rms(pcm: bytes) -> float:
    return float(np.sqrt(np.mean(np.frombuffer(pcm, dtype="<i2").astype(float) ** 2)))


def test_resampling_keeps_the_pitch_and_the_duration():
    up = resample_pcm16(tone(440, 8000), 8000, 16000)
    assert len(up) == 2 * len(tone(440, 8000))
    assert abs(peak_hz(up, 16000) - 440) < 5
    down = resample_pcm16(tone(1000, 22050), 22050, 8000)
    assert abs(len(down) / 2 - 4000) <= 2
    assert abs(peak_hz(down, 8000) - 1000) < 5


def test_downsampling_to_8khz_filters_out_what_the_phone_band_cannot_carry():
    # A 6 kHz tone cannot exist at 8 kHz; without an anti-alias filter it would fold to 2 kHz.
    folded = resample_pcm16(tone(6000, 22050), 22050, 8000)
    assert rms(folded) < 0.01 * rms(tone(6000, 22050))


def test_streamed_resampling_matches_the_whole_buffer():
    source = tone(700, 22050, seconds=1.0)
    stream = StreamResampler(22050, 8000)
    chunk = 2 * 1103  # odd-sized pieces, as espeak delivers them
    pieces = [source[i : i + chunk] for i in range(0, len(source), chunk)]
    out = b"".join(stream.process(p, last=(i == len(pieces) - 1)) for i, p in enumerate(pieces))
    whole = resample_pcm16(source, 22050, 8000)
    assert abs(len(out) - len(whole)) <= 4
    n = min(len(out), len(whole)) // 2
    a = np.frombuffer(out[: 2 * n], dtype="<i2").astype(float)
    b = np.frombuffer(whole[: 2 * n], dtype="<i2").astype(float)
    assert np.max(np.abs(a[200:-200] - b[200:-200])) < 0.01 * 32767

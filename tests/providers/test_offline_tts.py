"""The offline TTS (espeak-ng from the espeakng-loader wheel): μ-law 8 kHz out, streamed, serialised.

Figures the ranges below come from (measured here, espeakng-loader 0.2.4 / espeak-ng 1.52, default
voice en-us at 175 wpm, three runs each):

====================================================================  ========  ===============
text                                                                  words     audio (s)
====================================================================  ========  ===============
"Hello! This is the voicebot assistant calling. How can I help ..."   13        4.456
"Sure, I'll connect you with a person now."                           8         2.247
"Thank you for calling. Goodbye!"                                     5         1.941-1.950
same three at 350 wpm                                                             1.934 / 1.012 / 0.847
====================================================================  ========  ===============

espeak-ng's output is not bit-identical from run to run (lengths differ by a few ms), so outputs
are compared by their 20 ms energy envelope: the same text correlates at 0.94-1.00, different
texts at -0.13-0.32 (measured over three concurrent runs).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from media_ws.audio import ulaw_to_pcm16
from media_ws.errors import TTSError
from media_ws.providers.offline_tts import EspeakTTS, _Espeak

GREETING = "Hello! This is the voicebot assistant calling. How can I help you today?"
HANDOFF = "Sure, I'll connect you with a person now."
GOODBYE = "Thank you for calling. Goodbye!"


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return EspeakTTS(voice="en-us", rate_wpm=175)


async def speak(engine: EspeakTTS, text: str) -> list[bytes]:
    return [chunk async for chunk in engine.synthesize(text)]


def envelope_db(ulaw: bytes) -> np.ndarray:
    """Level of each 20 ms frame in dB."""
    x = np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)
    n = len(x) // 160
    frames = x[: n * 160].reshape(n, 160)
    return 10 * np.log10((frames**2).mean(axis=1) + 1.0)


def envelope_correlation(a: bytes, b: bytes) -> float:
    x, y = envelope_db(a), envelope_db(b)
    n = min(len(x), len(y))
    return float(np.corrcoef(x[:n], y[:n])[0, 1])


async def test_a_sentence_becomes_headerless_ulaw_of_a_plausible_length(tts: EspeakTTS) -> None:
    chunks = await speak(tts, GREETING)
    audio = b"".join(chunks)
    assert audio and not audio.startswith(b"RIFF")
    assert all(isinstance(c, bytes) and c for c in chunks)
    # Chunks of chunk_ms (160 ms = 1280 bytes), the last one shorter: first audio is not the whole.
    assert len(chunks) > 1
    assert all(len(c) == tts.chunk_bytes for c in chunks[:-1]) and 0 < len(chunks[-1]) <= tts.chunk_bytes
    seconds = len(audio) / 8000
    assert 4.0 <= seconds <= 4.9  # measured 4.456 s (13 words at 175 wpm)


async def test_the_audio_is_speech_level_not_silence(tts: EspeakTTS) -> None:
    pcm = np.frombuffer(ulaw_to_pcm16(b"".join(await speak(tts, HANDOFF))), dtype="<i2").astype(np.float64)
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(pcm**2)) / 32768)
    assert -30 < rms_dbfs < -10  # measured -21.3 dBFS
    voiced = envelope_db(b"".join(await speak(tts, HANDOFF))) > 20 * np.log10(32768) - 50
    assert voiced.mean() > 0.5  # most 20 ms frames are within 50 dB of full scale


async def test_rate_setting_changes_the_speaking_rate() -> None:
    slow, fast = EspeakTTS(rate_wpm=175), EspeakTTS(rate_wpm=350)
    slow_s = len(b"".join(await speak(slow, GREETING))) / 8000
    fast_s = len(b"".join(await speak(fast, GREETING))) / 8000
    assert 1.8 <= fast_s <= 2.1  # measured 1.934 s
    assert 0.4 < fast_s / slow_s < 0.5  # measured 0.434


async def test_voice_and_rate_come_from_settings(settings: Any) -> None:
    settings.OFFLINE_TTS_VOICE = "en-gb-x-rp"
    settings.OFFLINE_TTS_RATE = 300
    engine = EspeakTTS()
    assert (engine.voice, engine.rate_wpm) == ("en-gb-x-rp", 300)
    assert b"".join(await speak(engine, GOODBYE))


async def test_concurrent_requests_each_get_their_own_whole_audio(tts: EspeakTTS) -> None:
    texts = [GREETING, HANDOFF, GOODBYE]
    solo = [b"".join(await speak(tts, t)) for t in texts]
    for _ in range(3):
        together = [b"".join(c) for c in await asyncio.gather(*(speak(tts, t) for t in texts))]
        for i, audio in enumerate(together):
            assert abs(len(audio) - len(solo[i])) <= 0.02 * len(solo[i])
            assert envelope_correlation(audio, solo[i]) > 0.8
            for j in range(len(texts)):
                if j != i:
                    assert envelope_correlation(audio, solo[j]) < 0.6


async def test_closing_the_generator_stops_synthesis(tts: EspeakTTS) -> None:
    long_text = " ".join([GREETING] * 20)  # about 90 s of speech if spoken to the end
    before = tts.produced_ms()
    gen = tts.synthesize(long_text)
    first = await gen.__anext__()
    assert first
    await gen.aclose()
    # The worker is serial: once a later request has finished, the closed one has stopped.
    assert b"".join(await speak(tts, GOODBYE))
    made_ms = tts.produced_ms() - before
    assert made_ms < 10_000, f"{made_ms} ms synthesised after the generator was closed at its first chunk"


async def test_cancelling_the_consumer_stops_synthesis_too(tts: EspeakTTS) -> None:
    long_text = " ".join([GREETING] * 20)
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in tts.synthesize(long_text):
            started.set()
            await asyncio.sleep(3600)

    before = tts.produced_ms()
    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b"".join(await speak(tts, GOODBYE))
    assert tts.produced_ms() - before < 10_000


async def test_blank_text_gives_no_audio(tts: EspeakTTS) -> None:
    assert await speak(tts, "  \n ") == []


def test_an_unknown_voice_is_a_clear_error() -> None:
    with pytest.raises(TTSError, match="no voice 'xx-nonexistent'"):
        EspeakTTS(voice="xx-nonexistent")


async def test_the_engine_still_works_after_a_bad_voice_was_tried(tts: EspeakTTS) -> None:
    with pytest.raises(TTSError):
        EspeakTTS(voice="xx-nonexistent")
    assert 1.8 <= len(b"".join(await speak(tts, GOODBYE))) / 8000 <= 2.1  # measured 1.941-1.950 s


@pytest.mark.parametrize("rate", [79, 451, "fast"])
def test_an_out_of_range_rate_is_a_clear_error(rate: Any) -> None:
    with pytest.raises(TTSError, match=r"rate|words per minute"):
        EspeakTTS(rate_wpm=rate)


def test_a_missing_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import espeakng_loader

    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: "/nonexistent/libespeak-ng.so")
    fresh = _Espeak()  # a library object not yet initialised (the process's one already is)
    with pytest.raises(TTSError, match="espeak-ng is not available"):
        fresh.check("en-us", 175)

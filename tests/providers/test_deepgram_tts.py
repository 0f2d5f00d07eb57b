"""Deepgram Aura TTS through the real deepgram-sdk against the REST fake on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from media_ws.errors import TTSError
from media_ws.providers.deepgram_tts import DeepgramTTS, WavHeaderStripper, split_for_speech
from tests.fakes.background import wait_until
from tests.fakes.deepgram import FakeDeepgram, synth_voice_ulaw, wav_header_mulaw

pytestmark = pytest.mark.usefixtures("close_sdk_clients")

TEXT = "Your appointment is on Friday at nine."


async def speak(text: str = TEXT) -> bytes:
    return b"".join([chunk async for chunk in DeepgramTTS().synthesize(text)])


async def test_asks_for_raw_mulaw_at_8khz_with_the_voice_setting(
    fake_deepgram: FakeDeepgram, settings: Any
) -> None:
    settings.DEEPGRAM_TTS_VOICE = "aura-2-andromeda-en"
    audio = await speak()
    (request,) = fake_deepgram.speak_requests
    assert request.params == {
        "model": "aura-2-andromeda-en",
        "encoding": "mulaw",
        "sample_rate": "8000",
        "container": "none",
    }
    assert request.text == TEXT
    assert request.authorization == f"Token {fake_deepgram.api_key}"
    assert audio == synth_voice_ulaw(TEXT, fake_deepgram.ms_per_char)  # byte for byte


async def test_audio_arrives_in_chunks_before_the_body_is_complete(fake_deepgram: FakeDeepgram) -> None:
    fake_deepgram.speak_chunk_bytes = 800
    fake_deepgram.speak_chunk_interval_s = 0.03
    chunks = DeepgramTTS().synthesize(TEXT)
    first = await anext(chunks)
    request = fake_deepgram.speak_requests[0]
    assert first
    assert not request.completed
    assert request.bytes_sent < request.audio_bytes
    rest = [c async for c in chunks]
    assert len(rest) >= 2
    assert first + b"".join(rest) == synth_voice_ulaw(TEXT, fake_deepgram.ms_per_char)
    assert request.completed


async def test_a_wav_header_never_reaches_the_call(fake_deepgram: FakeDeepgram) -> None:
    """Even if the service ignored container=none (the REST default is a WAV container)."""
    fake_deepgram.speak_force_container = "wav"
    fake_deepgram.speak_chunk_bytes = 7  # the header arrives split across chunks
    fake_deepgram.speak_chunk_interval_s = 0
    audio = await speak()
    expected = synth_voice_ulaw(TEXT, fake_deepgram.ms_per_char)
    assert fake_deepgram.speak_requests[0].audio_bytes == len(expected) + 44  # the fake did send one
    assert audio == expected
    assert not audio.startswith(b"RIFF")


def test_header_stripper_passes_plain_audio_through_untouched() -> None:
    audio = synth_voice_ulaw("plain", 60)
    stripper = WavHeaderStripper()
    out = b"".join(stripper.feed(audio[i : i + 3]) for i in range(0, len(audio), 3)) + stripper.finish()
    assert out == audio
    assert stripper.header_bytes == 0


def test_header_stripper_rejects_a_wav_that_is_not_mulaw_8k() -> None:
    header = bytearray(wav_header_mulaw(1000))
    header[20:22] = (1).to_bytes(2, "little")  # PCM, not μ-law
    with pytest.raises(TTSError) as caught:
        WavHeaderStripper().feed(bytes(header) + b"\x00" * 100)
    assert caught.value.kind == "bad_response"


async def test_a_long_text_is_spoken_sentence_by_sentence(fake_deepgram: FakeDeepgram) -> None:
    text = (
        "Hello! This is the voicebot calling about your appointment with Dr. Smith. "
        "It is on Friday at 9 a.m. in the main building. How can I help you today?"
    )
    chunks = DeepgramTTS().synthesize(text)
    await anext(chunks)
    # Speech starts after the first sentence is synthesized, not the whole text.
    assert [r.text for r in fake_deepgram.speak_requests] == [
        "Hello! This is the voicebot calling about your appointment with Dr. Smith."
    ]
    async for _ in chunks:
        pass
    assert [r.text for r in fake_deepgram.speak_requests] == [
        "Hello! This is the voicebot calling about your appointment with Dr. Smith.",
        "It is on Friday at 9 a.m. in the main building.",
        "How can I help you today?",
    ]


def test_split_for_speech_keeps_every_word_and_bounds_the_length() -> None:
    text = "This is the first sentence. " + ", ".join(["A clause with several words"] * 80) + ". Last one?"
    pieces = split_for_speech(text, max_chars=200)
    assert all(0 < len(p) <= 200 for p in pieces)
    assert " ".join(pieces).split() == text.split()
    assert pieces[0] == "This is the first sentence."
    assert pieces[-1] == "Last one?"


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        (
            "Dr. Smith will call at 3 p.m. tomorrow. Is that OK?",
            ["Dr. Smith will call at 3 p.m. tomorrow.", "Is that OK?"],
        ),
        (
            "Hi! Ask J. Doe. He knows the answer to that one.",
            ["Hi! Ask J. Doe. He knows the answer to that one."],
        ),
        ('She said "Yes!" Then we booked it for Friday.', ['She said "Yes!" Then we booked it for Friday.']),
    ],
)
def test_split_for_speech_does_not_cut_at_abbreviations_or_tiny_sentences(
    text: str, pieces: list[str]
) -> None:
    assert split_for_speech(text) == pieces


async def test_empty_text_makes_no_request(fake_deepgram: FakeDeepgram) -> None:
    assert await speak("   ") == b""
    assert fake_deepgram.speak_requests == []


async def test_aclose_stops_synthesis_and_closes_the_http_stream(fake_deepgram: FakeDeepgram) -> None:
    fake_deepgram.speak_chunk_bytes = 160
    fake_deepgram.speak_chunk_interval_s = 0.02
    chunks = DeepgramTTS().synthesize(TEXT)
    await anext(chunks)
    await chunks.aclose()  # barge-in
    request = fake_deepgram.speak_requests[0]
    await wait_until(lambda: request.client_disconnected, what="the fake to see the client go")
    assert not request.completed


async def test_cancelling_the_consumer_closes_the_http_stream(fake_deepgram: FakeDeepgram) -> None:
    fake_deepgram.speak_chunk_bytes = 160
    fake_deepgram.speak_chunk_interval_s = 0.02
    got: list[bytes] = []

    async def consume() -> None:
        async for chunk in DeepgramTTS().synthesize(TEXT):
            got.append(chunk)

    task = asyncio.create_task(consume())
    await wait_until(lambda: len(got) >= 2, what="audio")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    request = fake_deepgram.speak_requests[0]
    await wait_until(lambda: request.client_disconnected, what="the fake to see the client go")


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, "auth"), (403, "auth"), (400, "bad_response"), (429, "unavailable"), (500, "unavailable")],
)
async def test_http_errors_map_to_kinds(fake_deepgram: FakeDeepgram, status: int, kind: str) -> None:
    fake_deepgram.speak_status = status
    with pytest.raises(TTSError) as caught:
        await speak()
    assert caught.value.kind == kind
    assert len(fake_deepgram.speak_requests) == 1  # never retried


async def test_a_wrong_key_is_an_auth_error(fake_deepgram: FakeDeepgram, settings: Any) -> None:
    settings.DEEPGRAM_API_KEY = "wrong"
    with pytest.raises(TTSError) as caught:
        await speak()
    assert caught.value.kind == "auth"


async def test_refused_connection_is_unavailable(fake_deepgram: FakeDeepgram) -> None:
    fake_deepgram.refuse()
    with pytest.raises(TTSError) as caught:
        await speak()
    assert caught.value.kind == "unavailable"


async def test_a_body_cut_off_mid_way_is_dropped_after_the_audio_so_far(fake_deepgram: FakeDeepgram) -> None:
    fake_deepgram.speak_chunk_bytes = 400
    fake_deepgram.speak_drop_after_bytes = 1200
    got: list[bytes] = []
    with pytest.raises(TTSError) as caught:
        async for chunk in DeepgramTTS().synthesize(TEXT):
            got.append(chunk)
    assert caught.value.kind == "dropped"
    assert b"".join(got) == synth_voice_ulaw(TEXT, fake_deepgram.ms_per_char)[:1200]


async def test_a_stalled_body_is_a_timeout(fake_deepgram: FakeDeepgram, settings: Any) -> None:
    settings.DEEPGRAM_TTS_TIMEOUT_S = 0.3
    fake_deepgram.speak_stall_after_bytes = 800
    with pytest.raises(TTSError) as caught:
        await speak()
    assert caught.value.kind == "timeout"
    await wait_until(lambda: fake_deepgram.speak_requests[0].client_disconnected, what="the stream closed")


async def test_no_first_byte_in_time_is_a_timeout(fake_deepgram: FakeDeepgram, settings: Any) -> None:
    settings.DEEPGRAM_TTS_TIMEOUT_S = 0.3
    fake_deepgram.speak_ttfb_s = 3
    with pytest.raises(TTSError) as caught:
        await speak()
    assert caught.value.kind == "timeout"


def test_the_fake_wraps_audio_in_wav_by_default_like_deepgram(fake_deepgram: FakeDeepgram) -> None:
    """Why ``container=none`` matters (REST default: a WAV container); also shows the fake serving
    a plain sync client from its own thread."""
    import httpx

    headers = {"Authorization": f"Token {fake_deepgram.api_key}"}
    url = f"{fake_deepgram.http_url}/v1/speak"
    params = {"model": "aura-2-thalia-en", "encoding": "mulaw", "sample_rate": "8000"}
    with httpx.Client(timeout=5) as http:
        wav = http.post(url, params=params, json={"text": "Hi."}, headers=headers).content
        raw = http.post(
            url, params={**params, "container": "none"}, json={"text": "Hi."}, headers=headers
        ).content
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    assert wav[44:] == raw == synth_voice_ulaw("Hi.", fake_deepgram.ms_per_char)

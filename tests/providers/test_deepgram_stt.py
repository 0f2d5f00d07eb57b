"""Deepgram live STT through the real deepgram-sdk against the protocol fake on 127.0.0.1.

Audio is real recorded speech (tests/fixtures/audio), sent in 20 ms frames faster than real time:
the fake works on stream time (bytes received), as Deepgram's own timestamps do.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from media_ws.errors import STTError
from media_ws.providers.base import InterimTranscript, SpeechStarted, TranscriptionGap, Utterance
from media_ws.providers.deepgram_stt import CLOSE_TIMEOUT_S, DeepgramSTT, DeepgramSTTStream
from tests.fakes.background import wait_until
from tests.fakes.deepgram import FakeDeepgram
from tests.providers.conftest import fixture_audio, speech_segments

pytestmark = pytest.mark.usefixtures("close_sdk_clients")

FRAME = 160  # 20 ms of μ-law
SILENCE = b"\xff"  # μ-law code for 0
#: How far the fake's webrtcvad may put an utterance's end from the independent Silero label, ms.
LABEL_TOLERANCE_MS = 250


class Events:
    """Collects a stream's events in the background; remembers the error that ended it."""

    def __init__(self, stream: DeepgramSTTStream) -> None:
        self.items: list[Any] = []
        self.error: STTError | None = None
        self.ended = False
        self.task = asyncio.create_task(self._run(stream))

    async def _run(self, stream: DeepgramSTTStream) -> None:
        try:
            async for event in stream.events():
                self.items.append(event)
        except STTError as exc:
            self.error = exc
        finally:
            self.ended = True

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.items if isinstance(e, kind)]

    async def wait_for(self, kind: type, count: int = 1, within: float = 10.0) -> list[Any]:
        await wait_until(lambda: len(self.of(kind)) >= count, within, f"{count} {kind.__name__}")
        return self.of(kind)


async def feed(stream: DeepgramSTTStream, audio: bytes, start_ms: int, pace_s: float = 0.001) -> int:
    """Send ``audio`` in 20 ms frames stamped from ``start_ms``, as Twilio does (a last partial
    frame is padded with silence); returns the next frame's ms."""
    audio += SILENCE * (-len(audio) % FRAME)
    ms = start_ms
    for i in range(0, len(audio), FRAME):
        frame = audio[i : i + FRAME]
        stream.send_audio(frame, ms)
        ms += len(frame) // 8
        await asyncio.sleep(pace_s)
    return ms


async def started_stream() -> tuple[DeepgramSTTStream, Events]:
    stream = DeepgramSTT().open_stream()
    await stream.start()
    return stream, Events(stream)


async def test_connects_with_the_documented_query_and_the_api_key(fake_deepgram: FakeDeepgram) -> None:
    stream, _ = await started_stream()
    await wait_until(lambda: fake_deepgram.listen_sessions, what="a listen connection")
    await stream.close()
    session = fake_deepgram.listen_sessions[0]
    assert session.params == {
        "model": "nova-3",
        "encoding": "mulaw",
        "sample_rate": "8000",
        "channels": "1",
        "interim_results": "true",
        "endpointing": "300",
        "utterance_end_ms": "1000",
        "vad_events": "true",
        "smart_format": "true",
    }
    assert session.authorization == f"Token {fake_deepgram.api_key}"


async def test_real_speech_gives_speech_started_then_the_scripted_utterance_on_the_call_clock(
    fake_deepgram: FakeDeepgram,
) -> None:
    fake_deepgram.transcripts = ["I would like to move my appointment to Friday."]
    audio = fixture_audio("clone_test")
    (onset, _), (_, end) = speech_segments("clone_test")  # 132 ms pause inside: one utterance
    origin = 5000  # the caller's audio starts 5 s into the call
    stream, events = await started_stream()
    next_ms = await feed(stream, audio, origin)
    await feed(stream, SILENCE * 8 * 1500, next_ms)

    (utterance,) = await events.wait_for(Utterance)
    assert utterance.text == "I would like to move my appointment to Friday."
    assert abs(utterance.end_ms - (origin + end)) <= LABEL_TOLERANCE_MS
    first = events.items[0]
    assert isinstance(first, SpeechStarted)
    assert abs(first.audio_ms - (origin + onset)) <= LABEL_TOLERANCE_MS
    # Interim text came first, and it was a prefix of the final words.
    interims = [e for e in events.items[: events.items.index(utterance)] if isinstance(e, InterimTranscript)]
    assert interims
    assert all(utterance.text.startswith(i.text) for i in interims)
    # 3.6 s of speech: Deepgram (and the fake) finalize it in more than one is_final segment,
    # which the stream joined into the one utterance.
    finals = [
        m
        for m in fake_deepgram.listen_sessions[0].sent("Results")
        if m["is_final"] and m["channel"]["alternatives"][0]["transcript"]
    ]
    assert len(finals) >= 2
    await stream.close()


async def test_every_utterance_of_a_long_recording_arrives_in_order(fake_deepgram: FakeDeepgram) -> None:
    script = [f"sentence number {i}" for i in range(1, 7)]
    fake_deepgram.transcripts = list(script)
    segments = speech_segments("beckett")
    stream, events = await started_stream()
    next_ms = await feed(stream, fixture_audio("beckett"), 0)
    await feed(stream, SILENCE * 8 * 1500, next_ms)
    utterances = await events.wait_for(Utterance, len(segments))
    assert [u.text for u in utterances] == script
    for u, (_, end) in zip(utterances, segments, strict=True):
        assert abs(u.end_ms - end) <= LABEL_TOLERANCE_MS
    await stream.close()


async def test_utterance_end_closes_the_utterance_when_endpointing_never_fires(
    fake_deepgram: FakeDeepgram,
) -> None:
    """Line noise can keep speech_final from coming; UtteranceEnd (word timing based) ends it."""
    fake_deepgram.speech_final = False
    fake_deepgram.transcripts = ["please call me back tomorrow"]
    _, (_, end) = speech_segments("clone_test")
    stream, events = await started_stream()
    next_ms = await feed(stream, fixture_audio("clone_test"), 0)
    await feed(stream, SILENCE * 8 * 1500, next_ms)
    (utterance,) = await events.wait_for(Utterance)
    assert utterance.text == "please call me back tomorrow"
    assert abs(utterance.end_ms - end) <= LABEL_TOLERANCE_MS
    sent = fake_deepgram.listen_sessions[0].server_messages
    assert not any(m.get("speech_final") for m in sent)
    (utterance_end,) = [m for m in sent if m["type"] == "UtteranceEnd"]
    assert utterance.end_ms == round(utterance_end["last_word_end"] * 1000)
    await stream.close()


async def test_call_clock_follows_twilio_timestamp_jumps(fake_deepgram: FakeDeepgram) -> None:
    """Twilio may skip silent chunks: Deepgram's stream seconds then differ from the call clock."""
    audio = fixture_audio("beckett")
    segments = speech_segments("beckett")
    cut = 4500 * 8  # in the pause between the 3rd and 4th sentence
    jump = 3000
    stream, events = await started_stream()
    next_ms = await feed(stream, audio[:cut], 0)
    next_ms = await feed(stream, audio[cut:], next_ms + jump)
    await feed(stream, SILENCE * 8 * 1500, next_ms)
    utterances = await events.wait_for(Utterance, len(segments))
    for u, (_, end) in zip(utterances, segments, strict=True):
        expected = end + (jump if end > 4500 else 0)
        assert abs(u.end_ms - expected) <= LABEL_TOLERANCE_MS
    await stream.close()


async def test_keepalive_is_sent_only_while_audio_pauses(fake_deepgram: FakeDeepgram, settings: Any) -> None:
    settings.DEEPGRAM_KEEPALIVE_S = 0.2
    stream, _ = await started_stream()
    # 0.6 s of audio at real-time pace: no KeepAlive needed.
    next_ms = await feed(stream, SILENCE * 8 * 600, 0, pace_s=0.02)
    await wait_until(lambda: fake_deepgram.listen_sessions[0].audio_bytes >= 8 * 600, what="the audio")
    session = fake_deepgram.listen_sessions[0]
    assert "KeepAlive" not in session.client_messages
    await asyncio.sleep(0.75)  # the bot is talking; nothing is forwarded
    await wait_until(lambda: session.client_messages.count("KeepAlive") >= 2, what="KeepAlives")
    assert stream.keepalives_sent >= 2
    await feed(stream, SILENCE * 8 * 100, next_ms)
    await stream.close()


async def test_keepalive_holds_the_socket_past_deepgrams_idle_timeout(
    fake_deepgram: FakeDeepgram, settings: Any
) -> None:
    fake_deepgram.idle_timeout_s = 0.5  # Deepgram: 10 s
    settings.DEEPGRAM_KEEPALIVE_S = 0.15  # Deepgram advice: 3-5 s
    stream, events = await started_stream()
    await asyncio.sleep(1.5)
    assert len(fake_deepgram.listen_sessions) == 1
    assert fake_deepgram.listen_sessions[0].close_code is None
    assert not events.of(TranscriptionGap)
    await stream.close()


async def test_idle_close_net0001_without_keepalive_is_survived_by_reconnecting(
    fake_deepgram: FakeDeepgram, settings: Any
) -> None:
    fake_deepgram.idle_timeout_s = 0.3
    settings.DEEPGRAM_KEEPALIVE_S = 30  # effectively off
    stream, events = await started_stream()
    (gap,) = await events.wait_for(TranscriptionGap)
    assert "1011" in gap.reason and "NET-0001" in gap.reason
    assert gap.gap_ms == 0
    assert fake_deepgram.listen_sessions[0].close_code == 1011
    assert stream.reconnects == 1
    await stream.close()


async def test_a_mid_stream_drop_reconnects_and_no_speech_is_lost(fake_deepgram: FakeDeepgram) -> None:
    """The socket drops 2.5 s in (inside the 2nd sentence). The call goes on: audio not yet
    finalized is re-sent on the new connection, so every sentence still gives an utterance, at its
    place on the call clock."""
    fake_deepgram.drop_after_bytes = 2500 * 8
    segments = speech_segments("beckett")
    audio = fixture_audio("beckett")
    audio += SILENCE * (-len(audio) % FRAME) + SILENCE * 8 * 1500
    origin = 1000
    stream, events = await started_stream()
    await feed(stream, audio, origin)
    utterances = await events.wait_for(Utterance, len(segments))
    await stream.close()  # everything queued is sent before CloseStream
    (gap,) = events.of(TranscriptionGap)
    assert "1011" in gap.reason
    assert gap.gap_ms == 0  # the outage was short: everything was buffered and replayed
    assert stream.reconnects == 1
    first, second = fake_deepgram.listen_sessions
    assert first.close_code == 1011 and first.closed_by == "server"
    for u, (_, end) in zip(utterances, segments, strict=True):
        assert abs(u.end_ms - (origin + end)) <= LABEL_TOLERANCE_MS
    # The gap event came before the utterance that spanned the drop.
    assert events.items.index(gap) < events.items.index(utterances[1])
    # The new socket got exactly the audio from the end of the last final result on the old one
    # (what Deepgram had not finalized) to the end of the call: nothing skipped, nothing twice.
    finalized = max(m["start"] + m["duration"] for m in first.sent("Results") if m["is_final"])
    assert second.audio_bytes == len(audio) - round(finalized * 8000)


async def test_an_outage_longer_than_the_buffer_reports_the_lost_audio(
    fake_deepgram: FakeDeepgram, settings: Any
) -> None:
    settings.DEEPGRAM_STT_BUFFER_MS = 400
    stream, events = await started_stream()
    next_ms = await feed(stream, SILENCE * 8 * 200, 0)
    await wait_until(lambda: fake_deepgram.listen_sessions[0].audio_bytes >= 8 * 200, what="audio")
    fake_deepgram.refuse()
    fake_deepgram.drop_all()
    outage_ms = 1200
    next_ms = await feed(stream, SILENCE * 8 * outage_ms, next_ms, pace_s=0.02 / 4)
    fake_deepgram.accept()
    (gap,) = await events.wait_for(TranscriptionGap)
    # At most 400 ms could wait in the buffer; the rest of the 1.2 s went untranscribed.
    assert outage_ms - 400 - 40 <= gap.gap_ms <= outage_ms
    assert stream.reconnects == 1
    await feed(stream, SILENCE * 8 * 200, next_ms)
    await wait_until(
        lambda: len(fake_deepgram.listen_sessions) == 2 and fake_deepgram.listen_sessions[1].audio_bytes > 0,
        what="audio on the new socket",
    )
    await stream.close()


async def test_stt_gives_up_with_dropped_after_bounded_reconnects(
    fake_deepgram: FakeDeepgram, settings: Any
) -> None:
    settings.DEEPGRAM_RECONNECT_ATTEMPTS = 2
    stream, events = await started_stream()
    fake_deepgram.refuse()
    fake_deepgram.drop_all()
    await wait_until(lambda: events.ended, within=10, what="the stream to fail")
    assert events.error is not None and events.error.kind == "dropped"
    await stream.close()


async def test_a_key_revoked_mid_call_ends_the_stream_with_auth(fake_deepgram: FakeDeepgram) -> None:
    stream, events = await started_stream()
    fake_deepgram.reject_auth = True
    attempts = fake_deepgram.listen_attempts
    fake_deepgram.drop_all()
    await wait_until(lambda: events.ended, what="the stream to fail")
    assert events.error is not None and events.error.kind == "auth"
    assert fake_deepgram.listen_attempts == attempts + 1  # a 401 is not retried
    await stream.close()


async def test_rejected_key_is_an_auth_error_without_retry(fake_deepgram: FakeDeepgram) -> None:
    fake_deepgram.reject_auth = True
    stream = DeepgramSTT().open_stream()
    with pytest.raises(STTError) as caught:
        await stream.start()
    assert caught.value.kind == "auth"
    assert fake_deepgram.listen_attempts == 1
    with pytest.raises(STTError):  # the event stream reports the same failure
        [e async for e in stream.events()]
    await stream.close()


async def test_refused_connection_is_unavailable(fake_deepgram: FakeDeepgram) -> None:
    fake_deepgram.refuse()
    stream = DeepgramSTT().open_stream()
    with pytest.raises(STTError) as caught:
        await stream.start()
    assert caught.value.kind == "unavailable"
    await stream.close()


async def test_slow_handshake_is_a_timeout(fake_deepgram: FakeDeepgram, settings: Any) -> None:
    settings.DEEPGRAM_CONNECT_TIMEOUT_S = 0.3
    fake_deepgram.handshake_delay_s = 3.0
    stream = DeepgramSTT().open_stream()
    with pytest.raises(STTError) as caught:
        await stream.start()
    assert caught.value.kind == "timeout"
    await stream.close()


async def test_close_sends_close_stream_and_delivers_the_last_words(fake_deepgram: FakeDeepgram) -> None:
    """The call ends while the caller is still talking: CloseStream makes Deepgram finalize it."""
    fake_deepgram.transcripts = ["wait I have one more question"]
    stream, events = await started_stream()
    await feed(stream, fixture_audio("clone_test")[: 2500 * 8], 0)  # cut mid-sentence
    await stream.close()
    await asyncio.wait_for(events.task, 1)  # the event stream ended with the close
    (utterance,) = events.of(Utterance)
    assert utterance.text == "wait I have one more question"
    session = fake_deepgram.listen_sessions[0]
    assert session.client_messages[-1] == "CloseStream"
    assert session.audio_bytes == 2500 * 8  # everything queued went out before CloseStream
    assert session.sent("Metadata")
    assert (session.closed_by, session.close_code) == ("server", 1000)
    await stream.close()  # idempotent


async def test_close_is_bounded_when_deepgram_never_answers(fake_deepgram: FakeDeepgram) -> None:
    fake_deepgram.ignore_close_stream = True
    stream, events = await started_stream()
    await feed(stream, SILENCE * 8 * 200, 0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await stream.close()
    assert loop.time() - t0 <= CLOSE_TIMEOUT_S + 1.0
    await asyncio.wait_for(events.task, 1)
    assert events.error is None
    assert fake_deepgram.listen_sessions[0].client_messages[-1] == "CloseStream"

"""The offline STT (pocketsphinx) on REAL recorded speech, cut into utterances by VAD hints.

Hints come from the independent speech labels in ``tests/fixtures/audio/labels.json`` (Silero VAD,
see ``lab/label_onsets.py``), delivered the way the session delivers the barge-in detector's
decisions: the onset hint 40 ms after the labelled onset (the detector decides after 2 frames),
the end hint 500 ms after the labelled end (its end-of-speech silence), each carrying the
labelled time.

Measured here (pocketsphinx 5.1.1, Python 3.11 and 3.13, 2-core VM), ``beckett.ulaw`` (Samuel
Beckett, *Worstward Ho*, read by one adult speaker; 6 labelled utterances):

    reference  ever tried | ever failed | no matter | try again | fail again | fail better
    decoded    that tried | at a trial  | no matter | try again | family and | i'll bet

word accuracy (1 - WER) **0.333** (8 edits for 12 words). The reference text is the quotation,
and it matches what a stronger recogniser makes of this very recording: the moonshine project's
README shows its model transcribing this asset as "Ever tried ever failed, no matter try again
fail again fail better." Confidence: high. Decoding is deterministic (same audio and hints, same
words; ``test_decoding_does_not_depend_on_history_or_concurrency``), so the assertion keeps a
margin of one word of the twelve (0.25) only for a different pocketsphinx or libsoxr build.

``clone_test.ulaw`` (one adult speaker, 4.1 s, one labelled utterance that runs to the end of the
clip, so its last word may be cut): decoded as "i feel and think that and haven't had a very loud
i am new". Its words are NOT known: the moonshine README pairs the clip with the Beckett quotation,
but that does not fit its length and sound at all (under a grammar holding both, pocketsphinx
picks the other sentence), and pocketsphinx's own 16 kHz decode of the original clip reads "i'd
say i think that america do it very well i mean". A best guess is "I'd say I think that America
does it very well, I mean", with LOW confidence, so no accuracy is asserted for it: only that it
yields one approximate utterance at the labelled end.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from media_ws.audio import ulaw_to_pcm16
from media_ws.errors import STTError
from media_ws.providers.base import SpeechStarted, Utterance
from media_ws.providers.offline_stt import DecoderPool, PocketsphinxStream, PocketsphinxSTT

AUDIO = Path(__file__).resolve().parent.parent / "fixtures" / "audio"
BECKETT_REFERENCE = "ever tried ever failed no matter try again fail again fail better"
BECKETT_MEASURED_ACCURACY = 4 / 12  # 0.333, see the module docstring
ONSET_DECISION_MS = 40
END_SILENCE_MS = 500
SILENCE = b"\xff" * 160  # 20 ms of μ-law digital silence


def fixture_ulaw(name: str) -> bytes:
    return (AUDIO / f"{name}.ulaw").read_bytes()


def labelled_utterances(name: str) -> list[tuple[int, int]]:
    labels = json.loads((AUDIO / "labels.json").read_text())
    return [(u["onset_ms"], u["end_ms"]) for u in labels["fixtures"][name]["utterances"]]


def word_accuracy(reference: str, hypothesis: str) -> float:
    """1 - WER: word-level Levenshtein distance (substitutions, insertions, deletions) / reference words."""
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diag, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (r != h))
    return 1 - row[len(hyp)] / len(ref)


def test_word_accuracy_counts_edits() -> None:
    assert word_accuracy("a b c d", "a b c d") == 1.0
    assert word_accuracy("a b c d", "a x c") == 0.5  # one substitution, one deletion
    assert word_accuracy("a b", "a b c d") == 0.0  # two insertions


@pytest.fixture(scope="module")
def stt() -> PocketsphinxSTT:
    return PocketsphinxSTT(max_decodes=2, preroll_ms=300, max_utterance_ms=30_000)


def feed(stream: PocketsphinxStream, audio: bytes, hints: list[tuple[int, bool, int]],
         start_ms: int = 0) -> None:
    """Send ``audio`` in 20 ms frames from ``start_ms``; after the frame at ``at`` ms, give each hint
    ``(at, speaking, audio_ms)``: the order the session uses (audio first, then the VAD's decision)."""
    due: dict[int, list[tuple[bool, int]]] = {}
    for at, speaking, ms in hints:
        due.setdefault(at - at % 20, []).append((speaking, ms))
    for offset in range(0, len(audio), 160):
        ms = start_ms + offset // 8
        stream.send_audio(audio[offset : offset + 160], ms)
        for speaking, hint_ms in due.pop(ms, []):
            stream.caller_speech(speaking, hint_ms)
    assert not due, f"hints after the end of the audio: {due}"


def label_hints(utterances: list[tuple[int, int]]) -> list[tuple[int, bool, int]]:
    hints = []
    for onset, end in utterances:
        hints += [(onset + ONSET_DECISION_MS, True, onset), (end + END_SILENCE_MS, False, end)]
    return hints


async def collect(stream: PocketsphinxStream, n_utterances: int, timeout_s: float = 60) -> list[Any]:
    """Events until ``n_utterances`` utterances arrived, then close the stream."""
    events: list[Any] = []

    async def read() -> None:
        async for event in stream.events():
            events.append(event)
            if sum(isinstance(e, Utterance) for e in events) >= n_utterances:
                return

    try:
        await asyncio.wait_for(read(), timeout_s)
    finally:
        await stream.close()
    return events


async def transcribe(stt: PocketsphinxSTT, name: str, first: int | None = None) -> list[Any]:
    """Stream a fixture with its labelled hints (only its ``first`` utterances when given)."""
    utterances = labelled_utterances(name)[:first]
    audio = fixture_ulaw(name)[: (utterances[-1][1] + END_SILENCE_MS) * 8]
    stream = stt.open_stream()
    await stream.start()
    feed(stream, audio + SILENCE * 50, label_hints(utterances))
    return await collect(stream, len(utterances))


async def test_word_accuracy_on_a_real_reading(stt: PocketsphinxSTT) -> None:
    utterances = labelled_utterances("beckett")
    events = await transcribe(stt, "beckett")
    started = [e for e in events if isinstance(e, SpeechStarted)]
    finals = [e for e in events if isinstance(e, Utterance)]
    assert [e.audio_ms for e in started] == [onset for onset, _ in utterances]
    assert [u.end_ms for u in finals] == [end for _, end in utterances]
    assert all(u.approximate and u.text == u.text.strip() and u.text for u in finals)
    text = " ".join(u.text for u in finals)
    accuracy = word_accuracy(BECKETT_REFERENCE, text)
    assert accuracy >= BECKETT_MEASURED_ACCURACY - 1 / 12, f"{accuracy:.3f}: {text!r}"


async def test_one_sentence_gives_one_approximate_utterance_at_its_end(stt: PocketsphinxSTT) -> None:
    [(onset, end)] = labelled_utterances("clone_test")
    events = await transcribe(stt, "clone_test")
    assert events[0] == SpeechStarted(audio_ms=onset)
    [final] = [e for e in events if isinstance(e, Utterance)]
    assert final.end_ms == end and final.approximate
    assert len(final.text.split()) >= 5  # a whole sentence's worth of words (measured: 13)


async def test_decoding_does_not_depend_on_history_or_concurrency(stt: PocketsphinxSTT) -> None:
    def texts(events: list[Any]) -> list[str]:
        return [e.text for e in events if isinstance(e, Utterance)]

    # Pooled decoders, reused in another order, then two streams decoding at once.
    first = [texts(await transcribe(stt, "clone_test")), texts(await transcribe(stt, "beckett", 3))]
    again = [texts(await transcribe(stt, "beckett", 3)), texts(await transcribe(stt, "clone_test"))]
    together = await asyncio.gather(transcribe(stt, "beckett", 3), transcribe(stt, "clone_test"))
    assert again == first[::-1]
    assert [texts(e) for e in together] == first[::-1]


async def test_an_utterance_without_words_emits_nothing(stt: PocketsphinxSTT) -> None:
    stream = stt.open_stream()
    await stream.start()
    (onset, end), *_ = labelled_utterances("beckett")
    speech = fixture_ulaw("beckett")[: (end + END_SILENCE_MS) * 8]
    # 2 s of digital silence between hints, then the first real phrase of the reading.
    feed(stream, SILENCE * 100, [(600, True, 560), (1800, False, 1500)])
    feed(stream, speech, [(3000 + onset + ONSET_DECISION_MS, True, 3000 + onset),
                          (3000 + end + END_SILENCE_MS, False, 3000 + end)], start_ms=3000)
    events = await collect(stream, 1)
    # Utterances are decoded in order, so the silent one was done before this one arrived.
    assert events == [SpeechStarted(560), SpeechStarted(3000 + onset),
                      Utterance(events[-1].text, end_ms=3000 + end, approximate=True)]


async def test_synthetic_speech_round_trip_gives_an_utterance_at_the_hinted_end(stt: PocketsphinxSTT) -> None:
    """espeak-ng audio through the stream: only the event and its timing are checked, never the
    words (pocketsphinx recognises synthetic speech poorly)."""
    from media_ws.providers.offline_tts import EspeakTTS

    speech = b"".join([c async for c in EspeakTTS().synthesize("Can I talk to a real person, please?")])
    speech_ms = len(speech) // 8
    stream = stt.open_stream()
    await stream.start()
    audio = SILENCE * 25 + speech + SILENCE * 40  # 0.5 s, speech, 0.8 s
    feed(stream, audio, [(540, True, 500), (500 + speech_ms + 500, False, 500 + speech_ms)])
    events = await collect(stream, 1)
    assert events[0] == SpeechStarted(500)
    assert isinstance(events[1], Utterance) and events[1].end_ms == 500 + speech_ms and events[1].approximate


async def test_a_caller_who_never_stops_is_decoded_in_capped_pieces() -> None:
    stt = PocketsphinxSTT(max_decodes=2, max_utterance_ms=2000)
    stream = stt.open_stream()
    await stream.start()
    audio = fixture_ulaw("beckett")[: 8000 * 8]  # 8 s of speech and short pauses, no end hint
    feed(stream, audio, [(40, True, 0)])
    assert stream.utterances_cut == 4
    events = await collect(stream, 3)
    ends = [e.end_ms for e in events if isinstance(e, Utterance)]
    assert ends == sorted(ends) and set(ends) <= {2000, 4000, 6000, 8000} and len(ends) >= 3


async def test_close_keeps_the_callers_last_words(stt: PocketsphinxSTT) -> None:
    """A hang-up mid-sentence: the utterance in progress and those queued are still decoded."""
    stream = stt.open_stream()
    await stream.start()
    utterances = labelled_utterances("beckett")
    hints = label_hints(utterances[:2])
    last_onset = utterances[2][0]
    hints.append((last_onset + ONSET_DECISION_MS, True, last_onset))  # speaking when the call ends
    audio = fixture_ulaw("beckett")[: (utterances[2][1] - 200) * 8]
    feed(stream, audio, hints)
    await stream.close()
    events = [e async for e in stream.events()]
    ends = [e.end_ms for e in events if isinstance(e, Utterance)]
    assert len(ends) == 3 and ends[:2] == [utterances[0][1], utterances[1][1]]
    assert ends[2] == len(audio) // 8  # cut where the audio stopped
    await stream.close()  # twice is fine
    stream.send_audio(SILENCE, 99_000)  # ignored after close
    stream.caller_speech(True, 99_000)
    assert [e async for e in stream.events()] == []
    with pytest.raises(STTError):
        await stream.start()


async def test_close_is_bounded_and_drops_what_is_not_decoded_in_time(stt: PocketsphinxSTT) -> None:
    stream = stt.open_stream()
    await stream.start()
    feed(stream, fixture_ulaw("beckett"), label_hints(labelled_utterances("beckett")[:5]))
    await stream.close(drain_timeout_s=0)
    assert not any(isinstance(e, Utterance) for e in [e async for e in stream.events()])


async def test_hints_from_the_real_barge_in_detector_cut_the_utterances(stt: PocketsphinxSTT) -> None:
    """The session's own wiring: media_ws.vad decides, the stream cuts and decodes."""
    from media_ws.vad import BargeInDetector, SpeechEnd, SpeechOnset

    detector = BargeInDetector()
    stream = stt.open_stream()
    await stream.start()
    audio = fixture_ulaw("beckett") + SILENCE * 50
    ends = []
    for offset in range(0, len(audio) - 159, 160):
        ms = offset // 8
        frame = audio[offset : offset + 160]
        stream.send_audio(frame, ms)
        decision = detector.feed(ulaw_to_pcm16(frame), ms)
        if isinstance(decision, SpeechOnset):
            stream.caller_speech(True, decision.onset_ms)
        elif isinstance(decision, SpeechEnd):
            stream.caller_speech(False, decision.end_ms)
            ends.append(decision.end_ms)
    assert len(ends) >= 2
    # Every cut utterance of this reading holds words, so each end gives one utterance.
    events = await collect(stream, len(ends))
    assert [e.end_ms for e in events if isinstance(e, Utterance)] == ends


def test_a_missing_model_is_an_stt_error_at_construction(monkeypatch: pytest.MonkeyPatch, tmp_path: Any):
    import pocketsphinx

    monkeypatch.setattr(pocketsphinx, "get_model_path", lambda *a: str(tmp_path))
    with pytest.raises(STTError, match="English model is missing"):
        DecoderPool(1).check_model()


async def test_decoding_runs_outside_the_event_loop_process(stt: PocketsphinxSTT) -> None:
    """pocketsphinx holds the GIL while decoding; in a worker process it cannot stall the loop."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    decode = asyncio.ensure_future(stt.pool.decode(fixture_ulaw("beckett")))
    last = loop.time()
    while not decode.done():
        await asyncio.sleep(0.005)
        now = loop.time()
        worst, last = max(worst, now - last), now
    assert (await decode).split()
    # On a thread the same decode stalled this loop for ~490 ms; allow for a busy 2-core machine.
    assert worst < 0.15


def test_settings_configure_the_engine(settings: Any) -> None:
    settings.OFFLINE_STT_PREROLL_MS = 250
    settings.OFFLINE_STT_MAX_UTTERANCE_MS = 20_000
    engine = PocketsphinxSTT(max_decodes=2)
    assert (engine.preroll_ms, engine.max_utterance_ms) == (250, 20_000)
    with pytest.raises(ValueError):
        PocketsphinxSTT(max_decodes=0)

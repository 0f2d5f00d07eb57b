"""The barge-in detector on real caller speech and on the noises a phone line carries.

Speech is the committed real recordings (tests/fixtures/audio/*.ulaw) placed on a call clock; the
reference onsets are the Silero labels in tests/fixtures/audio/labels.json (made offline by
``python -m lab.label_onsets``). Noises come from ``lab.noise`` (seeded, so every run is the same).
Latency is caller audio from the reference onset to the end of the frame the decision was made on.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import webrtcvad

from lab import noise as N
from lab.vad_eval import PlainVadRule, ends, onsets, run, score_audio
from media_ws.vad import BargeInConfig, BargeInDetector, SpeechEnd, SpeechOnset

#: The product's bound: a barge-in is decided within 100 ms of caller audio after speech starts.
ONSET_BOUND_MS = 100
#: Measured at 10 dB SNR with the defaults (white and pink: max 138 ms over 39 onsets; p50 82 ms).
ONSET_BOUND_10DB_MS = 140
#: Measured under 50/60 Hz hum at 20 dB SNR (max 116 / 114 ms over 39 onsets): over hum webrtcvad
#: calls a word's start speech a frame later than over hiss. (The brief's 100 ms bound is for
#: white and pink line noise; hum is held to what was measured.)
ONSET_BOUND_HUM_MS = 120
#: Leads before the first fixture: onsets then fall at different places within the 20 ms frames.
LEADS_MS = (1000, 1006, 1012)
FIXTURES = ("beckett", "clone_test", "beckett")
NOISE_S = 30.0


def _frames(x: np.ndarray) -> list[tuple[bytes, int]]:
    return list(N.call_frames(x))


def _onsets_on(x: np.ndarray, config: BargeInConfig | None = None) -> list[SpeechOnset]:
    return onsets(run(BargeInDetector(config), N.call_frames(x)))


# --- real speech -------------------------------------------------------------------------------
@pytest.mark.parametrize("lead_ms", LEADS_MS)
def test_every_labelled_onset_is_decided_within_100ms_on_clean_speech(lead_ms: int) -> None:
    call = N.speech_call(FIXTURES, lead_ms=lead_ms)
    score = score_audio(BargeInDetector(), call)
    assert len(score.latencies_ms) == 13  # 6 + 1 + 6 labelled utterances
    for onset_ms, latency in zip(call.onsets_ms, score.latencies_ms, strict=True):
        assert latency is not None, f"onset at {onset_ms} ms missed"
        assert latency <= ONSET_BOUND_MS, f"onset at {onset_ms} ms decided after {latency} ms"
    assert score.false_onsets == [] and score.split_onsets == []


@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("lead_ms", LEADS_MS)
def test_onsets_are_decided_within_100ms_under_line_noise_at_20db_snr(kind: str, lead_ms: int) -> None:
    call = N.speech_call(FIXTURES, lead_ms=lead_ms, noise=kind, snr_db=20.0, seed=lead_ms)
    score = score_audio(BargeInDetector(), call)
    for onset_ms, latency in zip(call.onsets_ms, score.latencies_ms, strict=True):
        assert latency is not None, f"onset at {onset_ms} ms missed"
        assert latency <= ONSET_BOUND_MS, f"onset at {onset_ms} ms decided after {latency} ms"
    assert score.false_onsets == []


@pytest.mark.parametrize(
    ("kind", "snr_db", "bound_ms"),
    [
        ("white", 10.0, ONSET_BOUND_10DB_MS),
        ("pink", 10.0, ONSET_BOUND_10DB_MS),
        ("hum50", 20.0, ONSET_BOUND_HUM_MS),
        ("hum60", 20.0, ONSET_BOUND_HUM_MS),
    ],
)
@pytest.mark.parametrize("lead_ms", LEADS_MS)
def test_onsets_are_still_detected_under_heavier_noise_and_hum(
    kind: str, snr_db: float, bound_ms: int, lead_ms: int
) -> None:
    call = N.speech_call(FIXTURES, lead_ms=lead_ms, noise=kind, snr_db=snr_db, seed=lead_ms)
    score = score_audio(BargeInDetector(), call)
    for onset_ms, latency in zip(call.onsets_ms, score.latencies_ms, strict=True):
        assert latency is not None, f"onset at {onset_ms} ms missed"
        assert latency <= bound_ms, f"onset at {onset_ms} ms decided after {latency} ms"
    assert score.false_onsets == []


@pytest.mark.parametrize("noise", [None, "pink"])
def test_speech_end_is_reported_after_each_utterance(noise: str | None) -> None:
    call = N.speech_call(FIXTURES, noise=noise, snr_db=20.0 if noise else None, seed=5)
    events = run(BargeInDetector(), N.call_frames(call.audio))
    # Events alternate onset, end, onset, end ...: one segment per labelled utterance.
    assert [type(e) for e in events] == [SpeechOnset, SpeechEnd] * len(call.onsets_ms)
    for onset, end, ref_onset, ref_end in zip(
        onsets(events), ends(events), call.onsets_ms, call.ends_ms, strict=True
    ):
        assert end.onset_ms == onset.onset_ms
        # The reference end is Silero's, padded by 30 ms and late by its own hangover; the
        # detector's is the end of its last voiced frame (measured: 110–215 ms earlier).
        assert ref_end - 250 <= end.end_ms <= ref_end + 60, (ref_onset, end)
        assert end.end_ms > onset.decided_ms


def test_speech_from_the_very_first_frame_is_detected() -> None:
    # A callee who answers "hello" at once: the first frame is already speech, so the floor must
    # not be taken from it for good.
    x = N.load_fixture("beckett")
    first = N.load_labels()["fixtures"]["beckett"]["utterances"][0]["onset_ms"]
    events = run(BargeInDetector(), N.call_frames(x[first * 8 :]))
    assert isinstance(events[0], SpeechOnset)
    assert events[0].decided_ms <= ONSET_BOUND_MS


def test_speaking_is_true_between_onset_and_end() -> None:
    det = BargeInDetector()
    states = []
    for pcm, ms in N.call_frames(N.speech_call(["clone_test"], lead_ms=500).audio):
        ev = det.feed(pcm, ms)
        if ev is not None:
            states.append((type(ev).__name__, det.speaking))
    assert states == [("SpeechOnset", True), ("SpeechEnd", False)]


def test_reset_forgets_a_speech_segment_in_progress() -> None:
    det = BargeInDetector()
    frames = _frames(N.speech_call(["clone_test"], lead_ms=500).audio)
    events = run(det, frames[:60])  # up to 1.2 s: the utterance (onset 982 ms) is under way
    assert [type(e) for e in events] == [SpeechOnset] and det.speaking
    det.reset()
    assert not det.speaking
    assert det.noise_floor_dbfs == -80.0
    # Fed again from the start it finds the same onset.
    assert run(det, frames[:60]) == events


# --- noise, hum, clicks, tones -----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("level_dbfs", [-60, -45, -35, -30, -25, -20])
def test_no_onset_on_steady_line_noise(kind: str, level_dbfs: int) -> None:
    assert _onsets_on(N.noise_like(kind, NOISE_S, level_dbfs, seed=31)) == []


@pytest.mark.parametrize("kind", ["hum50", "hum60"])
@pytest.mark.parametrize("level_dbfs", [-45, -30, -20])
def test_no_onset_on_mains_hum_present_from_the_first_frame(kind: str, level_dbfs: int) -> None:
    assert _onsets_on(N.noise_like(kind, NOISE_S, level_dbfs, seed=31)) == []


def test_clicks_in_a_pause_do_not_keep_the_speech_segment_open() -> None:
    """Clicks right after an utterance must not hold the segment open and swallow the next onset.

    (Found by the barge-in benchmark: under clicks, 37 of 47 missed onsets were of this kind.)
    """
    first, second = N.load_fixture("clone_test"), N.load_fixture("beckett")[:16000]
    pause = N.clicks(2.0, peak_dbfs=-10.0, per_second=8.0, seed=5)
    x = np.concatenate([np.zeros(8000), first, pause, second])
    second_start_ms = (8000 + len(first) + len(pause)) // 8
    first_phrase = N.load_labels()["fixtures"]["beckett"]["utterances"][0]["onset_ms"]
    events = run(BargeInDetector(), N.call_frames(x))
    # The segment of the first utterance ends during the clicks ...
    assert ends(events)[0].end_ms < second_start_ms
    # ... so the first phrase after them is a new onset, decided within the bound.
    truth = second_start_ms + first_phrase
    assert any(0 <= o.decided_ms - truth <= ONSET_BOUND_MS for o in onsets(events))


@pytest.mark.parametrize(
    ("peak_dbfs", "per_second", "background_dbfs"),
    [(-10.0, 3.0, None), (-3.0, 8.0, None), (-20.0, 5.0, -45.0)],
)
def test_no_onset_on_clicks(peak_dbfs: float, per_second: float, background_dbfs: float | None) -> None:
    bg = None if background_dbfs is None else N.pink_noise(NOISE_S, background_dbfs, seed=32)
    x = N.clicks(NOISE_S, peak_dbfs, per_second, seed=32, background=bg)
    assert _onsets_on(x) == []


@pytest.mark.parametrize(
    ("tone_dbfs", "noise_kind", "noise_dbfs"),
    [(-10.0, None, None), (-3.0, None, None), (-10.0, "white", -45.0), (-25.0, "pink", -40.0)],
)
def test_no_onset_on_dtmf_digit_sequences(
    tone_dbfs: float, noise_kind: str | None, noise_dbfs: float | None
) -> None:
    # Random digits, tones 40–200 ms, gaps 40–400 ms (ITU-T Q.24 receivers accept >= 40 ms).
    x = N.dtmf_sequence(NOISE_S, tone_dbfs, seed=33)
    if noise_kind is not None:
        x = x + N.noise_like(noise_kind, NOISE_S, noise_dbfs, seed=33)
    assert _onsets_on(x) == []


@pytest.mark.parametrize(("tone_ms", "gap_ms"), [(40, 40), (45, 45), (65, 45)])
def test_no_onset_on_fast_dialling(tone_ms: int, gap_ms: int) -> None:
    # Auto-dialler speed, near the Q.24 minimum of 40 ms tone / 40 ms pause; the 5 ms lead puts
    # tone edges inside frames (without the DTMF check, 45/45 and 65/45 each start a segment).
    x = N.dtmf("0123456789*#ABCD" * 4, -6.0, tone_ms=tone_ms, gap_ms=gap_ms, lead_ms=5)
    assert _onsets_on(x) == []


@pytest.mark.parametrize("level_dbfs", [None, -75.0])
def test_no_onset_on_silence(level_dbfs: float | None) -> None:
    x = np.zeros(int(NOISE_S * N.RATE)) if level_dbfs is None else N.white_noise(NOISE_S, level_dbfs, seed=34)
    assert _onsets_on(x) == []


def test_digital_silence_dropouts_do_not_open_the_gate_in_loud_noise() -> None:
    x = N.pink_noise(NOISE_S, -25.0, seed=35)
    for start_s in np.arange(2.0, NOISE_S, 3.0):  # 100 ms of digital silence every 3 s
        x[int(start_s * N.RATE) : int((start_s + 0.1) * N.RATE)] = 0.0
    assert _onsets_on(x) == []


def test_noise_floor_follows_the_line_noise_level() -> None:
    det = BargeInDetector()
    run(det, N.call_frames(N.white_noise(5.0, -30.0, seed=36)))
    assert -33.0 <= det.noise_floor_dbfs <= -30.0


def test_noise_that_starts_mid_call_barges_in_at_most_once() -> None:
    # A documented limit: a loud noise that appears mid-call is a new sound until the floor (the
    # quietest frame of the last 1.5 s) has caught up with it; after that it is absorbed.
    x = np.concatenate([np.zeros(2 * N.RATE), N.pink_noise(20.0, -30.0, seed=37)])
    events = run(BargeInDetector(), N.call_frames(x))
    assert len(onsets(events)) <= 1
    if events:
        assert isinstance(events[-1], SpeechEnd) and events[-1].end_ms <= 2000 + 1500 + 100


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_plain_webrtcvad_with_an_n_frame_rule_fires_on_loud_steady_noise(mode: int) -> None:
    # Proof that the noise tests can fail: without the gate, webrtcvad calls loud steady noise
    # speech on nearly every frame and a 3-frame rule barges in within the first second.
    x = N.white_noise(NOISE_S, -25.0, seed=38)
    frames = _frames(x)
    vad = webrtcvad.Vad(mode)
    voiced = sum(vad.is_speech(pcm, 8000) for pcm, _ in frames) / len(frames)
    assert voiced > 0.95
    plain = onsets(run(PlainVadRule(mode, frames=3), frames))
    assert plain and plain[0].decided_ms <= 1000
    assert onsets(run(BargeInDetector(BargeInConfig(vad_mode=mode)), frames)) == []


def test_babble_is_heard_as_speech() -> None:
    # Decided and documented: babble (several real voices) is speech, and neither webrtcvad nor a
    # noise floor can tell a room of voices from the caller, so a loud babble bed starts a speech
    # segment (and keeps it open). Only steady noise, hum, clicks and DTMF are rejected.
    sources = [N.load_fixture("beckett"), N.load_fixture("clone_test")]
    x = N.babble(sources, 10.0, -30.0, talkers=6, seed=39)
    assert len(_onsets_on(x)) >= 1


# --- input and configuration -------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 160, 319, 321, 480])
def test_a_frame_that_is_not_320_bytes_of_pcm16_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="320 bytes"):
        BargeInDetector().feed(bytes(size), 0)


def test_settings_barge_in_holds_exactly_the_config_fields_at_their_defaults() -> None:
    from django.conf import settings

    assert set(settings.BARGE_IN) == {f.name.upper() for f in fields(BargeInConfig)}
    assert BargeInConfig.from_mapping(settings.BARGE_IN) == BargeInConfig()


def test_from_mapping_reads_upper_snake_keys() -> None:
    cfg = BargeInConfig.from_mapping({"VAD_MODE": 3, "MIN_SNR_DB": 8, "END_SILENCE_MS": 700})
    assert (cfg.vad_mode, cfg.min_snr_db, cfg.end_silence_ms) == (3, 8, 700)
    assert cfg.onset_frames == BargeInConfig().onset_frames


def test_from_mapping_refuses_an_unknown_key() -> None:
    with pytest.raises(ValueError, match="VAD_AGGRESSIVENESS"):
        BargeInConfig.from_mapping({"VAD_AGGRESSIVENESS": 2})


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"VAD_MODE": 4}, "vad_mode must be between 0 and 3"),
        ({"VAD_MODE": True}, "vad_mode must be an integer"),
        ({"ONSET_FRAMES": 0}, "onset_frames must be between"),
        ({"ONSET_FRAMES": 3, "ONSET_WINDOW_FRAMES": 2}, "must be >= onset_frames"),
        ({"ONSET_VOICED_FRAMES": 3}, "must be <= onset_frames"),
        ({"MIN_SNR_DB": "9"}, "min_snr_db must be a finite number"),
        ({"MIN_SNR_DB": math.nan}, "min_snr_db must be a finite number"),
        ({"MIN_SNR_DB": -1.0}, "min_snr_db must be >= 0"),
        ({"RISE_SNR_DB": 7.0}, "rise_snr_db .* must be <= min_snr_db"),
        ({"MIN_LEVEL_DBFS": 3.0}, "min_level_dbfs"),
        ({"END_SILENCE_MS": 10}, "end_silence_ms must be between 20"),
        ({"NOISE_FLOOR_WINDOW_MS": 60}, "noise_floor_window_ms"),
        ({"CLICK_ENERGY_RATIO": 0.0}, "click_energy_ratio must be > 0"),
        ({"TONE_ENERGY_RATIO": 1.5}, "tone_energy_ratio"),
    ],
)
def test_invalid_settings_are_refused_with_the_reason(values: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        BargeInConfig.from_mapping(values)


def test_the_detector_module_does_not_import_django() -> None:
    root = Path(__file__).resolve().parents[2]
    code = "import sys, media_ws.vad; sys.exit('django' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0

"""The scenario format: the shipped scenarios, validation errors that name file, step and field,
recordings (μ-law and WAV), and how a callee is chosen."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from calls.emulator.scenario import (
    BUILTIN_RECORDINGS,
    ScenarioError,
    available_scenarios,
    load_scenario,
    parse_scenario_file,
    scenario_for_number,
)
from media_ws.audio import ulaw_to_pcm16

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "audio"
SHIPPED = ["asks-for-person", "default", "interrupts-greeting", "says-goodbye", "stays-silent"]


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def error_of(folder: Path, text: str) -> str:
    path = write(folder, "bad", text)
    with pytest.raises(ScenarioError) as info:
        parse_scenario_file(path)
    return str(info.value)


def test_the_shipped_scenarios_parse_and_have_distinct_numbers():
    assert available_scenarios() == SHIPPED
    numbers = {load_scenario(name).number for name in SHIPPED}
    assert len(numbers) == len(SHIPPED) and "" not in numbers


def test_the_default_scenario_barges_in_on_the_greeting_then_presses_pound():
    scenario = load_scenario("default")
    first, *_, last = scenario.steps
    assert (first.trigger, first.trigger_ms, first.action) == ("after_bot_starts_ms", 1200, "say")
    assert (last.action, last.digits) == ("dtmf", "#")
    assert len(first.audio) == (first.clip[1] - first.clip[0]) * 8


def test_stays_silent_never_speaks():
    assert load_scenario("stays-silent").steps == ()


def test_recordings_are_the_committed_real_speech_fixtures():
    for name in ("beckett", "clone_test"):
        assert (BUILTIN_RECORDINGS / f"{name}.ulaw").read_bytes() == (FIXTURES / f"{name}.ulaw").read_bytes()


def test_a_clip_is_cut_from_the_recording_at_8_bytes_per_ms(tmp_path):
    path = write(tmp_path, "clip", '[[steps]]\nsay = "beckett"\nfrom_ms = 7900\nto_ms = 9200\n')
    step = parse_scenario_file(path).steps[0]
    beckett = (BUILTIN_RECORDINGS / "beckett.ulaw").read_bytes()
    assert step.audio == beckett[7900 * 8 : 9200 * 8]
    assert (step.trigger, step.recording, step.clip) == (None, "beckett", (7900, 9200))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("descripton = 'x'\n", "bad.toml: unknown field 'descripton'"),
        ("number = '+1 555'\n", "bad.toml: number:"),
        ("max_duration_s = 0\n", "bad.toml: max_duration_s: must be a number of seconds from 1 to 3600"),
        ("steps = 3\n", "bad.toml: steps: must be an array of tables"),
        ("[[steps]]\nsay = 'beckett'\nsay_ms = 3\n", "bad.toml: step 1: unknown field 'say_ms'"),
        ("[[steps]]\nhangup = true\n[[steps]]\nat_ms = 5\n", "bad.toml: step 2: needs an action"),
        ("[[steps]]\nat_ms = 1\nafter_bot_stops_ms = 2\nhangup = true\n",
         "bad.toml: step 1: after_bot_stops_ms: a step has at most one trigger, and at_ms is set"),
        ("[[steps]]\nsay = 'beckett'\ndtmf = '1'\n",
         "bad.toml: step 1: dtmf: a step has one action, and say is set"),
        ("[[steps]]\nat_ms = -5\nhangup = true\n",
         "bad.toml: step 1: at_ms: must be a whole number of ms >= 0"),
        ("[[steps]]\nat_ms = 1.5\nhangup = true\n", "bad.toml: step 1: at_ms: must be a whole number of ms"),
        ("[[steps]]\nsay = 'nobody'\n",
         "bad.toml: step 1: say: no recording named 'nobody' (available: beckett,"),
        ("[[steps]]\nsay = '../secret'\n", "bad.toml: step 1: say: must be a recording name"),
        ("[[steps]]\nsay = 'clone_test'\nto_ms = 5000\n",
         "bad.toml: step 1: to_ms: 5000 is past the end of 'clone_test' (4109 ms)"),
        ("[[steps]]\nsay = 'clone_test'\nfrom_ms = 300\nto_ms = 300\n",
         "bad.toml: step 1: from_ms: 300 must be before to_ms (300)"),
        ("[[steps]]\ndtmf = '0'\nfrom_ms = 3\n", "bad.toml: step 1: from_ms: only a 'say' step has a clip"),
        ("[[steps]]\ndtmf = '12x'\n", "bad.toml: step 1: dtmf: must be a string of keypad digits"),
        ("[[steps]]\nhangup = false\n", "bad.toml: step 1: hangup: must be true"),
        ("[[steps]]\nsilence_ms = 'long'\n", "bad.toml: step 1: silence_ms: must be a whole number of ms"),
        ("[[steps]]\ntimeout_ms = 0\nhangup = true\n", "bad.toml: step 1: timeout_ms: must be at least 1"),
        ("[[steps]\n", "bad.toml: not valid TOML"),
    ],
)
def test_validation_errors_name_the_file_step_and_field(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    assert str(tmp_path / "bad.toml") in message
    assert expected in message


def test_digits_may_be_written_as_a_number(tmp_path):
    step = parse_scenario_file(write(tmp_path, "n", "[[steps]]\ndtmf = 12\n")).steps[0]
    assert step.digits == "12"


def test_unknown_and_malformed_names_are_refused_with_the_list_of_scenarios():
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'; available: asks-for-person, default"):
        load_scenario("nope")
    with pytest.raises(ScenarioError, match="is not a scenario name"):
        load_scenario("../calls/emulator/scenarios/default")


def test_extra_scenario_folders_come_first_and_bring_their_own_recordings(tmp_path, settings):
    folder = tmp_path / "mine"
    (folder / "recordings").mkdir(parents=True)
    tone = (np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) * 8000).astype("<i2")
    with wave.open(str(folder / "recordings" / "tone.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(tone.tobytes())
    write(folder, "default", 'number = "+15005550177"\n[[steps]]\nsay = "tone"\n[[steps]]\nsay = "beckett"\n')
    settings.EMULATOR_SCENARIO_DIRS = [str(folder)]
    scenario = load_scenario("default")
    assert scenario.path == folder / "default.toml"
    audio = scenario.steps[0].audio
    assert len(audio) == 8000  # 1 s of 16 kHz WAV, resampled to 8 kHz μ-law
    pcm = np.frombuffer(ulaw_to_pcm16(audio), dtype="<i2").astype(float)
    assert 4000 < np.sqrt(np.mean(pcm[400:-400] ** 2)) < 7000  # the 8000-peak sine survived (RMS ≈ 5657)
    assert len(scenario.steps[1].audio) > 0  # built-in recordings are still found
    assert scenario_for_number("+15005550177") == "default"
    assert scenario_for_number("+15005550102") == "asks-for-person"
    assert scenario_for_number("+15005550999") is None


def test_a_wav_recording_must_be_mono_16_bit(tmp_path):
    folder = tmp_path / "s"
    (folder / "recordings").mkdir(parents=True)
    with wave.open(str(folder / "recordings" / "stereo.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0\0\0" * 100)
    message = error_of(folder, "[[steps]]\nsay = 'stereo'\n")
    assert "step 1: say:" in message and "must be mono 16-bit PCM" in message

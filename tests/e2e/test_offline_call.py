"""End to end through a real Daphne on 127.0.0.1: the product's main job, offline.

``POST /calls/outbound`` on the server → its emulated Twilio rings the default scripted callee (real
recorded speech) → signed status callbacks and a signed ``<Connect><Stream>`` WebSocket back into
the same server → the callee barges in on the greeting, hears the answer, says goodbye and presses
# → the bot ends the call. Then the stored call is checked as the admin and the API show it.
On PostgreSQL when the suite runs on it (CI sets ``DATABASE_URL``), else on the SQLite test file.
"""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from django.core.management import call_command

from calls.emulator import live
from calls.emulator.scenario import Step, load_scenario
from calls.models import Call, CallStatus, EndReason, EventKind, TurnRole
from media_ws.audio import ulaw_to_pcm16
from tests.e2e.conftest import AUTH_TOKEN, DaphneServer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

#: The barge-in detector's bound on this audio (mission: detection within 100 ms of caller audio).
DETECTION_BOUND_MS = 100
#: Speech onsets of the caller fixtures, labelled by a reference VAD (lab/label_onsets.py).
LABELS = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "labels.json"


@pytest.fixture
def token(django_user_model: Any) -> str:
    from rest_framework.authtoken.models import Token

    return str(Token.objects.create(user=django_user_model.objects.create_user("e2e")).key)


def words_prefix(heard: str, said: str) -> bool:
    h, s = heard.split(), said.split()
    return 0 < len(h) < len(s) and s[: len(h)] == h


def labelled_onset_in_clip(step: Step) -> int:
    """Where speech starts in a ``say`` step's clip, ms from the clip's start: the labelled onset of
    the first utterance of its recording that is still going at ``from_ms``."""
    start, _ = step.clip
    utterances = json.loads(LABELS.read_text())["fixtures"][step.recording]["utterances"]
    onset = next(u["onset_ms"] for u in utterances if u["end_ms"] > start)
    return max(onset, start) - start


def clip_start_ms(data: bytes, clip_ulaw: bytes) -> int:
    """Where ``clip_ulaw`` starts in the caller's (left) channel of a stereo 8 kHz recording, ms.
    The emulator sends line silence (μ-law 0xFF, PCM 0) while the callee says nothing, so the first
    non-zero sample belongs to the clip; the whole clip must be there, sample for sample."""
    with wave.open(io.BytesIO(data), "rb") as w:
        left = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)[:, 0]
    clip = np.frombuffer(ulaw_to_pcm16(clip_ulaw), dtype="<i2")
    start = int(np.flatnonzero(left)[0]) - int(np.flatnonzero(clip)[0])
    assert start >= 0 and np.array_equal(left[start : start + len(clip)], clip)
    return start // 8


def stereo_levels(data: bytes, windows: list[tuple[int, int]]) -> list[tuple[float, float]]:
    """(left, right) RMS in dBFS of a stereo 8 kHz WAV over each (start_ms, end_ms)."""
    with wave.open(io.BytesIO(data), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2).astype(float)

    def db(part: np.ndarray) -> float:
        return 20 * np.log10(max(1e-9, float(np.sqrt(np.mean(part**2)))) / 32768)

    return [(db(x[a * 8 : b * 8, 0]), db(x[a * 8 : b * 8, 1])) for a, b in windows]


def test_an_outbound_call_through_the_api_barges_in_and_is_logged_completely(
    daphne_server: DaphneServer, token: str
):
    http = httpx.Client(base_url=daphne_server.base_url, headers={"Authorization": f"Token {token}"},
                        timeout=10, trust_env=False)
    response = http.post("/calls/outbound", json={"to": "+15005550100", "metadata": {"scenario": "default"}})
    assert response.status_code == 201, response.text
    sid = response.json()["call_sid"]

    printed: list[str] = []
    try:
        snapshot = live.follow(lambda: http.get(f"/calls/{sid}").json(), printed.append, timeout_s=90)
    except TimeoutError:
        pytest.fail("the call did not end:\n" + "\n".join(printed) + "\n" + daphne_server.log_tail())
    assert snapshot["status"] == "completed", daphne_server.log_tail()

    call = Call.objects.get(call_sid=sid)
    assert call.status == CallStatus.COMPLETED and call.end_reason == EndReason.BOT_HANGUP
    assert call.duration_s is not None and 10 <= call.duration_s <= 60

    # The carrier's side: signed callbacks accepted in order (the server checks X-Twilio-Signature).
    statuses = [e.data["CallStatus"] for e in call.events.filter(kind=EventKind.STATUS).order_by("at", "id")]
    assert statuses == ["initiated", "ringing", "in-progress", "completed"]
    (start,) = call.events.filter(kind=EventKind.STREAM_START)
    assert start.data["custom_parameters"] == {"call_id": str(call.id)}

    # The transcript: caller and bot turns; the greeting cut to what was heard.
    turns = list(call.turns.order_by("index"))
    assert {t.role for t in turns} == {TurnRole.CALLER, TurnRole.BOT}
    greeting = turns[0]
    assert greeting.role == TurnRole.BOT and greeting.interrupted
    assert words_prefix(greeting.heard_text, greeting.text), (greeting.heard_text, greeting.text)
    caller_words = [t for t in turns if t.role == TurnRole.CALLER and t.approximate and t.text]
    assert caller_words, "the offline STT transcribed none of the caller's real speech"
    assert any(t.voice_to_voice_ms is not None for t in turns if t.role == TurnRole.BOT)
    assert turns[-1].role == TurnRole.BOT and turns[-1].text == "Thank you for calling. Goodbye!"
    assert not turns[-1].interrupted

    # The barge-in on the greeting: caller speech, decided within the bound of its true onset: where
    # the caller's clip starts in the recording plus the labelled onset inside the clip.
    barge_in = call.events.filter(kind=EventKind.BARGE_IN).order_by("at", "id").first()
    assert barge_in is not None and barge_in.data["cause"] == "speech"
    path = daphne_server.media_root / "recordings" / f"{sid}.wav"
    data = path.read_bytes()
    step = load_scenario("default").steps[0]
    true_onset = clip_start_ms(data, step.audio) + labelled_onset_in_clip(step)
    decided = barge_in.data["decided_ms"]
    assert 0 <= decided - true_onset <= DETECTION_BOUND_MS, (decided, true_onset, barge_in.data)
    assert barge_in.data["heard_text"] == greeting.heard_text
    assert [e.data["digit"] for e in call.events.filter(kind=EventKind.DTMF)] == ["#"]

    # The recording: a stereo WAV, caller on the left from the barge-in on, the greeting on the right.
    assert call.recording.name == f"recordings/{sid}.wav" and path.is_file()
    onset = barge_in.data["onset_ms"]
    (before, during) = stereo_levels(data, [(200, onset - 100), (onset + 100, onset + 2000)])
    assert before[0] < -80 and before[1] > -40  # the bot greets, the caller listens
    assert during[0] > -40 and during[1] < -80  # the caller speaks, the cleared greeting is gone
    served = http.get(f"/calls/{sid}/recording")
    assert served.status_code == 200 and served.headers["content-type"] in ("audio/x-wav", "audio/wav")
    assert served.content == data

    # What the live output showed.
    text = "\n".join(printed)
    assert "⚡  barge-in: caller speech detected" in text and "✂  interrupted" in text
    assert "⌨  caller pressed #" in text and "⏱  STT final +" in text
    summary = "\n".join(live.summary_lines(snapshot, recording_path=str(path)))
    assert f"detected in {barge_in.data['detection_latency_ms']} ms" in summary and str(path) in summary


@pytest.fixture
def shell_settings(daphne_server: DaphneServer, settings, tmp_path: Path) -> Any:
    """This process as a shell next to the server: the same carrier, token and public URL."""
    settings.CARRIER = "emulator"
    settings.PUBLIC_BASE_URL = daphne_server.base_url
    settings.TWILIO_AUTH_TOKEN = AUTH_TOKEN
    settings.TWILIO_ACCOUNT_SID = ""
    settings.TWILIO_FROM_NUMBER = "+15005550006"
    settings.DIAL_ALLOWED_DESTINATIONS = []
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.EMULATOR_ANSWER_AFTER_MS = 300
    settings.EMULATOR_SCENARIO_DIRS = []
    return settings


def test_place_call_places_through_the_server_so_its_transfer_reaches_the_call(
    daphne_server: DaphneServer, shell_settings
):
    out = io.StringIO()
    call_command("place_call", "--scenario", "asks-for-person", "--timeout", "60", stdout=out)
    text = out.getvalue()
    call = Call.objects.get()
    assert call.created_by is not None and call.created_by.username == "demo"  # through the API
    assert (f"Calling +15005550102 from +15005550006 via emulator: {call.call_sid} "
            f"(callee scenario: asks-for-person; placed by the server") in text
    # The bot's transfer went through the server's carrier to the emulated call, which dialed.
    assert call.transfer_to == "+15005550199" and call.end_reason == EndReason.TRANSFERRED, text
    assert call.status == CallStatus.COMPLETED
    assert not call.events.filter(kind=EventKind.ERROR).exists()
    assert "↪  transferred to +15005550199" in text and "Summary" in text
    assert (daphne_server.media_root / "recordings" / f"{call.call_sid}.wav").is_file()
    assert f"/admin/calls/call/{call.pk}/change/" in text


def test_place_call_in_process_runs_the_callee_in_the_shell_against_the_server(
    daphne_server: DaphneServer, shell_settings
):
    out = io.StringIO()
    call_command("place_call", "--in-process", "--scenario", "interrupts-greeting", "--timeout", "60",
                 stdout=out)
    text = out.getvalue()
    call = Call.objects.get()
    assert call.created_by is None  # placed here, not through the API
    assert f"Calling +15005550101 from +15005550006 via emulator: {call.call_sid}" in text
    assert "placed by the server" not in text
    assert "⚡  barge-in: caller speech detected" in text and "Summary" in text
    assert call.status == CallStatus.COMPLETED and call.end_reason == EndReason.CALLER_HANGUP
    recording = Path(shell_settings.MEDIA_ROOT) / "recordings" / f"{call.call_sid}.wav"
    assert recording.is_file() and str(recording) in text
    assert f"/admin/calls/call/{call.pk}/change/" in text

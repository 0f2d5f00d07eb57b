"""The live output of ``manage.py demo`` / ``place_call``, fed with real ``GET /calls/<sid>`` snapshots."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from calls.emulator import live
from calls.management.commands.place_call import call_snapshot
from calls.models import Call, CallEvent, CallStatus, EventKind, Turn, TurnRole

pytestmark = pytest.mark.django_db

GREETING = "Hello! This is the clinic calling about your appointment tomorrow."


def make_call() -> Call:
    return Call.objects.create(call_sid="CA" + "a" * 32, status=CallStatus.IN_PROGRESS, carrier="emulator",
                               from_number="+15005550006", to_number="+15005550100")


def event(call: Call, kind: str, audio_ms: int | None, **data: object) -> None:
    CallEvent.objects.create(call=call, kind=kind, at=timezone.now(), audio_ms=audio_ms, data=data)


def test_turns_and_barge_ins_are_printed_once_as_they_appear():
    call = make_call()
    lines: list[str] = []
    printer = live.CallPrinter(lines.append)
    greeting = Turn.objects.create(call=call, index=0, role=TurnRole.BOT, text=GREETING, first_audio_ms=40,
                                   audio_start_ms=40)
    printer.update(call_snapshot(call.call_sid))
    assert lines == ["          ☎  status in-progress", f"   0.0 s  bot     “{GREETING}”"]

    Turn.objects.filter(pk=greeting.pk).update(heard_text="Hello! This is", interrupted=True,
                                               ended_at=timezone.now(), audio_end_ms=1441)
    event(call, EventKind.BARGE_IN, 1440, cause="speech", onset_ms=1400, decided_ms=1440,
          detection_latency_ms=40, clear_send_ms=0.05, cleared_marks=12)
    Turn.objects.create(call=call, index=1, role=TurnRole.CALLER, text="ever tried", approximate=True,
                        audio_start_ms=1400, audio_end_ms=2300)
    Turn.objects.create(call=call, index=2, role=TurnRole.BOT, text="Sorry, I didn't catch that.",
                        speech_end_ms=2300, stt_final_ms=3300, llm_first_token_ms=3301,
                        tts_first_byte_ms=3310, first_audio_ms=3312, voice_to_voice_ms=1012,
                        audio_start_ms=3312)
    del lines[:]
    printer.update(call_snapshot(call.call_sid))
    assert lines == [
        "   1.4 s  caller  “ever tried”  (offline STT, approximate)",
        "   1.4 s  ⚡  barge-in: caller speech detected 40 ms after its onset; "
        "clear sent in 0.05 ms, 12 marks cleared",
        "                  ✂  interrupted; the caller heard “Hello! This is”",  # after what cut it
        "   3.3 s  bot     “Sorry, I didn't catch that.”",
        "                  ⏱  STT final +1000 ms · LLM first token +1001 ms · TTS first byte +1010 ms · "
        "first audio +1012 ms · voice-to-voice 1012 ms",
    ]

    del lines[:]
    printer.update(call_snapshot(call.call_sid))
    assert lines == []  # nothing new, nothing printed again


def test_a_cut_without_a_stored_audio_end_follows_the_barge_in_that_caused_it():
    call = make_call()
    lines: list[str] = []
    printer = live.CallPrinter(lines.append)
    Turn.objects.create(call=call, index=0, role=TurnRole.BOT, text=GREETING, first_audio_ms=40)
    Turn.objects.create(call=call, index=1, role=TurnRole.BOT, text="Sorry, I didn't catch that.",
                        first_audio_ms=18800, heard_text="Sorry, I", interrupted=True,
                        ended_at=timezone.now())
    event(call, EventKind.DTMF, 19600, digit="#")
    event(call, EventKind.BARGE_IN, 19600, cause="dtmf", clear_send_ms=0.12, cleared_marks=53)
    printer.update(call_snapshot(call.call_sid))
    assert lines[-4:] == [
        "  18.8 s  bot     “Sorry, I didn't catch that.”",
        "  19.6 s  ⌨  caller pressed #",
        "  19.6 s  ⚡  barge-in: a key press; clear sent in 0.12 ms, 53 marks cleared",
        "                  ✂  interrupted; the caller heard “Sorry, I”",
    ]


def test_a_call_is_finished_once_the_emulators_final_callback_is_in():
    call = make_call()
    Call.objects.filter(pk=call.pk).update(status=CallStatus.COMPLETED, end_reason="bot-hangup")
    snapshot = call_snapshot(call.call_sid)
    assert not live.call_finished(snapshot)  # the session said so; the carrier has not yet
    event(call, EventKind.STATUS, None, CallStatus="completed", CallDuration="21", applied=False)
    assert live.call_finished(call_snapshot(call.call_sid))


def test_follow_gives_up_with_a_clear_error_when_the_call_never_ends():
    call = make_call()
    with pytest.raises(TimeoutError, match=r"not over within 0 s \(status in-progress\)"):
        live.follow(lambda: call_snapshot(call.call_sid), lambda _: None, timeout_s=0.2, poll_s=0.05)


def test_the_summary_gives_duration_turns_barge_ins_recording_and_admin():
    call = make_call()
    Call.objects.filter(pk=call.pk).update(
        status=CallStatus.COMPLETED, duration_s=21, end_reason="bot-hangup",
        ended_at=timezone.now() + timedelta(seconds=21),
    )
    Turn.objects.create(call=call, index=0, role=TurnRole.BOT, text=GREETING)
    Turn.objects.create(call=call, index=1, role=TurnRole.CALLER, text="bye")
    Turn.objects.create(call=call, index=2, role=TurnRole.BOT, text="Goodbye!", voice_to_voice_ms=950)
    event(call, EventKind.BARGE_IN, 1440, cause="speech", detection_latency_ms=40, clear_send_ms=0.05)
    event(call, EventKind.BARGE_IN, 19300, cause="dtmf", clear_send_ms=0.07)
    lines = live.summary_lines(call_snapshot(call.call_sid), recording_path="/tmp/x.wav",
                               admin_url="http://127.0.0.1:8000/admin/calls/call/1/change/")
    text = "\n".join(lines)
    assert f"{call.call_sid} to +15005550100: completed, end reason bot-hangup" in text
    assert "duration      21 s" in text and "turns         3 (1 caller, 2 bot)" in text
    assert "at 1.4 s: caller speech, detected in 40 ms; clear sent in 0.05 ms" in text
    assert "at 19.3 s: key press; clear sent in 0.07 ms" in text
    assert "voice-to-voice 950 ms" in text
    assert "/tmp/x.wav (stereo WAV: left the caller, right the bot)" in text
    assert "admin         http://127.0.0.1:8000/admin/calls/call/1/change/" in text

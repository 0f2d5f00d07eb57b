"""The live call through the real ASGI app: /media-stream driven exactly as Twilio drives it.

Twilio's side is the emulated stream (``calls.emulator.stream``): real-time 20 ms media frames,
the bot's audio played out on a real-time clock, marks echoed when played, ``clear`` honoured.
Caller audio is real recorded speech. Engines are the offline ones (no keys are set in tests).
"""

from __future__ import annotations

import json

import pytest
from channels.testing import WebsocketCommunicator
from twilio.request_validator import RequestValidator

from calls.emulator.stream import EmulatedMediaStream
from calls.models import Call, CallEvent, EventKind, Turn
from media_ws.protocol import TwilioStreamWriter
from tests.live.conftest import db, fixture_audio, labelled_onsets, mark_generation, twilio_stream

pytestmark = pytest.mark.django_db(transaction=True)

#: The barge-in bound the product promises: the decision within 100 ms of caller audio after the
#: true speech onset.
BOUND_MS = 100


def call_rows(call_sid: str) -> tuple[Call, list[Turn], list[CallEvent]]:
    call = Call.objects.get(call_sid=call_sid)
    return call, list(call.turns.order_by("index")), list(call.events.order_by("at", "id"))


async def barge_in_during_greeting(stream: EmulatedMediaStream, after_ms: int = 1200) -> tuple[int, int]:
    """Let the greeting play ``after_ms``, then speak; returns (speech start, true onset) call-clock ms."""
    started = await stream.wait_bot_speaking(timeout_s=15)
    await stream.wait_clock(started + after_ms)
    speech_start = stream.clock_ms
    stream.say(fixture_audio("clone_test"))
    true_onset = speech_start + labelled_onsets("clone_test")[0][0]
    return speech_start, true_onset


# --- handshake ------------------------------------------------------------------------------------


async def test_handshake_signed_by_twilio_is_accepted(settings):
    settings.TWILIO_AUTH_TOKEN = "test-token-123"
    settings.PUBLIC_BASE_URL = "https://voice.example.com"
    signature = RequestValidator("test-token-123").compute_signature(
        "wss://voice.example.com/media-stream", {}
    )
    async with twilio_stream(headers=[(b"x-twilio-signature", signature.encode())]) as stream:
        await stream.wait_bot_speaking(timeout_s=15)


@pytest.mark.parametrize("signature", [None, "forged/AAAAAAAAAAAAAAAAAAAAAAAAAA=", "signed-for-another-url"])
async def test_handshake_without_a_valid_signature_is_refused_before_accept(settings, signature):
    settings.TWILIO_AUTH_TOKEN = "test-token-123"
    settings.PUBLIC_BASE_URL = "https://voice.example.com"
    if signature == "signed-for-another-url":
        signature = RequestValidator("test-token-123").compute_signature(
            "wss://evil.example.com/media-stream", {}
        )
    headers = [(b"x-twilio-signature", signature.encode())] if signature else []
    from voicebot.asgi import application

    comm = WebsocketCommunicator(application, "/media-stream", headers=headers)
    connected, code = await comm.connect(timeout=5)
    # Closing before accept() is what makes Daphne answer the upgrade with HTTP 403.
    assert (connected, code) == (False, 4403)


async def test_without_an_auth_token_no_signature_is_needed(settings):
    settings.TWILIO_AUTH_TOKEN = ""
    async with twilio_stream() as stream:
        await stream.wait_bot_speaking(timeout_s=15)


# --- greeting and playback -----------------------------------------------------------------------


async def test_greeting_arrives_as_media_chunks_each_followed_by_its_mark():
    async with twilio_stream() as stream:
        await stream.wait_bot_speaking(timeout_s=15)
        await stream.wait_bot_silent(for_ms=300, timeout_s=30)
        messages = list(stream.log.bot_messages)
        call_sid = stream.call_sid
    media = [m for m in messages if m.kind == "media"]
    assert media, "no greeting audio"
    assert all(0 < m.size <= 1600 for m in media)  # at most 200 ms per message
    kinds = [m.kind for m in messages if m.kind in ("media", "mark")]
    assert kinds == ["media", "mark"] * len(media)
    greeting_ms = sum(m.size for m in media) // 8
    assert greeting_ms >= 2000  # the contract: the default greeting is at least two seconds of speech
    _, turns, _ = await db(call_rows, call_sid)
    assert turns[0].role == "bot" and not turns[0].interrupted
    assert turns[0].heard_text == turns[0].text and turns[0].text.startswith("Hello!")


async def test_bot_audio_is_paced_a_little_ahead_of_playout_not_sent_in_one_burst(settings):
    from calls.emulator.playout import Playout

    async with twilio_stream() as stream:
        await stream.wait_bot_speaking(timeout_s=15)
        await stream.wait_bot_silent(for_ms=300, timeout_s=30)
        media = [m for m in stream.log.bot_messages if m.kind == "media"]
    # Replay what arrived, when it arrived, into Twilio's buffer: it never holds much more than the
    # lead (plus one 200 ms chunk and one 20 ms tick of the emulator's clock).
    buffer, deepest = Playout(start_ms=media[0].at_ms), 0
    for message in media:
        buffer.advance(message.at_ms)
        buffer.media(b"\xff" * message.size)
        deepest = max(deepest, buffer.buffered_ms)
    greeting_ms = sum(m.size for m in media) // 8
    assert greeting_ms > 3 * settings.PLAYBACK_LEAD_MS  # long enough for the pacing to show
    assert deepest <= settings.PLAYBACK_LEAD_MS + 200 + 40
    assert media[-1].at_ms - media[0].at_ms >= greeting_ms - settings.PLAYBACK_LEAD_MS - 200


async def test_caller_speech_during_the_greeting_clears_within_the_bound_and_no_greeting_audio_follows():
    async with twilio_stream() as stream:
        _, true_onset = await barge_in_during_greeting(stream)
        await stream.wait_clock(true_onset + 1500)
        clears = list(stream.log.clears)
        messages = list(stream.log.bot_messages)
        call_sid = stream.call_sid

    assert len(clears) >= 1
    # The clear reached "Twilio" within the bound after the true onset (plus one 20 ms tick of the
    # emulator's clock, on which it notices messages).
    assert clears[0] - true_onset <= BOUND_MS + 20
    # No audio of the greeting (generation 1) after the clear: every mark after it is a later response.
    cut_at = next(i for i, m in enumerate(messages) if m.kind == "clear")
    later_marks = [m.name for m in messages[cut_at + 1 :] if m.kind == "mark"]
    assert all(mark_generation(name) > 1 for name in later_marks)

    _, turns, events = await db(call_rows, call_sid)
    barge = next(e for e in events if e.kind == EventKind.BARGE_IN)
    assert barge.data["detection_latency_ms"] <= BOUND_MS
    assert barge.data["decided_ms"] - true_onset <= BOUND_MS
    assert barge.data["clear_send_ms"] < 50
    greeting = turns[0]
    assert greeting.interrupted
    heard, said = greeting.heard_text.split(), greeting.text.split()
    assert 0 < len(heard) < len(said) and said[: len(heard)] == heard


async def test_marks_echoed_after_clear_do_not_count_as_heard():
    async with twilio_stream() as stream:
        started = await stream.wait_bot_speaking(timeout_s=15)
        await barge_in_during_greeting(stream, after_ms=900)
        await stream.wait_clock(stream.clock_ms + 600)
        unplayed = [name for _, name, played in stream.log.mark_echoes if not played]
        played_ms = stream.playout.played_bytes // 8
        call_sid = stream.call_sid
    assert unplayed, "the emulator echoed the cleared marks"
    _, turns, events = await db(call_rows, call_sid)
    greeting = turns[0]
    # About 1 s of the greeting was heard; had the echoes after clear counted as played, the heard
    # text would be the whole greeting. espeak speaks ~3 words a second here: allow one word extra.
    assert played_ms < 1500 and started >= 0
    assert 1 <= len(greeting.heard_text.split()) <= played_ms / 1000 * 3.5 + 1
    barge = next(e for e in events if e.kind == EventKind.BARGE_IN)
    assert barge.data["cleared_marks"] == len(unplayed)


async def test_speech_while_the_bot_is_silent_sends_no_clear():
    async with twilio_stream() as stream:
        await stream.wait_bot_speaking(timeout_s=15)
        await stream.wait_bot_silent(for_ms=400, timeout_s=30)
        end = await stream.say(fixture_audio("clone_test"))
        # The bot answers once the words are transcribed; it was silent while the caller spoke.
        answered = await stream.wait_bot_speaking(timeout_s=30)
        await stream.wait_bot_silent(for_ms=300, timeout_s=30)
        clears = list(stream.log.clears)
        call_sid = stream.call_sid
    assert clears == [] and answered > end
    _, turns, events = await db(call_rows, call_sid)
    assert not [e for e in events if e.kind == EventKind.BARGE_IN]
    assert any(t.role == "caller" for t in turns)


# --- bad input and the end of the call -----------------------------------------------------------


async def test_malformed_messages_are_dropped_and_the_call_goes_on():
    async with twilio_stream() as stream:
        await stream.wait_bot_speaking(timeout_s=15)
        for junk in (
            "{not json",
            "[1, 2]",
            '{"event": "dance"}',
            json.dumps(
                {
                    "event": "media",
                    "streamSid": stream.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": "1",
                        "timestamp": "5",
                        "payload": "***not base64***",
                    },
                }
            ),
            json.dumps({"event": "media", "streamSid": stream.stream_sid}),
            stream.writer.start({}),  # a second start
        ):
            await stream.send_raw(junk)
        # The stream still works: the bot still hears the caller and barges in.
        await stream.wait_clock(stream.clock_ms + 200)
        stream.say(fixture_audio("clone_test"))
        await stream.wait_clock(stream.clock_ms + 1500)
        clears = list(stream.log.clears)
        call_sid = stream.call_sid
    assert clears, "the call stopped working after bad input"
    call, _, events = await db(call_rows, call_sid)
    errors = [e for e in events if e.kind == EventKind.PROTOCOL_ERROR]
    assert len(errors) == 6
    assert all(e.data["reason"] for e in errors)
    assert call.end_reason == "caller-hangup"


async def test_media_before_start_is_dropped_without_closing_the_socket():
    from voicebot.asgi import application

    comm = WebsocketCommunicator(application, "/media-stream")
    assert (await comm.connect(timeout=5))[0]
    writer = TwilioStreamWriter("MZ" + "1" * 32, "CA" + "2" * 32, "AC" + "3" * 32)
    await comm.send_to(text_data=writer.connected())
    await comm.send_to(text_data=writer.media(b"\xff" * 160, 0))  # before start: dropped
    await comm.send_to(text_data=writer.start({}))
    first = await comm.receive_from(timeout=15)  # the greeting still comes
    assert '"event":"media"' in first.replace(" ", "")
    await comm.send_to(text_data=writer.stop())
    while (await comm.receive_output(timeout=10))["type"] != "websocket.close":
        pass  # the rest of the greeting, then our close after stop
    await comm.disconnect()


async def test_stop_finalizes_the_call_and_keeps_the_callers_last_words():
    """The caller hangs up mid-sentence: the words said so far still reach the transcript."""
    async with twilio_stream() as stream:
        await stream.wait_bot_speaking(timeout_s=15)
        await stream.wait_bot_silent(for_ms=300, timeout_s=30)
        stream.say(fixture_audio("beckett"))
        await stream.wait_clock(stream.clock_ms + 2500)  # hang up in the middle of the reading
        call_sid = stream.call_sid
    call, turns, events = await db(call_rows, call_sid)
    assert call.status == "completed" and call.end_reason == "caller-hangup"
    assert call.ended_at is not None and call.stream_sid.startswith("MZ")
    assert events[0].kind == EventKind.STREAM_START
    assert events[-1].kind == EventKind.STREAM_STOP
    caller = [t for t in turns if t.role == "caller"]
    assert caller and caller[-1].text and caller[-1].approximate

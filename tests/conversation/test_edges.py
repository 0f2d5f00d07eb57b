"""Edges of a live call on the real SDKs against their fakes: speech in the gap between two
sentences, an STT that gives up for good, the TTS failover's cool-down, transfers the bot must
refuse or the carrier refuses, and a goodbye whose marks never come back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.conf import settings as django_settings

from calls.models import EventKind
from calls.twiml import transfer_twiml
from tests.conversation.conftest import AGENT_NUMBER, FROM_NUMBER, Conversation, call_log, wait_for
from tests.fakes.groq import FakeToolCall
from tests.live.conftest import db, fixture_audio, mark_generation

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = fixture_audio("clone_test")  # 4.1 s of real speech
REPLY = ["We open ", "at nine ", "in the morning, ", "and close ", "at six."]
REPLY_TEXT = "".join(REPLY).strip()


def tool_results(events: list[Any]) -> list[Any]:
    return [e.data for e in events if e.kind == EventKind.TOOL_CALL and "result" in e.data]


async def test_speech_between_two_sentences_cuts_the_reply_and_it_is_never_resumed(
    conversation: Conversation,
) -> None:
    first = "Our first sentence is here."
    second = "Then a second sentence."  # written while the first plays; its TTS is slow
    rest = " And the model goes on writing the rest of this reply slowly for several more seconds."
    conversation.deepgram.transcripts = ["What time do you open?", "Sorry, one more thing."]

    def model(body: dict[str, Any]) -> list[Any]:
        if sum(m["role"] == "user" for m in body["messages"]) == 1:
            return [first, " " + second, *(" " + w for w in rest.split())]  # ~18 chunks, 0.25 s apart
        return ["Go ahead."]

    conversation.groq.reply = model
    conversation.groq.chunk_interval_s = 0.25
    call = await conversation.place_call()
    async with conversation.stream(call) as stream:
        await stream.wait_bot_silent(for_ms=300, timeout_s=20)
        await stream.say(QUESTION)
        await stream.wait_bot_speaking(timeout_s=20)
        # Streaming: the first sentence is on the air while the model is still writing the reply.
        reply_request = conversation.groq.requests[0]
        assert not reply_request.completed and reply_request.chunks_sent < reply_request.chunks_planned
        # The second sentence's TTS is slow: the caller speaks in the gap after the first one.
        conversation.deepgram.speak_ttfb_s = 5.0
        gap_started = await stream.wait_bot_silent(for_ms=200, timeout_s=20)
        stream.say(QUESTION)
        await wait_for(lambda: len(conversation.groq.requests) == 2, timeout_s=20)
        conversation.deepgram.speak_ttfb_s = 0.0
        await stream.wait_bot_speaking(timeout_s=20)
        await stream.wait_bot_silent(for_ms=300, timeout_s=20)
        marks = [(m.at_ms, m.name) for m in stream.log.bot_messages if m.kind == "mark"]
        clears = list(stream.log.clears)

    assert reply_request.client_disconnected and not reply_request.completed  # the LLM stream closed
    speak = conversation.deepgram.speak_requests
    slow = [r for r in speak if r.text == second]
    assert len(slow) == 1 and slow[0].client_disconnected and slow[0].bytes_sent == 0, [  # TTS cancelled
        (r.text, r.client_disconnected, r.bytes_sent) for r in speak
    ]
    assert clears == []  # nothing was unplayed, so nothing to clear
    _, turns, events = await db(call_log, call.id)
    barge = next(e for e in events if e.kind == EventKind.BARGE_IN)
    assert barge.data["cause"] == "speech" and barge.data["clear_send_ms"] is None
    assert barge.data["decided_ms"] > gap_started
    cut = next(t for t in turns if t.role == "bot" and t.text.startswith(first))
    assert cut.interrupted and cut.heard_text == first
    # No audio of the cut reply after the barge-in (its marks carry its generation).
    gen = barge.data["generation"]
    late = [name for at, name in marks if mark_generation(name) == gen and at > barge.data["decided_ms"]]
    assert late == []
    assert [t.text for t in turns if t.role == "bot"][-1] == "Go ahead."
    # Only the heard sentence went back to the model.
    assistant = [m for m in conversation.groq.requests[1].body["messages"] if m["role"] == "assistant"]
    assert assistant[-1]["content"] == first


@pytest.mark.parametrize("when", ["between turns", "mid-utterance"])
async def test_an_stt_that_gives_up_for_good_mid_call_falls_back_to_the_offline_stt(
    conversation: Conversation, settings: Any, when: str
) -> None:
    settings.DEEPGRAM_RECONNECT_ATTEMPTS = 0  # the first drop is final
    conversation.deepgram.transcripts = ["What time do you open?"]
    conversation.groq.reply = REPLY
    call = await conversation.place_call()
    async with conversation.stream(call) as stream:
        await stream.wait_bot_silent(for_ms=300, timeout_s=20)
        if when == "between turns":
            conversation.deepgram.drop_all()
            await stream.wait_clock(stream.clock_ms + 500)
            spoke_until = await stream.say(QUESTION)
        else:
            said = stream.say(QUESTION)
            await stream.wait_clock(stream.clock_ms + 2000)  # half-way through the question
            conversation.deepgram.drop_all()
            spoke_until = await said
        reply_started = await stream.wait_bot_speaking(timeout_s=20)
        await stream.wait_bot_silent(for_ms=300, timeout_s=30)

    _, turns, events = await db(call_log, call.id)
    fallback = next(e for e in events if e.kind == EventKind.ERROR and e.data.get("fallback"))
    lost = when == "mid-utterance"
    assert fallback.data == {"stage": "stt", "fallback": "pocketsphinx", "words_lost": lost}
    reply = next(t for t in turns if t.role == "bot" and t.index > 0)
    caller = [t for t in turns if t.role == "caller"]
    if when == "between turns":
        # Nothing was lost: the offline STT heard the question and the call went on.
        assert caller and caller[0].approximate and caller[0].text
        assert reply.text == REPLY_TEXT and len(conversation.groq.requests) == 1
    else:
        # The words in flight were lost: the bot asks again once the caller stops, and does not
        # answer a fragment. What Deepgram had heard so far is kept.
        assert reply.text == django_settings.APOLOGY_LINE and conversation.groq.requests == []
        assert all(t.approximate and "What time do you open?".startswith(t.text) for t in caller)
    assert 0 < reply_started - spoke_until <= 5000


async def test_after_the_tts_failover_cool_down_the_real_voice_is_tried_again(
    conversation: Conversation, settings: Any
) -> None:
    settings.TTS_FAILOVER_COOLDOWN_S = 1.0
    conversation.deepgram.speak_status = 503  # the greeting: Deepgram TTS is down
    conversation.deepgram.transcripts = ["What time do you open?"]
    conversation.groq.reply = REPLY
    call = await conversation.place_call()
    async with conversation.stream(call) as stream:
        await stream.wait_bot_speaking(timeout_s=15)
        conversation.deepgram.speak_status = None  # it recovers
        await stream.wait_bot_silent(for_ms=1200, timeout_s=20)  # past the cool-down
        await stream.say(QUESTION)
        await stream.wait_bot_speaking(timeout_s=20)
        await stream.wait_bot_silent(for_ms=300, timeout_s=30)
    _, turns, events = await db(call_log, call.id)
    failures = [e.data for e in events if e.kind == EventKind.ERROR]
    assert [(f["stage"], f["kind"], f["fallback"]) for f in failures] == [("tts", "unavailable", "espeak-ng")]
    requests = conversation.deepgram.speak_requests
    assert requests[0].text.startswith("Hi") and not requests[0].completed  # the one that failed
    assert [r.text for r in requests[1:]] == ["We open at nine in the morning,", "and close at six."]
    assert all(r.completed for r in requests[1:])
    assert next(t for t in turns if t.role == "bot" and t.index > 0).text == REPLY_TEXT


@pytest.mark.parametrize("to", ["+19005550123", "+1 415-555-0123"])
async def test_the_model_may_transfer_only_to_allowed_numbers(
    conversation: Conversation, settings: Any, to: str
) -> None:
    settings.TRANSFER_ALLOWED_NUMBERS = ["+14155550123"]
    conversation.deepgram.transcripts = ["Put me through to this number.", "When do you open?"]

    def model(body: dict[str, Any]) -> list[Any]:
        said = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        if "number" in said:
            tool = FakeToolCall(name="transfer_to_human", arguments={"reason": "asked", "to": to})
            return ["Connecting you now.", tool]
        return ["We open at nine."]

    conversation.groq.reply = model
    call = await conversation.place_call()
    async with conversation.stream(call) as stream:
        await stream.wait_bot_silent(for_ms=300, timeout_s=20)
        stream.say(QUESTION)
        await wait_for(lambda: conversation.groq.requests, timeout_s=20)
        await stream.wait_bot_speaking()
        if to.startswith("+1900"):
            await stream.wait_bot_silent(for_ms=500, timeout_s=30)
            stream.say(QUESTION)
            await wait_for(lambda: len(conversation.groq.requests) == 2)
            await stream.wait_bot_speaking()
            await stream.wait_bot_silent(for_ms=300, timeout_s=30)
        else:
            await wait_for(lambda: conversation.updates(call.call_sid), timeout_s=30)
    row, turns, events = await db(call_log, call.id)
    if to.startswith("+1900"):  # a premium-rate number the caller talked the model into
        assert conversation.updates(call.call_sid) == []
        bot = [t.text for t in turns if t.role == "bot"]
        refusal = f"Connecting you now. {django_settings.TRANSFER_UNAVAILABLE_LINE}"
        assert bot[1:] == [refusal, "We open at nine."]
        result = tool_results(events)[0]["result"]
        assert result == f"transfer refused: {to} is not an allowed transfer number"
        assert row.transfer_to == ""
    else:
        redirect = conversation.updates(call.call_sid)[-1]
        assert redirect.field("Twiml") == transfer_twiml("+14155550123", caller_id=FROM_NUMBER, say=None)
        assert row.transfer_to == "+14155550123"


async def test_a_transfer_the_carrier_refuses_is_said_and_the_call_goes_on(
    conversation: Conversation,
) -> None:
    conversation.deepgram.transcripts = ["Can I talk to a person?", "When do you open?"]

    def model(body: dict[str, Any]) -> list[Any]:
        said = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        if "person" in said:
            return [
                "One moment.",
                FakeToolCall(name="transfer_to_human", arguments={"reason": "asked"}),
                FakeToolCall(name="end_call", arguments={"reason": "transferred"}),  # one too many
            ]
        return ["We open at nine."]

    conversation.groq.reply = model
    call = await conversation.place_call()
    conversation.twilio.fail_next(
        21220, "Call is not in-progress. Cannot redirect.", 400, method="POST", path_contains=call.call_sid
    )
    async with conversation.stream(call) as stream:
        await stream.wait_bot_silent(for_ms=300, timeout_s=20)
        stream.say(QUESTION)
        await wait_for(lambda: conversation.groq.requests, timeout_s=20)
        await stream.wait_bot_speaking()
        await wait_for(lambda: conversation.updates(call.call_sid), timeout_s=30)  # the refused redirect
        await stream.wait_bot_speaking()
        await stream.wait_bot_silent(for_ms=500, timeout_s=30)
        stream.say(QUESTION)
        await wait_for(lambda: len(conversation.groq.requests) == 2)
        await stream.wait_bot_speaking()
        await stream.wait_bot_silent(for_ms=300, timeout_s=30)
        closed_by_bot = stream.closed.is_set()
    assert not closed_by_bot
    (redirect,) = conversation.updates(call.call_sid)
    assert redirect.field("Twiml") == transfer_twiml(AGENT_NUMBER, caller_id=FROM_NUMBER, say=None)
    row, turns, events = await db(call_log, call.id)
    bot = [t.text for t in turns if t.role == "bot"]
    assert bot[1:] == [f"One moment. {django_settings.TRANSFER_UNAVAILABLE_LINE}", "We open at nine."]
    results = tool_results(events)
    assert results[0]["name"] == "end_call" and results[0]["dropped"]  # logged, not run
    assert results[1]["name"] == "transfer_to_human" and results[1]["result"].startswith("transfer failed")
    assert any(e.kind == EventKind.ERROR and e.data.get("stage") == "transfer" for e in events)
    assert row.transfer_to == "" and row.end_reason == "caller-hangup"


async def test_end_call_hangs_up_even_if_the_goodbyes_marks_never_come_back(
    conversation: Conversation,
) -> None:
    conversation.deepgram.transcripts = ["Goodbye."]
    conversation.groq.reply = ["Thanks for calling, goodbye!", FakeToolCall(name="end_call", arguments={})]
    call = await conversation.place_call()
    async with conversation.stream(call, lose_marks=True) as stream:
        await stream.wait_bot_silent(for_ms=300, timeout_s=20)
        stream.say(QUESTION)
        await wait_for(lambda: conversation.groq.requests, timeout_s=20)
        goodbye_started = await stream.wait_bot_speaking(timeout_s=20)
        await wait_for(lambda: conversation.updates(call.call_sid), timeout_s=15)
        hung_up_at = stream.clock_ms
        await asyncio.wait_for(stream.closed.wait(), 10)
    assert conversation.updates(call.call_sid)[-1].field("Status") == "completed"
    # The goodbye (about 2 s) had its time to play, then the wait ended: its audio + 5 s.
    assert 1500 < hung_up_at - goodbye_started < 9000
    row, _, events = await db(call_log, call.id)
    assert row.end_reason == "bot-hangup"
    assert tool_results(events)[-1]["result"] == "call ended; the goodbye's playback was not confirmed"


async def test_a_transfer_whose_hand_off_marks_never_come_back_still_transfers(
    conversation: Conversation,
) -> None:
    conversation.deepgram.transcripts = ["Can I talk to a person?"]
    conversation.groq.reply = [
        "One moment.",
        FakeToolCall(name="transfer_to_human", arguments={"reason": "asked"}),
    ]
    call = await conversation.place_call()
    async with conversation.stream(call, lose_marks=True) as stream:
        await stream.wait_bot_silent(for_ms=300, timeout_s=20)
        stream.say(QUESTION)
        await wait_for(lambda: conversation.groq.requests, timeout_s=20)
        hand_off_started = await stream.wait_bot_speaking(timeout_s=20)
        await wait_for(lambda: conversation.updates(call.call_sid), timeout_s=15)
        transferred_at = stream.clock_ms
        await asyncio.wait_for(stream.closed.wait(), 10)
    (redirect,) = conversation.updates(call.call_sid)
    assert redirect.field("Twiml") == transfer_twiml(AGENT_NUMBER, caller_id=FROM_NUMBER, say=None)
    # The hand-off line (about 1 s) had its time to play, then the wait ended: its audio + 5 s.
    assert 800 < transferred_at - hand_off_started < 9000
    row, _, events = await db(call_log, call.id)
    assert row.end_reason == "transferred" and row.transfer_to == AGENT_NUMBER
    assert tool_results(events)[-1]["result"].endswith("; the hand-off line's playback was not confirmed")


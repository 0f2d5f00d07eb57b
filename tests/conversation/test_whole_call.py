"""Whole calls on the real SDKs against their fakes: ask, be answered, interrupt, transfer, goodbye."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from calls.models import EventKind
from calls.twiml import transfer_twiml
from tests.conversation.conftest import AGENT_NUMBER, FROM_NUMBER, Conversation, call_log, wait_for
from tests.fakes.groq import FakeToolCall
from tests.live.conftest import db, fixture_audio, labelled_onsets

pytestmark = pytest.mark.django_db(transaction=True)

ANSWER = (
    "We open at nine in the morning and close at six in the evening, Monday to Friday. "
    "On Saturdays we open at ten and close at two, and on Sundays we are closed all day."
)


def last_user_text(body: dict[str, Any]) -> str:
    return next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")


def scripted_model(body: dict[str, Any]) -> list[Any]:
    """The fake LLM's side of the conversation, keyed on what the caller said last."""
    said = last_user_text(body).lower()
    if "person" in said:
        return [
            "Sure, I'll",
            " connect you with a person now.",
            FakeToolCall(name="transfer_to_human", arguments={"reason": "caller asked for a person"}),
        ]
    if "goodbye" in said:
        end = FakeToolCall(name="end_call", arguments={"reason": "goodbye"})
        return ["Thanks for calling,", " goodbye!", end]
    words = ANSWER.split(" ")
    return [w + " " for w in words]


async def test_caller_is_answered_interrupts_then_asks_for_a_person_and_is_transferred(
    conversation: Conversation,
) -> None:
    conversation.deepgram.transcripts = [
        "What time do you open on Saturday?",
        "Can I talk to a person please?",
    ]
    conversation.groq.reply = scripted_model
    call = await conversation.place_call()
    async with conversation.stream(call) as stream:
        await stream.wait_bot_speaking(timeout_s=15)
        await stream.wait_bot_silent(for_ms=300)  # the greeting played out
        stream.say(fixture_audio("clone_test"))
        answer_started = await stream.wait_bot_speaking(timeout_s=20)
        await stream.wait_clock(answer_started + 1500)
        interruption = fixture_audio("clone_test")
        interrupted_until = stream.say(interruption)  # barge in on the answer, asking for a person
        await wait_for(lambda: conversation.updates(call.call_sid), timeout_s=30)
        # The redirect came only after the hand-off line had played to its end.
        bot_silent_at_transfer = not stream.playout.playing and stream.playout.buffered_ms == 0
        await asyncio.wait_for(stream.closed.wait(), 10)  # the session ends the stream after the transfer
        clears = list(stream.log.clears)
        # The recording went out contiguously, 8 bytes per ms, ending at this call-clock ms.
        interruption_sent_at = await interrupted_until - len(interruption) // 8

    redirect = conversation.updates(call.call_sid)[-1]
    assert redirect.field("Twiml") == transfer_twiml(AGENT_NUMBER, caller_id=FROM_NUMBER, say=None)
    assert redirect.field("Status") is None
    assert bot_silent_at_transfer
    assert len(clears) == 1

    # Only what the caller heard of the interrupted answer went back to the model.
    requests = conversation.groq.requests
    assert len(requests) == 2
    assistant = [m for m in requests[1].body["messages"] if m["role"] == "assistant"]
    heard_answer = assistant[-1]["content"]
    assert heard_answer and ANSWER.startswith(heard_answer) and len(heard_answer) < len(ANSWER)
    assert [t["function"]["name"] for t in requests[1].body["tools"]] == ["end_call", "transfer_to_human"]

    row, turns, events = await db(call_log, call.id)
    assert [(t.role, t.text) for t in turns if t.role == "caller"] == [
        ("caller", "What time do you open on Saturday?"),
        ("caller", "Can I talk to a person please?"),
    ]
    answer = next(t for t in turns if t.role == "bot" and t.text.startswith("We open"))
    assert answer.interrupted and answer.heard_text == heard_answer
    assert row.end_reason == "transferred" and row.transfer_to == AGENT_NUMBER
    kinds = [e.kind for e in events]
    assert EventKind.BARGE_IN in kinds and EventKind.TRANSFER in kinds
    barge = next(e for e in events if e.kind == EventKind.BARGE_IN)
    # The decision came within 100 ms of caller audio after the true speech onset (the labelled
    # onset of the recording, placed on the call clock where the test started sending it). It may
    # come before the label: the recording's breath rises at 360 ms, Silero calls speech at 482 ms.
    true_onset_ms = interruption_sent_at + labelled_onsets("clone_test")[0][0]
    assert interruption_sent_at < barge.data["decided_ms"] <= true_onset_ms + 100, (barge.data, true_onset_ms)
    # Per-turn latency metrics, on the call clock, in pipeline order.
    for turn in (t for t in turns if t.role == "bot" and t.index > 0):
        stages = [turn.speech_end_ms, turn.stt_final_ms, turn.llm_first_token_ms, turn.first_audio_ms]
        assert None not in stages and stages == sorted(stages)
        assert turn.tts_first_byte_ms is not None and turn.llm_first_token_ms <= turn.tts_first_byte_ms
        assert turn.voice_to_voice_ms == turn.first_audio_ms - turn.speech_end_ms


async def test_caller_says_goodbye_and_the_bot_hangs_up_cleanly(
    conversation: Conversation, caplog: Any
) -> None:
    conversation.deepgram.transcripts = ["What time do you open on Saturday?", "Okay thanks, goodbye."]
    conversation.groq.reply = scripted_model
    call = await conversation.place_call()
    caplog.set_level(logging.WARNING)
    async with conversation.stream(call) as stream:
        await stream.wait_bot_speaking(timeout_s=15)
        await stream.wait_bot_silent(for_ms=300)
        stream.say(fixture_audio("clone_test"))
        await stream.wait_bot_speaking(timeout_s=20)
        await stream.wait_bot_silent(for_ms=300, timeout_s=30)  # the whole answer played
        stream.say(fixture_audio("clone_test"))
        await wait_for(lambda: conversation.updates(call.call_sid), timeout_s=30)
        silent_at_hangup = not stream.playout.playing and stream.playout.buffered_ms == 0
        await asyncio.wait_for(stream.closed.wait(), 10)  # we closed the socket after the hang-up
        clears = list(stream.log.clears)

    hangup = conversation.updates(call.call_sid)[-1]
    assert hangup.field("Status") == "completed" and hangup.field("Twiml") is None
    assert silent_at_hangup  # the goodbye played to its last mark first
    assert clears == []
    row, turns, events = await db(call_log, call.id)
    goodbye = turns[-1]
    assert (
        goodbye.role == "bot" and goodbye.text == "Thanks for calling, goodbye!" and not goodbye.interrupted
    )
    assert row.end_reason == "bot-hangup"
    assert not [e for e in events if e.kind == EventKind.ERROR]
    problems = [
        r for r in caplog.records if r.name.startswith(("media_ws", "calls")) and r.levelno >= logging.WARNING
    ]
    assert problems == []

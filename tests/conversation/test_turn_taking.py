"""Turn-taking around the edges: silence, a transfer that cannot happen, keypad shortcuts, and a
caller who hangs up while the bot says goodbye."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from django.conf import settings as django_settings

from calls.models import EventKind
from tests.conversation.conftest import Conversation, call_log, wait_for
from tests.fakes.groq import FakeToolCall
from tests.live.conftest import db, fixture_audio

pytestmark = pytest.mark.django_db(transaction=True)


async def test_silence_gets_a_reprompt_then_a_polite_goodbye_and_a_hang_up(
    conversation: Conversation, settings: Any
) -> None:
    settings.SILENCE_TIMEOUT_S = 1.5
    settings.SILENCE_MAX_REPROMPTS = 1
    call = await conversation.place_call()
    async with conversation.stream(call) as stream:
        await wait_for(lambda: conversation.updates(call.call_sid), timeout_s=40)
        silent_at_hangup = not stream.playout.playing
        await asyncio.wait_for(stream.closed.wait(), 10)
    assert conversation.updates(call.call_sid)[-1].field("Status") == "completed"
    assert silent_at_hangup
    row, turns, events = await db(call_log, call.id)
    assert [t.text for t in turns] == [
        "Hi, this is the clinic.",
        django_settings.REPROMPT_LINE,
        django_settings.SILENCE_GOODBYE_LINE,
    ]
    assert not any(t.interrupted for t in turns)
    assert [e.data["action"] for e in events if e.kind == EventKind.SILENCE] == ["reprompt", "end"]
    assert row.end_reason == "silence"
    assert conversation.groq.requests == []  # silence never reached the LLM


async def test_a_silent_call_ends_even_if_the_goodbyes_marks_never_come_back(
    conversation: Conversation, settings: Any
) -> None:
    settings.SILENCE_TIMEOUT_S = 1.5
    settings.SILENCE_MAX_REPROMPTS = 0  # the first silence ends the call
    call = await conversation.place_call()
    async with conversation.stream(call, lose_marks=True) as stream:
        await wait_for(lambda: conversation.updates(call.call_sid), timeout_s=40)
        await asyncio.wait_for(stream.closed.wait(), 10)
    assert conversation.updates(call.call_sid)[-1].field("Status") == "completed"
    row, turns, _ = await db(call_log, call.id)
    assert [t.text for t in turns] == ["Hi, this is the clinic.", django_settings.SILENCE_GOODBYE_LINE]
    assert row.end_reason == "silence"


async def test_a_caller_who_cuts_the_silence_goodbye_is_answered_and_silence_is_watched_again(
    conversation: Conversation, settings: Any
) -> None:
    settings.SILENCE_TIMEOUT_S = 1.5
    settings.SILENCE_MAX_REPROMPTS = 0
    conversation.deepgram.transcripts = ["Wait, I am here."]
    conversation.groq.reply = ["Good, we open at nine."]
    call = await conversation.place_call()
    async with conversation.stream(call) as stream:
        await stream.wait_bot_speaking()  # the greeting
        await stream.wait_bot_silent(for_ms=100, timeout_s=20)
        await stream.wait_bot_speaking(timeout_s=10)  # the silence goodbye
        await stream.wait_clock(stream.clock_ms + 600)
        stream.say(fixture_audio("clone_test"))  # cuts the goodbye
        await wait_for(lambda: conversation.groq.requests, timeout_s=20)
        # Answered, then silent again: the watcher runs again and ends the call this time.
        await wait_for(lambda: conversation.updates(call.call_sid), timeout_s=40)
        await asyncio.wait_for(stream.closed.wait(), 10)
    row, turns, events = await db(call_log, call.id)
    bot = [(t.text, t.interrupted) for t in turns if t.role == "bot"]
    goodbye, cut = bot[1]
    assert cut and goodbye and django_settings.SILENCE_GOODBYE_LINE.startswith(goodbye)  # the caller cut it
    assert bot[2] == ("Good, we open at nine.", False)
    assert bot[3] == (django_settings.SILENCE_GOODBYE_LINE, False)
    assert [e.data["action"] for e in events if e.kind == EventKind.SILENCE] == ["end", "end"]
    assert row.end_reason == "silence"


async def test_without_an_agent_number_the_bot_says_it_cannot_transfer_and_the_call_goes_on(
    conversation: Conversation, settings: Any
) -> None:
    settings.HUMAN_AGENT_NUMBER = ""
    conversation.deepgram.transcripts = ["Can I talk to a person?", "When do you open?"]

    def model(body: dict[str, Any]) -> list[Any]:
        said = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        if "person" in said:
            return ["Let me check.", FakeToolCall(name="transfer_to_human", arguments={"reason": "asked"})]
        return ["We open at nine."]

    conversation.groq.reply = model
    call = await conversation.place_call()
    async with conversation.stream(call) as stream:
        await stream.wait_bot_silent(for_ms=300, timeout_s=20)
        stream.say(fixture_audio("clone_test"))
        await wait_for(lambda: len(conversation.groq.requests) == 1)
        await stream.wait_bot_speaking()
        await stream.wait_bot_silent(for_ms=500, timeout_s=30)
        stream.say(fixture_audio("clone_test"))
        await wait_for(lambda: len(conversation.groq.requests) == 2)
        await stream.wait_bot_speaking()
        await stream.wait_bot_silent(for_ms=300, timeout_s=30)
    assert conversation.updates(call.call_sid) == []  # nothing was redirected
    row, turns, _ = await db(call_log, call.id)
    bot = [t.text for t in turns if t.role == "bot"]
    assert bot[1] == f"Let me check. {django_settings.TRANSFER_UNAVAILABLE_LINE}"
    assert bot[2] == "We open at nine."
    follow_up = conversation.groq.requests[1].body["messages"]
    tool_result = next(m for m in follow_up if m["role"] == "tool")
    assert tool_result["content"].startswith("transfer unavailable")
    assert row.end_reason == "caller-hangup" and row.transfer_to == ""


async def test_pressing_the_pound_key_during_the_greeting_interrupts_it_and_ends_the_call(
    conversation: Conversation,
) -> None:
    call = await conversation.place_call(
        greeting="Hello, this is a long greeting that goes on and on for a while."
    )
    async with conversation.stream(call) as stream:
        started = await stream.wait_bot_speaking(timeout_s=15)
        await stream.wait_clock(started + 600)
        await stream.press("#")
        await wait_for(lambda: conversation.updates(call.call_sid), timeout_s=20)
        await asyncio.wait_for(stream.closed.wait(), 10)
        clears = list(stream.log.clears)
    assert len(clears) == 1
    row, turns, events = await db(call_log, call.id)
    assert turns[0].interrupted and turns[1].text == "[The caller pressed # on the keypad]"
    assert turns[2].text == django_settings.GOODBYE_LINE and not turns[2].interrupted
    barge = next(e for e in events if e.kind == EventKind.BARGE_IN)
    assert barge.data["cause"] == "dtmf"
    assert row.end_reason == "bot-hangup"
    assert conversation.groq.requests == []  # the keypad shortcut needs no model


async def test_a_caller_who_hangs_up_during_the_goodbye_ends_the_call_without_errors(
    conversation: Conversation, caplog: Any
) -> None:
    conversation.deepgram.transcripts = ["Goodbye."]
    conversation.groq.reply = [
        "Thank you so much for calling today, it was a pleasure to help you, goodbye and take care!",
        FakeToolCall(name="end_call", arguments={"reason": "goodbye"}),
    ]
    caplog.set_level(logging.WARNING)
    call = await conversation.place_call()
    async with conversation.stream(call) as stream:
        await stream.wait_bot_silent(for_ms=300, timeout_s=20)
        stream.say(fixture_audio("clone_test"))
        await wait_for(lambda: conversation.groq.requests)
        goodbye_started = await stream.wait_bot_speaking(timeout_s=20)
        await stream.wait_clock(goodbye_started + 500)
        await stream.hang_up()  # Twilio: stop, then the socket closes
    await asyncio.sleep(0.5)
    row, turns, events = await db(call_log, call.id)
    assert row.end_reason == "caller-hangup" and row.status == "completed"
    goodbye = turns[-1]
    assert goodbye.role == "bot" and goodbye.interrupted
    assert not [e for e in events if e.kind == EventKind.ERROR]
    problems = [
        r for r in caplog.records if r.name.startswith(("media_ws", "calls")) and r.levelno >= logging.WARNING
    ]
    assert problems == []
    assert conversation.updates(call.call_sid) == []  # the tool never hung up a call Twilio had ended

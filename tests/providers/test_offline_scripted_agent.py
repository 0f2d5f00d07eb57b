"""The scripted agent: each path of the call script, keypad presses, offered tools, determinism."""

from __future__ import annotations

import time
from typing import Any

import pytest

from media_ws.providers.base import TextDelta, ToolCall, ToolSpec, dtmf_message, parse_dtmf_message
from media_ws.providers.scripted import (
    FALLBACK_TEXT,
    GOODBYE_TEXT,
    HANDOFF_TEXT,
    NO_HANGUP_TEXT,
    NO_TRANSFER_TEXT,
    OPENING_TEXT,
    ScriptedAgent,
)
from media_ws.tools import END_CALL, TOOLS, TRANSFER_TO_HUMAN

SYSTEM = {"role": "system", "content": "You are a friendly, concise phone assistant."}
GREETING = {"role": "assistant", "content": "Hello! This is the voicebot assistant calling."}


def conversation(*user_texts: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [SYSTEM, GREETING]
    for text in user_texts:
        messages.append({"role": "user", "content": text})
    return messages


async def run(agent: ScriptedAgent, messages: list[dict[str, Any]],
              tools: list[ToolSpec] = TOOLS) -> tuple[list[TextDelta], list[ToolCall]]:
    deltas: list[TextDelta] = []
    calls: list[ToolCall] = []
    async for event in agent.stream(messages, tools):
        if isinstance(event, TextDelta):
            assert not calls, "text after the tool call"
            deltas.append(event)
        else:
            calls.append(event)
    return deltas, calls


def joined(deltas: list[TextDelta]) -> str:
    return "".join(d.text for d in deltas)


@pytest.fixture
def agent() -> ScriptedAgent:
    return ScriptedAgent()


@pytest.mark.parametrize("said", [
    "Can I talk to a person?",
    "I want a human please",
    "put me through to an agent",
    "representative",
    "Could I speak with someone?",
    "get me the operator",
])
async def test_asking_for_a_person_says_the_handoff_then_transfers(agent: ScriptedAgent, said: str) -> None:
    deltas, calls = await run(agent, conversation(said))
    assert joined(deltas) == HANDOFF_TEXT
    assert calls == [ToolCall(id="call_1", name=TRANSFER_TO_HUMAN.name,
                              arguments={"reason": "caller asked for a person"})]


@pytest.mark.parametrize("said", ["Goodbye!", "ok bye", "That's all, thanks.", "thank you bye", "good bye"])
async def test_goodbye_says_goodbye_then_ends_the_call(agent: ScriptedAgent, said: str) -> None:
    deltas, calls = await run(agent, conversation(said))
    assert joined(deltas) == GOODBYE_TEXT
    assert calls == [ToolCall(id="call_1", name=END_CALL.name, arguments={"reason": "caller said goodbye"})]


@pytest.mark.parametrize(("said", "expected"), [
    ("What are your opening hours?", "We're open Monday to Friday"),
    ("when do you close on saturday", "We're open Monday to Friday"),
    ("What's your address?", "We're at 12 Market Street"),
    ("I need to reschedule my appointment", "Your next appointment is on Tuesday"),
    ("how much does it cost", "A standard visit costs eighty dollars"),
    ("who is this", "I'm the clinic's automated assistant"),
])
async def test_faq_questions_get_their_answer_and_no_tool(agent: ScriptedAgent, said: str,
                                                          expected: str) -> None:
    deltas, calls = await run(agent, conversation(said))
    text = joined(deltas)
    assert text.startswith(expected) and 1 <= text.count(".") <= 3
    assert calls == []


@pytest.mark.parametrize("said", ["", "ha ha ha ha", "that lied at a trial no matter", "uh"])
async def test_anything_else_gets_the_offline_fallback(agent: ScriptedAgent, said: str) -> None:
    deltas, calls = await run(agent, conversation(said))
    assert joined(deltas) == FALLBACK_TEXT and calls == []


async def test_keypad_0_transfers_and_pound_ends(agent: ScriptedAgent) -> None:
    deltas, calls = await run(agent, conversation(dtmf_message("0")))
    assert joined(deltas) == HANDOFF_TEXT
    assert calls == [ToolCall(id="call_1", name="transfer_to_human",
                              arguments={"reason": "caller pressed 0"})]
    deltas, calls = await run(agent, conversation(dtmf_message("#")))
    assert joined(deltas) == GOODBYE_TEXT
    assert calls == [ToolCall(id="call_1", name="end_call", arguments={"reason": "caller pressed #"})]


async def test_other_keys_explain_the_keys_that_work(agent: ScriptedAgent) -> None:
    deltas, calls = await run(agent, conversation(dtmf_message("5")))
    assert joined(deltas) == "You pressed 5. Press 0 to reach a person, or the pound key to end the call."
    assert calls == []


async def test_keypad_digits_follow_the_settings(settings: Any) -> None:
    settings.DTMF_TRANSFER_DIGIT = "9"
    settings.DTMF_END_DIGIT = "*"
    agent = ScriptedAgent()
    assert (await run(agent, conversation(dtmf_message("9"))))[1][0].name == "transfer_to_human"
    assert (await run(agent, conversation(dtmf_message("*"))))[1][0].name == "end_call"
    assert (await run(agent, conversation(dtmf_message("0"))))[1] == []


async def test_only_offered_tools_are_called(agent: ScriptedAgent) -> None:
    deltas, calls = await run(agent, conversation("I want a person"), tools=[END_CALL])
    assert (joined(deltas), calls) == (NO_TRANSFER_TEXT, [])
    deltas, calls = await run(agent, conversation("bye"), tools=[TRANSFER_TO_HUMAN])
    assert (joined(deltas), calls) == (NO_HANGUP_TEXT, [])
    deltas, calls = await run(agent, conversation(dtmf_message("0")), tools=[])
    assert (joined(deltas), calls) == (NO_TRANSFER_TEXT, [])


async def test_after_a_tool_result_it_says_nothing(agent: ScriptedAgent) -> None:
    messages = conversation("goodbye")
    messages += [
        {"role": "assistant", "content": GOODBYE_TEXT, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "end_call", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "call ended"},
    ]
    assert await run(agent, messages) == ([], [])


async def test_without_a_caller_message_it_offers_help(agent: ScriptedAgent) -> None:
    for messages in ([SYSTEM], [SYSTEM, GREETING], []):
        deltas, calls = await run(agent, messages)
        assert joined(deltas) == OPENING_TEXT and calls == []


async def test_the_last_caller_message_decides_and_tool_call_ids_count_up(agent: ScriptedAgent) -> None:
    messages = conversation("I need a person")
    messages += [
        {"role": "assistant", "content": HANDOFF_TEXT, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "transfer_to_human", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "transfer unavailable"},
        {"role": "assistant", "content": "I'm sorry, I can't connect you right now."},
        {"role": "user", "content": "ok then goodbye"},
    ]
    deltas, calls = await run(agent, messages)
    assert joined(deltas) == GOODBYE_TEXT
    assert calls == [ToolCall(id="call_2", name="end_call", arguments={"reason": "caller said goodbye"})]


async def test_text_comes_a_few_words_per_delta(agent: ScriptedAgent) -> None:
    deltas, _ = await run(agent, conversation("What's your address?"))
    assert len(deltas) > 3
    assert all(1 <= len(d.text.split()) <= agent.words_per_delta for d in deltas)
    assert all(d.text.endswith(" ") for d in deltas[:-1])  # the spaces are kept: deltas join to the text


async def test_same_input_same_output() -> None:
    said = ("hours?", "person", "bye", "what", dtmf_message("0"), dtmf_message("3"))
    inputs = [conversation(s) for s in said]
    first = [await run(ScriptedAgent(), m) for m in inputs]
    second = [await run(ScriptedAgent(), m) for m in reversed(inputs)]
    assert first == second[::-1]


async def test_a_configured_pace_delays_the_deltas() -> None:
    agent = ScriptedAgent(first_delta_delay_ms=150, delta_delay_ms=0)
    started = time.monotonic()
    stream = agent.stream(conversation("hours?"), TOOLS)
    await stream.__anext__()
    assert time.monotonic() - started >= 0.15
    await stream.aclose()


def test_dtmf_messages_round_trip() -> None:
    for digit in "0123456789*#":
        text = dtmf_message(digit)
        assert text == f"[The caller pressed {digit} on the keypad]"
        assert parse_dtmf_message(text) == digit
    not_keys = ("0", "press 0", "[The caller pressed 12 on the keypad]",
                "[The caller pressed A on the keypad]")
    for text in not_keys:
        assert parse_dtmf_message(text) is None
    with pytest.raises(ValueError):
        dtmf_message("A")

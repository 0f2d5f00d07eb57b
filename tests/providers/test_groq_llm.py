"""Groq streaming chat through the real groq SDK against the SSE fake on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from media_ws.errors import LLMError
from media_ws.providers.base import TextDelta, ToolCall, ToolSpec
from media_ws.providers.groq_llm import GroqLLM
from tests.fakes.background import wait_until
from tests.fakes.groq import FakeGroq, FakeReasoning, FakeToolCall

pytestmark = pytest.mark.usefixtures("close_sdk_clients")

MESSAGES = [
    {"role": "system", "content": "You are a phone assistant."},
    {"role": "user", "content": "Can I move my appointment?"},
]
END_CALL = ToolSpec(
    name="end_call",
    description="Hang up after saying goodbye.",
    parameters={"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]},
)
TRANSFER = ToolSpec(
    name="transfer_to_human",
    description="Hand the caller to a person.",
    parameters={"type": "object", "properties": {"summary": {"type": "string"}}, "required": []},
)


async def collect(tools: list[ToolSpec] | None = None) -> list[Any]:
    return [e async for e in GroqLLM().stream(MESSAGES, tools or [])]


async def test_text_streams_as_deltas_in_order(fake_groq: FakeGroq, settings: Any) -> None:
    fake_groq.reply = ["Sure,", " what day", " suits you?"]
    events = await collect([END_CALL])
    assert events == [TextDelta("Sure,"), TextDelta(" what day"), TextDelta(" suits you?")]
    (request,) = fake_groq.requests
    assert request.authorization == f"Bearer {fake_groq.api_key}"
    assert request.body["model"] == settings.GROQ_MODEL
    assert request.body["stream"] is True
    assert request.body["messages"] == MESSAGES
    assert request.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "end_call",
                "description": "Hang up after saying goodbye.",
                "parameters": END_CALL.parameters,
            },
        }
    ]
    assert request.body["tool_choice"] == "auto"
    # The client is done at [DONE]; the fake's own thread marks the request complete just after.
    for _ in range(100):
        if request.completed:
            break
        await asyncio.sleep(0.02)
    assert request.completed


async def test_no_tools_sends_no_tool_fields(fake_groq: FakeGroq) -> None:
    await collect([])
    assert "tools" not in fake_groq.requests[0].body
    assert "tool_choice" not in fake_groq.requests[0].body


async def test_a_tool_call_in_one_delta(fake_groq: FakeGroq) -> None:
    fake_groq.reply = ["Goodbye!", FakeToolCall("end_call", {"reason": "caller said bye"}, id="call_abc123")]
    events = await collect([END_CALL])
    assert events == [
        TextDelta("Goodbye!"),
        ToolCall(id="call_abc123", name="end_call", arguments={"reason": "caller said bye"}),
    ]


async def test_a_fragmented_tool_call_is_reassembled(fake_groq: FakeGroq) -> None:
    args = {"summary": "wants to move a dentist appointment from Tuesday to Friday, morning preferred"}
    fake_groq.reply = [FakeToolCall("transfer_to_human", args, id="call_frag", fragments=7)]
    events = await collect([TRANSFER])
    assert events == [ToolCall(id="call_frag", name="transfer_to_human", arguments=args)]


async def test_two_tool_calls_keep_their_order(fake_groq: FakeGroq) -> None:
    fake_groq.reply = [
        FakeToolCall("transfer_to_human", {"summary": "x"}, id="call_1", fragments=3),
        FakeToolCall("end_call", {"reason": "y"}, id="call_2"),
    ]
    events = await collect([TRANSFER, END_CALL])
    assert [(e.id, e.name, e.arguments) for e in events] == [
        ("call_1", "transfer_to_human", {"summary": "x"}),
        ("call_2", "end_call", {"reason": "y"}),
    ]


async def test_empty_tool_arguments_mean_an_empty_object(fake_groq: FakeGroq) -> None:
    fake_groq.reply = [FakeToolCall("end_call", "", id="call_e")]
    assert await collect([END_CALL]) == [ToolCall(id="call_e", name="end_call", arguments={})]


@pytest.mark.parametrize("arguments", ['{"reason": "don', '["not", "an", "object"]'])
async def test_tool_arguments_that_are_not_a_json_object_are_a_bad_response(
    fake_groq: FakeGroq, arguments: str
) -> None:
    fake_groq.reply = ["Okay.", FakeToolCall("end_call", arguments)]
    events: list[Any] = []
    with pytest.raises(LLMError) as caught:
        async for event in GroqLLM().stream(MESSAGES, [END_CALL]):
            events.append(event)
    assert caught.value.kind == "bad_response"
    assert events == [TextDelta("Okay.")]  # what was said before is kept


async def test_reasoning_is_never_spoken(fake_groq: FakeGroq) -> None:
    fake_groq.reply = [FakeReasoning("The caller wants Friday; check slots."), "Friday works."]
    assert await collect() == [TextDelta("Friday works.")]


async def test_aclose_closes_the_http_stream_before_the_reply_is_finished(fake_groq: FakeGroq) -> None:
    fake_groq.reply = [f" word{i}" for i in range(200)]
    fake_groq.chunk_interval_s = 0.01
    stream = GroqLLM().stream(MESSAGES, [])
    got = [await anext(stream) for _ in range(3)]
    assert got == [TextDelta(" word0"), TextDelta(" word1"), TextDelta(" word2")]
    await stream.aclose()  # barge-in
    request = fake_groq.requests[0]
    await wait_until(lambda: request.client_disconnected, what="the fake to see the client go")
    assert not request.completed
    assert request.chunks_sent < request.chunks_planned


async def test_cancelling_the_consumer_task_closes_the_http_stream(fake_groq: FakeGroq) -> None:
    fake_groq.reply = [f" word{i}" for i in range(200)]
    fake_groq.chunk_interval_s = 0.01
    received: list[Any] = []

    async def consume() -> None:
        async for event in GroqLLM().stream(MESSAGES, []):
            received.append(event)

    task = asyncio.create_task(consume())
    await wait_until(lambda: len(received) >= 3, what="some text")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    request = fake_groq.requests[0]
    await wait_until(lambda: request.client_disconnected, what="the fake to see the client go")
    assert not request.completed


@pytest.mark.parametrize(
    ("status", "kind", "requests"),
    [
        (401, "auth", 1),
        (403, "auth", 1),
        (429, "unavailable", 1),  # no retry: a Retry-After of seconds has no place in a live turn
        (500, "unavailable", 2),  # one quick retry
        (503, "unavailable", 2),
        (400, "bad_response", 1),
        (404, "bad_response", 1),
    ],
)
async def test_http_errors_map_to_kinds(fake_groq: FakeGroq, status: int, kind: str, requests: int) -> None:
    fake_groq.error_status = status
    with pytest.raises(LLMError) as caught:
        await collect()
    assert caught.value.kind == kind
    assert len(fake_groq.requests) == requests


async def test_a_single_server_error_is_retried_once_and_the_reply_arrives(fake_groq: FakeGroq) -> None:
    fake_groq.error_status, fake_groq.error_times = 500, 1
    fake_groq.reply = ["Recovered."]
    assert await collect() == [TextDelta("Recovered.")]
    assert [r.status for r in fake_groq.requests] == [500, 200]


async def test_a_wrong_key_is_an_auth_error(fake_groq: FakeGroq, settings: Any) -> None:
    settings.GROQ_API_KEY = "gsk-wrong"
    with pytest.raises(LLMError) as caught:
        await collect()
    assert caught.value.kind == "auth"


async def test_refused_connection_is_unavailable(fake_groq: FakeGroq) -> None:
    fake_groq.refuse()
    with pytest.raises(LLMError) as caught:
        await collect()
    assert caught.value.kind == "unavailable"


@pytest.mark.parametrize("stall", ["before the headers", "after the role chunk"])
async def test_no_first_token_within_the_first_token_deadline_is_a_timeout(
    fake_groq: FakeGroq, settings: Any, stall: str
) -> None:
    settings.GROQ_TIMEOUT_S = 10.0  # the request's own timeout does not set the first-token wait
    settings.GROQ_FIRST_TOKEN_TIMEOUT_S = 0.4
    if stall == "before the headers":
        fake_groq.first_chunk_delay_s = 5
    else:
        fake_groq.stall_after_chunks = 1  # 200, the role chunk, then nothing
    started = time.monotonic()
    with pytest.raises(LLMError) as caught:
        await collect()
    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 0.4 + 0.5
    await wait_until(lambda: fake_groq.requests[0].client_disconnected, what="the request to be abandoned")


async def test_a_stall_mid_stream_is_a_timeout_and_keeps_the_text(fake_groq: FakeGroq, settings: Any) -> None:
    settings.GROQ_TIMEOUT_S = 0.4
    fake_groq.reply = ["First part.", " Second part."]
    fake_groq.stall_after_chunks = 2  # role chunk + "First part."
    events: list[Any] = []
    with pytest.raises(LLMError) as caught:
        async for event in GroqLLM().stream(MESSAGES, []):
            events.append(event)
    assert caught.value.kind == "timeout"
    assert events == [TextDelta("First part.")]
    await wait_until(lambda: fake_groq.requests[0].client_disconnected, what="the stream to be closed")


async def test_a_dropped_connection_mid_stream_is_dropped_and_keeps_the_text(fake_groq: FakeGroq) -> None:
    fake_groq.reply = ["First part.", " Second part."]
    fake_groq.drop_after_chunks = 2
    events: list[Any] = []
    with pytest.raises(LLMError) as caught:
        async for event in GroqLLM().stream(MESSAGES, []):
            events.append(event)
    assert caught.value.kind == "dropped"
    assert events == [TextDelta("First part.")]


async def test_an_sse_error_event_mid_stream_is_dropped(fake_groq: FakeGroq) -> None:
    fake_groq.reply = ["First part.", " Second part."]
    fake_groq.sse_error_after_chunks = 2
    events: list[Any] = []
    with pytest.raises(LLMError) as caught:
        async for event in GroqLLM().stream(MESSAGES, []):
            events.append(event)
    assert caught.value.kind == "dropped"
    assert "overloaded" in str(caught.value)
    assert events == [TextDelta("First part.")]

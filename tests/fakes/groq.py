"""A protocol-faithful Groq chat-completions endpoint on 127.0.0.1 (OpenAI-compatible SSE).

Wire format (groq 1.7 SDK source and Groq's API; see the project's Groq notes):
``POST /openai/v1/chat/completions`` with ``Authorization: Bearer <key>`` and a JSON body. With
``"stream": true`` the reply is ``text/event-stream``: one ``data: <ChatCompletionChunk JSON>\\n\\n``
per chunk - the first carries ``delta.role`` and ``x_groq.id``, text arrives in ``delta.content``,
tool calls in ``delta.tool_calls`` (Groq sends a whole call in one delta; OpenAI-style fragments can
be requested), the last chunk has an empty delta, ``finish_reason`` ``"stop"``/``"tool_calls"`` and
``x_groq.usage`` - then ``data: [DONE]``. Errors are ``{"error": {"message", "type", "code"}}`` with
the HTTP status; an error in the middle of a stream is an SSE ``data: {"error": {...}}``.

Script replies with ``reply`` (a list of text pieces and ``FakeToolCall``s, or a callable from the
request body to such a list). Faults: see ``FakeGroq``'s attributes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.background import BackgroundServer, sleep_while_connected


@dataclass
class FakeToolCall:
    """A tool call the fake model makes. ``fragments`` > 1 splits it OpenAI-style: a first delta
    with id and name, then the arguments in that many pieces."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str = ""
    fragments: int = 1

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class FakeReasoning:
    """Reasoning text, as reasoning models stream it in ``delta.reasoning`` (never to be spoken)."""

    text: str


ReplyItem = str | FakeToolCall | FakeReasoning
Reply = list[ReplyItem] | Callable[[dict[str, Any]], list[ReplyItem]]


@dataclass
class GroqRequest:
    """One chat-completions request as the fake saw it."""

    body: dict[str, Any]
    authorization: str
    status: int = 200
    chunks_sent: int = 0
    chunks_planned: int = 0
    completed: bool = False
    client_disconnected: bool = False


_ERRORS = {
    400: ("invalid_request_error", "bad_request", "The request is invalid."),
    401: ("invalid_request_error", "invalid_api_key", "Invalid API Key"),
    403: ("permission_error", "permission_denied", "Permission denied."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: ("tokens", "rate_limit_exceeded", "Rate limit reached for model. Please try again in 7.5s."),
    500: ("internal_server_error", "internal_server_error", "Internal Server Error"),
    503: ("internal_server_error", "service_unavailable", "Service Unavailable"),
}


class FakeGroq(BackgroundServer):
    """Groq's ``/openai/v1/chat/completions`` on 127.0.0.1. Set attributes to script it.

    ``reply``: what the model says (default: a short greeting in four pieces).
    ``first_chunk_delay_s`` / ``chunk_interval_s``: pacing.
    Faults: ``error_status`` (+ ``error_times``: how many requests fail, None = all),
    ``drop_after_chunks`` (connection closed mid-body), ``stall_after_chunks`` (nothing more is
    sent, the socket stays open), ``sse_error_after_chunks`` (an SSE error event).
    Recordings: ``requests`` (``GroqRequest``), with ``client_disconnected`` set when the client
    closed the stream before the fake had finished sending.
    """

    def __init__(self, api_key: str = "gsk-test-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.reply: Reply = ["Hello", " from", " the fake", " Groq."]
        self.first_chunk_delay_s = 0.0
        self.chunk_interval_s = 0.0
        self.error_status: int | None = None
        self.error_times: int | None = None
        self.drop_after_chunks: int | None = None
        self.stall_after_chunks: int | None = None
        self.sse_error_after_chunks: int | None = None
        self.requests: list[GroqRequest] = []

    def env(self) -> dict[str, str]:
        """Environment variables pointing the project's settings at this fake (for subprocesses)."""
        return {"GROQ_API_KEY": self.api_key, "GROQ_BASE_URL": self.http_url}

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/openai/v1/chat/completions", self._completions)
        return app

    @staticmethod
    def _error(status: int, headers: dict[str, str] | None = None) -> web.Response:
        kind, code, message = _ERRORS.get(status, ("api_error", "error", f"HTTP {status}"))
        return web.json_response(
            {"error": {"message": message, "type": kind, "code": code}}, status=status, headers=headers
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        record = GroqRequest(body=body, authorization=request.headers.get("Authorization", ""))
        self.requests.append(record)
        if record.authorization != f"Bearer {self.api_key}":
            record.status = 401
            return self._error(401)
        if self.error_status is not None and (self.error_times is None or self.error_times > 0):
            if self.error_times is not None:
                self.error_times -= 1
            record.status = self.error_status
            headers = {"retry-after": "7"} if self.error_status == 429 else None
            return self._error(self.error_status, headers)
        if not body.get("stream"):
            record.status = 400
            return self._error(400)
        items = self.reply(body) if callable(self.reply) else list(self.reply)
        chunks = list(_chunks_for(items, model=str(body.get("model", ""))))
        record.chunks_planned = len(chunks)
        if self.first_chunk_delay_s and not await sleep_while_connected(request, self.first_chunk_delay_s):
            record.client_disconnected = True
            return web.Response(status=499)
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-request-id": f"req_{uuid.uuid4().hex[:26]}",
            },
        )
        await response.prepare(request)
        try:
            for i, chunk in enumerate(chunks):
                if (
                    i
                    and self.chunk_interval_s
                    and not await sleep_while_connected(request, self.chunk_interval_s)
                ):
                    record.client_disconnected = True
                    return response
                if self.drop_after_chunks is not None and i >= self.drop_after_chunks:
                    assert request.transport is not None
                    request.transport.close()  # no terminating chunk: the body breaks off
                    return response
                if self.stall_after_chunks is not None and i >= self.stall_after_chunks:
                    if not await sleep_while_connected(request, 120):
                        record.client_disconnected = True
                    return response
                if self.sse_error_after_chunks is not None and i >= self.sse_error_after_chunks:
                    error = {
                        "error": {"message": "Service overloaded mid-stream", "type": "internal_server_error"}
                    }
                    await response.write(f"data: {json.dumps(error)}\n\n".encode())
                    await response.write_eof()
                    return response
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
                record.chunks_sent += 1
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            record.completed = True
        except ConnectionError:
            record.client_disconnected = True
        except asyncio.CancelledError:
            record.client_disconnected = True
            raise
        return response


def _chunks_for(items: list[ReplyItem], *, model: str) -> Iterator[dict[str, Any]]:
    """The ChatCompletionChunk objects Groq would stream for ``items``."""
    completion_id = f"chatcmpl-{uuid.uuid4()}"
    request_id = f"req_{uuid.uuid4().hex[:26]}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, x_groq: dict[str, Any] | None = None) -> dict:
        c: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake0000",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if x_groq is not None:
            c["x_groq"] = x_groq
        return c

    yield chunk({"role": "assistant", "content": ""}, x_groq={"id": request_id})
    text_tokens = 0
    tool_index = 0
    for item in items:
        if isinstance(item, str):
            text_tokens += max(1, len(item.split()))
            yield chunk({"content": item})
            continue
        if isinstance(item, FakeReasoning):
            yield chunk({"reasoning": item.text})
            continue
        call_id = item.id or f"call_{uuid.uuid4().hex[:24]}"
        args = item.arguments_json()
        if item.fragments <= 1:
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": tool_index,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": item.name, "arguments": args},
                        }
                    ]
                }
            )
        else:
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": tool_index,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": item.name, "arguments": ""},
                        }
                    ]
                }
            )
            step = max(1, -(-len(args) // item.fragments))
            for j in range(0, len(args), step):
                yield chunk(
                    {"tool_calls": [{"index": tool_index, "function": {"arguments": args[j : j + step]}}]}
                )
        tool_index += 1
    finish = "tool_calls" if tool_index else "stop"
    usage = {
        "queue_time": 0.01,
        "prompt_tokens": 42,
        "prompt_time": 0.002,
        "completion_tokens": text_tokens + 10 * tool_index,
        "completion_time": 0.02,
        "total_tokens": 42 + text_tokens + 10 * tool_index,
        "total_time": 0.022,
    }
    yield chunk({}, finish=finish, x_groq={"id": request_id, "usage": usage})


@pytest.fixture
def fake_groq(settings: Any) -> Iterator[FakeGroq]:
    """A running ``FakeGroq`` with the Groq settings pointed at it and engines reset."""
    from media_ws.providers import reset_engines

    server = FakeGroq().start()
    for name, value in server.env().items():
        setattr(settings, name, value)
    reset_engines()
    try:
        yield server
    finally:
        # Engines read the settings on each use and SDK clients are cached per settings, so
        # nothing built against this fake is reused once the settings are restored.
        server.stop()

"""Groq streaming chat completions (groq 1.x, OpenAI-compatible) behind ``LanguageModel``.

``GroqLLM.stream(messages, tools)`` is an async generator of ``TextDelta`` and ``ToolCall``:

* The request: ``AsyncGroq.chat.completions.create(model=GROQ_MODEL, messages, stream=True,
  tools=[{"type": "function", "function": {name, description, parameters}}], tool_choice="auto")``.
* The stream is always consumed inside ``async with stream:``, so closing the generator
  (``aclose()``, e.g. on barge-in) or cancelling the task that iterates it closes the HTTP
  response and Groq stops generating. A bare ``break`` would leave the connection streaming
  (groq 1.7 ``AsyncStream.close()`` is the only thing that releases it).
* Tool calls: Groq usually sends a whole call (id, name, complete JSON arguments) in one delta, but
  OpenAI-style fragments (name first, arguments in pieces) are accumulated by ``index`` too. Calls
  are yielded once complete: when a chunk carries ``finish_reason``, or at the end of the stream.
  Arguments that are not a JSON object raise ``LLMError(kind="bad_response")``: acting on a guessed
  argument set (``end_call``/``transfer_to_human``) is worse than the session's apology and retry.
  Empty arguments mean ``{}``.
* ``delta.reasoning`` (reasoning models) is never spoken and is ignored.

Timeouts and retries, chosen for a live turn (the caller is waiting in silence):

* ``GROQ_FIRST_TOKEN_TIMEOUT_S`` (4 s) is the **first-token deadline**: from the call to
  ``stream()`` to the first text or tool-call delta, including any retry. It is kept short because
  the caller sits in dead air until the apology.
* ``GROQ_TIMEOUT_S`` (10 s) is the httpx read/write/pool timeout of the request (connect: 2 s): a
  stall after the first token is caught by it (``httpx.ReadTimeout``).
* The SDK's own retries are off (``max_retries=0``, see ``clients.py``): it honours ``Retry-After``
  up to 60 s and retries 429s, neither of which a live turn can afford. Instead one immediate-ish
  retry (after ``RETRY_DELAY_S``) is made for a connection failure or a 5xx before any output,
  and only if the deadline leaves room - that recovers a stale pooled keep-alive connection or a
  one-off server error, the common transient cases.

Errors (groq 1.7 ``_exceptions.py``; mid-stream transport errors are NOT wrapped by the SDK, they
surface as httpx exceptions) → ``LLMError.kind``:
``AuthenticationError``/``PermissionDeniedError`` → ``auth``; ``RateLimitError``,
``InternalServerError``, ``APIConnectionError`` → ``unavailable``; ``APITimeoutError``,
``httpx.TimeoutException``, the first-token deadline → ``timeout``; ``httpx.HTTPError``
(``RemoteProtocolError``...) or an SSE ``{"error": ...}`` (``groq.APIError``) mid-stream →
``dropped``; other 4xx, unparsable chunks or tool arguments → ``bad_response``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import groq
import httpx
from django.conf import settings

from media_ws.errors import LLMError
from media_ws.providers.base import LanguageModel, LLMEvent, TextDelta, ToolCall, ToolSpec
from media_ws.providers.clients import groq_client

log = logging.getLogger(__name__)

#: Pause before the single retry of a failed request (connection error or 5xx), s.
RETRY_DELAY_S = 0.2


@dataclass
class _PartialToolCall:
    """A tool call being assembled from stream deltas."""

    id: str = ""
    name: str = ""
    arguments: str = ""
    parts: int = 0

    def finish(self, index: int) -> ToolCall:
        if not self.name:
            raise LLMError(f"tool call #{index} without a function name", kind="bad_response")
        try:
            args = json.loads(self.arguments) if self.arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise LLMError(
                f"tool call {self.name!r} has arguments that are not JSON", kind="bad_response"
            ) from exc
        if not isinstance(args, dict):
            raise LLMError(
                f"tool call {self.name!r} has arguments that are not a JSON object", kind="bad_response"
            )
        return ToolCall(id=self.id or f"call_{index}", name=self.name, arguments=args)


@dataclass
class _ToolCallAccumulator:
    calls: dict[int, _PartialToolCall] = field(default_factory=dict)

    def add(self, delta_calls: list[Any]) -> None:
        for tc in delta_calls:
            index = getattr(tc, "index", None)
            slot = self.calls.setdefault(index if index is not None else len(self.calls), _PartialToolCall())
            slot.parts += 1
            if getattr(tc, "id", None):
                slot.id = tc.id
            fn = getattr(tc, "function", None)
            if fn is not None:
                if getattr(fn, "name", None):
                    slot.name += fn.name
                if getattr(fn, "arguments", None):
                    slot.arguments += fn.arguments

    def drain(self) -> list[ToolCall]:
        done = [self.calls[i].finish(i) for i in sorted(self.calls)]
        self.calls.clear()
        return done


def tool_spec_to_openai(spec: ToolSpec) -> dict[str, Any]:
    """``ToolSpec`` → the OpenAI/Groq function tool JSON ``{"type": "function", "function": {...}}``."""
    return {
        "type": "function",
        "function": {"name": spec.name, "description": spec.description, "parameters": spec.parameters},
    }


def map_groq_error(exc: BaseException, *, mid_stream: bool) -> LLMError:
    """Translate a groq / httpx exception into ``LLMError`` with the right ``kind``."""
    name = type(exc).__name__
    if isinstance(exc, (groq.AuthenticationError, groq.PermissionDeniedError)):
        return LLMError(f"Groq refused the credentials ({exc.status_code})", kind="auth")
    if isinstance(exc, (groq.RateLimitError, groq.InternalServerError)):
        return LLMError(f"Groq is unavailable ({exc.status_code})", kind="unavailable")
    if isinstance(exc, groq.APIStatusError):
        return LLMError(f"Groq rejected the request ({exc.status_code}: {exc.message})", kind="bad_response")
    if isinstance(exc, groq.APITimeoutError):
        return LLMError("Groq did not answer in time", kind="timeout")
    if isinstance(exc, groq.APIConnectionError):
        return LLMError(f"cannot reach Groq ({exc.message})", kind="unavailable")
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return LLMError(f"Groq stream timed out ({name})", kind="timeout")
    if isinstance(exc, httpx.HTTPError):
        return LLMError(f"Groq stream broke ({name})", kind="dropped" if mid_stream else "unavailable")
    if isinstance(exc, groq.APIError):  # an SSE {"error": ...} event in the middle of the stream
        return LLMError(f"Groq stream error: {exc.message}", kind="dropped")
    if isinstance(exc, ValueError):  # a chunk that is not JSON
        return LLMError(f"Groq sent an unreadable chunk ({name})", kind="bad_response")
    return LLMError(f"Groq failed ({name})", kind="unavailable")


_GROQ_ERRORS = (groq.GroqError, httpx.HTTPError, TimeoutError, ValueError)


class GroqLLM(LanguageModel):
    """Groq chat completions, streamed. Settings are read on each ``stream()`` call.

    ``temperature`` and ``max_completion_tokens`` suit short spoken answers (a phone reply of
    one or two sentences is well under 300 tokens).
    """

    name = "groq"

    def __init__(self, *, temperature: float = 0.3, max_completion_tokens: int = 300) -> None:
        self.temperature = temperature
        self.max_completion_tokens = max_completion_tokens

    async def stream(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> AsyncIterator[LLMEvent]:
        """Stream one reply to ``messages`` (OpenAI-style dicts) offering ``tools``.

        Yields ``TextDelta`` in order and ``ToolCall`` when a call is complete. Closing the
        generator or cancelling its task closes the HTTP stream. Raises ``LLMError``: ``timeout``
        when no delta came within ``GROQ_FIRST_TOKEN_TIMEOUT_S`` seconds or a read stalled for
        ``GROQ_TIMEOUT_S`` seconds (other kinds: see the module docstring).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(settings.GROQ_FIRST_TOKEN_TIMEOUT_S)
        try:
            client = await groq_client()
        except groq.GroqError as exc:  # e.g. no API key at all
            raise LLMError(f"Groq client unavailable: {exc}", kind="auth") from exc
        request: dict[str, Any] = {
            "model": settings.GROQ_MODEL,
            "messages": messages,
            "stream": True,
            "temperature": self.temperature,
            "max_completion_tokens": self.max_completion_tokens,
        }
        if tools:
            request["tools"] = [tool_spec_to_openai(t) for t in tools]
            request["tool_choice"] = "auto"
        stream = await self._open(client, request, deadline)
        calls = _ToolCallAccumulator()
        got_output = False
        async with stream:  # closes the HTTP response on every exit: end, error, aclose(), cancel
            while True:
                try:
                    if got_output:
                        chunk = await anext(stream)
                    else:
                        async with asyncio.timeout_at(deadline):
                            chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    raise LLMError(
                        f"no output from Groq within {settings.GROQ_FIRST_TOKEN_TIMEOUT_S:g} s",
                        kind="timeout",
                    ) from exc
                except _GROQ_ERRORS as exc:
                    raise map_groq_error(exc, mid_stream=True) from exc
                for choice in chunk.choices or []:
                    if choice.index not in (0, None):
                        continue
                    delta = choice.delta
                    if delta is not None:
                        if delta.content:
                            got_output = True
                            yield TextDelta(delta.content)
                        if delta.tool_calls:
                            got_output = True
                            calls.add(delta.tool_calls)
                    if choice.finish_reason:
                        if choice.finish_reason == "length":
                            log.info("Groq reply cut at max_completion_tokens=%d", self.max_completion_tokens)
                        for call in calls.drain():
                            yield call
            for call in calls.drain():
                yield call

    async def _open(self, client: Any, request: dict[str, Any], deadline: float) -> Any:
        """Start the request (one retry for a connection failure or 5xx, within ``deadline``)."""
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            try:
                async with asyncio.timeout_at(deadline):
                    return await client.chat.completions.create(**request)
            except TimeoutError as exc:
                raise LLMError(
                    f"Groq did not answer within {settings.GROQ_FIRST_TOKEN_TIMEOUT_S:g} s", kind="timeout"
                ) from exc
            except (groq.InternalServerError, groq.APIConnectionError) as exc:
                retryable = not isinstance(exc, groq.APITimeoutError)
                if attempt == 1 and retryable and loop.time() + RETRY_DELAY_S < deadline:
                    log.warning("Groq request failed (%s); retrying once", type(exc).__name__)
                    await asyncio.sleep(RETRY_DELAY_S)
                    continue
                raise map_groq_error(exc, mid_stream=False) from exc
            except _GROQ_ERRORS as exc:
                raise map_groq_error(exc, mid_stream=False) from exc
        raise AssertionError("unreachable")  # pragma: no cover

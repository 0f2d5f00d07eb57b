"""One Deepgram and one Groq SDK client per process, reused by every call.

Why one: each SDK client owns an httpx connection pool (TLS sessions stay warm between requests)
and building one costs ~45-90 ms of CPU (httpx's SSL context; measured with
``AsyncDeepgramClient(api_key="k")`` / ``AsyncGroq(api_key="k")`` on this machine). So clients are
built once, **in a worker thread** (``asyncio.to_thread``) so the event loop that carries every
live call's audio never stalls on a constructor.

Why "per event loop": an ``httpx.AsyncClient`` binds its pooled connections to the loop it is first
used in; reusing it from another loop fails ("Event loop is closed", or a future attached to a
different loop). Daphne runs one loop per process, so in production this is one client per
process; the tests run one loop per test and get fresh clients each time. The cache is a
``WeakKeyDictionary`` keyed by the loop (a closed, collected loop drops its clients) and, inside,
by the settings a client was built from, so a test that points the settings at another fake gets a
client for that fake.

API keys are passed to the SDKs and never logged (the Deepgram client also redacts its
``Authorization`` header in the websockets debug log).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:  # the SDKs are imported where a client is first built
    from deepgram import AsyncDeepgramClient
    from groq import AsyncGroq

#: Connect timeout for both SDKs, s. A healthy TLS connect to either API takes well under a
#: second; beyond two the call is better served by an apology than by more waiting.
CONNECT_TIMEOUT_S = 2.0


class _LoopClients:
    """The clients built for one event loop, and the lock that serialises building them."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.clients: dict[Hashable, Any] = {}


_registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def _for_running_loop() -> _LoopClients:
    loop = asyncio.get_running_loop()
    with _registry_lock:
        entry = _registry.get(loop)
        if entry is None:
            entry = _registry[loop] = _LoopClients()
        return entry


async def _client(key: Hashable, build: Callable[[], Any]) -> Any:
    entry = _for_running_loop()
    client = entry.clients.get(key)
    if client is not None:
        return client
    async with entry.lock:
        client = entry.clients.get(key)
        if client is None:
            client = await asyncio.to_thread(build)
            entry.clients[key] = client
        return client


def _deepgram_key() -> tuple[Hashable, ...]:
    return (
        "deepgram",
        settings.DEEPGRAM_API_KEY,
        settings.DEEPGRAM_API_URL,
        settings.DEEPGRAM_WS_URL,
        float(settings.DEEPGRAM_TTS_TIMEOUT_S),
    )


def _build_deepgram(api_key: str, api_url: str, ws_url: str, timeout_s: float) -> AsyncDeepgramClient:
    import httpx
    from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment

    production = DeepgramClientEnvironment.PRODUCTION
    environment = DeepgramClientEnvironment(
        base=api_url.rstrip("/"),  # REST (speak)
        production=ws_url.rstrip("/"),  # WebSockets (listen)
        agent=production.agent,  # the Voice Agent API is not used
        agent_rest=production.agent_rest,
    )
    # Our own httpx client so its timeouts are ours: the SDK's default is 60 s per read, far
    # too long for a live call (a TTS stream that stalls must fail in seconds).
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
        follow_redirects=True,
    )
    # max_retries=0: the streamed speak endpoint is never retried by the SDK anyway, and the
    # session's apology is quicker than a retry ladder.
    return AsyncDeepgramClient(api_key=api_key, environment=environment, httpx_client=http, max_retries=0)


async def deepgram_client() -> AsyncDeepgramClient:
    """The Deepgram client for the running loop and the current settings (built on first use).

    Uses ``DEEPGRAM_API_KEY``, ``DEEPGRAM_API_URL`` (REST base), ``DEEPGRAM_WS_URL`` (WebSocket
    base) and ``DEEPGRAM_TTS_TIMEOUT_S`` (httpx read/write/pool timeout, s). Must be awaited inside
    a running loop.
    """
    key = _deepgram_key()
    return await _client(key, lambda: _build_deepgram(*key[1:]))


def _groq_key() -> tuple[Hashable, ...]:
    return ("groq", settings.GROQ_API_KEY, settings.GROQ_BASE_URL or None, float(settings.GROQ_TIMEOUT_S))


def _build_groq(api_key: str, base_url: str | None, timeout_s: float) -> AsyncGroq:
    import httpx
    from groq import AsyncGroq

    # max_retries=0: GroqLLM does its own single, bounded retry (see groq_llm.py for why the
    # SDK's policy - honouring Retry-After up to 60 s, retrying 429s - does not suit a live turn).
    return AsyncGroq(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
    )


async def groq_client() -> AsyncGroq:
    """The Groq client for the running loop and the current settings (built on first use).

    Uses ``GROQ_API_KEY``, ``GROQ_BASE_URL`` (empty: the SDK default, api.groq.com; the SDK appends
    ``/openai/v1/...``) and ``GROQ_TIMEOUT_S`` (httpx read/write/pool timeout, s).
    """
    key = _groq_key()
    return await _client(key, lambda: _build_groq(*key[1:]))


async def aclose_clients() -> None:
    """Close and forget every client built for the running loop (shutdown, test teardown)."""
    loop = asyncio.get_running_loop()
    with _registry_lock:
        entry = _registry.pop(loop, None)
    if entry is None:
        return
    for client in entry.clients.values():
        await _aclose(client)


async def _aclose(client: Any) -> None:
    close = getattr(client, "close", None)  # AsyncGroq.close()
    if close is not None:
        await close()
        return
    wrapper = getattr(client, "_client_wrapper", None)  # AsyncDeepgramClient: our own httpx client
    http = getattr(getattr(wrapper, "httpx_client", None), "httpx_client", None)
    if http is not None:
        await http.aclose()


def forget_clients() -> None:
    """Drop every cached client without closing it (their loops may be gone); for tests."""
    with _registry_lock:
        _registry.clear()

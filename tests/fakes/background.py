"""Run an aiohttp application on 127.0.0.1 in a background thread with its own event loop.

The protocol fakes (Deepgram, Groq) are real servers on a random free port, so they serve sync
tests, async tests (whose loop is a different one) and a Daphne subprocess alike. State they record
is plain Python objects written by the server thread; tests read it (appends and attribute writes
are atomic under the GIL) and poll with ``wait_until`` / ``wait_until_sync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

from aiohttp import web

T = TypeVar("T")


class BackgroundServer:
    """Base class: override ``make_app()``; ``start()``/``stop()`` (or use as a context manager).

    ``refuse()`` closes the listening socket (new connections are refused; open ones stay), and
    ``accept()`` listens again on the same port.
    """

    host = "127.0.0.1"
    #: How long ``stop()`` lets open handlers finish before they are cancelled, s.
    shutdown_timeout_s = 0.5

    def __init__(self) -> None:
        self.port: int = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # --- to override --------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        raise NotImplementedError

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        self.call(self._setup())
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            self.call(self._cleanup(), timeout=self.shutdown_timeout_s + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def refuse(self) -> None:
        """Stop listening: connection attempts are refused until ``accept()``."""
        self.call(self._close_site())

    def accept(self) -> None:
        """Listen again on the same port."""
        self.call(self._open_site(self.port))

    # --- helpers ------------------------------------------------------------------------------

    def call(self, coro: Awaitable[T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the server's loop from any thread and return its result."""
        assert self._loop is not None, "server not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule a plain callable on the server's loop (thread-safe)."""
        assert self._loop is not None, "server not started"
        self._loop.call_soon_threadsafe(fn, *args)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def _setup(self) -> None:
        self._runner = web.AppRunner(
            self.make_app(), handle_signals=False, shutdown_timeout=self.shutdown_timeout_s, access_log=None
        )
        await self._runner.setup()
        await self._open_site(0)

    async def _open_site(self, port: int) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, port, reuse_address=True)
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _close_site(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def wait_until(predicate: Callable[[], bool], within: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` every 10 ms from async code; ``AssertionError`` after ``within`` s."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.01)


def wait_until_sync(predicate: Callable[[], bool], within: float = 5.0, what: str = "condition") -> None:
    """``wait_until`` for sync code."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        time.sleep(0.01)


async def sleep_while_connected(request: web.Request, seconds: float) -> bool:
    """Sleep up to ``seconds``; return False as soon as the client has gone away."""
    deadline = time.monotonic() + seconds
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        await asyncio.sleep(min(left, 0.01))

"""The emulator's exchange: every emulated call of this process, on one background event loop.

``EmulatorCarrier`` is called from synchronous code (a DRF view in a Daphne worker thread, a
management command, the bot's tools through ``asyncio.to_thread``). The exchange runs all of the
process's calls as tasks on one asyncio loop in one background thread (started on first use, again
after a fork), never on the server's event loop, so the callee's real-time 20 ms pacing does not
wait on the server, and ``place()`` returns at once while the call rings and runs in the background.

``hangup()`` and ``redirect()`` hand the request to that loop thread-safely and wait for it to be
accepted. An unknown or ended CallSid raises ``CarrierError`` code ``20404`` with
``call_not_active=True``, as Twilio answers "The requested resource … was not found"
(twilio.com/docs/api/errors/20404).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections import OrderedDict
from typing import Any

from calls.carriers import CarrierError
from calls.emulator.call import CallOrder, CallOutcome, EmulatedCall, TwimlError, parse_redirect_twiml
from calls.emulator.transport import NetworkTransport, Transport

logger = logging.getLogger(__name__)

#: Ended calls remembered (for ``wait()`` and for answering 20404 rather than guessing).
_KEEP_ENDED = 500
#: How long a REST-style request waits for the loop to accept it, seconds.
_REQUEST_TIMEOUT_S = 5.0


def not_found(call_sid: str) -> CarrierError:
    """Twilio's answer to an update of a call that does not exist or has ended."""
    return CarrierError(
        "20404", f"The requested resource /Calls/{call_sid} was not found", 404, call_not_active=True
    )


class Exchange:
    """Runs emulated calls on a background loop; see the module docstring.

    ``transport``: how calls reach the server (default ``NetworkTransport``: real HTTP and
    WebSocket, as Twilio). Safe to use from any thread.
    """

    def __init__(self, transport: Transport | None = None) -> None:
        self.transport = transport or NetworkTransport()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._calls: dict[str, EmulatedCall] = {}
        self._runs: dict[str, concurrent.futures.Future[CallOutcome]] = {}
        self._ended: OrderedDict[str, CallOutcome] = OrderedDict()

    # ---- the loop -----------------------------------------------------------------------------
    def loop(self) -> asyncio.AbstractEventLoop:
        """The exchange's event loop, started on first use (again in a forked child process)."""
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            if self._loop is None or self._pid != os.getpid() or not alive:
                self._pid = os.getpid()
                self._calls.clear()
                self._runs.clear()
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name="voicebot-emulator", daemon=True)
                self._thread.start()
                ready.wait(5)
                self._loop = loop
            return self._loop

    def _submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        loop = self.loop()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("call the emulator's exchange from another thread, not from its own loop")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    # ---- calls --------------------------------------------------------------------------------
    def place(self, order: CallOrder) -> None:
        """Start ``order`` in the background; it is registered before this returns."""
        call = EmulatedCall(order, self.transport)
        loop = self.loop()
        with self._lock:
            self._calls[order.call_sid] = call
            self._runs[order.call_sid] = asyncio.run_coroutine_threadsafe(self._run(call), loop)
        logger.info("emulator: calling %s (%s), callee scenario %r", order.to, order.call_sid,
                    order.scenario.name)

    async def _run(self, call: EmulatedCall) -> CallOutcome:
        try:
            outcome = await call.run()
        finally:
            with self._lock:
                self._calls.pop(call.call_sid, None)
                self._ended[call.call_sid] = call.outcome
                while len(self._ended) > _KEEP_ENDED:
                    old, _ = self._ended.popitem(last=False)
                    self._runs.pop(old, None)
        logger.info("emulator: call %s %s (ended by %s, %d s)%s", call.call_sid, outcome.status,
                    outcome.ended_by or "-", outcome.duration_s,
                    f", transferred to {outcome.dialed}" if outcome.dialed else "")
        return outcome

    def hangup(self, call_sid: str) -> None:
        """REST ``Status=completed``. Raises ``CarrierError`` 20404 for an unknown or ended call."""
        self._submit(self._update(call_sid, None)).result(_REQUEST_TIMEOUT_S)

    def redirect(self, call_sid: str, twiml: str) -> None:
        """REST ``Twiml=…`` on a live call (the transfer). Raises ``CarrierError``: 20404 for an
        unknown or ended call, 21220 for a call not yet answered, 12100/unsupported for TwiML the
        emulator cannot run."""
        try:
            document = parse_redirect_twiml(twiml)
        except TwimlError as exc:
            raise CarrierError(exc.code, exc.message, 400) from exc
        self._submit(self._update(call_sid, document)).result(_REQUEST_TIMEOUT_S)

    async def _update(self, call_sid: str, document: Any) -> None:
        call = self._calls.get(call_sid)
        if call is None or call.finished or call.ending:
            raise not_found(call_sid)
        if document is None:
            await call.hangup()
            return
        if not call.answered:
            raise CarrierError("21220", "Invalid call state: the call is not in progress", 400,
                               call_not_active=True)
        await call.redirect(document)

    def close(self, timeout_s: float = 10.0) -> None:
        """Cancel the calls still running and stop the loop thread (tests; the process's own
        exchange lives as long as the process)."""
        with self._lock:
            loop, thread, runs = self._loop, self._thread, list(self._runs.values())
            self._loop = self._thread = None
        if loop is None or thread is None or not thread.is_alive():
            return
        for run in runs:
            run.cancel()

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if tasks:
                await asyncio.wait(tasks, timeout=timeout_s)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout_s + 1)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        if not thread.is_alive():
            loop.close()

    def is_active(self, call_sid: str) -> bool:
        """Whether ``call_sid`` is ringing or in progress here."""
        with self._lock:
            return call_sid in self._calls

    def wait(self, call_sid: str, timeout_s: float | None = None) -> CallOutcome:
        """Block until ``call_sid`` has ended; its outcome. Raises ``KeyError`` for a call this
        exchange never had, ``TimeoutError`` after ``timeout_s``."""
        with self._lock:
            run = self._runs.get(call_sid)
            ended = self._ended.get(call_sid)
        if run is None:
            if ended is not None:
                return ended
            raise KeyError(call_sid)
        try:
            return run.result(timeout_s)
        except concurrent.futures.TimeoutError as exc:
            raise TimeoutError(f"call {call_sid} still running after {timeout_s} s") from exc


_default: Exchange | None = None
_default_lock = threading.Lock()


def get_exchange() -> Exchange:
    """The process's exchange (created on first use), used by ``EmulatorCarrier``."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Exchange()
        return _default


def close_exchange() -> None:
    """Stop the process's exchange if it was started, cancelling calls still running (test
    sessions call this at their end, so no emulated call outlives them)."""
    global _default
    with _default_lock:
        exchange, _default = _default, None
    if exchange is not None:
        exchange.close()


def set_exchange(exchange: Exchange | None) -> Exchange | None:
    """Replace the process's exchange (e.g. with one on an in-process ``AsgiTransport``); returns
    the previous one. ``None`` goes back to a fresh default on next use."""
    global _default
    with _default_lock:
        previous, _default = _default, exchange
        return previous

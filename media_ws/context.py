"""``get_current_call()``: the live call, reachable from any task that belongs to it.

Every task the call session spawns (the response pipeline, tools, your own handlers) runs in a
context where a ``contextvars.ContextVar`` holds the call's ``CallHandle``; tasks created from those
tasks inherit it. Outside a call ``get_current_call()`` raises ``NoActiveCallError``.

    from media_ws.context import get_current_call

    async def my_tool() -> None:
        call = get_current_call()
        await call.clear()                      # stop the bot's audio at the caller now
        await call.say("Let me check that.")    # speak a line, returns when it is queued
        await call.transfer("+14155550100")     # redirect the live call with <Dial>
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any

from media_ws.errors import NoActiveCallError


class CallHandle(abc.ABC):
    """What a handler or tool can see and do on the live call.

    Identifiers are Twilio's: ``call_sid`` ("CA…"), ``stream_sid`` ("MZ…"); ``custom_parameters`` are
    the ``<Parameter>`` values of the ``<Stream>`` TwiML (strings); ``call_id`` is our ``Call`` row's
    primary key (a UUID string).
    """

    call_sid: str
    stream_sid: str
    custom_parameters: dict[str, str]
    call_id: str

    @abc.abstractmethod
    async def send(self, message: str | dict[str, Any]) -> None:
        """Send one raw Media Streams message (JSON text or a dict) to Twilio on this stream."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Send Twilio ``clear``: drop all bot audio not yet played and stop the current response."""

    @abc.abstractmethod
    async def say(self, text: str) -> None:
        """Speak ``text`` through the call's TTS; returns once its audio has been sent (not played)."""

    @abc.abstractmethod
    async def wait_for_playback(self, timeout_s: float | None = None) -> bool:
        """Wait until every bot audio chunk sent so far has played (its mark echoed).

        Returns False if playback was cut by a barge-in or ``timeout_s`` passed first.
        """

    def response_interrupted(self) -> bool:
        """Whether the caller cut the bot's current response (speech, a keypress or ``clear()``).

        Tells a ``wait_for_playback()`` that returned False because of a barge-in from one that ran
        out of time (marks not echoed). This base implementation knows of no response: False.
        """
        return False

    @abc.abstractmethod
    async def hangup(self, reason: str = "bot-hangup") -> None:
        """End the phone call (carrier REST ``status=completed``) and close the stream cleanly."""

    @abc.abstractmethod
    async def transfer(self, to: str) -> None:
        """Redirect the live call to ``to`` (E.164) with TwiML ``<Dial>``; the stream then ends."""


_current_call: contextvars.ContextVar[CallHandle] = contextvars.ContextVar("voicebot_current_call")


def get_current_call() -> CallHandle:
    """The ``CallHandle`` of the call whose task is running.

    Raises ``NoActiveCallError`` when called outside a task spawned for a live call.
    """
    try:
        return _current_call.get()
    except LookupError:
        raise NoActiveCallError(
            "get_current_call() was called outside a live call: only tasks spawned by a call session "
            "(its response pipeline, tools and handlers) can reach the call"
        ) from None


def spawn_in_call(handle: CallHandle, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
    """Start ``coro`` as a task whose ``get_current_call()`` returns ``handle``."""
    ctx = contextvars.copy_context()
    ctx.run(_current_call.set, handle)
    return asyncio.get_running_loop().create_task(coro, name=name, context=ctx)

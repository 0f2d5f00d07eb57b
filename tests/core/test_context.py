"""get_current_call(): the live call is reachable from every task spawned for it, and only there."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from media_ws.context import CallHandle, get_current_call, spawn_in_call
from media_ws.errors import NoActiveCallError


class Handle(CallHandle):
    """A minimal call handle; what matters here is which tasks can see it."""

    def __init__(self, call_sid: str) -> None:
        self.call_sid, self.stream_sid = call_sid, "MZ" + call_sid[2:]
        self.custom_parameters, self.call_id = {"call_id": call_sid}, call_sid
        self.sent: list[Any] = []

    async def send(self, message: Any) -> None:
        self.sent.append(message)

    async def clear(self) -> None:
        self.sent.append("clear")

    async def say(self, text: str) -> None:
        self.sent.append(text)

    async def wait_for_playback(self, timeout_s: float | None = None) -> bool:
        return True

    async def hangup(self, reason: str = "bot-hangup") -> None:
        self.sent.append("hangup")

    async def transfer(self, to: str) -> None:
        self.sent.append(("transfer", to))


def test_outside_a_call_it_raises_a_clear_error():
    with pytest.raises(NoActiveCallError, match="outside a live call"):
        get_current_call()


async def test_tasks_spawned_for_a_call_and_their_own_subtasks_see_that_call():
    first, second = Handle("CA" + "1" * 32), Handle("CA" + "2" * 32)

    async def tool() -> str:
        nested = asyncio.create_task(asyncio.sleep(0, result=get_current_call().call_sid))
        await get_current_call().clear()
        return await nested

    results = await asyncio.gather(
        spawn_in_call(first, tool(), name="tool-1"), spawn_in_call(second, tool(), name="tool-2")
    )
    assert results == [first.call_sid, second.call_sid]  # two concurrent calls never mix
    assert first.sent == ["clear"] and second.sent == ["clear"]
    with pytest.raises(NoActiveCallError):
        get_current_call()  # the spawning task itself is not inside either call

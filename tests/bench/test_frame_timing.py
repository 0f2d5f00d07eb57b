"""The consumer's benchmark hook (``MEDIA_FRAME_TIMING_FILE``): on, it writes each frame's
handling delay when the call ends; off, it writes nothing even when frames carry ``bench_ns``.

The call runs through the real ASGI app in-process (Channels' WebsocketCommunicator) with the
emulated Twilio stream, as ``tests/live`` does; the client stamps ``bench_ns`` the way
``bench.calls_per_process`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from channels.testing import WebsocketCommunicator

from calls.emulator.stream import EmulatedMediaStream

pytestmark = pytest.mark.django_db(transaction=True)


async def call_with_stamps(stamp_every: int, frames: int) -> tuple[str, list[int]]:
    """One emulated call of about ``frames`` media frames; every ``stamp_every``-th media message
    carries ``bench_ns``. Returns the callSid and the stamps sent, after the consumer has closed."""
    from voicebot.asgi import application

    comm = WebsocketCommunicator(application, "/media-stream")
    connected, _ = await comm.connect(timeout=5)
    assert connected
    stamps: list[int] = []
    media_seen = 0

    async def send(text: str) -> None:
        nonlocal media_seen
        if text.startswith('{"event":"media"'):
            media_seen += 1
            if media_seen % stamp_every == 0:
                ns = time.monotonic_ns()
                stamps.append(ns)
                text = f'{text[:-1]},"bench_ns":{ns}}}'
        await comm.send_to(text_data=text)

    async def receive() -> str | None:
        out = await comm.receive_output(timeout=3600)
        return None if out["type"] == "websocket.close" else out.get("text")

    stream = EmulatedMediaStream(send, receive)
    runner = asyncio.create_task(stream.run())
    await stream.wait_clock(frames * 20)
    await stream.hang_up()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(runner, 5)
    await comm.send_input({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(comm.future, 10)
    return stream.call_sid, stamps


async def test_timing_file_gets_one_line_per_call_with_every_stamped_frame(settings, tmp_path):
    path = tmp_path / "frames.jsonl"
    settings.MEDIA_FRAME_TIMING_FILE = str(path)
    call_sid, stamps = await call_with_stamps(stamp_every=2, frames=30)

    lines = path.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["call_sid"] == call_sid
    # Exactly the stamped frames (unstamped ones are skipped), in order, each with a positive delay.
    assert record["sent_ns"] == stamps and len(stamps) >= 10
    assert len(record["delay_ns"]) == len(stamps)
    assert all(d > 0 for d in record["delay_ns"])


async def test_timing_file_is_untouched_when_the_setting_is_off(settings, tmp_path):
    path = tmp_path / "frames.jsonl"
    settings.MEDIA_FRAME_TIMING_FILE = ""
    _, stamps = await call_with_stamps(stamp_every=1, frames=15)
    assert stamps  # the frames did carry bench_ns
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []

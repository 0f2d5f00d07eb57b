"""What the emulated Twilio sends on a Media Stream, seen by a small WebSocket server on 127.0.0.1.

The stream (``EmulatedMediaStream``) runs over the emulator's own network transport (a real
``websockets`` client, as for the server); the server plays a bot with a short script and keeps
every message it receives with its arrival time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from calls.emulator.stream import EmulatedMediaStream
from calls.emulator.transport import NetworkTransport

CALL_SID = re.compile(r"^CA[0-9a-f]{32}$")
STREAM_SID = re.compile(r"^MZ[0-9a-f]{32}$")
ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}$")
PARAMETERS = {"call_id": "7d1e0c4e-5f4b-4a5e-9a53-0d1f1f1f1f1f", "lang": "en"}


def ms(n: int) -> str:
    """``n`` ms of bot audio (a non-silent μ-law byte), base64 as in a ``media`` message."""
    return base64.b64encode(b"\x10" * (8 * n)).decode()


class Bot:
    """The server side: records ``(monotonic s, message)`` and runs a script against the stream."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.sent: dict[str, float] = {}  # what -> monotonic s it was sent
        self.script_done = asyncio.Event()
        self.closed = asyncio.Event()
        self._arrived = asyncio.Condition()

    async def wait_for(self, check: Any, timeout_s: float = 5.0) -> None:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: check(self.messages())), timeout_s)

    def messages(self) -> list[dict[str, Any]]:
        return [m for _, m in self.received]

    def echoed(self, name: str) -> float | None:
        return next((t for t, m in self.received if m["event"] == "mark" and m["mark"]["name"] == name), None)

    async def handler(self, ws: ServerConnection) -> None:
        script = asyncio.create_task(self.script(ws))
        try:
            async for raw in ws:
                async with self._arrived:
                    self.received.append((time.monotonic(), json.loads(raw)))
                    self._arrived.notify_all()
        finally:
            script.cancel()
            self.closed.set()

    async def script(self, ws: ServerConnection) -> None:
        sid = None

        async def send(what: str, msg: dict[str, Any]) -> None:
            await ws.send(json.dumps({**msg, "streamSid": sid}))
            self.sent[what] = time.monotonic()

        def media_count(messages: list[dict[str, Any]]) -> int:
            return sum(m["event"] == "media" for m in messages)

        await self.wait_for(lambda ms_: media_count(ms_) >= 60)  # 1.2 s of caller audio
        sid = self.messages()[1]["streamSid"]
        # 200 ms of audio and a mark: echoed once that audio has played.
        await send("audio1", {"event": "media", "media": {"payload": ms(200)}})
        await send("mark1", {"event": "mark", "mark": {"name": "after-200ms"}})
        await self.wait_for(lambda _: self.echoed("after-200ms") is not None)
        # 2 s of audio with two marks, then clear 300 ms in: both marks come back at once.
        await send("audio2", {"event": "media", "media": {"payload": ms(1000)}})
        await send("mark2", {"event": "mark", "mark": {"name": "after-1s"}})
        await send("audio3", {"event": "media", "media": {"payload": ms(1000)}})
        await send("mark3", {"event": "mark", "mark": {"name": "after-2s"}})
        await asyncio.sleep(0.3)
        await send("clear", {"event": "clear"})
        await self.wait_for(lambda _: self.echoed("after-2s") is not None)
        self.script_done.set()


async def test_the_emulated_stream_speaks_twilios_protocol_in_real_time():
    bot = Bot()
    async with serve(bot.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        connection = await NetworkTransport().open_stream(f"ws://127.0.0.1:{port}/media-stream", {})
        stream = EmulatedMediaStream(connection.send, connection.receive, custom_parameters=PARAMETERS)
        runner = asyncio.create_task(stream.run())
        try:
            await asyncio.wait_for(bot.script_done.wait(), 15)
            await asyncio.sleep(0.2)
            await stream.hang_up()
            await asyncio.wait_for(runner, 5)
        finally:
            runner.cancel()
            await connection.close()
        await asyncio.wait_for(bot.closed.wait(), 5)

    messages = bot.messages()
    connected, start, *rest = messages
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["event"] == "start" and STREAM_SID.match(start["streamSid"])
    body = start["start"]
    assert CALL_SID.match(body["callSid"]) and ACCOUNT_SID.match(body["accountSid"])
    assert body["streamSid"] == start["streamSid"] == stream.stream_sid
    assert body["callSid"] == stream.call_sid
    assert body["customParameters"] == PARAMETERS
    assert body["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}

    # Every later message carries the stream's SID and the next sequence number; stop is the last.
    assert [m["sequenceNumber"] for m in [start, *rest]] == [str(n) for n in range(1, len(rest) + 2)]
    assert all(m["streamSid"] == start["streamSid"] for m in rest)
    assert rest[-1]["event"] == "stop" and sum(m["event"] == "stop" for m in messages) == 1
    assert rest[-1]["stop"] == {"accountSid": body["accountSid"], "callSid": body["callSid"]}

    # media: 20 ms of line silence each, chunks and timestamps contiguous, paced in real time.
    media = [(t, m["media"]) for t, m in bot.received if m["event"] == "media"]
    assert len(media) >= 90  # 1.2 s before the script, then about 0.7 s more
    assert [int(m["chunk"]) for _, m in media] == list(range(1, len(media) + 1))
    assert [int(m["timestamp"]) for _, m in media] == [20 * k for k in range(len(media))]
    assert all(m["track"] == "inbound" and base64.b64decode(m["payload"]) == b"\xff" * 160 for _, m in media)
    for k in range(0, len(media) - 50, 10):
        assert 0.9 <= media[k + 50][0] - media[k][0] <= 1.2, f"50 frames from chunk {k + 1}"

    # The first mark comes back once its 200 ms have played, not before.
    waited = bot.echoed("after-200ms") - bot.sent["mark1"]
    assert 0.17 <= waited <= 0.3, waited
    # clear: the two pending marks come back at once, in order, before any more audio could play.
    marks = [m["mark"]["name"] for m in messages if m["event"] == "mark"]
    assert marks == ["after-200ms", "after-1s", "after-2s"]
    for name in ("after-1s", "after-2s"):
        assert 0 <= bot.echoed(name) - bot.sent["clear"] <= 0.05, name
    assert [(name, played) for _, name, played in stream.log.mark_echoes] == [
        ("after-200ms", True),
        ("after-1s", False),
        ("after-2s", False),
    ]
    # What the caller heard: the first 200 ms and the ~300 ms before the clear, nothing after it.
    heard_ms = sum(1 for b in stream.bot_audio if b == 0x10) // 8
    assert 460 <= heard_ms <= 580, heard_ms


async def test_media_frames_carry_the_callers_audio_in_order_then_line_silence():
    """Bytes queued with ``say`` leave in 160-byte frames, in order, the last padded with silence."""
    frames: list[bytes] = []
    enough = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            if msg["event"] == "media":
                frames.append(base64.b64decode(msg["media"]["payload"]))
                if len(frames) >= 5:
                    enough.set()

    speech = bytes(range(256)) + bytes(range(144))  # 400 bytes = 50 ms
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        connection = await NetworkTransport().open_stream(f"ws://127.0.0.1:{port}/media-stream", {})
        stream = EmulatedMediaStream(connection.send, connection.receive)
        ended = stream.say(speech)
        runner = asyncio.create_task(stream.run())
        try:
            assert await asyncio.wait_for(ended, 5) == 50  # the call-clock ms the speech ended
            await asyncio.wait_for(enough.wait(), 5)
            await stream.hang_up()
            await asyncio.wait_for(runner, 5)
        finally:
            runner.cancel()
            await connection.close()
    assert b"".join(frames[:3]) == speech.ljust(480, b"\xff")
    assert frames[3] == frames[4] == b"\xff" * 160
    assert bytes(stream.caller_audio[:480]) == speech.ljust(480, b"\xff")

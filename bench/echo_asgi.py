"""The ceiling for ``bench.calls_per_process``: a bare ASGI app (no Django, no Channels) that does
the real per-frame work of a call and echoes every frame back.

Served by the same command as the product (``daphne bench.echo_asgi:application``). On
``/media-stream``, for each message it does what the product's frame path does without its
framework and providers:

- ``MediaStreamParser.receive`` (the project's parser: ``json.loads``, field checks, base64);
- on ``media``: ``Reframer`` to exact 20 ms frames, ``ulaw_to_pcm16`` and the barge-in detector
  (``BargeInDetector.feed``: webrtcvad plus its noise gate, the product's defaults) on each frame;
- then sends a ``media`` message with the same audio back (``build_media``): 50 outbound messages
  a second per call, the "echo" worst case of performance.md section 4 (the product sends bot
  audio in 200 ms chunks, in bursts).

No STT, TTS, LLM, database or channel layer. With ``MEDIA_FRAME_TIMING_FILE`` set it records each
frame's handling delay (client send → echo sent) and writes it at the end of the call in the same
line format as ``media_ws.frame_timing.FrameTiming``.
"""

from __future__ import annotations

import json
import os
import re
import time
from array import array
from typing import Any

from media_ws.audio import Reframer, ulaw_to_pcm16
from media_ws.errors import ProtocolError
from media_ws.protocol import Media, MediaStreamParser, Start, Stop, build_media
from media_ws.vad import BargeInConfig, BargeInDetector

_KEY = '"bench_ns":'
_DIGITS = re.compile(r"\d+")


def _write_timing(path: str, call_sid: str, sent: array, delay: array) -> None:
    if not sent:
        return
    line = json.dumps(
        {"pid": os.getpid(), "call_sid": call_sid, "sent_ns": sent.tolist(), "delay_ns": delay.tolist()}
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def _media_stream(receive: Any, send: Any) -> None:
    timing_file = os.environ.get("MEDIA_FRAME_TIMING_FILE", "")
    sent_ns, delay_ns = array("q"), array("q")
    parser = MediaStreamParser()
    reframer = Reframer()
    detector = BargeInDetector(BargeInConfig())
    stream_sid = ""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                continue
            try:
                event = parser.receive(text)
            except ProtocolError:
                continue
            if type(event) is Media:
                for frame, frame_ms in reframer.feed(event.payload, event.timestamp_ms):
                    detector.feed(ulaw_to_pcm16(frame), frame_ms)
                await send({"type": "websocket.send", "text": build_media(stream_sid, event.payload)})
                if timing_file:
                    done = time.monotonic_ns()
                    i = text.rfind(_KEY)
                    digits = _DIGITS.match(text, i + len(_KEY)) if i >= 0 else None
                    if digits is not None:
                        sent = int(digits.group())
                        sent_ns.append(sent)
                        delay_ns.append(done - sent)
            elif type(event) is Start:
                stream_sid = event.stream_sid
            elif type(event) is Stop:
                await send({"type": "websocket.close", "code": 1000})
                return
    finally:
        if timing_file:
            _write_timing(timing_file, parser.call_sid or "-", sent_ns, delay_ns)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI 3 entry point: the echo stream on ``/media-stream``, 404 for anything else."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket" and scope.get("path") == "/media-stream":
        await _media_stream(receive, send)
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.close", "code": 4404})
    elif scope["type"] == "http":
        await send(
            {"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"not found"})

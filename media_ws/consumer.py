"""The Twilio Media Streams WebSocket at ``/media-stream``: a thin shell around ``CallSession``.

It authenticates the handshake, parses each text frame with ``MediaStreamParser``, hands events
to the call's session and forwards channel-layer control messages (``call.hangup``,
``call.transfer`` on group ``call_<CallSid>``) from the API, tools or other processes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from array import array
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from twilio.request_validator import RequestValidator

from media_ws.errors import ProtocolError
from media_ws.protocol import Dtmf, Mark, Media, MediaStreamParser, Start, Stop
from media_ws.session import CallSession, open_session

logger = logging.getLogger(__name__)

#: Close code for a refused handshake; sent before ``accept()``, Daphne answers HTTP 403.
FORBIDDEN = 4403


def handshake_signature_ok(scope: dict[str, Any], auth_token: str, public_base_url: str) -> bool:
    """Check ``X-Twilio-Signature`` on the WebSocket upgrade request.

    Twilio signs the ``wss://`` URL it connected to (host from ``PUBLIC_BASE_URL``, then path and
    query) with HMAC-SHA1 of the auth token; a GET upgrade has no body parameters. The ``https://``
    form is accepted too, as proxies and tunnels differ in what they report. See
    twilio.com/docs/usage/webhooks/webhooks-security and the Media Streams firewall guide.
    """
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    signature = headers.get("x-twilio-signature", "")
    if not signature:
        return False
    path = scope.get("path", "")
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        path = f"{path}?{query}"
    host = public_base_url.split("://", 1)[-1].rstrip("/")
    validator = RequestValidator(auth_token)
    return any(validator.validate(f"{scheme}://{host}{path}", {}, signature) for scheme in ("wss", "https"))


class FrameTiming:
    """Benchmark instrument: how long each ``media`` frame took from the client's send to the end
    of its handling. Off unless ``MEDIA_FRAME_TIMING_FILE`` is set (``bench.calls_per_process``).

    The benchmark client appends ``"bench_ns": <time.monotonic_ns() at send>`` to each ``media``
    message (the parser ignores unknown fields). After ``session.on_media`` returns, ``record``
    keeps ``(bench_ns, monotonic_ns() - bench_ns)`` in ns; CLOCK_MONOTONIC is one clock for every
    process of a Linux machine. Frames without the field are not recorded. ``write`` appends one
    JSON line per call to the file: ``{"pid", "call_sid", "sent_ns": [...], "delay_ns": [...]}``.
    """

    KEY = '"bench_ns":'
    _DIGITS = re.compile(r"\d+")

    def __init__(self, path: str) -> None:
        self.path = path
        self.sent_ns = array("q")
        self.delay_ns = array("q")

    def record(self, text: str | None) -> None:
        """Note one handled frame, if its message (``text``) carries ``bench_ns``."""
        done = time.monotonic_ns()
        i = text.rfind(self.KEY) if text is not None else -1
        if text is None or i < 0:
            return
        digits = self._DIGITS.match(text, i + len(self.KEY))
        if digits is not None:
            sent = int(digits.group())
            self.sent_ns.append(sent)
            self.delay_ns.append(done - sent)

    def write(self, call_sid: str) -> None:
        """Append this call's samples to the file (once; nothing if none were recorded)."""
        if not self.sent_ns:
            return
        line = json.dumps(
            {
                "pid": os.getpid(),
                "call_sid": call_sid,
                "sent_ns": self.sent_ns.tolist(),
                "delay_ns": self.delay_ns.tolist(),
            }
        )
        # One write() on an O_APPEND descriptor: lines of several calls never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
        self.sent_ns = array("q")
        self.delay_ns = array("q")


class MediaStreamConsumer(AsyncWebsocketConsumer):
    session: CallSession | None = None
    group: str | None = None
    #: Set only when MEDIA_FRAME_TIMING_FILE is (benchmarks): one attribute check per frame otherwise.
    frame_timing: FrameTiming | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels >= 4.2 hops to a thread to close old DB connections before every handler: on a
        # 50-frames-a-second stream that multiplies the per-message cost 3-4x. This consumer only
        # touches the ORM through database_sync_to_async (which closes connections itself), so the
        # frame path skips the hop. Other message types keep the default behaviour.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def connect(self) -> None:
        token = settings.TWILIO_AUTH_TOKEN
        if token and not handshake_signature_ok(self.scope, token, settings.PUBLIC_BASE_URL):
            client = self.scope.get("client") or ("?", 0)
            logger.warning(
                "media stream handshake from %s refused: bad or missing X-Twilio-Signature", client[0]
            )
            await self.close(code=FORBIDDEN)
            return
        self.parser = MediaStreamParser()
        self.rejected = 0
        if settings.MEDIA_FRAME_TIMING_FILE:
            self.frame_timing = FrameTiming(settings.MEDIA_FRAME_TIMING_FILE)
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            event = self.parser.receive(text_data if text_data is not None else (bytes_data or b""))
        except ProtocolError as exc:
            self._reject(exc)
            return
        if type(event) is Media:
            if self.session is not None:
                await self.session.on_media(event)
                if self.frame_timing is not None:
                    self.frame_timing.record(text_data)
        elif type(event) is Mark:
            if self.session is not None:
                self.session.on_mark(event)
        elif type(event) is Start:
            await self._start(event)
        elif type(event) is Dtmf:
            if self.session is not None:
                await self.session.on_dtmf(event)
        elif type(event) is Stop:
            if self.session is not None:
                await self.session.shutdown("stop")
            await self.close()

    def _reject(self, exc: ProtocolError) -> None:
        self.rejected += 1
        call_sid = self.parser.call_sid or "-"
        if self.rejected <= 5 or self.rejected % 100 == 0:
            logger.warning(
                "call %s: dropped a media-stream message (%d so far): %s", call_sid, self.rejected, exc
            )
        if self.session is not None:
            self.session.on_protocol_error(str(exc), self.rejected)

    async def _start(self, start: Start) -> None:
        try:
            self.session = await open_session(start, send=self._send_text, close=self.close)
        except Exception:
            # No session, no conversation: close the stream, so the call ends instead of hanging silent.
            logger.exception("call %s: could not open the call session; closing the stream", start.call_sid)
            await self.close(code=1011)
            return
        self.group = f"call_{start.call_sid}"
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)

    async def disconnect(self, code: int) -> None:
        if self.session is not None:
            await self.session.shutdown("stop" if code in (1000, 1001) else f"disconnect-{code}")
        if self.frame_timing is not None:
            self.frame_timing.write(self.parser.call_sid or "-")
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    # Channel-layer control messages (calls.services sends them to group call_<CallSid>).
    async def call_hangup(self, event: dict[str, Any]) -> None:
        if self.session is not None:
            await self.session.on_remote_hangup(str(event.get("reason", "")))

    async def call_transfer(self, event: dict[str, Any]) -> None:
        if self.session is not None:
            await self.session.on_remote_transfer(str(event.get("to", "")))

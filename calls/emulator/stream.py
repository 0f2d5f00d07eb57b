"""Twilio's end of a bidirectional Media Stream, emulated: the caller's phone as our server sees it.

``EmulatedMediaStream`` speaks the Media Streams protocol from Twilio's side over any transport
(a ``websockets`` client connection, or Channels' ``WebsocketCommunicator`` in tests):

- sends ``connected``, ``start`` (callSid, an ``MZ…`` streamSid, customParameters, mediaFormat),
  then one ``media`` message every 20 ms of the clock with Twilio-style sequence numbers, chunks
  and timestamps: the caller's audio when the script gives some, else line silence;
- plays the bot's ``media`` on a real-time playback clock (``Playout``), echoes each ``mark`` when
  its audio has played, and on ``clear`` drops the buffered audio and echoes the pending marks at
  once, as Twilio does;
- records both legs on the call clock (caller audio sent, bot audio as heard), and every message
  the bot sent with the call-clock time it arrived;
- ends with ``stop`` and a close when told to hang up, or notices when the bot side closes.

Twilio's message formats come from ``media_ws.protocol``
(twilio.com/docs/voice/media-streams/websocket-messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from calls.emulator.playout import Playout
from media_ws.errors import ProtocolError
from media_ws.protocol import OutboundClear, OutboundMark, OutboundMedia, TwilioStreamWriter, parse_outbound

logger = logging.getLogger(__name__)

FRAME_MS = 20
FRAME_BYTES = 160
LINE_SILENCE = b"\xff" * FRAME_BYTES

Send = Callable[[str], Awaitable[None]]
Receive = Callable[[], Awaitable[str | None]]  # None when the bot side closed the socket


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two-letter prefix and 32 hex digits (CA… call, MZ… stream, AC… account)."""
    return prefix + secrets.token_hex(16)


@dataclass
class BotMessage:
    """A message the bot sent, stamped with the call clock when the emulator read it."""

    at_ms: int
    kind: str  # "media", "mark" or "clear"
    size: int = 0  # media payload bytes
    name: str = ""  # mark name


@dataclass
class StreamLog:
    """Everything observed on the stream, for tests, the demo summary and benchmarks."""

    bot_messages: list[BotMessage] = field(default_factory=list)
    mark_echoes: list[tuple[int, str, bool]] = field(default_factory=list)  # (ms, name, played)
    clears: list[int] = field(default_factory=list)  # call-clock ms each clear arrived
    dtmf: list[tuple[int, str]] = field(default_factory=list)
    bad_messages: list[str] = field(default_factory=list)

    def bot_audio_after(self, ms: int) -> int:
        """Bytes of bot media that arrived after call-clock ``ms``."""
        return sum(m.size for m in self.bot_messages if m.kind == "media" and m.at_ms > ms)


class EmulatedMediaStream:
    """One emulated Twilio Media Stream. Start it with ``run()`` and script the caller meanwhile."""

    def __init__(
        self,
        send: Send,
        receive: Receive,
        *,
        call_sid: str | None = None,
        account_sid: str | None = None,
        stream_sid: str | None = None,
        custom_parameters: dict[str, str] | None = None,
        line_noise: bytes | None = None,
        speed: float = 1.0,
    ) -> None:
        self._send_raw = send
        self._receive = receive
        self.call_sid = call_sid or new_sid("CA")
        self.account_sid = account_sid or new_sid("AC")
        self.stream_sid = stream_sid or new_sid("MZ")
        self.custom_parameters = dict(custom_parameters or {})
        self.writer = TwilioStreamWriter(self.stream_sid, self.call_sid, self.account_sid)
        self.playout = Playout()
        self.log = StreamLog()
        self.speed = speed
        self._line_noise = line_noise
        self._noise_pos = 0
        self._mic = bytearray()  # caller audio waiting to be sent
        self._mic_done: list[tuple[int, asyncio.Future[int]]] = []  # (bytes left to send, future)
        self.caller_audio = bytearray()  # what the caller sent, on the call clock (8 bytes per ms)
        self.bot_audio = bytearray()  # what the caller heard, on the call clock
        self.clock_ms = 0
        self.closed = asyncio.Event()
        self.error: BaseException | None = None  # why the bot side failed, if it did
        self._stopping = False
        self._bot_speaking_changed = asyncio.Condition()
        self._bot_speaking = False
        self._bot_started_ms: int | None = None
        self._bot_stopped_ms: int | None = 0
        self._send_lock = asyncio.Lock()

    # ---- the caller's side ------------------------------------------------------------------
    def say(self, ulaw: bytes) -> asyncio.Future[int]:
        """Queue caller audio (μ-law 8 kHz); the future resolves with the call-clock ms it ended."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._mic += ulaw
        self._mic_done.append((len(self._mic), fut))
        return fut

    async def press(self, digit: str) -> None:
        """Send a ``dtmf`` event (the keypad press) now."""
        self.log.dtmf.append((self.clock_ms, digit))
        await self._send(self.writer.dtmf(digit))

    async def hang_up(self) -> None:
        """The caller hangs up: Twilio sends ``stop`` and closes the socket."""
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(Exception):
            await self._send(self.writer.stop())
        self.closed.set()

    async def send_raw(self, text: str) -> None:
        """Send any text frame as if Twilio had sent it (tests use it for malformed input)."""
        await self._send(text)

    @property
    def caller_speaking(self) -> bool:
        return bool(self._mic)

    # ---- the bot's side, as heard ------------------------------------------------------------
    @property
    def bot_speaking(self) -> bool:
        return self._bot_speaking

    async def wait_bot_speaking(self, timeout_s: float = 30.0) -> int:
        """Wait until bot audio is playing at the caller; returns the call-clock ms it started."""
        async with self._bot_speaking_changed:
            await asyncio.wait_for(self._bot_speaking_changed.wait_for(lambda: self._bot_speaking), timeout_s)
        assert self._bot_started_ms is not None
        return self._bot_started_ms

    async def wait_bot_silent(self, for_ms: int = 0, timeout_s: float = 30.0) -> int:
        """Wait until the bot has been silent for ``for_ms``; returns the call-clock ms it stopped."""
        deadline = time.monotonic() + timeout_s
        while True:
            async with self._bot_speaking_changed:
                remaining = deadline - time.monotonic()
                await asyncio.wait_for(
                    self._bot_speaking_changed.wait_for(lambda: not self._bot_speaking), remaining
                )
            stopped = self._bot_stopped_ms or 0
            wait = (stopped + for_ms - self.clock_ms) / 1000 / self.speed
            if wait <= 0:
                return stopped
            await asyncio.sleep(wait)
            if not self._bot_speaking and self._bot_stopped_ms == stopped:
                return stopped
            if time.monotonic() > deadline:
                raise TimeoutError("the bot did not stay silent")

    async def wait_clock(self, ms: int) -> None:
        """Sleep until the call clock reaches ``ms``."""
        while self.clock_ms < ms and not self.closed.is_set():  # noqa: ASYNC110 - the clock ticks every 20 ms
            await asyncio.sleep(max(0.001, (ms - self.clock_ms) / 1000 / self.speed))

    # ---- running -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Open the stream and run it until the caller hangs up or the bot side closes."""
        await self._send(self.writer.connected())
        await self._send(self.writer.start(self.custom_parameters))
        reader = asyncio.create_task(self._read_loop(), name=f"emu-read-{self.call_sid}")
        try:
            await self._tick_loop()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            for _, fut in self._mic_done:
                if not fut.done():
                    fut.cancel()
        if self.error is not None:
            raise self.error

    async def _tick_loop(self) -> None:
        t0 = time.monotonic()
        n = 0
        while not self.closed.is_set():
            n += 1
            target = t0 + n * FRAME_MS / 1000 / self.speed
            delay = target - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closed.wait(), delay)
                if self.closed.is_set():
                    break
            frame_start = self.clock_ms
            self.clock_ms += FRAME_MS
            await self._play_bot_audio(self.clock_ms)
            await self._send_caller_frame(frame_start)

    async def _play_bot_audio(self, now_ms: int) -> None:
        played = self.playout.advance(now_ms)
        self.bot_audio += played.audio
        for name in played.marks:
            self.log.mark_echoes.append((now_ms, name, True))
            await self._send(self.writer.mark(name))
        await self._set_bot_speaking(self.playout.playing or played.bot_ms > 0, now_ms)

    async def _send_caller_frame(self, frame_ms: int) -> None:
        if self._mic:
            frame = bytes(self._mic[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\xff")
            sent = min(FRAME_BYTES, len(self._mic))
            del self._mic[:FRAME_BYTES]
            still = []
            for left, fut in self._mic_done:
                left -= sent
                if left <= 0:
                    if not fut.done():
                        fut.set_result(frame_ms + sent // 8)
                else:
                    still.append((left, fut))
            self._mic_done = still
        else:
            frame = self._next_line_noise()
        self.caller_audio += frame
        await self._send(self.writer.media(frame, frame_ms))

    def _next_line_noise(self) -> bytes:
        noise = self._line_noise
        if not noise:
            return LINE_SILENCE
        out = bytearray()
        while len(out) < FRAME_BYTES:
            take = min(FRAME_BYTES - len(out), len(noise) - self._noise_pos)
            out += noise[self._noise_pos : self._noise_pos + take]
            self._noise_pos = (self._noise_pos + take) % len(noise)
        return bytes(out)

    async def _read_loop(self) -> None:
        try:
            await self._read_messages()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the transport failed (or the app under test crashed): stop the call
            self.error = exc
            self.closed.set()

    async def _read_messages(self) -> None:
        while True:
            text = await self._receive()
            if text is None:
                self.closed.set()
                return
            try:
                msg = parse_outbound(text)
            except ProtocolError as exc:
                self.log.bad_messages.append(str(exc))
                logger.warning("emulated stream %s: the bot sent a bad message: %s", self.stream_sid, exc)
                continue
            now = self.clock_ms
            if isinstance(msg, OutboundMedia):
                self.log.bot_messages.append(BotMessage(now, "media", size=len(msg.payload)))
                self.playout.media(msg.payload)
                await self._set_bot_speaking(True, now)
            elif isinstance(msg, OutboundMark):
                self.log.bot_messages.append(BotMessage(now, "mark", name=msg.name))
                for name in self.playout.mark(msg.name):
                    self.log.mark_echoes.append((now, name, True))
                    await self._send(self.writer.mark(name))
            elif isinstance(msg, OutboundClear):
                self.log.bot_messages.append(BotMessage(now, "clear"))
                self.log.clears.append(now)
                for name in self.playout.clear():
                    self.log.mark_echoes.append((now, name, False))
                    await self._send(self.writer.mark(name))
                await self._set_bot_speaking(False, now)

    async def _set_bot_speaking(self, speaking: bool, now_ms: int) -> None:
        if speaking == self._bot_speaking:
            return
        async with self._bot_speaking_changed:
            self._bot_speaking = speaking
            if speaking:
                self._bot_started_ms = now_ms
            else:
                self._bot_stopped_ms = now_ms
            self._bot_speaking_changed.notify_all()

    async def _send(self, text: str) -> None:
        if self.closed.is_set() and not self._stopping:
            return
        async with self._send_lock:
            try:
                await self._send_raw(text)
            except Exception as exc:  # the bot side closed: a normal end of the call for us
                logger.debug("emulated stream %s: send failed (%s); treating as closed", self.stream_sid, exc)
                self.closed.set()

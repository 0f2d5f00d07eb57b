"""Deepgram live transcription (deepgram-sdk 7.x, ``listen.v1`` WebSocket) behind ``SpeechToText``.

One WebSocket per call, opened by ``DeepgramSTTStream.start()`` with
``client.listen.v1.connect(model=nova-3, encoding=mulaw, sample_rate=8000, channels=1,
interim_results=true, endpointing=<ms>, utterance_end_ms=<ms>, vad_events=true, smart_format=true)``:
Twilio's μ-law 8 kHz goes to Deepgram as-is, no transcoding.

Tasks (all owned by one supervisor task per call):

* **sender** - forwards the audio ``send_audio()`` queued (``send_audio`` itself never awaits: it
  runs on the per-frame path). When no audio has gone out for ``DEEPGRAM_KEEPALIVE_S`` (3 s) it sends
  ``{"type": "KeepAlive"}``: Deepgram closes a socket that received nothing for 10 s with 1011
  ``NET-0001`` (developers.deepgram.com/docs/audio-keep-alive recommends every 3-5 s).
* **reader** - turns Deepgram messages into ``base`` events: ``SpeechStarted`` (from
  ``vad_events``), ``InterimTranscript`` (interim results, prefixed by the finalized segments of the
  utterance so far) and ``Utterance`` (the ``is_final`` segments joined, emitted at
  ``speech_final`` or at ``UtteranceEnd``, whichever comes first). Messages the SDK cannot parse
  arrive as ``None`` and are skipped; dispatch is on the ``type`` field, not on the class, because
  the SDK's unchecked union parsing is not a reliable discriminator.

The call clock: Deepgram's times (``start``, ``duration``, word ``end``, ``timestamp``) are seconds
of audio received *on that connection*. Every audio message sent is recorded with its place on the
call clock (the ``audio_ms`` given to ``send_audio``), so stream seconds map back exactly, across
Twilio timestamp jumps and across reconnects (a new connection starts a new stream clock).

Reconnection: if the socket drops mid-call (``ConnectionClosedError``, a failed send, an unexpected
close) the call goes on. Audio keeps being buffered (up to ``DEEPGRAM_STT_BUFFER_MS``, oldest dropped
beyond it); the supervisor reconnects with exponential backoff (0, 0.25, 0.5, 1, 2, 4 s, at most
``DEEPGRAM_RECONNECT_ATTEMPTS`` failures in a row) and first re-sends the audio the old connection had
not yet covered with a final result, so a short drop loses no speech. It then emits
``TranscriptionGap(reason, gap_ms)`` where ``gap_ms`` is the caller audio that could not be replayed
(buffer overflow), and logs it. A handshake refused with 401/403 is never retried. After too many
failures ``events()`` raises ``STTError(kind="dropped")``.

Errors from ``start()`` (first connect, no retry): 401/403 → ``STTError(kind="auth")``; refused,
DNS, other HTTP status → ``"unavailable"``; no handshake within ``DEEPGRAM_CONNECT_TIMEOUT_S`` →
``"timeout"``. Sources for the SDK behaviour: deepgram-sdk 7.17 ``listen/v1/client.py`` (handshake
status → ``ApiError``; transport errors unwrapped) and ``socket_client.py``.

``close()`` sends the buffered audio and ``CloseStream``, lets the reader take the last results
and ``Metadata`` for at most ``CLOSE_DRAIN_S``, then stops everything: a call's teardown must fit in
Daphne's 10 s ``application_close_timeout``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from media_ws.audio import BYTES_PER_MS, SAMPLE_RATE
from media_ws.errors import STTError
from media_ws.providers.base import (
    InterimTranscript,
    SpeechStarted,
    SpeechToText,
    STTEvent,
    STTStream,
    TranscriptionGap,
    Utterance,
)
from media_ws.providers.clients import deepgram_client

log = logging.getLogger(__name__)

#: After ``CloseStream``, how long the reader may wait for the last results and ``Metadata``, s.
CLOSE_DRAIN_S = 2.0
#: Hard bound on ``close()`` as a whole, s (drain plus closing the socket).
CLOSE_TIMEOUT_S = 3.0
#: Largest audio message sent when catching up on a backlog (after a reconnect), bytes (500 ms).
MAX_MESSAGE_BYTES = 4000
#: Reconnect backoff: the first retry is immediate, then 0.25 s doubling up to this, s.
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 4.0
#: A connection that stayed up this long resets the count of failures in a row, s.
HEALTHY_AFTER_S = 10.0


@dataclass(frozen=True)
class STTConfig:
    """The settings one stream runs with (read when the stream is opened)."""

    model: str
    endpointing_ms: int
    utterance_end_ms: int
    connect_timeout_s: float
    keepalive_s: float
    reconnect_attempts: int
    buffer_ms: int

    @classmethod
    def from_settings(cls) -> STTConfig:
        return cls(
            model=settings.DEEPGRAM_STT_MODEL,
            endpointing_ms=int(settings.DEEPGRAM_ENDPOINTING_MS),
            utterance_end_ms=int(settings.DEEPGRAM_UTTERANCE_END_MS),
            connect_timeout_s=float(settings.DEEPGRAM_CONNECT_TIMEOUT_S),
            keepalive_s=float(settings.DEEPGRAM_KEEPALIVE_S),
            reconnect_attempts=int(settings.DEEPGRAM_RECONNECT_ATTEMPTS),
            buffer_ms=int(settings.DEEPGRAM_STT_BUFFER_MS),
        )

    def connect_params(self) -> dict[str, Any]:
        """Keyword arguments for ``listen.v1.connect`` (the SDK turns bools into "true"/"false")."""
        return {
            "model": self.model,
            "encoding": "mulaw",
            "sample_rate": SAMPLE_RATE,
            "channels": 1,
            "interim_results": True,
            "endpointing": self.endpointing_ms,
            "utterance_end_ms": self.utterance_end_ms,
            "vad_events": True,
            "smart_format": True,
        }


class DeepgramSTT(SpeechToText):
    """Deepgram Nova streaming STT; one ``DeepgramSTTStream`` per call. Reads settings per stream."""

    name = "deepgram"

    def open_stream(self) -> DeepgramSTTStream:
        return DeepgramSTTStream(STTConfig.from_settings())


class _Link:
    """One WebSocket connection and what was sent on it, mapped to the call clock.

    ``_anchor_off``/``_anchor_ms``: where each contiguous run of audio starts, as a byte offset in
    this connection's stream and as call-clock ms. ``_unconfirmed``: audio sent but not yet covered
    by a final result, ``(stream offset, call ms, bytes)``, kept to be replayed after a drop.
    """

    def __init__(self, conn: Any, stack: contextlib.AsyncExitStack, replay_cap_bytes: int) -> None:
        self.conn = conn
        self.stack = stack
        self.opened = time.monotonic()
        self.last_send = self.opened
        self.sent = 0
        self._anchor_off: list[int] = []
        self._anchor_ms: list[float] = []
        self._next_ms: float | None = None
        self._unconfirmed: deque[tuple[int, float, bytes]] = deque()
        self._unconfirmed_bytes = 0
        self._confirmed = 0
        self._replay_cap = replay_cap_bytes

    def record_sent(self, call_ms: float, data: bytes) -> None:
        """Note ``data`` as the next audio of this stream (before it is sent, so a failed send is
        replayed on the next connection)."""
        if self._next_ms is None or abs(call_ms - self._next_ms) >= 0.5:
            self._anchor_off.append(self.sent)
            self._anchor_ms.append(call_ms)
        self._unconfirmed.append((self.sent, call_ms, data))
        self._unconfirmed_bytes += len(data)
        while self._unconfirmed_bytes > self._replay_cap and len(self._unconfirmed) > 1:
            # Long stretches with no final result (should not happen with Deepgram, which finalizes
            # silence too) would grow this without bound; the oldest audio is the least useful.
            _, _, old = self._unconfirmed.popleft()
            self._unconfirmed_bytes -= len(old)
        self.sent += len(data)
        self._next_ms = call_ms + len(data) / BYTES_PER_MS

    def to_call_ms(self, seconds: float | None) -> int | None:
        """Call-clock ms of a point ``seconds`` into this connection's audio (None if unknown)."""
        if seconds is None or not self._anchor_off:
            return None
        offset = seconds * SAMPLE_RATE
        i = max(bisect.bisect_right(self._anchor_off, offset) - 1, 0)
        return round(self._anchor_ms[i] + (offset - self._anchor_off[i]) / BYTES_PER_MS)

    def confirm(self, seconds: float) -> None:
        """A final result covered the stream up to ``seconds``; that audio needs no replay."""
        self._confirmed = max(self._confirmed, int(seconds * SAMPLE_RATE))
        while self._unconfirmed:
            off, _, data = self._unconfirmed[0]
            if off + len(data) > self._confirmed:
                break
            self._unconfirmed.popleft()
            self._unconfirmed_bytes -= len(data)

    def unconfirmed_audio(self) -> list[tuple[float, bytes]]:
        """The audio to replay on a new connection, ``(call ms, bytes)`` in order."""
        out = []
        for off, call_ms, data in self._unconfirmed:
            skip = max(self._confirmed - off, 0)
            if skip >= len(data):
                continue
            out.append((call_ms + skip / BYTES_PER_MS, data[skip:]))
        return out


class _End:
    """Marks the end of the event queue."""


_END = _End()


def _describe_close(exc: BaseException) -> str:
    """A short reason for a dropped connection, from a websockets ``ConnectionClosed`` or else."""
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is not None:
        return f"connection closed by Deepgram ({rcvd.code} {rcvd.reason})".strip()
    if hasattr(exc, "rcvd"):
        return "connection lost (no close frame)"
    return f"connection failed ({type(exc).__name__})"


class DeepgramSTTStream(STTStream):
    """One call's Deepgram live transcription. See the module docstring for the design.

    Public counters for logs and tests: ``keepalives_sent``, ``reconnects``.
    """

    def __init__(self, config: STTConfig) -> None:
        self._cfg = config
        self._pending: deque[tuple[float, bytes]] = deque()  # (call ms, μ-law) not yet sent
        self._pending_bytes = 0
        self._lost_bytes = 0  # dropped from the buffer since the last gap report
        self._wake = asyncio.Event()
        self._closing_event = asyncio.Event()
        self._events: asyncio.Queue[STTEvent | _End] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._finished = False
        self._error: STTError | None = None
        self._parts: list[str] = []  # final segments of the utterance in progress
        self._last_word_end_ms: int | None = None
        self.keepalives_sent = 0
        self.reconnects = 0

    # --- the STTStream interface ------------------------------------------------------------

    async def start(self) -> None:
        """Connect. Raises ``STTError`` (kind ``auth``/``unavailable``/``timeout``), no retry."""
        if self._task is not None:
            return
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(ready), name="deepgram-stt")
        try:
            await ready
        except asyncio.CancelledError:
            self._task.cancel()
            raise

    def send_audio(self, ulaw: bytes, audio_ms: int) -> None:
        """Queue ``ulaw`` (μ-law 8 kHz, any length) that starts at ``audio_ms`` on the call clock.

        Never awaits. While the connection is down the queue holds at most
        ``DEEPGRAM_STT_BUFFER_MS`` of audio; older audio is dropped and reported as a gap.
        """
        if self._closing or not ulaw:
            return
        self._pending.append((float(audio_ms), bytes(ulaw)))
        self._pending_bytes += len(ulaw)
        self._trim_pending()
        self._wake.set()

    async def events(self) -> AsyncIterator[STTEvent]:
        """Transcription events until the stream is closed; raises ``STTError`` if it failed for good."""
        while True:
            item = await self._events.get()
            if isinstance(item, _End):
                self._events.put_nowait(item)  # a second reader also ends
                if self._error is not None:
                    raise self._error
                return
            yield item

    async def close(self) -> None:
        """Send what is buffered and ``CloseStream``, drain briefly, stop. Bounded by
        ``CLOSE_TIMEOUT_S``; safe to call twice."""
        self._closing = True
        self._closing_event.set()
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await asyncio.shield(task)
            except TimeoutError:
                log.warning(
                    "Deepgram STT did not close within %.1f s; abandoning the socket", CLOSE_TIMEOUT_S
                )
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._finish()

    # --- the supervisor -----------------------------------------------------------------------

    async def _run(self, ready: asyncio.Future[None]) -> None:
        cfg = self._cfg
        failures = 0
        drop_reason = ""
        outage_started = 0.0
        try:
            try:
                client = await deepgram_client()
            except Exception as exc:  # the SDK refuses to build without a key (ApiError)
                raise STTError(f"Deepgram client unavailable ({type(exc).__name__})", kind="auth") from exc
            while not self._closing:
                try:
                    link = await self._connect(client)
                except STTError as err:
                    if not ready.done():
                        raise
                    failures += 1
                    if err.kind == "auth" or failures > cfg.reconnect_attempts:
                        raise STTError(
                            f"Deepgram STT reconnection failed after {failures} attempt(s): {err}",
                            kind="auth" if err.kind == "auth" else "dropped",
                        ) from err
                    log.warning("Deepgram STT reconnect attempt %d failed: %s", failures, err)
                    await self._backoff(failures)
                    continue
                if not ready.done():
                    ready.set_result(None)
                    log.info("Deepgram STT connected (model=%s)", cfg.model)
                else:
                    self.reconnects += 1
                    self._report_gap(drop_reason, outage_started, failures)
                drop_reason = await self._serve(link) or ""
                if self._closing:
                    break
                if time.monotonic() - link.opened >= HEALTHY_AFTER_S:
                    failures = 0
                failures += 1
                outage_started = time.monotonic()
                self._requeue(link)
                log.warning("Deepgram STT dropped mid-call: %s; reconnecting", drop_reason)
                if failures > cfg.reconnect_attempts:
                    raise STTError(
                        f"Deepgram STT dropped {failures} times in a row: {drop_reason}", kind="dropped"
                    )
                await self._backoff(failures)
        except STTError as err:
            self._error = err  # events() raises it too
            if not ready.done():
                ready.set_exception(err)
            else:
                log.error("Deepgram STT failed for good: %s (kind=%s)", err, err.kind)
        except Exception as exc:  # a bug here must not take the call down silently
            log.exception("Deepgram STT supervisor crashed")
            self._error = STTError(f"Deepgram STT failed: {type(exc).__name__}", kind="dropped")
            if not ready.done():
                ready.set_exception(self._error)
        finally:
            if not ready.done():  # cancelled before the first connection
                ready.cancel()
            self._finish()

    async def _connect(self, client: Any) -> _Link:
        """Open one WebSocket; map handshake failures to ``STTError`` kinds."""
        from deepgram.core.api_error import ApiError
        from websockets.exceptions import WebSocketException

        stack = contextlib.AsyncExitStack()
        try:
            async with asyncio.timeout(self._cfg.connect_timeout_s):
                conn = await stack.enter_async_context(client.listen.v1.connect(**self._cfg.connect_params()))
        except ApiError as exc:
            await stack.aclose()
            status = exc.status_code
            kind = "auth" if status in (401, 403) else "unavailable"
            raise STTError(f"Deepgram refused the connection (HTTP {status})", kind=kind) from exc
        except TimeoutError as exc:
            await stack.aclose()
            raise STTError(
                f"Deepgram did not answer within {self._cfg.connect_timeout_s:g} s", kind="timeout"
            ) from exc
        except (OSError, WebSocketException) as exc:
            await stack.aclose()
            raise STTError(f"cannot reach Deepgram ({type(exc).__name__})", kind="unavailable") from exc
        return _Link(conn, stack, replay_cap_bytes=self._cfg.buffer_ms * BYTES_PER_MS)

    async def _serve(self, link: _Link) -> str | None:
        """Run sender and reader on ``link`` until it ends. Returns why it broke, or None when it
        was closed on purpose (``close()``)."""
        sender = asyncio.create_task(self._send_loop(link), name="deepgram-stt-send")
        reader = asyncio.create_task(self._read_loop(link), name="deepgram-stt-read")
        try:
            done, _ = await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                exc = reader.exception()
                if exc is not None:
                    return self._drop_reason(exc)
                return None if self._closing else "connection closed by Deepgram"
            exc = sender.exception()
            if exc is not None:
                return self._drop_reason(exc)
            # The sender sent CloseStream: the reader gets the last results, Metadata, then the close.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_DRAIN_S):
                    await reader
            return None
        finally:
            for task in (sender, reader):
                task.cancel()
            await asyncio.gather(sender, reader, return_exceptions=True)
            try:
                async with asyncio.timeout(1.0):
                    await link.stack.aclose()
            except Exception as exc:  # closing a dead socket must not fail the call
                log.debug("Deepgram STT socket close: %s", type(exc).__name__)

    @staticmethod
    def _drop_reason(exc: BaseException) -> str:
        from websockets.exceptions import WebSocketException

        if not isinstance(exc, (WebSocketException, OSError)):  # not the network: a bug, say so
            log.error("Deepgram STT connection task failed", exc_info=exc)
        return _describe_close(exc)

    async def _send_loop(self, link: _Link) -> None:
        conn = link.conn
        keepalive_s = self._cfg.keepalive_s
        while True:
            self._wake.clear()
            if self._pending:
                call_ms, data = self._take_pending()
                link.record_sent(call_ms, data)
                await conn.send_media(data)
                link.last_send = time.monotonic()
                continue
            if self._closing:
                await conn.send_close_stream()
                return
            wait = keepalive_s - (time.monotonic() - link.last_send)
            if wait <= 0:
                await conn.send_keep_alive()
                link.last_send = time.monotonic()
                self.keepalives_sent += 1
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _read_loop(self, link: _Link) -> None:
        async for message in link.conn:
            if message is None or isinstance(message, (bytes, bytearray)):
                continue  # a message type this SDK version does not know
            kind = getattr(message, "type", None)
            if kind == "Results":
                self._on_results(link, message)
            elif kind == "SpeechStarted":
                self._emit(SpeechStarted(audio_ms=link.to_call_ms(getattr(message, "timestamp", None))))
            elif kind == "UtteranceEnd":
                end_ms = link.to_call_ms(getattr(message, "last_word_end", None))
                self._finish_utterance(end_ms)
            elif kind == "Error":
                log.warning(
                    "Deepgram STT error message: %s %s",
                    getattr(message, "variant", ""),
                    getattr(message, "description", ""),
                )
            else:
                log.debug("Deepgram STT message %s", kind)

    # --- message handling ---------------------------------------------------------------------

    def _on_results(self, link: _Link, msg: Any) -> None:
        channel = getattr(msg, "channel", None)
        alternatives = getattr(channel, "alternatives", None) or []
        alt = alternatives[0] if alternatives else None
        text = ((getattr(alt, "transcript", None) or "") if alt is not None else "").strip()
        if not msg.is_final:
            if text:
                self._emit(InterimTranscript(" ".join([*self._parts, text])))
            return
        start = float(getattr(msg, "start", 0.0) or 0.0)
        duration = float(getattr(msg, "duration", 0.0) or 0.0)
        link.confirm(start + duration)
        if text:
            self._parts.append(text)
            words = getattr(alt, "words", None) or []
            last_end = getattr(words[-1], "end", None) if words else None
            self._last_word_end_ms = link.to_call_ms(last_end if last_end is not None else start + duration)
        if msg.speech_final:
            self._finish_utterance(None)
        elif text:
            self._emit(InterimTranscript(" ".join(self._parts)))

    def _finish_utterance(self, end_ms: int | None) -> None:
        if not self._parts:
            return
        text = " ".join(self._parts)
        self._emit(Utterance(text=text, end_ms=end_ms if end_ms is not None else self._last_word_end_ms))
        self._parts.clear()
        self._last_word_end_ms = None

    def _emit(self, event: STTEvent) -> None:
        if not self._finished:
            self._events.put_nowait(event)

    def _finish(self) -> None:
        """End the event stream once: the last words are delivered, then the end (or the error)."""
        if self._finished:
            return
        self._finish_utterance(None)
        self._finished = True
        self._events.put_nowait(_END)

    # --- buffering and reconnection -----------------------------------------------------------

    def _take_pending(self) -> tuple[float, bytes]:
        """Pop the next contiguous run of queued audio, at most ``MAX_MESSAGE_BYTES``."""
        call_ms, data = self._pending.popleft()
        if len(data) > MAX_MESSAGE_BYTES:
            rest = data[MAX_MESSAGE_BYTES:]
            data = data[:MAX_MESSAGE_BYTES]
            self._pending.appendleft((call_ms + MAX_MESSAGE_BYTES / BYTES_PER_MS, rest))
        parts = [data]
        size = len(data)
        next_ms = call_ms + len(data) / BYTES_PER_MS
        while self._pending:
            ms, more = self._pending[0]
            if abs(ms - next_ms) >= 0.5 or size + len(more) > MAX_MESSAGE_BYTES:
                break
            self._pending.popleft()
            parts.append(more)
            size += len(more)
            next_ms = ms + len(more) / BYTES_PER_MS
        self._pending_bytes -= size
        return call_ms, b"".join(parts)

    def _trim_pending(self) -> None:
        cap = self._cfg.buffer_ms * BYTES_PER_MS
        while self._pending_bytes > cap and len(self._pending) > 1:
            _, old = self._pending.popleft()
            self._pending_bytes -= len(old)
            self._lost_bytes += len(old)

    def _requeue(self, link: _Link) -> None:
        """Put the audio the dropped connection had not finalized back in front of the queue."""
        replay = link.unconfirmed_audio()
        for call_ms, data in reversed(replay):
            self._pending.appendleft((call_ms, data))
            self._pending_bytes += len(data)
        self._trim_pending()

    def _report_gap(self, reason: str, outage_started: float, attempts: int) -> None:
        gap_ms = self._lost_bytes // BYTES_PER_MS
        self._lost_bytes = 0
        outage_ms = round((time.monotonic() - outage_started) * 1000)
        log.warning(
            "Deepgram STT reconnected after %d ms (%d attempt(s)); cause: %s; %d ms of caller audio "
            "untranscribed",
            outage_ms,
            attempts,
            reason,
            gap_ms,
        )
        self._emit(TranscriptionGap(reason=reason, gap_ms=gap_ms))

    async def _backoff(self, failures: int) -> None:
        """Sleep before reconnect attempt ``failures`` (1-based); returns early on ``close()``."""
        delay = 0.0 if failures <= 1 else min(BACKOFF_FIRST_S * 2 ** (failures - 2), BACKOFF_MAX_S)
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closing_event.wait()

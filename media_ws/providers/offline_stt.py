"""Offline speech to text: pocketsphinx 5 with the US-English model its wheel ships.

The call's own voice-activity detector (the barge-in detector) cuts the utterances: the session
calls ``caller_speech(True, ms)`` at speech onset and ``caller_speech(False, ms)`` at its end. The
stream keeps a short ring of caller audio so the pre-roll before the onset decision is not lost,
collects the utterance, and when it ends decodes it in a small pool of worker processes.

Facts this relies on, measured here (2-core VM, pocketsphinx 5.1.1, Python 3.11):

- The model is 16 kHz and ``Decoder(samprate=8000)`` fails to initialise, so 8 kHz call audio is
  upsampled to 16 kHz (libsoxr) before decoding.
- Decoding takes about 0.3-0.4 x real time on one core (10 s of speech: 3.0 s), so it never runs
  on the event loop, and at most ``OFFLINE_STT_MAX_DECODES`` decodes run at once (a thread pool)
  so many calls cannot starve the process; utterances beyond that wait their turn. An utterance's
  text therefore arrives that long after its end hint.
- A ``Decoder`` costs 0.35-0.7 s and about 90 MiB of memory to build (each loads the language
  model) and is not thread-safe. Decoders are pooled per process, each used by one thread at a
  time; there are never more than the pool's threads.
- A decoder's feature state (cepstral mean) carries over from one utterance to the next, which
  changes the words it finds; ``reinit_feat()`` (about 0.1 ms) before each utterance makes every
  decode independent of what the decoder heard before.
- Accuracy on telephone-band speech is poor (a third of the words of a clear human reading; see
  tests/providers/test_offline_stt.py), so every ``Utterance`` is marked ``approximate``.

What the session should expect from a stream: ``SpeechStarted(onset ms)`` on every onset hint,
then, some time after the end hint (decoding time), one ``Utterance(text, end_ms, approximate=True)``
per utterance that had recognisable words. **An utterance with no words emits nothing** (noise, a
cough, a very short sound): a ``SpeechStarted`` is not always followed by an ``Utterance``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from django.conf import settings

from media_ws.audio import BYTES_PER_MS
from media_ws.errors import STTError
from media_ws.providers import _sphinx_worker
from media_ws.providers.base import SpeechStarted, SpeechToText, STTEvent, STTStream, Utterance

logger = logging.getLogger(__name__)

#: Consecutive failed decodes after which the stream gives up (``events()`` raises ``STTError``).
_MAX_FAILURES = 3

_DEFAULT_MAX_DECODES = 2
_DEFAULT_PREROLL_MS = 300
_DEFAULT_TAIL_MS = 200
_DEFAULT_MAX_UTTERANCE_MS = 30_000

_CLOSED = object()



class DecoderPool:
    """pocketsphinx decoders in worker processes, shared by every stream of a process.

    pocketsphinx holds the GIL for the whole of a decode (measured here: the event loop of the
    process stalled for up to 487 ms while a 10 s utterance decoded on a thread), which would delay
    every call's frames and barge-in decisions. So decoding runs in ``max_decodes`` spawned worker
    processes, each with its own decoder (``_sphinx_worker``); the event loop only awaits results.
    """

    _pools: dict[tuple[int, int], DecoderPool] = {}
    _pools_lock = threading.Lock()

    def __init__(self, max_decodes: int) -> None:
        self.max_decodes = max_decodes
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None

    @classmethod
    def shared(cls, max_decodes: int) -> DecoderPool:
        """The process's pool for ``max_decodes`` (a forked child gets its own)."""
        key = (os.getpid(), max_decodes)
        with cls._pools_lock:
            pool = cls._pools.get(key)
            if pool is None:
                pool = cls._pools[key] = cls(max_decodes)
            return pool

    @property
    def executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                # spawn, not fork: the server process has threads (and Twisted), which fork copies badly.
                self._executor = ProcessPoolExecutor(
                    max_workers=self.max_decodes, mp_context=multiprocessing.get_context("spawn")
                )
            return self._executor

    def check_model(self) -> None:
        """Fail early (``STTError``) if pocketsphinx or its English model is missing."""
        try:
            import pocketsphinx

            model = os.path.join(pocketsphinx.get_model_path(), "en-us", "en-us")
        except Exception as exc:
            raise STTError(f"pocketsphinx cannot be loaded: {exc}") from exc
        if not os.path.isdir(model):
            raise STTError(f"pocketsphinx's English model is missing ({model})")

    def warm_up(self) -> None:
        """Start the workers and build their decoders in the background (no waiting here)."""
        for _ in range(self.max_decodes):
            self.executor.submit(_sphinx_worker.warm_up)

    async def decode(self, ulaw: bytes) -> str:
        """Recognise one utterance (μ-law 8 kHz) in a worker; ``STTError`` if pocketsphinx fails."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, _sphinx_worker.decode, ulaw)
        except BrokenProcessPool as exc:
            with self._lock:
                self._executor = None  # a worker died (e.g. killed): the next decode starts afresh
            raise STTError(f"the offline STT worker process died: {exc}", kind="unavailable") from exc
        except Exception as exc:
            raise STTError(f"pocketsphinx failed to decode: {exc!r}", kind="bad_response") from exc


class PocketsphinxSTT(SpeechToText):
    """Offline transcription with pocketsphinx; utterances are cut by our own VAD's hints.

    Settings (constructor arguments override them): ``OFFLINE_STT_MAX_DECODES`` (decodes at once
    per process, default 2), ``OFFLINE_STT_PREROLL_MS`` (audio kept from before the onset, 300),
    ``OFFLINE_STT_MAX_UTTERANCE_MS`` (longer speech is cut and decoded in pieces of this length,
    30000). The first construction in a process builds a decoder (about 0.3-0.5 s) to check the
    model and raises ``STTError`` if it cannot; later ones are cheap and share the decoders.
    """

    name = "pocketsphinx"

    def __init__(self, *, max_decodes: int | None = None, preroll_ms: int | None = None,
                 max_utterance_ms: int | None = None, tail_ms: int = _DEFAULT_TAIL_MS) -> None:
        if max_decodes is None:
            max_decodes = getattr(settings, "OFFLINE_STT_MAX_DECODES", _DEFAULT_MAX_DECODES)
        if preroll_ms is None:
            preroll_ms = getattr(settings, "OFFLINE_STT_PREROLL_MS", _DEFAULT_PREROLL_MS)
        if max_utterance_ms is None:
            max_utterance_ms = getattr(settings, "OFFLINE_STT_MAX_UTTERANCE_MS", _DEFAULT_MAX_UTTERANCE_MS)
        self.max_decodes, self.preroll_ms = int(max_decodes), int(preroll_ms)
        self.max_utterance_ms = int(max_utterance_ms)
        self.tail_ms = tail_ms
        if self.max_decodes < 1 or self.preroll_ms < 0 or self.max_utterance_ms < 1000 or tail_ms < 0:
            raise ValueError("offline STT needs max_decodes >= 1, preroll_ms >= 0, tail_ms >= 0 and "
                             "max_utterance_ms >= 1000")
        self.pool = DecoderPool.shared(self.max_decodes)
        self.pool.check_model()
        self.pool.warm_up()

    def open_stream(self) -> PocketsphinxStream:
        return PocketsphinxStream(self)


class PocketsphinxStream(STTStream):
    """One call's offline transcription. See the module docstring for the events it emits.

    ``send_audio`` and ``caller_speech`` are O(1) appends on the event loop: no decoding, no
    waiting. Memory is bounded: the pre-roll ring holds about ``preroll_ms`` + 0.5 s, an utterance
    at most ``max_utterance_ms`` (240 kB for 30 s), and utterances waiting for a decoder queue up
    (decoding is faster than real time, so the queue only grows while the pool is saturated).
    """

    def __init__(self, engine: PocketsphinxSTT) -> None:
        self._engine = engine
        self._pool = engine.pool
        # The ring keeps enough to cover the onset detector's decision delay on top of the pre-roll.
        self._ring_bytes = (engine.preroll_ms + 500) * BYTES_PER_MS
        self._max_bytes = engine.max_utterance_ms * BYTES_PER_MS
        self._ring: deque[tuple[int, bytes]] = deque()
        self._ring_size = 0
        self._utterance: list[tuple[int, bytes]] | None = None  # (start ms, μ-law) while speaking
        self._utterance_size = 0
        self._utterance_begin = 0  # call-clock ms: onset minus pre-roll
        self._pending: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._decoder_task: asyncio.Task[None] | None = None
        self._closed = False
        self.utterances_cut = 0  # utterances cut at max_utterance_ms

    async def start(self) -> None:
        """Start the stream's decode task. Offline, there is nothing to connect to."""
        if self._closed:
            raise STTError("the stream is closed", kind="dropped")
        if self._decoder_task is None:
            self._decoder_task = asyncio.get_running_loop().create_task(self._decode_loop(),
                                                                        name="pocketsphinx-stream")

    def send_audio(self, ulaw: bytes, audio_ms: int) -> None:
        """Keep caller audio (μ-law 8 kHz starting at ``audio_ms``): in the utterance while the
        caller speaks, else in the pre-roll ring. O(1) amortised; never blocks."""
        if self._closed or not ulaw:
            return
        if self._utterance is None:
            self._ring.append((audio_ms, ulaw))
            self._ring_size += len(ulaw)
            while self._ring and self._ring_size - len(self._ring[0][1]) >= self._ring_bytes:
                self._ring_size -= len(self._ring.popleft()[1])
            return
        if audio_ms + len(ulaw) // BYTES_PER_MS <= self._utterance_begin:
            return  # late audio from before the pre-roll (a backlog replayed after the onset hint)
        self._utterance.append((audio_ms, ulaw))
        self._utterance_size += len(ulaw)
        if self._utterance_size >= self._max_bytes:
            # A caller who never stops: decode what we have and go on collecting a new piece.
            end_ms = audio_ms + len(ulaw) // BYTES_PER_MS
            self._finish_utterance(end_ms)
            self.utterances_cut += 1
            self._utterance, self._utterance_size = [], 0

    def caller_speech(self, speaking: bool, audio_ms: int) -> None:
        """Our VAD's hint: speech started (True) or ended (False) at ``audio_ms`` on the call clock.

        Start: emits ``SpeechStarted(audio_ms)`` and begins the utterance ``preroll_ms`` before
        ``audio_ms`` (from the ring). End: queues the utterance, cut ``tail_ms`` after ``audio_ms``,
        for decoding. A repeated hint (start while speaking, end while silent) is ignored.
        """
        if self._closed:
            return
        if speaking:
            if self._utterance is not None:
                return
            begin = self._utterance_begin = audio_ms - self._engine.preroll_ms
            self._utterance = [(ms, b) for ms, b in self._ring if ms + len(b) // BYTES_PER_MS > begin]
            self._utterance_size = sum(len(b) for _, b in self._utterance)
            self._ring.clear()
            self._ring_size = 0
            self._events.put_nowait(SpeechStarted(audio_ms=audio_ms))
        elif self._utterance is not None:
            self._finish_utterance(audio_ms)
            self._utterance, self._utterance_size = None, 0

    def _finish_utterance(self, end_ms: int) -> None:
        assert self._utterance is not None
        cut = end_ms + self._engine.tail_ms
        kept = [b for ms, b in self._utterance if ms < cut]
        # Audio after the cut (the detector's hang-over) is the pre-roll of whatever comes next.
        for ms, b in self._utterance:
            if ms >= cut:
                self._ring.append((ms, b))
                self._ring_size += len(b)
        if kept:
            self._pending.put_nowait((b"".join(kept), end_ms))

    async def _decode_loop(self) -> None:
        failures = 0
        while True:
            item = await self._pending.get()
            if item is None:
                return
            audio, end_ms = item
            try:
                text = await self._pool.decode(audio)
            except STTError as exc:
                failures += 1
                logger.warning("offline STT: decoding a %d ms utterance failed (%d in a row): %s",
                               len(audio) // BYTES_PER_MS, failures, exc)
                if failures >= _MAX_FAILURES:
                    self._events.put_nowait(exc)
                    return
                continue
            failures = 0
            if text:
                self._events.put_nowait(Utterance(text=text, end_ms=end_ms, approximate=True))

    async def events(self) -> AsyncIterator[STTEvent]:
        """``SpeechStarted`` and ``Utterance`` events until ``close()``; raises ``STTError`` after
        repeated decode failures."""
        while True:
            item = await self._events.get()
            if item is _CLOSED:
                self._events.put_nowait(_CLOSED)  # a second reader ends too
                return
            if isinstance(item, STTError):
                raise item
            yield item

    async def close(self, drain_timeout_s: float = 2.5) -> None:
        """Stop, keeping the caller's last words: an utterance still in progress is cut here and
        decoded with any already queued, for at most ``drain_timeout_s``; their ``Utterance``
        events come before ``events()`` ends. What is not done by then is dropped (a decode in a
        worker cannot be interrupted; its result is ignored). Safe to call twice."""
        if self._closed:
            return
        if self._utterance:  # an utterance in progress (None while silent, [] right after a cap)
            last = self._utterance[-1]
            self._finish_utterance(last[0] + len(last[1]) // BYTES_PER_MS)
        self._closed = True
        self._utterance = None
        self._ring.clear()
        task = self._decoder_task
        if task is not None and not task.done():
            self._pending.put_nowait(None)  # the decode loop finishes the queue, then returns
            done, _ = await asyncio.wait([task], timeout=drain_timeout_s)
            if not done:
                task.cancel()
                await asyncio.wait([task])  # without swallowing a cancellation of close() itself
        self._events.put_nowait(_CLOSED)

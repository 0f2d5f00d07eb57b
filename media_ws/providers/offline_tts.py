"""Offline text to speech: espeak-ng, loaded from the ``espeakng-loader`` wheel through ctypes.

``espeakng-loader`` (PyPI) ships ``libespeak-ng.so`` and its ``espeak-ng-data``, so no system
package is needed. The library is driven in ``AUDIO_OUTPUT_SYNCHRONOUS`` mode: ``espeak_Synth``
runs on the calling thread and hands 16-bit PCM at 22050 Hz to a callback in pieces of
``_ESPEAK_BUFFER_MS``; the callback's return value 1 aborts synthesis. API and constants:
espeak-ng ``src/include/espeak-ng/speak_lib.h``.

espeak-ng keeps global state (one voice, one callback, one set of parameters per process), so the
library is initialised once per process and every call into it runs on one dedicated worker
thread: requests from many calls queue there and never interleave. Synthesis is far faster than
real time (4.5 s of speech in about 4 ms on one core here), so the queue stays short.
The event loop only moves finished μ-law chunks; resampling (libsoxr) and G.711 encoding happen
on the worker too.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings

from media_ws.audio import BYTES_PER_MS, SAMPLE_RATE, StreamResampler, pcm16_to_ulaw
from media_ws.errors import TTSError
from media_ws.providers.base import TextToSpeech

logger = logging.getLogger(__name__)

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1  # espeak_PARAMETER espeakRATE, words per minute
_EE_OK = 0
_ESPEAK_ERRORS = {-1: "internal error", 1: "buffer full", 2: "not found"}
#: espeak-ng accepts 80..450 words per minute (espeakRATE_MINIMUM / espeakRATE_MAXIMUM).
RATE_MIN_WPM, RATE_MAX_WPM = 80, 450
#: Length of the PCM pieces espeak hands to the callback (the ``buflength`` argument, ms).
_ESPEAK_BUFFER_MS = 60

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_DEFAULT_VOICE = "en-us"
_DEFAULT_RATE_WPM = 175  # espeak-ng's own default
_DEFAULT_CHUNK_MS = 160


class _Job:
    """One ``synthesize()`` request: its output queue, its resampler, and its cancel flag.

    Created on the event loop; everything except ``cancel()`` runs on the espeak worker thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, chunk_bytes: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.chunk_bytes = chunk_bytes
        self.cancelled = threading.Event()
        self._pending = bytearray()
        self._resampler: StreamResampler | None = None

    def cancel(self) -> None:
        self.cancelled.set()

    def _post(self, item: Any) -> bool:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()
            return False
        return True

    def pcm(self, pcm22k: bytes, sample_rate: int, last: bool = False) -> bool:
        """Resample and encode one piece from espeak; post whole chunks. False: stop synthesis."""
        if self.cancelled.is_set():
            return False
        if self._resampler is None:
            self._resampler = StreamResampler(sample_rate, SAMPLE_RATE)
        pcm8k = self._resampler.process(pcm22k, last=last)
        if pcm8k:
            self._pending += pcm16_to_ulaw(pcm8k)
        while len(self._pending) >= self.chunk_bytes or (last and self._pending):
            n = min(self.chunk_bytes, len(self._pending))
            chunk = bytes(self._pending[:n])
            del self._pending[:n]
            if not self._post(chunk):
                return False
        return not self.cancelled.is_set()

    def finish(self, error: BaseException | None = None) -> None:
        if error is not None:
            self._post(error)
        self._post(None)


class _Espeak:
    """The process-wide espeak-ng library and the one thread allowed to call it."""

    _instance: _Espeak | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._lib: Any = None
        self._callback: Any = None  # keeps the ctypes callback alive as long as the library holds it
        self.sample_rate = 0
        self._voice: str | None = None
        self._rate: int | None = None
        self._job: _Job | None = None
        self.produced_samples = 0  # PCM samples espeak produced in this process (at sample_rate)
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @classmethod
    def get(cls) -> _Espeak:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def executor(self) -> ThreadPoolExecutor:
        """The single worker thread; a new one after ``fork()`` (threads do not survive it)."""
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak-ng")
                self._pid = os.getpid()
            return self._executor

    # --- everything below runs on the worker thread only ---------------------------------------
    def _initialize(self) -> None:
        if self._lib is not None:
            return
        try:
            import espeakng_loader

            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (ImportError, OSError, RuntimeError) as exc:
            raise TTSError(f"espeak-ng is not available (install espeakng-loader): {exc}") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _ESPEAK_BUFFER_MS, data_path.encode(), _ESPEAK_INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise TTSError(f"espeak-ng failed to initialise (data at {data_path}): error {rate}")
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self.sample_rate = rate
        self._lib = lib
        logger.info("espeak-ng initialised: %d Hz output", rate)

    def _configure(self, voice: str, rate_wpm: int) -> None:
        self._initialize()
        if voice != self._voice:
            err = self._lib.espeak_SetVoiceByName(voice.encode())
            if err != _EE_OK:
                self._voice = None
                raise TTSError(f"espeak-ng has no voice {voice!r} ({_ESPEAK_ERRORS.get(err, err)})")
            self._voice = voice
            self._rate = None  # selecting a voice resets the rate
        if rate_wpm != self._rate:
            err = self._lib.espeak_SetParameter(_ESPEAK_RATE, rate_wpm, 0)
            if err != _EE_OK:
                raise TTSError(f"espeak-ng refused rate {rate_wpm} wpm ({_ESPEAK_ERRORS.get(err, err)})")
            self._rate = rate_wpm

    def check(self, voice: str, rate_wpm: int) -> None:
        """Initialise the library and select ``voice``/``rate`` (raises ``TTSError``)."""
        self._configure(voice, rate_wpm)

    def _on_audio(self, wav: Any, numsamples: int, _events: Any) -> int:
        job = self._job
        if job is None:
            return 1
        if not wav:  # NULL: the end of this synthesis
            return 0
        self.produced_samples += numsamples
        keep_going = job.pcm(ctypes.string_at(wav, numsamples * 2), self.sample_rate)
        return 0 if keep_going else 1

    def run(self, job: _Job, text: str, voice: str, rate_wpm: int) -> None:
        """Synthesise ``text`` into ``job`` (the whole request, start to end, on this thread)."""
        error: BaseException | None = None
        try:
            if job.cancelled.is_set():
                return
            self._configure(voice, rate_wpm)
            data = text.encode("utf-8")
            self._job = job
            try:
                err = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8,
                                             None, None)
            finally:
                self._job = None
            if err != _EE_OK:
                raise TTSError(f"espeak-ng synthesis failed ({_ESPEAK_ERRORS.get(err, err)})")
            job.pcm(b"", self.sample_rate, last=True)  # flush the resampler and the last chunk
        except TTSError as exc:
            error = exc
        except Exception as exc:  # a bug or a library fault: report it to the consumer, not the log only
            error = TTSError(f"espeak-ng synthesis failed: {exc!r}", kind="bad_response")
        finally:
            job.finish(error)



class EspeakTTS(TextToSpeech):
    """espeak-ng speech as G.711 μ-law at 8 kHz, streamed in chunks of about ``chunk_ms``.

    ``voice``: an espeak-ng voice name (``OFFLINE_TTS_VOICE``, default ``"en-us"``); ``rate_wpm``:
    speaking rate in words per minute, 80..450 (``OFFLINE_TTS_RATE``, default 175).

    The constructor initialises the library (once per process, a few ms) and selects the voice, so a
    missing library or an unknown voice raises ``TTSError`` here rather than mid-call. Creating
    more instances is cheap: they share the library and its worker thread.
    """

    name = "espeak-ng"

    def __init__(self, voice: str | None = None, rate_wpm: int | None = None, *,
                 chunk_ms: int = _DEFAULT_CHUNK_MS) -> None:
        self.voice = str(voice or getattr(settings, "OFFLINE_TTS_VOICE", _DEFAULT_VOICE))
        rate = rate_wpm if rate_wpm is not None else getattr(settings, "OFFLINE_TTS_RATE", _DEFAULT_RATE_WPM)
        try:
            self.rate_wpm = int(rate)
        except (TypeError, ValueError):
            raise TTSError(f"OFFLINE_TTS_RATE must be a whole number of words per minute, got {rate!r}",
                           kind="bad_response") from None
        if not RATE_MIN_WPM <= self.rate_wpm <= RATE_MAX_WPM:
            raise TTSError(f"espeak-ng rate must be {RATE_MIN_WPM}..{RATE_MAX_WPM} words per minute, "
                           f"got {self.rate_wpm}", kind="bad_response")
        if chunk_ms <= 0:
            raise ValueError(f"chunk_ms must be positive, got {chunk_ms}")
        self.chunk_bytes = chunk_ms * BYTES_PER_MS
        self._espeak = _Espeak.get()
        self._espeak.executor().submit(self._espeak.check, self.voice, self.rate_wpm).result()

    def produced_ms(self) -> int:
        """Audio espeak-ng has synthesised in this process so far, in ms (all instances; a figure
        for monitoring: synthesis stopped early by a closed generator counts only what was made)."""
        rate = self._espeak.sample_rate or 1
        return self._espeak.produced_samples * 1000 // rate

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Speak ``text``: μ-law 8 kHz chunks of ``chunk_ms`` (the last one shorter), no header.

        Text with nothing to say (empty or whitespace) gives no chunks. Chunks come as espeak
        produces them; closing the generator (or cancelling its consumer) stops synthesis at the
        next 60 ms piece, and a request still waiting for the worker is skipped. Raises ``TTSError``.
        """
        text = text.replace("\x00", " ").strip()
        if not text:
            return
        job = _Job(asyncio.get_running_loop(), self.chunk_bytes)
        try:
            self._espeak.executor().submit(self._espeak.run, job, text, self.voice, self.rate_wpm)
        except RuntimeError as exc:  # the interpreter is shutting down
            raise TTSError(f"espeak-ng worker unavailable: {exc}") from exc
        try:
            while True:
                item = await job.queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancel()

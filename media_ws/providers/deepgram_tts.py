"""Deepgram Aura text-to-speech behind ``TextToSpeech``: REST streaming, μ-law 8 kHz, no container.

Why REST (``POST /v1/speak``) and not the speak WebSocket:

* The session hands TTS one sentence or clause at a time, as the LLM streams. On the WebSocket each
  piece would need a ``Flush`` to be spoken now, and Deepgram allows 20 flushes per 60 s
  (developers.deepgram.com/docs/tts-ws-flush) - a talkative call crosses that in a minute.
* Barge-in cancels the current piece. With REST that is closing one HTTP response; on a shared
  socket it is ``Clear`` then waiting for ``Cleared`` (which the SDK parses as ``SpeakV1Flushed``)
  before the socket can be trusted again, per call.
* Aura's REST endpoint streams the body as it synthesizes, and pooled keep-alive connections in
  the shared httpx client spare a TLS handshake per piece, so the first byte comes as fast.

Each request asks for ``model=DEEPGRAM_TTS_VOICE`` (``aura-2-*``), ``encoding=mulaw``,
``sample_rate=8000``, ``container=none``: the REST defaults are linear16 at 24 kHz in a WAV container
(developers.deepgram.com/docs/tts-media-output-settings), and a WAV header played into a call is a
click. A RIFF/WAV header is still stripped here if one ever arrives (and its format checked), so no
header can reach the call whatever the service does.

A long text (e.g. a multi-sentence greeting) is split at sentence ends and spoken piece by piece, so
speech starts after the first sentence is synthesized, not the whole text; each piece stays well
under the REST text limit.

``client.speak.v1.audio.generate(...)`` is an async generator (the SDK's docstring example that
awaits it is wrong); it is closed in ``finally`` so leaving ``synthesize()`` early closes the HTTP
stream. Errors → ``TTSError``: 401/403 ``auth``; 400/422 ``bad_response``; 429/5xx, refused
connection ``unavailable``; connect/read timeout (``DEEPGRAM_TTS_TIMEOUT_S``) ``timeout``; the body
breaking off ``dropped``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
from django.conf import settings

from media_ws.audio import SAMPLE_RATE
from media_ws.errors import TTSError
from media_ws.providers.base import TextToSpeech
from media_ws.providers.clients import deepgram_client

log = logging.getLogger(__name__)

#: Longest text sent in one request, characters (Deepgram's REST limit is 2000).
MAX_PIECE_CHARS = 1000
#: A RIFF header that has not reached its ``data`` chunk within this many bytes is not audio.
MAX_HEADER_BYTES = 4096
WAVE_FORMAT_MULAW = 7

#: Where a sentence may end: terminal punctuation, closing quotes/brackets, then whitespace.
_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")
#: Words whose final period does not end a sentence ("Dr. Smith", "3 p.m. tomorrow").
_ABBREVIATIONS = frozenset("mr mrs ms dr prof st jr sr vs etc e.g i.e a.m p.m approx dept mt ave".split())
#: A sentence shorter than this is spoken together with the next one ("Hello! This is...").
MIN_PIECE_CHARS = 20


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        before = text[start : match.start()].split()
        word = before[-1].lower().rstrip(".") if before else ""
        following = text[match.end() : match.end() + 1]
        if text[match.start()] == "." and (
            word in _ABBREVIATIONS or len(word) == 1 or not following.isupper()
        ):
            continue  # "Dr. Smith", "J. Doe", "3 p.m. tomorrow": not a sentence end
        out.append(text[start : match.end()].strip())
        start = match.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def split_for_speech(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """Split ``text`` into sentences for one TTS request each (clauses, then words, when a sentence
    is longer than ``max_chars``). Sentences under ``MIN_PIECE_CHARS`` join the next one.

    Whitespace-only pieces are dropped; the pieces joined by spaces give back the words of ``text``.
    """
    sentences: list[str] = []
    for sentence in _sentences(text.strip()):
        if sentences and len(sentences[-1]) < MIN_PIECE_CHARS:
            sentences[-1] = f"{sentences[-1]} {sentence}"
        else:
            sentences.append(sentence)
    pieces: list[str] = []
    for sentence in sentences:
        if len(sentence) <= max_chars:
            pieces.append(sentence)
            continue
        current = ""
        for clause in _CLAUSE_END.split(sentence):
            for word in clause.split():
                candidate = f"{current} {word}" if current else word
                if len(candidate) > max_chars and current:
                    pieces.append(current)
                    current = word
                else:
                    current = candidate
            if current and current[-1] in ",;:":
                pieces.append(current)
                current = ""
        if current:
            pieces.append(current)
    return pieces


class WavHeaderStripper:
    """Pass μ-law audio through, removing a RIFF/WAV header if the stream starts with one.

    Feed the body chunk by chunk; ``feed`` returns the audio to play (possibly ``b""`` while a
    header is still being read). A header whose format is not μ-law/8000 Hz/mono raises
    ``TTSError(kind="bad_response")``: that audio would play as noise.
    """

    def __init__(self) -> None:
        self._head = bytearray()
        self._passthrough = False
        self.header_bytes = 0  # how many header bytes were removed

    def feed(self, chunk: bytes) -> bytes:
        if self._passthrough:
            return chunk
        self._head += chunk
        if len(self._head) < 4:
            return b""
        if self._head[:4] != b"RIFF":
            return self._release(0)
        return self._parse_riff()

    def finish(self) -> bytes:
        """The end of the body: return anything still held back (a lone partial header is dropped)."""
        if self._passthrough or not self._head:
            return b""
        if b"RIFF".startswith(bytes(self._head[:4])):  # a header (or its start) and no audio
            self._head.clear()
            return b""
        return self._release(0)

    def _release(self, skip: int) -> bytes:
        self._passthrough = True
        self.header_bytes = skip
        out = bytes(self._head[skip:])
        self._head.clear()
        return out

    def _parse_riff(self) -> bytes:
        head = self._head
        if len(head) >= 12 and head[8:12] != b"WAVE":
            raise TTSError("Deepgram sent a RIFF body that is not WAVE", kind="bad_response")
        pos = 12
        while pos + 8 <= len(head):
            chunk_id = bytes(head[pos : pos + 4])
            size = int.from_bytes(head[pos + 4 : pos + 8], "little")
            if chunk_id == b"data":
                return self._release(pos + 8)
            if chunk_id == b"fmt ":
                if pos + 8 + 16 > len(head):
                    break  # wait for the whole fmt chunk
                fmt, channels, rate = (
                    int.from_bytes(head[pos + 8 : pos + 10], "little"),
                    int.from_bytes(head[pos + 10 : pos + 12], "little"),
                    int.from_bytes(head[pos + 12 : pos + 16], "little"),
                )
                if (fmt, channels, rate) != (WAVE_FORMAT_MULAW, 1, SAMPLE_RATE):
                    raise TTSError(
                        f"Deepgram sent WAV audio in format {fmt}, {channels} ch, {rate} Hz; "
                        "expected μ-law, 1 ch, 8000 Hz",
                        kind="bad_response",
                    )
            pos += 8 + size + (size & 1)
        if len(head) > MAX_HEADER_BYTES:
            raise TTSError("Deepgram sent a WAV header without a data chunk", kind="bad_response")
        return b""


def map_deepgram_tts_error(exc: BaseException, *, got_audio: bool) -> TTSError:
    """Translate SDK/httpx exceptions from a speak request into ``TTSError`` with a ``kind``."""
    from deepgram.core.api_error import ApiError

    name = type(exc).__name__
    if isinstance(exc, ApiError):
        status = exc.status_code
        if status in (401, 403):
            return TTSError(f"Deepgram refused the credentials ({status})", kind="auth")
        if status in (400, 413, 422):
            return TTSError(f"Deepgram rejected the TTS request ({status})", kind="bad_response")
        return TTSError(f"Deepgram TTS unavailable ({status})", kind="unavailable")
    if isinstance(exc, httpx.TimeoutException):
        return TTSError(f"Deepgram TTS timed out ({name})", kind="timeout")
    if isinstance(exc, (httpx.ConnectError, OSError)):
        return TTSError(f"cannot reach Deepgram TTS ({name})", kind="unavailable")
    if isinstance(exc, httpx.HTTPError):
        return TTSError(f"Deepgram TTS stream broke ({name})", kind="dropped" if got_audio else "unavailable")
    return TTSError(f"Deepgram TTS failed ({name})", kind="unavailable")


class DeepgramTTS(TextToSpeech):
    """Deepgram Aura over REST streaming; voice from ``DEEPGRAM_TTS_VOICE`` (read per call)."""

    name = "deepgram"

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Speak ``text``: μ-law 8 kHz chunks (any sizes, never a header) as they arrive.

        Empty text yields nothing. Closing the generator closes the HTTP stream. Raises ``TTSError``.
        """
        pieces = split_for_speech(text)
        if not pieces:
            return
        try:
            client = await deepgram_client()
        except Exception as exc:  # the SDK refuses to build without a key (ApiError)
            raise TTSError(f"Deepgram client unavailable ({type(exc).__name__})", kind="auth") from exc
        voice = settings.DEEPGRAM_TTS_VOICE
        for piece in pieces:
            async for chunk in self._speak(client, piece, voice):
                yield chunk

    async def _speak(self, client: Any, text: str, voice: str) -> AsyncIterator[bytes]:
        from deepgram.core.api_error import ApiError

        stripper = WavHeaderStripper()
        got_audio = False
        body = client.speak.v1.audio.generate(
            text=text, model=voice, encoding="mulaw", sample_rate=SAMPLE_RATE, container="none"
        )
        async with contextlib.aclosing(body):
            try:
                async for chunk in body:
                    audio = stripper.feed(chunk)
                    if audio:
                        got_audio = True
                        yield audio
                tail = stripper.finish()
            except TTSError:
                raise
            except (ApiError, httpx.HTTPError, OSError) as exc:
                raise map_deepgram_tts_error(exc, got_audio=got_audio) from exc
        if stripper.header_bytes:
            log.warning("Deepgram TTS sent a %d-byte WAV header; removed", stripper.header_bytes)
        if tail:
            got_audio = True
            yield tail
        if not got_audio:
            raise TTSError("Deepgram TTS returned no audio", kind="bad_response")

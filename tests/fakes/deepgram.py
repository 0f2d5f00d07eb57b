"""A protocol-faithful Deepgram on 127.0.0.1: live STT WebSocket and REST text-to-speech.

Wire format (deepgram-sdk 7.17 and developers.deepgram.com; see the project's Deepgram notes):

``GET /v1/listen?model=…&encoding=mulaw&sample_rate=8000&…`` (WebSocket upgrade)
    ``Authorization: Token <key>`` or HTTP 401. Client → server: binary audio, text ``KeepAlive``,
    ``Finalize``, ``CloseStream``. Server → client: ``SpeechStarted`` (with ``vad_events``),
    ``Results`` (interim, ``is_final``, ``speech_final``, words with times), ``UtteranceEnd`` (with
    ``utterance_end_ms``), ``Metadata`` after ``CloseStream`` then close 1000; 10 s with nothing
    received → close 1011 ``NET-0001``.

    The results come from the audio the fake actually receives: it decodes the μ-law, runs
    webrtcvad on 20 ms frames, and all times are stream time (bytes received / 8 per ms), so audio
    may be sent faster than real time. The *words* come from ``transcripts`` (the n-th detected
    utterance gets the n-th string, then ``default_transcript``), spread over the speech.

``POST /v1/speak?model=…&encoding=mulaw&sample_rate=8000&container=none`` with ``{"text": …}``
    Streams μ-law audio proportional to the text (``ms_per_char``), a voiced buzz with a
    syllable-rate envelope, in chunks. Without ``container=none`` a 44-byte WAV header comes first,
    as the real service's default ``container=wav`` does.

Faults: see the attributes of ``FakeDeepgram`` (rejected auth, drops, refusal, slow handshake,
HTTP errors, a body cut or stalled mid-way).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import webrtcvad
from aiohttp import WSMsgType, web

from media_ws.audio import pcm16_to_ulaw, ulaw_to_pcm16
from tests.fakes.background import BackgroundServer, sleep_while_connected

FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
FRAME_MS = 20


# --- recognition from received audio -------------------------------------------------------------


def _level_dbfs(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    rms = math.sqrt(float(np.mean(x * x))) if x.size else 0.0
    return 20 * math.log10(rms / 32768) if rms > 0 else -120.0


class FakeRecognizer:
    """Deepgram-like live results computed from received μ-law audio (stream time only).

    ``feed(bytes) -> [message dicts]``; ``flush(from_finalize=True)`` ends the speech in progress.
    """

    ONSET_FRAMES = 3  # 60 ms of voiced frames start an utterance
    INTERIM_EVERY_MS = 500
    SEGMENT_MAX_MS = 3000  # long speech is finalized in segments (is_final without speech_final)
    SILENCE_FINAL_EVERY_MS = 2000  # silence is finalized too, with an empty transcript
    MS_PER_WORD = 280
    MIN_LEVEL_DBFS = -50.0

    def __init__(
        self,
        *,
        endpointing_ms: int | None,
        utterance_end_ms: int | None,
        interim: bool,
        vad_events: bool,
        speech_final: bool,
        next_transcript: Any,
        request_id: str,
    ) -> None:
        self.endpointing_ms = endpointing_ms
        self.utterance_end_ms = utterance_end_ms
        self.interim = interim
        self.vad_events = vad_events
        self.speech_final_enabled = speech_final and endpointing_ms is not None
        self.next_transcript = next_transcript
        self.request_id = request_id
        self.vad = webrtcvad.Vad(1)
        self.buf = bytearray()
        self.t = 0  # ms of audio processed
        self.run = 0
        self.in_speech = False
        self.speech_start = 0
        self.last_voiced = 0
        self.final_until = 0
        self.last_interim = 0
        self.words: list[str] = []
        self.emitted = 0
        self.last_word_end: int | None = None
        self.pending_utterance_end: int | None = None
        self.utterances = 0

    # -- feeding --

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        self.buf += data
        while len(self.buf) >= FRAME_BYTES:
            frame = bytes(self.buf[:FRAME_BYTES])
            del self.buf[:FRAME_BYTES]
            self._frame(frame, out)
        return out

    def flush(self, *, from_finalize: bool = True) -> list[dict[str, Any]]:
        """What Finalize / CloseStream produce: the speech in progress, finalized."""
        out: list[dict[str, Any]] = []
        if self.in_speech:
            self.last_voiced = self.t
            out.append(self._final(end=self.t, last=True, speech_final=False, from_finalize=from_finalize))
            self.in_speech = False
            self.run = 0
        return out

    def _frame(self, frame: bytes, out: list[dict[str, Any]]) -> None:
        pcm = ulaw_to_pcm16(frame)
        voiced = self.vad.is_speech(pcm, 8000) and _level_dbfs(pcm) > self.MIN_LEVEL_DBFS
        self.t += FRAME_MS
        if not self.in_speech:
            self.run = self.run + 1 if voiced else 0
            if self.run >= self.ONSET_FRAMES:
                self._begin(self.t - FRAME_MS * self.ONSET_FRAMES, out)
                return
            if (
                self.pending_utterance_end is not None
                and self.utterance_end_ms is not None
                and self.t - self.pending_utterance_end >= self.utterance_end_ms
            ):
                out.append(
                    {
                        "type": "UtteranceEnd",
                        "channel": [0, 1],
                        "last_word_end": self.pending_utterance_end / 1000,
                    }
                )
                self.pending_utterance_end = None
            if self.t - self.final_until >= self.SILENCE_FINAL_EVERY_MS:
                out.append(self._results("", [], self.final_until, self.t, is_final=True, speech_final=False))
                self.final_until = self.t
            return
        if voiced:
            self.last_voiced = self.t
        endpoint = self.endpointing_ms if self.endpointing_ms is not None else 300
        if self.t - self.last_voiced >= endpoint:
            out.append(self._final(end=self.t, last=True, speech_final=self.speech_final_enabled))
            self.in_speech = False
            self.run = 0
            self.pending_utterance_end = self.last_word_end
        elif self.t - self.final_until >= self.SEGMENT_MAX_MS and self._estimate() > self.emitted:
            out.append(self._final(end=self.t, last=False, speech_final=False))
        elif self.interim and self.t - self.last_interim >= self.INTERIM_EVERY_MS:
            self.last_interim = self.t
            words = self.words[self.emitted : self._estimate()]
            if words:
                timed = self._timed(words, max(self.speech_start, self.final_until), self.t)
                out.append(self._results(" ".join(words), timed, self.final_until, self.t, is_final=False))

    def _begin(self, start: int, out: list[dict[str, Any]]) -> None:
        self.in_speech = True
        self.speech_start = start
        self.last_voiced = self.t
        self.last_interim = self.t
        self.pending_utterance_end = None
        self.words = str(self.next_transcript()).split()
        self.emitted = 0
        self.utterances += 1
        if self.vad_events:
            out.append({"type": "SpeechStarted", "channel": [0], "timestamp": start / 1000})

    def _estimate(self) -> int:
        """How many of the utterance's words have 'been said' by now (never all before the end)."""
        n = int((self.t - self.speech_start) / self.MS_PER_WORD) + 1
        return max(min(n, len(self.words) - 1), self.emitted)

    def _final(
        self, *, end: int, last: bool, speech_final: bool, from_finalize: bool = False
    ) -> dict[str, Any]:
        upto = len(self.words) if last else self._estimate()
        words = self.words[self.emitted : upto]
        w_start = max(self.speech_start, self.final_until)
        w_end = self.last_voiced if last else end
        timed = self._timed(words, w_start, max(w_end, w_start + FRAME_MS))
        self.emitted = upto
        msg = self._results(
            " ".join(words),
            timed,
            self.final_until,
            end,
            is_final=True,
            speech_final=speech_final,
            from_finalize=from_finalize,
        )
        if timed:
            self.last_word_end = round(timed[-1]["end"] * 1000)
        self.final_until = end
        self.last_interim = end
        return msg

    @staticmethod
    def _timed(words: list[str], start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        if not words:
            return []
        step = (end_ms - start_ms) / len(words)
        timed = []
        for i, token in enumerate(words):
            w0 = start_ms + i * step
            w1 = end_ms if i == len(words) - 1 else w0 + 0.9 * step
            bare = token.strip(".,!?;:\"'()").lower() or token.lower()
            timed.append(
                {
                    "word": bare,
                    "start": round(w0 / 1000, 3),
                    "end": round(w1 / 1000, 3),
                    "confidence": 0.98,
                    "punctuated_word": token,
                }
            )
        return timed

    def _results(
        self,
        transcript: str,
        words: list[dict[str, Any]],
        start_ms: int,
        end_ms: int,
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
    ) -> dict[str, Any]:
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round((end_ms - start_ms) / 1000, 3),
            "start": round(start_ms / 1000, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {"transcript": transcript, "confidence": 0.98 if transcript else 0.0, "words": words}
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": "general-nova-3", "version": "2024-12-20.0", "arch": "nova-3"},
                "model_uuid": "00000000-0000-4000-8000-000000000003",
            },
        }


# --- speech-like audio for TTS -------------------------------------------------------------------


def synth_voice_ulaw(text: str, ms_per_char: int = 60) -> bytes:
    """A voiced-like μ-law 8 kHz signal whose duration is ``ms_per_char`` per character of ``text``.

    A glottal-like buzz (harmonics of a 110-140 Hz gliding pitch, 1/k amplitudes, up to 3.4 kHz)
    under a 4 Hz syllable envelope, peak about -6 dBFS. Not speech, but not silence or a pure tone.
    """
    n = max(len(text), 1) * ms_per_char * 8
    t = np.arange(n) / 8000.0
    f0 = 125 + 15 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 8000.0
    buzz = np.zeros(n)
    for k in range(1, 28):
        buzz += np.where(k * f0 < 3400, np.sin(k * phase) / k, 0.0)
    envelope = (0.5 - 0.5 * np.cos(2 * np.pi * 4.0 * t)) ** 0.7
    x = buzz * envelope
    peak = float(np.max(np.abs(x))) or 1.0
    pcm = np.round(x / peak * 16000).astype("<i2").tobytes()
    return pcm16_to_ulaw(pcm)


def wav_header_mulaw(data_bytes: int, sample_rate: int = 8000) -> bytes:
    """A 44-byte RIFF/WAVE header for μ-law (format 7), mono, 8 bits per sample."""
    fmt = (
        (7).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + sample_rate.to_bytes(4, "little")
        + sample_rate.to_bytes(4, "little")  # byte rate: 1 byte per sample
        + (1).to_bytes(2, "little")
        + (8).to_bytes(2, "little")
    )
    return (
        b"RIFF"
        + (36 + data_bytes).to_bytes(4, "little")
        + b"WAVE"
        + b"fmt "
        + (16).to_bytes(4, "little")
        + fmt
        + b"data"
        + data_bytes.to_bytes(4, "little")
    )


# --- recorded traffic ----------------------------------------------------------------------------


@dataclass
class ListenSession:
    """One ``/v1/listen`` WebSocket as the fake saw it."""

    params: dict[str, str]
    authorization: str
    audio_bytes: int = 0
    audio_messages: int = 0
    client_messages: list[str] = field(default_factory=list)  # "KeepAlive", "Finalize", "CloseStream"
    server_messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    closed_by: str | None = None  # "server" | "client"

    def sent(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.server_messages if m.get("type") == kind]


@dataclass
class SpeakRequest:
    """One ``POST /v1/speak`` as the fake saw it."""

    params: dict[str, str]
    text: str
    authorization: str
    audio_bytes: int = 0  # body bytes the fake meant to send (header included)
    bytes_sent: int = 0
    completed: bool = False
    client_disconnected: bool = False


class FakeDeepgram(BackgroundServer):
    """Deepgram listen (WebSocket) and speak (REST) on 127.0.0.1. Set attributes to script it.

    Script: ``transcripts`` (list of strings, one per detected utterance, then
    ``default_transcript``), ``speech_final`` (False: only ``UtteranceEnd`` ends utterances, as
    when line noise keeps Deepgram's endpointing from firing).

    Listen faults: ``reject_auth``; ``handshake_delay_s``; ``drop_after_bytes`` (close 1011 after
    that much audio on each of the next ``drop_count`` connections); ``drop_all()`` on demand;
    ``refuse()``/``accept()`` (from ``BackgroundServer``); ``ignore_close_stream`` (never answer
    CloseStream); ``idle_timeout_s`` (10 s like Deepgram).

    Speak faults: ``speak_status`` (an HTTP error status), ``speak_ttfb_s`` (delay before the first
    byte), ``speak_chunk_bytes`` / ``speak_chunk_interval_s`` (pacing), ``speak_drop_after_bytes``
    (connection closed mid-body), ``speak_stall_after_bytes`` (stops sending, keeps the socket),
    ``speak_force_container`` ("wav": send a WAV header even when asked for ``container=none``).
    """

    def __init__(self, api_key: str = "dg-test-key") -> None:
        super().__init__()
        self.api_key = api_key
        # listen script and faults
        self.transcripts: list[str] = []
        self.default_transcript = "hello from the fake deepgram"
        self.speech_final = True
        self.reject_auth = False
        self.handshake_delay_s = 0.0
        self.drop_after_bytes: int | None = None
        self.drop_count = 1
        self.drop_code = 1011
        self.ignore_close_stream = False
        self.idle_timeout_s = 10.0
        # speak behaviour and faults
        self.ms_per_char = 60
        self.speak_status: int | None = None
        self.speak_ttfb_s = 0.0
        self.speak_chunk_bytes = 800  # 100 ms of μ-law
        self.speak_chunk_interval_s = 0.005
        self.speak_drop_after_bytes: int | None = None
        self.speak_stall_after_bytes: int | None = None
        self.speak_force_container: str | None = None  # e.g. "wav": ignore container=none
        # recordings
        self.listen_sessions: list[ListenSession] = []
        self.listen_attempts = 0
        self.speak_requests: list[SpeakRequest] = []
        self._utterance_index = 0
        self._live: dict[int, web.WebSocketResponse] = {}

    # --- helpers for tests ----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment variables pointing the project's settings at this fake (for subprocesses)."""
        return {
            "DEEPGRAM_API_KEY": self.api_key,
            "DEEPGRAM_API_URL": self.http_url,
            "DEEPGRAM_WS_URL": self.ws_url,
        }

    def drop_all(self, code: int = 1011, reason: str = "NET-0000 fault injected by the fake") -> None:
        """Close every open listen WebSocket with ``code`` now (thread-safe)."""

        async def _drop() -> None:
            for ws in list(self._live.values()):
                await ws.close(code=code, message=reason.encode())

        self.call(_drop())

    def _next_transcript(self) -> str:
        i = self._utterance_index
        self._utterance_index += 1
        return self.transcripts[i] if i < len(self.transcripts) else self.default_transcript

    # --- the app --------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/listen", self._listen)
        app.router.add_post("/v1/speak", self._speak)
        return app

    def _authorized(self, request: web.Request) -> bool:
        return not self.reject_auth and request.headers.get("Authorization", "") == f"Token {self.api_key}"

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        # The legacy Deepgram error body; the "dg-error" header carries the message too.
        body = {"err_code": code, "err_msg": message, "request_id": str(uuid.uuid4())}
        return web.json_response(body, status=status, headers={"dg-error": message})

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        self.listen_attempts += 1
        if self.handshake_delay_s:
            await asyncio.sleep(self.handshake_delay_s)
        if not self._authorized(request):
            return self._error(401, "INVALID_AUTH", "Invalid credentials.")
        params = dict(request.query)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = ListenSession(params=params, authorization=request.headers.get("Authorization", ""))
        self.listen_sessions.append(session)
        self._live[id(ws)] = ws
        request_id = str(uuid.uuid4())
        endpointing = params.get("endpointing", "10")
        recognizer = FakeRecognizer(
            endpointing_ms=None if endpointing == "false" else int(endpointing),
            utterance_end_ms=int(params["utterance_end_ms"]) if "utterance_end_ms" in params else None,
            interim=params.get("interim_results") == "true",
            vad_events=params.get("vad_events") == "true",
            speech_final=self.speech_final,
            next_transcript=self._next_transcript,
            request_id=request_id,
        )
        drop_at = None
        if self.drop_after_bytes is not None and self.drop_count > 0:
            self.drop_count -= 1
            drop_at = self.drop_after_bytes
        sha = hashlib.sha256()

        async def send(msgs: list[dict[str, Any]]) -> None:
            for m in msgs:
                session.server_messages.append(m)
                await ws.send_str(json.dumps(m))

        try:
            while True:
                try:
                    msg = await ws.receive(timeout=self.idle_timeout_s)
                except TimeoutError:
                    session.closed_by, session.close_code = "server", 1011
                    await ws.close(
                        code=1011,
                        message=b"NET-0001 Deepgram did not receive audio data or a text message "
                        b"within the timeout window.",
                    )
                    break
                if msg.type == WSMsgType.BINARY:
                    session.audio_bytes += len(msg.data)
                    session.audio_messages += 1
                    sha.update(msg.data)
                    await send(recognizer.feed(msg.data))
                    if drop_at is not None and session.audio_bytes >= drop_at:
                        session.closed_by, session.close_code = "server", self.drop_code
                        await ws.close(code=self.drop_code, message=b"NET-0000 fault injected by the fake")
                        break
                elif msg.type == WSMsgType.TEXT:
                    try:
                        kind = str(json.loads(msg.data).get("type"))
                    except (ValueError, AttributeError):
                        kind = "<invalid>"
                    session.client_messages.append(kind)
                    if kind == "Finalize":
                        await send(recognizer.flush(from_finalize=True))
                    elif kind == "CloseStream" and not self.ignore_close_stream:
                        await send(recognizer.flush(from_finalize=False))
                        await send(
                            [
                                {
                                    "type": "Metadata",
                                    "transaction_key": "deprecated",
                                    "request_id": request_id,
                                    "sha256": sha.hexdigest(),
                                    "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                                    "duration": session.audio_bytes / 8000,
                                    "channels": 1,
                                }
                            ]
                        )
                        session.closed_by, session.close_code = "server", 1000
                        await ws.close(code=1000)
                        break
                else:  # CLOSE / CLOSING / CLOSED / ERROR: the client went away
                    if session.closed_by is None:
                        session.closed_by, session.close_code = "client", ws.close_code
                    break
        finally:
            self._live.pop(id(ws), None)
            if session.closed_by is None:
                session.closed_by, session.close_code = "server", ws.close_code
        return ws

    async def _speak(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._error(401, "INVALID_AUTH", "Invalid credentials.")
        params = dict(request.query)
        try:
            text = str((await request.json()).get("text") or "")
        except ValueError:
            text = ""
        record = SpeakRequest(
            params=params, text=text, authorization=request.headers.get("Authorization", "")
        )
        self.speak_requests.append(record)
        if self.speak_status is not None:
            return self._error(
                self.speak_status, "FAULT", f"fault injected by the fake ({self.speak_status})"
            )
        if not text.strip():
            return self._error(400, "Bad Request", "Text must not be empty.")
        encoding = params.get("encoding", "linear16")
        rate = params.get("sample_rate", "24000")
        if encoding != "mulaw" or rate != "8000":
            return self._error(400, "UNSUPPORTED", "This fake only speaks encoding=mulaw sample_rate=8000.")
        audio = synth_voice_ulaw(text, self.ms_per_char)
        container = self.speak_force_container or params.get("container", "wav")
        body = audio if container == "none" else wav_header_mulaw(len(audio)) + audio
        record.audio_bytes = len(body)
        if self.speak_ttfb_s and not await sleep_while_connected(request, self.speak_ttfb_s):
            record.client_disconnected = True
            return web.Response(status=499)
        response = web.StreamResponse(status=200, headers={"Content-Type": "audio/basic"})
        await response.prepare(request)
        try:
            for chunk in _chunks(body, self.speak_chunk_bytes):
                if (
                    self.speak_drop_after_bytes is not None
                    and record.bytes_sent >= self.speak_drop_after_bytes
                ):
                    assert request.transport is not None
                    request.transport.close()  # no terminating chunk: the body breaks off
                    return response
                if (
                    self.speak_stall_after_bytes is not None
                    and record.bytes_sent >= self.speak_stall_after_bytes
                ):
                    if not await sleep_while_connected(request, 120):
                        record.client_disconnected = True
                    return response
                await response.write(chunk)
                record.bytes_sent += len(chunk)
                if not await sleep_while_connected(request, self.speak_chunk_interval_s):
                    record.client_disconnected = True
                    return response
            await response.write_eof()
            record.completed = True
        except ConnectionError:  # the client closed the stream while we wrote
            record.client_disconnected = True
        except asyncio.CancelledError:
            record.client_disconnected = True
            raise
        return response


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.fixture
def fake_deepgram(settings: Any) -> Iterator[FakeDeepgram]:
    """A running ``FakeDeepgram`` with the Deepgram settings pointed at it and engines reset."""
    from media_ws.providers import reset_engines

    server = FakeDeepgram().start()
    for name, value in server.env().items():
        setattr(settings, name, value)
    reset_engines()
    try:
        yield server
    finally:
        # Engines read the settings on each use and SDK clients are cached per settings, so
        # nothing built against this fake is reused once the settings are restored.
        server.stop()

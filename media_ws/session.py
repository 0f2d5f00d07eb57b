"""``CallSession``: one live call's conversation, from Twilio ``start`` to ``stop``.

The consumer hands it parsed Media Streams events; it answers with messages for Twilio and runs
the conversation in background tasks:

- every ``media`` message: the μ-law payload goes to streaming STT as is, and is re-framed into
  exact 20 ms frames for the barge-in detector. Nothing on this path waits on the database, a
  provider or a tool.
- barge-in: caller speech starts while bot audio is unplayed → Twilio ``clear`` goes out before
  anything else is awaited, then the response (LLM stream and TTS) is cancelled. A generation id
  guards the stream, so audio of a cancelled response is never sent afterwards. The bot turn keeps
  the text the caller heard (from the mark echoes) and only that enters the LLM history.
- a caller utterance → LLM (streamed) → text cut into sentences/clauses → TTS → media chunks of at
  most 200 ms, each followed by a mark.
- tools (``end_call``, ``transfer_to_human``) run inside the response and reach the call through
  ``get_current_call()``, which returns this session.

Times named ``*_ms`` are on the call clock: ms since the stream started, the clock of Twilio's
``media.timestamp`` (twilio.com/docs/voice/media-streams/websocket-messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from calls import services
from calls.errors import CallControlError
from calls.models import Call, CallDirection, CallStatus, EndReason, EventKind, TurnRole
from media_ws import providers
from media_ws.audio import Reframer, chunk_bytes, ulaw_to_pcm16
from media_ws.calllog import CallLog, TurnRecord
from media_ws.context import CallHandle, spawn_in_call
from media_ws.errors import LLMError, STTError, TTSError
from media_ws.playback import PlaybackTracker
from media_ws.protocol import Dtmf, Mark, Media, Start, build_clear, build_mark, build_media
from media_ws.providers.base import (
    InterimTranscript,
    LanguageModel,
    SpeechStarted,
    SpeechToText,
    STTStream,
    TextDelta,
    TextToSpeech,
    ToolCall,
    TranscriptionGap,
    Utterance,
    dtmf_message,
)
from media_ws.segmenter import SentenceSegmenter
from media_ws.tools import END_CALL, TOOLS, TRANSFER_TO_HUMAN, run_tool
from media_ws.vad import BargeInConfig, BargeInDetector, SpeechEnd, SpeechOnset

logger = logging.getLogger(__name__)

SendText = Callable[[str], Awaitable[None]]
CloseStream = Callable[[], Awaitable[None]]

#: Caller audio kept while the STT connection opens, so the first words are not lost (μ-law bytes).
_STT_BACKLOG_BYTES = 10 * 8000
#: How long a finished utterance may take to come back from STT before the silence timer runs again:
#: a base plus a share of the utterance's length (offline decoding runs at ~0.3-0.45x real time).
_TRANSCRIPT_GRACE_S = 3.0
_TRANSCRIPT_GRACE_PER_S = 0.6
#: Teardown after stop: the waits for a carrier action, STT's last words and the other tasks share
#: _SHUTDOWN_BUDGET_S; the final call-log write then has until _LOG_WRITE_S after that. Together
#: they stay under Daphne's 10 s application close timeout.
_SHUTDOWN_BUDGET_S = 5.5
_LOG_WRITE_S = 3.0
#: Messages of history sent to the LLM (the system prompt comes on top).
_HISTORY_LIMIT = 40
#: TTS failures that make the session speak with the offline voice for ``TTS_FAILOVER_COOLDOWN_S``:
#: they would most likely happen again on the next sentence (and each timeout costs its wait again).
_TTS_FAILOVER_KINDS = frozenset({"timeout", "unavailable", "auth"})


@dataclass(eq=False)
class Response:
    """One bot response: a generation of audio, its turn record and the task producing it."""

    gen: int
    turn: TurnRecord
    kind: str  # "llm" (a reply), "fixed" (a set line), "tool" (a keypad shortcut) or "silence-end"
    task: asyncio.Task[None] | None = None
    history_msg: dict[str, Any] | None = None
    spoken: list[str] = field(default_factory=list)
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # all sent audio echoed (or cut)
    sent: asyncio.Event = field(default_factory=asyncio.Event)  # all its audio handed to Twilio
    played_all: bool = False
    finalized: bool = False
    irreversible: bool = False  # a hang-up or transfer is under way: nothing may cancel it now
    started_ms: int = 0  # call clock when the response began


class CallSession(CallHandle):
    """The conversation of one live call. Create it with ``open_session``; the consumer drives it."""

    def __init__(
        self,
        *,
        start: Start,
        call_id: str,
        greeting: str,
        instructions: str,
        send: SendText,
        close: CloseStream,
        stt: SpeechToText,
        llm: LanguageModel,
        tts: TextToSpeech,
        barge_in: BargeInConfig,
        log: CallLog,
    ) -> None:
        self.call_sid = start.call_sid
        self.stream_sid = start.stream_sid
        self.account_sid = start.account_sid
        self.custom_parameters = dict(start.custom_parameters)
        self.call_id = call_id
        self.greeting = greeting
        self.instructions = instructions
        self._send_text = send
        self._close_stream = close
        self.stt_engine, self.llm, self.tts = stt, llm, tts
        self.log = log

        self.reframer = Reframer()
        self.detector = BargeInDetector(barge_in)
        self.playback = PlaybackTracker()

        self._t0 = time.monotonic()
        self._last_media_ms = 0
        self._last_media_mono = self._t0
        self._clock_floor = 0
        # Outbound pacing: when all bot audio sent so far will have played, if played in real time.
        self._playout_until = 0.0
        self._lead_s = settings.PLAYBACK_LEAD_MS / 1000
        self._gen = 0
        self._active_gen: int | None = None  # the only generation whose audio may go out
        self._response: Response | None = None
        self._responses: dict[int, Response] = {}
        self._next_index = 0
        self._reserved_caller_index: int | None = None  # taken at speech onset: turns stay in spoken order
        self._history: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

        self._stt: STTStream | None = None
        self._stt_ready = False
        self._stt_backlog: deque[tuple[bytes, int]] = deque()
        self._stt_backlog_bytes = 0
        self._stt_task: asyncio.Task[None] | None = None
        self._interim = ""
        self._onset_ms: int | None = None
        self._speech_end_ms: int | None = None
        self._awaiting_transcript_until = 0.0
        self._stt_apology_due = False  # STT failed for good while the caller spoke: apologise at its end

        self._tts_failover_until = 0.0  # time.monotonic() until which the offline voice speaks
        self._fallback_tts: TextToSpeech | None = None

        self._idle_since = time.monotonic()
        self._reprompts = 0
        self._ending = False
        self._closed = False
        self._shut = False
        self._end_reason = ""
        self.rejected_messages = 0

    # ==== clock ==================================================================================
    def now_ms(self) -> int:
        """The call clock now: the latest caller media timestamp, advanced by the time since it came.

        Never goes backwards: media that arrives late (network jitter, a busy loop) would otherwise
        pull the extrapolated clock back and disorder the latency stamps.
        """
        now = self._last_media_ms + int((time.monotonic() - self._last_media_mono) * 1000)
        if now < self._clock_floor:
            return self._clock_floor
        self._clock_floor = now
        return now

    # ==== lifecycle ==============================================================================
    async def begin(self) -> None:
        """Start logging, transcription and the greeting. Called once, right after ``start``."""
        self.log.start()
        self.log.update_call(stream_sid=self.stream_sid, status="in-progress")
        self.log.update_call_if_null(answered_at=timezone.now())
        self.log.event(
            EventKind.STREAM_START,
            audio_ms=0,
            stream_sid=self.stream_sid,
            custom_parameters=self.custom_parameters,
            engines={"stt": self.stt_engine.name, "llm": self.llm.name, "tts": self.tts.name},
        )
        self._stt_task = self._spawn(self._run_stt(self.stt_engine), "stt")
        self._spawn(self._watch_silence(), "silence")
        self._start_response("fixed", text=self.greeting)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = spawn_in_call(self, coro, name=f"{name}-{self.call_sid}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            logger.error("call %s: task %s failed", self.call_sid, task.get_name(), exc_info=exc)
            self.log.event(EventKind.ERROR, audio_ms=self.now_ms(), stage=task.get_name(), error=repr(exc))

    # ==== inbound events (called by the consumer) ================================================
    async def on_media(self, media: Media) -> None:
        """The per-frame path: forward to STT, run the barge-in detector on every 20 ms frame."""
        self._last_media_ms = media.timestamp_ms
        self._last_media_mono = time.monotonic()
        if self._stt_ready and self._stt is not None:
            self._stt.send_audio(media.payload, media.timestamp_ms)
        else:
            self._backlog_stt(media.payload, media.timestamp_ms)
        for frame, frame_ms in self.reframer.feed(media.payload, media.timestamp_ms):
            decision = self.detector.feed(ulaw_to_pcm16(frame), frame_ms)
            if decision is None:
                continue
            if isinstance(decision, SpeechOnset):
                if self._bot_talking() and not self._ending:
                    await self._barge_in(decision)
                self._on_caller_speech_start(decision)
            elif isinstance(decision, SpeechEnd):
                self._on_caller_speech_end(decision)

    def on_mark(self, mark: Mark) -> None:
        echo = self.playback.on_mark(mark.name)
        if echo is None:
            logger.debug("call %s: mark %r is not ours or was echoed twice", self.call_sid, mark.name)
            return
        if echo.drained:
            r = self._responses.get(echo.generation)
            if r is not None:
                r.played_all = echo.played and not r.finalized
                r.drained.set()

    async def on_dtmf(self, dtmf: Dtmf) -> None:
        """A keypad press: it interrupts the bot, and 0 / # are shortcuts to a person / goodbye."""
        at = self.now_ms()
        try:
            text = dtmf_message(dtmf.digit)
        except ValueError:
            self.on_protocol_error(
                f"dtmf: {dtmf.digit[:8]!r} is not a keypad digit", self.rejected_messages + 1
            )
            return
        self.log.event(EventKind.DTMF, audio_ms=at, digit=dtmf.digit)
        if self._ending:
            return
        if self._bot_talking():
            await self._barge_in(None, cause="dtmf")
        else:
            self._cancel_unspoken_response()
        self._record_caller_turn(text, start_ms=at, end_ms=at, approximate=False)
        self._history.append({"role": "user", "content": text})
        self._reprompts = 0
        shortcut = {settings.DTMF_TRANSFER_DIGIT: TRANSFER_TO_HUMAN, settings.DTMF_END_DIGIT: END_CALL}.get(
            dtmf.digit
        )
        if shortcut is not None:
            tool = ToolCall(
                id=f"dtmf-{at}", name=shortcut.name, arguments={"reason": f"caller pressed {dtmf.digit}"}
            )
            self._start_response("tool", tool=tool)
        else:
            self._start_response("llm", speech_end_ms=at, stt_final_ms=at)

    def on_control_unreachable(self, error: str) -> None:
        """The consumer could not join ``call_<CallSid>``: API hang-ups and transfers cannot reach
        this call (the conversation goes on). Recorded as an ``error`` event with ``stage="control"``."""
        self.log.event(EventKind.ERROR, audio_ms=self.now_ms(), stage="control", error=error)

    def on_protocol_error(self, reason: str, count: int) -> None:
        """A rejected message (already logged by the consumer); the first few also go in the call log."""
        self.rejected_messages += 1
        if count <= 20 or count % 100 == 0:
            self.log.event(EventKind.PROTOCOL_ERROR, audio_ms=self.now_ms(), reason=reason, count=count)

    async def on_remote_hangup(self, reason: str) -> None:
        """The API (or another process) hung the call up at the carrier: stop and close the stream."""
        # calls.services has logged the hang-up and asked the carrier; here the stream just ends.
        self._end_reason = self._end_reason or reason or EndReason.API_HANGUP
        self._ending = True
        await self._stop_talking()
        await self._close()

    async def on_remote_transfer(self, to: str) -> None:
        """The API redirected the call to a person: stop talking; Twilio ends the stream itself."""
        self._end_reason = EndReason.TRANSFERRED
        self._ending = True
        await self._stop_talking()
        if not self._shut:
            self._spawn(self._close_after(3.0), "close-after-transfer")

    # ==== caller speech ==========================================================================
    def _on_caller_speech_start(self, onset: SpeechOnset) -> None:
        self._onset_ms = onset.onset_ms
        if self._reserved_caller_index is None:
            self._reserved_caller_index = self._take_index()
        self._idle_since = time.monotonic()
        if self._stt is not None:
            self._stt.caller_speech(True, onset.onset_ms)

    def _on_caller_speech_end(self, end: SpeechEnd) -> None:
        self._speech_end_ms = end.end_ms
        self._idle_since = time.monotonic()
        spoken_s = (end.end_ms - end.onset_ms) / 1000
        self._awaiting_transcript_until = (
            time.monotonic() + _TRANSCRIPT_GRACE_S + _TRANSCRIPT_GRACE_PER_S * spoken_s
        )
        if self._stt is not None:
            self._stt.caller_speech(False, end.end_ms)
        if self._stt_apology_due:
            self._stt_apology_due = False
            self._awaiting_transcript_until = 0.0  # no transcript is coming for these words
            self._say_soon(settings.APOLOGY_LINE)

    def _bot_talking(self) -> bool:
        """Whether caller speech now cuts the bot: its audio is unplayed at Twilio, or the current
        response has sent audio and is not finished (the caller spoke in the gap while the next
        sentence is still in TTS or the LLM). A response that has sent nothing yet is not cut here:
        the caller may just be going on with their utterance (see ``_cancel_unspoken_response``)."""
        if self.playback.is_playing:
            return True
        r = self._response
        return (
            r is not None
            and not r.finalized
            and not r.irreversible
            and not r.sent.is_set()  # all sent and nothing unplayed: nothing left to cut
            and self.playback.sent_ms(r.gen) > 0
        )

    async def _barge_in(self, onset: SpeechOnset | None, cause: str = "speech", *, log: bool = True) -> None:
        """Caller speech (or a keypress) while the bot talks: ``clear`` first if any bot audio is
        unplayed (always for ``cause="stop"``), then cancel the response's TTS and LLM stream."""
        unplayed = self.playback.is_playing or cause == "stop"
        cut = self._cut_response()
        await self._send_clear_and_cancel(cut, onset, cause, log=log, clear=unplayed)

    def _cut_response(self) -> tuple[Response | None, int]:
        """The synchronous half of a barge-in (no await, so nothing can slip in between).

        Turns the stale-audio guard on (no audio of the current response goes out any more), flags
        the pending marks as cleared, and cuts the bot turn to the text the caller heard.
        """
        r = self._response
        self._active_gen = None
        cleared = len(self.playback.clear())
        self._playout_until = 0.0  # Twilio's buffer is empty again
        if r is not None and not r.irreversible:
            self._finalize_response(r, interrupted=True)
        return r, cleared

    async def _send_clear_and_cancel(
        self,
        cut: tuple[Response | None, int],
        onset: SpeechOnset | None,
        cause: str,
        *,
        log: bool = True,
        clear: bool = True,
    ) -> None:
        r, cleared = cut
        t0 = time.perf_counter()
        if clear:
            await self._send(build_clear(self.stream_sid))  # the first await after the decision
        clear_ms: float | None = round((time.perf_counter() - t0) * 1000, 3) if clear else None
        if (
            r is not None
            and not r.irreversible
            and r.task is not None
            and not r.task.done()
            and r.task is not asyncio.current_task()
        ):
            r.task.cancel()  # the LLM stream and TTS of that response stop with it
        if not log:
            return
        data: dict[str, Any] = {
            "cause": cause,
            "clear_send_ms": clear_ms,  # None: nothing was unplayed, no clear was needed
            "cleared_marks": cleared,
            "heard_text": r.turn.heard_text if r else "",
            "generation": r.gen if r else None,
        }
        if onset is not None:
            data.update(
                onset_ms=onset.onset_ms, decided_ms=onset.decided_ms, detection_latency_ms=onset.latency_ms
            )
        self.log.event(EventKind.BARGE_IN, audio_ms=onset.decided_ms if onset else self.now_ms(), **data)
        logger.info(
            "call %s: barge-in (%s) after %s ms of caller audio; clear sent in %s ms",
            self.call_sid,
            cause,
            data.get("detection_latency_ms", "-"),
            "-" if clear_ms is None else f"{clear_ms:.2f}",
        )

    def _cancel_unspoken_response(self) -> None:
        """Drop a response that has not sent audio yet (the caller went on speaking)."""
        r = self._response
        if r is None or r.finalized or r.irreversible or r.task is None or r.task.done():
            return
        if self.playback.sent_ms(r.gen) == 0:
            r.task.cancel()
            self._active_gen = None
            self._finalize_response(r, interrupted=True)

    # ==== STT ====================================================================================
    def _backlog_stt(self, payload: bytes, ms: int) -> None:
        self._stt_backlog.append((payload, ms))
        self._stt_backlog_bytes += len(payload)
        while self._stt_backlog_bytes > _STT_BACKLOG_BYTES:
            old, _ = self._stt_backlog.popleft()
            self._stt_backlog_bytes -= len(old)

    async def _run_stt(self, engine: SpeechToText) -> None:
        """Open transcription and turn its events into caller turns; fall back offline if it fails."""
        while True:
            stream = engine.open_stream()
            try:
                await stream.start()
                self._stt = stream
                if self.detector.speaking and self._onset_ms is not None and not self._stt_apology_due:
                    stream.caller_speech(True, self._onset_ms)
                while self._stt_backlog:
                    payload, ms = self._stt_backlog.popleft()
                    stream.send_audio(payload, ms)
                self._stt_backlog_bytes = 0
                self._stt_ready = True
                async for event in stream.events():
                    self._on_stt_event(event)
                return  # closed normally (the call is ending)
            except STTError as exc:
                mid_call = self._stt_ready
                self._stt_ready = False
                self.log.event(
                    EventKind.ERROR, audio_ms=self.now_ms(), stage="stt", kind=exc.kind, error=str(exc)
                )
                logger.warning("call %s: STT failed (%s): %s", self.call_sid, exc.kind, exc)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(stream.close(), 2)
                if self._ending:
                    return
                lost = self._words_in_flight_lost() if mid_call else False
                fallback = _offline_stt()
                if fallback is None or type(engine) is type(fallback):
                    self._say_soon(settings.APOLOGY_LINE)
                    return
                engine = fallback
                self.log.event(
                    EventKind.ERROR,
                    audio_ms=self.now_ms(),
                    stage="stt",
                    fallback=engine.name,
                    words_lost=lost,
                )
                if lost and not self.detector.speaking:
                    self._say_soon(settings.APOLOGY_LINE)
                elif lost:
                    self._stt_apology_due = True  # said when the caller stops (not over their words)

    def _words_in_flight_lost(self) -> bool:
        """STT failed for good: were caller words under way that no engine will now transcribe?

        Words already given as an interim transcript are kept (an approximate caller turn); the
        caller still gets an apology, since their utterance never reached the LLM whole.
        """
        interim = self._interim.strip()
        if interim:
            self._record_caller_turn(
                interim, start_ms=self._onset_ms, end_ms=self.now_ms(), approximate=True, spoken=True
            )
            self._interim = ""
        awaiting = time.monotonic() < self._awaiting_transcript_until
        if awaiting:
            self._awaiting_transcript_until = 0.0
        return bool(interim) or awaiting or self.detector.speaking

    def _on_stt_event(self, event: Any) -> None:
        if isinstance(event, Utterance):
            self._interim = ""
            text = event.text.strip()
            if text:
                self._on_utterance(text, event.end_ms, event.approximate)
            else:
                self._awaiting_transcript_until = 0.0
        elif isinstance(event, InterimTranscript):
            self._interim = event.text
        elif isinstance(event, TranscriptionGap):
            # STT reconnected. Audio it could not replay is lost (an error); a reconnect that
            # re-sent everything lost nothing, so it is only worth a warning.
            self.log.event(
                EventKind.ERROR if event.gap_ms > 0 else EventKind.WARNING,
                audio_ms=self.now_ms(),
                stage="stt",
                reconnected=True,
                gap_ms=event.gap_ms,
                reason=event.reason,
            )
        elif isinstance(event, SpeechStarted):
            pass  # our own detector decides barge-in; the engine's onset is informational

    def _on_utterance(self, text: str, end_ms: int | None, approximate: bool) -> None:
        now = self.now_ms()
        speech_end = end_ms if end_ms is not None else (self._speech_end_ms if self._speech_end_ms else now)
        start = self._onset_ms if self._onset_ms is not None and self._onset_ms <= speech_end else None
        self._record_caller_turn(
            text, start_ms=start, end_ms=speech_end, approximate=approximate, spoken=True
        )
        self._awaiting_transcript_until = 0.0
        self._idle_since = time.monotonic()
        if self._ending:
            return  # the transcript is kept, but the call is already ending
        self._reprompts = 0
        self._history.append({"role": "user", "content": text})
        r = self._response
        late = r is not None and r.kind != "fixed" and speech_end <= r.started_ms
        if r is not None and not r.finalized and (r.irreversible or late):
            # Either a hang-up or transfer is under way, or this is a late transcript of speech that
            # ended before the bot's current answer began (offline STT takes a moment; e.g. the caller
            # spoke, then pressed # and the goodbye is playing): keep the words, do not cut the bot.
            # (A re-prompt, a fixed line, is still cut and the question answered.)
            return
        if self._bot_talking():
            # The detector missed the onset (e.g. very soft speech) but STT heard words: same as a
            # barge-in. Cut now, so the response started below is not the one cancelled.
            unplayed = self.playback.is_playing
            cut = self._cut_response()
            self._spawn(self._send_clear_and_cancel(cut, None, "transcript", clear=unplayed), "barge-in")
        else:
            self._cancel_unspoken_response()
        self._start_response("llm", speech_end_ms=speech_end, stt_final_ms=now)

    def _record_caller_turn(
        self, text: str, *, start_ms: int | None, end_ms: int | None, approximate: bool, spoken: bool = False
    ) -> None:
        """Log a caller turn. Spoken turns take the index reserved when the speech began, so the
        transcript keeps the order things were said even when a transcript arrives late."""
        now = timezone.now()
        index = self._reserved_caller_index if spoken else None
        if spoken:
            self._reserved_caller_index = None
        record = TurnRecord(
            index=self._take_index() if index is None else index,
            role=TurnRole.CALLER,
            text=text,
            heard_text=text,
            approximate=approximate,
            started_at=now,
            ended_at=now,
            audio_start_ms=start_ms,
            audio_end_ms=end_ms,
        )
        self.log.turn(record)

    def _take_index(self) -> int:
        index = self._next_index
        self._next_index += 1
        return index

    # ==== responses ==============================================================================
    def _drop_stale_reservation(self) -> None:
        """Speech that produced no transcript (a cough, noise) must not hold an index before new turns."""
        if (
            self._reserved_caller_index is not None
            and not self.detector.speaking
            and time.monotonic() >= self._awaiting_transcript_until
        ):
            self._reserved_caller_index = None

    def _start_response(
        self,
        kind: str,
        *,
        text: str = "",
        tool: ToolCall | None = None,
        speech_end_ms: int | None = None,
        stt_final_ms: int | None = None,
    ) -> Response:
        self._gen += 1
        self._drop_stale_reservation()
        turn = TurnRecord(
            index=self._take_index(),
            role=TurnRole.BOT,
            started_at=timezone.now(),
            speech_end_ms=speech_end_ms,
            stt_final_ms=stt_final_ms,
        )
        r = Response(gen=self._gen, turn=turn, kind=kind, started_ms=self.now_ms())
        self._response = r
        self._responses[r.gen] = r
        self._active_gen = r.gen
        for old in [g for g in self._responses if g < r.gen - 4]:
            self._responses.pop(old, None)
            self.playback.forget(old)
        if kind == "llm":
            coro = self._respond_llm(r)
        elif kind == "tool" and tool is not None:
            coro = self._respond_tool(r, tool)
        elif kind == "silence-end":
            coro = self._respond_silence_end(r)
        else:
            coro = self._respond_fixed(r, text)
        r.task = self._spawn(self._response_main(r, coro), f"response{r.gen}")
        return r

    async def _response_main(self, r: Response, body: Any) -> None:
        try:
            await body
            r.sent.set()
            if not r.finalized and r.spoken:
                await self._await_drained(r, timeout_s=self._playback_timeout(r))
                if not r.finalized:
                    self._finalize_response(r, interrupted=not r.played_all)
            elif not r.finalized:
                self._finalize_response(r, interrupted=False)
        except asyncio.CancelledError:
            if not r.finalized:
                self._finalize_response(r, interrupted=True)
            raise
        except Exception as exc:
            # A bug or an engine error nothing below caught (e.g. the offline voice failing during a
            # TTS failover): close the turn, so the silence watcher and _say_soon work again, and
            # apologise unless this response was the apology (no loop of failing apologies).
            logger.exception("call %s: response %d (%s) failed", self.call_sid, r.gen, r.kind)
            self.log.event(EventKind.ERROR, audio_ms=self.now_ms(), stage="response", error=repr(exc))
            if not r.finalized:
                self._finalize_response(r, interrupted=not r.played_all)
            if r.turn.text != settings.APOLOGY_LINE:
                r.sent.set()
                self._say_soon(settings.APOLOGY_LINE)
        finally:
            r.sent.set()
            self._idle_since = time.monotonic()

    async def _respond_fixed(self, r: Response, text: str) -> None:
        await self._speak_text(r, text)

    async def _speak_text(self, r: Response, text: str) -> None:
        """Speak a set line sentence by sentence, like a reply (what was heard is then exact to the
        sentence, and the first sentence is heard sooner)."""
        segmenter = SentenceSegmenter()
        for piece in [*segmenter.push(text), *segmenter.flush()]:
            await self._speak(r, piece)

    async def _respond_tool(self, r: Response, tool: ToolCall) -> None:
        await self._run_tool(r, tool)

    async def _respond_silence_end(self, r: Response) -> None:
        # As end_call: a goodbye whose marks never come back still ends the call; one the caller
        # interrupted does not (they are talking again), and the silence watcher starts over.
        try:
            await self._speak_text(r, settings.SILENCE_GOODBYE_LINE)
            if await self.wait_for_playback() or not self.response_interrupted():
                await self.hangup(reason=EndReason.SILENCE)
                return
        except asyncio.CancelledError:  # a barge-in cut the goodbye (or the call is ending)
            self._watch_silence_again()
            raise
        self._watch_silence_again()

    def _watch_silence_again(self) -> None:
        """After an interrupted silence goodbye: the caller is back, so count re-prompts afresh."""
        if not self._ending:
            self._reprompts = 0
            self._spawn(self._watch_silence(), "silence")

    async def _respond_llm(self, r: Response) -> None:
        """LLM → sentence/clause pieces → TTS → audio, with the tool call (if any) after the speech."""
        messages = self._llm_messages()
        r.history_msg = {"role": "assistant", "content": ""}
        self._history.append(r.history_msg)
        segmenter = SentenceSegmenter()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        tool_calls: list[ToolCall] = []
        failed: LLMError | None = None
        speaker = self._spawn(self._speak_pieces(r, pieces), f"speaker{r.gen}")
        try:
            try:
                async with aclosing(self.llm.stream(messages, TOOLS)) as events:
                    async for event in events:
                        if isinstance(event, TextDelta):
                            if r.turn.llm_first_token_ms is None:
                                r.turn.llm_first_token_ms = self.now_ms()
                            for piece in segmenter.push(event.text):
                                pieces.put_nowait(piece)
                        elif isinstance(event, ToolCall):
                            tool_calls.append(event)
            except LLMError as exc:
                failed = exc
            for piece in segmenter.flush():
                pieces.put_nowait(piece)
            if failed is not None:
                self.log.event(
                    EventKind.ERROR, audio_ms=self.now_ms(), stage="llm", kind=failed.kind, error=str(failed)
                )
                logger.warning("call %s: LLM failed (%s): %s", self.call_sid, failed.kind, failed)
                # Also after a reply broken off mid-way: the caller should not be left hanging.
                pieces.put_nowait(settings.APOLOGY_LINE)
            pieces.put_nowait(None)
            await speaker
        finally:
            if not speaker.done():
                speaker.cancel()
        if failed is None and tool_calls:
            for dropped in tool_calls[1:]:
                # One action per reply (a hang-up after a transfer, say, would make no sense): the
                # first one runs; the others are recorded, not run.
                logger.warning(
                    "call %s: the model asked for %d tools in one reply; %r not run",
                    self.call_sid,
                    len(tool_calls),
                    dropped.name,
                )
                self.log.event(
                    EventKind.TOOL_CALL,
                    audio_ms=self.now_ms(),
                    name=dropped.name,
                    arguments=dropped.arguments,
                    dropped=True,
                    result=f"not run: only the first tool of a reply runs ({tool_calls[0].name})",
                )
            await self._run_tool(r, tool_calls[0])

    async def _run_tool(self, r: Response, tool: ToolCall) -> None:
        self.log.event(EventKind.TOOL_CALL, audio_ms=self.now_ms(), name=tool.name, arguments=tool.arguments)
        result = await run_tool(tool, spoke=bool(r.spoken))
        self.log.event(EventKind.TOOL_CALL, audio_ms=self.now_ms(), name=tool.name, result=result)
        if r.history_msg is None:
            r.history_msg = {"role": "assistant", "content": ""}
            self._history.append(r.history_msg)
        r.history_msg["tool_calls"] = [
            {
                "id": tool.id,
                "type": "function",
                "function": {"name": tool.name, "arguments": json.dumps(tool.arguments)},
            }
        ]
        self._history.append({"role": "tool", "tool_call_id": tool.id, "content": result})

    async def _speak_pieces(self, r: Response, pieces: asyncio.Queue[str | None]) -> None:
        while (piece := await pieces.get()) is not None:
            await self._speak(r, piece)

    async def _speak(self, r: Response, text: str) -> None:
        """Synthesise one piece of ``r`` and send it as media chunks, each followed by a mark."""
        if r.gen != self._active_gen or not text.strip():
            return
        self.playback.begin_segment(r.gen, text)
        r.spoken.append(text)
        r.turn.text = " ".join(r.spoken)
        if r.history_msg is not None and not r.finalized:
            r.history_msg["content"] = r.turn.text
        try:
            if time.monotonic() < self._tts_failover_until and (fallback := self._tts_fallback()):
                await self._synthesize_into(r, fallback, text)  # failed over: no wait on the real engine
                return
            try:
                await self._synthesize_into(r, self.tts, text)
            except TTSError as exc:
                fallback = self._tts_fallback()
                failover = fallback is not None and exc.kind in _TTS_FAILOVER_KINDS
                cooldown_s = float(settings.TTS_FAILOVER_COOLDOWN_S)
                data: dict[str, Any] = {"stage": "tts", "kind": exc.kind, "error": str(exc)}
                if failover and fallback is not None:
                    self._tts_failover_until = time.monotonic() + cooldown_s
                    data.update(fallback=fallback.name, failover_s=cooldown_s)
                self.log.event(EventKind.ERROR, audio_ms=self.now_ms(), **data)
                logger.warning(
                    "call %s: TTS failed (%s): %s%s",
                    self.call_sid,
                    exc.kind,
                    exc,
                    f"; the offline voice speaks for {cooldown_s:g} s" if failover else "",
                )
                if fallback is not None:
                    # The offline voice says the piece instead, so the call never sits silent. (After a
                    # drop mid-piece the caller hears its start twice: a stutter beats a gap.)
                    await self._synthesize_into(r, fallback, text)
        finally:
            self.playback.end_segment(r.gen)

    def _tts_fallback(self) -> TextToSpeech | None:
        """The offline voice, built once per call; None if it cannot load or already is ``self.tts``.

        After a TTS timeout, outage or refused credentials (``_TTS_FAILOVER_KINDS``) it speaks every
        sentence for ``TTS_FAILOVER_COOLDOWN_S`` (a circuit breaker: each later sentence would
        otherwise wait out ``DEEPGRAM_TTS_TIMEOUT_S`` again); then the real engine is tried again.
        """
        if self._fallback_tts is None:
            self._fallback_tts = _offline_tts()
        fallback = self._fallback_tts
        if fallback is None or type(fallback) is type(self.tts):
            return None
        return fallback

    async def _synthesize_into(self, r: Response, engine: TextToSpeech, text: str) -> None:
        """Send the piece's audio as it comes from ``engine``, paced to playout.

        A producer pulls the TTS audio as fast as the engine gives it, so the tracker knows the
        piece's length early (what was heard is a share of it); the sender paces itself and
        registers each chunk's mark only as the chunk goes out. Raises the engine's ``TTSError``.
        """
        ready: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def produce() -> None:
            try:
                async with aclosing(engine.synthesize(text)) as audio:
                    async for chunk in audio:
                        if r.turn.tts_first_byte_ms is None:
                            r.turn.tts_first_byte_ms = self.now_ms()
                        self.playback.audio_ready(r.gen, len(chunk))
                        ready.put_nowait(chunk)
            finally:
                ready.put_nowait(None)

        producer = asyncio.get_running_loop().create_task(produce(), name=f"tts{r.gen}-{self.call_sid}")
        try:
            while (chunk := await ready.get()) is not None:
                for piece in chunk_bytes(chunk, self.playback.max_chunk_bytes):
                    await self._pace(len(piece))
                    if r.gen != self._active_gen:
                        return
                    ((media, mark),) = self.playback.audio_out(r.gen, piece)
                    r.drained.clear()  # more audio in flight: "all played" must wait for its mark
                    r.played_all = False
                    await self._send(build_media(self.stream_sid, media))
                    if r.turn.first_audio_ms is None:
                        self._on_first_audio(r)
                    await self._send(build_mark(self.stream_sid, mark))
            await producer  # the engine's error, if it failed
        finally:
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError, TTSError):
                    await producer

    async def _pace(self, ulaw_bytes: int) -> None:
        """Send bot audio at most ``PLAYBACK_LEAD_MS`` ahead of its real-time playout.

        Twilio plays what it is sent in real time and ``clear`` throws the rest away; a whole reply
        sent at once mostly gets cleared by the next barge-in and comes in bursts that delay every
        call's frames (BENCHMARKS.md, part 2). The playout clock is our own (wall time), not the
        mark echoes, so a lost mark can never stall the bot. The first audio of a reply goes out
        at once.
        """
        now = time.monotonic()
        ahead = self._playout_until - now
        if ahead > self._lead_s:
            await asyncio.sleep(ahead - self._lead_s)
            now = time.monotonic()
        self._playout_until = max(self._playout_until, now) + ulaw_bytes / 8000

    def _on_first_audio(self, r: Response) -> None:
        t = r.turn
        t.first_audio_ms = self.now_ms()
        t.audio_start_ms = t.first_audio_ms
        if t.speech_end_ms is not None:
            t.voice_to_voice_ms = max(0, t.first_audio_ms - t.speech_end_ms)
        self.log.turn(t)

    def _finalize_response(self, r: Response, *, interrupted: bool) -> str:
        """Close a bot turn: store what was heard; only heard text stays in the history."""
        if r.finalized:
            return r.turn.heard_text
        r.finalized = True
        heard = self.playback.heard_text(r.gen) if r.spoken else ""
        if not interrupted:
            heard = r.turn.text
        t = r.turn
        t.heard_text = heard
        t.interrupted = interrupted and bool(r.spoken)
        t.ended_at = timezone.now()
        t.audio_end_ms = self.now_ms() if r.spoken else None
        if r.history_msg is not None:
            r.history_msg["content"] = heard
            if not heard and "tool_calls" not in r.history_msg:
                with contextlib.suppress(ValueError):
                    self._history.remove(r.history_msg)
        r.drained.set()
        if r.spoken or t.text:
            self.log.turn(t)
        return heard

    def _llm_messages(self) -> list[dict[str, Any]]:
        history = [m for m in self._history if m.get("content") or m.get("tool_calls")][-_HISTORY_LIMIT:]
        while history and history[0]["role"] == "tool":
            history.pop(0)
        return [{"role": "system", "content": self.instructions}, *history]

    def _playback_timeout(self, r: Response) -> float:
        return self.playback.pending_ms() / 1000 + 5.0

    async def _await_drained(self, r: Response, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(r.drained.wait(), timeout_s)
        except TimeoutError:
            lost = self.playback.abandon(r.gen)  # not "still playing" forever (silence, barge-in)
            logger.warning(
                "call %s: %d marks of response %d not echoed within %.1f s; taken as lost",
                self.call_sid,
                lost,
                r.gen,
                timeout_s,
            )
            return False
        return r.played_all

    def _say_soon(self, text: str) -> None:
        if not self._ending and (self._response is None or self._response.finalized):
            self._start_response("fixed", text=text)

    async def _stop_talking(self) -> None:
        r = self._response
        if self.playback.is_playing or (r is not None and not r.finalized and not r.irreversible):
            await self._barge_in(None, cause="stop", log=False)

    # ==== silence ================================================================================
    async def _watch_silence(self) -> None:
        """Re-prompt after SILENCE_TIMEOUT_S of silence; after SILENCE_MAX_REPROMPTS, end the call."""
        timeout = settings.SILENCE_TIMEOUT_S
        while not self._ending:
            await asyncio.sleep(0.25)
            busy = (
                (self._response is not None and not self._response.finalized)
                or self.playback.is_playing
                or self.detector.speaking
                or time.monotonic() < self._awaiting_transcript_until
            )
            if busy:
                self._idle_since = time.monotonic()
                continue
            if time.monotonic() - self._idle_since < timeout:
                continue
            self._idle_since = time.monotonic()
            if self._reprompts >= settings.SILENCE_MAX_REPROMPTS:
                self.log.event(
                    EventKind.SILENCE, audio_ms=self.now_ms(), action="end", reprompts=self._reprompts
                )
                self._start_response("silence-end")
                return
            self._reprompts += 1
            self.log.event(
                EventKind.SILENCE, audio_ms=self.now_ms(), action="reprompt", reprompts=self._reprompts
            )
            self._start_response("fixed", text=settings.REPROMPT_LINE)

    # ==== CallHandle (get_current_call) ==========================================================
    async def send(self, message: str | dict[str, Any]) -> None:
        await self._send(message if isinstance(message, str) else json.dumps(message))

    async def clear(self) -> None:
        await self._stop_talking()

    async def say(self, text: str) -> None:
        r = self._response
        if r is not None and r.task is asyncio.current_task() and not r.finalized:
            await self._speak_text(r, text)  # part of the response that is running this code
            return
        r = self._start_response("fixed", text=text)
        await r.sent.wait()

    async def wait_for_playback(self, timeout_s: float | None = None) -> bool:
        r = self._response
        if r is None:
            return True
        if r.finalized:
            return not r.turn.interrupted
        if not r.spoken:
            return True
        timeout = timeout_s if timeout_s is not None else self._playback_timeout(r)
        return await self._await_drained(r, timeout)

    def response_interrupted(self) -> bool:
        r = next(
            (x for x in self._responses.values() if x.task is asyncio.current_task()), self._response
        )
        return r is not None and r.finalized and r.turn.interrupted

    async def hangup(self, reason: str = EndReason.BOT_HANGUP) -> None:
        self._mark_irreversible()
        self._ending = True
        self._end_reason = self._end_reason or reason
        try:
            call = await _get_call(self.call_id)
            # services logs the hang-up event; no group message back to ourselves.
            await services.ahangup_call(call, reason=self._end_reason, notify_session=False)
        except Exception as exc:  # the stream still closes: with no TwiML after <Connect>, that ends the call
            logger.warning(
                "call %s: carrier hang-up failed, closing the stream instead: %s", self.call_sid, exc
            )
            self.log.event(EventKind.ERROR, audio_ms=self.now_ms(), stage="hangup", error=str(exc))
        await self._close()

    async def transfer(self, to: str) -> None:
        self._mark_irreversible()
        try:
            call = await _get_call(self.call_id)
            # services logs the transfer event and sets transfer_to; no group message back to us.
            await services.atransfer_call(call, to=to, say=None, notify_session=False)
        except Exception as exc:
            self._clear_irreversible()
            self.log.event(EventKind.ERROR, audio_ms=self.now_ms(), stage="transfer", to=to, error=str(exc))
            if isinstance(exc, CallControlError):
                raise
            raise CallControlError(str(exc)) from exc
        self._ending = True
        self._end_reason = EndReason.TRANSFERRED
        # Twilio now runs the <Dial> TwiML and ends this stream with `stop`; close it ourselves if not.
        if not self._shut:
            self._spawn(self._close_after(3.0), "close-after-transfer")

    def _mark_irreversible(self) -> None:
        if self._response is not None and self._response.task is asyncio.current_task():
            self._response.irreversible = True

    def _clear_irreversible(self) -> None:
        if self._response is not None:
            self._response.irreversible = False

    # ==== output and teardown ====================================================================
    async def _send(self, text: str) -> None:
        if self._closed:
            return
        try:
            await self._send_text(text)
        except Exception as exc:  # the socket went away under us: a normal end, not an error
            logger.debug("call %s: send after the stream closed (%s)", self.call_sid, exc)
            self._closed = True

    async def _close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                await self._close_stream()

    async def _close_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self._close()

    async def shutdown(self, cause: str) -> None:
        """Twilio sent ``stop`` or the socket closed: wrap up within Daphne's 10 s close window.

        Lets a hang-up or transfer already under way at the carrier finish (bounded), cancels every
        other task, lets STT return the last words (bounded), stores the heard part of an unfinished
        bot turn, writes the remaining transcript and events, and finalizes the Call.
        """
        if self._shut:
            return
        self._shut = True
        self._ending = True
        self._closed = True
        at = self.now_ms()
        # One budget for the whole teardown, inside Daphne's 10 s application close timeout; the
        # call log's final write gets what is left, and at least two seconds.
        deadline = time.monotonic() + _SHUTDOWN_BUDGET_S

        def left(most: float) -> float:
            return max(0.1, min(most, deadline - time.monotonic()))

        current = asyncio.current_task()
        r = self._response
        if r is not None and r.task is not None and not r.task.done() and r.task is not current:
            if r.irreversible:
                # Twilio's stop can overtake the REST request that caused it: let the request and
                # its bookkeeping (transfer target, events) finish rather than cut them off.
                await asyncio.wait({r.task}, timeout=left(5.0))
            if not r.task.done():
                r.task.cancel()
        if r is not None and not r.finalized:
            self._finalize_response(r, interrupted=not (r.drained.is_set() and r.played_all))
        for task in list(self._tasks):
            if task is not self._stt_task and task is not current:
                task.cancel()
        # The caller may have hung up mid-sentence: end the utterance so STT returns its words.
        if self._stt is not None and self.detector.speaking:
            self._stt.caller_speech(False, at)
        if self._stt is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stt.close(), left(3.0))
        if self._stt_task is not None and not self._stt_task.done():
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(self._stt_task, left(2.0))
        if self._interim.strip():
            self._record_caller_turn(
                self._interim.strip(), start_ms=self._onset_ms, end_ms=at, approximate=True
            )
            self._interim = ""
        pending = [t for t in self._tasks if t is not current]
        if pending:
            await asyncio.wait(pending, timeout=left(1.0))
            for task in pending:
                task.cancel()
        # Call control records why it ended a call before asking the carrier: that reason wins over
        # this session's guess (a stop we did not cause looks like the caller hanging up).
        stored = await _stored_end_reason(self.call_id, timeout_s=left(2.0))
        if stored:
            self._end_reason = stored
        elif not self._end_reason:
            self._end_reason = EndReason.CALLER_HANGUP if cause == "stop" else EndReason.STREAM_ERROR
        self.log.event(
            EventKind.STREAM_STOP,
            audio_ms=at,
            cause=cause,
            end_reason=self._end_reason,
            rejected_messages=self.rejected_messages,
        )
        self.log.finish_call(
            ended_at=timezone.now(), end_reason=self._end_reason, duration_s=max(0, round(at / 1000))
        )
        await self.log.close(timeout_s=max(2.0, deadline + _LOG_WRITE_S - time.monotonic()))


# ==== construction ===============================================================================
async def _stored_end_reason(call_id: str, timeout_s: float) -> str:
    def read() -> str:
        return Call.objects.filter(pk=call_id).values_list("end_reason", flat=True).first() or ""

    try:
        return await asyncio.wait_for(database_sync_to_async(read)(), timeout_s)
    except Exception:  # the database is slow or down: the session's own view will do
        logger.warning("call %s: could not read the stored end reason", call_id)
        return ""


async def _get_call(call_id: str) -> Any:
    return await database_sync_to_async(Call.objects.get)(pk=call_id)


def _offline_stt() -> SpeechToText | None:
    try:
        from media_ws.providers.offline_stt import PocketsphinxSTT

        return PocketsphinxSTT()
    except Exception:  # pragma: no cover - only if the offline engine cannot load
        logger.exception("the offline STT engine cannot be loaded")
        return None


def _offline_tts() -> TextToSpeech | None:
    try:
        from media_ws.providers.offline_tts import EspeakTTS

        return EspeakTTS()
    except Exception:  # pragma: no cover
        logger.exception("the offline TTS engine cannot be loaded")
        return None


async def open_session(start: Start, *, send: SendText, close: CloseStream) -> CallSession:
    """Find (or, for an unknown callSid, create) the Call, then build and begin its session.

    The Call is found by callSid, else by the ``call_id`` custom parameter (our outbound calls put
    the Call's id there); an unknown callSid is an inbound call and gets a row of its own.
    """
    call = await database_sync_to_async(_find_or_create_call)(start)
    session = CallSession(
        start=start,
        call_id=str(call.pk),
        greeting=call.greeting or start.custom_parameters.get("greeting") or settings.DEFAULT_GREETING,
        instructions=call.instructions or settings.DEFAULT_INSTRUCTIONS,
        send=send,
        close=close,
        stt=providers.get_stt(),
        llm=providers.get_llm(),
        tts=providers.get_tts(),
        barge_in=BargeInConfig.from_mapping(settings.BARGE_IN),
        log=CallLog(call.pk),
    )
    await session.begin()
    return session


def _find_or_create_call(start: Start) -> Any:
    call = Call.objects.filter(call_sid=start.call_sid).first()
    if call is None and start.custom_parameters.get("call_id"):
        call = Call.objects.filter(pk=_uuid_or_none(start.custom_parameters["call_id"])).first()
        if call is not None and not call.call_sid and not call.is_final:
            call.call_sid = start.call_sid
            call.save(update_fields=["call_sid"])
    if call is not None and call.is_final:
        # A stream never starts for an ended call: this is a replayed or forged start. Refuse it
        # rather than re-open the call (the consumer closes the socket, no session is made).
        from calls.errors import CallNotActive

        raise CallNotActive(f"call {call.call_sid or call.pk} is already {call.status}; start refused")
    if call is None:
        call = Call.objects.create(
            call_sid=start.call_sid,
            account_sid=start.account_sid,
            stream_sid=start.stream_sid,
            direction=CallDirection.INBOUND,
            status=CallStatus.IN_PROGRESS,
            answered_at=timezone.now(),
            metadata={"custom_parameters": dict(start.custom_parameters)},
        )
    return call


def _uuid_or_none(value: str) -> Any:
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        return None

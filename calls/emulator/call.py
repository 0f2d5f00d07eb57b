"""One emulated phone call, as Twilio runs it for ``calls.create(twiml=…)``.

``EmulatedCall.run()`` goes through the call's life the way Twilio does
(twilio.com/docs/voice/api/call-resource, …/twiml/stream, …/media-streams/websocket-messages):

1. status callbacks ``initiated`` then ``ringing``; the callee answers after ``answer_after_ms``;
   ``in-progress`` is posted (the ``answered`` event);
2. the TwiML's ``<Connect><Stream url>`` is opened as a WebSocket (``wss://`` becomes ``ws://``
   when the server's public URL is plain ``http://``; Twilio itself only speaks ``wss``), signed
   with ``X-Twilio-Signature`` over the ``wss://`` URL when an auth token is configured;
3. ``EmulatedMediaStream`` speaks the Media Streams protocol while the scenario plays the callee;
4. the call ends when the server closes the stream (``<Connect>`` ends and no TwiML follows, so
   Twilio hangs up), when the callee hangs up, when the REST API hangs up (``hangup()``), when it is
   redirected (``redirect()``: the transfer ``<Dial>``, whose target is recorded; the person's
   leg is not simulated), or after ``max_duration_s``;
5. both legs are written as a stereo WAV (left: the caller, right: the bot as the caller heard it;
   16-bit PCM, 8 kHz) to ``MEDIA_ROOT/recordings/<CallSid>.wav`` and set as ``Call.recording``;
6. ``completed`` is posted with ``CallDuration`` (seconds since answer) and ``Duration``.

Status callbacks are form-encoded POSTs with Twilio's parameter names, signed with
``RequestValidator(token).compute_signature(url, params)`` as ``X-Twilio-Signature`` when a token
is configured. They are sent in order by one background task; a failed callback is logged (Twilio
logs error 11200) and the call goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import wave
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from calls.emulator.scenario import Scenario, ScenarioResult, run_scenario
from calls.emulator.stream import EmulatedMediaStream, StreamLog
from calls.emulator.transport import StreamConnection, StreamRefused, Transport

logger = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
#: Twilio's error for a document it cannot parse (twilio.com/docs/api/errors/12100).
DOCUMENT_PARSE_FAILURE = "12100"
#: What the emulator cannot run (not a Twilio code: Twilio runs every verb).
UNSUPPORTED = "unsupported"


class TwimlError(ValueError):
    """TwiML the emulator cannot run. ``code``: ``"12100"`` (not XML / not a ``<Response>``) or
    ``"unsupported"`` (valid TwiML the emulator does not emulate)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---- TwiML -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamTwiml:
    """A call document ``<Response><Connect><Stream url=…>`` with its ``<Parameter>`` values."""

    url: str
    parameters: dict[str, str]


@dataclass(frozen=True)
class RedirectTwiml:
    """A document a live call is redirected to: ``<Say>`` texts, the ``<Dial>`` target (E.164 or
    client/SIP text), and whether it ends in ``<Hangup>`` (or simply ends)."""

    say: tuple[str, ...] = ()
    dial: str = ""
    caller_id: str = ""


def _response(twiml: str) -> ET.Element:
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise TwimlError(DOCUMENT_PARSE_FAILURE, f"Document parse failure: not XML ({exc})") from exc
    if root.tag != "Response":
        raise TwimlError(DOCUMENT_PARSE_FAILURE, f"Document parse failure: <{root.tag}> is not <Response>")
    return root


def parse_call_twiml(twiml: str) -> StreamTwiml:
    """Parse the TwiML of an outbound call. The emulator runs exactly one verb,
    ``<Connect><Stream url="wss://…">`` with optional ``<Parameter name value>`` children.

    Raises ``TwimlError`` (``"12100"`` for a document that is not TwiML, ``"unsupported"`` for any
    other verb, a relative or non-``wss`` URL, or a missing ``url``). Twilio: ``<Stream url>`` must
    be an absolute ``wss://`` URL (twilio.com/docs/voice/twiml/stream).
    """
    root = _response(twiml)
    verbs = list(root)
    if len(verbs) != 1 or verbs[0].tag != "Connect":
        found = ", ".join(f"<{v.tag}>" for v in verbs) or "nothing"
        raise TwimlError(UNSUPPORTED, f"the emulator runs only <Connect><Stream> call documents, not {found}")
    nouns = list(verbs[0])
    if len(nouns) != 1 or nouns[0].tag != "Stream":
        found = ", ".join(f"<{n.tag}>" for n in nouns) or "nothing"
        raise TwimlError(UNSUPPORTED, f"<Connect> must hold one <Stream>, not {found}")
    stream = nouns[0]
    url = stream.get("url", "")
    parts = urlsplit(url)
    if parts.scheme != "wss" or not parts.netloc:
        raise TwimlError(UNSUPPORTED, f"<Stream url> must be an absolute wss:// URL, got {url!r}")
    if parts.query:
        raise TwimlError(UNSUPPORTED, "<Stream url> may not have a query string; use <Parameter>")
    parameters: dict[str, str] = {}
    for child in stream:
        if child.tag != "Parameter" or not child.get("name"):
            raise TwimlError(UNSUPPORTED, f"<Stream> holds only <Parameter>s, not <{child.tag}>")
        parameters[child.get("name", "")] = child.get("value", "")
    return StreamTwiml(url=url, parameters=parameters)


def parse_redirect_twiml(twiml: str) -> RedirectTwiml:
    """Parse TwiML that a live call is redirected to (``calls(sid).update(twiml=…)``).

    Supported verbs, in order: ``<Say>``, ``<Pause>``, ``<Dial>`` (with a ``<Number>``, or the
    number as its text), ``<Hangup>``. Raises ``TwimlError`` for anything else.
    """
    root = _response(twiml)
    say: list[str] = []
    dial = caller_id = ""
    for verb in root:
        if verb.tag == "Say":
            say.append((verb.text or "").strip())
        elif verb.tag == "Pause":
            continue
        elif verb.tag == "Dial":
            targets = [n for n in verb if n.tag in ("Number", "Client", "Sip")]
            dial = (targets[0].text if targets else verb.text or "").strip()
            caller_id = verb.get("callerId", "")
            if not dial:
                raise TwimlError(UNSUPPORTED, "<Dial> has no number")
        elif verb.tag == "Hangup":
            break
        else:
            raise TwimlError(UNSUPPORTED, f"the emulator cannot redirect a call to <{verb.tag}>")
    return RedirectTwiml(say=tuple(say), dial=dial, caller_id=caller_id)


# ---- the call ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallOrder:
    """What ``place_call`` was given, plus the callee's scenario and the settings of the moment.

    ``auth_token``: signs callbacks and the handshake ("" = unsigned). ``plain_http``: the server
    has no TLS (``PUBLIC_BASE_URL`` is ``http://``), so the stream URL is opened as ``ws://``.
    ``media_root``: where ``recordings/<CallSid>.wav`` goes (``None``: no recording).
    ``update_delay_ms`` (setting ``EMULATOR_UPDATE_DELAY_MS``): between accepting a call update
    (hang-up or redirect: the REST response) and ending the stream with ``stop``. Twilio applies an
    update asynchronously after answering the request; the bot side should cope with ``stop`` at any
    moment after the request, even before the response (0 tests that).
    """

    call_sid: str
    account_sid: str
    to: str
    from_: str
    stream: StreamTwiml
    status_callback: str
    scenario: Scenario
    call_id: str = ""
    auth_token: str = ""
    plain_http: bool = False
    answer_after_ms: int = 1000
    max_duration_s: float = 300.0
    media_root: Path | None = None
    update_delay_ms: int = 250


@dataclass
class CallOutcome:
    """How an emulated call went. ``ended_by``: ``"bot"`` (the server closed the stream),
    ``"caller"`` (the scenario hung up), ``"rest-hangup"`` (the REST API hung up: what the bot's
    ``end_call`` and ``POST /calls/<sid>/hangup`` do), ``"transfer"`` (redirected to
    ``<Dial>``), ``"max-duration"``, ``"stream-refused"`` or ``"error"``."""

    call_sid: str
    status: str = "queued"
    ended_by: str = ""
    duration_s: int = 0
    dialed: str = ""
    announcement: tuple[str, ...] = ()
    recording: Path | None = None
    scenario: ScenarioResult | None = None
    stream_log: StreamLog | None = None
    callbacks: list[tuple[str, int | str]] = field(default_factory=list)  # (CallStatus, HTTP status or error)
    error: str = ""


def callback_timestamp(when: datetime | None = None) -> str:
    """Twilio's ``Timestamp``: RFC 2822 in UTC, e.g. ``"Tue, 31 Aug 2010 20:36:29 +0000"``."""
    return format_datetime((when or datetime.now(UTC)).astimezone(UTC))


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """``X-Twilio-Signature`` of a request: base64 HMAC-SHA1 of the URL and the sorted parameters,
    as twilio-python's ``RequestValidator`` computes it (twilio.com/docs/usage/webhooks/webhooks-security)."""
    from twilio.request_validator import RequestValidator

    return RequestValidator(auth_token).compute_signature(url, params)


def stream_connect_url(stream_url: str, plain_http: bool) -> str:
    """The URL the emulator opens for ``<Stream url>``: the same, or ``ws://`` instead of
    ``wss://`` when the server has no TLS."""
    if not plain_http:
        return stream_url
    parts = urlsplit(stream_url)
    return urlunsplit(("ws", parts.netloc, parts.path, parts.query, parts.fragment))


class EmulatedCall:
    """One call in the emulator. Build it anywhere; ``run()`` it on the emulator's event loop.

    ``hangup()`` and ``redirect()`` are the REST API's call updates; call them on the same loop.
    """

    def __init__(self, order: CallOrder, transport: Transport) -> None:
        self.order = order
        self.transport = transport
        self.outcome = CallOutcome(call_sid=order.call_sid)
        self.stream: EmulatedMediaStream | None = None
        self._sequence = 0
        self._answered_at: float | None = None
        self._hung_up_at: float | None = None  # when the media stream ended
        self._end_request: str = ""  # why the carrier ended the call, set by hangup()/redirect()
        self._ended: asyncio.Event | None = None
        self._callbacks: asyncio.Queue[dict[str, str] | None] | None = None
        self._hanging_up: asyncio.Future[None] | None = None

    @property
    def call_sid(self) -> str:
        return self.order.call_sid

    @property
    def answered(self) -> bool:
        return self._answered_at is not None

    @property
    def ending(self) -> bool:
        """Whether the carrier has been asked to end the call (hang-up or redirect)."""
        return bool(self._end_request)

    @property
    def finished(self) -> bool:
        return self.outcome.status in ("completed", "canceled", "failed", "busy", "no-answer")

    # ---- the REST API's requests --------------------------------------------------------------
    async def hangup(self) -> None:
        """``Status=completed``: end the call now (before it is answered: ``canceled``)."""
        self._request_end("rest-hangup", self.order.update_delay_ms)

    async def redirect(self, document: RedirectTwiml) -> None:
        """New TwiML for the live call: the stream ends (``stop``, close); a ``<Dial>`` target is
        recorded as the transfer (its leg is not simulated) and the call completes."""
        self.outcome.dialed = document.dial
        self.outcome.announcement = document.say
        logger.info("emulated call %s redirected: say %r, dial %s", self.call_sid, document.say,
                    document.dial or "-")
        self._request_end("transfer" if document.dial else "rest-hangup", self.order.update_delay_ms)

    def _request_end(self, why: str, delay_ms: int = 0) -> None:
        if not self._end_request:
            self._end_request = why
        if self._ended is not None:
            self._ended.set()
        if self.stream is not None and self._hanging_up is None:
            self._hanging_up = asyncio.ensure_future(self._hang_up_stream(self.stream, delay_ms))

    async def _hang_up_stream(self, stream: EmulatedMediaStream, delay_ms: int) -> None:
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        await stream.hang_up()

    # ---- the call's life ---------------------------------------------------------------------
    async def run(self) -> CallOutcome:
        """Ring, answer, stream, finish (see the module docstring). Never raises for the server's
        behaviour; the outcome says what happened."""
        self._ended = asyncio.Event()
        if self._end_request:
            self._ended.set()
        self._callbacks = asyncio.Queue()
        poster = asyncio.ensure_future(self._post_callbacks())
        try:
            await self._ring_and_talk()
        except Exception as exc:  # a bug here must still end the call cleanly
            logger.exception("emulated call %s failed", self.call_sid)
            self.outcome.error = f"{type(exc).__name__}: {exc}"
            self.outcome.ended_by = self.outcome.ended_by or "error"
        finally:
            final = self.outcome.status if self.finished else ("completed" if self.answered else "canceled")
            self.outcome.status = final
            if self._answered_at is not None:
                ended = self._hung_up_at if self._hung_up_at is not None else time.monotonic()
                self.outcome.duration_s = round(ended - self._answered_at)
            self._queue_callback(final, final=True)
            self._callbacks.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(poster, 30)
        return self.outcome

    async def _ring_and_talk(self) -> None:
        order = self.order
        self._queue_callback("initiated")
        await self._pause(100)
        self._queue_callback("ringing")
        await self._pause(order.answer_after_ms)
        if self._end_request:
            self.outcome.ended_by = self._end_request
            return  # hung up while ringing: canceled
        self._answered_at = time.monotonic()
        self.outcome.status = "in-progress"
        self._queue_callback("in-progress")

        url = stream_connect_url(order.stream.url, order.plain_http)
        headers = {}
        if order.auth_token:
            headers["X-Twilio-Signature"] = sign(order.auth_token, order.stream.url, {})
        try:
            connection = await self.transport.open_stream(url, headers)
        except StreamRefused as exc:
            # Twilio: <Connect> fails (error 31920, stream handshake), no TwiML follows, the call ends.
            self._hung_up_at = time.monotonic()
            logger.warning("emulated call %s: media stream not opened: %s", self.call_sid, exc)
            self.outcome.ended_by = "stream-refused"
            self.outcome.error = str(exc)
            return
        try:
            await self._talk(connection)
        finally:
            await connection.close()
        await self._write_recording()

    async def _talk(self, connection: StreamConnection) -> None:
        order = self.order
        stream = EmulatedMediaStream(
            connection.send,
            connection.receive,
            call_sid=order.call_sid,
            account_sid=order.account_sid,
            custom_parameters=order.stream.parameters,
        )
        self.stream = stream
        self.outcome.stream_log = stream.log
        runner = asyncio.ensure_future(stream.run())
        callee = asyncio.ensure_future(self._play_callee(stream))
        if self._end_request:
            await stream.hang_up()
        limit_s = min(order.max_duration_s, order.scenario.max_duration_s)
        try:
            await asyncio.wait_for(asyncio.shield(runner), limit_s)
        except TimeoutError:
            logger.info("emulated call %s: the callee hangs up after %.0f s", self.call_sid, limit_s)
            self._end_request = self._end_request or "max-duration"
            await stream.hang_up()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner, 5)
        except Exception as exc:  # the transport failed under the stream
            self.outcome.error = f"stream: {type(exc).__name__}: {exc}"
        self._hung_up_at = time.monotonic()
        callee.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await callee
        if runner.done() and not runner.cancelled() and runner.exception() is not None:
            self.outcome.error = self.outcome.error or f"stream: {runner.exception()!r}"
        scenario = self.outcome.scenario
        if self._end_request:
            self.outcome.ended_by = self._end_request
        elif scenario is not None and scenario.hung_up:
            self.outcome.ended_by = "caller"
        else:
            self.outcome.ended_by = "bot"

    async def _play_callee(self, stream: EmulatedMediaStream) -> None:
        self.outcome.scenario = ScenarioResult()
        await run_scenario(self.order.scenario, stream, self.outcome.scenario)

    async def _pause(self, ms: int) -> None:
        assert self._ended is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), ms / 1000)

    # ---- the recording -----------------------------------------------------------------------
    async def _write_recording(self) -> None:
        stream, root = self.stream, self.order.media_root
        if stream is None or root is None or not stream.caller_audio:
            return
        path = Path(root) / "recordings" / f"{self.call_sid}.wav"
        try:
            await asyncio.to_thread(
                write_stereo_wav, path, bytes(stream.caller_audio), bytes(stream.bot_audio)
            )
        except OSError as exc:
            logger.warning("emulated call %s: the recording could not be written: %s", self.call_sid, exc)
            return
        self.outcome.recording = path
        from channels.db import database_sync_to_async

        try:
            await database_sync_to_async(_attach_recording)(self.order.call_id, self.call_sid,
                                                            f"recordings/{path.name}")
        except Exception:
            logger.exception("emulated call %s: could not attach the recording to the call", self.call_sid)

    # ---- status callbacks ----------------------------------------------------------------------
    def _queue_callback(self, status: str, *, final: bool = False) -> None:
        order = self.order
        params = {
            "AccountSid": order.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": order.call_sid,
            "CallStatus": status,
            "Direction": "outbound-api",
            "From": order.from_,
            "To": order.to,
            "Called": order.to,
            "Caller": order.from_,
            "SequenceNumber": str(self._sequence),
            "Timestamp": callback_timestamp(),
            "CallbackSource": "call-progress-events",
        }
        self._sequence += 1
        if final:
            seconds = self.outcome.duration_s
            params["CallDuration"] = str(seconds)
            # Duration: whole minutes, rounded up. Real completed callbacks carry it next to
            # CallDuration; Twilio's parameter list does not document it, so this is our reading.
            params["Duration"] = str(math.ceil(seconds / 60)) if seconds else "0"
        assert self._callbacks is not None
        self._callbacks.put_nowait(params)

    async def _post_callbacks(self) -> None:
        assert self._callbacks is not None
        url = self.order.status_callback
        async with self.transport.http_client() as http:
            while (params := await self._callbacks.get()) is not None:
                headers = {"User-Agent": "TwilioProxy/1.1 (voicebot emulator)"}
                if self.order.auth_token:
                    headers["X-Twilio-Signature"] = sign(self.order.auth_token, url, params)
                try:
                    response = await http.post(url, data=params, headers=headers)
                    result: int | str = response.status_code
                    if response.status_code >= 400:
                        logger.warning("emulated call %s: status callback %s answered HTTP %d",
                                       self.call_sid, params["CallStatus"], response.status_code)
                except Exception as exc:  # Twilio logs error 11200 and moves on
                    result = f"{type(exc).__name__}: {exc}"
                    logger.warning("emulated call %s: status callback %s to %s failed: %s",
                                   self.call_sid, params["CallStatus"], url, exc)
                self.outcome.callbacks.append((params["CallStatus"], result))


def write_stereo_wav(path: Path, caller_ulaw: bytes, bot_ulaw: bytes) -> None:
    """Write a call recording: left channel the caller, right channel the bot as heard; 16-bit PCM,
    8 kHz. Both inputs are μ-law on the call clock (8 bytes per ms from the stream start); the
    shorter one is padded with silence. Written to a temporary name, then renamed."""
    import numpy as np

    from media_ws.audio import ulaw_to_pcm16

    n = max(len(caller_ulaw), len(bot_ulaw))
    left = np.frombuffer(ulaw_to_pcm16(caller_ulaw.ljust(n, b"\xff")), dtype="<i2")
    right = np.frombuffer(ulaw_to_pcm16(bot_ulaw.ljust(n, b"\xff")), dtype="<i2")
    frames = np.column_stack((left, right)).astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames)
    os.replace(tmp, path)


def _attach_recording(call_id: str, call_sid: str, name: str) -> None:
    import uuid

    from calls.models import Call

    rows = Call.objects.filter(call_sid=call_sid)
    if call_id:
        with contextlib.suppress(ValueError):
            rows = Call.objects.filter(pk=uuid.UUID(call_id))
    rows.update(recording=name)

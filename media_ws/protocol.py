"""Twilio Media Streams messages: parse what Twilio sends, build what we send (no I/O).

The wire format is Twilio's "Media Streams - WebSocket Messages"
(https://www.twilio.com/docs/voice/media-streams/websocket-messages). Every message is one JSON
text frame with an ``event`` discriminator:

* Twilio -> us: ``connected``, ``start``, ``media``, ``mark``, ``dtmf``, ``stop``. Numeric values
  (``sequenceNumber``, ``media.chunk``, ``media.timestamp``) are JSON *strings*; only
  ``start.mediaFormat.sampleRate`` and ``.channels`` are JSON numbers. Audio is base64 of raw
  G.711 μ-law at 8000 Hz, mono, no header (160 bytes = 20 ms).
* us -> Twilio (bidirectional ``<Connect><Stream>`` only): ``media``, ``mark``, ``clear``, each
  with the ``streamSid`` from ``start``.

This module is the only place that knows Twilio's JSON field names. It is sans-I/O in the style of
h11/wsproto: functions take text and return typed events, or take values and return the text to
send. It imports nothing from Django or ``calls``; the consumer, the call session, the Twilio
emulator and the benchmarks all drive it.

Parsing is liberal where it costs nothing (extra fields are ignored; numeric fields may be JSON
numbers as well as decimal strings) and strict where a wrong value would mislead the call (a
missing field, a non-numeric timestamp, bad base64 raise ``ProtocolError`` subclasses from
``media_ws.errors``). Error messages name the event and the field, never the audio payload.
"""

from __future__ import annotations

import binascii
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, TypeAlias

from media_ws.errors import (
    MalformedMessage,
    OutOfOrderMessage,
    ProtocolError,
    StreamMismatch,
    UnknownEvent,
)

__all__ = [
    "Connected",
    "Dtmf",
    "InboundEvent",
    "Mark",
    "Media",
    "MediaStreamParser",
    "OutboundClear",
    "OutboundEvent",
    "OutboundMark",
    "OutboundMedia",
    "Start",
    "Stop",
    "TwilioStreamWriter",
    "build_clear",
    "build_mark",
    "build_media",
    "parse_inbound",
    "parse_outbound",
]

# Values Twilio documents for a bidirectional stream (websocket-messages doc, "start" message).
MULAW_ENCODING = "audio/x-mulaw"
MULAW_SAMPLE_RATE = 8000
MULAW_CHANNELS = 1
DTMF_TRACK = "inbound_track"

#: Largest ``sequenceNumber`` / ``media.chunk`` / ``media.timestamp`` accepted: the database
#: stores call-clock ms in 32-bit integer columns (PostgreSQL ``integer``), and 2**31-1 ms is 24
#: days, far beyond a call. A larger value is a broken or hostile sender.
MAX_NUMBER = 2**31 - 1
_MAX_DIGITS = len(str(MAX_NUMBER))  # checked before int(), so int() never sees a long string
#: Twilio SIDs are two letters and 32 hex digits (``CA…``, ``MZ…``, ``AC…``); we accept any 1 to 64
#: ASCII letters and digits (tests and the emulator use shorter ones). That is what the ``Call``
#: columns hold and keeps ``call_<CallSid>`` a valid Channels group name (ASCII, < 100 chars).
MAX_SID_CHARS = 64
_SHOWN_CHARS = 32  # how much of a bad (non-audio) value an error message quotes

# --- Inbound events (Twilio -> us) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """First message of a stream, before ``start``; it carries no ``streamSid``.

    ``protocol`` is ``"Call"`` and ``version`` ``"1.0.0"`` in Twilio's example.
    """

    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    """The stream started: identifiers, tracks, ``<Parameter>`` values and the audio format.

    ``tracks`` is ``("inbound",)`` for ``<Connect><Stream>``. ``custom_parameters`` holds the
    ``<Parameter name value>`` children of ``<Stream>`` (strings). ``encoding`` is
    ``"audio/x-mulaw"``, ``sample_rate`` 8000 (Hz), ``channels`` 1 per Twilio's doc; they are
    reported as received, not checked here. ``sequence_number`` is ``1`` from Twilio.
    """

    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    encoding: str
    sample_rate: int
    channels: int
    sequence_number: int | None


@dataclass(frozen=True, slots=True)
class Media:
    """One piece of caller audio.

    ``payload``: decoded μ-law bytes (observed 160 B = 20 ms, not guaranteed by the doc).
    ``chunk``: 1 for the first media message, +1 per message. ``timestamp_ms``: ms since the
    stream started (the call clock; use it rather than arrival time). ``track``: ``"inbound"``.
    """

    stream_sid: str
    track: str
    chunk: int
    timestamp_ms: int
    payload: bytes
    sequence_number: int | None


@dataclass(frozen=True, slots=True)
class Mark:
    """Twilio echoes a mark we sent: the audio queued before it finished playing, *or* a ``clear``
    discarded it (the doc says Twilio sends back every pending mark after ``clear``)."""

    stream_sid: str
    name: str
    sequence_number: int | None


@dataclass(frozen=True, slots=True)
class Dtmf:
    """The caller pressed a key (``digit``: ``"0"``-``"9"``, ``"*"``, ``"#"``); ``track`` is
    ``"inbound_track"``. Bidirectional streams only."""

    stream_sid: str
    digit: str
    track: str
    sequence_number: int | None


@dataclass(frozen=True, slots=True)
class Stop:
    """The stream stopped or the call ended; nothing follows on this WebSocket."""

    stream_sid: str
    call_sid: str
    account_sid: str
    sequence_number: int | None


InboundEvent: TypeAlias = Connected | Start | Media | Mark | Dtmf | Stop

# --- Outbound messages (us -> Twilio), as the emulator reads them -----------------------------


@dataclass(frozen=True, slots=True)
class OutboundMedia:
    """Bot audio for Twilio to queue: ``payload`` is decoded μ-law 8 kHz bytes, any length."""

    stream_sid: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboundMark:
    """A mark queued after our audio; Twilio echoes ``name`` when the audio before it is done."""

    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class OutboundClear:
    """Discard all queued audio; Twilio then echoes every pending mark."""

    stream_sid: str


OutboundEvent: TypeAlias = OutboundMedia | OutboundMark | OutboundClear

# --- Field access with clear errors ------------------------------------------------------------


def _shown(value: Any) -> str:
    """A short description of a bad, non-audio value for an error message."""
    if isinstance(value, str):
        text = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
        return repr(text)
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    return type(value).__name__


def _missing_or_mistyped(event: str, field: str, value: Any, expected: str) -> MalformedMessage:
    if value is None:
        return MalformedMessage(
            f"{event} message: field {field!r} is missing", reason="missing_field", event=event
        )
    return MalformedMessage(
        f"{event} message: field {field!r} must be {expected}, got {_shown(value)}",
        reason="bad_field",
        event=event,
    )


def _object(parent: dict[str, Any], key: str, event: str, field: str) -> dict[str, Any]:
    value = parent.get(key)
    if type(value) is not dict:
        raise _missing_or_mistyped(event, field, value, "an object")
    return value


def _string(parent: dict[str, Any], key: str, event: str, field: str, *, empty_ok: bool = False) -> str:
    value = parent.get(key)
    if type(value) is not str or (not value and not empty_ok):
        raise _missing_or_mistyped(event, field, value, "a string" if empty_ok else "a non-empty string")
    return value


def _number(value: Any, event: str, field: str) -> int:
    """An integer 0..``MAX_NUMBER`` sent as a decimal string (Twilio's way) or a JSON number."""
    if type(value) is str:
        if value.isdigit() and value.isascii():
            if len(value) <= _MAX_DIGITS and (number := int(value)) <= MAX_NUMBER:
                return number
            raise _missing_or_mistyped(event, field, value, f"at most {MAX_NUMBER}")
    elif type(value) is int and value >= 0:
        if value <= MAX_NUMBER:
            return value
        raise _missing_or_mistyped(event, field, value, f"at most {MAX_NUMBER}")
    raise _missing_or_mistyped(event, field, value, "a decimal string")


def _sid(parent: dict[str, Any], key: str, event: str, field: str) -> str:
    """A Twilio SID: 1..``MAX_SID_CHARS`` ASCII letters and digits."""
    value = parent.get(key)
    if type(value) is str and 0 < len(value) <= MAX_SID_CHARS and value.isascii() and value.isalnum():
        return value
    raise _missing_or_mistyped(event, field, value, f"a SID of 1 to {MAX_SID_CHARS} ASCII letters and digits")


def _sequence_number(msg: dict[str, Any], event: str) -> int | None:
    value = msg.get("sequenceNumber")
    return None if value is None else _number(value, event, "sequenceNumber")


def _payload(value: Any, event: str, field: str) -> bytes:
    if type(value) is not str:
        raise _missing_or_mistyped(event, field, value, "a base64 string")
    try:
        # strict_mode (3.11+) rejects non-alphabet characters and misplaced padding in C, so the
        # hot path needs no regex check.
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        # The payload is never quoted: only its length and the decoder's reason.
        raise MalformedMessage(
            f"{event} message: field {field!r} is not valid base64 ({exc}; {len(value)} characters)",
            reason="bad_payload",
            event=event,
        ) from None


def _load(text: str | bytes | bytearray) -> dict[str, Any]:
    try:
        msg = json.loads(text)
    except (ValueError, TypeError) as exc:
        # JSONDecodeError / UnicodeDecodeError texts give a position, not the document; ``from
        # None`` drops the exception that holds the document (and so the payload).
        raise MalformedMessage(f"message is not valid JSON: {exc}", reason="bad_json") from None
    except RecursionError:
        # json's C scanner recurses once per nesting level: "[" * 100000 exhausts the stack.
        raise MalformedMessage("message is not valid JSON: nested too deeply", reason="bad_json") from None
    if type(msg) is not dict:
        raise MalformedMessage(
            f"message must be a JSON object, got a JSON {type(msg).__name__}", reason="not_object"
        )
    return msg


def _event_name(msg: dict[str, Any]) -> str:
    event = msg.get("event")
    if type(event) is str:
        return event
    if event is None:
        raise MalformedMessage("message has no 'event' field", reason="missing_event")
    raise MalformedMessage(f"field 'event' must be a string, got {_shown(event)}", reason="bad_field")


# --- Parsing inbound ---------------------------------------------------------------------------


def _parse_media(msg: dict[str, Any]) -> Media:
    # The hot path: 50 messages per second per call.
    media = msg.get("media")
    if type(media) is not dict:
        raise _missing_or_mistyped("media", "media", media, "an object")
    return Media(
        _string(msg, "streamSid", "media", "streamSid"),
        _string(media, "track", "media", "media.track"),
        _number(media.get("chunk"), "media", "media.chunk"),
        _number(media.get("timestamp"), "media", "media.timestamp"),
        _payload(media.get("payload"), "media", "media.payload"),
        _sequence_number(msg, "media"),
    )


def _parse_connected(msg: dict[str, Any]) -> Connected:
    return Connected(
        _string(msg, "protocol", "connected", "protocol"),
        _string(msg, "version", "connected", "version"),
    )


def _parse_start(msg: dict[str, Any]) -> Start:
    start = _object(msg, "start", "start", "start")
    # Twilio puts streamSid both inside "start" and at the top level; either will do, but two
    # different values mean a broken sender.
    inner, outer = start.get("streamSid"), msg.get("streamSid")
    stream_sid = _sid(start if inner is not None else msg, "streamSid", "start", "start.streamSid")
    if inner is not None and outer is not None and outer != inner:
        raise MalformedMessage(
            f"start message: streamSid {_shown(outer)} differs from start.streamSid {_shown(inner)}",
            reason="bad_field",
            event="start",
        )
    tracks = start.get("tracks")
    if type(tracks) is not list or not all(type(t) is str for t in tracks):
        raise _missing_or_mistyped("start", "start.tracks", tracks, "an array of strings")
    params = start.get("customParameters", {})
    if type(params) is not dict:
        raise _missing_or_mistyped("start", "start.customParameters", params, "an object")
    for key, value in params.items():
        if type(value) is not str:
            raise _missing_or_mistyped(
                "start", f"start.customParameters.{key[:_SHOWN_CHARS]}", value, "a string"
            )
    fmt = _object(start, "mediaFormat", "start", "start.mediaFormat")
    return Start(
        stream_sid=stream_sid,
        call_sid=_sid(start, "callSid", "start", "start.callSid"),
        account_sid=_sid(start, "accountSid", "start", "start.accountSid"),
        tracks=tuple(tracks),
        custom_parameters=dict(params),
        encoding=_string(fmt, "encoding", "start", "start.mediaFormat.encoding"),
        sample_rate=_number(fmt.get("sampleRate"), "start", "start.mediaFormat.sampleRate"),
        channels=_number(fmt.get("channels"), "start", "start.mediaFormat.channels"),
        sequence_number=_sequence_number(msg, "start"),
    )


def _parse_mark(msg: dict[str, Any]) -> Mark:
    mark = _object(msg, "mark", "mark", "mark")
    return Mark(
        _string(msg, "streamSid", "mark", "streamSid"),
        _string(mark, "name", "mark", "mark.name", empty_ok=True),
        _sequence_number(msg, "mark"),
    )


def _parse_dtmf(msg: dict[str, Any]) -> Dtmf:
    dtmf = _object(msg, "dtmf", "dtmf", "dtmf")
    return Dtmf(
        _string(msg, "streamSid", "dtmf", "streamSid"),
        _string(dtmf, "digit", "dtmf", "dtmf.digit"),
        _string(dtmf, "track", "dtmf", "dtmf.track"),
        _sequence_number(msg, "dtmf"),
    )


def _parse_stop(msg: dict[str, Any]) -> Stop:
    stop = _object(msg, "stop", "stop", "stop")
    return Stop(
        _string(msg, "streamSid", "stop", "streamSid"),
        _string(stop, "callSid", "stop", "stop.callSid"),
        _string(stop, "accountSid", "stop", "stop.accountSid"),
        _sequence_number(msg, "stop"),
    )


_INBOUND_PARSERS = {
    "connected": _parse_connected,
    "start": _parse_start,
    "mark": _parse_mark,
    "dtmf": _parse_dtmf,
    "stop": _parse_stop,
}


def parse_inbound(text: str | bytes) -> InboundEvent:
    """Parse one text frame Twilio sent into its event; stateless (see ``MediaStreamParser``).

    ``text``: the frame as ``str``, or UTF-8 ``bytes``. Returns ``Connected``, ``Start``,
    ``Media`` (payload decoded to μ-law bytes), ``Mark``, ``Dtmf`` or ``Stop``, with numeric
    strings converted to ``int``. Unknown extra fields are ignored.

    Raises ``MalformedMessage`` (bad JSON or JSON nested too deeply, not an object, no ``event``,
    a missing or mistyped field, a ``sequenceNumber``/``chunk``/``timestamp`` that is not a
    decimal 0..``MAX_NUMBER``, a ``start`` SID that is not 1..64 ASCII letters and digits, bad
    base64) or
    ``UnknownEvent`` (an ``event`` Twilio does not send, e.g. our own ``clear``). Both are
    ``ProtocolError``; their text never contains the audio payload.
    """
    msg = _load(text)
    event = _event_name(msg)
    if event == "media":
        return _parse_media(msg)
    parse = _INBOUND_PARSERS.get(event)
    if parse is None:
        raise UnknownEvent(f"unknown Twilio event {_shown(event)}", event=event)
    return parse(msg)


class MediaStreamParser:
    """The inbound side of one Media Streams WebSocket: parses frames and enforces their order.

    Order rules (Twilio sends ``connected``, ``start``, then ``media``/``mark``/``dtmf``, then
    ``stop``; websocket-messages doc):

    * ``media``, ``mark``, ``dtmf`` or ``stop`` before ``start`` -> ``OutOfOrderMessage``;
    * a second ``start`` -> ``OutOfOrderMessage``;
    * anything after ``stop`` -> ``OutOfOrderMessage``;
    * ``connected`` is tolerated any number of times *before* ``start`` (it carries no state, so a
      repeat is harmless) and is an ``OutOfOrderMessage`` after it; ``start`` without a preceding
      ``connected`` is accepted, since nothing in ``connected`` is needed;
    * a ``streamSid`` other than the one ``start`` gave (or a ``stop`` for another ``callSid``)
      -> ``StreamMismatch``.

    A rejected frame raises (the caller logs it with the call SID and drops it) and leaves the
    state unchanged; ``errors`` counts rejections by the exception's ``reason``.

    Attributes: ``stream_sid``, ``call_sid`` (``None`` before ``start``), ``start_event`` (the
    ``Start``), ``started``, ``stopped``, ``errors`` (``collections.Counter``).
    """

    __slots__ = ("call_sid", "errors", "start_event", "started", "stopped", "stream_sid")

    def __init__(self) -> None:
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.start_event: Start | None = None
        self.started = False
        self.stopped = False
        self.errors: Counter[str] = Counter()

    def receive(self, text: str | bytes) -> InboundEvent:
        """Parse one frame (as ``parse_inbound``) and check it against the stream's state.

        Raises ``MalformedMessage``, ``UnknownEvent``, ``OutOfOrderMessage`` or ``StreamMismatch``.
        """
        try:
            event = parse_inbound(text)
            if type(event) is Media:
                # Hot path: two comparisons.
                if not self.started or self.stopped:
                    self._reject_order("media")
                if event.stream_sid != self.stream_sid:
                    self._reject_stream("media", event.stream_sid)
            else:
                self._advance(event)
        except ProtocolError as exc:
            self.errors[getattr(exc, "reason", "protocol_error")] += 1
            raise
        return event

    def _advance(self, event: InboundEvent) -> None:
        name = _EVENT_NAMES[type(event)]
        if self.stopped:
            self._reject_order(name)
        if type(event) is Connected:
            if self.started:
                self._reject_order(name)
            return
        if type(event) is Start:
            if self.started:
                raise OutOfOrderMessage(
                    f"a second start message (stream already started as {self.stream_sid})", event=name
                )
            self.started = True
            self.stream_sid, self.call_sid, self.start_event = event.stream_sid, event.call_sid, event
            return
        if not self.started:
            self._reject_order(name)
        if event.stream_sid != self.stream_sid:  # type: ignore[union-attr]
            self._reject_stream(name, event.stream_sid)  # type: ignore[union-attr]
        if type(event) is Stop:
            if event.call_sid != self.call_sid:
                raise StreamMismatch(
                    f"stop message for callSid {_shown(event.call_sid)}, "
                    f"but this stream started for {self.call_sid}",
                    event=name,
                )
            self.stopped = True

    def _reject_order(self, name: str) -> None:
        where = "after stop" if self.stopped else ("after start" if self.started else "before start")
        raise OutOfOrderMessage(f"{name} message {where}", event=name)

    def _reject_stream(self, name: str, stream_sid: str) -> None:
        raise StreamMismatch(
            f"{name} message for streamSid {_shown(stream_sid)}, but this stream is {self.stream_sid}",
            event=name,
        )


_EVENT_NAMES: dict[type, str] = {
    Connected: "connected",
    Start: "start",
    Media: "media",
    Mark: "mark",
    Dtmf: "dtmf",
    Stop: "stop",
}

# --- Building outbound (us -> Twilio) ----------------------------------------------------------


def _check_stream_sid(stream_sid: str) -> None:
    if not stream_sid or type(stream_sid) is not str:
        # Twilio requires streamSid on every message we send, so nothing can go out before start.
        raise ValueError(f"stream_sid must be a non-empty string, got {_shown(stream_sid)}")


def build_media(stream_sid: str, ulaw: bytes) -> str:
    """The ``media`` message that queues ``ulaw`` (raw μ-law 8 kHz bytes, any length, no WAV
    header) for playback: ``{"event":"media","streamSid":…,"media":{"payload":<base64>}}``.

    Twilio plays media messages in the order received (websocket-messages doc, "Send a media
    message"). Raises ``ValueError`` for an empty ``stream_sid``.
    """
    _check_stream_sid(stream_sid)
    # Hand-assembled: base64 needs no JSON escaping, and this runs for every chunk of bot audio.
    payload = binascii.b2a_base64(ulaw, newline=False).decode("ascii")
    return f'{{"event":"media","streamSid":{json.dumps(stream_sid)},"media":{{"payload":"{payload}"}}}}'


def build_mark(stream_sid: str, name: str) -> str:
    """The ``mark`` message: ``{"event":"mark","streamSid":…,"mark":{"name":…}}``.

    Twilio echoes a mark with the same name when the audio queued before it has played, at once
    if nothing is queued, and also when a ``clear`` discards that audio (websocket-messages doc).
    Raises ``ValueError`` for an empty ``stream_sid``.
    """
    _check_stream_sid(stream_sid)
    return json.dumps(
        {"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}, separators=(",", ":")
    )


def build_clear(stream_sid: str) -> str:
    """The ``clear`` message: ``{"event":"clear","streamSid":…}``; Twilio empties its audio buffer
    and echoes every pending mark (websocket-messages doc). Raises ``ValueError`` for an empty
    ``stream_sid``."""
    _check_stream_sid(stream_sid)
    return json.dumps({"event": "clear", "streamSid": stream_sid}, separators=(",", ":"))


def parse_outbound(text: str | bytes) -> OutboundEvent:
    """Parse one frame our server sent to Twilio (how the emulator reads the bot).

    Returns ``OutboundMedia`` (payload decoded to μ-law bytes), ``OutboundMark`` or
    ``OutboundClear``. Raises ``MalformedMessage`` (bad JSON, missing/mistyped field, bad base64,
    no ``streamSid``) or ``UnknownEvent`` (any other ``event``, including Twilio-only ones such as
    ``start``).
    """
    msg = _load(text)
    event = _event_name(msg)
    if event == "media":
        media = _object(msg, "media", event, "media")
        return OutboundMedia(
            _string(msg, "streamSid", event, "streamSid"),
            _payload(media.get("payload"), event, "media.payload"),
        )
    if event == "mark":
        mark = _object(msg, "mark", event, "mark")
        return OutboundMark(
            _string(msg, "streamSid", event, "streamSid"),
            _string(mark, "name", event, "mark.name", empty_ok=True),
        )
    if event == "clear":
        return OutboundClear(_string(msg, "streamSid", event, "streamSid"))
    raise UnknownEvent(
        f"unknown outbound event {_shown(event)}: a server may send only media, mark or clear", event=event
    )


# --- Twilio's side (emulator, tests, benchmarks) -----------------------------------------------


class TwilioStreamWriter:
    """Builds the frames Twilio sends on one bidirectional stream, numbered as Twilio numbers them.

    ``sequenceNumber`` is ``"1"`` on ``start`` and +1 on every later message (``connected`` has
    none); ``media.chunk`` is ``"1"`` on the first media message and +1 per media message. All
    numbers are strings except ``mediaFormat.sampleRate``/``channels`` (websocket-messages doc).
    The writer does not enforce order, so tests can produce out-of-order traffic with it.
    """

    __slots__ = ("_sid_json", "account_sid", "call_sid", "chunk", "sequence_number", "stream_sid")

    def __init__(self, stream_sid: str, call_sid: str, account_sid: str) -> None:
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self._sid_json = json.dumps(stream_sid)
        #: last ``sequenceNumber`` and ``media.chunk`` sent (0 = none yet)
        self.sequence_number = 0
        self.chunk = 0

    def _next_sequence(self) -> str:
        self.sequence_number += 1
        return str(self.sequence_number)

    @staticmethod
    def _dumps(msg: dict[str, Any]) -> str:
        return json.dumps(msg, separators=(",", ":"))

    def connected(self) -> str:
        """``{"event":"connected","protocol":"Call","version":"1.0.0"}``."""
        return self._dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, custom_parameters: dict[str, str], tracks: tuple[str, ...] = ("inbound",)) -> str:
        """The ``start`` message: ids, ``tracks``, ``customParameters`` (the ``<Parameter>`` values),
        mediaFormat μ-law/8000/1, with ``streamSid`` both inside ``start`` and at the top level."""
        return self._dumps(
            {
                "event": "start",
                "sequenceNumber": self._next_sequence(),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": list(tracks),
                    "mediaFormat": {
                        "encoding": MULAW_ENCODING,
                        "sampleRate": MULAW_SAMPLE_RATE,
                        "channels": MULAW_CHANNELS,
                    },
                    "customParameters": dict(custom_parameters),
                },
                "streamSid": self.stream_sid,
            }
        )

    def media(self, ulaw: bytes, timestamp_ms: int) -> str:
        """A ``media`` message of caller audio: ``ulaw`` raw μ-law bytes (160 B = 20 ms), at
        ``timestamp_ms`` ms since the stream started; track ``"inbound"``."""
        if timestamp_ms < 0:
            raise ValueError(f"timestamp_ms must be >= 0, got {timestamp_ms}")
        self.chunk += 1
        payload = binascii.b2a_base64(ulaw, newline=False).decode("ascii")
        # Hand-assembled like build_media: the load generator sends 50 of these per second per call.
        return (
            f'{{"event":"media","sequenceNumber":"{self._next_sequence()}","media":{{"track":"inbound",'
            f'"chunk":"{self.chunk}","timestamp":"{int(timestamp_ms)}","payload":"{payload}"}},'
            f'"streamSid":{self._sid_json}}}'
        )

    def mark(self, name: str) -> str:
        """The echo of one of our marks: ``{"event":"mark","sequenceNumber":…,"streamSid":…,
        "mark":{"name":…}}``."""
        return self._dumps(
            {
                "event": "mark",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def dtmf(self, digit: str) -> str:
        """A key press: ``dtmf.track`` is always ``"inbound_track"``."""
        return self._dumps(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next_sequence(),
                "dtmf": {"track": DTMF_TRACK, "digit": digit},
            }
        )

    def stop(self) -> str:
        """The last message: ``stop.accountSid``, ``stop.callSid`` and the top-level ``streamSid``."""
        return self._dumps(
            {
                "event": "stop",
                "sequenceNumber": self._next_sequence(),
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }
        )

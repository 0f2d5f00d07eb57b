"""Exceptions raised by the live-call code.

``VoicebotError`` is the root. ``ProtocolError`` means a Twilio message we cannot use (logged and
dropped, never fatal to the call); ``ProviderError`` and its subclasses mean an STT, LLM or TTS
engine failed (the session apologises and goes on); ``NoActiveCallError`` means
``get_current_call()`` was used outside a call.
"""

from __future__ import annotations


class VoicebotError(Exception):
    """Base class of every error raised by ``media_ws``."""


class ProtocolError(VoicebotError):
    """A Twilio Media Streams message was malformed, unknown or out of order."""


class _TwilioMessageError(ProtocolError):
    """A rejected Twilio message, with a short ``reason`` slug and the ``event`` name when known.

    ``reason`` is what ``MediaStreamParser.errors`` counts (e.g. ``"bad_json"``, ``"missing_field"``,
    ``"out_of_order"``). Messages never quote an audio payload.
    """

    reason = "protocol_error"

    def __init__(self, message: str, *, reason: str | None = None, event: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.event = event


class MalformedMessage(_TwilioMessageError):
    """Not a usable Twilio message: bad JSON, not an object, no ``event``, a missing or mistyped
    field, or a payload that is not valid base64.

    ``reason`` is one of ``"bad_json"``, ``"not_object"``, ``"missing_event"``, ``"missing_field"``,
    ``"bad_field"``, ``"bad_payload"``.
    """

    reason = "malformed"


class UnknownEvent(_TwilioMessageError):
    """A well-formed message whose ``event`` is not one this side of the protocol sends."""

    reason = "unknown_event"


class OutOfOrderMessage(_TwilioMessageError):
    """A valid message at the wrong point of the stream (media before ``start``, a second ``start``,
    anything after ``stop``)."""

    reason = "out_of_order"


class StreamMismatch(_TwilioMessageError):
    """A message names a ``streamSid`` (or ``callSid``) other than the one its stream started with."""

    reason = "stream_mismatch"


class NoActiveCallError(VoicebotError, LookupError):
    """``get_current_call()`` was called outside a task that belongs to a live call."""


class ProviderError(VoicebotError):
    """An STT, LLM or TTS engine failed.

    ``kind`` says how, so the session can word its apology and the event log can be filtered:
    ``"auth"`` (credentials refused), ``"unavailable"`` (connection refused, 5xx, rate limited),
    ``"timeout"`` (no answer in time), ``"dropped"`` (the stream broke mid-way) or ``"bad_response"``.
    """

    provider = "provider"

    def __init__(self, message: str, *, kind: str = "unavailable") -> None:
        super().__init__(message)
        self.kind = kind


class STTError(ProviderError):
    provider = "stt"


class LLMError(ProviderError):
    provider = "llm"


class TTSError(ProviderError):
    provider = "tts"

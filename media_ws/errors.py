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

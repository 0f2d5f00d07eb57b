"""The three engine interfaces the call session talks to.

The session never imports an SDK: it sees only these types. Each engine is created once per
process (their constructors may block) and opens one stream per call where it needs one.

Audio crossing these interfaces is always G.711 μ-law at 8000 Hz, mono, no header: 1 byte per
sample, 160 bytes per 20 ms.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

# --- Speech to text -------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechStarted:
    """The engine heard the caller start speaking. ``audio_ms``: position on the call clock."""

    audio_ms: int | None = None


@dataclass(frozen=True)
class InterimTranscript:
    """A partial transcript of the utterance in progress; it may still change."""

    text: str


@dataclass(frozen=True)
class Utterance:
    """A whole caller utterance, final.

    ``end_ms`` is where the caller stopped speaking on the call clock (ms since stream start), when
    the engine knows it. ``approximate`` marks text from an engine with poor accuracy (offline).
    """

    text: str
    end_ms: int | None = None
    approximate: bool = False


@dataclass(frozen=True)
class TranscriptionGap:
    """The STT connection dropped and was re-opened; ``gap_ms`` of caller audio went untranscribed."""

    reason: str
    gap_ms: int


STTEvent = SpeechStarted | InterimTranscript | Utterance | TranscriptionGap


class STTStream(abc.ABC):
    """One call's streaming transcription."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Open the stream. Raises ``STTError`` when the engine cannot be reached."""

    @abc.abstractmethod
    def send_audio(self, ulaw: bytes, audio_ms: int) -> None:
        """Queue caller audio (μ-law 8 kHz, any length) starting at ``audio_ms`` on the call clock.

        Never blocks and never awaits: it is called on the per-frame path.
        """

    def caller_speech(self, speaking: bool, audio_ms: int) -> None:  # noqa: B027 - optional hook
        """Our own VAD's view of the caller: speech started (True) or ended (False) at ``audio_ms``.

        Engines with their own endpointing ignore it; the offline engine uses it to cut utterances.
        """

    @abc.abstractmethod
    def events(self) -> AsyncIterator[STTEvent]:
        """Transcription events until the stream is closed. Raises ``STTError`` if it fails for good."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and close; safe to call twice."""


class SpeechToText(abc.ABC):
    name = "stt"

    @abc.abstractmethod
    def open_stream(self) -> STTStream:
        """A new, not yet started stream for one call."""


# --- Language model -------------------------------------------------------------------------


# A keypad press reaches the LLM as a user message with exactly this text (the session writes it,
# the scripted agent and tests read it back). Twilio's ``dtmf`` event carries one of 0-9, * and #.
_DTMF_PREFIX = "[The caller pressed "
_DTMF_SUFFIX = " on the keypad]"
_DTMF_DIGITS = frozenset("0123456789*#")


def dtmf_message(digit: str) -> str:
    """The user-message text for one keypad press: ``"[The caller pressed {digit} on the keypad]"``.

    ``digit`` is one of ``0``-``9``, ``*``, ``#`` (Twilio ``dtmf.digit``); anything else raises
    ``ValueError``.
    """
    if digit not in _DTMF_DIGITS:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return f"{_DTMF_PREFIX}{digit}{_DTMF_SUFFIX}"


def parse_dtmf_message(content: str) -> str | None:
    """The digit of a message written by ``dtmf_message``, or ``None`` for any other text."""
    if not isinstance(content, str):
        return None
    content = content.strip()
    if not (content.startswith(_DTMF_PREFIX) and content.endswith(_DTMF_SUFFIX)):
        return None
    digit = content[len(_DTMF_PREFIX) : len(content) - len(_DTMF_SUFFIX)]
    return digit if digit in _DTMF_DIGITS else None


@dataclass(frozen=True)
class TextDelta:
    """A piece of the reply's text, in order."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """The model asks for a tool. ``arguments`` is the parsed JSON object."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


LLMEvent = TextDelta | ToolCall


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model, as a JSON-schema function description."""

    name: str
    description: str
    parameters: dict[str, Any]


class LanguageModel(abc.ABC):
    name = "llm"

    @abc.abstractmethod
    def stream(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> AsyncIterator[LLMEvent]:
        """Stream one reply to an OpenAI-style message list.

        Returns an async generator; closing it (``aclose()``) or cancelling the task consuming it
        stops generation at the provider too. Raises ``LLMError``.
        """


# --- Text to speech -------------------------------------------------------------------------


class TextToSpeech(abc.ABC):
    name = "tts"

    @abc.abstractmethod
    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Speak ``text``: an async generator of μ-law 8 kHz chunks (any sizes, no header).

        The first chunk comes as soon as the engine has audio. Closing the generator stops
        synthesis. Raises ``TTSError``.
        """

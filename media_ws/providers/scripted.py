"""The scripted agent: a deterministic stand-in for the LLM, so every call path runs offline.

It is **not an AI**. It follows a fixed call script over the last caller message, word by word
through the same interface as the real LLM (``TextDelta`` pieces, then at most one ``ToolCall``),
so the session, the tools, the emulator and the tests exercise exactly the code paths a real model
would drive:

- the caller asks for a person ("person", "human", "agent", "talk to", ...) or presses 0: it says
  "Sure, I'll connect you with a person now." and calls ``transfer_to_human``;
- the caller says goodbye ("goodbye", "bye", "that's all", ...) or presses #: it says "Thank you
  for calling. Goodbye!" and calls ``end_call``;
- the caller asks something in the FAQ table (opening hours, address, appointment, price, who is
  calling): the table's one- or two-sentence answer;
- anything else, including garbled offline transcripts: a fallback that says what works offline
  (opening hours, appointments, "person" or 0, the pound key).

Keypad presses arrive as user messages written by ``base.dtmf_message`` (``"[The caller pressed 0
on the keypad]"``); they are exact, unlike offline transcripts, which is why every action has a
key. A tool is only called when it is in the ``tools`` the agent is given; otherwise the agent
says it cannot do that. After a tool result (a ``{"role": "tool"}`` message last) it says nothing:
the tool has already acted (the call is being transferred or has ended) and the tool itself
speaks when it fails.

Same messages and tools in, same events out: no randomness, no clock, no state between calls.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from media_ws.providers.base import LanguageModel, LLMEvent, TextDelta, ToolCall, ToolSpec, parse_dtmf_message

END_CALL = "end_call"
TRANSFER_TO_HUMAN = "transfer_to_human"

HANDOFF_TEXT = "Sure, I'll connect you with a person now."
GOODBYE_TEXT = "Thank you for calling. Goodbye!"
NO_TRANSFER_TEXT = "I'm sorry, I can't connect you with a person on this line, but I'm happy to keep helping."
NO_HANGUP_TEXT = "Thank you for calling. You can hang up whenever you're ready."
FALLBACK_TEXT = (
    "Sorry, I didn't catch that. You can ask about opening hours or appointments, say 'person' or "
    "press 0 to reach a person, or press the pound key to end the call."
)
OPENING_TEXT = (
    "How can I help you? You can ask about opening hours or appointments, or say 'person' or "
    "press 0 to reach a person."
)

#: Words and phrases (lower case, split on spaces) that ask for a person.
TRANSFER_KEYWORDS: tuple[str, ...] = (
    "person", "human", "agent", "representative", "operator", "someone", "somebody", "receptionist",
    "talk to", "speak to", "speak with", "real person",
)
#: Words and phrases that end the call.
END_KEYWORDS: tuple[str, ...] = (
    "goodbye", "good bye", "bye", "bye bye", "that's all", "that is all", "thank you bye", "hang up",
    "end the call",
)


@dataclass(frozen=True)
class FaqEntry:
    """One answer of the FAQ table: said when any of ``keywords`` (words or phrases) is heard."""

    topic: str
    keywords: tuple[str, ...]
    answer: str


#: The default FAQ table: a small clinic's front desk. Checked in order; the first match answers.
DEFAULT_FAQ: tuple[FaqEntry, ...] = (
    FaqEntry("identity", ("who are you", "who is this", "who's this", "who is calling", "what are you",
                          "robot", "your name"),
             "I'm the clinic's automated assistant, a simple offline script rather than a person. "
             "Say 'person' or press 0 any time to reach a colleague."),
    FaqEntry("appointment", ("appointment", "appointments", "reschedule", "booking", "book", "cancel"),
             "Your next appointment is on Tuesday at ten in the morning. To change it, say 'person' or "
             "press 0 and a colleague will help you."),
    FaqEntry("hours", ("hours", "open", "opening", "close", "closing", "closed"),
             "We're open Monday to Friday from nine in the morning to five in the afternoon, and on "
             "Saturday from ten to two."),
    FaqEntry("address", ("address", "where", "located", "location", "directions", "find you"),
             "We're at 12 Market Street, next to the post office. There is free parking behind the "
             "building."),
    FaqEntry("price", ("price", "prices", "cost", "costs", "how much", "fee", "fees", "charge"),
             "A standard visit costs eighty dollars. Your insurance may cover part of it."),
)

_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> list[str]:
    """Lower-case words, apostrophes kept ("that's"), curly apostrophes normalised."""
    return _WORD.findall(text.lower().replace("’", "'"))


def _has_any(words: Sequence[str], phrases: Sequence[str]) -> bool:
    """Whether any phrase occurs as whole consecutive words of ``words``."""
    padded = " " + " ".join(words) + " "
    return any(" " + phrase + " " in padded for phrase in phrases)


@dataclass(frozen=True)
class ScriptedReply:
    """What the script says (``text``, may be empty) and the tool it calls, if any."""

    text: str
    tool: str | None = None
    reason: str = ""


class ScriptedAgent(LanguageModel):
    """A deterministic scripted stand-in for the LLM (not an AI); see the module docstring.

    ``words_per_delta``: words per ``TextDelta``. ``first_delta_delay_ms`` / ``delta_delay_ms``: a
    pause before the first / each later delta, to let a benchmark simulate a model's time to first
    token and its streaming pace (settings ``OFFLINE_LLM_FIRST_DELTA_MS`` and
    ``OFFLINE_LLM_DELTA_MS``, both default 0). ``transfer_digit`` / ``end_digit``: the keys for a
    person and for goodbye (settings ``DTMF_TRANSFER_DIGIT`` / ``DTMF_END_DIGIT``, "0" and "#").
    ``faq``: the question table (``DEFAULT_FAQ``).
    """

    name = "scripted"

    def __init__(self, *, words_per_delta: int = 3, first_delta_delay_ms: float | None = None,
                 delta_delay_ms: float | None = None, transfer_digit: str | None = None,
                 end_digit: str | None = None, faq: Sequence[FaqEntry] = DEFAULT_FAQ) -> None:
        if words_per_delta < 1:
            raise ValueError(f"words_per_delta must be at least 1, got {words_per_delta}")
        self.words_per_delta = words_per_delta
        if first_delta_delay_ms is None:
            first_delta_delay_ms = getattr(settings, "OFFLINE_LLM_FIRST_DELTA_MS", 0)
        if delta_delay_ms is None:
            delta_delay_ms = getattr(settings, "OFFLINE_LLM_DELTA_MS", 0)
        self.first_delta_delay_s = float(first_delta_delay_ms) / 1000
        self.delta_delay_s = float(delta_delay_ms) / 1000
        self.transfer_digit = str(transfer_digit or getattr(settings, "DTMF_TRANSFER_DIGIT", "0"))
        self.end_digit = str(end_digit or getattr(settings, "DTMF_END_DIGIT", "#"))
        self.faq = tuple(faq)

    # --- the script (pure) ----------------------------------------------------------------------
    def reply(self, messages: Sequence[dict[str, Any]], tools: Sequence[ToolSpec]) -> ScriptedReply:
        """The script's answer to ``messages`` given the offered ``tools``: a pure function."""
        last = messages[-1] if messages else {}
        if last.get("role") == "tool":
            return ScriptedReply("")
        if last.get("role") != "user":
            return ScriptedReply(OPENING_TEXT)  # nothing from the caller yet
        content = last.get("content")
        text = content if isinstance(content, str) else ""
        offered = {t.name for t in tools}

        digit = parse_dtmf_message(text)
        if digit is not None:
            if digit == self.transfer_digit:
                return self._transfer(offered, f"caller pressed {digit}")
            if digit == self.end_digit:
                return self._end(offered, f"caller pressed {digit}")
            return ScriptedReply(f"You pressed {_spoken_key(digit)}. Press {_spoken_key(self.transfer_digit)}"
                                 f" to reach a person, or {_spoken_key(self.end_digit)} to end the call.")

        words = _words(text)
        if _has_any(words, TRANSFER_KEYWORDS):
            return self._transfer(offered, "caller asked for a person")
        if _has_any(words, END_KEYWORDS):
            return self._end(offered, "caller said goodbye")
        for entry in self.faq:
            if _has_any(words, entry.keywords):
                return ScriptedReply(entry.answer)
        return ScriptedReply(FALLBACK_TEXT)

    @staticmethod
    def _transfer(offered: set[str], reason: str) -> ScriptedReply:
        if TRANSFER_TO_HUMAN not in offered:
            return ScriptedReply(NO_TRANSFER_TEXT)
        return ScriptedReply(HANDOFF_TEXT, TRANSFER_TO_HUMAN, reason)

    @staticmethod
    def _end(offered: set[str], reason: str) -> ScriptedReply:
        if END_CALL not in offered:
            return ScriptedReply(NO_HANGUP_TEXT)
        return ScriptedReply(GOODBYE_TEXT, END_CALL, reason)

    # --- the LLM interface ----------------------------------------------------------------------
    async def stream(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> AsyncIterator[LLMEvent]:
        """The scripted reply as ``TextDelta``s of ``words_per_delta`` words (spaces kept, so the
        deltas join to the reply text), then its ``ToolCall`` if any, with
        ``id="call_<n>"`` (n = 1 + tool calls already in ``messages``) and
        ``arguments={"reason": ...}``. An empty reply yields nothing. Never raises ``LLMError``."""
        reply = self.reply(messages, tools)
        pieces = re.findall(r"\S+\s*", reply.text)
        for i in range(0, len(pieces), self.words_per_delta):
            delay = self.first_delta_delay_s if i == 0 else self.delta_delay_s
            if delay > 0:
                await asyncio.sleep(delay)
            yield TextDelta("".join(pieces[i : i + self.words_per_delta]))
        if reply.tool is not None:
            n = 1 + sum(len(m.get("tool_calls") or ()) for m in messages if m.get("role") == "assistant")
            yield ToolCall(id=f"call_{n}", name=reply.tool, arguments={"reason": reply.reason})


def _spoken_key(digit: str) -> str:
    return {"#": "the pound key", "*": "the star key"}.get(digit, digit)


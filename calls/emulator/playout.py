"""Twilio's side of a bidirectional stream's bot audio: a buffer played out in real time.

What Twilio documents (twilio.com/docs/voice/media-streams/websocket-messages): outbound ``media``
messages are "buffered and played in the order received"; a ``mark`` is echoed "when that media
message's playback is complete" (at once if nothing is buffered); ``clear`` "empties all buffered
audio and causes any mark messages to be sent back". ``Playout`` is that behaviour as plain Python
with the clock passed in (ms), so the emulator, the tests and the benchmarks share one faithful
model. Audio is μ-law 8 kHz: 8 bytes per ms.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

BYTES_PER_MS = 8
SILENCE = b"\xff"


@dataclass(frozen=True)
class PlayedAudio:
    """What reached the caller's ear between two ``advance`` calls."""

    audio: bytes  # μ-law, exactly 8 bytes per elapsed ms; 0xFF (silence) where nothing played
    marks: list[str]  # marks whose audio finished playing, in order
    bot_ms: int  # ms of real bot audio in ``audio``


class Playout:
    """A FIFO of bot audio and marks, consumed at 8000 bytes per second of the clock you pass in."""

    def __init__(self, start_ms: int = 0) -> None:
        self._items: deque[bytes | str] = deque()  # bytes = audio, str = mark name
        self._buffered = 0
        self._clock_ms = start_ms
        self._carry = 0.0  # sub-byte remainder, so odd ms steps do not drift
        self.played_bytes = 0
        self.cleared_bytes = 0

    @property
    def buffered_ms(self) -> int:
        """Bot audio queued and not yet played."""
        return self._buffered // BYTES_PER_MS

    @property
    def playing(self) -> bool:
        return self._buffered > 0

    def media(self, ulaw: bytes) -> None:
        """Queue a ``media`` payload from the bot."""
        if ulaw:
            self._items.append(bytes(ulaw))
            self._buffered += len(ulaw)

    def mark(self, name: str) -> list[str]:
        """Queue a ``mark``; returns it at once (to echo now) if no audio is buffered."""
        if self._buffered == 0 and not self._items:
            return [name]
        self._items.append(name)
        return []

    def clear(self) -> list[str]:
        """Drop all buffered audio; returns every pending mark, to echo now."""
        marks = [item for item in self._items if isinstance(item, str)]
        self.cleared_bytes += self._buffered
        self._items.clear()
        self._buffered = 0
        return marks

    def advance(self, now_ms: float) -> PlayedAudio:
        """Play from the last call up to ``now_ms``: return the audio heard and the marks completed."""
        elapsed = max(0.0, now_ms - self._clock_ms)
        self._clock_ms = max(self._clock_ms, now_ms)
        exact = elapsed * BYTES_PER_MS + self._carry
        budget = int(exact)
        self._carry = exact - budget
        out = bytearray()
        marks: list[str] = []
        bot = 0
        while self._items:
            head = self._items[0]
            if isinstance(head, str):
                marks.append(head)
                self._items.popleft()
                continue
            if budget == 0:
                break
            take = min(budget, len(head))
            out += head[:take]
            bot += take
            budget -= take
            self._buffered -= take
            if take == len(head):
                self._items.popleft()
            else:
                self._items[0] = head[take:]
        if budget:
            out += SILENCE * budget
        self.played_bytes += bot
        return PlayedAudio(bytes(out), marks, bot // BYTES_PER_MS)

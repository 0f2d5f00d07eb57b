"""What bot audio was sent to Twilio, what the caller has heard, and what a ``clear`` discarded.

Bot audio goes to Twilio as ``media`` chunks of at most 200 ms (1600 bytes of μ-law at 8 kHz),
each followed by a ``mark``. Twilio plays media in the order received and echoes a mark when the
audio queued before it has played; it *also* echoes every pending mark right after a ``clear``,
although that audio was discarded (twilio.com/docs/voice/media-streams/websocket-messages, "Send
a clear message"). So an echo means "played *or* discarded": marks pending when we send ``clear``
are flagged here and their echoes count as not played.

``PlaybackTracker`` is sans-I/O: the session tells it what it sends and what Twilio echoes, and
asks it whether bot audio is still playing at the caller, how much of a response was played, and
which text the caller heard (to keep only that in the LLM history after a barge-in). Time is
counted in bytes of μ-law (8 bytes per ms), never read from a clock. It imports nothing from
Django or ``calls``.

Each bot response has a *generation* id (an ``int``); a response is spoken as *segments*
(sentences or clauses), each with its text and audio.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from media_ws.audio import BYTES_PER_MS

__all__ = ["MarkEcho", "PlaybackTracker"]

_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class MarkEcho:
    """What one echoed mark meant.

    ``played``: the audio chunk before the mark reached the caller (``False`` when the mark was
    pending at ``clear``: Twilio echoed it because the audio was discarded). ``drained``: no mark of
    ``generation`` is still waiting for its echo, so Twilio holds none of that response's audio.
    """

    name: str
    generation: int
    played: bool
    drained: bool


class _Response:
    """One generation's bookkeeping."""

    __slots__ = ("open_segment", "pending_marks", "played_bytes", "segments", "sent_bytes")

    def __init__(self) -> None:
        self.segments: list[_Segment] = []
        self.open_segment: _Segment | None = None
        self.sent_bytes = 0
        self.played_bytes = 0
        self.pending_marks = 0  # marks sent and not yet echoed, cleared or not


class _Segment:
    __slots__ = ("closed", "played_bytes", "ready_bytes", "response", "sent_bytes", "text")

    def __init__(self, response: _Response, text: str) -> None:
        self.response = response
        self.text = text
        self.sent_bytes = 0
        self.ready_bytes = 0  # audio the TTS has produced for it, sent or not yet
        self.played_bytes = 0
        self.closed = False


class _SentChunk:
    """One chunk of audio and the mark sent after it, until Twilio echoes the mark."""

    __slots__ = ("cleared", "generation", "nbytes", "segment")

    def __init__(self, generation: int, segment: _Segment, nbytes: int) -> None:
        self.generation = generation
        self.segment = segment
        self.nbytes = nbytes
        self.cleared = False


class PlaybackTracker:
    """Tracks one call's bot audio from ``media`` + ``mark`` sent to ``mark`` echoed.

    Usage per response ``g``: ``begin_segment(g, text)``; for each TTS chunk,
    ``for chunk, name in audio_out(g, ulaw): send media(chunk); send mark(name)``;
    ``end_segment(g)``; repeat per segment. Feed every echoed mark to ``on_mark``; call ``clear()``
    when sending Twilio ``clear``.

    Memory: a chunk's record lives until its mark echoes. Per-response records (segments and
    texts) are kept for the ``MAX_RESPONSES`` most recent generations; older ones are dropped
    once drained (or explicitly with ``forget``). Queries about a dropped or never-started
    generation answer as for an empty one (0 ms, ``""``, drained).
    """

    #: how many responses' texts and counters are kept before the oldest drained ones are dropped
    MAX_RESPONSES = 16

    def __init__(self, max_chunk_bytes: int = 1600) -> None:
        """``max_chunk_bytes``: the largest ``media`` chunk in bytes of μ-law (1600 B = 200 ms).

        Raises ``ValueError`` if it is below 1.
        """
        if max_chunk_bytes < 1:
            raise ValueError(f"max_chunk_bytes must be >= 1, got {max_chunk_bytes}")
        self.max_chunk_bytes = max_chunk_bytes
        self._responses: dict[int, _Response] = {}
        # Marks awaiting their echo, in the order sent (dicts keep insertion order).
        self._chunks: dict[str, _SentChunk] = {}
        self._mark_seq = 0
        self._pending_bytes = 0  # sent, not echoed, not cleared

    # --- the sending side ---------------------------------------------------------------------

    def begin_segment(self, generation: int, text: str) -> None:
        """A new segment of response ``generation`` starts; its audio follows via ``audio_out``.

        ``text``: what the segment says (a sentence or clause). An open segment of the same
        generation is closed first.
        """
        response = self._responses.get(generation)
        if response is None:
            response = self._responses[generation] = _Response()
            self._prune(keep=generation)
        if response.open_segment is not None:
            response.open_segment.closed = True
        segment = _Segment(response, text)
        response.segments.append(segment)
        response.open_segment = segment

    def audio_out(self, generation: int, ulaw: bytes) -> list[tuple[bytes, str]]:
        """Register audio of the open segment of ``generation`` and cut it for sending.

        ``ulaw``: μ-law 8 kHz bytes, any length. Returns ``(chunk, mark_name)`` pairs in order,
        each chunk at most ``max_chunk_bytes``; send ``media(chunk)`` then ``mark(mark_name)`` for
        each. Mark names are ``f"{generation}.{n}"`` with ``n`` counting marks over the whole call,
        so they are unique per call. Empty ``ulaw`` gives ``[]``.

        Raises ``ValueError`` if ``generation`` has no open segment (``begin_segment`` missing, or
        ``end_segment`` already called).
        """
        response = self._responses.get(generation)
        segment = response.open_segment if response is not None else None
        if response is None or segment is None:
            raise ValueError(f"audio_out for generation {generation}: no open segment (call begin_segment)")
        out: list[tuple[bytes, str]] = []
        size = self.max_chunk_bytes
        for start in range(0, len(ulaw), size):
            chunk = bytes(ulaw[start : start + size])
            self._mark_seq += 1
            name = f"{generation}.{self._mark_seq}"
            self._chunks[name] = _SentChunk(generation, segment, len(chunk))
            out.append((chunk, name))
        sent = len(ulaw)
        segment.sent_bytes += sent
        response.sent_bytes += sent
        response.pending_marks += len(out)
        self._pending_bytes += sent
        return out

    def audio_ready(self, generation: int, nbytes: int) -> None:
        """The TTS produced ``nbytes`` more bytes for the open segment of ``generation``.

        Audio may be produced ahead of sending it (the sender paces itself to playout); knowing
        the segment's length so far keeps ``heard_text``'s proportion honest. No-op without an
        open segment.
        """
        response = self._responses.get(generation)
        if response is not None and response.open_segment is not None:
            response.open_segment.ready_bytes += nbytes

    def end_segment(self, generation: int) -> None:
        """The open segment of ``generation`` has all its audio. No-op if none is open."""
        response = self._responses.get(generation)
        if response is not None and response.open_segment is not None:
            response.open_segment.closed = True
            response.open_segment = None

    # --- what Twilio tells us -----------------------------------------------------------------

    def on_mark(self, name: str) -> MarkEcho | None:
        """Twilio echoed mark ``name``; returns what it meant, or ``None`` for a name we never sent
        or already saw (the caller logs it).

        Each mark accounts for its own chunk only, so echoes arriving out of order (Twilio plays in
        order, but a faulty peer might not) still count every chunk exactly once.
        """
        chunk = self._chunks.pop(name, None)
        if chunk is None:
            return None
        segment = chunk.segment
        response = segment.response
        response.pending_marks -= 1
        played = not chunk.cleared
        if played:
            self._pending_bytes -= chunk.nbytes
            segment.played_bytes += chunk.nbytes
            response.played_bytes += chunk.nbytes
        return MarkEcho(name, chunk.generation, played, response.pending_marks == 0)

    def clear(self) -> list[str]:
        """We are sending Twilio ``clear`` now: flag every pending mark as cleared.

        Their echoes (Twilio sends them right after the ``clear``) will report ``played=False``;
        marks sent after this call are normal. ``is_playing`` is ``False`` at once. Returns the
        names flagged, in the order they were sent.
        """
        names = []
        for name, chunk in self._chunks.items():
            if not chunk.cleared:
                chunk.cleared = True
                names.append(name)
        self._pending_bytes = 0
        return names

    def abandon(self, generation: int) -> int:
        """Stop waiting for the pending marks of response ``generation``: take them as lost.

        For a Twilio side that never echoes (a lost mark, a broken proxy): once the audio has had
        far more than its playing time, the session gives up on it, so ``is_playing`` and
        ``pending_ms`` stop counting it (otherwise the bot would seem to talk forever, and the
        silence timeout never fire). Its audio is not counted as played; a late echo of one of
        these marks returns ``None`` like an unknown name. Returns how many marks were abandoned.
        """
        lost = [name for name, chunk in self._chunks.items() if chunk.generation == generation]
        for name in lost:
            chunk = self._chunks.pop(name)
            chunk.segment.response.pending_marks -= 1
            if not chunk.cleared:
                self._pending_bytes -= chunk.nbytes
        return len(lost)

    # --- questions ----------------------------------------------------------------------------

    @property
    def is_playing(self) -> bool:
        """Some sent bot audio has neither been echoed as played nor cleared."""
        return self._pending_bytes > 0

    def pending_ms(self) -> int:
        """Bot audio sent and still queued at Twilio (not played, not cleared), in ms (floor)."""
        return self._pending_bytes // BYTES_PER_MS

    def sent_ms(self, generation: int) -> int:
        """Audio of response ``generation`` handed out by ``audio_out``, in ms (floor)."""
        response = self._responses.get(generation)
        return response.sent_bytes // BYTES_PER_MS if response is not None else 0

    def played_ms(self, generation: int) -> int:
        """Audio of response ``generation`` confirmed played by mark echoes, in ms (floor)."""
        response = self._responses.get(generation)
        return response.played_bytes // BYTES_PER_MS if response is not None else 0

    def is_drained(self, generation: int) -> bool:
        """No mark of response ``generation`` is waiting for its echo (played or cleared).

        This knows only about audio already sent: a response whose TTS is still producing audio
        can be drained between chunks, so combine it with "the response is complete".
        """
        response = self._responses.get(generation)
        return response is None or response.pending_marks == 0

    def heard_text(self, generation: int) -> str:
        """The text of response ``generation`` the caller has heard.

        Segments are taken in order: each whose audio fully played contributes its whole text;
        the first one not fully played contributes the leading words that fit in the fraction of
        its audio played, and stops the text. A segment with no audio counts as heard once it is
        closed and everything before it was heard.

        Approximation: speech is assumed to advance evenly through a segment's characters, so the
        fraction played by bytes is applied to the segment's length in characters, and only words
        that end within that length are kept (never part of a word; punctuation stays with its
        word). The fraction is of the segment's audio produced so far (``audio_ready``), sent or
        not; for a segment still being synthesized it overstates what was heard while TTS lags
        behind playback. Segment texts are stripped and joined
        with single spaces.
        """
        response = self._responses.get(generation)
        if response is None:
            return ""
        parts: list[str] = []
        for segment in response.segments:
            text = segment.text.strip()
            total = max(segment.sent_bytes, segment.ready_bytes)
            if total == 0:
                if not segment.closed:
                    break
                if text:
                    parts.append(text)
                continue
            played = min(segment.played_bytes, total)
            if played == total:
                if text:
                    parts.append(text)
                continue
            # Keep words whose end lies within played/total of the text (integer arithmetic).
            limit = played * len(text)
            cut = 0
            for word in _WORD.finditer(text):
                if word.end() * total > limit:
                    break
                cut = word.end()
            if cut:
                parts.append(text[:cut])
            break
        return " ".join(parts)

    # --- memory -------------------------------------------------------------------------------

    def forget(self, generation: int) -> None:
        """Drop the texts and counters of response ``generation`` (after reading what you need).

        Marks of it still awaiting their echo stay tracked, so ``is_playing``/``pending_ms`` stay
        true and their echoes still return a ``MarkEcho``.
        """
        self._responses.pop(generation, None)

    def _prune(self, keep: int) -> None:
        """Drop the oldest drained responses beyond ``MAX_RESPONSES``, never ``keep``.

        Responses still holding pending marks are kept whatever their age: that is bounded by the
        audio Twilio has queued.
        """
        excess = len(self._responses) - self.MAX_RESPONSES
        if excess <= 0:
            return
        drained = [g for g, r in self._responses.items() if r.pending_marks == 0 and g != keep]
        for generation in drained[:excess]:
            del self._responses[generation]

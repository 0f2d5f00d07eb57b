"""Cut streamed LLM text into pieces to speak: sentences, or clauses when waiting would cost time.

TTS can start on the first piece while the model is still writing the rest, so the caller hears
the bot after the first sentence or clause rather than after the whole reply. A clause boundary
(``,`` ``;`` ``:`` or a dash) only ends a piece once it holds ``min_clause_chars`` characters: very
short pieces sound choppy and cost a TTS request each.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)")
_CLAUSE_END = re.compile(r"(?:[,;:]|\s[-–—])(?=\s)")


class SentenceSegmenter:
    """Feed text deltas with ``push``; it returns the pieces that are complete. ``flush`` the rest."""

    def __init__(self, min_clause_chars: int = 40, first_clause_chars: int = 20) -> None:
        self.min_clause_chars = min_clause_chars
        self.first_clause_chars = first_clause_chars
        self._buf = ""
        self._emitted = 0

    def push(self, delta: str) -> list[str]:
        """Add a text delta; return the pieces (stripped, non-empty) it completed, in order."""
        self._buf += delta
        pieces = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            piece, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if piece:
                pieces.append(piece)
                self._emitted += 1
        return pieces

    def flush(self) -> list[str]:
        """The text left when the reply is complete (at most one piece)."""
        piece, self._buf = self._buf.strip(), ""
        return [piece] if piece else []

    def _find_cut(self) -> int | None:
        m = _SENTENCE_END.search(self._buf)
        if m:
            return m.end()
        # The first piece may be shorter: getting the first audio out early matters most.
        threshold = self.first_clause_chars if self._emitted == 0 else self.min_clause_chars
        for m in _CLAUSE_END.finditer(self._buf):
            if m.end() >= threshold:
                return m.end()
        return None

"""Benchmark instrument: per-frame handling delay of ``media`` messages (``MEDIA_FRAME_TIMING_FILE``).

Used only by the consumer when ``MEDIA_FRAME_TIMING_FILE`` is set (``bench.calls_per_process``);
with the setting empty the consumer never creates one, so a live call pays one attribute check
per frame.
"""

from __future__ import annotations

import json
import os
import re
import time
from array import array


class FrameTiming:
    """How long each ``media`` frame took from the client's send to the end of its handling.

    The benchmark client appends ``"bench_ns": <time.monotonic_ns() at send>`` to each ``media``
    message (the parser ignores unknown fields). After ``session.on_media`` returns, ``record``
    keeps ``(bench_ns, monotonic_ns() - bench_ns)`` in ns; CLOCK_MONOTONIC is one clock for every
    process of a Linux machine. Frames without the field are not recorded. ``write`` appends one
    JSON line per call to the file: ``{"pid", "call_sid", "sent_ns": [...], "delay_ns": [...]}``.
    """

    KEY = '"bench_ns":'
    _DIGITS = re.compile(r"\d+")

    def __init__(self, path: str) -> None:
        self.path = path
        self.sent_ns = array("q")
        self.delay_ns = array("q")

    def record(self, text: str | None) -> None:
        """Note one handled frame, if its message (``text``) carries ``bench_ns``."""
        done = time.monotonic_ns()
        i = text.rfind(self.KEY) if text is not None else -1
        if text is None or i < 0:
            return
        digits = self._DIGITS.match(text, i + len(self.KEY))
        if digits is not None:
            sent = int(digits.group())
            self.sent_ns.append(sent)
            self.delay_ns.append(done - sent)

    def write(self, call_sid: str) -> None:
        """Append this call's samples to the file (once; nothing if none were recorded).

        Raises ``OSError`` if the file cannot be opened or written.
        """
        if not self.sent_ns:
            return
        line = json.dumps(
            {
                "pid": os.getpid(),
                "call_sid": call_sid,
                "sent_ns": self.sent_ns.tolist(),
                "delay_ns": self.delay_ns.tolist(),
            }
        )
        # One write() on an O_APPEND descriptor: lines of several calls never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
        self.sent_ns = array("q")
        self.delay_ns = array("q")

"""The Deepgram fake (listen WebSocket + speak REST) on 127.0.0.1, for the load benchmarks.

``tests.fakes.deepgram.FakeDeepgram`` is the protocol-faithful fake the tests use; here it is
configured for load:

- ``cached_tts()``: the fake synthesises its speech-like buzz with numpy for every request
  (tens of ms of CPU for a 10 s reply). Under load every call asks for the same few sentences
  (greeting, the scripted agent's answers), so the synthesis is cached per text; the bytes on the
  wire are unchanged.
- ``pacing``: ``"default"`` keeps the fake's own pacing (100 ms of audio every 5 ms, i.e. 20x
  real time, first byte at once); ``"realtime"`` sends 100 ms of audio every 100 ms (a TTS that
  streams at speaking pace); ``"zero"`` sends the whole body at once (part 3).

``python -m bench.fake_services`` runs it in a process of its own (so its work does not share a
GIL with the load generator), prints one JSON line ``{"env": {...}, "pid": ...}`` with the
settings a server needs, and stops when its stdin closes.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys

from tests.fakes import deepgram as fake_deepgram_module
from tests.fakes.deepgram import FakeDeepgram

#: What the fake "hears" in every caller utterance. The scripted agent has no FAQ entry for it, so
#: it answers with its fallback (about 10 s of speech at the fake's 60 ms per character).
DEFAULT_TRANSCRIPT = "hello from the fake deepgram"

_uncached_synth = fake_deepgram_module.synth_voice_ulaw


def cached_tts() -> None:
    """Cache the fake's TTS synthesis per (text, ms per char); idempotent."""
    if getattr(fake_deepgram_module.synth_voice_ulaw, "cache_info", None) is None:
        fake_deepgram_module.synth_voice_ulaw = functools.lru_cache(maxsize=256)(_uncached_synth)


def start_deepgram(pacing: str = "default") -> FakeDeepgram:
    """A running ``FakeDeepgram`` (background thread) set up for load; see the module docstring."""
    cached_tts()
    fake = FakeDeepgram()
    fake.default_transcript = DEFAULT_TRANSCRIPT
    fake.idle_timeout_s = 60.0
    if pacing == "zero":
        fake.speak_ttfb_s = 0.0
        fake.speak_chunk_interval_s = 0.0
        fake.speak_chunk_bytes = 1 << 20
    elif pacing == "realtime":
        fake.speak_chunk_interval_s = 0.1  # with the default 800-byte chunks: 100 ms of audio
    elif pacing != "default":
        raise ValueError(f"unknown pacing {pacing!r}")
    return fake.start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pacing", choices=("default", "realtime", "zero"), default="default")
    args = parser.parse_args(argv)
    # A TTS request cancelled by a barge-in ends the fake's handler mid-read; aiohttp logs that
    # with a traceback, which is noise here.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    fake = start_deepgram(args.pacing)
    # The fake keeps a record of every session for tests; under load that is memory only.
    print(json.dumps({"env": fake.env(), "pid": os.getpid()}), flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin (or dies)
    finally:
        fake.stop()


if __name__ == "__main__":
    main()

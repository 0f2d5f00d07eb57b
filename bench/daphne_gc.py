"""The ``daphne`` command with the garbage collector watched, for ``bench.calls_per_process --gc``.

``python -m bench.daphne_gc <log file> <log|freeze> <daphne arguments...>``

- Every collection's pause is timed (``gc.callbacks``) and appended to the log file as
  ``<monotonic ns at its end> <generation> <pause ms>``, one line each.
- ``freeze``: before Daphne starts, the ASGI application module (the last argument,
  ``module:attribute``) is imported, a full collection runs, then ``gc.freeze()`` moves every
  object that exists (Django, the project, its libraries) to the permanent generation, which later
  collections never scan. This is what the ``gc.freeze()`` at the end of ``voicebot/asgi.py`` does
  since commit c4c321f (the experiment in BENCHMARKS.md part 2 ran before it). Because the
  project's ASGI module now freezes on import, ``log`` mode on it no longer gives a no-freeze
  baseline: for that, run it on a tree before c4c321f.

Otherwise Daphne runs exactly as its own command does (``CommandLineInterface().run(args)``).
"""

from __future__ import annotations

import gc
import importlib
import sys
import time

from daphne.cli import CommandLineInterface


def main() -> None:
    log_path, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    log = open(log_path, "a", buffering=1)  # open for the life of the process
    started: list[float] = [0.0]

    def watch(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pause_ms = (time.perf_counter() - started[0]) * 1000
            log.write(f"{time.monotonic_ns()} {info['generation']} {pause_ms:.3f}\n")

    if mode == "freeze":
        importlib.import_module(args[-1].split(":", 1)[0])
        gc.collect()
        gc.freeze()
    elif mode != "log":
        raise SystemExit(f"mode must be log or freeze, not {mode!r}")
    gc.callbacks.append(watch)
    CommandLineInterface().run(args)


if __name__ == "__main__":
    main()

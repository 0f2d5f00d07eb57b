"""The ``daphne`` command under cProfile, for ``bench.calls_per_process --profile``.

``python -m bench.profile_daphne <stats file> <daphne arguments...>``: runs Daphne's own command
line with the profiler on and writes the ``pstats`` file when the server stops (SIGTERM stops the
Twisted reactor normally). cProfile slows the server down, so only the shares of CPU time between
functions mean anything, not the absolute figures.
"""

from __future__ import annotations

import cProfile
import sys

from daphne.cli import CommandLineInterface


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        CommandLineInterface().run(args)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()

"""Benchmarks (not part of the test suite): each prints a table and writes its figures as JSON.

    python -m bench.barge_in [--quick]    # part 1: barge-in accuracy and latency on real speech

Parts 2 (calls per process) and 3 (pipeline overhead) are still to come; ``bench.common`` holds
what every benchmark shares (machine description, JSON output, tables). BENCHMARKS.md at the
repository root records the commands, the machine and the results.
"""

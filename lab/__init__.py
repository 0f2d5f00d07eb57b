"""Audio lab: tools that turn real recordings into phone-line test audio (tests and benchmarks only).

Not imported by the running application; it needs the dev requirements (numpy, scipy, soxr).
"""

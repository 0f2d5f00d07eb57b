"""The built-in Twilio emulator: an offline stand-in for the carrier and the person who answers.

- ``stream.py``, ``playout.py``: Twilio's end of a bidirectional Media Stream (20 ms media pacing,
  real-time playout of the bot's audio, marks, ``clear``, both legs on the call clock).
- ``call.py``: one emulated phone call: status callbacks, the TwiML's ``<Connect><Stream>``, the
  callee's scenario, hang-up and redirect, the stereo recording.
- ``exchange.py``: every emulated call of the process, on one background event loop.
- ``transport.py``: how the emulator reaches the server (the network, or an ASGI app in-process).
- ``scenario.py``, ``scenarios/``, ``recordings/``: scripted callers speaking real recordings.
- ``live.py``: the live output of ``manage.py demo`` and ``manage.py place_call``.

``calls/carriers/emulator.py`` is the carrier built on it.
"""

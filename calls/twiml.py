"""TwiML documents for a call, built with twilio-python's ``VoiceResponse`` classes.

* ``stream_twiml``: the outbound call's document, a bidirectional Media Stream
  ``<Connect><Stream url="wss://PUBLIC_HOST/media-stream">`` carrying our ``call_id``.
* ``transfer_twiml``: the hand-off, an optional ``<Say>`` then ``<Dial callerId=…><Number>``.

Twilio facts (twilio.com/docs/voice/twiml/stream): the stream ``url`` must be an absolute ``wss://``
URL without a query string; custom values travel as ``<Parameter>`` children and arrive in the
``start`` message's ``customParameters``. Inline TwiML on ``calls.create`` is limited to 4000
characters.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from twilio.twiml.voice_response import VoiceResponse

#: WebSocket path the Media Stream connects to (``media_ws/routing.py``).
MEDIA_STREAM_PATH = "/media-stream"


def media_stream_url() -> str:
    """``wss://<host[:port]>/media-stream`` for the host (and any path prefix) of ``PUBLIC_BASE_URL``.

    Always ``wss``: Twilio accepts no other scheme for ``<Stream url>``.
    """
    parts = urlsplit(settings.PUBLIC_BASE_URL)
    return f"wss://{parts.netloc}{parts.path.rstrip('/')}{MEDIA_STREAM_PATH}"


def stream_twiml(call_id: str) -> str:
    """The TwiML of an outbound bot call: connect the answered call to our Media Stream.

    Returns e.g. ``<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream
    url="wss://example.com/media-stream"><Parameter name="call_id" value="<uuid>" /></Stream>
    </Connect></Response>`` (one line). ``call_id`` is ``Call.id``.
    """
    response = VoiceResponse()
    stream = response.connect().stream(url=media_stream_url())
    stream.parameter(name="call_id", value=str(call_id))
    return str(response)


def transfer_twiml(to: str, *, caller_id: str, say: str | None = None) -> str:
    """The TwiML that hands a live call to a person: ``<Say>say</Say>`` (omitted when ``say`` is
    ``None`` or empty) then ``<Dial callerId="caller_id"><Number>to</Number></Dial>``.

    ``to`` and ``caller_id`` are E.164; Twilio requires ``callerId`` to be one of the account's
    numbers or a verified caller ID, so pass the call's own ``From``.
    """
    response = VoiceResponse()
    if say:
        response.say(say)
    dial = response.dial(caller_id=caller_id)
    dial.number(to)
    return str(response)

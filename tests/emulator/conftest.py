"""Fixtures of the emulator tests: hermetic settings and an exchange wired to the app in-process.

``inprocess_exchange`` makes ``EmulatorCarrier`` run its calls against ``voicebot.asgi.application``
in the exchange's own event loop (httpx's ASGI transport for the status callbacks, Channels'
``WebsocketCommunicator`` for the media stream): the whole product and the emulator, real code on
both sides, with no sockets. The end-to-end tests (``tests/e2e``) do the same over a real Daphne.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from calls.emulator.exchange import Exchange, set_exchange
from calls.emulator.transport import AsgiTransport

PUBLIC_BASE_URL = "http://testserver"
FROM_NUMBER = "+15005550006"


@pytest.fixture(autouse=True)
def emulator_settings(settings: Any, tmp_path: Any) -> Any:
    """Known settings whatever .env says: the emulator carrier and offline engines, no Twilio
    credentials, recordings under a temporary MEDIA_ROOT, a short ring."""
    settings.CARRIER = "emulator"
    settings.TWILIO_ACCOUNT_SID = ""
    settings.TWILIO_AUTH_TOKEN = ""
    settings.TWILIO_FROM_NUMBER = FROM_NUMBER
    settings.PUBLIC_BASE_URL = PUBLIC_BASE_URL
    settings.HUMAN_AGENT_NUMBER = ""
    settings.DIAL_ALLOWED_DESTINATIONS = []
    settings.STT_ENGINE = "offline"
    settings.LLM_ENGINE = "scripted"
    settings.TTS_ENGINE = "offline"
    settings.DEEPGRAM_API_KEY = ""
    settings.GROQ_API_KEY = ""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.EMULATOR_ANSWER_AFTER_MS = 200
    settings.EMULATOR_MAX_CALL_S = 120.0
    settings.EMULATOR_SCENARIO_DIRS = []
    settings.EMULATOR_DEFAULT_SCENARIO = "default"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"dial": "1000/min"}}
    cache.clear()
    yield settings
    cache.clear()


@pytest.fixture
def inprocess_exchange() -> Iterator[Exchange]:
    """An exchange whose calls reach the ASGI app in-process; ``EmulatorCarrier`` uses it."""
    from voicebot.asgi import application

    exchange = Exchange(AsgiTransport(application))
    previous = set_exchange(exchange)
    try:
        yield exchange
    finally:
        set_exchange(previous)
        exchange.close()


@pytest.fixture
def api_client(django_user_model: Any) -> Any:
    """An API client authenticated with a DRF token."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    user = django_user_model.objects.create_user("emulator-tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client

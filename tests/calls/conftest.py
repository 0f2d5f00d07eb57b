"""Fixtures of the call-control tests: hermetic settings, API clients, the fake Twilio REST API,
and a channel subscribed to a call's group."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from calls.models import Call, CallEvent, CallStatus, EventKind, Turn, TurnRole
from tests.fakes.twilio_rest import FakeTwilioREST, twilio_rest  # noqa: F401  (fixture)

PUBLIC_BASE_URL = "https://voice.example.com"
FROM_NUMBER = "+14155550100"  # the default caller ID in these tests (US, country code 1)
TO_NUMBER = "+14155550142"


@pytest.fixture(autouse=True)
def call_settings(settings: Any) -> Any:
    """Known settings whatever the developer's .env says: emulator carrier, no Twilio credentials,
    an https public URL, the in-memory channel layer and a generous dial rate."""
    settings.CARRIER = "emulator"
    settings.TWILIO_ACCOUNT_SID = ""
    settings.TWILIO_AUTH_TOKEN = ""
    settings.TWILIO_API_BASE_URL = ""
    settings.TWILIO_TIMEOUT_S = 5.0
    settings.TWILIO_FROM_NUMBER = FROM_NUMBER
    settings.PUBLIC_BASE_URL = PUBLIC_BASE_URL
    settings.HUMAN_AGENT_NUMBER = ""
    settings.DIAL_ALLOWED_DESTINATIONS = []
    settings.TRANSFER_ANNOUNCEMENT = "Please hold while I connect you."
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"dial": "1000/min"},
    }
    cache.clear()  # throttle history
    yield settings
    cache.clear()


@pytest.fixture
def twilio(settings: Any, twilio_rest: FakeTwilioREST) -> FakeTwilioREST:  # noqa: F811
    """The Twilio carrier, pointed at a running fake Twilio REST API."""
    settings.CARRIER = "twilio"
    settings.TWILIO_ACCOUNT_SID = twilio_rest.account_sid
    settings.TWILIO_AUTH_TOKEN = twilio_rest.auth_token
    settings.TWILIO_API_BASE_URL = twilio_rest.base_url
    return twilio_rest


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("dialer")  # no password: no slow hashing


@pytest.fixture
def token(user: Any) -> Token:
    return Token.objects.create(user=user)


@pytest.fixture
def api(token: Token) -> APIClient:
    """An API client authenticated with ``Authorization: Token <key>``."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


def dial(api: APIClient, **body: Any) -> Any:
    """``POST /calls/outbound`` as JSON (``to`` defaults to ``TO_NUMBER``)."""
    body.setdefault("to", TO_NUMBER)
    return api.post("/calls/outbound", body, format="json")


class GroupListener:
    """A channel subscribed to group ``call_<CallSid>`` on the configured channel layer."""

    def __init__(self, group: str, layer: Any = None) -> None:
        self.layer = layer if layer is not None else get_channel_layer()
        self.group = group
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(group, self.channel)

    def receive(self, timeout_s: float = 2.0) -> dict[str, Any]:
        async def _receive() -> dict[str, Any]:
            return await asyncio.wait_for(self.layer.receive(self.channel), timeout_s)

        return async_to_sync(_receive)()

    async def areceive(self, timeout_s: float = 2.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.layer.receive(self.channel), timeout_s)

    def close(self) -> None:
        async_to_sync(self.layer.group_discard)(self.group, self.channel)


@pytest.fixture
def listen() -> Iterator[Callable[[str], GroupListener]]:
    """``listen(call_sid)`` subscribes a channel to ``call_<call_sid>`` and returns it."""
    listeners: list[GroupListener] = []

    def subscribe(call_sid: str) -> GroupListener:
        listener = GroupListener(f"call_{call_sid}")
        listeners.append(listener)
        return listener

    yield subscribe
    for listener in listeners:
        listener.close()


def make_call(status: str = CallStatus.COMPLETED, sid: str | None = None, **fields: Any) -> Call:
    """A call row as the carrier callbacks would leave it (``sid=None``: a fresh CallSid)."""
    values = {"from_number": FROM_NUMBER, "to_number": TO_NUMBER, "carrier": "emulator", **fields}
    return Call.objects.create(
        call_sid=sid if sid is not None else "CA" + uuid.uuid4().hex, status=status, **values
    )


@pytest.fixture
def conversation() -> Call:
    """A finished call with a caller turn, an interrupted bot turn, and events incl. two barge-ins."""
    call = make_call(duration_s=31, greeting="Hello!", metadata={"ticket": "T-1"})
    start = timezone.now()
    Turn.objects.create(
        call=call, index=0, role=TurnRole.CALLER, text="When is my appointment?", heard_text=""
    )
    Turn.objects.create(
        call=call,
        index=1,
        role=TurnRole.BOT,
        text="Your appointment is on Tuesday at ten, and please bring your card.",
        heard_text="Your appointment is on Tuesday at ten,",
        interrupted=True,
        speech_end_ms=5200,
        stt_final_ms=5350,
        llm_first_token_ms=5600,
        tts_first_byte_ms=5750,
        first_audio_ms=5790,
        voice_to_voice_ms=590,
    )
    for i, kind in enumerate(
        [EventKind.STREAM_START, EventKind.BARGE_IN, EventKind.BARGE_IN, EventKind.STATUS]
    ):
        CallEvent.objects.create(call=call, kind=kind, at=start + timedelta(seconds=i), audio_ms=i * 1000)
    return call

"""A whole conversation on the real engines' SDKs, each pointed at its fake on 127.0.0.1.

Deepgram (listen WebSocket + speak REST), Groq (SSE chat completions) and Twilio REST are
protocol-faithful fakes; the call is placed through ``calls.services`` with the Twilio carrier,
and the media stream is driven as Twilio drives it (signed handshake, real-time 20 ms frames,
real-time playout, marks and clear) with real recorded speech.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from twilio.request_validator import RequestValidator

from calls.emulator.stream import EmulatedMediaStream
from tests.fakes.deepgram import FakeDeepgram, fake_deepgram  # noqa: F401  (fixture)
from tests.fakes.groq import FakeGroq, fake_groq  # noqa: F401  (fixture)
from tests.fakes.twilio_rest import FakeTwilioREST, twilio_rest  # noqa: F401  (fixture)
from tests.live.conftest import twilio_stream

PUBLIC_BASE_URL = "https://voice.example.com"
FROM_NUMBER = "+14155550100"
TO_NUMBER = "+14155550142"
AGENT_NUMBER = "+14155550199"


def call_log(call_id: Any) -> tuple[Any, list[Any], list[Any]]:
    """The stored call, its turns (by index) and its events (by time); run with ``db()``."""
    from calls.models import Call

    call = Call.objects.get(pk=call_id)
    return call, list(call.turns.order_by("index")), list(call.events.order_by("at", "id"))


async def wait_for(predicate: Any, timeout_s: float = 20.0) -> None:
    """Poll ``predicate`` every 20 ms until it is true; ``TimeoutError`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


class Conversation:
    """The fakes of one test, and a way to place a call and open its media stream."""

    def __init__(self, deepgram: FakeDeepgram, groq: FakeGroq, twilio: FakeTwilioREST) -> None:
        self.deepgram, self.groq, self.twilio = deepgram, groq, twilio

    async def place_call(self, greeting: str = "Hi, this is the clinic.") -> Any:
        from calls import services

        call = await sync_to_async(services.place_call)(to=TO_NUMBER, greeting=greeting)
        self.twilio.set_status(call.call_sid, "in-progress")  # Twilio answered
        return call

    @contextlib.asynccontextmanager
    async def stream(self, call: Any, *, lose_marks: bool = False) -> AsyncIterator[EmulatedMediaStream]:
        """The call's media stream, opened as Twilio opens it (signed wss:// handshake).

        ``lose_marks``: no mark echo ever reaches the bot (a Twilio side that loses them)."""
        host = PUBLIC_BASE_URL.split("://", 1)[1]
        signature = RequestValidator(self.twilio.auth_token).compute_signature(
            f"wss://{host}/media-stream", {}
        )
        async with twilio_stream(
            headers=[(b"x-twilio-signature", signature.encode())],
            call_sid=call.call_sid,
            account_sid=self.twilio.account_sid,
            custom_parameters={"call_id": str(call.id)},
        ) as stream:
            if lose_marks:
                send_raw = stream._send_raw

                async def send_all_but_marks(text: str) -> None:
                    if json.loads(text).get("event") != "mark":
                        await send_raw(text)

                stream._send_raw = send_all_but_marks
            yield stream

    def updates(self, call_sid: str) -> list[Any]:
        """Twilio REST updates of the live call (hang-up or redirect)."""
        return self.twilio.requests_to("POST", f"/Calls/{call_sid}.json")


@pytest.fixture
def conversation(
    settings: Any,
    fake_deepgram: FakeDeepgram,  # noqa: F811
    fake_groq: FakeGroq,  # noqa: F811
    twilio_rest: FakeTwilioREST,  # noqa: F811
) -> Conversation:
    settings.CARRIER = "twilio"
    settings.TWILIO_ACCOUNT_SID = twilio_rest.account_sid
    settings.TWILIO_AUTH_TOKEN = twilio_rest.auth_token
    settings.TWILIO_API_BASE_URL = twilio_rest.base_url
    settings.TWILIO_FROM_NUMBER = FROM_NUMBER
    settings.PUBLIC_BASE_URL = PUBLIC_BASE_URL
    settings.HUMAN_AGENT_NUMBER = AGENT_NUMBER
    settings.DIAL_ALLOWED_DESTINATIONS = []
    settings.STT_ENGINE = settings.TTS_ENGINE = "deepgram"
    settings.LLM_ENGINE = "groq"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return Conversation(fake_deepgram, fake_groq, twilio_rest)


@pytest.fixture(autouse=True)
async def _close_sdk_clients() -> AsyncIterator[None]:
    """SDK clients are cached per event loop; close this test's before its loop ends."""
    yield
    from media_ws.providers.clients import aclose_clients

    await aclose_clients()

"""End to end through a real Daphne on 127.0.0.1: a ``websockets`` client plays Twilio.

The server is the ``daphne`` command in its own process, on the test database; the client speaks
the Media Streams protocol with a signed handshake, barges in on the greeting with real recorded
speech and hangs up. Everything is then read back from the database.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import websockets
import websockets.exceptions
from twilio.request_validator import RequestValidator

from calls.emulator.stream import EmulatedMediaStream
from calls.models import Call, EventKind
from tests.fakes.daphne_server import daphne_on_test_db
from tests.live.conftest import fixture_audio, labelled_onsets

TOKEN = "e2e-auth-token"
PUBLIC = "https://voice.example.test"

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server():
    with daphne_on_test_db(TWILIO_AUTH_TOKEN=TOKEN, PUBLIC_BASE_URL=PUBLIC) as server:
        yield server


def test_a_forged_handshake_gets_http_403_from_daphne(server):
    async def connect() -> None:
        await websockets.connect(
            server.ws_url + "/media-stream", additional_headers={"X-Twilio-Signature": "forged"}
        )

    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        asyncio.run(connect())
    assert refused.value.response.status_code == 403


def test_twilio_client_barges_in_on_the_greeting_through_daphne(server):
    signature = RequestValidator(TOKEN).compute_signature(f"wss://{PUBLIC.split('://')[1]}/media-stream", {})
    result = asyncio.run(twilio_call(server.ws_url + "/media-stream", signature))
    call = wait_for_the_call_log(result["call_sid"], server)

    assert result["clears"], "no clear reached the client"
    true_onset = result["speech_start"] + labelled_onsets("clone_test")[0][0]
    assert result["clears"][0] - true_onset <= 100 + 20  # the bound, plus one 20 ms emulator tick
    events = list(call.events.order_by("at", "id"))
    barge = next(e for e in events if e.kind == EventKind.BARGE_IN)
    assert barge.data["detection_latency_ms"] <= 100 and barge.data["decided_ms"] - true_onset <= 100
    turns = list(call.turns.order_by("index"))
    greeting = turns[0]
    assert greeting.role == "bot" and greeting.interrupted
    assert greeting.text.split()[: len(greeting.heard_text.split())] == greeting.heard_text.split()
    assert len(greeting.heard_text.split()) < len(greeting.text.split())
    assert any(t.role == "caller" and t.text for t in turns)
    assert call.status == "completed" and call.end_reason == "caller-hangup"
    assert call.direction == "inbound"  # Twilio's callSid was unknown to us: an inbound call's row


async def twilio_call(url: str, signature: str) -> dict:
    async with websockets.connect(url, additional_headers={"X-Twilio-Signature": signature}) as ws:

        async def receive() -> str | None:
            try:
                message = await ws.recv()
            except websockets.exceptions.ConnectionClosed:
                return None
            return message if isinstance(message, str) else message.decode()

        stream = EmulatedMediaStream(ws.send, receive)
        runner = asyncio.create_task(stream.run())
        started = await stream.wait_bot_speaking(timeout_s=20)
        await stream.wait_clock(started + 1200)
        speech_start = stream.clock_ms
        end = await stream.say(fixture_audio("clone_test"))
        await stream.wait_clock(end + 4000)  # the bot answers meanwhile
        await stream.hang_up()
        await ws.close()
        await asyncio.wait_for(runner, 10)
    return {"call_sid": stream.call_sid, "clears": stream.log.clears, "speech_start": speech_start}


def wait_for_the_call_log(call_sid: str, server) -> Call:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        call = Call.objects.filter(call_sid=call_sid).first()
        if call is not None and call.events.filter(kind=EventKind.STREAM_STOP).exists():
            return call
        time.sleep(0.2)
    raise AssertionError(f"the server never finished logging call {call_sid}:\n{server.log()[-3000:]}")

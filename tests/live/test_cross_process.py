"""Control messages reach a live call on another process through the Redis channel layer.

The media stream is served by a daphne subprocess; the hang-up is asked for from this test process
(as the API, a management command or another server would) through ``calls.services``, which
notifies group ``call_<CallSid>`` on the shared Redis channel layer.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from urllib.parse import urlsplit

import pytest
import websockets
import websockets.exceptions
from asgiref.sync import sync_to_async

from calls import services
from calls.emulator.stream import EmulatedMediaStream
from calls.models import Call, CallStatus, EventKind
from tests.conftest import need_service
from tests.fakes.daphne_server import daphne_on_test_db

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_layer(settings):
    parts = urlsplit(REDIS_URL)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=1).close()
    except OSError:
        need_service(f"Redis is not reachable at {REDIS_URL}")
    prefix = f"vbtest{uuid.uuid4().hex[:8]}"  # this test's own keys, whoever else uses the server
    settings.REDIS_URL = REDIS_URL
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": prefix},
        }
    }
    return prefix


def test_an_api_hang_up_reaches_the_call_on_another_process(redis_layer):
    call = Call.objects.create(
        call_sid="CA" + uuid.uuid4().hex, status=CallStatus.IN_PROGRESS, carrier="emulator"
    )
    with daphne_on_test_db(
        REDIS_URL=REDIS_URL, CHANNEL_LAYER_PREFIX=redis_layer, CARRIER="emulator"
    ) as server:
        closed_after_s = asyncio.run(hang_up_from_here(server.ws_url + "/media-stream", call))
        deadline = time.monotonic() + 15
        while not call.events.filter(kind=EventKind.STREAM_STOP).exists():
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.2)
    assert closed_after_s < 3.0  # the server closed the stream on the group message
    call.refresh_from_db()
    assert call.end_reason == "api-hangup"
    assert call.events.filter(kind=EventKind.HANGUP).exists()


async def hang_up_from_here(url: str, call: Call) -> float:
    async with websockets.connect(url) as ws:

        async def receive() -> str | None:
            try:
                message = await ws.recv()
            except websockets.exceptions.ConnectionClosed:
                return None
            return message if isinstance(message, str) else message.decode()

        stream = EmulatedMediaStream(ws.send, receive, call_sid=call.call_sid)
        runner = asyncio.create_task(stream.run())
        await stream.wait_bot_speaking(timeout_s=20)
        await asyncio.sleep(0.5)  # the session has joined its group by now (it is speaking)
        asked = time.monotonic()
        await sync_to_async(services.hangup_call)(call)
        await asyncio.wait_for(stream.closed.wait(), 10)
        closed_after = time.monotonic() - asked
        await asyncio.wait_for(runner, 10)
    return closed_after

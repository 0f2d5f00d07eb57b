"""The consumer's per-frame path: no Channels database hop, no query per frame, and the
channel-layer control messages of ``calls.services`` reach the live stream.

Frames are sent through Channels' WebsocketCommunicator to the real ASGI app; Twilio's side is
``TwilioStreamWriter``. Only third-party functions are wrapped (with counters), never our code.
"""

from __future__ import annotations

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connection, connections
from django.db.backends.signals import connection_created

from calls.emulator.stream import new_sid
from calls.models import Call
from media_ws.protocol import TwilioStreamWriter
from tests.live.conftest import db

pytestmark = pytest.mark.django_db(transaction=True)

SILENCE = b"\xff" * 160  # 20 ms of μ-law silence: no barge-in


async def open_call() -> tuple[WebsocketCommunicator, TwilioStreamWriter]:
    """A started stream whose session is running (the first greeting frame has arrived)."""
    from voicebot.asgi import application

    comm = WebsocketCommunicator(application, "/media-stream")
    assert (await comm.connect(timeout=5))[0]
    writer = TwilioStreamWriter(new_sid("MZ"), new_sid("CA"), new_sid("AC"))
    await comm.send_to(text_data=writer.connected())
    await comm.send_to(text_data=writer.start({}))
    assert '"event":"media"' in (await comm.receive_from(timeout=15)).replace(" ", "")
    return comm, writer


async def wait_closed(comm: WebsocketCommunicator, timeout_s: float = 15) -> dict:
    while True:
        out = await comm.receive_output(timeout=timeout_s)
        if out["type"] == "websocket.close":
            return out


async def end_call(comm: WebsocketCommunicator, writer: TwilioStreamWriter) -> None:
    await comm.send_to(text_data=writer.stop())
    await wait_closed(comm)
    await comm.send_input({"type": "websocket.disconnect", "code": 1000})
    await comm.wait(timeout=10)


async def test_media_frames_skip_channels_per_message_close_old_connections_hop(monkeypatch):
    import channels.consumer

    calls = 0
    original = channels.consumer.aclose_old_connections

    async def counted() -> None:
        nonlocal calls
        calls += 1
        await original()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    comm, writer = await open_call()
    before = calls
    for k in range(50):
        await comm.send_to(text_data=writer.media(SILENCE, k * 20))
    await comm.send_to(text_data=writer.stop())
    await wait_closed(comm)  # every frame before stop has been handled
    assert calls == before, f"{calls - before} database-connection hops for 50 frames"
    await comm.send_input({"type": "websocket.disconnect", "code": 1000})
    await comm.wait(timeout=10)


@pytest.mark.parametrize("frames", [1000])
async def test_queries_do_not_scale_with_the_number_of_frames(frames):
    queries: list[str] = []

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    def install(sender, connection, **kwargs) -> None:
        if count not in connection.execute_wrappers:
            connection.execute_wrappers.append(count)

    # Every ORM call of the consumer goes through database_sync_to_async, which opens a fresh
    # connection (CONN_MAX_AGE=0); each gets the counter, in whatever thread it runs.
    connection_created.connect(install)
    try:
        comm, writer = await open_call()
        await db(connections.close_all)
        start = len(queries)
        for k in range(frames):
            await comm.send_to(text_data=writer.media(SILENCE, 20 * k))
        await comm.send_to(text_data=writer.stop())
        await wait_closed(comm)
        during = queries[start:]
        await comm.send_input({"type": "websocket.disconnect", "code": 1000})
        await comm.wait(timeout=10)
    finally:
        connection_created.disconnect(install)
        for conn in connections.all():
            if count in conn.execute_wrappers:
                conn.execute_wrappers.remove(count)
    # The frames plus the shutdown write (the background writer's batches): a per-frame query
    # would give at least ``frames``.
    assert during, "the counter saw no query at all: it is not measuring"
    assert len(during) < frames / 20, f"{len(during)} queries for {frames} frames"
    assert connection.vendor in ("sqlite", "postgresql")


async def test_a_hangup_sent_to_the_call_group_closes_the_stream():
    comm, writer = await open_call()
    # What calls.services sends after hanging up at the carrier (its module docstring).
    await get_channel_layer().group_send(
        f"call_{writer.call_sid}", {"type": "call.hangup", "reason": "api-hangup"}
    )
    await wait_closed(comm, timeout_s=10)
    await comm.send_input({"type": "websocket.disconnect", "code": 1000})
    await comm.wait(timeout=10)
    call = await db(Call.objects.get, call_sid=writer.call_sid)
    assert call.end_reason == "api-hangup" and call.ended_at is not None

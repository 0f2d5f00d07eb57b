"""Bad input and replayed handshakes on /media-stream: each is logged with the callSid, never
crashes the call loop, and a replayed ``start`` never re-opens a call.

Driven through Channels' WebsocketCommunicator against the real ASGI app, as Twilio drives it.
"""

from __future__ import annotations

import json
import logging

import pytest
from channels.layers import InMemoryChannelLayer
from channels.testing import WebsocketCommunicator
from twilio.request_validator import RequestValidator

from calls.emulator.stream import new_sid
from calls.models import Call, CallStatus, EventKind
from media_ws.protocol import TwilioStreamWriter
from tests.live.conftest import db
from tests.live.test_hot_path import SILENCE, end_call, open_call, wait_closed

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOAD_MARK = "Q2FsbGVyU2VjcmV0QXVkaW8"  # base64-looking text that must never reach a log


async def connect(headers: list[tuple[bytes, bytes]] | None = None) -> WebsocketCommunicator:
    from voicebot.asgi import application

    comm = WebsocketCommunicator(application, "/media-stream", headers=headers or [])
    assert (await comm.connect(timeout=5))[0]
    return comm


def events_of(call_sid: str) -> list[tuple[str, dict]]:
    call = Call.objects.get(call_sid=call_sid)
    return [(e.kind, e.data) for e in call.events.order_by("at", "id")]


async def test_malformed_input_is_logged_with_the_call_sid_and_never_the_payload(caplog):
    comm, writer = await open_call()
    junk = [
        "[" * 100000,  # RecursionError in json: used to kill the consumer without disconnect()
        f'{{"event":"media","streamSid":"{writer.stream_sid}","media":{{"payload":' + "[" * 100000,
        writer.media(SILENCE, 99999999999),  # a timestamp past PostgreSQL's integer column
        json.dumps(
            {
                "event": "media",
                "streamSid": writer.stream_sid,
                "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": PAYLOAD_MARK + "!"},
            }
        ),
    ]
    with caplog.at_level(logging.WARNING, logger="media_ws.consumer"):
        for text in junk:
            await comm.send_to(text_data=text)
        for k in range(5):  # the call goes on
            await comm.send_to(text_data=writer.media(SILENCE, 20 * k))
        await end_call(comm, writer)
    dropped = [r.getMessage() for r in caplog.records if "dropped a media-stream message" in r.getMessage()]
    assert len(dropped) == len(junk)
    assert all(f"call {writer.call_sid}:" in message for message in dropped)
    assert sum("nested too deeply" in message for message in dropped) == 2
    assert "media.timestamp" in dropped[2] and "at most" in dropped[2]
    assert PAYLOAD_MARK not in caplog.text
    events = await db(events_of, writer.call_sid)
    assert [kind for kind, _ in events].count(EventKind.PROTOCOL_ERROR) == len(junk)
    assert events[-1][0] == EventKind.STREAM_STOP  # shut down normally: the transcript was written


@pytest.mark.parametrize("bad_sid", ["CA 1", "CAé" + "1" * 31, "CA" + "1" * 99])
async def test_a_start_with_an_implausible_call_sid_is_dropped_and_a_good_start_still_works(bad_sid, caplog):
    comm = await connect()
    good = TwilioStreamWriter(new_sid("MZ"), new_sid("CA"), new_sid("AC"))
    bad = TwilioStreamWriter(good.stream_sid, bad_sid, good.account_sid)
    with caplog.at_level(logging.WARNING, logger="media_ws.consumer"):
        await comm.send_to(text_data=bad.start({}))
        await comm.send_to(text_data=good.start({}))
        assert '"event":"media"' in (await comm.receive_from(timeout=15)).replace(" ", "")
    assert any("start.callSid" in r.getMessage() for r in caplog.records)
    assert not await db(lambda: Call.objects.filter(call_sid=bad_sid).exists())
    await end_call(comm, good)


class GroupsUnavailableLayer(InMemoryChannelLayer):
    """A channel layer whose group store is down (Redis unreachable at the start of a call)."""

    async def group_add(self, group, channel):
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")


async def test_a_call_whose_group_cannot_be_joined_goes_on_and_says_control_is_unreachable(settings, caplog):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": f"{__name__}.GroupsUnavailableLayer"}}
    with caplog.at_level(logging.WARNING, logger="media_ws.consumer"):
        comm, writer = await open_call()  # the greeting still comes
        for k in range(5):
            await comm.send_to(text_data=writer.media(SILENCE, 20 * k))
        await end_call(comm, writer)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and f"call {writer.call_sid}:" in errors[0].getMessage()
    assert "hang-up and transfer will not reach this call" in errors[0].getMessage()
    events = await db(events_of, writer.call_sid)
    assert any(
        kind == EventKind.ERROR and data.get("stage") == "control" and "ConnectionError" in data["error"]
        for kind, data in events
    )
    assert not any(kind == EventKind.PROTOCOL_ERROR for kind, _ in events)  # not Twilio's fault
    assert events[-1][0] == EventKind.STREAM_STOP


# --- replay hardening -------------------------------------------------------------------------


async def test_a_start_for_another_account_is_refused_without_a_session(settings, caplog):
    settings.TWILIO_ACCOUNT_SID = "AC" + "a" * 32
    comm = await connect()
    writer = TwilioStreamWriter(new_sid("MZ"), new_sid("CA"), "AC" + "b" * 32)
    with caplog.at_level(logging.WARNING, logger="media_ws.consumer"):
        await comm.send_to(text_data=writer.start({}))
        closed = await wait_closed(comm, timeout_s=10)
    assert closed["code"] == 1008 and "accountSid" in closed.get("reason", "")
    assert any(writer.call_sid in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)
    assert not await db(lambda: Call.objects.filter(call_sid=writer.call_sid).exists())
    await comm.send_input({"type": "websocket.disconnect", "code": 1008})
    await comm.wait(timeout=10)


async def test_a_start_for_our_own_account_is_accepted(settings):
    settings.TWILIO_ACCOUNT_SID = "AC" + "a" * 32
    comm = await connect()
    writer = TwilioStreamWriter(new_sid("MZ"), new_sid("CA"), settings.TWILIO_ACCOUNT_SID)
    await comm.send_to(text_data=writer.start({}))
    assert '"event":"media"' in (await comm.receive_from(timeout=15)).replace(" ", "")
    await end_call(comm, writer)


@pytest.mark.parametrize(
    "status",
    sorted(
        s.value
        for s in (
            CallStatus.COMPLETED,
            CallStatus.BUSY,
            CallStatus.FAILED,
            CallStatus.NO_ANSWER,
            CallStatus.CANCELED,
        )
    ),
)
@pytest.mark.parametrize("found_by", ["callSid", "call_id"])
async def test_a_start_for_a_call_that_already_ended_does_not_reopen_it(status, found_by):
    call_sid = new_sid("CA")
    call = await db(
        Call.objects.create,
        call_sid=call_sid if found_by == "callSid" else None,
        status=status,
        end_reason="x",
    )
    comm = await connect()
    writer = TwilioStreamWriter(new_sid("MZ"), call_sid, new_sid("AC"))
    await comm.send_to(text_data=writer.start({"call_id": str(call.pk)}))
    closed = await wait_closed(comm, timeout_s=10)
    assert closed["code"] == 1008
    await comm.send_input({"type": "websocket.disconnect", "code": 1008})
    await comm.wait(timeout=10)
    await call.arefresh_from_db()
    assert (call.status, call.stream_sid, call.end_reason) == (status, "", "x")
    assert call.call_sid == (call_sid if found_by == "callSid" else None)
    assert await call.events.acount() == 0
    assert not await db(lambda: Call.objects.exclude(pk=call.pk).exists())  # no new inbound row either


# --- which signed URL Twilio may use (docs/reference A6) ----------------------------------------


@pytest.mark.parametrize(
    ("signed_url", "accepted"),
    [
        ("wss://voice.example.com/bot/media-stream", True),  # what Twilio signs
        ("https://voice.example.com/bot/media-stream", True),  # what it may sign behind a proxy
        ("http://voice.example.com/bot/media-stream", False),
        ("ws://voice.example.com/bot/media-stream", False),
        ("wss://voice.example.com/media-stream", False),  # not our <Stream url>
    ],
)
async def test_the_handshake_accepts_only_the_urls_twilio_signs(settings, signed_url, accepted):
    settings.TWILIO_AUTH_TOKEN = "test-token-123"
    settings.PUBLIC_BASE_URL = "https://voice.example.com/bot"
    signature = RequestValidator("test-token-123").compute_signature(signed_url, {})
    from voicebot.asgi import application

    comm = WebsocketCommunicator(
        application, "/media-stream", headers=[(b"x-twilio-signature", signature.encode())]
    )
    connected, code = await comm.connect(timeout=5)
    assert (connected, code) == ((True, None) if accepted else (False, 4403))
    await comm.disconnect()

"""Hang-up and transfer: the API, the service functions (sync and async), the management commands,
what Twilio receives, and the messages the live session's channel-layer group gets."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.core.management.base import CommandError

from calls import services
from calls.carriers import CarrierError
from calls.errors import CallNotActive, DestinationNotAllowed, TransferTargetMissing
from calls.models import Call, CallEvent, CallStatus, EndReason, EventKind
from tests.calls.conftest import FROM_NUMBER, dial
from tests.conftest import need_service

pytestmark = pytest.mark.django_db

AGENT = "+14155550123"


def transfer_twiml(to: str, say: str | None) -> str:
    spoken = f"<Say>{say}</Say>" if say else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f'{spoken}<Dial callerId="{FROM_NUMBER}"><Number>{to}</Number></Dial></Response>'
    )


@pytest.fixture
def live_call(api, twilio):
    """A call placed through the fake Twilio and answered there (in-progress)."""
    body = dial(api).json()
    twilio.set_status(body["call_sid"], "in-progress")
    Call.objects.filter(pk=body["id"]).update(status=CallStatus.IN_PROGRESS)
    twilio.requests.clear()
    return Call.objects.get(pk=body["id"])


# --- hang-up --------------------------------------------------------------------------------------


def test_hangup_sends_status_completed_and_tells_the_session(api, twilio, live_call, listen):
    session = listen(live_call.call_sid)
    response = api.post(f"/calls/{live_call.call_sid}/hangup")
    assert response.status_code == 200, response.content
    assert response.json()["already_ended"] is False
    assert response.json()["end_reason"] == "api-hangup"

    [request] = twilio.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Calls/{live_call.call_sid}.json"
    assert request.form == {"Status": ["completed"]}
    assert twilio.calls[live_call.call_sid]["status"] == "completed"

    assert session.receive() == {"type": "call.hangup", "reason": "api-hangup"}
    live_call.refresh_from_db()
    assert live_call.end_reason == EndReason.API_HANGUP
    event = CallEvent.objects.get(call=live_call, kind=EventKind.HANGUP)
    assert event.data == {"reason": "api-hangup", "already_ended": False, "carrier_code": ""}


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        (20404, 404, "The requested resource /2010-04-01/Accounts/AC/Calls/CA.json was not found"),
        (21220, 400, "Call is not in-progress. Cannot redirect."),
    ],
)
def test_hangup_of_a_call_twilio_already_ended_is_not_an_error(
    api, twilio, live_call, listen, code, status, message
):
    twilio.fail_next(code, message, status)
    session = listen(live_call.call_sid)
    response = api.post(f"/calls/{live_call.call_sid}/hangup")
    assert response.status_code == 200
    assert response.json()["already_ended"] is True
    assert len(twilio.requests) == 1
    live_call.refresh_from_db()
    assert live_call.end_reason == ""  # we did not end it, so we do not claim to have
    event = CallEvent.objects.get(call=live_call, kind=EventKind.HANGUP)
    assert event.data["already_ended"] is True and event.data["carrier_code"] == str(code)
    assert session.receive()["type"] == "call.hangup"


def test_hangup_of_a_call_already_final_here_does_not_ask_twilio(api, twilio, live_call):
    Call.objects.filter(pk=live_call.pk).update(
        status=CallStatus.COMPLETED, end_reason=EndReason.CALLER_HANGUP
    )
    response = api.post(f"/calls/{live_call.call_sid}/hangup")
    assert response.status_code == 200
    assert response.json()["already_ended"] is True
    assert response.json()["end_reason"] == "caller-hangup"
    assert twilio.requests == []


def test_hangup_of_a_call_that_never_got_a_sid_is_already_ended(api, twilio):
    twilio.fail_next(21211, "The 'To' number is not a valid phone number.", 400)
    call_id = dial(api).json()["call_id"]
    twilio.requests.clear()
    response = api.post(f"/calls/{call_id}/hangup")
    assert response.status_code == 200
    assert response.json()["already_ended"] is True
    assert twilio.requests == []


def test_hangup_carrier_failure_is_502_and_changes_nothing(api, twilio, live_call):
    twilio.fail_next(20500, "Internal Server Error", 500)
    response = api.post(f"/calls/{live_call.call_sid}/hangup")
    assert response.status_code == 502
    assert response.json()["error_code"] == "20500"
    assert response.json()["call_id"] == str(live_call.id)
    live_call.refresh_from_db()
    assert live_call.end_reason == ""
    assert not CallEvent.objects.filter(call=live_call, kind=EventKind.HANGUP).exists()


def test_hangup_of_an_unknown_call_is_404(api):
    assert api.post("/calls/CA" + "f" * 32 + "/hangup").status_code == 404
    assert api.post(f"/calls/{uuid.uuid4()}/hangup").status_code == 404


def test_hangup_needs_authentication(anonymous, live_call):
    assert anonymous.post(f"/calls/{live_call.call_sid}/hangup").status_code == 401


def test_hangup_through_the_emulator(api, listen):
    body = dial(api).json()
    session = listen(body["call_sid"])
    response = api.post(f"/calls/{body['call_sid']}/hangup")
    assert response.status_code == 200
    assert response.json()["already_ended"] is False
    assert session.receive() == {"type": "call.hangup", "reason": "api-hangup"}


def test_hangup_service_records_the_bot_reason_and_can_skip_the_session(twilio, live_call, listen):
    session = listen(live_call.call_sid)
    assert services.hangup_call(live_call, reason=EndReason.BOT_HANGUP, notify_session=False) is False
    assert live_call.end_reason == EndReason.BOT_HANGUP
    with pytest.raises(TimeoutError):
        session.receive(timeout_s=0.2)


def test_hangup_service_rejects_an_unknown_reason(live_call):
    with pytest.raises(ValueError):
        services.hangup_call(live_call, reason="because")


def test_hangup_command(twilio, live_call):
    out = io.StringIO()
    call_command("hangup_call", live_call.call_sid, stdout=out)
    assert f"{live_call.call_sid} hung up" in out.getvalue()
    assert twilio.requests[0].form == {"Status": ["completed"]}
    with pytest.raises(CommandError, match="no call"):
        call_command("hangup_call", "CAnothere")


# --- transfer -------------------------------------------------------------------------------------


def test_transfer_says_the_handoff_line_then_dials_the_agent(api, twilio, live_call, listen, settings):
    settings.HUMAN_AGENT_NUMBER = AGENT
    session = listen(live_call.call_sid)
    response = api.post(f"/calls/{live_call.call_sid}/transfer", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["transfer_to"] == AGENT
    assert response.json()["end_reason"] == "transferred"

    [request] = twilio.requests
    assert request.path.endswith(f"/Calls/{live_call.call_sid}.json")
    assert request.form == {"Twiml": [transfer_twiml(AGENT, "Please hold while I connect you.")]}
    assert session.receive() == {"type": "call.transfer", "to": AGENT}
    live_call.refresh_from_db()
    assert live_call.transfer_to == AGENT
    assert live_call.end_reason == EndReason.TRANSFERRED
    assert CallEvent.objects.get(call=live_call, kind=EventKind.TRANSFER).data["to"] == AGENT


def test_transfer_to_a_given_number_overrides_the_agent(api, twilio, live_call, settings):
    settings.HUMAN_AGENT_NUMBER = AGENT
    response = api.post(f"/calls/{live_call.call_sid}/transfer", {"to": "+1 202 555 0123"}, format="json")
    assert response.status_code == 200
    assert response.json()["transfer_to"] == "+12025550123"
    assert "<Number>+12025550123</Number>" in twilio.requests[0].field("Twiml")


def test_transfer_without_any_number_is_a_clear_400(api, twilio, live_call):
    response = api.post(f"/calls/{live_call.call_sid}/transfer", {}, format="json")
    assert response.status_code == 400
    assert response.json() == {"to": ['No number to transfer to: give "to" or set HUMAN_AGENT_NUMBER.']}
    assert twilio.requests == []


@pytest.mark.parametrize(("to", "why"), [("+442071838750", "not allowed"), ("12345", "E.164")])
def test_transfer_destination_must_be_valid_and_allowed(api, twilio, live_call, to, why):
    response = api.post(f"/calls/{live_call.call_sid}/transfer", {"to": to}, format="json")
    assert response.status_code == 400
    assert why in response.json()["to"][0]
    assert twilio.requests == []


def test_transfer_rejects_unknown_fields(api, live_call):
    response = api.post(f"/calls/{live_call.call_sid}/transfer", {"number": AGENT}, format="json")
    assert response.status_code == 400
    assert response.json() == {"number": ["Unknown field."]}


def test_transfer_of_a_call_twilio_says_is_not_in_progress_is_409(api, twilio, live_call, settings):
    settings.HUMAN_AGENT_NUMBER = AGENT
    twilio.set_status(live_call.call_sid, "ringing")  # the fake refuses redirects with 21220
    response = api.post(f"/calls/{live_call.call_sid}/transfer", {}, format="json")
    assert response.status_code == 409
    assert "21220" in response.json()["detail"]
    live_call.refresh_from_db()
    assert live_call.transfer_to == "" and live_call.end_reason == ""


def test_transfer_of_an_ended_call_is_409_without_asking_twilio(api, twilio, live_call, settings):
    settings.HUMAN_AGENT_NUMBER = AGENT
    Call.objects.filter(pk=live_call.pk).update(status=CallStatus.COMPLETED)
    assert api.post(f"/calls/{live_call.call_sid}/transfer", {}, format="json").status_code == 409
    assert twilio.requests == []


def test_transfer_carrier_failure_is_502(api, twilio, live_call, settings):
    settings.HUMAN_AGENT_NUMBER = AGENT
    twilio.fail_next(20429, "Too Many Requests", 429)
    response = api.post(f"/calls/{live_call.call_sid}/transfer", {}, format="json")
    assert response.status_code == 502
    assert response.json()["error_code"] == "20429"


def test_transfer_service_without_say_only_dials(twilio, live_call):
    assert services.transfer_call(live_call, to=AGENT, say=None) == AGENT
    assert twilio.requests[0].form == {"Twiml": [transfer_twiml(AGENT, None)]}


def test_transfer_service_errors_are_catchable_as_call_control_errors(live_call):
    from calls.errors import CallControlError

    with pytest.raises(TransferTargetMissing):
        services.transfer_call(live_call)
    with pytest.raises(DestinationNotAllowed):
        services.transfer_call(live_call, to="+442071838750")
    assert issubclass(CarrierError, CallControlError) and issubclass(CallNotActive, CallControlError)


def test_transfer_command(twilio, live_call):
    out = io.StringIO()
    call_command("transfer_call", live_call.call_sid, "--to", AGENT, "--no-say", stdout=out)
    assert f"transferred to {AGENT}" in out.getvalue()
    assert twilio.requests[0].form == {"Twiml": [transfer_twiml(AGENT, None)]}
    with pytest.raises(CommandError, match='give "to"'):
        call_command("transfer_call", live_call.call_sid)


# --- async twins ------------------------------------------------------------------------------------


@pytest.fixture
async def worker_thread_db():
    """Closes the connection the async ORM opened in asgiref's worker thread, so PostgreSQL can drop
    the test database afterwards."""
    yield
    from django.db import connections

    await sync_to_async(connections.close_all)()


@pytest.mark.django_db(transaction=True)
async def test_async_hangup_keeps_the_event_loop_running_while_twilio_answers(
    api, twilio, listen, worker_thread_db
):
    body = await sync_to_async(dial)(api)
    call = await Call.objects.aget(pk=body.json()["id"])
    session = await sync_to_async(listen)(call.call_sid)
    twilio.delay_s = 0.3
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(heartbeat())
    try:
        already_ended = await services.ahangup_call(call, reason=EndReason.BOT_HANGUP)
    finally:
        beat.cancel()
    assert already_ended is False
    # A blocked loop would not have ticked at all during the 0.3 s the fake held the answer.
    assert ticks >= 5
    assert twilio.requests_to("POST", f"/Calls/{call.call_sid}.json")[0].form == {"Status": ["completed"]}
    assert call.end_reason == EndReason.BOT_HANGUP
    assert await session.areceive() == {"type": "call.hangup", "reason": "bot-hangup"}


@pytest.mark.django_db(transaction=True)
async def test_async_transfer_redirects_and_reports_errors(api, twilio, listen, worker_thread_db):
    body = (await sync_to_async(dial)(api)).json()
    twilio.set_status(body["call_sid"], "in-progress")
    await Call.objects.filter(pk=body["id"]).aupdate(status=CallStatus.IN_PROGRESS)
    call = await Call.objects.aget(pk=body["id"])
    session = await sync_to_async(listen)(call.call_sid)
    assert await services.atransfer_call(call, to=AGENT, say=None) == AGENT
    assert twilio.requests[-1].form == {"Twiml": [transfer_twiml(AGENT, None)]}
    assert await session.areceive() == {"type": "call.transfer", "to": AGENT}
    assert call.transfer_to == AGENT

    twilio.set_status(call.call_sid, "completed")
    await Call.objects.filter(pk=call.pk).aupdate(status=CallStatus.IN_PROGRESS)
    call = await Call.objects.aget(pk=call.pk)
    with pytest.raises(CallNotActive):
        await services.atransfer_call(call, to=AGENT)


# --- the group message on a shared (Redis) layer ----------------------------------------------------


def test_hangup_reaches_a_session_listening_on_the_redis_layer(api, settings):
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    host, port = redis_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    try:
        socket.create_connection((host.split("@")[-1], int(port)), timeout=0.5).close()
    except OSError:
        need_service(f"Redis is not reachable at {redis_url}")
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": f"vbtest-{uuid.uuid4().hex[:8]}"},
        }
    }
    from channels.layers import channel_layers, get_channel_layer

    from tests.calls.conftest import GroupListener

    body = dial(api).json()
    # A second layer instance (its own connections) stands in for the session's process.
    session_layer = channel_layers.make_backend("default")
    assert session_layer is not get_channel_layer()
    listener = GroupListener(f"call_{body['call_sid']}", layer=session_layer)
    try:
        assert api.post(f"/calls/{body['call_sid']}/hangup").status_code == 200
        assert listener.receive() == {"type": "call.hangup", "reason": "api-hangup"}
    finally:
        listener.close()

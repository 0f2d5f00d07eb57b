"""POST /calls/twilio/status: signature validation with real signatures, idempotent and
order-tolerant status updates, one event per callback."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.test import Client
from twilio.request_validator import RequestValidator

from calls import services
from calls.models import Call, CallEvent, CallStatus, EndReason, EventKind
from tests.calls.conftest import FROM_NUMBER, PUBLIC_BASE_URL, TO_NUMBER

pytestmark = pytest.mark.django_db

TOKEN = "webhook-test-auth-token"
SID = "CA" + "1" * 32


@pytest.fixture
def call() -> Call:
    return Call.objects.create(call_sid=SID, carrier="twilio", from_number=FROM_NUMBER, to_number=TO_NUMBER)


def callback(status: str, sequence: int, call_sid: str = SID, **extra: str) -> dict[str, str]:
    """The form Twilio posts for a call status callback."""
    return {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": status,
        "Direction": "outbound-api",
        "From": FROM_NUMBER,
        "To": TO_NUMBER,
        "SequenceNumber": str(sequence),
        "Timestamp": "Tue, 06 Jun 2023 17:28:20 +0000",
        "CallbackSource": "call-progress-events",
        **extra,
    }


def post(
    params: dict[str, str], *, query: str = "", signature: str | None = None, client: Client | None = None
):
    path = "/calls/twilio/status" + (f"?{query}" if query else "")
    headers = {"HTTP_X_TWILIO_SIGNATURE": signature} if signature is not None else {}
    return (client or Client()).post(
        path, urlencode(params), content_type="application/x-www-form-urlencoded", **headers
    )


def signed(params: dict[str, str], *, query: str = "", token: str = TOKEN, base: str = PUBLIC_BASE_URL):
    url = f"{base}/calls/twilio/status" + (f"?{query}" if query else "")
    return post(params, query=query, signature=RequestValidator(token).compute_signature(url, params))


# --- signatures -------------------------------------------------------------------------------------


def test_a_valid_twilio_signature_is_accepted(settings, call):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    query = f"call_id={call.id}"
    response = signed(callback("ringing", 1), query=query)
    assert response.status_code == 204
    call.refresh_from_db()
    assert call.status == CallStatus.RINGING


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda p, q: signed(p, query=q, token="some-other-token"), id="wrong-token"),
        pytest.param(lambda p, q: signed(p, query=q, base="http://voice.example.com"), id="wrong-url"),
        pytest.param(
            lambda p, q: post(
                p,
                query=q,
                signature=RequestValidator(TOKEN).compute_signature(
                    f"{PUBLIC_BASE_URL}/calls/twilio/status", p
                ),
            ),
            id="query-not-signed",
        ),
        pytest.param(lambda p, q: post(p, query=q), id="no-signature"),
        pytest.param(lambda p, q: post(p, query=q, signature="bm90IGEgc2lnbmF0dXJl"), id="garbage"),
    ],
)
def test_forged_or_missing_signatures_are_403_and_change_nothing(settings, call, forge):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    response = forge(callback("completed", 4, CallDuration="30"), f"call_id={call.id}")
    assert response.status_code == 403
    call.refresh_from_db()
    assert call.status == CallStatus.QUEUED
    assert not CallEvent.objects.exists()


def test_tampered_parameters_break_the_signature(settings, call):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    genuine = callback("ringing", 1)
    signature = RequestValidator(TOKEN).compute_signature(f"{PUBLIC_BASE_URL}/calls/twilio/status", genuine)
    assert post(genuine, signature=signature).status_code == 204
    tampered = {**genuine, "CallStatus": "completed", "SequenceNumber": "4"}
    assert post(tampered, signature=signature).status_code == 403
    call.refresh_from_db()
    assert call.status == CallStatus.RINGING


def test_without_an_auth_token_callbacks_are_not_validated(settings, call):
    settings.TWILIO_AUTH_TOKEN = ""
    assert post(callback("initiated", 0)).status_code == 204
    call.refresh_from_db()
    assert call.status == CallStatus.INITIATED


def test_the_emulator_carrier_still_validates_when_a_token_is_set(settings, call):
    settings.CARRIER = "emulator"
    settings.TWILIO_AUTH_TOKEN = TOKEN
    assert post(callback("initiated", 0)).status_code == 403


# --- updates ----------------------------------------------------------------------------------------


def test_a_full_lifecycle_sets_times_duration_and_one_event_per_callback(call):
    for seq, status in enumerate(["initiated", "ringing", "in-progress"]):
        assert post(callback(status, seq)).status_code == 204
    call.refresh_from_db()
    assert call.status == CallStatus.IN_PROGRESS
    assert call.answered_at is not None and call.ended_at is None

    assert post(callback("completed", 3, CallDuration="42", SipResponseCode="200")).status_code == 204
    call.refresh_from_db()
    assert call.status == CallStatus.COMPLETED
    assert call.duration_s == 42
    assert call.ended_at >= call.answered_at
    assert call.end_reason == ""  # who hung up is not in the callback
    events = list(CallEvent.objects.filter(call=call, kind=EventKind.STATUS).order_by("id"))
    assert [e.data["CallStatus"] for e in events] == ["initiated", "ringing", "in-progress", "completed"]
    assert all(e.data["applied"] for e in events)
    assert events[-1].data == {
        "CallStatus": "completed",
        "SequenceNumber": "3",
        "Timestamp": "Tue, 06 Jun 2023 17:28:20 +0000",
        "CallbackSource": "call-progress-events",
        "CallDuration": "42",
        "SipResponseCode": "200",
        "applied": True,
    }


def test_a_late_ringing_never_overwrites_completed(call):
    assert post(callback("completed", 3, CallDuration="12")).status_code == 204
    assert post(callback("ringing", 1)).status_code == 204
    assert post(callback("in-progress", 2)).status_code == 204
    call.refresh_from_db()
    assert call.status == CallStatus.COMPLETED
    assert call.duration_s == 12
    assert call.answered_at is None
    applied = [e.data["applied"] for e in CallEvent.objects.filter(call=call).order_by("id")]
    assert applied == [True, False, False]


def test_duplicate_callbacks_are_recorded_but_change_nothing(call):
    assert post(callback("completed", 3, CallDuration="20")).status_code == 204
    call.refresh_from_db()
    ended_at = call.ended_at
    assert post(callback("completed", 3, CallDuration="20")).status_code == 204
    call.refresh_from_db()
    assert call.ended_at == ended_at and call.duration_s == 20
    assert [e.data["applied"] for e in CallEvent.objects.filter(call=call).order_by("id")] == [True, False]


def test_one_final_status_does_not_replace_another(call):
    post(callback("completed", 3, CallDuration="5"))
    post(callback("failed", 4))
    call.refresh_from_db()
    assert call.status == CallStatus.COMPLETED


@pytest.mark.parametrize("status", ["busy", "no-answer", "canceled"])
def test_unanswered_calls_get_the_not_answered_reason(call, status):
    assert post(callback(status, 2, CallDuration="0")).status_code == 204
    call.refresh_from_db()
    assert call.status == status
    assert call.end_reason == EndReason.NOT_ANSWERED
    assert call.duration_s == 0


def test_an_existing_end_reason_is_kept(call):
    Call.objects.filter(pk=call.pk).update(end_reason=EndReason.API_HANGUP)
    post(callback("canceled", 2))
    call.refresh_from_db()
    assert call.end_reason == EndReason.API_HANGUP


def test_a_callback_can_find_its_call_by_call_id_before_the_sid_is_stored():
    call = Call.objects.create(carrier="twilio", from_number=FROM_NUMBER, to_number=TO_NUMBER)
    response = post(callback("initiated", 0, call_sid="CA" + "2" * 32), query=f"call_id={call.id}")
    assert response.status_code == 204
    call.refresh_from_db()
    assert call.call_sid == "CA" + "2" * 32
    assert call.status == CallStatus.INITIATED


def test_a_call_id_does_not_let_one_call_take_over_another(call):
    other = "CA" + "3" * 32
    assert post(callback("completed", 3, call_sid=other), query=f"call_id={call.id}").status_code == 404
    call.refresh_from_db()
    assert call.call_sid == SID and call.status == CallStatus.QUEUED


def test_unknown_calls_are_404_not_a_crash(caplog):
    assert post(callback("ringing", 1, call_sid="CA" + "9" * 32)).status_code == 404
    assert (
        post(callback("ringing", 1, call_sid="CA" + "9" * 32), query="call_id=not-a-uuid").status_code == 404
    )
    assert "unknown call" in caplog.text


@pytest.mark.parametrize(
    "params", [{"CallStatus": "ringing"}, {"CallSid": SID, "CallStatus": "exploded"}, {}]
)
def test_callbacks_without_a_sid_or_a_known_status_are_400(call, params):
    assert post(params).status_code == 400
    assert not CallEvent.objects.exists()


def test_only_post_is_accepted():
    assert Client().get("/calls/twilio/status").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_a_callback_that_overtakes_the_rest_response_is_not_undone(twilio, settings, live_server):
    """Twilio posts ``ringing`` (signed) to the status callback while our ``calls.create`` request
    still waits for its answer; the ``queued`` in that later answer must not move the call back."""
    settings.PUBLIC_BASE_URL = live_server.url  # where the fake Twilio posts the callbacks
    twilio.callbacks_before_create = ["initiated", "ringing"]
    call = services.place_call(to=TO_NUMBER)
    assert twilio.callback_results == [("initiated", 204), ("ringing", 204)]
    (created,) = twilio.requests_to("POST", "/Calls.json")
    assert created.field("StatusCallback") == f"{live_server.url}/calls/twilio/status?call_id={call.id}"
    call.refresh_from_db()
    assert call.carrier == "twilio" and call.call_sid in twilio.calls
    assert call.status == CallStatus.RINGING  # the later "queued" REST answer did not move it back
    assert [e.data["CallStatus"] for e in call.events.filter(kind=EventKind.STATUS).order_by("at", "id")] == [
        "initiated",
        "ringing",
    ]

"""POST /calls/outbound: authentication, validation, allow-list, throttling, what reaches Twilio,
and how carrier failures are reported."""

from __future__ import annotations

import io
import re
import socket
import uuid

import pytest
from django.core.management import call_command
from django.test import Client

from calls.models import Call, CallEvent, CallStatus, EndReason, EventKind
from tests.calls.conftest import FROM_NUMBER, PUBLIC_BASE_URL, TO_NUMBER, dial

pytestmark = pytest.mark.django_db

CALL_SID = re.compile(r"^CA[0-9a-f]{32}$")


# --- authentication ---------------------------------------------------------------------------


def test_dialing_without_credentials_is_401_with_a_token_challenge(anonymous):
    response = dial(anonymous)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert Call.objects.count() == 0


def test_dialing_with_a_wrong_token_is_401(anonymous):
    anonymous.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert dial(anonymous).status_code == 401
    assert Call.objects.count() == 0


def test_token_authentication_places_a_call_through_the_emulator(api, user):
    response = dial(api, greeting="Hi there, this is a test call.", metadata={"order": 42})
    assert response.status_code == 201, response.content
    body = response.json()
    assert CALL_SID.match(body["call_sid"])
    assert body["status"] == "queued"
    assert body["carrier"] == "emulator"
    assert body["to"] == TO_NUMBER and body["from"] == FROM_NUMBER
    assert body["url"] == f"http://testserver/calls/{body['call_sid']}"
    call = Call.objects.get(pk=body["id"])
    assert call.call_sid == body["call_sid"]
    assert call.status == CallStatus.QUEUED
    assert call.direction == "outbound-api"
    assert call.created_by == user
    assert call.greeting == "Hi there, this is a test call."
    assert call.metadata == {"order": 42}


def test_a_token_from_drf_create_token_places_a_call(user, anonymous):
    """The README's set-up: ``manage.py drf_create_token <user>`` prints the key the API takes."""
    out = io.StringIO()
    call_command("drf_create_token", user.username, stdout=out)
    printed = out.getvalue()
    match = re.fullmatch(rf"Generated token (?P<key>[0-9a-f]{{40}}) for user {user.username}\n", printed)
    assert match, out.getvalue()
    anonymous.credentials(HTTP_AUTHORIZATION=f"Token {match['key']}")
    response = dial(anonymous)
    assert response.status_code == 201, response.content
    assert Call.objects.get(pk=response.json()["id"]).created_by == user


def test_session_authentication_works_with_csrf(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/admin/login/")  # sets the csrftoken cookie
    csrf = client.cookies["csrftoken"].value
    response = client.post(
        "/calls/outbound", {"to": TO_NUMBER}, content_type="application/json", HTTP_X_CSRFTOKEN=csrf
    )
    assert response.status_code == 201, response.content
    without_csrf = client.post("/calls/outbound", {"to": TO_NUMBER}, content_type="application/json")
    assert without_csrf.status_code == 403


def test_defaults_come_from_settings(api, settings):
    body = dial(api).json()
    call = Call.objects.get(pk=body["id"])
    assert call.greeting == settings.DEFAULT_GREETING
    assert call.instructions == settings.DEFAULT_INSTRUCTIONS
    assert call.from_number == FROM_NUMBER
    assert call.metadata == {}


def test_trailing_slash_variant_also_dials(api):
    assert api.post("/calls/outbound/", {"to": TO_NUMBER}, format="json").status_code == 201


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "to",
    ["4155550142", "+1415555", "+1 (415) 555-01421234", "not a number", "+15555555555", "", "+0123456789"],
)
def test_numbers_that_are_not_valid_e164_are_400_on_that_field(api, to):
    response = dial(api, to=to)
    assert response.status_code == 400
    assert set(response.json()) == {"to"}
    assert Call.objects.count() == 0


def test_formatted_e164_is_normalised(api):
    body = dial(api, to="+1 (415) 555-0142").json()
    assert body["to"] == "+14155550142"


def test_bad_caller_id_is_400_on_from(api):
    response = dial(api, **{"from": "12345"})
    assert response.status_code == 400
    assert set(response.json()) == {"from"}


def test_missing_to_is_400(api):
    response = api.post("/calls/outbound", {}, format="json")
    assert response.status_code == 400
    assert response.json() == {"to": ["This field is required."]}


@pytest.mark.parametrize("metadata", [[1, 2], "text", 3, None])
def test_metadata_must_be_a_json_object(api, metadata):
    response = dial(api, metadata=metadata)
    assert response.status_code == 400
    assert "metadata" in response.json()
    assert Call.objects.count() == 0


def test_metadata_size_is_bounded(api):
    response = dial(api, metadata={"blob": "x" * 5000})
    assert response.status_code == 400
    assert "4096 bytes" in response.json()["metadata"][0]


def test_greeting_and_instructions_lengths_are_bounded(api):
    response = dial(api, greeting="g" * 1001, instructions="i" * 8001)
    assert response.status_code == 400
    assert set(response.json()) == {"greeting", "instructions"}
    assert dial(api, greeting="g" * 1000, instructions="i" * 8000).status_code == 201


def test_unknown_fields_are_rejected_next_to_other_errors(api):
    response = api.post("/calls/outbound", {"to": "bad", "greting": "typo"}, format="json")
    assert response.status_code == 400
    errors = response.json()
    assert errors["greting"] == ["Unknown field."]
    assert "to" in errors


def test_a_non_object_body_is_400(api):
    response = api.post("/calls/outbound", [TO_NUMBER], format="json")
    assert response.status_code == 400
    assert Call.objects.count() == 0


# --- allow-list -------------------------------------------------------------------------------


def test_default_allow_list_is_the_caller_ids_country(api):
    response = dial(api, to="+442071838750")
    assert response.status_code == 400
    assert "not allowed" in response.json()["to"][0]
    assert "+1 (country code)" in response.json()["to"][0]
    assert dial(api, to="+12025550123").status_code == 201  # another US number: same country code


def test_default_allow_list_follows_a_given_caller_id(api):
    assert dial(api, to="+442071838750", **{"from": "+442071838751"}).status_code == 201
    assert dial(api, to=TO_NUMBER, **{"from": "+442071838751"}).status_code == 400


def test_configured_country_codes(api, settings):
    settings.DIAL_ALLOWED_DESTINATIONS = ["44", "33"]
    assert dial(api, to="+442071838750").status_code == 201
    assert dial(api, to="+33612345678").status_code == 201
    assert dial(api, to=TO_NUMBER).status_code == 400  # the caller ID's own country is not implied


def test_configured_e164_prefixes(api, settings):
    settings.DIAL_ALLOWED_DESTINATIONS = ["+1415"]
    assert dial(api, to="+14155550142").status_code == 201
    response = dial(api, to="+12025550123")
    assert response.status_code == 400
    assert "+1415" in response.json()["to"][0]


# --- throttling -------------------------------------------------------------------------------


def test_dialing_is_throttled_per_user_with_retry_after(api, settings, django_user_model):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"dial": "2/min"}}
    assert dial(api).status_code == 201
    assert dial(api).status_code == 201
    third = dial(api)
    assert third.status_code == 429
    assert int(third["Retry-After"]) > 0
    assert Call.objects.count() == 2

    other = django_user_model.objects.create_user("other-dialer")
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(other)
    assert dial(client).status_code == 201  # the budget is per user


def test_reading_calls_is_not_dial_throttled(api, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"dial": "1/min"}}
    assert dial(api).status_code == 201
    assert dial(api).status_code == 429
    for _ in range(3):
        assert api.get("/calls/").status_code == 200


# --- what Twilio receives -----------------------------------------------------------------------


def test_twilio_receives_exactly_the_call_request(api, twilio):
    response = dial(api)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["carrier"] == "twilio"
    assert body["call_sid"] in twilio.calls

    [request] = twilio.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Calls.json"
    expected_twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://voice.example.com/media-stream">'
        f'<Parameter name="call_id" value="{body["id"]}" />'
        "</Stream></Connect></Response>"
    )
    assert request.form == {
        "To": [TO_NUMBER],
        "From": [FROM_NUMBER],
        "Twiml": [expected_twiml],
        "StatusCallback": [f"{PUBLIC_BASE_URL}/calls/twilio/status?call_id={body['id']}"],
        "StatusCallbackMethod": ["POST"],
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
    }
    call = Call.objects.get(pk=body["id"])
    assert call.call_sid == body["call_sid"]
    assert call.account_sid == twilio.account_sid
    assert call.carrier == "twilio"


def test_stream_url_keeps_the_public_port(api, twilio, settings):
    settings.PUBLIC_BASE_URL = "https://abc.ngrok.app:8443"
    dial(api)
    assert 'url="wss://abc.ngrok.app:8443/media-stream"' in twilio.requests[0].field("Twiml")


# --- carrier failures -----------------------------------------------------------------------------


def assert_failed_row(body, code, message):
    call = Call.objects.get(pk=body["call_id"])
    assert call.status == CallStatus.FAILED
    assert call.call_sid is None
    assert call.error_code == code
    assert call.error_message == message
    assert call.end_reason == EndReason.CARRIER_FAILED
    assert call.ended_at is not None
    event = CallEvent.objects.get(call=call, kind=EventKind.ERROR)
    assert event.data["code"] == code
    return call


def test_twilio_error_is_502_with_its_code_and_a_failed_row(api, twilio):
    twilio.fail_next(21211, "The 'To' number +14155550142 is not a valid phone number.", 400)
    response = dial(api)
    assert response.status_code == 502
    body = response.json()
    assert body["error_code"] == "21211"
    assert body["error_message"] == "The 'To' number +14155550142 is not a valid phone number."
    assert body["detail"] == "The carrier could not place the call."
    uuid.UUID(body["call_id"])
    assert_failed_row(body, "21211", body["error_message"])
    assert len(twilio.requests) == 1  # it was asked once, after the row existed


def test_rfc9457_problem_details_errors_are_mapped_too(api, twilio):
    twilio.fail_next(
        21219, "The 'To' number is not verified for this trial account.", 400, problem_details=True
    )
    response = dial(api)
    assert response.status_code == 502
    assert response.json()["error_code"] == "21219"
    assert response.json()["error_message"] == "The 'To' number is not verified for this trial account."


def test_failed_call_is_visible_by_id_in_the_api(api, twilio):
    twilio.fail_next(21215, "Geo Permission configuration is not permitting call", 400)
    body = dial(api).json()
    detail = api.get(f"/calls/{body['call_id']}")
    assert detail.status_code == 200
    assert detail.json()["status"] == "failed"
    assert detail.json()["error_code"] == "21215"


def test_wrong_credentials_are_a_502_with_twilios_authenticate_code(api, twilio, settings):
    settings.TWILIO_AUTH_TOKEN = "not-the-token"
    response = dial(api)
    assert response.status_code == 502
    assert response.json()["error_code"] == "20003"
    assert response.json()["error_message"] == "Authenticate"
    assert "not-the-token" not in response.content.decode()


def test_refused_connection_is_a_502_network_error(api, twilio, settings):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.TWILIO_API_BASE_URL = f"http://127.0.0.1:{port}"
    response = dial(api)
    assert response.status_code == 502
    body = response.json()
    assert body["error_code"] == "network"
    assert f"127.0.0.1:{port}" in body["error_message"]
    assert_failed_row(body, "network", body["error_message"])


def test_timeout_is_a_502_timeout_error(api, twilio, settings):
    settings.TWILIO_TIMEOUT_S = 0.3
    twilio.delay_s = 5.0
    response = dial(api)
    assert response.status_code == 502
    body = response.json()
    assert body["error_code"] == "timeout"
    assert body["error_message"] == "the Twilio REST API did not answer within 0.3 s"
    assert_failed_row(body, "timeout", body["error_message"])


def test_forcing_twilio_without_credentials_fails_the_call_clearly(api, settings):
    settings.CARRIER = "twilio"
    response = dial(api)
    assert response.status_code == 502
    assert response.json()["error_code"] == "config"
    assert "TWILIO_ACCOUNT_SID" in response.json()["error_message"]
    assert Call.objects.get().status == CallStatus.FAILED

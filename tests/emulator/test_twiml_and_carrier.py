"""What the emulated carrier accepts: the call TwiML, redirects, scenario choice, Twilio's errors."""

from __future__ import annotations

import pytest

from calls import services
from calls.carriers import CarrierError
from calls.carriers.emulator import EmulatorCarrier
from calls.emulator.call import (
    DOCUMENT_PARSE_FAILURE,
    UNSUPPORTED,
    TwimlError,
    parse_call_twiml,
    parse_redirect_twiml,
    stream_connect_url,
)
from calls.emulator.exchange import Exchange
from calls.errors import PlaceCallFailed
from calls.models import CallStatus, EndReason
from calls.twiml import stream_twiml, transfer_twiml

CONNECT = "<Connect><Stream url='wss://h/s'>{}</Stream></Connect>"


def test_the_products_call_twiml_is_read_as_twilio_would(settings):
    settings.PUBLIC_BASE_URL = "https://voice.example.com"
    document = parse_call_twiml(stream_twiml("7d1e0000-0000-4000-8000-000000000001"))
    assert document.url == "wss://voice.example.com/media-stream"
    assert document.parameters == {"call_id": "7d1e0000-0000-4000-8000-000000000001"}


@pytest.mark.parametrize(
    ("twiml", "code", "words"),
    [
        ("<Response><Connect><Stream", DOCUMENT_PARSE_FAILURE, "not XML"),
        ("<Document/>", DOCUMENT_PARSE_FAILURE, "<Document> is not <Response>"),
        ("<Response><Say>Hi</Say></Response>", UNSUPPORTED, "not <Say>"),
        (f"<Response>{CONNECT.format('')}<Hangup/></Response>", UNSUPPORTED, "<Hangup>"),
        ("<Response><Connect><Room>r</Room></Connect></Response>", UNSUPPORTED, "one <Stream>, not <Room>"),
        ("<Response><Connect><Stream url='ws://h/s'/></Connect></Response>", UNSUPPORTED, "absolute wss://"),
        ("<Response><Connect><Stream url='/s'/></Connect></Response>", UNSUPPORTED, "absolute wss://"),
        ("<Response><Connect><Stream url='wss://h/s?a=1'/></Connect></Response>", UNSUPPORTED, "query"),
        (f"<Response>{CONNECT.format('<Foo/>')}</Response>", UNSUPPORTED, "not <Foo>"),
    ],
)
def test_call_twiml_the_emulator_cannot_run_is_refused_clearly(twiml, code, words):
    with pytest.raises(TwimlError) as info:
        parse_call_twiml(twiml)
    assert info.value.code == code
    assert words in info.value.message


def test_a_transfer_redirect_is_read_for_its_dial_target():
    twiml = transfer_twiml("+15005550199", caller_id="+15005550006", say="Please hold.")
    document = parse_redirect_twiml(twiml)
    assert document.say == ("Please hold.",)
    assert (document.dial, document.caller_id) == ("+15005550199", "+15005550006")
    assert parse_redirect_twiml("<Response><Hangup/></Response>").dial == ""
    with pytest.raises(TwimlError, match="cannot redirect a call to <Play>"):
        parse_redirect_twiml("<Response><Play>x.mp3</Play></Response>")


def test_plain_http_servers_are_reached_over_ws_on_the_same_host():
    url = "wss://127.0.0.1:8123/media-stream"
    assert stream_connect_url(url, plain_http=True) == "ws://127.0.0.1:8123/media-stream"
    assert stream_connect_url(url, plain_http=False) == url


def test_the_carrier_refuses_unsupported_twiml_before_dialing():
    carrier = EmulatorCarrier(Exchange())
    with pytest.raises(CarrierError) as info:
        carrier.place_call(to="+15005550100", from_="+15005550006",
                           twiml="<Response><Say>Hi</Say></Response>",
                           status_callback="http://testserver/calls/twilio/status", call_id="")
    assert info.value.code == UNSUPPORTED and info.value.http_status == 400


def test_updates_of_unknown_calls_get_twilios_20404():
    exchange = Exchange()
    try:
        for action in (lambda: exchange.hangup("CA" + "0" * 32),
                       lambda: exchange.redirect("CA" + "0" * 32, "<Response><Hangup/></Response>")):
            with pytest.raises(CarrierError) as info:
                action()
            assert info.value.code == "20404" and info.value.call_not_active and info.value.http_status == 404
        with pytest.raises(CarrierError) as bad:
            exchange.redirect("CA" + "0" * 32, "<Response><Enqueue>q</Enqueue></Response>")
        assert bad.value.code == UNSUPPORTED
    finally:
        exchange.close()


@pytest.mark.django_db
def test_an_unknown_scenario_in_the_metadata_fails_the_call_with_the_reason(inprocess_exchange):
    with pytest.raises(PlaceCallFailed) as info:
        services.place_call(to="+15005550100", metadata={"scenario": "no-such-callee"})
    call = info.value.call
    assert call.status == CallStatus.FAILED and call.end_reason == EndReason.CARRIER_FAILED
    assert call.error_code == "scenario"
    assert "unknown scenario 'no-such-callee'" in call.error_message


@pytest.mark.django_db
def test_the_api_refuses_an_unknown_scenario_with_the_list(api_client):
    response = api_client.post("/calls/outbound", {"to": "+15005550100", "metadata": {"scenario": "nobody"}},
                               format="json")
    assert response.status_code == 400
    (message,) = response.json()["metadata"]
    assert "unknown scenario 'nobody'; available: asks-for-person, default" in message


@pytest.mark.django_db
def test_the_api_checks_scenarios_only_for_the_emulated_carrier(api_client, settings):
    from calls.api.serializers import OutboundCallSerializer

    settings.CARRIER = "twilio"
    serializer = OutboundCallSerializer(data={"to": "+15005550100", "metadata": {"scenario": "nobody"}})
    assert serializer.is_valid(), serializer.errors
    settings.CARRIER = "emulator"
    serializer = OutboundCallSerializer(data={"to": "+15005550100", "metadata": {"scenario": 7}})
    assert not serializer.is_valid()
    assert "metadata" in serializer.errors

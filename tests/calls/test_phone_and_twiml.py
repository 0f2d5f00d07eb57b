"""E.164 parsing, the allow-list rules, and the TwiML builders."""

from __future__ import annotations

import pytest

from calls.errors import DestinationNotAllowed, InvalidPhoneNumber
from calls.phone import allowed_destinations, check_destination, parse_e164
from calls.twiml import media_stream_url, stream_twiml, transfer_twiml


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+14155550100", "+14155550100"),
        (" +1 (415) 555-0100 ", "+14155550100"),
        ("+44 20 7183 8750", "+442071838750"),
    ],
)
def test_parse_e164_normalises(raw, e164):
    assert parse_e164(raw) == e164


@pytest.mark.parametrize(
    "raw", ["14155550100", "(415) 555-0100", "+1415555", "+15555555555", "+", "", None, 14155550100]
)
def test_parse_e164_refuses_national_short_invalid_and_non_strings(raw):
    with pytest.raises(InvalidPhoneNumber):
        parse_e164(raw)


def test_allow_list_defaults_to_the_caller_ids_country(settings):
    settings.DIAL_ALLOWED_DESTINATIONS = []
    assert allowed_destinations("+442071838750") == ["44"]
    check_destination("+447911123456", "+442071838750")
    with pytest.raises(DestinationNotAllowed):
        check_destination("+14155550100", "+442071838750")


def test_allow_list_entries(settings):
    settings.DIAL_ALLOWED_DESTINATIONS = ["1", "+4420"]
    check_destination("+14155550100", "+33612345678")
    check_destination("+442071838750", "+14155550100")
    with pytest.raises(DestinationNotAllowed, match=r"\+4420"):
        check_destination("+447911123456", "+14155550100")  # +44 7… is outside the +4420 prefix
    # "1" is the country code 1, not a prefix of other codes such as +1 vs +12 ambiguity.
    settings.DIAL_ALLOWED_DESTINATIONS = ["3"]
    with pytest.raises(DestinationNotAllowed):
        check_destination("+33612345678", "+14155550100")
    settings.DIAL_ALLOWED_DESTINATIONS = ["*"]
    check_destination("+33612345678", "+14155550100")


def test_stream_twiml_is_connect_stream_with_the_call_id(settings):
    settings.PUBLIC_BASE_URL = "https://bot.example.org"
    assert media_stream_url() == "wss://bot.example.org/media-stream"
    assert stream_twiml("id-1&2") == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://bot.example.org/media-stream"><Parameter name="call_id" value="id-1&amp;2" />'
        "</Stream></Connect></Response>"
    )


def test_transfer_twiml_says_then_dials_with_caller_id():
    assert transfer_twiml("+14155550123", caller_id="+14155550100", say="Hold on <please>") == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Hold on &lt;please&gt;</Say>'
        '<Dial callerId="+14155550100"><Number>+14155550123</Number></Dial></Response>'
    )
    assert "<Say>" not in transfer_twiml("+14155550123", caller_id="+14155550100", say=None)

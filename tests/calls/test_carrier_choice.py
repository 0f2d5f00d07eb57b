"""Which carrier places the calls: ``CARRIER`` and the Twilio credentials (calls/carriers/__init__.py)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from calls.carriers import carrier_name, get_carrier
from calls.carriers.emulator import EmulatorCarrier
from calls.carriers.twilio import TwilioCarrier

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "carrier-choice-auth-token"


@pytest.mark.parametrize(
    ("account_sid", "auth_token", "expected", "cls"),
    [
        pytest.param("", "", "emulator", EmulatorCarrier, id="no-credentials"),
        pytest.param(SID, TOKEN, "twilio", TwilioCarrier, id="both-credentials"),
        pytest.param(SID, "", "emulator", EmulatorCarrier, id="account-sid-only"),
        pytest.param("", TOKEN, "emulator", EmulatorCarrier, id="auth-token-only"),
    ],
)
def test_auto_picks_twilio_only_with_both_credentials(settings, account_sid, auth_token, expected, cls):
    settings.CARRIER = "auto"
    settings.TWILIO_ACCOUNT_SID = account_sid
    settings.TWILIO_AUTH_TOKEN = auth_token
    assert carrier_name() == expected
    carrier = get_carrier()
    assert type(carrier) is cls and carrier.name == expected


def test_an_explicit_carrier_wins_over_the_credentials(settings):
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, TOKEN
    settings.CARRIER = "Emulator"
    assert carrier_name() == "emulator" and type(get_carrier()) is EmulatorCarrier
    assert carrier_name("twilio") == "twilio" and type(get_carrier("twilio")) is TwilioCarrier


def test_twilio_forced_without_credentials_is_improperly_configured(settings):
    settings.CARRIER = "twilio"
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, ""
    assert carrier_name() == "twilio"
    with pytest.raises(ImproperlyConfigured, match="TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"):
        get_carrier()


@pytest.mark.parametrize("name", ["plivo", "twillio", "none"])
def test_an_unknown_carrier_is_improperly_configured(settings, name):
    settings.CARRIER = name
    with pytest.raises(ImproperlyConfigured, match=f"CARRIER must be auto, twilio or emulator, not '{name}'"):
        carrier_name()
    with pytest.raises(ImproperlyConfigured):
        get_carrier()

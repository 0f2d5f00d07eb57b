"""The carrier interface: the three things call control asks of a phone network.

A carrier places an outbound call that runs a TwiML document, hangs a live call up, and redirects a
live call to new TwiML (used for the transfer ``<Dial>``). Two implementations exist:

* ``TwilioCarrier`` (``calls/carriers/twilio.py``): Twilio's REST API through twilio-python. It is
  the only module that knows the Twilio SDK.
* ``EmulatorCarrier`` (``calls/carriers/emulator.py``): the built-in offline stand-in for Twilio.

``get_carrier()`` picks one from the ``CARRIER`` setting. Carrier methods are synchronous and may
block on the network for up to ``TWILIO_TIMEOUT_S``; async code must run them in a worker thread
(``calls.services.ahangup_call`` / ``atransfer_call`` do).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from calls.errors import CallControlError

__all__ = ["Carrier", "CarrierError", "PlacedCall", "carrier_name", "get_carrier"]


class CarrierError(CallControlError):
    """The carrier refused a request or could not be reached.

    ``code``: the carrier's error code as a string, e.g. Twilio's ``"21211"`` (invalid To number),
    or ``"network"`` (connection refused/reset, DNS failure) or ``"timeout"`` (no answer within
    ``TWILIO_TIMEOUT_S``). ``message``: the carrier's human-readable message (never contains
    credentials). ``http_status``: the carrier's HTTP status, ``None`` when there was no response.
    ``call_not_active``: the carrier says the call does not exist or is no longer in progress
    (Twilio 20404 / 21220), which a hang-up treats as success.
    """

    def __init__(
        self, code: str, message: str, http_status: int | None = None, *, call_not_active: bool = False
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = str(code)
        self.message = message
        self.http_status = http_status
        self.call_not_active = call_not_active


@dataclass(frozen=True)
class PlacedCall:
    """What the carrier answered when it accepted a call.

    ``call_sid``: the carrier's call id (Twilio ``CA`` + 32 hex). ``status``: the initial status,
    one of ``calls.models.CallStatus`` (normally ``"queued"``). ``account_sid``: the account that
    owns the call (empty when the carrier has no such notion).
    """

    call_sid: str
    status: str
    account_sid: str = ""


class Carrier(abc.ABC):
    """A phone network that can place, hang up and redirect calls.

    Every method raises ``CarrierError`` when the carrier refuses or cannot be reached; none of
    them touches the database (``calls.services`` records what happened).
    """

    #: Stored in ``Call.carrier`` so later actions on the call use the same carrier.
    name: str = ""

    @abc.abstractmethod
    def place_call(
        self, *, to: str, from_: str, twiml: str, status_callback: str, call_id: str
    ) -> PlacedCall:
        """Dial ``to`` from caller ID ``from_`` (both E.164) and run ``twiml`` when answered.

        ``status_callback``: absolute URL that receives form-encoded status callbacks for the
        ``initiated``, ``ringing``, ``answered`` and ``completed`` events. ``call_id``: our
        ``Call.id`` (also inside the TwiML as ``<Parameter name="call_id">``), for carriers that
        want to correlate. Returns the carrier's ``PlacedCall``.
        """

    @abc.abstractmethod
    def hangup(self, call_sid: str) -> None:
        """End the call ``call_sid`` whatever its state (Twilio: ``Status=completed``).

        Raises ``CarrierError`` with ``call_not_active=True`` when the call is unknown or has
        already ended; the caller decides whether that matters.
        """

    @abc.abstractmethod
    def transfer(self, call_sid: str, twiml: str) -> None:
        """Replace the TwiML of the live call ``call_sid`` with ``twiml`` (e.g. ``<Say>``+``<Dial>``).

        For a call inside ``<Connect><Stream>`` this closes the media stream. Raises
        ``CarrierError`` (``call_not_active=True`` when the call is no longer in progress).
        """


CARRIER_NAMES = ("twilio", "emulator")


def carrier_name(name: str | None = None) -> str:
    """Resolve a carrier name: ``name`` if given, else the ``CARRIER`` setting.

    ``"auto"`` means ``"twilio"`` when both ``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN`` are
    set, else ``"emulator"``. Raises ``ImproperlyConfigured`` for an unknown name.
    """
    chosen = (name or settings.CARRIER or "auto").strip().lower()
    if chosen == "auto":
        chosen = "twilio" if settings.TWILIO_ACCOUNT_SID and settings.TWILIO_AUTH_TOKEN else "emulator"
    if chosen not in CARRIER_NAMES:
        raise ImproperlyConfigured(f"CARRIER must be auto, twilio or emulator, not {chosen!r}")
    return chosen


def get_carrier(name: str | None = None) -> Carrier:
    """A new carrier instance: ``name`` (e.g. ``Call.carrier``) or the configured one.

    Cheap enough to call per action (the Twilio one builds a REST client, no network I/O).
    Raises ``ImproperlyConfigured`` when Twilio is forced without credentials.
    """
    chosen = carrier_name(name)
    if chosen == "twilio":
        from calls.carriers.twilio import TwilioCarrier

        return TwilioCarrier()
    from calls.carriers.emulator import EmulatorCarrier

    return EmulatorCarrier()

"""Exceptions raised by call control (``calls.services``, ``calls.carriers``, ``calls.phone``).

``CallControlError`` is the root, so the bot's tools can catch every failure of a call action in one
``except`` and tell the caller something sensible. The API maps them to HTTP statuses:

=============================  ======  ==========================================================
exception                      HTTP    meaning
=============================  ======  ==========================================================
``InvalidPhoneNumber``         400     not an E.164 number that libphonenumber considers valid
``DestinationNotAllowed``      400     valid number outside ``DIAL_ALLOWED_DESTINATIONS``
``TransferTargetMissing``      400     no ``to`` given and ``HUMAN_AGENT_NUMBER`` is empty
``CallNotActive``              409     the call ended (or was never placed); it cannot be redirected
``CarrierError``               502     the carrier (Twilio REST) refused or could not be reached
``PlaceCallFailed``            502     ``place_call`` saved the Call, then the carrier failed
=============================  ======  ==========================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from calls.carriers import CarrierError
    from calls.models import Call


class CallControlError(Exception):
    """Base class of every error raised while placing or controlling a call."""


class InvalidPhoneNumber(CallControlError, ValueError):
    """A phone number is not a valid E.164 number (``+`` then country code and subscriber number)."""


class DestinationNotAllowed(CallControlError):
    """A destination is valid but outside the dialing allow-list (toll-fraud protection)."""


class TransferTargetMissing(CallControlError):
    """A transfer was asked for without a number, and ``HUMAN_AGENT_NUMBER`` is not configured."""


class CallNotActive(CallControlError):
    """The call is not live (ended, failed, or never placed), so it cannot be redirected."""


class PlaceCallFailed(CallControlError):
    """The carrier could not place a call; the ``Call`` row exists with status ``failed``.

    ``call`` is that row (its ``id`` is what the API reports as ``call_id``) and ``error`` the
    ``CarrierError`` with the carrier's code and message.
    """

    def __init__(self, call: Call, error: CarrierError) -> None:
        super().__init__(f"carrier failed to place call {call.id}: {error}")
        self.call = call
        self.error = error

"""Phone numbers: strict E.164 parsing and the outbound-dialing allow-list (toll-fraud protection).

Parsing and validity come from libphonenumber (the ``phonenumbers`` package): a number is accepted
only when it is written in E.164 (``+``, country code, subscriber number; spaces, dashes, dots and
parentheses are tolerated and removed) and libphonenumber knows it as a valid number for its
country.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import phonenumbers
from django.conf import settings

from calls.errors import DestinationNotAllowed, InvalidPhoneNumber

_SEPARATORS = re.compile(r"[\s().\-]")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")


def parse_e164(value: str) -> str:
    """Normalise ``value`` to E.164 (``"+14155550100"``) or raise ``InvalidPhoneNumber``.

    The number must start with ``+`` and the country code (national formats are ambiguous, so
    they are refused) and be valid for that country according to libphonenumber.
    """
    if not isinstance(value, str):
        raise InvalidPhoneNumber("Enter a phone number as a string in E.164 format, e.g. +14155550100.")
    compact = _SEPARATORS.sub("", value.strip())
    if not compact.startswith("+"):
        raise InvalidPhoneNumber(
            "Enter the number in E.164 format: + then the country code, e.g. +14155550100."
        )
    if not _E164.match(compact):
        raise InvalidPhoneNumber("An E.164 number is + followed by at most 15 digits, e.g. +14155550100.")
    try:
        number = phonenumbers.parse(compact, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"Not a phone number: {exc}.") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber(f"{compact} is not a valid phone number for its country.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def country_code(e164: str) -> int:
    """The country calling code of an E.164 number (``"+442071838750"`` -> 44)."""
    return phonenumbers.parse(e164, None).country_code


def allowed_destinations(caller_id: str, configured: Iterable[str] | None = None) -> list[str]:
    """The effective allow-list: ``configured`` (default ``DIAL_ALLOWED_DESTINATIONS``) or, when that
    is empty, the country calling code of ``caller_id`` alone.

    Entries are country calling codes (``"1"``, ``"44"``), E.164 prefixes (``"+1415"``) or ``"*"``
    (any destination: only for accounts with their own fraud controls).
    """
    entries = [
        str(e).strip() for e in (settings.DIAL_ALLOWED_DESTINATIONS if configured is None else configured)
    ]
    entries = [e for e in entries if e]
    if entries:
        return entries
    return [str(country_code(caller_id))]


def check_destination(to: str, caller_id: str, configured: Iterable[str] | None = None) -> None:
    """Raise ``DestinationNotAllowed`` unless E.164 ``to`` matches the allow-list.

    A bare entry (``"44"``) matches numbers of that country calling code; an entry starting with
    ``+`` matches numbers starting with it. ``caller_id`` (E.164) supplies the default country.
    """
    entries = allowed_destinations(caller_id, configured)
    to_country = country_code(to)
    for entry in entries:
        if entry == "*":
            return
        if entry.startswith("+"):
            if to.startswith(entry):
                return
        elif entry.isdigit() and int(entry) == to_country:
            return
    shown = ", ".join(e if e.startswith("+") or e == "*" else f"+{e} (country code)" for e in entries)
    raise DestinationNotAllowed(
        f"Calls to {to} are not allowed; allowed destinations: {shown}. "
        "Set DIAL_ALLOWED_DESTINATIONS to change this."
    )

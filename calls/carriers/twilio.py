"""Twilio's Programmable Voice REST API as a ``Carrier`` (twilio-python, synchronous client).

The synchronous ``twilio.rest.Client`` is used on purpose: its ``TwilioHttpClient(timeout=...)``
honours the timeout, while the async ``AsyncTwilioHttpClient`` ignores it and must be created
inside a running event loop (reference notes B3). Async callers run these methods in a worker
thread (``calls.services.ahangup_call`` / ``atransfer_call``).

This is the only module that knows the Twilio SDK; every SDK or transport exception leaves it as a
``CarrierError`` carrying Twilio's error code and message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TypeVar

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from calls.carriers import Carrier, CarrierError, PlacedCall

logger = logging.getLogger(__name__)

#: Status callback events asked for on every call (Calls API ``StatusCallbackEvent``; Twilio's
#: default is ``completed`` only).
STATUS_CALLBACK_EVENTS = ("initiated", "ringing", "answered", "completed")

#: Twilio error codes meaning "this call is not live", returned by ``POST /Calls/{Sid}.json``:
#: 20404 "The requested resource ... was not found" (unknown SID, or a call Twilio no longer
#: lets you update) and 21220 "Invalid call state: you attempted a realtime operation on a Call
#: that was not in-progress" (twilio.com/docs/api/errors/20404, /21220; twilio-python issue #877
#: shows a transfer of an ended call failing with 20404).
CALL_NOT_ACTIVE_CODES = frozenset({"20404", "21220"})

# twilio-python prefixes the API's message with its own "Unable to <verb> record: ".
_SDK_PREFIX = re.compile(r"^Unable to \w+ record:\s*")

T = TypeVar("T")


class TwilioCarrier(Carrier):
    """Calls through the Twilio REST API with the account in ``TWILIO_ACCOUNT_SID``/``TWILIO_AUTH_TOKEN``.

    ``TWILIO_API_BASE_URL`` (tests only) points the client at a fake API instead of
    ``https://api.twilio.com``; ``TWILIO_TIMEOUT_S`` bounds each REST request (connect and read).
    Raises ``ImproperlyConfigured`` when the credentials are missing.
    """

    name = "twilio"

    def __init__(self) -> None:
        account_sid, auth_token = settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN
        if not (account_sid and auth_token):
            raise ImproperlyConfigured("the Twilio carrier needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        self.timeout_s = float(settings.TWILIO_TIMEOUT_S)
        self.client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=self.timeout_s))
        if settings.TWILIO_API_BASE_URL:
            self.client.api.base_url = settings.TWILIO_API_BASE_URL.rstrip("/")
        self.base_url = self.client.api.base_url

    def place_call(
        self, *, to: str, from_: str, twiml: str, status_callback: str, call_id: str
    ) -> PlacedCall:
        """``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` with To, From, Twiml and the status callback.

        ``call_id`` is not sent (it travels inside the TwiML and the callback URL).
        """
        instance = self._request(
            "place call",
            lambda: self.client.calls.create(
                to=to,
                from_=from_,
                twiml=twiml,
                status_callback=status_callback,
                status_callback_method="POST",
                status_callback_event=list(STATUS_CALLBACK_EVENTS),
            ),
        )
        logger.info(
            "twilio accepted call %s for call_id=%s (status %s)", instance.sid, call_id, instance.status
        )
        return PlacedCall(
            call_sid=instance.sid, status=str(instance.status), account_sid=instance.account_sid or ""
        )

    def hangup(self, call_sid: str) -> None:
        """``POST .../Calls/{call_sid}.json`` with ``Status=completed``.

        ``completed`` (not ``canceled``) ends the call whatever its state: Twilio documents
        ``canceled`` as affecting only queued or ringing calls.
        """
        self._request("hang up", lambda: self.client.calls(call_sid).update(status="completed"))

    def transfer(self, call_sid: str, twiml: str) -> None:
        """``POST .../Calls/{call_sid}.json`` with ``Twiml=<the new document>`` (redirects the live call)."""
        self._request("transfer", lambda: self.client.calls(call_sid).update(twiml=twiml))

    def _request(self, action: str, send: Callable[[], T]) -> T:
        """Run one SDK request, turning SDK and transport failures into ``CarrierError``."""
        try:
            return send()
        except (TwilioException, requests.RequestException) as exc:
            error = self._carrier_error(exc)
            logger.warning("twilio %s failed: %s (HTTP %s)", action, error, error.http_status)
            raise error from exc

    def _carrier_error(self, exc: Exception) -> CarrierError:
        if isinstance(exc, TwilioRestException):
            code = str(exc.code or exc.status)
            message = _SDK_PREFIX.sub("", str(exc.msg)) or f"HTTP {exc.status}"
            return CarrierError(code, message, exc.status, call_not_active=code in CALL_NOT_ACTIVE_CODES)
        if isinstance(exc, TwilioServiceException):  # RFC 9457 problem details (twilio-python 9.x)
            code = str(exc.code)
            message = exc.detail or exc.title
            return CarrierError(code, message, exc.status, call_not_active=code in CALL_NOT_ACTIVE_CODES)
        if isinstance(exc, TwilioException):  # client-side failures, e.g. missing credentials
            return CarrierError("twilio", str(exc) or type(exc).__name__)
        if isinstance(exc, requests.Timeout):  # checked before ConnectionError: ConnectTimeout is both
            return CarrierError("timeout", f"the Twilio REST API did not answer within {self.timeout_s:g} s")
        return CarrierError(
            "network", f"could not reach the Twilio REST API at {self.base_url} ({type(exc).__name__})"
        )

"""Twilio's call status callbacks: ``POST /calls/twilio/status`` (form-encoded).

Twilio posts ``CallSid``, ``CallStatus`` (``queued|initiated|ringing|in-progress|completed|busy|
failed|no-answer|canceled``), ``SequenceNumber``, ``Timestamp``, ``CallDuration`` (final only) and
more for each event asked for with ``StatusCallbackEvent``. Callbacks may arrive out of order or
twice; ``calls.services.apply_status_callback`` makes that harmless.

Authenticity: when ``TWILIO_AUTH_TOKEN`` is set (whatever the carrier: the emulator signs its
callbacks with it too), ``X-Twilio-Signature`` must be Twilio's signature of the public URL
(``PUBLIC_BASE_URL`` + path + query string) and the POST parameters, checked with
``twilio.request_validator.RequestValidator`` (base64 HMAC-SHA1 keyed by the auth token,
twilio.com/docs/usage/webhooks/webhooks-security). The public URL comes from settings, not from
the request, because a tunnel or proxy in front of Django rewrites the host and scheme.

Responses: 204 applied or ignored as late/duplicate, 400 without ``CallSid``/a known
``CallStatus``, 403 bad signature, 404 unknown call (logged), 405 not a POST.
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import RequestValidator

from calls.models import Call, CallStatus
from calls.services import apply_status_callback

logger = logging.getLogger(__name__)


def public_url(request: HttpRequest) -> str:
    """The URL Twilio requested, as it saw it: ``PUBLIC_BASE_URL`` + path + query string."""
    return settings.PUBLIC_BASE_URL + request.get_full_path()


def signature_is_valid(request: HttpRequest, auth_token: str) -> bool:
    """Whether ``X-Twilio-Signature`` signs ``public_url(request)`` + ``request.POST`` with ``auth_token``."""
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return False
    return RequestValidator(auth_token).validate(public_url(request), request.POST, signature)


def find_call(call_sid: str, call_id: str | None) -> Call | None:
    """The call of a callback: by ``CallSid``, else by our ``call_id`` (from the callback URL) when that
    row has no CallSid yet or the same one. ``None`` when neither matches."""
    call = Call.objects.filter(call_sid=call_sid).first()
    if call is not None or not call_id:
        return call
    try:
        pk = uuid.UUID(call_id)
    except ValueError:
        return None
    call = Call.objects.filter(pk=pk).first()
    if call is not None and call.call_sid in (None, "", call_sid):
        return call
    return None


@csrf_exempt
@require_POST
def twilio_status_callback(request: HttpRequest) -> HttpResponse:
    """Record a Twilio call status callback on its ``Call`` (see the module docstring)."""
    auth_token = settings.TWILIO_AUTH_TOKEN
    if auth_token and not signature_is_valid(request, auth_token):
        logger.warning("status callback rejected: bad X-Twilio-Signature for %s", request.get_full_path())
        return HttpResponse("invalid X-Twilio-Signature", status=403, content_type="text/plain")

    call_sid = request.POST.get("CallSid", "")
    status = request.POST.get("CallStatus", "")
    if not call_sid or status not in CallStatus.values:
        logger.warning("status callback without CallSid or with unknown CallStatus %r", status[:32])
        return HttpResponse(
            "CallSid and a known CallStatus are required", status=400, content_type="text/plain"
        )

    call = find_call(call_sid, request.GET.get("call_id"))
    if call is None:
        logger.warning("status callback %s for unknown call %s", status, call_sid)
        return HttpResponse("unknown call", status=404, content_type="text/plain")

    apply_status_callback(call, request.POST)
    return HttpResponse(status=204)

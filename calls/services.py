"""Call actions: place a call, hang it up, transfer it, apply carrier status callbacks.

This is the one module that performs them; the REST API (``calls/api``), the bot's tools
(``media_ws``) and the management commands all call it. Each action asks the carrier first, then
records what happened on the ``Call`` (and a ``CallEvent``), then tells the live media session
through the channel layer:

* group ``call_<CallSid>``
* ``{"type": "call.hangup", "reason": "<EndReason value>"}`` after a hang-up
* ``{"type": "call.transfer", "to": "+E164"}`` after a transfer

The synchronous functions block on the carrier for up to ``TWILIO_TIMEOUT_S``; from async code use
``ahangup_call`` / ``atransfer_call``, which run the carrier in a worker thread and the ORM through
``database_sync_to_async`` so the event loop never waits.

Errors (all ``calls.errors.CallControlError``): ``InvalidPhoneNumber``, ``DestinationNotAllowed``,
``TransferTargetMissing``, ``CallNotActive``, ``CarrierError``, ``PlaceCallFailed``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone

from calls.carriers import Carrier, CarrierError, PlacedCall, carrier_name, get_carrier
from calls.errors import CallControlError, CallNotActive, PlaceCallFailed, TransferTargetMissing
from calls.models import (
    FINAL_STATUSES,
    STATUS_RANK,
    Call,
    CallDirection,
    CallEvent,
    CallStatus,
    EndReason,
    EventKind,
)
from calls.phone import check_destination, parse_e164
from calls.twiml import stream_twiml, transfer_twiml

logger = logging.getLogger(__name__)

#: Status-callback fields kept in the ``CallEvent`` of each callback (Twilio's names; the call
#: status callback parameters, twilio.com/docs/voice/api/call-resource#statuscallback).
STATUS_CALLBACK_FIELDS = (
    "CallStatus",
    "SequenceNumber",
    "Timestamp",
    "CallbackSource",
    "CallDuration",
    "SipResponseCode",
    "AnsweredBy",
    "ErrorCode",
    "ErrorMessage",
)

_NOT_ANSWERED = frozenset({CallStatus.BUSY, CallStatus.NO_ANSWER, CallStatus.CANCELED})


class _Unset(enum.Enum):
    UNSET = 0


#: ``transfer_call(say=ANNOUNCE)`` speaks ``TRANSFER_ANNOUNCEMENT``; ``say=None`` speaks nothing.
ANNOUNCE: Literal[_Unset.UNSET] = _Unset.UNSET


def group_name(call_sid: str) -> str:
    """Channel-layer group of the live media session of ``call_sid``: ``"call_<CallSid>"``."""
    return f"call_{call_sid}"


def status_callback_url(call_id: Any) -> str:
    """Absolute URL of the status webhook for the call ``call_id`` (``Call.id``).

    ``PUBLIC_BASE_URL/calls/twilio/status?call_id=<uuid>``: the ``call_id`` lets the webhook find
    the row when the ``initiated`` callback overtakes the REST response that carries the CallSid.
    """
    return f"{settings.PUBLIC_BASE_URL}{reverse('calls:twilio-status')}?call_id={call_id}"


def get_call(key: str, queryset: QuerySet[Call] | None = None) -> Call:
    """The call whose CallSid is ``key``, else whose id (UUID) is ``key`` (a failed call has no
    CallSid). Raises ``Call.DoesNotExist``."""
    queryset = queryset if queryset is not None else Call.objects.all()
    call = queryset.filter(call_sid=key).first()
    if call is None:
        try:
            call = queryset.filter(pk=uuid.UUID(str(key))).first()
        except ValueError:
            call = None
    if call is None:
        raise Call.DoesNotExist(f"no call with CallSid or id {key!r}")
    return call


# --- placing a call ---------------------------------------------------------------------------


def place_call(
    *,
    to: str,
    from_: str | None = None,
    greeting: str | None = None,
    instructions: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    created_by: Any = None,
    carrier: Carrier | None = None,
) -> Call:
    """Place an outbound bot call to ``to`` and return its ``Call``.

    ``to``/``from_``: E.164 (``from_`` defaults to ``TWILIO_FROM_NUMBER``); ``to`` must pass the
    allow-list (``calls.phone.check_destination``). ``greeting``/``instructions`` default to
    ``DEFAULT_GREETING``/``DEFAULT_INSTRUCTIONS`` and are stored on the call for the session.
    ``metadata``: a JSON object kept on the call. ``carrier``: defaults to ``get_carrier()``.

    The ``Call`` (status ``queued``) is saved before the carrier is asked, so nothing is lost. On
    success the carrier's CallSid and status are stored. On failure the row gets status
    ``failed``, the carrier's code and message, end reason ``carrier-failed`` and an ``error``
    event, and ``PlaceCallFailed`` (carrying the row and the ``CarrierError``) is raised.
    Raises ``InvalidPhoneNumber``/``DestinationNotAllowed`` before anything is saved.
    """
    caller_id = parse_e164(from_ or settings.TWILIO_FROM_NUMBER)
    destination = parse_e164(to)
    check_destination(destination, caller_id)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError("metadata must be a mapping (a JSON object)")

    name = carrier.name if carrier is not None else carrier_name()
    call = Call.objects.create(
        status=CallStatus.QUEUED,
        direction=CallDirection.OUTBOUND,
        carrier=name,
        from_number=caller_id,
        to_number=destination,
        greeting=greeting or settings.DEFAULT_GREETING,
        instructions=instructions or settings.DEFAULT_INSTRUCTIONS,
        metadata=dict(metadata or {}),
        created_by=created_by,
    )
    try:
        chosen = carrier if carrier is not None else _carrier(name)
        placed = chosen.place_call(
            to=destination,
            from_=caller_id,
            twiml=stream_twiml(str(call.id)),
            status_callback=status_callback_url(call.id),
            call_id=str(call.id),
        )
    except CarrierError as exc:
        _record_place_failure(call, exc)
        raise PlaceCallFailed(call, exc) from exc
    _record_placed(call, placed)
    logger.info("placed call %s (%s) via %s to %s", call.call_sid, call.id, name, destination)
    return call


def _carrier(name: str | None) -> Carrier:
    try:
        return get_carrier(name or None)
    except ImproperlyConfigured as exc:
        raise CarrierError("config", str(exc)) from exc


def _record_placed(call: Call, placed: PlacedCall) -> None:
    # A status callback may already have moved the row on (it can overtake the REST response):
    # take the SID, but never move the status backwards.
    with transaction.atomic():
        row = Call.objects.select_for_update().get(pk=call.pk)
        row.call_sid = placed.call_sid
        row.account_sid = placed.account_sid or row.account_sid
        if STATUS_RANK.get(placed.status, -1) > STATUS_RANK[row.status]:
            row.status = placed.status
        row.save(update_fields=["call_sid", "account_sid", "status"])
    call.call_sid, call.account_sid, call.status = row.call_sid, row.account_sid, row.status


def _record_place_failure(call: Call, exc: CarrierError) -> None:
    now = timezone.now()
    Call.objects.filter(pk=call.pk).update(
        status=CallStatus.FAILED,
        error_code=exc.code[:16],
        error_message=exc.message,
        end_reason=EndReason.CARRIER_FAILED,
        ended_at=now,
    )
    CallEvent.objects.create(
        call=call,
        kind=EventKind.ERROR,
        at=now,
        data={
            "action": "place_call",
            "code": exc.code,
            "message": exc.message,
            "http_status": exc.http_status,
        },
    )
    call.refresh_from_db()


# --- hanging up -------------------------------------------------------------------------------


def hangup_call(call: Call, *, reason: str = EndReason.API_HANGUP, notify_session: bool = True) -> bool:
    """End ``call`` at the carrier (Twilio REST ``Status=completed``) and return ``already_ended``.

    A call that has already ended is not an error: when the row is final, has no CallSid, or the
    carrier answers "not found / not in progress" (Twilio 20404, 21220), nothing is changed and
    ``True`` is returned. Otherwise ``end_reason`` becomes ``reason`` (an ``EndReason`` value)
    unless one is already set. Either way a ``hangup`` event is logged and, when the call has a
    CallSid and ``notify_session`` is true, ``{"type": "call.hangup", "reason": reason}`` goes to
    group ``call_<CallSid>`` (the session itself passes ``notify_session=False``).

    The final status and duration arrive later through the status callback. Raises
    ``CarrierError`` for any other carrier failure (nothing recorded then).
    """
    reason = EndReason(reason).value
    claimed = _claim_end_reason(call, reason)
    try:
        already_ended, code = _hangup_at_carrier(call)
    except CarrierError:
        _release_end_reason(call, reason, claimed)
        raise
    if already_ended:
        _release_end_reason(call, reason, claimed)  # it ended by itself: the reason is not ours
    _record_hangup(call, reason, already_ended, code)
    if notify_session and call.call_sid:
        _notify(call.call_sid, {"type": "call.hangup", "reason": reason})
    return already_ended


async def ahangup_call(
    call: Call, *, reason: str = EndReason.API_HANGUP, notify_session: bool = True
) -> bool:
    """``hangup_call`` for async code: the carrier runs in a worker thread, the ORM via
    ``database_sync_to_async``, and the group message is awaited. Same result and errors."""
    reason = EndReason(reason).value
    claimed = await database_sync_to_async(_claim_end_reason)(call, reason)
    try:
        already_ended, code = await asyncio.to_thread(_hangup_at_carrier, call)
    except CarrierError:
        await database_sync_to_async(_release_end_reason)(call, reason, claimed)
        raise
    if already_ended:
        await database_sync_to_async(_release_end_reason)(call, reason, claimed)
    await database_sync_to_async(_record_hangup)(call, reason, already_ended, code)
    if notify_session and call.call_sid:
        await _anotify(call.call_sid, {"type": "call.hangup", "reason": reason})
    return already_ended


def _claim_end_reason(call: Call, reason: str) -> bool:
    """Record why the call is about to end *before* asking the carrier: Twilio may send the stream's
    ``stop`` before the REST request has even returned, and the session ending on that ``stop``
    must find the real reason rather than guess "caller hung up". True if this call set it."""
    if not call.call_sid or call.is_final:
        return False
    return Call.objects.filter(pk=call.pk, end_reason="").update(end_reason=reason) == 1


def _release_end_reason(call: Call, reason: str, claimed: bool) -> None:
    """Undo ``_claim_end_reason`` when the action did not happen."""
    if claimed:
        Call.objects.filter(pk=call.pk, end_reason=reason).update(end_reason="")


def _hangup_at_carrier(call: Call) -> tuple[bool, str]:
    """Ask the carrier to end the call; ``(already_ended, carrier_code)``."""
    if not call.call_sid or call.is_final:
        return True, ""
    try:
        _carrier(call.carrier).hangup(call.call_sid)
    except CarrierError as exc:
        if exc.call_not_active:
            logger.info("hang-up of %s: already ended at the carrier (%s)", call.call_sid, exc.code)
            return True, exc.code
        raise
    return False, ""


def _record_hangup(call: Call, reason: str, already_ended: bool, code: str) -> None:
    if not already_ended:
        Call.objects.filter(pk=call.pk, end_reason="").update(end_reason=reason)
    CallEvent.objects.create(
        call_id=call.pk,
        kind=EventKind.HANGUP,
        at=timezone.now(),
        data={"reason": reason, "already_ended": already_ended, "carrier_code": code},
    )
    call.refresh_from_db()


# --- transferring -----------------------------------------------------------------------------


def transfer_call(
    call: Call, *, to: str | None = None, say: str | _Unset | None = ANNOUNCE, notify_session: bool = True
) -> str:
    """Hand ``call`` to a person: redirect the live call to ``<Say>`` then ``<Dial>``; return the number.

    ``to``: E.164, defaults to ``HUMAN_AGENT_NUMBER``; it must pass the same allow-list as
    outbound calls (the caller ID's country is the call's ``From``). ``say``: the hand-off line;
    by default ``TRANSFER_ANNOUNCEMENT``; ``None`` omits the ``<Say>`` (the bot has already
    spoken its own line). The ``<Dial>`` uses the call's ``From`` as ``callerId``.

    Records ``transfer_to``, end reason ``transferred`` and a ``transfer`` event, then sends
    ``{"type": "call.transfer", "to": number}`` to group ``call_<CallSid>``.
    Raises ``TransferTargetMissing`` (no number at all), ``InvalidPhoneNumber``,
    ``DestinationNotAllowed``, ``CallNotActive`` (the call ended or was never placed, including
    when the carrier says so) or ``CarrierError``.
    """
    target, twiml = _prepare_transfer(call, to, say)
    claimed = _claim_end_reason(call, EndReason.TRANSFERRED)
    try:
        _transfer_at_carrier(call, twiml)
    except CallControlError:
        _release_end_reason(call, EndReason.TRANSFERRED, claimed)
        raise
    _record_transfer(call, target, twiml)
    if notify_session:
        _notify(call.call_sid, {"type": "call.transfer", "to": target})
    return target


async def atransfer_call(
    call: Call, *, to: str | None = None, say: str | _Unset | None = ANNOUNCE, notify_session: bool = True
) -> str:
    """``transfer_call`` for async code (carrier in a worker thread, ORM via
    ``database_sync_to_async``, group message awaited). Same result and errors."""
    target, twiml = _prepare_transfer(call, to, say)
    claimed = await database_sync_to_async(_claim_end_reason)(call, EndReason.TRANSFERRED)
    try:
        await asyncio.to_thread(_transfer_at_carrier, call, twiml)
    except CallControlError:
        await database_sync_to_async(_release_end_reason)(call, EndReason.TRANSFERRED, claimed)
        raise
    await database_sync_to_async(_record_transfer)(call, target, twiml)
    if notify_session:
        await _anotify(call.call_sid, {"type": "call.transfer", "to": target})
    return target


def transfer_target(to: str | None, call: Call) -> str:
    """The validated E.164 transfer destination for ``call``: ``to`` or ``HUMAN_AGENT_NUMBER``.

    Raises ``TransferTargetMissing``, ``InvalidPhoneNumber`` or ``DestinationNotAllowed``.
    """
    raw = (to or "").strip() or settings.HUMAN_AGENT_NUMBER.strip()
    if not raw:
        raise TransferTargetMissing('No number to transfer to: give "to" or set HUMAN_AGENT_NUMBER.')
    target = parse_e164(raw)
    check_destination(target, call.from_number or parse_e164(settings.TWILIO_FROM_NUMBER))
    return target


def _prepare_transfer(call: Call, to: str | None, say: str | _Unset | None) -> tuple[str, str]:
    target = transfer_target(to, call)
    if not call.call_sid or call.is_final:
        raise CallNotActive(f"call {call.call_sid or call.id} is {call.status}; it cannot be transferred")
    line = settings.TRANSFER_ANNOUNCEMENT if say is ANNOUNCE else say
    caller_id = call.from_number or parse_e164(settings.TWILIO_FROM_NUMBER)
    return target, transfer_twiml(target, caller_id=caller_id, say=line or None)


def _transfer_at_carrier(call: Call, twiml: str) -> None:
    try:
        _carrier(call.carrier).transfer(call.call_sid, twiml)
    except CarrierError as exc:
        if exc.call_not_active:
            raise CallNotActive(
                f"call {call.call_sid} is no longer in progress at the carrier ({exc.code}: {exc.message})"
            ) from exc
        raise


def _record_transfer(call: Call, target: str, twiml: str) -> None:
    Call.objects.filter(pk=call.pk).update(transfer_to=target)
    Call.objects.filter(pk=call.pk, end_reason="").update(end_reason=EndReason.TRANSFERRED)
    CallEvent.objects.create(
        call_id=call.pk, kind=EventKind.TRANSFER, at=timezone.now(), data={"to": target, "twiml": twiml}
    )
    call.refresh_from_db()


# --- status callbacks -------------------------------------------------------------------------


def apply_status_callback(call: Call, fields: Mapping[str, str]) -> bool:
    """Apply one carrier status callback (Twilio's form fields) to ``call``; return whether it moved
    the status.

    Idempotent and order-tolerant: the status only moves forward in ``STATUS_RANK`` (a late
    ``ringing`` never overwrites ``in-progress`` or ``completed``; duplicates change nothing).
    ``in-progress`` sets ``answered_at``; a final status sets ``ended_at`` and ``duration_s``
    (``CallDuration``, seconds), and end reason ``not-answered`` for busy/no-answer/canceled or
    ``carrier-failed`` for failed when none is set. A row found through ``call_id`` before it got
    its CallSid adopts ``CallSid``. Every callback, applied or not, is logged as a ``status`` event
    with the fields of ``STATUS_CALLBACK_FIELDS`` present plus ``"applied"``.
    Raises ``ValueError`` for an unknown ``CallStatus``.
    """
    status = CallStatus(fields.get("CallStatus", ""))
    now = timezone.now()
    with transaction.atomic():
        row = Call.objects.select_for_update().get(pk=call.pk)
        applied = STATUS_RANK[status] > STATUS_RANK[row.status]
        changed: set[str] = set()
        if applied:
            row.status = status
            changed.add("status")
            if status == CallStatus.IN_PROGRESS and row.answered_at is None:
                row.answered_at = now
                changed.add("answered_at")
        if row.status == status and status in FINAL_STATUSES:
            # Also fills what an earlier duplicate of this final callback lacked.
            if row.ended_at is None:
                row.ended_at = now
                changed.add("ended_at")
            duration = _int_or_none(fields.get("CallDuration"))
            if duration is not None and row.duration_s is None:
                row.duration_s = duration
                changed.add("duration_s")
            if not row.end_reason and status in _NOT_ANSWERED:
                row.end_reason = EndReason.NOT_ANSWERED
                changed.add("end_reason")
            elif not row.end_reason and status == CallStatus.FAILED:
                row.end_reason = EndReason.CARRIER_FAILED
                changed.add("end_reason")
        if not row.call_sid and fields.get("CallSid"):
            row.call_sid = fields["CallSid"]
            changed.add("call_sid")
        if not row.account_sid and fields.get("AccountSid"):
            row.account_sid = fields["AccountSid"]
            changed.add("account_sid")
        if changed:
            row.save(update_fields=sorted(changed))
        data: dict[str, Any] = {
            k: fields[k] for k in STATUS_CALLBACK_FIELDS if fields.get(k) not in (None, "")
        }
        data["applied"] = applied
        CallEvent.objects.create(call=row, kind=EventKind.STATUS, at=now, data=data)
    for field in changed:
        setattr(call, field, getattr(row, field))
    if not applied:
        logger.info("status callback %s for %s ignored (call is %s)", status, row.call_sid, row.status)
    return applied


def _int_or_none(value: str | None) -> int | None:
    try:
        return max(0, int(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


# --- telling the live session -----------------------------------------------------------------


def _notify(call_sid: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group_name(call_sid), message)
    except Exception:  # the carrier action already happened; a dead channel layer must not undo it
        logger.exception("could not send %s to %s", message["type"], group_name(call_sid))


async def _anotify(call_sid: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(group_name(call_sid), message)
    except Exception:
        logger.exception("could not send %s to %s", message["type"], group_name(call_sid))

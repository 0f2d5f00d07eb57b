"""HTTP endpoints of the call API. Validation lives in ``serializers``, call actions in ``calls.services``.

Authentication: DRF token (``Authorization: Token <key>``) or the admin session; without
credentials the answer is 401 with ``WWW-Authenticate: Token``. ``POST /calls/outbound`` is
throttled per user by the ``dial`` rate (``DIAL_THROTTLE_RATE``, 429 beyond it).
"""

from __future__ import annotations

import mimetypes
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.http import FileResponse, Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from calls import services
from calls.api.serializers import (
    CallCreatedSerializer,
    CallDetailSerializer,
    CallSummarySerializer,
    CarrierErrorSerializer,
    HangupResultSerializer,
    OutboundCallSerializer,
    TransferResultSerializer,
    TransferSerializer,
    call_url,
)
from calls.carriers import CarrierError
from calls.errors import (
    CallNotActive,
    DestinationNotAllowed,
    InvalidPhoneNumber,
    PlaceCallFailed,
    TransferTargetMissing,
)
from calls.models import Call, CallStatus, EventKind


class DialRateThrottle(ScopedRateThrottle):
    """``ScopedRateThrottle`` that reads the rate when the request comes, not at import time, so
    ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` changes (tests, ``override_settings``) apply."""

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


def calls_with_counts() -> QuerySet[Call]:
    """Calls annotated with ``barge_ins`` (their number of ``barge_in`` events)."""
    return Call.objects.annotate(barge_ins=Count("events", filter=Q(events__kind=EventKind.BARGE_IN)))


def get_call_or_404(key: str, queryset: QuerySet[Call] | None = None) -> Call:
    """``services.get_call`` (by CallSid, else by id), as a 404 when there is no such call."""
    try:
        return services.get_call(key, queryset)
    except Call.DoesNotExist as exc:
        raise Http404("No call with this CallSid or id.") from exc


def carrier_error_body(detail: str, error: CarrierError, call: Call) -> dict[str, Any]:
    return {
        "detail": detail,
        "error_code": error.code,
        "error_message": error.message,
        "call_id": str(call.id),
    }


_CONFLICT = OpenApiResponse(description="The call is not in progress (ended, failed or never placed).")
_CARRIER = OpenApiResponse(CarrierErrorSerializer, description="The carrier refused or could not be reached.")


class OutboundCallView(APIView):
    """Place an outbound bot call."""

    throttle_classes = [DialRateThrottle]
    throttle_scope = "dial"

    @extend_schema(
        operation_id="calls_outbound",
        request=OutboundCallSerializer,
        responses={
            201: CallCreatedSerializer,
            400: OpenApiResponse(description="Per-field validation errors."),
            429: OpenApiResponse(description="Dial rate exceeded (DIAL_THROTTLE_RATE)."),
            502: _CARRIER,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = OutboundCallSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            call = services.place_call(
                to=data["to"],
                from_=data["from"],
                greeting=data.get("greeting"),
                instructions=data.get("instructions"),
                metadata=data.get("metadata"),
                created_by=request.user,
            )
        except (InvalidPhoneNumber, DestinationNotAllowed) as exc:  # the serializer already checks
            raise ValidationError({"to": [str(exc)]}) from exc
        except PlaceCallFailed as exc:
            body = carrier_error_body("The carrier could not place the call.", exc.error, exc.call)
            return Response(body, status=status.HTTP_502_BAD_GATEWAY)
        body = {
            "call_sid": call.call_sid,
            "status": call.status,
            "id": str(call.id),
            "to": call.to_number,
            "from": call.from_number,
            "carrier": call.carrier,
            "created_at": call.created_at,
            "url": call_url(call, request),
        }
        return Response(CallCreatedSerializer(body).data, status=status.HTTP_201_CREATED)


@extend_schema(
    parameters=[
        OpenApiParameter(
            "status", OpenApiTypes.STR, enum=CallStatus.values, description="only calls with this status"
        )
    ]
)
class CallListView(generics.ListAPIView):
    """Calls, newest first, paginated (``?page=``), filterable by ``?status=``."""

    serializer_class = CallSummarySerializer

    def get_queryset(self) -> QuerySet[Call]:
        queryset = calls_with_counts().order_by("-created_at")
        wanted = self.request.query_params.get("status")
        if wanted:
            if wanted not in CallStatus.values:
                raise ValidationError({"status": [f"Must be one of: {', '.join(CallStatus.values)}."]})
            queryset = queryset.filter(status=wanted)
        return queryset


class CallDetailView(generics.RetrieveAPIView):
    """One call with its transcript (turns) and events, by CallSid or id."""

    serializer_class = CallDetailSerializer

    def get_object(self) -> Call:
        queryset = calls_with_counts().prefetch_related("turns", "events")
        call = get_call_or_404(self.kwargs["call_sid"], queryset)
        self.check_object_permissions(self.request, call)
        return call


class CallHangupView(APIView):
    """End a call (Twilio REST ``Status=completed``); a call that already ended is not an error."""

    @extend_schema(
        operation_id="calls_hangup", request=None, responses={200: HangupResultSerializer, 502: _CARRIER}
    )
    def post(self, request: Request, call_sid: str) -> Response:
        call = get_call_or_404(call_sid)
        try:
            already_ended = services.hangup_call(call)
        except CarrierError as exc:
            body = carrier_error_body("The carrier could not hang up the call.", exc, call)
            return Response(body, status=status.HTTP_502_BAD_GATEWAY)
        return Response(
            {
                "call_sid": call.call_sid,
                "status": call.status,
                "already_ended": already_ended,
                "end_reason": call.end_reason,
                "url": call_url(call, request),
            }
        )


class CallTransferView(APIView):
    """Say the hand-off line, then redirect the live call to ``<Dial>`` a person."""

    @extend_schema(
        operation_id="calls_transfer",
        request=TransferSerializer,
        responses={
            200: TransferResultSerializer,
            400: OpenApiResponse(
                description="No number (give `to` or set HUMAN_AGENT_NUMBER), or not allowed."
            ),
            409: _CONFLICT,
            502: _CARRIER,
        },
    )
    def post(self, request: Request, call_sid: str) -> Response:
        call = get_call_or_404(call_sid)
        serializer = TransferSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            target = services.transfer_call(call, to=serializer.validated_data.get("to") or None)
        except (TransferTargetMissing, InvalidPhoneNumber, DestinationNotAllowed) as exc:
            raise ValidationError({"to": [str(exc)]}) from exc
        except CallNotActive as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except CarrierError as exc:
            body = carrier_error_body("The carrier could not transfer the call.", exc, call)
            return Response(body, status=status.HTTP_502_BAD_GATEWAY)
        return Response(
            {
                "call_sid": call.call_sid,
                "status": call.status,
                "transfer_to": target,
                "end_reason": call.end_reason,
                "url": call_url(call, request),
            }
        )


class CallRecordingView(APIView):
    """The call's local recording (audio file), 404 when it has none."""

    @extend_schema(
        operation_id="calls_recording",
        responses={(200, "audio/*"): OpenApiTypes.BINARY, 404: OpenApiResponse(description="No recording.")},
    )
    def get(self, request: Request, call_sid: str) -> FileResponse:
        call = get_call_or_404(call_sid)
        if not call.recording:
            raise Http404("This call has no local recording.")
        try:
            handle = call.recording.open("rb")
        except FileNotFoundError as exc:
            raise Http404("The recording file is missing.") from exc
        content_type = mimetypes.guess_type(call.recording.name)[0] or "application/octet-stream"
        return FileResponse(handle, content_type=content_type)

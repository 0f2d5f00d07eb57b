"""Request validation and response shapes of the call API.

Limits on ``POST /calls/outbound`` (400 with per-field errors beyond them):

* ``to``, ``from``: E.164 numbers libphonenumber knows as valid; ``to`` must match the allow-list
  (``DIAL_ALLOWED_DESTINATIONS``, by default the caller ID's own country).
* ``greeting``: 1–1000 characters; ``instructions``: 1–8000 characters.
* ``metadata``: a JSON object of at most 4096 bytes once serialised; with the emulated carrier,
  ``metadata.scenario`` must name a scenario (the emulated callee, ``calls/emulator/scenarios``).
* Unknown fields are rejected ("Unknown field."), so a misspelt ``greting`` is not silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from rest_framework import serializers

from calls.carriers import carrier_name
from calls.errors import DestinationNotAllowed, InvalidPhoneNumber
from calls.models import Call, CallEvent, Turn
from calls.phone import check_destination, parse_e164

GREETING_MAX_CHARS = 1000
INSTRUCTIONS_MAX_CHARS = 8000
METADATA_MAX_BYTES = 4096


class E164Field(serializers.CharField):
    """A phone number in E.164, normalised (``"+1 415-555-0100"`` -> ``"+14155550100"``)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 32)
        kwargs.setdefault("help_text", "E.164 phone number, e.g. +14155550100")
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        text = super().to_internal_value(data)
        try:
            return parse_e164(text)
        except InvalidPhoneNumber as exc:
            raise serializers.ValidationError(str(exc)) from exc


class StrictFieldsMixin:
    """Reject keys the serializer does not declare (400 ``{"<key>": ["Unknown field."]}``)."""

    def to_internal_value(self, data: Any) -> Any:
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, Mapping) else []  # type: ignore[attr-defined]
        errors = {key: ["Unknown field."] for key in unknown}
        try:
            value = super().to_internal_value(data)  # type: ignore[misc]
        except serializers.ValidationError as exc:
            if errors and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **errors}) from exc
            raise
        if errors:
            raise serializers.ValidationError(errors)
        return value


def _emulated() -> bool:
    """Whether calls go to the built-in emulated carrier (a bad CARRIER fails later, at dial time)."""
    try:
        return carrier_name() == "emulator"
    except ImproperlyConfigured:
        return False


class OutboundCallSerializer(StrictFieldsMixin, serializers.Serializer):
    """``POST /calls/outbound`` body: ``{"to", "from"?, "greeting"?, "instructions"?, "metadata"?}``."""

    to = E164Field(help_text="Number to call, E.164 (e.g. +14155550100); must be in the dialing allow-list.")
    greeting = serializers.CharField(
        required=False,
        max_length=GREETING_MAX_CHARS,
        help_text=f"First words the bot says (default DEFAULT_GREETING); max {GREETING_MAX_CHARS} chars.",
    )
    instructions = serializers.CharField(
        required=False,
        max_length=INSTRUCTIONS_MAX_CHARS,
        help_text=f"LLM system prompt (default DEFAULT_INSTRUCTIONS); max {INSTRUCTIONS_MAX_CHARS} chars.",
    )
    metadata = serializers.JSONField(
        required=False, help_text=f"Any JSON object kept with the call; at most {METADATA_MAX_BYTES} bytes."
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # "from" is a Python keyword, so it cannot be a class attribute.
        fields["from"] = E164Field(
            required=False, help_text="Caller ID, E.164 (default: TWILIO_FROM_NUMBER)."
        )
        return fields

    def validate_metadata(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        if len(json.dumps(value, separators=(",", ":")).encode()) > METADATA_MAX_BYTES:
            raise serializers.ValidationError(f"Must be at most {METADATA_MAX_BYTES} bytes as JSON.")
        if "scenario" in value and _emulated():
            # The emulated callee to ring (calls/emulator/scenarios); other carriers keep it as data.
            from calls.emulator.scenario import ScenarioError, load_scenario

            try:
                load_scenario(value["scenario"])
            except ScenarioError as exc:
                raise serializers.ValidationError(f"scenario: {exc}") from exc
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "from" not in attrs:
            try:
                attrs["from"] = parse_e164(settings.TWILIO_FROM_NUMBER)
            except InvalidPhoneNumber as exc:
                raise serializers.ValidationError(
                    {"from": [f"No caller ID given and TWILIO_FROM_NUMBER is not usable: {exc}"]}
                ) from exc
        try:
            check_destination(attrs["to"], attrs["from"])
        except DestinationNotAllowed as exc:
            raise serializers.ValidationError({"to": [str(exc)]}) from exc
        return attrs


class TransferSerializer(StrictFieldsMixin, serializers.Serializer):
    """``POST /calls/<call_sid>/transfer`` body: ``{"to"?}`` (default ``HUMAN_AGENT_NUMBER``)."""

    to = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=32,
        help_text="Number to transfer to, E.164 (default: HUMAN_AGENT_NUMBER); must be in the allow-list.",
    )


def call_url(call: Call, request: Any = None) -> str:
    """The detail URL of ``call`` (by CallSid, or by id for a call that never got one)."""
    path = reverse("calls:detail", kwargs={"call_sid": call.call_sid or str(call.id)})
    return request.build_absolute_uri(path) if request is not None else path


class TurnSerializer(serializers.ModelSerializer):
    class Meta:
        model = Turn
        fields = [
            "index",
            "role",
            "text",
            "heard_text",
            "interrupted",
            "approximate",
            "started_at",
            "ended_at",
            "audio_start_ms",
            "audio_end_ms",
            "speech_end_ms",
            "stt_final_ms",
            "llm_first_token_ms",
            "tts_first_byte_ms",
            "first_audio_ms",
            "voice_to_voice_ms",
        ]


class CallEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = CallEvent
        fields = ["kind", "at", "audio_ms", "data"]


class CallSummarySerializer(serializers.ModelSerializer):
    """One call in ``GET /calls/``."""

    to = serializers.CharField(source="to_number", read_only=True)
    barge_ins = serializers.IntegerField(read_only=True, help_text="number of barge-in events")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Call
        fields = [
            "id",
            "call_sid",
            "status",
            "direction",
            "to",
            "from",
            "carrier",
            "created_at",
            "answered_at",
            "ended_at",
            "duration_s",
            "end_reason",
            "error_code",
            "barge_ins",
            "url",
        ]
        read_only_fields = fields

    def build_field(self, field_name: str, info: Any, model_class: Any, nested_depth: int) -> Any:
        if field_name == "from":  # a Python keyword, so not declarable as a class attribute
            return serializers.CharField, {"source": "from_number", "read_only": True}
        return super().build_field(field_name, info, model_class, nested_depth)

    def get_url(self, call: Call) -> str:
        return call_url(call, self.context.get("request"))


class CallDetailSerializer(CallSummarySerializer):
    """``GET /calls/<call_sid>``: every field of the call, its transcript and its events."""

    turns = TurnSerializer(many=True, read_only=True)
    events = CallEventSerializer(many=True, read_only=True)
    recording = serializers.SerializerMethodField(help_text="URL of the local recording, null if none")

    class Meta(CallSummarySerializer.Meta):
        fields = [
            *CallSummarySerializer.Meta.fields,
            "stream_sid",
            "account_sid",
            "greeting",
            "instructions",
            "metadata",
            "error_message",
            "transfer_to",
            "recording",
            "recording_url",
            "turns",
            "events",
        ]
        read_only_fields = fields

    def get_recording(self, call: Call) -> str | None:
        if not call.recording:
            return None
        path = reverse("calls:recording", kwargs={"call_sid": call.call_sid or str(call.id)})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class CallCreatedSerializer(serializers.Serializer):
    """``201`` body of ``POST /calls/outbound``."""

    call_sid = serializers.CharField()
    status = serializers.CharField()
    id = serializers.UUIDField()
    to = serializers.CharField()
    carrier = serializers.CharField()
    created_at = serializers.DateTimeField()
    url = serializers.URLField()

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["from"] = serializers.CharField()
        return fields


class CarrierErrorSerializer(serializers.Serializer):
    """``502`` body when the carrier refuses or cannot be reached."""

    detail = serializers.CharField()
    error_code = serializers.CharField(help_text='Twilio error code, or "network" / "timeout" / "config"')
    error_message = serializers.CharField()
    call_id = serializers.UUIDField()


class HangupResultSerializer(serializers.Serializer):
    call_sid = serializers.CharField()
    status = serializers.CharField()
    already_ended = serializers.BooleanField()
    end_reason = serializers.CharField()
    url = serializers.URLField()


class TransferResultSerializer(serializers.Serializer):
    call_sid = serializers.CharField()
    status = serializers.CharField()
    transfer_to = serializers.CharField()
    end_reason = serializers.CharField()
    url = serializers.URLField()

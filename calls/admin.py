"""Call logs in the Django admin, read-only.

The list shows each call's status, numbers, start, duration and number of barge-ins, filtered by
status, direction and date and searchable by SID or number. A call's page shows every field, the
recording player (when there is a recording), the transcript (turns, with what the caller heard
and the per-turn latencies) and the events. Nothing can be added, changed or deleted here: the
logs are written by the carrier callbacks and the live session only.

Who may look is Django's model permissions: ``calls.view_call`` for the list and the call page,
``calls.view_turn`` and ``calls.view_callevent`` for its transcript and events (superusers have
them all). Staff without them get 403: the logs hold phone numbers, transcripts and recordings.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from calls.models import Call, CallEvent, EventKind, Turn
from calls.timeline import timeline_svg


class ReadOnlyAdminMixin:
    """No add, change or delete for anyone; viewing follows the model's ``view`` permission
    (Django's default ``has_view_permission``)."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class TurnInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Turn
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name = "turn"
    verbose_name_plural = "transcript"
    fields = [
        "index",
        "role",
        "text",
        "heard_text",
        "interrupted",
        "approximate",
        "speech_end_ms",
        "stt_final_ms",
        "llm_first_token_ms",
        "tts_first_byte_ms",
        "first_audio_ms",
        "voice_to_voice_ms",
    ]
    readonly_fields = fields
    ordering = ["index"]


class CallEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = CallEvent
    extra = 0
    can_delete = False
    fields = ["at", "kind", "audio_ms", "data"]
    readonly_fields = fields
    ordering = ["at", "id"]


@admin.register(Call)
class CallAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "call_label",
        "status",
        "to_number",
        "from_number",
        "start",
        "duration_s",
        "barge_ins",
        "end_reason",
        "carrier",
    ]
    list_filter = ["status", "direction", "created_at", "carrier", "end_reason"]
    search_fields = ["call_sid", "stream_sid", "to_number", "from_number"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    list_per_page = 50
    inlines = [TurnInline, CallEventInline]
    readonly_fields = ["recording_player", "barge_ins", "timeline"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "call_sid",
                    "stream_sid",
                    "account_sid",
                    "carrier",
                    "direction",
                    "status",
                    "from_number",
                    "to_number",
                ]
            },
        ),
        (
            "Timing",
            {"fields": ["created_at", "answered_at", "ended_at", "duration_s", "end_reason", "barge_ins"]},
        ),
        ("Timeline", {"fields": ["timeline"]}),
        ("Conversation", {"fields": ["greeting", "instructions", "metadata", "created_by"]}),
        ("Carrier errors and transfer", {"fields": ["error_code", "error_message", "transfer_to"]}),
        ("Recording", {"fields": ["recording_player", "recording", "recording_url"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Call]:
        return (
            super()
            .get_queryset(request)
            .annotate(_barge_ins=Count("events", filter=Q(events__kind=EventKind.BARGE_IN)))
        )

    @admin.display(description="call", ordering="call_sid")
    def call_label(self, call: Call) -> str:
        return call.call_sid or f"(no SID) {call.id}"

    @admin.display(description="start", ordering="created_at")
    def start(self, call: Call) -> object:
        return call.created_at

    @admin.display(description="barge-ins", ordering="_barge_ins")
    def barge_ins(self, call: Call) -> int:
        annotated = getattr(call, "_barge_ins", None)
        if annotated is not None:
            return annotated
        return call.events.filter(kind=EventKind.BARGE_IN).count()

    @admin.display(description="on the call clock")
    def timeline(self, call: Call) -> str:
        svg = timeline_svg(call.turns.order_by("index"), call.events.order_by("at", "id"))
        # Built from escaped text only (calls.timeline escapes every transcript and label).
        return mark_safe(svg) if svg else "nothing to draw yet"

    @admin.display(description="player")
    def recording_player(self, call: Call) -> str:
        if not call.recording:
            return "no recording"
        src = reverse("calls:recording", kwargs={"call_sid": call.call_sid or str(call.id)})
        return format_html('<audio controls preload="none" src="{}"></audio>', src)

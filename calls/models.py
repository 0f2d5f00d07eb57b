"""The call log: one ``Call`` per phone call, its ``Turn``s (the transcript) and ``CallEvent``s.

Times on the call's own clock (``*_ms`` fields) are milliseconds since the media stream started,
the clock Twilio's ``media.timestamp`` uses; wall-clock times are timezone-aware datetimes.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class CallStatus(models.TextChoices):
    """Twilio's call lifecycle (twilio.com/docs/voice/api/call-resource#call-status-values)."""

    QUEUED = "queued"
    INITIATED = "initiated"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    BUSY = "busy"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"


#: Statuses after which a call never changes again.
FINAL_STATUSES = frozenset(
    {CallStatus.COMPLETED, CallStatus.BUSY, CallStatus.FAILED, CallStatus.NO_ANSWER, CallStatus.CANCELED}
)

#: Order of the lifecycle, used to ignore callbacks that arrive late (a ``ringing`` after
#: ``in-progress`` changes nothing). Every final status ranks above every live one.
STATUS_RANK = {
    CallStatus.QUEUED: 0,
    CallStatus.INITIATED: 1,
    CallStatus.RINGING: 2,
    CallStatus.IN_PROGRESS: 3,
    CallStatus.COMPLETED: 4,
    CallStatus.BUSY: 4,
    CallStatus.FAILED: 4,
    CallStatus.NO_ANSWER: 4,
    CallStatus.CANCELED: 4,
}


class CallDirection(models.TextChoices):
    OUTBOUND = "outbound-api", "outbound"
    INBOUND = "inbound", "inbound"


class EndReason(models.TextChoices):
    CALLER_HANGUP = "caller-hangup", "caller hung up"
    BOT_HANGUP = "bot-hangup", "bot ended the call"
    API_HANGUP = "api-hangup", "hung up through the API"
    TRANSFERRED = "transferred", "transferred to a person"
    SILENCE = "silence", "caller stayed silent"
    CARRIER_FAILED = "carrier-failed", "carrier could not place the call"
    NOT_ANSWERED = "not-answered", "busy, no answer or canceled"
    STREAM_ERROR = "stream-error", "media stream failed"


class Call(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    call_sid = models.CharField("call SID", max_length=64, unique=True, null=True, blank=True)
    stream_sid = models.CharField("stream SID", max_length=64, blank=True, db_index=True)
    account_sid = models.CharField(max_length=64, blank=True)
    carrier = models.CharField(max_length=16, blank=True, help_text="twilio or emulator")
    direction = models.CharField(max_length=16, choices=CallDirection.choices, default=CallDirection.OUTBOUND)
    from_number = models.CharField("from", max_length=20, blank=True, help_text="E.164")
    to_number = models.CharField("to", max_length=20, blank=True, help_text="E.164")
    status = models.CharField(
        max_length=16, choices=CallStatus.choices, default=CallStatus.QUEUED, db_index=True
    )

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_s = models.PositiveIntegerField("duration (s)", null=True, blank=True)
    end_reason = models.CharField(max_length=32, choices=EndReason.choices, blank=True)

    greeting = models.TextField(blank=True)
    instructions = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    error_code = models.CharField("carrier error code", max_length=16, blank=True)
    error_message = models.TextField("carrier error message", blank=True)
    transfer_to = models.CharField(max_length=32, blank=True, help_text="E.164 of the <Dial> target")
    recording = models.FileField(upload_to="recordings/", blank=True, help_text="local recording (emulator)")
    recording_url = models.URLField(max_length=500, blank=True, help_text="carrier recording URL")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.call_sid or self.id} {self.to_number} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class TurnRole(models.TextChoices):
    CALLER = "caller"
    BOT = "bot"


class Turn(models.Model):
    """One utterance of the conversation.

    For bot turns ``text`` is what the bot meant to say and ``heard_text`` what reached the caller's
    ear before a barge-in cut it (equal to ``text`` when not interrupted). The latency fields are
    positions on the call clock (ms since stream start); ``voice_to_voice_ms`` is
    ``first_audio_ms - speech_end_ms``.
    """

    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveIntegerField()
    role = models.CharField(max_length=8, choices=TurnRole.choices)
    text = models.TextField(blank=True)
    heard_text = models.TextField(blank=True)
    interrupted = models.BooleanField(default=False)
    approximate = models.BooleanField(default=False, help_text="transcribed by the offline engine")
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    audio_start_ms = models.PositiveIntegerField(null=True, blank=True)
    audio_end_ms = models.PositiveIntegerField(null=True, blank=True)

    # Bot turns: the path from the end of the caller's speech to the bot's first audio.
    speech_end_ms = models.PositiveIntegerField("caller speech end (ms)", null=True, blank=True)
    stt_final_ms = models.PositiveIntegerField("STT final (ms)", null=True, blank=True)
    llm_first_token_ms = models.PositiveIntegerField("LLM first token (ms)", null=True, blank=True)
    tts_first_byte_ms = models.PositiveIntegerField("TTS first byte (ms)", null=True, blank=True)
    first_audio_ms = models.PositiveIntegerField("first audio sent (ms)", null=True, blank=True)
    voice_to_voice_ms = models.PositiveIntegerField("voice-to-voice (ms)", null=True, blank=True)

    class Meta:
        ordering = ["call", "index"]
        constraints = [models.UniqueConstraint(fields=["call", "index"], name="unique_turn_index")]

    def __str__(self) -> str:
        return f"{self.role} #{self.index}: {self.text[:60]}"


class EventKind(models.TextChoices):
    STATUS = "status", "status change"
    STREAM_START = "stream_start", "stream start"
    STREAM_STOP = "stream_stop", "stream stop"
    BARGE_IN = "barge_in", "barge-in"
    DTMF = "dtmf", "DTMF"
    TRANSFER = "transfer", "transfer"
    HANGUP = "hangup", "hang-up"
    TOOL_CALL = "tool_call", "tool call"
    SILENCE = "silence", "silence timeout"
    PROTOCOL_ERROR = "protocol_error", "protocol error"
    WARNING = "warning", "warning"
    ERROR = "error", "error"


class CallEvent(models.Model):
    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=24, choices=EventKind.choices, db_index=True)
    at = models.DateTimeField(db_index=True)
    audio_ms = models.PositiveIntegerField("audio time (ms)", null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["call", "at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} @ {self.at:%H:%M:%S.%f}"

"""Batched, non-blocking writes of a live call's transcript and events to the database.

The per-frame path must never wait on the database, so the session only appends to in-memory
buffers here (plain method calls, no await) and a background task writes them in batches through
``database_sync_to_async``. ``close()`` writes whatever is left; it is bounded so the whole call
teardown fits in Daphne's 10-second application close timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from calls.models import FINAL_STATUSES, Call, CallEvent, CallStatus, EndReason, Turn

logger = logging.getLogger(__name__)


@dataclass
class TurnRecord:
    """A turn as the session builds it; saved (insert or update) whenever it changes."""

    index: int
    role: str
    text: str = ""
    heard_text: str = ""
    interrupted: bool = False
    approximate: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    audio_start_ms: int | None = None
    audio_end_ms: int | None = None
    speech_end_ms: int | None = None
    stt_final_ms: int | None = None
    llm_first_token_ms: int | None = None
    tts_first_byte_ms: int | None = None
    first_audio_ms: int | None = None
    voice_to_voice_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_fields(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("index", "extra")}
        for key in (
            "audio_start_ms",
            "audio_end_ms",
            "speech_end_ms",
            "stt_final_ms",
            "llm_first_token_ms",
            "tts_first_byte_ms",
            "first_audio_ms",
            "voice_to_voice_ms",
        ):
            if out[key] is not None:
                out[key] = max(0, int(out[key]))
        return out


class CallLog:
    """The write side of one call's log. All ``record_*`` methods are synchronous and cheap."""

    def __init__(self, call_id: Any, flush_interval_s: float = 0.5) -> None:
        self.call_id = call_id
        self.flush_interval_s = flush_interval_s
        self._events: list[CallEvent] = []
        self._turns: dict[int, TurnRecord] = {}
        self._dirty_turns: set[int] = set()
        self._call_updates: dict[str, Any] = {}
        self._call_defaults: dict[str, Any] = {}
        self._finish: dict[str, Any] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.write_errors = 0

    # --- recording (no I/O) ------------------------------------------------------------------
    def event(self, kind: str, /, audio_ms: int | None = None, **data: Any) -> None:
        """Log a ``CallEvent`` of ``kind`` (see ``calls.models.EventKind``) at the current wall time."""
        ms = None if audio_ms is None else max(0, int(audio_ms))
        self._events.append(
            CallEvent(call_id=self.call_id, kind=kind, at=timezone.now(), audio_ms=ms, data=data)
        )
        self._wake.set()

    def turn(self, record: TurnRecord) -> None:
        """Insert or update a turn (by its index)."""
        self._turns[record.index] = record
        self._dirty_turns.add(record.index)
        self._wake.set()

    def update_call(self, **values: Any) -> None:
        """Set fields of the ``Call`` row at the next write."""
        self._call_updates.update(values)
        self._wake.set()

    def update_call_if_null(self, **values: Any) -> None:
        """Set fields of the ``Call`` row only where still empty (so Twilio's own duration wins)."""
        self._call_defaults.update(values)
        self._wake.set()

    def finish_call(self, *, ended_at: datetime, end_reason: str, duration_s: int) -> None:
        """The stream is over: record its end without overwriting what others know better.

        ``end_reason`` only if none is set (call control records its reason before asking the
        carrier, and Twilio's ``stop`` may overtake that request); ``completed`` unless the status is
        already final or the call was transferred (it goes on with the person); ``duration_s`` only
        if Twilio's status callback has not given it.
        """
        self._finish = {"ended_at": ended_at, "end_reason": end_reason, "duration_s": duration_s}
        self._wake.set()

    # --- writing ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"calllog-{self.call_id}")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            await asyncio.sleep(self.flush_interval_s)

    async def flush(self) -> None:
        """Write everything recorded so far. Failures are logged and kept for the next attempt."""
        async with self._lock:
            events, self._events = self._events, []
            dirty, self._dirty_turns = self._dirty_turns, set()
            turns = [self._turns[i] for i in sorted(dirty)]
            updates, self._call_updates = self._call_updates, {}
            defaults, self._call_defaults = self._call_defaults, {}
            finish, self._finish = self._finish, None
            if not (events or turns or updates or defaults or finish):
                return
            try:
                await database_sync_to_async(self._write)(events, turns, dict(updates), defaults, finish)
            except Exception:
                self.write_errors += 1
                logger.exception("call %s: writing the call log failed; will retry", self.call_id)
                # Put everything back so nothing is lost; newer values recorded meanwhile win.
                self._events[:0] = events
                self._dirty_turns |= dirty
                self._call_updates = {**updates, **self._call_updates}
                self._call_defaults = {**defaults, **self._call_defaults}
                self._finish = self._finish or finish
                self._wake.set()

    def _write(
        self,
        events: list[CallEvent],
        turns: list[TurnRecord],
        updates: dict[str, Any],
        defaults: dict[str, Any],
        finish: dict[str, Any] | None = None,
    ) -> None:
        with transaction.atomic():
            if events:
                CallEvent.objects.bulk_create(events)
            for record in turns:
                Turn.objects.update_or_create(
                    call_id=self.call_id, index=record.index, defaults=record.as_fields()
                )
            if updates:
                status = updates.pop("status", None)
                if updates:
                    Call.objects.filter(pk=self.call_id).update(**updates)
                if status is not None:
                    # Twilio's status callbacks are the authority: never overwrite a final status.
                    Call.objects.filter(pk=self.call_id).exclude(status__in=FINAL_STATUSES).update(
                        status=status
                    )
            for name, value in defaults.items():
                Call.objects.filter(pk=self.call_id, **{f"{name}__isnull": True}).update(**{name: value})
            if finish is not None:
                row = Call.objects.filter(pk=self.call_id)
                row.update(ended_at=finish["ended_at"])
                row.filter(end_reason="").update(end_reason=finish["end_reason"])
                ongoing = row.exclude(status__in=FINAL_STATUSES).exclude(end_reason=EndReason.TRANSFERRED)
                ongoing.update(status=CallStatus.COMPLETED)
                row.filter(duration_s__isnull=True).exclude(end_reason=EndReason.TRANSFERRED).update(
                    duration_s=finish["duration_s"]
                )

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop the background writer and write what is left (bounded by ``timeout_s``)."""
        if self._task is not None:
            # Never cancel a write half-way: wait for one in flight, then stop the writer.
            async with self._lock:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.wait_for(self.flush(), timeout_s)
        except TimeoutError:
            logger.error("call %s: final call-log write timed out after %.1f s", self.call_id, timeout_s)
        if self._events or self._dirty_turns or self._call_updates or self._call_defaults or self._finish:
            # One retry for a transient failure (e.g. a locked SQLite file).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), timeout_s / 2)

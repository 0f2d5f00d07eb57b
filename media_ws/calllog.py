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
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from calls.models import FINAL_STATUSES, Call, CallEvent, CallStatus, EndReason, Turn

logger = logging.getLogger(__name__)

#: Failed batch writes in a row before the records are written one by one (the bad one dropped).
BATCH_ATTEMPTS = 3


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
        self._in_flight: _Batch | None = None
        self._batch_failures = 0
        #: failed batch writes, and records dropped because the database rejected them
        self.write_errors = 0
        self.dropped_records = 0

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

    def _pending(self) -> bool:
        return bool(
            self._events or self._dirty_turns or self._call_updates or self._call_defaults or self._finish
        )

    def _take(self) -> _Batch:
        batch = _Batch(
            self._events,
            [self._turns[i] for i in sorted(self._dirty_turns)],
            self._call_updates,
            self._call_defaults,
            self._finish,
        )
        self._events, self._dirty_turns, self._call_updates, self._call_defaults = [], set(), {}, {}
        self._finish = None
        return batch

    def _put_back(self, batch: _Batch) -> None:
        # Nothing is lost; values recorded meanwhile are newer and win.
        self._events[:0] = batch.events
        self._dirty_turns |= {record.index for record in batch.turns}
        self._call_updates = {**batch.updates, **self._call_updates}
        self._call_defaults = {**batch.defaults, **self._call_defaults}
        self._finish = self._finish or batch.finish
        self._wake.set()

    async def flush(self, *, final: bool = False) -> None:
        """Write everything recorded so far, in one transaction.

        A failed write is retried at the next flush; after ``BATCH_ATTEMPTS`` failures in a row (or
        at once when ``final``) the records are written one transaction each, and a record the
        database rejects (e.g. a value out of range) is dropped with an ERROR log naming its kind
        and the call, so one bad record never costs the rest of the transcript. Records not written
        because the database is unreachable (``OperationalError``, ``InterfaceError``) are kept for
        the next flush. Never raises (except ``CancelledError``).
        """
        async with self._lock:
            if not self._pending():
                return
            batch = self._in_flight = self._take()
            try:
                await database_sync_to_async(self._write)(*batch.args())
            except Exception:
                self.write_errors += 1
                self._batch_failures += 1
                if self._batch_failures < BATCH_ATTEMPTS and not final:
                    logger.warning(
                        "call %s: writing the call log failed; will retry", self.call_id, exc_info=True
                    )
                    self._put_back(batch)
                else:
                    logger.exception(
                        "call %s: writing the call log failed %d times; writing its records one by one",
                        self.call_id,
                        self._batch_failures,
                    )
                    self._batch_failures = 0
                    unreachable = await database_sync_to_async(self._write_each)(batch)
                    if unreachable is not None:
                        self._put_back(unreachable)
            else:
                self._batch_failures = 0
            self._in_flight = None

    def _write_each(self, batch: _Batch) -> _Batch | None:
        """Write ``batch`` one record per transaction, dropping (ERROR log) those the database
        rejects. Returns the records not yet tried if the database became unreachable, else None."""
        jobs: list[tuple[str, _Batch]] = [(f"{e.kind} event", _Batch(events=[e])) for e in batch.events]
        jobs += [(f"turn {t.index} ({t.role})", _Batch(turns=[t])) for t in batch.turns]
        if batch.updates:
            jobs.append((f"call update of {', '.join(sorted(batch.updates))}", _Batch(updates=batch.updates)))
        if batch.defaults:
            jobs.append(
                (f"call update of {', '.join(sorted(batch.defaults))}", _Batch(defaults=batch.defaults))
            )
        if batch.finish:
            jobs.append(("call end", _Batch(finish=batch.finish)))
        for i, (what, one) in enumerate(jobs):
            try:
                self._write(*one.args())
            except (OperationalError, InterfaceError):
                logger.warning("call %s: the database is unreachable; the call log waits", self.call_id)
                rest = [job for _, job in jobs[i:]]
                return _Batch(
                    [e for b in rest for e in b.events],
                    [t for b in rest for t in b.turns],
                    {k: v for b in rest for k, v in b.updates.items()},
                    {k: v for b in rest for k, v in b.defaults.items()},
                    next((b.finish for b in rest if b.finish), None),
                )
            except Exception as exc:
                self.dropped_records += 1
                logger.error(
                    "call %s: dropped the %s from the call log: the database rejected it (%s: %.200s)",
                    self.call_id,
                    what,
                    type(exc).__name__,
                    exc,
                )
        return None

    def _write(
        self,
        events: list[CallEvent],
        turns: list[TurnRecord],
        updates: dict[str, Any],
        defaults: dict[str, Any],
        finish: dict[str, Any] | None = None,
    ) -> None:
        updates = dict(updates)  # the status is popped below; the batch may be written again
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
        """Stop the background writer and write what is left, all within ``timeout_s`` seconds.

        Waits for a write in flight rather than cancel it half-way, then writes the rest with
        ``flush(final=True)`` (one retry for a transient failure, e.g. a locked SQLite file). When
        the time is up, whatever is not written (a stuck write, records left) is logged at ERROR
        with its counts; the call's teardown goes on. Never raises (except ``CancelledError``).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await asyncio.wait_for(self._lock.acquire(), timeout_s)
            except TimeoutError:
                task.cancel()  # the stuck write's thread goes on; we stop waiting for it
                self._report_unwritten(timeout_s)
                return
            task.cancel()
            self._lock.release()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _ in range(2):
            remaining = deadline - loop.time()
            if not self._pending() or remaining <= 0:
                break
            try:
                await asyncio.wait_for(self.flush(final=True), remaining)
            except TimeoutError:
                break
        if self._pending() or self._in_flight is not None:
            self._report_unwritten(timeout_s)

    def _report_unwritten(self, timeout_s: float) -> None:
        left = _Batch(
            self._events,
            [self._turns[i] for i in self._dirty_turns],
            self._call_updates,
            self._call_defaults,
            self._finish,
        )
        logger.error(
            "call %s: the call log could not be written within %.1f s; not written: %s%s",
            self.call_id,
            timeout_s,
            left.describe(),
            f"; a write of {self._in_flight.describe()} was still in flight" if self._in_flight else "",
        )


@dataclass
class _Batch:
    """Records taken from the buffers for one write."""

    events: list[CallEvent] = field(default_factory=list)
    turns: list[TurnRecord] = field(default_factory=list)
    updates: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    finish: dict[str, Any] | None = None

    def args(self) -> tuple[Any, ...]:
        return self.events, self.turns, self.updates, self.defaults, self.finish

    def describe(self) -> str:
        """E.g. ``"3 event(s) (barge_in, stream_stop), 1 turn(s), call fields (status), the call end"``."""
        kinds = ", ".join(sorted({e.kind for e in self.events}))
        parts = [
            f"{len(self.events)} event(s) ({kinds})" if self.events else "",
            f"{len(self.turns)} turn(s)" if self.turns else "",
        ]
        fields_ = sorted({*self.updates, *self.defaults})
        parts += [
            f"call fields ({', '.join(fields_)})" if fields_ else "",
            "the call end" if self.finish else "",
        ]
        return ", ".join(p for p in parts if p) or "nothing"

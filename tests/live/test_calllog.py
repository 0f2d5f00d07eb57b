"""The live call's log writer (``media_ws.calllog.CallLog``) against the real test database.

A record the database rejects must cost only itself, never the rest of the transcript, and the
final write must fit Daphne's 10 s close window even when the database is stuck behind a lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from django.db import connection, transaction

from calls.models import Call, CallEvent, CallStatus, EventKind
from media_ws.calllog import CallLog, TurnRecord
from tests.live.conftest import db

pytestmark = pytest.mark.django_db(transaction=True)


def new_call() -> Call:
    return Call.objects.create(call_sid="CA" + "5" * 32, status=CallStatus.IN_PROGRESS)


def saved(call_id) -> tuple[list[tuple[str, int | None]], list[tuple[int, str]], Call]:
    call = Call.objects.get(pk=call_id)
    events = [(e.kind, e.audio_ms) for e in call.events.order_by("at", "id")]
    turns = [(t.index, t.text) for t in call.turns.order_by("index")]
    return events, turns, call


async def test_a_record_the_database_rejects_is_dropped_and_the_rest_of_the_call_log_is_saved(caplog):
    call = await db(new_call)
    log = CallLog(call.pk, flush_interval_s=0.05)
    log.start()
    log.event(EventKind.STREAM_START, audio_ms=0)
    log.turn(TurnRecord(index=0, role="bot", text="Hello!"))
    # Turn.index is a PositiveIntegerField: its CHECK (index >= 0) fails on SQLite and PostgreSQL.
    log.turn(TurnRecord(index=-1, role="caller", text="a broken turn"))
    # audio_ms is a 32-bit integer column on PostgreSQL: out of range there (SQLite stores it).
    log.event(EventKind.DTMF, audio_ms=2**31, digit="5")
    log.turn(TurnRecord(index=1, role="caller", text="I would like an appointment"))
    log.event(EventKind.BARGE_IN, audio_ms=1200)
    log.update_call(status="in-progress", stream_sid="MZ" + "5" * 32)
    with caplog.at_level(logging.WARNING, logger="media_ws.calllog"):
        await asyncio.sleep(1.0)  # the writer retries the batch, then writes record by record
        log.event(EventKind.STREAM_STOP, audio_ms=3000)
        started = time.monotonic()
        await log.close(timeout_s=5)
        assert time.monotonic() - started < 5

    events, turns, stored = await db(saved, call.pk)
    assert turns == [(0, "Hello!"), (1, "I would like an appointment")]
    kinds = [kind for kind, _ in events]
    assert kinds[:1] == ["stream_start"] and kinds[-2:] == ["barge_in", "stream_stop"]
    assert stored.stream_sid == "MZ" + "5" * 32
    dropped = [r for r in caplog.records if r.levelno == logging.ERROR and "dropped" in r.getMessage()]
    assert any("turn -1" in r.getMessage() and str(call.pk) in r.getMessage() for r in dropped)
    if connection.vendor == "postgresql":
        assert "dtmf" not in kinds
        assert any("dtmf event" in r.getMessage() for r in dropped)
        assert log.dropped_records == 2
    else:
        assert ("dtmf", 2**31) in events
        assert log.dropped_records == 1


def hold_the_write_lock(locked: threading.Event, release: threading.Event) -> None:
    """Another connection holds the lock our writer needs, as a long migration or a stuck
    transaction would, until ``release`` is set."""
    try:
        with transaction.atomic():  # SQLite: BEGIN IMMEDIATE takes the database's write lock
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(f"LOCK TABLE {CallEvent._meta.db_table} IN EXCLUSIVE MODE")
            else:
                Call.objects.filter(pk=None).update(status="queued")
            locked.set()
            release.wait(30)
    finally:
        connection.close()


async def test_close_returns_within_its_budget_when_a_write_is_stuck_and_logs_what_was_not_written(caplog):
    call = await db(new_call)
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_the_write_lock, args=(locked, release), daemon=True)
    holder.start()
    try:
        assert await asyncio.to_thread(locked.wait, 10)
        log = CallLog(call.pk, flush_interval_s=0.05)
        log.start()
        log.event(EventKind.STREAM_START, audio_ms=0)
        await asyncio.sleep(0.3)  # the writer is now waiting on the lock
        log.event(EventKind.STREAM_STOP, audio_ms=900)
        with caplog.at_level(logging.ERROR, logger="media_ws.calllog"):
            started = time.monotonic()
            await log.close(timeout_s=1.0)
            took = time.monotonic() - started
        assert took < 2.0, f"close() took {took:.1f} s"
        report = [r.getMessage() for r in caplog.records if "could not be written" in r.getMessage()]
        assert len(report) == 1 and str(call.pk) in report[0]
        assert "stream_stop" in report[0] and "still in flight" in report[0]
    finally:
        release.set()
        await asyncio.to_thread(holder.join, 10)
    # The stuck write completes once the lock is released (its thread was never killed).
    for _ in range(100):
        if await db(lambda: CallEvent.objects.filter(call_id=call.pk).exists()):
            break
        await asyncio.sleep(0.1)

"""``manage.py hangup_call <call_sid>``: end a call through ``calls.services.hangup_call``.

The live-session notification goes over the channel layer, so it reaches a session in another
process only with the Redis layer (``REDIS_URL``); the REST hang-up works either way.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from calls import services
from calls.errors import CallControlError
from calls.models import Call, EndReason


class Command(BaseCommand):
    help = "Hang up a call (by CallSid or id). A call that already ended is not an error."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("call_sid", help="CallSid (CA…) or the call's id")
        parser.add_argument(
            "--reason", default=EndReason.API_HANGUP, choices=EndReason.values, help="end reason to record"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            call = services.get_call(options["call_sid"])
        except Call.DoesNotExist as exc:
            raise CommandError(f"no call {options['call_sid']}") from exc
        try:
            already_ended = services.hangup_call(call, reason=options["reason"])
        except CallControlError as exc:
            raise CommandError(f"hang-up failed: {exc}") from exc
        state = "had already ended" if already_ended else "hung up"
        self.stdout.write(
            f"{call.call_sid or call.id} {state} (status {call.status}, end reason {call.end_reason or '-'})"
        )

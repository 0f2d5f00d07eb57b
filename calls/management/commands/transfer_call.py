"""``manage.py transfer_call <call_sid> [--to +E164]``: hand a call to a person via
``calls.services.transfer_call`` (``<Say>`` the hand-off line, then ``<Dial>``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from calls import services
from calls.errors import CallControlError
from calls.models import Call


class Command(BaseCommand):
    help = "Transfer a live call to a person (default number: HUMAN_AGENT_NUMBER)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("call_sid", help="CallSid (CA…) or the call's id")
        parser.add_argument("--to", default=None, help="E.164 number to dial (default: HUMAN_AGENT_NUMBER)")
        parser.add_argument("--no-say", action="store_true", help="skip the TRANSFER_ANNOUNCEMENT line")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            call = services.get_call(options["call_sid"])
        except Call.DoesNotExist as exc:
            raise CommandError(f"no call {options['call_sid']}") from exc
        say = None if options["no_say"] else services.ANNOUNCE
        try:
            target = services.transfer_call(call, to=options["to"], say=say)
        except CallControlError as exc:
            raise CommandError(f"transfer failed: {exc}") from exc
        self.stdout.write(f"{call.call_sid} transferred to {target}")

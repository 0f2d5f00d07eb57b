"""``manage.py place_call [+E164] [--scenario NAME]``: place a call from the shell and watch it live.

The call is placed through ``calls.services.place_call`` in this process. With the emulated
carrier the emulated callee therefore runs here too: it connects to the server at
``PUBLIC_BASE_URL`` (start it first, e.g. ``make run``) and plays the scenario, while this command
prints the live transcript, barge-ins and latencies from the database, then a summary.

The callee is ``--scenario``, else the scenario whose ``number`` is the dialed number, else
``EMULATOR_DEFAULT_SCENARIO``. Without a number, the scenario's own number is dialed.
A call placed here lives in this process: a transfer the server asks for reaches no emulated call
there (the carrier answers 20404 and the bot says it cannot transfer); ``manage.py demo
--scenario asks-for-person`` shows transfers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from calls import services
from calls.carriers import carrier_name
from calls.emulator import live
from calls.emulator.scenario import ScenarioError, available_scenarios, load_scenario
from calls.errors import CallControlError, PlaceCallFailed
from calls.models import Call


def call_snapshot(call_sid: str) -> dict[str, Any]:
    """The call as ``GET /calls/<call_sid>`` shows it, read from the database."""
    from calls.api.serializers import CallDetailSerializer

    call = Call.objects.prefetch_related("turns", "events").get(call_sid=call_sid)
    return dict(CallDetailSerializer(call).data)


def admin_url(call: Any) -> str:
    """The call's page in the admin, on ``PUBLIC_BASE_URL``."""
    from django.urls import reverse

    return settings.PUBLIC_BASE_URL + reverse("admin:calls_call_change", args=[call.pk])


class Command(BaseCommand):
    help = "Place an outbound call (to a number, or to an emulated scenario) and print it live until it ends."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("to", nargs="?", help="number to call, E.164 (default: the scenario's number)")
        parser.add_argument("--scenario", help=f"emulated callee: {', '.join(available_scenarios())}")
        parser.add_argument("--greeting", help="the bot's first words (default DEFAULT_GREETING)")
        parser.add_argument("--instructions", help="the LLM system prompt (default DEFAULT_INSTRUCTIONS)")
        parser.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        emulated = carrier_name() == "emulator"
        to = options["to"]
        metadata: dict[str, Any] = {}
        if emulated:
            name = options["scenario"]
            try:
                if name:
                    scenario = load_scenario(name)
                    metadata["scenario"] = name
                elif not to:
                    scenario = load_scenario(settings.EMULATOR_DEFAULT_SCENARIO)
                else:
                    scenario = None
            except ScenarioError as exc:
                raise CommandError(str(exc)) from exc
            to = to or (scenario.number if scenario else "") or "+15005550100"
            self._check_server()
        elif options["scenario"]:
            raise CommandError("--scenario needs the emulated carrier (CARRIER=emulator)")
        elif not to:
            raise CommandError("give the number to call")
        try:
            call = services.place_call(
                to=to, greeting=options["greeting"], instructions=options["instructions"], metadata=metadata
            )
        except PlaceCallFailed as exc:
            raise CommandError(f"the carrier could not place the call: {exc.error}") from exc
        except CallControlError as exc:
            raise CommandError(str(exc)) from exc
        scenario_name = metadata.get("scenario") or "by number or default"
        callee = f" (callee scenario: {scenario_name})" if emulated else ""
        self.stdout.write(f"Calling {call.to_number} from {call.from_number} via {call.carrier}: "
                          f"{call.call_sid}{callee}")
        try:
            snapshot = live.follow(lambda: call_snapshot(call.call_sid), self.stdout.write,
                                   timeout_s=options["timeout"])
        except TimeoutError as exc:
            raise CommandError(str(exc)) from exc
        call.refresh_from_db()
        path = Path(call.recording.path) if call.recording else None
        self.stdout.write("")
        for line in live.summary_lines(
            snapshot,
            recording_path=str(path) if path and path.exists() else "",
            admin_url=admin_url(call),
        ):
            self.stdout.write(line)

    def _check_server(self) -> None:
        """The emulated callee connects to our server: fail early and clearly when it is not up."""
        url = settings.PUBLIC_BASE_URL
        try:
            httpx.get(f"{url}/calls/", timeout=5, trust_env=False)  # any answer, even 401, will do
        except httpx.HTTPError as exc:
            raise CommandError(
                f"no server answers at PUBLIC_BASE_URL={url} ({exc}). Start it first (make run), "
                f"or run the whole thing with: python manage.py demo"
            ) from exc

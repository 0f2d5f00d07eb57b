"""``manage.py place_call [+E164] [--scenario NAME]``: place a call from the shell and watch it live.

With Twilio the call is placed through ``calls.services.place_call`` in this process.

With the emulated carrier the server at ``PUBLIC_BASE_URL`` must be running (e.g. ``make run``):
the emulated callee connects to its ``/media-stream``. The call is placed through the server's
``POST /calls/outbound`` (as the ``demo`` user, whose API token is created if missing, as
``manage.py demo`` does), so the emulated call lives in the server's process and the server's
hang-ups and transfers reach it. This is done only when ``PUBLIC_BASE_URL`` is on this machine
(a token is not sent to a tunnel or another host). When the server is elsewhere, does not accept
that token (it uses another database), or with ``--in-process``, the call is placed here
instead: the callee then runs in this process and connects to the server, and a transfer the
server asks for reaches no emulated call (the carrier answers 20404 and the bot says it cannot
transfer).

Either way the command prints the live transcript, barge-ins and latencies, then a summary.
The callee is ``--scenario``, else the scenario whose ``number`` is the dialed number, else
``EMULATOR_DEFAULT_SCENARIO``. Without a number, the scenario's own number is dialed.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from calls import services
from calls.carriers import carrier_name
from calls.emulator import live
from calls.emulator.scenario import ScenarioError, available_scenarios, load_scenario
from calls.errors import CallControlError, PlaceCallFailed
from calls.management.commands.demo import api_client, demo_token, post_outbound
from calls.models import Call


def call_snapshot(call_sid: str) -> dict[str, Any]:
    """The call as ``GET /calls/<call_sid>`` shows it, read from the database."""
    from calls.api.serializers import CallDetailSerializer

    call = Call.objects.prefetch_related("turns", "events").get(call_sid=call_sid)
    return dict(CallDetailSerializer(call).data)


def admin_url(call_id: Any) -> str:
    """The page of the call with primary key ``call_id`` in the admin, on ``PUBLIC_BASE_URL``."""
    from django.urls import reverse

    return settings.PUBLIC_BASE_URL + reverse("admin:calls_call_change", args=[call_id])


def _is_loopback(url: str) -> bool:
    """Is ``url``'s host this machine (localhost, 127.0.0.0/8, ::1)? Only then does ``place_call``
    create the ``demo`` user's API token and send it there: a token must not travel to a public
    tunnel or over plain HTTP to another host."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Command(BaseCommand):
    help = "Place an outbound call (to a number, or to an emulated scenario) and print it live until it ends."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("to", nargs="?", help="number to call, E.164 (default: the scenario's number)")
        parser.add_argument("--scenario", help=f"emulated callee: {', '.join(available_scenarios())}")
        parser.add_argument("--greeting", help="the bot's first words (default DEFAULT_GREETING)")
        parser.add_argument("--instructions", help="the LLM system prompt (default DEFAULT_INSTRUCTIONS)")
        parser.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds")
        parser.add_argument("--in-process", action="store_true",
                            help="emulated carrier: place the call from this process, not through the "
                                 "server's API (the server's transfers cannot reach it then)")

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
            if (
                not options["in_process"]
                and _is_loopback(settings.PUBLIC_BASE_URL)
                and self._place_through_server(to, metadata, options)
            ):
                return
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
        self._follow(lambda: call_snapshot(call.call_sid), call.call_sid, call.pk, options["timeout"])

    def _place_through_server(self, to: str, metadata: dict[str, Any], options: dict[str, Any]) -> bool:
        """Place the call with the server's ``POST /calls/outbound`` and follow it over the API;
        ``False`` (nothing placed) when the server does not know the ``demo`` user's token."""
        http = api_client(settings.PUBLIC_BASE_URL, demo_token())
        try:
            if http.get("/calls/", params={"page_size": 1}).status_code == 401:
                self.stdout.write(f"The server at {settings.PUBLIC_BASE_URL} does not accept the demo "
                                  "user's token (another database?): placing the call from this process; "
                                  "the server's transfers will not reach it.")
                return False
            body = {"to": to, "metadata": metadata}
            body.update({k: options[k] for k in ("greeting", "instructions") if options[k]})
            created = post_outbound(http, body)
            sid = created["call_sid"]
            scenario_name = metadata.get("scenario") or "by number or default"
            self.stdout.write(f"Calling {created['to']} from {created['from']} via {created['carrier']}: "
                              f"{sid} (callee scenario: {scenario_name}; placed by the server, "
                              f"POST {settings.PUBLIC_BASE_URL}/calls/outbound)")

            def fetch() -> dict[str, Any]:
                reply = http.get(f"/calls/{sid}")
                reply.raise_for_status()
                return dict(reply.json())

            self._follow(fetch, sid, created["id"], options["timeout"])
        except httpx.HTTPError as exc:
            raise CommandError(f"lost the server at {settings.PUBLIC_BASE_URL}: {exc}") from exc
        finally:
            http.close()
        return True

    def _follow(self, fetch: Any, call_sid: str, call_id: Any, timeout_s: float) -> None:
        """Print the call live until it ends, then the summary."""
        try:
            snapshot = live.follow(fetch, self.stdout.write, timeout_s=timeout_s)
        except TimeoutError as exc:
            raise CommandError(str(exc)) from exc
        path = Path(settings.MEDIA_ROOT) / "recordings" / f"{call_sid}.wav"
        self.stdout.write("")
        for line in live.summary_lines(
            snapshot, recording_path=str(path) if path.is_file() else "", admin_url=admin_url(call_id)
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

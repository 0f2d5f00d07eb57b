"""``manage.py demo``: the product's main job, offline, in one command (``make demo`` runs it).

1. migrates the database and makes sure a ``demo`` user with an API token exists;
2. starts Daphne (``daphne -b 127.0.0.1 -p <free port> voicebot.asgi:application``) with
   ``PUBLIC_BASE_URL`` pointing at it, the emulated carrier and the offline engines;
3. waits until it answers, then ``POST /calls/outbound`` with the token, the scenario's number and
   ``metadata.scenario``; the emulated Twilio inside that server dials the scripted callee;
4. follows the call by polling ``GET /calls/<call_sid>``, printing the live transcript, barge-ins
   (with their detection latency and ``clear`` send time) and per-turn latencies;
5. prints the summary (duration, turns, barge-ins, the recording, the admin URL) and stops Daphne.

It fails (non-zero exit, with the reason) when the call did not end ``completed`` and, for the
``default`` scenario (the demo's point: a caller barging in on the bot), when the call has no
barge-in or no recording file.

It never hangs: everything is bounded by ``--timeout`` (100 s by default), after which it stops
the server and fails with the server log's last lines.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token

from calls.emulator import live
from calls.emulator.scenario import ScenarioError, available_scenarios, load_scenario

DEMO_USER = "demo"
#: The emulated "person" a transfer dials when HUMAN_AGENT_NUMBER is not set.
DEMO_AGENT_NUMBER = "+15005550199"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_token() -> str:
    """The API token of the ``demo`` user, both created if missing (the user has no password: API
    access only). ``place_call`` uses it too, to place calls through the server."""
    user, created = get_user_model().objects.get_or_create(username=DEMO_USER)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    token, _ = Token.objects.get_or_create(user=user)
    return str(token.key)


def api_client(base_url: str, token: str) -> httpx.Client:
    """An HTTP client for the call API at ``base_url`` with ``Authorization: Token <token>``."""
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Token {token}"}, timeout=10,
                        trust_env=False)


def post_outbound(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /calls/outbound`` with ``body``; the created call (JSON). Raises ``CommandError`` with
    the server's answer unless it is ``201``."""
    response = http.post("/calls/outbound", json=body)
    if response.status_code != 201:
        raise CommandError(f"POST /calls/outbound answered {response.status_code}: {response.text}")
    return dict(response.json())


def demo_problems(scenario: str, snapshot: dict[str, Any], recording: Path) -> list[str]:
    """What is wrong with a finished demo call (``snapshot``: ``GET /calls/<sid>``); empty if nothing."""
    problems = []
    if snapshot.get("status") != "completed":
        problems.append(f"the call ended with status {snapshot.get('status')}")
    if scenario == "default":  # the caller barges in on the greeting: that is what the demo shows
        if not any(e.get("kind") == "barge_in" for e in snapshot.get("events") or []):
            problems.append("the default scenario's caller speaks over the greeting, but no barge-in "
                            "was logged")
        if settings.EMULATOR_RECORD and not recording.is_file():
            problems.append(f"no recording was written at {recording}")
    return problems


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Command(BaseCommand):
    help = "Run an emulated outbound call end to end, offline, and print it live (what `make demo` does)."

    def add_arguments(self, parser: CommandParser) -> None:
        names = ", ".join(available_scenarios())
        parser.add_argument("--scenario", default=None, help=f"the callee: {names}")
        parser.add_argument("--timeout", type=float, default=100.0, help="overall limit, s (default 100)")
        parser.add_argument("--port", type=int, default=0, help="Daphne's port (default: a free one)")
        parser.add_argument("--configured-engines", action="store_true",
                            help="use the STT/LLM/TTS engines the settings choose, not the offline ones")

    def handle(self, *args: Any, **options: Any) -> None:
        # `timeout`, CI runners and `kill` send SIGTERM: unwind like Ctrl-C, so Daphne is stopped too.
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        deadline = time.monotonic() + options["timeout"]
        name = options["scenario"] or settings.EMULATOR_DEFAULT_SCENARIO
        try:
            scenario = load_scenario(name)
        except ScenarioError as exc:
            raise CommandError(str(exc)) from exc
        out = self.stdout.write
        out(f"voicebot demo: an outbound call to an emulated Twilio callee, offline (scenario {name!r})")
        if scenario.description:
            out(f"  callee: {scenario.description}")

        call_command("migrate", interactive=False, verbosity=0)
        database = settings.DATABASES["default"]
        out(f"  • database ready ({database['ENGINE'].rsplit('.', 1)[-1]}: {database['NAME']})")
        token = demo_token()
        out(f"  • user {DEMO_USER!r} with an API token")

        port = options["port"] or free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = Path(tempfile.gettempdir()) / f"voicebot-demo-daphne-{port}.log"
        server = self._start_daphne(port, base, log_path, configured=options["configured_engines"])
        try:
            http = api_client(base, token)
            self._wait_ready(http, server, log_path, deadline)
            out(f"  • Daphne serving {base} (HTTP and the /media-stream WebSocket; log {log_path})")
            to = scenario.number or "+15005550100"
            created = post_outbound(http, {"to": to, "metadata": {"scenario": name}})
            sid = created["call_sid"]
            out(f"  • POST /calls/outbound → 201: {sid} ({created['status']}), calling {to}")
            out("")
            out("Live (call clock: seconds since the media stream started)")

            def fetch() -> dict[str, Any]:
                reply = http.get(f"/calls/{sid}")
                reply.raise_for_status()
                return dict(reply.json())

            try:
                snapshot = live.follow(fetch, out, timeout_s=max(1.0, deadline - time.monotonic()))
            except TimeoutError as exc:
                raise CommandError(f"{exc}; the server log is {log_path}\n{self._tail(log_path)}") from exc
            except httpx.HTTPError as exc:
                raise CommandError(f"lost the server: {exc}\n{self._tail(log_path)}") from exc
        finally:
            self._stop(server)

        recording = Path(settings.MEDIA_ROOT) / "recordings" / f"{sid}.wav"
        from django.urls import reverse

        admin = settings.PUBLIC_BASE_URL + reverse("admin:calls_call_change", args=[created["id"]])
        out("")
        for line in live.summary_lines(
            snapshot,
            recording_path=str(recording) if recording.exists() else "",
            admin_url=f"{admin}  (after `make run`; log in with a staff user: manage.py createsuperuser)",
        ):
            out(line)
        problems = demo_problems(name, snapshot, recording)
        if problems:
            raise CommandError(f"the demo call {sid} failed: " + "; ".join(problems))

    # ---- steps ----------------------------------------------------------------------------------
    def _start_daphne(
        self, port: int, base: str, log_path: Path, *, configured: bool
    ) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(PUBLIC_BASE_URL=base, CARRIER="emulator", DJANGO_SETTINGS_MODULE="voicebot.settings")
        if not configured:
            env.update(STT_ENGINE="offline", LLM_ENGINE="scripted", TTS_ENGINE="offline")
        if not settings.HUMAN_AGENT_NUMBER:
            env["HUMAN_AGENT_NUMBER"] = DEMO_AGENT_NUMBER
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                   "voicebot.asgi:application"]
        log = log_path.open("wb")
        try:
            return subprocess.Popen(command, cwd=settings.BASE_DIR, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def _wait_ready(self, http: httpx.Client, server: subprocess.Popen[bytes], log_path: Path,
                    deadline: float) -> None:
        while True:
            if server.poll() is not None:
                raise CommandError(f"Daphne exited with code {server.returncode}\n{self._tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if http.get("/calls/?page_size=1").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise CommandError(f"Daphne did not answer in time\n{self._tail(log_path)}")
            time.sleep(0.2)

    @staticmethod
    def _stop(server: subprocess.Popen[bytes]) -> None:
        if server.poll() is not None:
            return
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)

    @staticmethod
    def _tail(path: Path, lines: int = 40) -> str:
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(["--- server log (last lines) ---", *text[-lines:]])

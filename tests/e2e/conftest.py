"""A real Daphne on 127.0.0.1 for the end-to-end tests.

``daphne_server`` starts ``python -m daphne -b 127.0.0.1 -p <free port> voicebot.asgi:application``
in its own process, on the test database (SQLite file or PostgreSQL, whatever the suite runs on),
with ``PUBLIC_BASE_URL`` pointing at it, the emulated carrier, the offline engines, an auth token
(so status callbacks and the stream handshake are signed and checked) and a temporary
``MEDIA_ROOT``. Tests use it with ``django_db(transaction=True)`` so both processes see the rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from django.conf import settings

from calls.management.commands.demo import free_port

AUTH_TOKEN = "e2e-twilio-auth-token"


@dataclass
class DaphneServer:
    base_url: str
    media_root: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def database_url(db: dict[str, Any]) -> str:
    """A ``DATABASE_URL`` for the connection settings ``db`` (the test database)."""
    engine = db["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    if engine.endswith("postgresql"):
        user = quote(db.get("USER") or "", safe="")
        password = f":{quote(str(db['PASSWORD']), safe='')}" if db.get("PASSWORD") else ""
        auth = f"{user}{password}@" if user else ""
        host = db.get("HOST") or "127.0.0.1"
        port = f":{db['PORT']}" if db.get("PORT") else ""
        return f"postgres://{auth}{host}{port}/{db['NAME']}"
    raise RuntimeError(f"no DATABASE_URL form for {engine}")


@pytest.fixture(scope="module")
def daphne_server(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any
) -> Iterator[DaphneServer]:
    from django.db import connection

    with django_db_blocker.unblock():
        db = dict(connection.settings_dict)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    media_root = tmp_path_factory.mktemp("e2e-media")
    log_path = media_root.parent / f"daphne-{port}.log"
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="voicebot.settings",
        DATABASE_URL=database_url(db),
        PUBLIC_BASE_URL=base,
        CARRIER="emulator",
        TWILIO_ACCOUNT_SID="",
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_FROM_NUMBER="+15005550006",
        DIAL_ALLOWED_DESTINATIONS="",
        HUMAN_AGENT_NUMBER="",
        STT_ENGINE="offline",
        LLM_ENGINE="scripted",
        TTS_ENGINE="offline",
        DEEPGRAM_API_KEY="",
        GROQ_API_KEY="",
        MEDIA_ROOT=str(media_root),
        EMULATOR_ANSWER_AFTER_MS="500",
        EMULATOR_SCENARIO_DIRS="",
        EMULATOR_DEFAULT_SCENARIO="default",
        DIAL_THROTTLE_RATE="1000/min",
    )
    env.pop("VOICEBOT_TESTING", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "voicebot.asgi:application"],
            cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = DaphneServer(base, media_root, log_path, process)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"Daphne exited with {process.returncode}:\n{server.log_tail()}")
            try:
                httpx.get(f"{base}/calls/", timeout=2, trust_env=False)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    pytest.fail(f"Daphne did not answer within 30 s:\n{server.log_tail()}")
                time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

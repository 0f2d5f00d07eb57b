"""A real Daphne on 127.0.0.1 for the end-to-end tests.

``daphne_server`` starts ``python -m daphne -b 127.0.0.1 -p <free port> voicebot.asgi:application``
(``tests.fakes.daphne_server``) in its own process, on the test database (SQLite file or
PostgreSQL, whatever the suite runs on), with ``PUBLIC_BASE_URL`` pointing at it, the emulated
carrier, the offline engines, a transfer number (``HUMAN_AGENT_NUMBER``), an auth token (so status
callbacks and the stream handshake are signed and checked) and a temporary ``MEDIA_ROOT``. Tests use it with
``django_db(transaction=True)`` so both processes see the rows.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.daphne_server import DaphneServer, database_url

AUTH_TOKEN = "e2e-twilio-auth-token"


@pytest.fixture(scope="module")
def daphne_server(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any
) -> Iterator[DaphneServer]:
    from django.db import connection

    with django_db_blocker.unblock():
        db = dict(connection.settings_dict)
    media_root = tmp_path_factory.mktemp("e2e-media")
    env = {
        "DATABASE_URL": database_url(db),
        "CARRIER": "emulator",
        "TWILIO_ACCOUNT_SID": "",
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": "+15005550006",
        "DIAL_ALLOWED_DESTINATIONS": "",
        "HUMAN_AGENT_NUMBER": "+15005550199",  # as `manage.py demo` sets for its server: transfers work
        "STT_ENGINE": "offline",
        "LLM_ENGINE": "scripted",
        "TTS_ENGINE": "offline",
        "DEEPGRAM_API_KEY": "",
        "GROQ_API_KEY": "",
        "EMULATOR_ANSWER_AFTER_MS": "500",
        "EMULATOR_SCENARIO_DIRS": "",
        "EMULATOR_DEFAULT_SCENARIO": "default",
        "DIAL_THROTTLE_RATE": "1000/min",
    }
    server = DaphneServer(env, media_root=media_root, log_path=media_root.parent / "daphne.log")
    # The server must know its own public origin (the emulator dials back to it): its port first.
    server.env["PUBLIC_BASE_URL"] = server.base_url
    with server:
        yield server

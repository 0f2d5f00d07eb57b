"""The project boots: settings, URL routing and the ASGI application."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]


def test_daphne_is_the_first_installed_app_so_runserver_serves_asgi():
    assert settings.INSTALLED_APPS[0] == "daphne"
    assert settings.ASGI_APPLICATION == "voicebot.asgi.application"


def test_asgi_routes_http_and_the_media_stream_websocket():
    from voicebot.asgi import application

    assert set(application.application_mapping) == {"http", "websocket"}
    routes = application.application_mapping["websocket"].routes
    assert [str(r.pattern) for r in routes] == ["media-stream"]


def settings_in_a_subprocess(**env: str) -> dict[str, str]:
    """Import voicebot.settings in a fresh interpreter with ``env`` (the process's own environment
    otherwise; a developer's .env never overrides what is given here) and report the database
    engine and channel layer backend it chose."""
    probe = (
        "import json, voicebot.settings as s; "
        "print(json.dumps({'engine': s.DATABASES['default']['ENGINE'], "
        "'name': str(s.DATABASES['default']['NAME']), 'host': s.DATABASES['default'].get('HOST', ''), "
        "'layer': s.CHANNEL_LAYERS['default']['BACKEND']}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**os.environ, "VOICEBOT_TESTING": "false", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("env", "engine", "layer"),
    [
        pytest.param(
            {"DATABASE_URL": "", "REDIS_URL": ""},
            "django.db.backends.sqlite3",
            "channels.layers.InMemoryChannelLayer",
            id="empty-means-embedded",
        ),
        pytest.param(
            {"DATABASE_URL": "postgres://voice@db.example:5432/voicebot", "REDIS_URL": ""},
            "django.db.backends.postgresql",
            "channels.layers.InMemoryChannelLayer",
            id="postgres",
        ),
        pytest.param(
            {"DATABASE_URL": "", "REDIS_URL": "redis://127.0.0.1:6379/0"},
            "django.db.backends.sqlite3",
            "channels_redis.core.RedisChannelLayer",
            id="redis",
        ),
    ],
)
def test_database_url_and_redis_url_choose_the_backends(env, engine, layer):
    chosen = settings_in_a_subprocess(**env)
    assert (chosen["engine"], chosen["layer"]) == (engine, layer)
    if engine.endswith("sqlite3"):
        assert chosen["name"] == str(ROOT / "db.sqlite3")
    else:
        assert (chosen["name"], chosen["host"]) == ("voicebot", "db.example")

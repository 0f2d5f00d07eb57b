"""``manage.py demo`` itself (Daphne in a subprocess, a call through the API): it fails, with the
reason, when the default scenario's call shows no barge-in or leaves no recording.

The ``default`` scenario is replaced by one of the same name in ``EMULATOR_SCENARIO_DIRS`` (searched
before the built-in ones), so the demo's own checks meet a call that lacks what they look for.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.fakes.daphne_server import database_url

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

#: Hangs up 0.8 s into the greeting without a word: a completed call with no barge-in.
QUIET = "[[steps]]\nafter_bot_starts_ms = 800\nhangup = true\n"
#: Barges in on the greeting, then hangs up.
BARGES_IN = (
    '[[steps]]\nafter_bot_starts_ms = 800\nsay = "clone_test"\nfrom_ms = 400\nto_ms = 2400\n\n'
    "[[steps]]\nhangup = true\n"
)


@pytest.fixture
def demo_env(settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The demo's server (a subprocess, configured by the environment) and this process agree on
    the test database, the media folder and the scenario folder."""
    from django.db import connection

    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    env = {
        "DATABASE_URL": database_url(connection.settings_dict),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "EMULATOR_SCENARIO_DIRS": str(scenarios),
        "EMULATOR_ANSWER_AFTER_MS": "300",
        "EMULATOR_RECORD": "true",
        "TWILIO_ACCOUNT_SID": "",
        "TWILIO_AUTH_TOKEN": "",
        "DIAL_ALLOWED_DESTINATIONS": "",
        "DIAL_THROTTLE_RATE": "1000/min",
        "REDIS_URL": "",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.EMULATOR_SCENARIO_DIRS = [str(scenarios)]
    settings.EMULATOR_DEFAULT_SCENARIO = "default"
    return scenarios


def run_demo() -> tuple[str, CommandError | None]:
    out = io.StringIO()
    try:
        call_command("demo", "--timeout", "60", stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def test_the_demo_fails_when_the_default_callers_barge_in_was_not_logged(demo_env):
    (demo_env / "default.toml").write_text(QUIET)
    out, error = run_demo()
    assert "Summary" in out and "barge-ins     none" in out
    assert error is not None, out
    assert "no barge-in was logged" in str(error) and "status" not in str(error)


def test_the_demo_fails_when_the_call_left_no_recording(demo_env, monkeypatch, settings):
    (demo_env / "default.toml").write_text(BARGES_IN)
    settings.EMULATOR_RECORD = True  # the demo expects a recording ...
    monkeypatch.setenv("EMULATOR_RECORD", "false")  # ... but its server is told not to write one
    out, error = run_demo()
    assert "⚡  barge-in: caller speech detected" in out and "recording     none" in out
    assert error is not None, out
    assert "no recording was written" in str(error) and "barge-in" not in str(error)
